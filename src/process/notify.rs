//! `tidemark notify`: consumes the `alerts` topic and feeds a [`Notifier`], committing a
//! message's offset only once every notification it caused is delivered
//! ([`crate::alert::kafka`] explains the protocol); serves the alerting API and `/metrics`.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::alert::api::{load_notify_config, render_metrics, AlertState};
use crate::alert::eval::AlertEvent;
use crate::alert::kafka::parse_event;
use crate::alert::notify::Notifier;
use crate::config::AuthConfig;
use crate::ops::TextWriter;
use crate::transport::consumer::{PartKey, PartitionConsumer, Start};

/// Options of `tidemark notify`.
#[derive(Clone, Debug)]
pub struct NotifyOpts {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub brokers: String,
    pub topic: String,
    pub group: String,
    /// This process's share of the partitions: `p % peers == index`.
    pub index: usize,
    pub peers: usize,
    /// The Alertmanager-style routing file (`None`: the built-in default).
    pub routing: Option<PathBuf>,
    pub external_url: String,
    pub auth: AuthConfig,
    /// The configuration and flags in effect (`/api/v1/status/config`, `flags`).
    pub status: Arc<crate::web::status::ProcessStatus>,
    /// How often delivered offsets are committed.
    pub commit_interval: Duration,
}

/// What the consumer loop reports on `/metrics`.
#[derive(Default)]
pub struct ConsumerStats {
    pub consumed: AtomicU64,
    pub malformed: AtomicU64,
    pub commit_failures: AtomicU64,
    /// `partition -> (next offset read, committed offset, broker high watermark)`.
    pub partitions: Mutex<BTreeMap<i32, (i64, i64, i64)>>,
    /// The last malformed message: `partition@offset: reason`.
    pub last_malformed: Mutex<String>,
    pub connected: AtomicBool,
}

/// The consumer loop: read, hand to the notifier, commit what is delivered. Runs until `stop`.
fn consume(
    opts: &NotifyOpts,
    notifier: &Notifier,
    stats: &ConsumerStats,
    stop: &AtomicBool,
) -> Result<(), String> {
    let mut consumer = PartitionConsumer::new(
        &opts.brokers,
        std::slice::from_ref(&opts.topic),
        &opts.group,
        opts.index,
        opts.peers,
        Start::Earliest,
        BTreeMap::new(),
        Duration::from_millis(100),
    )
    .map_err(|e| e.to_string())?;
    // `(ingest sequence number, partition, next offset)` of messages handed to the notifier,
    // in order; an entry is committed once the notifier has delivered below its number.
    let mut handed: VecDeque<(u64, PartKey, i64)> = VecDeque::new();
    let mut committed: BTreeMap<PartKey, i64> = BTreeMap::new();
    let mut last_commit = Instant::now();
    let mut batch: Vec<AlertEvent> = Vec::new();
    let mut offsets: Vec<(PartKey, i64)> = Vec::new();
    while !stop.load(Ordering::Acquire) {
        match consumer.discover() {
            Ok(_) => stats.connected.store(true, Ordering::Relaxed),
            Err(e) => {
                stats.connected.store(false, Ordering::Relaxed);
                tracing::info!("{e}");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        }
        // Take what is there (at most 500 messages), then hand it over as one batch.
        let mut wait = Duration::from_millis(100);
        while offsets.len() < 500 {
            let Some(m) = consumer.poll(wait) else { break };
            wait = Duration::ZERO;
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::info!("{e}");
                    break;
                }
            };
            stats.consumed.fetch_add(1, Ordering::Relaxed);
            match parse_event(&m.payload) {
                Ok(e) => batch.push(e),
                Err(reason) => {
                    stats.malformed.fetch_add(1, Ordering::Relaxed);
                    let msg = format!("{}/{}@{}: {reason}", opts.topic, m.part.1, m.offset);
                    tracing::warn!("skipping message {msg}");
                    *stats
                        .last_malformed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = msg;
                }
            }
            offsets.push((m.part, m.offset + 1));
        }
        if !offsets.is_empty() {
            match notifier.ingest(&batch) {
                Ok(seq) => {
                    handed.extend(offsets.drain(..).map(|(p, o)| (seq, p, o)));
                    batch.clear();
                }
                // Kept and handed again on the next round (the notifier's state could not be
                // written: the disk is full or gone).
                Err(e) => {
                    tracing::warn!("cannot take alert events (retrying): {e}");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        if last_commit.elapsed() >= opts.commit_interval {
            last_commit = Instant::now();
            let below = notifier.delivered_below();
            let mut next: BTreeMap<PartKey, i64> = BTreeMap::new();
            while handed.front().is_some_and(|(s, _, _)| *s < below) {
                let (_, p, o) = handed.pop_front().expect("front");
                next.insert(p, o);
            }
            if !next.is_empty() {
                match consumer.commit(&next) {
                    Ok(()) => committed.extend(next),
                    Err(e) => {
                        stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("commit failed (retried later): {e}");
                        // Put them back: the next commit covers them.
                        for (p, o) in next {
                            handed.push_front((0, p, o));
                        }
                    }
                }
            }
            let mut parts = stats.partitions.lock().unwrap_or_else(|e| e.into_inner());
            for (k, pos, high) in consumer.lag() {
                let c = committed.get(&k).copied().unwrap_or(-1);
                parts.insert(k.1, (pos, c, high));
            }
        }
    }
    Ok(())
}

struct NotifyHttp {
    alerting: Arc<AlertState>,
    stats: Arc<ConsumerStats>,
    opts: NotifyOpts,
}

async fn notify_metrics(State(s): State<Arc<NotifyHttp>>) -> Response {
    let mut w = TextWriter(String::new());
    render_metrics(&s.alerting, &mut w);
    let count = |a: &AtomicU64| [("", a.load(Ordering::Relaxed) as f64)];
    w.family(
        "tidemark_notify_events_consumed_total",
        "counter",
        "Messages read from the alerts topic.",
        &count(&s.stats.consumed),
    );
    w.family(
        "tidemark_notify_malformed_events_total",
        "counter",
        "Messages of the alerts topic that are not alert events (skipped; each is logged with its partition and offset).",
        &count(&s.stats.malformed),
    );
    w.family(
        "tidemark_notify_commit_failures_total",
        "counter",
        "Offset commits the brokers refused (retried).",
        &count(&s.stats.commit_failures),
    );
    let parts = s
        .stats
        .partitions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let labels =
        |p: &i32| crate::ops::labels(&[("topic", &s.opts.topic), ("partition", &p.to_string())]);
    let family = |pick: fn(&(i64, i64, i64)) -> Option<i64>| -> Vec<(String, f64)> {
        parts
            .iter()
            .filter_map(|(p, x)| pick(x).map(|v| (labels(p), v as f64)))
            .collect()
    };
    for (name, help, values) in [
        (
            "tidemark_notify_position",
            "Next offset to read, per partition.",
            family(|x| Some(x.0)),
        ),
        (
            "tidemark_notify_committed_offset",
            "Offset committed to the consumer group (every message before it is delivered), per partition; -1 before the first commit.",
            family(|x| Some(x.1)),
        ),
        (
            "tidemark_notify_consumer_lag",
            "Messages not read yet (high watermark - position), per partition.",
            family(|x| (x.2 >= 0 && x.0 >= 0).then(|| (x.2 - x.0).max(0))),
        ),
    ] {
        let refs: Vec<(&str, f64)> = values.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        w.family(name, "gauge", help, &refs);
    }
    crate::ops::render_process(&mut w);
    ([("content-type", "text/plain; version=0.0.4")], w.0).into_response()
}

async fn notify_ready(State(s): State<Arc<NotifyHttp>>) -> Response {
    if s.stats.connected.load(Ordering::Relaxed) {
        "Tidemark notify is Ready.\n".into_response()
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: the Kafka brokers ({}) have not answered yet\n",
                s.opts.brokers
            ),
        )
            .into_response()
    }
}

/// Runs `tidemark notify` until SIGTERM or Ctrl-C.
pub fn run(opts: NotifyOpts) -> anyhow::Result<()> {
    anyhow::ensure!(
        opts.peers >= 1 && opts.index < opts.peers,
        "--index {} must be below --peers {}",
        opts.index,
        opts.peers
    );
    let cfg = load_notify_config(opts.routing.as_deref())
        .map_err(|e| anyhow::anyhow!("routing config: {e}"))?;
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating data dir {}", opts.data_dir.display()))?;
    let notifier = Notifier::open(cfg, Some(opts.data_dir.clone()), opts.external_url.clone())
        .context("opening the notifier state")?;
    let stats = Arc::new(ConsumerStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (opts, notifier, stats, stop) = (
            opts.clone(),
            Arc::clone(&notifier),
            Arc::clone(&stats),
            Arc::clone(&stop),
        );
        std::thread::Builder::new()
            .name("notify-consumer".into())
            .spawn(move || consume(&opts, &notifier, &stats, &stop))?
    };
    let alerting = Arc::new(AlertState {
        rules: None,
        notifier: Arc::clone(&notifier),
        notify_file: opts.routing.clone(),
    });
    let http = Arc::new(NotifyHttp {
        alerting: Arc::clone(&alerting),
        stats,
        opts: opts.clone(),
    });
    let app = Router::new()
        .route("/metrics", get(notify_metrics))
        .route("/-/healthy", get(|| async { "Tidemark is Healthy.\n" }))
        .route("/-/ready", get(notify_ready))
        .with_state(http)
        .merge(crate::alert::api::routes(alerting))
        .merge(crate::web::notify_routes())
        .merge(crate::web::status::routes(Arc::clone(&opts.status)))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(opts.auth.clone()),
            crate::http::authorize,
        ))
        .layer(axum::middleware::from_fn(crate::http::request_log));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("binding {}", opts.listen))?;
        tracing::info!(
            "listening on http://{}; consuming {} partitions p % {} == {} of topic {} at {} as group {}; state in {}",
            listener.local_addr()?,
            if opts.peers == 1 { "all" } else { "the" },
            opts.peers,
            opts.index,
            opts.topic,
            opts.brokers,
            opts.group,
            opts.data_dir.display()
        );
        tokio::spawn(Arc::clone(&notifier).run());
        axum::serve(listener, app)
            .with_graceful_shutdown(crate::http::shutdown_signal())
            .await?;
        anyhow::Ok(())
    });
    stop.store(true, Ordering::Release);
    match consumer.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("consumer stopped: {e}"),
        Err(_) => tracing::error!("consumer thread panicked"),
    }
    rt.shutdown_timeout(Duration::from_secs(5));
    served
}

//! `tidemark up`: one process with the push endpoints, the embedded log, the timely job, the hot
//! index and the Prometheus API on one port.
//!
//! Start-up replays the retained log into an empty hot index (the log is the hot index's WAL);
//! `/-/ready` turns 200 once the replay is applied. SIGTERM or Ctrl-C stops accepting requests,
//! fsyncs the log, and drains the job: everything acknowledged is in the log.
//!
//! `POST /api/v1/replay?from_offset=N|from_time=T` restarts the job from an earlier log
//! offset (see [`crate::job`]); `GET /api/v1/replay` reports its progress.

use crate::time::now_ms;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::alert::api::AlertState;
use crate::alert::eval::{RuleConfig, Rules};
use crate::alert::notify::Notifier;
use crate::config::Config;
use crate::config::FsyncPolicy;
use crate::http::{api_error, authorize, request_log, shutdown_signal};
use crate::ingest::http as ingest_http;
use crate::job::checkpoint::{CheckpointStats, Checkpointer};
use crate::job::{replay_point, Job, JobEnv, JobProgress, ReplayRequest, RulesEnv, StartAt};
use crate::ops::{render_counters, Metrics, TextWriter};
use crate::query::api;
use crate::store::cold::query::ColdReader;
use crate::store::cold::ColdStore;
use crate::store::hot::HotIndex;
use crate::transport::log::{Log, RecordKind};
use tidemark_dataflows::rules::TickConfig;

/// Everything the HTTP handlers share.
pub struct AppState {
    pub cfg: Config,
    pub log: Log,
    pub hot: Arc<HotIndex>,
    pub metrics: Arc<Metrics>,
    pub progress: Arc<JobProgress>,
    /// The running job (swapped by a replay) and the last replay's start and target offset.
    pub job: std::sync::Mutex<Option<Job>>,
    /// What the job writes into (kept for restarts by a replay).
    pub env: JobEnv,
    pub replay: std::sync::Mutex<Option<(StartAt, u64)>>,
    /// Rules, the notifier and their routes.
    pub alerting: Arc<AlertState>,
    /// Periodic checkpoints (`None`: `[checkpoint] interval = "0s"`), and their counters.
    pub checkpoints: Option<Arc<Checkpointer>>,
    pub checkpoint_stats: Arc<CheckpointStats>,
}

/// The router of `tidemark up`: the push routes and the query side.
pub fn router(state: Arc<AppState>, ingest: Arc<ingest_http::IngestState>) -> Router {
    let query = Arc::new(api::QueryState {
        hot: Arc::clone(&state.hot),
        metrics: Arc::clone(&state.metrics),
        peers: Vec::new(),
        cold: state
            .env
            .cold
            .as_ref()
            .map(|c| Arc::new(ColdReader::new(Arc::clone(c)))),
    });
    Router::new()
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "Tidemark is Healthy.\n" }))
        .route("/-/ready", get(ready))
        .route("/api/v1/replay", get(replay_status).post(replay))
        .route("/", get(index))
        .with_state(Arc::clone(&state))
        .merge(crate::alert::api::routes(Arc::clone(&state.alerting)))
        .merge(api::routes(query))
        .merge(ingest_http::routes(ingest))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(state.cfg.auth.clone()),
            authorize,
        ))
        .layer(axum::middleware::from_fn(request_log))
}

async fn ready(State(s): State<Arc<AppState>>) -> Response {
    if s.metrics.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "Tidemark is Ready.\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Tidemark is replaying its log.\n",
        )
            .into_response()
    }
}

/// `POST /api/v1/replay?from_offset=N|from_time=T`: stop the job and start it again from the
/// replay point; answers once the new job runs.
async fn replay(
    State(s): State<Arc<AppState>>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let req = match (q.get("from_offset"), q.get("from_time")) {
        (Some(o), None) => match o.parse::<u64>() {
            Ok(o) => ReplayRequest::Offset(o),
            Err(_) => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    "bad_data",
                    format!("from_offset: {o:?} is not a log offset (a whole number)"),
                )
            }
        },
        (None, Some(t)) => match api::parse_time(t) {
            Ok(t) => ReplayRequest::Time(t),
            Err(e) => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    "bad_data",
                    format!("from_time: {e}; use RFC 3339, e.g. 2026-11-22T10:00:00Z"),
                )
            }
        },
        _ => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                "give exactly one of from_offset or from_time".into(),
            )
        }
    };
    let st = Arc::clone(&s);
    let res = tokio::task::spawn_blocking(move || -> Result<(StartAt, u64), String> {
        let at = replay_point(&st.log, req).map_err(|e| e.to_string())?;
        let target = st.log.end_offset();
        let mut job = st.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut old) = job.take() {
            old.shutdown();
        }
        let new = Job::start(
            st.log.clone(),
            st.env.clone(),
            &st.cfg.job,
            st.progress.positions.len(),
            Arc::clone(&st.progress),
            Some(at),
        )?;
        *job = Some(new);
        *st.replay.lock().unwrap_or_else(|e| e.into_inner()) = Some((at, target));
        let windows = if at.rollups_from == i64::MIN {
            "every window".to_string()
        } else {
            format!("windows from {}", crate::time::rfc3339(at.rollups_from))
        };
        tracing::info!(
            component = "log",
            "replaying the log from offset {} to {target}; rebuilding {windows}",
            at.offset
        );
        Ok((at, target))
    })
    .await
    .unwrap_or_else(|e| Err(format!("replay task failed: {e}")));
    match res {
        Ok((at, target)) => axum::Json(serde_json::json!({
            "status": "success",
            "data": {"from": at.offset, "target": target, "rollups_from": at.rollups_from}
        }))
        .into_response(),
        Err(e) => api_error(StatusCode::BAD_REQUEST, "bad_data", e),
    }
}

/// `GET /api/v1/replay`: the last replay's start, target and where the job is.
async fn replay_status(State(s): State<Arc<AppState>>) -> Response {
    let last = *s.replay.lock().unwrap_or_else(|e| e.into_inner());
    let (from, target, rollups_from) = match last {
        Some((at, t)) => (Some(at.offset), Some(t), Some(at.rollups_from)),
        None => (None, None, None),
    };
    axum::Json(serde_json::json!({
        "status": "success",
        "data": {
            "from": from,
            "target": target,
            "rollups_from": rollups_from,
            "position": s.progress.min_position(),
            "end": s.log.end_offset(),
            "watermark": s.progress.watermark(),
            "caught_up": target.is_some_and(|t| s.progress.caught_up(t)),
        }
    }))
    .into_response()
}

async fn index() -> Html<&'static str> {
    Html(include_str!("web/index.html"))
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let mut w = TextWriter(String::with_capacity(4096));
    render_counters(&s.metrics, &mut w);
    crate::store::hot::render_memory(&s.hot, &mut w);
    let hot = &s.hot;
    let samples = hot.sample_count() as f64;
    let bytes = hot.bytes() as f64;
    w.family(
        "tidemark_hot_series",
        "gauge",
        "Series in the hot index.",
        &[("", hot.catalog.len() as f64)],
    );
    w.family(
        "tidemark_hot_samples",
        "gauge",
        "Raw samples in the hot index.",
        &[("", samples)],
    );
    w.family(
        "tidemark_hot_samples_appended_total",
        "counter",
        "Raw samples the hot index took (retention drops them later; see tidemark_hot_samples for what it holds).",
        &[(
            "",
            hot.stats.samples_appended.load(Ordering::Relaxed) as f64,
        )],
    );
    w.family(
        "tidemark_hot_bytes",
        "gauge",
        "Bytes of samples (compressed chunks and open heads) and rollups in the hot index.",
        &[("", bytes)],
    );
    w.family(
        "tidemark_hot_raw_bytes",
        "gauge",
        "Bytes of raw samples in the hot index (sealed chunks, heads compressed as appended, out-of-order buffers).",
        &[("", hot.raw_bytes() as f64)],
    );
    w.family(
        "tidemark_hot_rollup_bytes",
        "gauge",
        "Bytes of 1m and 1h rollups in the hot index.",
        &[("", hot.rollup_bytes() as f64)],
    );
    w.family(
        "tidemark_hot_chunk_bytes_per_sample",
        "gauge",
        "Compressed bytes per sample in sealed chunks.",
        &[("", {
            let sealed = hot.stats.sealed_samples.load(Ordering::Relaxed) as f64;
            if sealed > 0.0 {
                hot.stats.chunk_bytes.load(Ordering::Relaxed) as f64 / sealed
            } else {
                0.0
            }
        })],
    );
    crate::store::hot::render_chunk_files(hot, &mut w);
    w.family(
        "tidemark_hot_samples_out_of_order_total",
        "counter",
        "Samples that arrived at or before their series' newest sample (corrections, duplicates, disorder between the job's workers): kept in a per-series buffer until merged into their chunk.",
        &[(
            "",
            hot.stats.samples_out_of_order.load(Ordering::Relaxed) as f64,
        )],
    );
    w.family(
        "tidemark_hot_samples_duplicate_total",
        "counter",
        "Samples the head already held with the same value (a restart's replay re-sending what its checkpoint holds): dropped without re-encoding the head.",
        &[(
            "",
            hot.stats.samples_duplicate.load(Ordering::Relaxed) as f64,
        )],
    );
    w.family(
        "tidemark_hot_samples_out_of_retention_total",
        "counter",
        "Samples the job dropped because they were older than the hot retention window.",
        &[(
            "",
            hot.stats.samples_out_of_retention.load(Ordering::Relaxed) as f64,
        )],
    );
    let wm = s.progress.watermark() as f64;
    let max_ts = s.log.max_event_ts();
    w.family(
        "tidemark_watermark_seconds",
        "gauge",
        "The job's watermark (its timely frontier), in event time.",
        &[("", wm / 1000.0)],
    );
    w.family(
        "tidemark_watermark_delay_seconds",
        "gauge",
        "How far the watermark trails the newest event time in the log.",
        &[(
            "",
            if max_ts == i64::MIN {
                0.0
            } else {
                ((max_ts as f64) - wm).max(0.0) / 1000.0
            },
        )],
    );
    w.family(
        "tidemark_log_end_offset",
        "gauge",
        "Next offset of the embedded log.",
        &[("", s.log.end_offset() as f64)],
    );
    w.family(
        "tidemark_log_consumer_offset",
        "gauge",
        "Lowest offset the job's sources have read up to.",
        &[("", s.progress.min_position() as f64)],
    );
    w.family(
        "tidemark_log_appended_bytes_total",
        "counter",
        "Bytes appended to the log since start.",
        &[("", s.log.appended_bytes() as f64)],
    );
    if let Some(cold) = &s.env.cold {
        cold.stats.render(&mut w);
    }
    crate::job::checkpoint::render(&s.checkpoint_stats, &mut w);
    w.family(
        "tidemark_log_corrupt_records_total",
        "counter",
        "Log records that failed to decode and were skipped.",
        &[(
            "",
            s.progress.corrupt_records.load(Ordering::Relaxed) as f64,
        )],
    );
    crate::alert::api::render_metrics(&s.alerting, &mut w);
    w.family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        &[("", crate::ops::rss_bytes())],
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        w.0,
    )
        .into_response()
}

/// Periodic work: readiness, idle ticks, fsync under `interval`, hot GC, log retention.
fn spawn_background(state: Arc<AppState>, startup_end: u64, started: Instant) {
    let st = Arc::clone(&state);
    tokio::spawn(async move {
        loop {
            if st.progress.caught_up(startup_end) {
                st.metrics.ready.store(true, Ordering::Release);
                tracing::info!(
                    "ready: replayed {} log records ({} series, {} samples) in {:.2}s",
                    startup_end,
                    st.hot.catalog.len(),
                    st.hot.sample_count(),
                    started.elapsed().as_secs_f64()
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let st = Arc::clone(&state);
    tokio::spawn(async move {
        let idle = st.cfg.job.idle_timeout.0.max(1);
        let mut tick =
            tokio::time::interval(Duration::from_millis((idle as u64 / 4).clamp(10, 1000)));
        loop {
            tick.tick().await;
            let max = st.log.max_event_ts();
            let since = now_ms() - st.log.last_append_ms();
            if max != i64::MIN && since >= idle {
                let log = st.log.clone();
                let t = max.saturating_add(since);
                let _ =
                    tokio::task::spawn_blocking(move || log.append(RecordKind::Tick, t, t, &[]))
                        .await;
            }
        }
    });
    if state.cfg.log.fsync == FsyncPolicy::Interval {
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(
                st.cfg.log.fsync_interval.0.max(1) as u64,
            ));
            loop {
                tick.tick().await;
                let log = st.log.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || log.sync()).await {
                    tracing::warn!(component = "log", "log fsync failed: {e}");
                }
            }
        });
    }
    if let Some(cold) = state.env.cold.clone() {
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            let every = Duration::from_millis(st.cfg.cold.compaction_interval.0.max(1000) as u64);
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let (s, c) = (Arc::clone(&st), Arc::clone(&cold));
                let _ = tokio::task::spawn_blocking(move || maintain_cold(&s, &c)).await;
            }
        });
    }
    if let Some(cp) = state.checkpoints.clone() {
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            let every = Duration::from_millis(cp.cfg.interval.0.max(1000) as u64);
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if !st.metrics.ready.load(Ordering::Acquire) || replaying(&st) {
                    continue;
                }
                let cp = Arc::clone(&cp);
                let _ = tokio::task::spawn_blocking(move || cp.run_once()).await;
            }
        });
    }
    // Sealed chunks to disk, also while the log is replayed (a restart seals as much as the
    // live run did).
    let hot = Arc::clone(&state.hot);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            let hot = Arc::clone(&hot);
            let _ = tokio::task::spawn_blocking(move || hot.spill()).await;
        }
    });
    let st = state;
    tokio::spawn(async move {
        // Every minute (`TIDEMARK_TEST_GC_INTERVAL_MS`: tests that watch retention act).
        let every = std::env::var("TIDEMARK_TEST_GC_INTERVAL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(60), Duration::from_millis);
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let s = Arc::clone(&st);
            let _ = tokio::task::spawn_blocking(move || {
                s.hot.gc();
                if s.checkpoints.is_some() {
                    return; // the checkpointer truncates the log behind the oldest checkpoint
                }
                let age = Duration::from_millis(s.cfg.log.retention.0.max(0) as u64);
                // Keep segments whose samples the cold tiers have not sealed yet: the widest
                // partition holding a sample is its day in the 1h tier.
                let sealed = s
                    .env
                    .cold
                    .as_ref()
                    .map(|c| crate::store::cold::writer::sealed_through_all(c, crate::job::UP_JOB))
                    .unwrap_or(i64::MAX);
                if let Err(e) = s.log.delete_older_than_if(age, |newest| {
                    let lateness = s.cfg.job.allowed_lateness.0;
                    newest == i64::MIN
                        || crate::store::cold::Tier::Hour
                            .partition(newest)
                            .end()
                            .saturating_add(lateness)
                            <= sealed
                }) {
                    tracing::warn!(component = "log", "log retention failed: {e}");
                }
            })
            .await;
        }
    });
}

/// True while a replay (`tidemark replay`) has not caught up with its target.
fn replaying(s: &AppState) -> bool {
    s.replay
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_some_and(|(_, target)| !s.progress.caught_up(target))
}

/// Retention and compaction of the cold tiers, by the job's watermark (event time): partitions
/// past their tier's retention are deleted; partitions with several files whose end is more
/// than the allowed lateness plus an hour behind the watermark are compacted.
fn maintain_cold(s: &AppState, cold: &ColdStore) {
    use crate::store::cold::maintain;
    let wm = s.progress.watermark().min(i64::MAX as u64) as i64;
    if wm <= 0 {
        return;
    }
    let run = || -> Result<(), crate::store::cold::ColdError> {
        let listing = maintain::list(cold)?;
        let gone = maintain::apply_retention(cold, &listing, wm, &|t| {
            let c = &s.cfg.cold;
            match t {
                crate::store::cold::Tier::Raw => c.raw_retention.0,
                crate::store::cold::Tier::Minute => c.minute_retention.0,
                crate::store::cold::Tier::Hour => c.hour_retention.0,
            }
        })?;
        if !gone.is_empty() {
            tracing::info!(
                component = "tiers",
                "cold retention deleted {} partitions",
                gone.len()
            );
        }
        let listing = maintain::list(cold)?;
        let sealed = wm - s.cfg.job.allowed_lateness.0 - 3_600_000;
        let (_, failed) = maintain::compact_all(cold, &listing, sealed);
        for (p, e) in failed {
            tracing::warn!(
                component = "tiers",
                "cannot compact {} (its files stay as they are): {e}",
                p.dir()
            );
        }
        Ok(())
    };
    if let Err(e) = run() {
        tracing::warn!(
            component = "tiers",
            "cold tier maintenance failed (will retry): {e}"
        );
    }
}

/// Loads the rules (files with errors are reported and left out) and the notifier (a bad
/// routing file stops the start: it is the operator's explicit configuration).
fn start_alerting(cfg: &Config, data_dir: &std::path::Path) -> anyhow::Result<Arc<AlertState>> {
    let external_url = if cfg.rules.external_url.is_empty() {
        format!("http://{}", cfg.server.listen)
    } else {
        cfg.rules.external_url.clone()
    };
    let state_dir = data_dir.join("alerts");
    let notify_cfg = crate::alert::api::load_notify_config(cfg.alerting.config.as_deref())
        .map_err(|e| anyhow::anyhow!("alerting.config: {e}"))?;
    let notifier = Notifier::open(notify_cfg, Some(state_dir.clone()), external_url.clone())
        .context("opening the notifier state")?;
    let rules = if cfg.rules.enabled {
        let files = cfg
            .rules
            .resolve_files(data_dir)
            .context("writing the default rule file")?;
        let (rules, errors) = Rules::open(RuleConfig {
            files,
            state_dir: Some(state_dir),
            external_labels: cfg.rules.external_labels.clone(),
            external_url,
            resolution_ms: cfg.rules.resolution.0.max(1) as u64,
        });
        for e in &errors {
            tracing::warn!(
                component = "rules",
                "rule file error (its group is left out): {e}"
            );
        }
        tracing::info!(component = "rules", "{} rules loaded", rules.rule_count());
        Some(rules)
    } else {
        None
    };
    Ok(Arc::new(AlertState {
        rules,
        notifier,
        notify_file: cfg.alerting.config.clone(),
    }))
}

/// Runs `tidemark up` until SIGTERM or Ctrl-C.
pub fn run(cfg: Config) -> anyhow::Result<()> {
    let started = Instant::now();
    let data_dir = cfg.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let log =
        Log::open(&data_dir.join("log"), cfg.log.fsync).context("opening the embedded log")?;
    let checkpoint_stats = Arc::new(CheckpointStats::default());
    let restored = crate::job::checkpoint::restore(
        &data_dir,
        cfg.hot.retention.0,
        cfg.hot.minute_rollup_retention.0,
        &log,
        &checkpoint_stats,
    )
    .with_context(|| {
        format!(
            "opening the chunk directory {} (sealed chunks of the hot index)",
            crate::job::checkpoint::chunk_dir(&data_dir).display()
        )
    })?;
    let hot = Arc::new(restored.hot);
    let metrics = Arc::new(Metrics::default());
    let startup_end = log.end_offset();
    let workers = cfg.workers();
    let progress = Arc::new(JobProgress::new(workers));
    let cold_url = cfg.cold.url(&data_dir);
    let cold = Arc::new(ColdStore::open(&cold_url).context("opening the cold tiers")?);
    let alerting = start_alerting(&cfg, &data_dir)?;
    let env = JobEnv {
        hot: Arc::clone(&hot),
        metrics: Arc::clone(&metrics),
        cold: Some(Arc::clone(&cold)),
        rules: alerting.rules.as_ref().map(|r| RulesEnv {
            rules: Arc::clone(r),
            sink: Arc::clone(&alerting.notifier) as Arc<dyn crate::alert::eval::AlertSink>,
            ticks: TickConfig {
                resolution: cfg.rules.resolution.0.max(1) as u64,
                ..TickConfig::default()
            },
            incremental: cfg.rules.incremental,
        }),
    };
    let job = Job::start(
        log.clone(),
        env.clone(),
        &cfg.job,
        workers,
        Arc::clone(&progress),
        restored.at,
    )
    .map_err(anyhow::Error::msg)?;
    let checkpoints = cfg.checkpoint.enabled().then(|| {
        Arc::new(Checkpointer {
            dir: crate::job::checkpoint::dir(&data_dir),
            cfg: cfg.checkpoint.clone(),
            hot: Arc::clone(&hot),
            progress: Arc::clone(&progress),
            log: log.clone(),
            faults: crate::store::hot::checkpoint::Faults::from_env(),
            stats: Arc::clone(&checkpoint_stats),
        })
    });
    let listen = cfg.server.listen;
    let ingest = Arc::new(ingest_http::IngestState {
        limits: cfg.ingest.clone(),
        sink: ingest_http::Sink::Log(log.clone()),
        metrics: Arc::clone(&metrics),
        hot: Some(Arc::clone(&hot)),
    });
    let state = Arc::new(AppState {
        cfg,
        log: log.clone(),
        hot,
        metrics,
        progress,
        job: std::sync::Mutex::new(Some(job)),
        env,
        replay: std::sync::Mutex::new(None),
        alerting,
        checkpoints,
        checkpoint_stats,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        tracing::info!(
            "listening on http://{} (data dir {}, {} workers, log from offset {} to {})",
            listener.local_addr()?,
            data_dir.display(),
            workers,
            log.start_offset(),
            startup_end
        );
        spawn_background(Arc::clone(&state), startup_end, started);
        tokio::spawn(Arc::clone(&state.alerting.notifier).run());
        axum::serve(listener, router(Arc::clone(&state), ingest))
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        anyhow::Ok(())
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    log.sync().context("final log fsync")?;
    // A checkpoint at the end makes the next start load it instead of replaying the log.
    if let Some(cp) = &state.checkpoints {
        if state.metrics.ready.load(Ordering::Acquire) && !replaying(&state) {
            if let Ok(info) = cp.run_once() {
                tracing::info!(
                    component = "job",
                    "checkpoint {} written at shutdown ({} series, {} bytes)",
                    info.path.display(),
                    info.series,
                    info.bytes
                );
            }
        }
    }
    // A store that is down must not hold the shutdown: what is not in files is in the log.
    cold.stop.store(true, Ordering::Release);
    if let Some(mut job) = state.job.lock().unwrap_or_else(|e| e.into_inner()).take() {
        job.shutdown();
    }
    tracing::info!("stopped; log end offset {}", log.end_offset());
    served
}

/// `tidemark ingest`: the push endpoints, producing to Kafka; stateless, so several can run
/// behind a load balancer. `/-/ready` is 200 while the brokers answer a metadata request for
/// the topic (within 2 s), 503 with the brokers and the reason otherwise.
pub fn run_ingest(cfg: Config) -> anyhow::Result<()> {
    let sink = crate::transport::kafka::KafkaSink::new(&cfg.kafka)?;
    let metrics = Arc::new(Metrics::default());
    let listen = cfg.server.listen;
    let kafka = cfg.kafka.clone();
    let auth = Arc::new(cfg.auth.clone());
    let state = Arc::new(ingest_http::IngestState {
        limits: cfg.ingest.clone(),
        sink: ingest_http::Sink::Kafka(sink),
        metrics: Arc::clone(&metrics),
        hot: None,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        tracing::info!(
            "listening on http://{}, producing to topic {:?} at {} ({:?}, key {:?})",
            listener.local_addr()?,
            kafka.topic,
            kafka.brokers,
            kafka.format,
            kafka.partition_key
        );
        let m = Arc::clone(&metrics);
        let ingest_ready = {
            let state = Arc::clone(&state);
            move || {
                let state = Arc::clone(&state);
                async move {
                    let ingest_http::Sink::Kafka(k) = &state.sink else {
                        return (StatusCode::OK, "Tidemark ingest is Ready.\n".to_string());
                    };
                    match k.ready(Duration::from_secs(2)).await {
                        Ok(n) => (
                            StatusCode::OK,
                            format!(
                                "Tidemark ingest is Ready: topic {:?} has {n} partitions.\n",
                                k.config().topic
                            ),
                        ),
                        Err(e) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("Tidemark ingest is not ready: {e}\n"),
                        ),
                    }
                }
            }
        };
        let app = Router::new()
            .route(
                "/metrics",
                get(move || {
                    let m = Arc::clone(&m);
                    async move {
                        let mut w = TextWriter(String::with_capacity(2048));
                        render_counters(&m, &mut w);
                        (
                            [(
                                header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )],
                            w.0,
                        )
                    }
                }),
            )
            .route("/-/healthy", get(|| async { "Tidemark is Healthy.\n" }))
            .route("/-/ready", get(ingest_ready))
            .merge(ingest_http::routes(Arc::clone(&state)))
            .layer(axum::middleware::from_fn_with_state(auth, authorize))
            .layer(axum::middleware::from_fn(request_log));
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        anyhow::Ok(())
    })?;
    if let ingest_http::Sink::Kafka(k) = &state.sink {
        k.flush(Duration::from_secs(5));
    }
    tracing::info!("stopped");
    Ok(())
}

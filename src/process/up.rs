//! `tidemark up`: one process with the push endpoints, the embedded log, the timely job, the
//! hot index, the rules and the Prometheus API on one port ([`crate::server`] holds its HTTP
//! side). Start-up loads the newest checkpoint and replays the log after it; SIGTERM or
//! Ctrl-C stops accepting requests, fsyncs the log, drains the job and writes a checkpoint.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::alert::api::AlertState;
use crate::alert::eval::{RuleConfig, Rules};
use crate::alert::notify::Notifier;
use crate::config::{Config, FsyncPolicy};
use crate::ingest::http as ingest_http;
use crate::job::checkpoint::{CheckpointStats, Checkpointer};
use crate::job::{Job, JobEnv, JobProgress, RulesEnv};
use crate::ops::Metrics;
use crate::server::{router, AppState};
use crate::store::cold::ColdStore;
use crate::time::now_ms;
use crate::transport::log::{Log, RecordKind};
use tidemark_dataflows::rules::TickConfig;

/// Periodic work: readiness, idle ticks, fsync under `interval`, hot GC, log retention.
fn spawn_background(state: Arc<AppState>, startup_end: u64, started: Instant) {
    let st = Arc::clone(&state);
    tokio::spawn(async move {
        loop {
            if st.progress.caught_up(startup_end) {
                st.metrics.ready.store(true, Ordering::Release);
                tracing::info!(
                    records = startup_end,
                    series = st.hot.catalog.len() as u64,
                    samples = st.hot.sample_count(),
                    seconds = started.elapsed().as_secs_f64(),
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
                    tracing::warn!(component = "log", "log fsync failed: {e}; acknowledged pushes may not survive a power loss until it works again (check the data dir's disk: space, I/O errors)");
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
                    tracing::warn!(component = "log", "log retention failed: {e}; the log grows until it works (check permissions and free space in the data dir)");
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
        maintain::record(cold, &listing);
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
    // The scrape file is checked before anything starts (a bad file stops the start).
    let tls = crate::http::tls_acceptor(&cfg.server).map_err(anyhow::Error::msg)?;
    let self_token = cfg.auth.tokens.iter().map(|t| t.token.clone()).next();
    let (scrape_cfg, ring) = crate::collect::setup(
        &cfg.scrape,
        cfg.server.listen,
        self_token.as_deref(),
        tls.is_some(),
    )
    .map_err(anyhow::Error::msg)?;
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
        metadata: Default::default(),
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
        collector: Arc::new(std::sync::OnceLock::new()),
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
            address = %listener.local_addr()?,
            data_dir = %data_dir.display(),
            workers,
            "listening on {}://{} (data dir {}, {} workers, log from offset {} to {})",
            if tls.is_some() { "https" } else { "http" },
            listener.local_addr()?,
            data_dir.display(),
            workers,
            log.start_offset(),
            startup_end
        );
        crate::ingest::tcp::start_graphite(&ingest)
            .await
            .map_err(anyhow::Error::msg)?;
        spawn_background(Arc::clone(&state), startup_end, started);
        let _ = state
            .collector
            .set(crate::collect::manager::Collector::start(
                scrape_cfg,
                Arc::clone(&ingest),
                ring,
            ));
        tokio::spawn(Arc::clone(&state.alerting.notifier).run());
        crate::http::serve(
            listener,
            tls,
            router(Arc::clone(&state), Arc::clone(&ingest)),
        )
        .await?;
        if let Some(c) = state.collector.get().cloned() {
            let _ = tokio::task::spawn_blocking(move || c.shutdown()).await;
        }
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

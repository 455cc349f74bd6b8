//! The HTTP side of `tidemark up` ([`crate::process::up`] starts it): the router, readiness,
//! `/metrics`, and the log replay API.
//!
//! `POST /api/v1/replay?from_offset=N|from_time=T` restarts the job from an earlier log
//! offset (see [`crate::job`]); `GET /api/v1/replay` reports its progress.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::alert::api::AlertState;
use crate::config::Config;
use crate::http::{api_error, authorize, request_log};
use crate::ingest::http as ingest_http;
use crate::job::checkpoint::{CheckpointStats, Checkpointer};
use crate::job::{replay_point, Job, JobEnv, JobProgress, ReplayRequest, StartAt};
use crate::ops::{render_counters, Metrics, TextWriter};
use crate::query::api;
use crate::store::cold::query::ColdReader;
use crate::store::hot::HotIndex;
use crate::transport::log::Log;

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
    /// The scrape manager (started once the server listens).
    pub collector: Arc<std::sync::OnceLock<Arc<crate::collect::manager::Collector>>>,
}

/// The router of `tidemark up`: the push routes and the query side.
pub fn router(state: Arc<AppState>, ingest: Arc<ingest_http::IngestState>) -> Router {
    let query = Arc::new(api::QueryState {
        hot: Arc::clone(&state.hot),
        metrics: Arc::clone(&state.metrics),
        peers: Vec::new(),
        cold: {
            let slot = api::ColdSlot::default();
            if let Some(c) = &state.env.cold {
                let _ = slot.set(Arc::new(ColdReader::new(Arc::clone(c))));
            }
            slot
        },
        metadata: Arc::clone(&ingest.metadata),
        limits: state.cfg.query.clone(),
        slots: api::QueryState::slots_for(&state.cfg.query),
        cache: (state.cfg.query.cache_bytes > 0).then(|| {
            crate::query::cache::ResultCache::new(
                state.cfg.query.cache_bytes,
                state.cfg.job.out_of_orderness.0,
            )
        }),
    });
    Router::new()
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "Tidemark is Healthy.\n" }))
        .route("/-/ready", get(ready))
        .route("/api/v1/replay", get(replay_status).post(replay))
        .route("/api/v1/status/tsdb", get(tsdb_status))
        .with_state(Arc::clone(&state))
        .merge(crate::web::routes())
        .merge(crate::web::status::routes(Arc::new(
            crate::web::status::ProcessStatus::new("up", &state.cfg),
        )))
        .merge(crate::web::dashboards::routes(Arc::new(
            crate::web::dashboards::Dashboards {
                dir: state.cfg.ui.dashboards.clone(),
            },
        )))
        .merge(crate::alert::api::routes(Arc::clone(&state.alerting)))
        .merge(api::routes(query))
        .merge(ingest_http::routes(ingest))
        .merge(crate::collect::manager::routes(Arc::clone(
            &state.collector,
        )))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(state.cfg.auth.clone()),
            authorize,
        ))
        .layer(axum::middleware::from_fn(request_log))
}

/// `GET /api/v1/status/tsdb`: Prometheus's shape (`headStats`, the ten metric names with the
/// most series), plus a `tidemark` object with what `tidemark import` needs to split its data
/// between the hot index and the cold tiers: the hot retention, the oldest time ingest
/// accepts now, the cold tiers' URL and their retentions.
async fn tsdb_status(State(s): State<Arc<AppState>>) -> Response {
    let hot = &s.hot;
    let newest = hot.newest();
    let c = &s.cfg.cold;
    let mut data = crate::web::status::tsdb_json(hot);
    data["tidemark"] = serde_json::json!({
        "newest": newest,
        "hotRetentionMs": hot.retention_ms(),
        "acceptsFrom": newest.map(|_| hot.min_valid_ts()),
        "allowedLatenessMs": s.cfg.job.allowed_lateness.0,
        "coldUrl": s.env.cold.as_ref().map(|c| c.url.clone()),
        "rawRetentionMs": c.raw_retention.0,
        "minuteRetentionMs": c.minute_retention.0,
        "hourRetentionMs": c.hour_retention.0,
    });
    let body = serde_json::json!({"status": "success", "data": data});
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
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
    let (segments, bytes) = s.log.disk_usage();
    w.family(
        "tidemark_log_bytes",
        "gauge",
        "Bytes of the embedded log's segments on disk (truncated behind checkpoints).",
        &[("", bytes as f64)],
    );
    w.family(
        "tidemark_log_segments",
        "gauge",
        "Segments of the embedded log on disk.",
        &[("", segments as f64)],
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
    crate::ops::render_process(&mut w);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        w.0,
    )
        .into_response()
}

//! What a process says about itself, for the status page and for tools that read
//! Prometheus's status API:
//!
//! - `GET /api/v1/status/config`: the configuration in effect as TOML, every key with its value
//!   (defaults included), tokens shown as `<secret>` ([`crate::config::Config::effective_toml`]),
//!   and the file it was read from. Prometheus answers `{"yaml": ...}`; Tidemark's file is
//!   TOML, so the key is `toml`.
//! - `GET /api/v1/status/flags`: the command line's flags with their values, defaults included,
//!   as Prometheus's shape (one object, flag name -> value).
//! - `GET /api/v1/status/runtimeinfo`: start time, working directory, the hot retention
//!   (`storageRetention`), and Tidemark's own: the process's role, pid and worker threads.
//!
//! The flags are the process's command line, recorded once by the binary ([`set_flags`]);
//! a process started without one (a test that runs a server in its own process) lists none.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::config::Config;

static FLAGS: OnceLock<Vec<(String, String)>> = OnceLock::new();

/// Records the command line's flags (name without dashes, value as given or defaulted). A
/// flag whose name says it holds a secret (`token`, `password`, `secret`) is shown as
/// `<secret>`. The first call wins.
pub fn set_flags(flags: Vec<(String, String)>) {
    let shown = flags
        .into_iter()
        .map(|(k, v)| {
            let secret = ["token", "password", "secret"]
                .iter()
                .any(|s| k.to_ascii_lowercase().contains(s));
            let v = if secret && !v.is_empty() {
                "<secret>".to_string()
            } else {
                v
            };
            (k, v)
        })
        .collect();
    let _ = FLAGS.set(shown);
}

/// A process's description, built once at start.
#[derive(Debug)]
pub struct ProcessStatus {
    /// `up`, `worker`, `notify`.
    role: &'static str,
    config_toml: String,
    config_file: Option<String>,
    started: chrono::DateTime<chrono::Utc>,
    hot_retention: String,
    workers: usize,
}

impl ProcessStatus {
    /// `cfg` as the process runs with it (its flags already applied).
    pub fn new(role: &'static str, cfg: &Config) -> ProcessStatus {
        let config_file = FLAGS.get().and_then(|f| {
            f.iter()
                .find(|(k, v)| k == "config" && !v.is_empty())
                .map(|(_, v)| v.clone())
        });
        ProcessStatus {
            role,
            config_toml: cfg.effective_toml(),
            config_file,
            started: chrono::Utc::now(),
            hot_retention: crate::time::format_duration_ms(cfg.hot.retention.0),
            workers: cfg.workers(),
        }
    }
}

/// The three routes, for any process's router.
pub fn routes<S: Clone + Send + Sync + 'static>(s: Arc<ProcessStatus>) -> Router<S> {
    Router::new()
        .route("/api/v1/status/config", get(config))
        .route("/api/v1/status/flags", get(flags))
        .route("/api/v1/status/runtimeinfo", get(runtimeinfo))
        .with_state(s)
}

async fn config(State(s): State<Arc<ProcessStatus>>) -> Response {
    axum::Json(json!({
        "status": "success",
        "data": {"toml": s.config_toml, "file": s.config_file},
    }))
    .into_response()
}

async fn flags() -> Response {
    let map: serde_json::Map<String, serde_json::Value> = FLAGS
        .get()
        .map(|f| f.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
        .unwrap_or_default();
    axum::Json(json!({"status": "success", "data": map})).into_response()
}

async fn runtimeinfo(State(s): State<Arc<ProcessStatus>>) -> Response {
    let started = s
        .started
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    axum::Json(json!({
        "status": "success",
        "data": {
            "startTime": started,
            "CWD": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
            "reloadConfigSuccess": true,
            "lastConfigTime": started,
            "storageRetention": s.hot_retention,
            "role": s.role,
            "pid": std::process::id(),
            "workers": s.workers,
        },
    }))
    .into_response()
}

/// `/api/v1/status/tsdb`'s `data` in Prometheus's shape from a hot index: `headStats` and the
/// ten metric names with the most series (the other lists empty).
pub fn tsdb_json(hot: &crate::store::hot::HotIndex) -> serde_json::Value {
    let mut by_metric: Vec<(String, usize)> = hot
        .catalog
        .label_values(crate::model::METRIC_NAME)
        .into_iter()
        .map(|m| {
            let n = hot.catalog.series_of_metric(&m);
            (m, n)
        })
        .collect();
    by_metric.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    by_metric.truncate(10);
    let newest = hot.newest();
    json!({
        "headStats": {
            "numSeries": hot.catalog.len(),
            "chunkCount": 0,
            "minTime": newest.map_or(0, |_| hot.min_valid_ts()),
            "maxTime": newest.unwrap_or(0),
        },
        "seriesCountByMetricName": by_metric
            .iter()
            .map(|(m, n)| json!({"name": m, "value": n}))
            .collect::<Vec<_>>(),
        "labelValueCountByLabelName": [],
        "memoryInBytesByLabelName": [],
        "seriesCountByLabelValuePair": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn config_flags_and_runtime_answer_in_prometheus_shapes() {
        use tower::ServiceExt as _;
        set_flags(vec![
            ("listen".into(), "127.0.0.1:1".into()),
            ("config".into(), "t.toml".into()),
            ("token".into(), "hunter2".into()),
        ]);
        let mut cfg = Config::parse("[[auth.tokens]]\ntoken = \"abc\"\nrole = \"read\"\n").unwrap();
        cfg.server.workers = 3;
        let app: Router = routes(Arc::new(ProcessStatus::new("up", &cfg)));
        let get = |path: &'static str| {
            let app = app.clone();
            async move {
                let r = app
                    .oneshot(
                        axum::http::Request::get(path)
                            .body(axum::body::Body::empty())
                            .unwrap(),
                    )
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "{path}");
                let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
                serde_json::from_slice::<serde_json::Value>(&b).unwrap()
            }
        };
        let c = get("/api/v1/status/config").await;
        let text = c["data"]["toml"].as_str().unwrap();
        assert!(
            text.contains("[server]") && text.contains("workers = 3"),
            "{text}"
        );
        assert!(!text.contains("abc") && text.contains("<secret>"), "{text}");
        assert_eq!(c["data"]["file"], "t.toml");
        let f = get("/api/v1/status/flags").await;
        assert_eq!(f["data"]["listen"], "127.0.0.1:1");
        assert_eq!(f["data"]["token"], "<secret>");
        let r = get("/api/v1/status/runtimeinfo").await;
        assert_eq!(r["data"]["storageRetention"], "1d2h");
        assert_eq!(r["data"]["role"], "up");
        assert_eq!(r["data"]["workers"], 3);
    }
}

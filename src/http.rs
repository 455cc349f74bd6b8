//! What every process's HTTP server shares (`up`, `ingest`, `worker`, `notify`): bearer-token
//! authorization by route, request logs, the error body of Prometheus's API, and shutdown on
//! SIGINT or SIGTERM.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::config::{AuthConfig, Role};

/// The role a request needs: `admin` to change silences, reload, or replay; `write` to push
/// samples or alerts; `read` for everything else but the health checks.
pub fn required_role(method: &axum::http::Method, path: &str) -> Option<Role> {
    use axum::http::Method;
    match path {
        "/-/healthy" | "/-/ready" => None,
        "/-/reload" => Some(Role::Admin),
        "/api/v1/replay" | "/api/v2/silences" | "/api/v1/jobs" if method == Method::POST => {
            Some(Role::Admin)
        }
        // Worker cluster: cancel a job, replay it.
        p if p.starts_with("/api/v1/jobs/") && method != Method::GET => Some(Role::Admin),
        p if p.starts_with("/api/v2/silence/") && method == Method::DELETE => Some(Role::Admin),
        "/write" | "/api/v2/write" | "/api/v1/write" | "/api/v1/import/prometheus" => {
            Some(Role::Write)
        }
        "/api/v2/alerts" if method == Method::POST => Some(Role::Write),
        _ => Some(Role::Read),
    }
}

/// Checks the bearer token against `[auth] tokens` (everything is open without tokens).
pub async fn authorize(
    State(auth): State<Arc<AuthConfig>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(need) = required_role(req.method(), req.uri().path()) {
        if let Err((code, msg)) = auth.check(req.headers(), need) {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::FORBIDDEN);
            return api_error(status, "unauthorized", msg);
        }
    }
    next.run(req).await
}

/// Request logs: one `debug` event of component `http` per request (method, path, status,
/// duration), so off unless `--log.level=debug` or `RUST_LOG=info,tidemark::http=debug`.
pub async fn request_log(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if !tracing::enabled!(target: "tidemark::http", tracing::Level::DEBUG) {
        return next.run(req).await;
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let t0 = Instant::now();
    let res = next.run(req).await;
    tracing::debug!(
        target: "tidemark::http",
        method = %method,
        path,
        status = res.status().as_u16(),
        duration_ms = t0.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    res
}

/// Prometheus's error body: `{"status": "error", "errorType": kind, "error": msg}`.
pub fn api_error(status: StatusCode, kind: &str, msg: String) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"status": "error", "errorType": kind, "error": msg})),
    )
        .into_response()
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM: the graceful-shutdown signal of every server.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: no new requests; flushing the log and draining the job");
}

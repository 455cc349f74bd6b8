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
        // The UI's page and files: no data (its API requests carry the user's token).
        p if crate::web::is_public(p) => None,
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
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(need) = required_role(req.method(), req.uri().path()) {
        match auth.check_scoped(req.headers(), need) {
            Err((code, msg)) => {
                let status = StatusCode::from_u16(code).unwrap_or(StatusCode::FORBIDDEN);
                return api_error(status, "unauthorized", msg);
            }
            // The ingest handlers hold every sample to the token's labels.
            Ok(Some(scope)) => {
                req.extensions_mut().insert(scope);
            }
            Ok(None) => {}
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

/// HTTPS for a listener: the rustls acceptor of `[server] tls_cert_file` / `tls_key_file`
/// (`None` when neither is set). Errors name the key and the file.
pub fn tls_acceptor(
    server: &crate::config::ServerConfig,
) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = match (&server.tls_cert_file, &server.tls_key_file) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) if c.as_os_str().is_empty() && k.as_os_str().is_empty() => {
            return Ok(None)
        }
        (Some(c), Some(k)) if !c.as_os_str().is_empty() && !k.as_os_str().is_empty() => (c, k),
        _ => {
            return Err(
                "server.tls_cert_file and server.tls_key_file: set both for HTTPS, or neither"
                    .into(),
            )
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("server.tls_cert_file {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "server.tls_cert_file {}: no PEM certificate in it",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("server.tls_key_file {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("server.tls_cert_file / tls_key_file: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))))
}

/// A TCP listener whose connections are TLS: handshakes run in their own tasks (a slow or
/// failing client does not hold the others up) and finished streams are handed to axum.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        std::net::SocketAddr,
    )>,
    local: std::net::SocketAddr,
}

impl TlsListener {
    pub fn new(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| ([127, 0, 0, 1], 0).into());
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(target: "tidemark::http", "accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let hs = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(tcp),
                    )
                    .await;
                    match hs {
                        Ok(Ok(s)) => {
                            let _ = tx.send((s, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(target: "tidemark::http", %peer, "TLS handshake failed: {e}")
                        }
                        Err(_) => {
                            tracing::debug!(target: "tidemark::http", %peer, "TLS handshake timed out")
                        }
                    }
                });
            }
        });
        TlsListener { rx, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accept task ended (never, short of a runtime shutdown): wait forever.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Serves `app` on `listener`, over TLS when `tls` is set, until [`shutdown_signal`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: axum::Router,
) -> std::io::Result<()> {
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown_signal())
                .await
        }
        Some(a) => {
            axum::serve(TlsListener::new(listener, a), app)
                .with_graceful_shutdown(shutdown_signal())
                .await
        }
    }
}

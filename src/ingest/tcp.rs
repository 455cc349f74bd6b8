//! Graphite plaintext over TCP (`[ingest] graphite_listen`): each connection's lines are
//! parsed in chunks ([`super::graphite`]) and stored through the same path as HTTP pushes.
//! The protocol has no replies, so a bad line is logged with the peer and its line number
//! (the first few per connection) and counted in `tidemark_samples_rejected_total`; the lines
//! around it are kept. While the sink refuses a chunk (Kafka down), the connection is not
//! read: TCP's flow control holds the sender back, and nothing is lost.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::graphite::{self, Templates};
use super::http::IngestState;
use crate::time::now_ms;

/// Lines parsed and stored together.
const CHUNK_LINES: usize = 10_000;
/// A partial chunk is stored after this long without more lines.
const CHUNK_WAIT: Duration = Duration::from_millis(200);
/// Bad lines logged per connection.
const LOGGED_ERRORS: usize = 10;

/// Starts the Graphite listener of `[ingest] graphite_listen` (if set) on the current
/// runtime; errors name the key (a template that does not parse, an address that cannot be
/// bound).
pub async fn start_graphite(state: &Arc<IngestState>) -> Result<(), String> {
    let Some(addr) = state.limits.graphite_listen else {
        return Ok(());
    };
    let templates = Templates::parse(&state.limits.graphite_templates)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("ingest.graphite_listen: cannot bind {addr}: {e}"))?;
    tracing::info!(target: "tidemark::ingest", "graphite plaintext on tcp://{}", listener.local_addr().map(|a| a.to_string()).unwrap_or_default());
    tokio::spawn(serve_graphite(
        listener,
        Arc::clone(state),
        Arc::new(templates),
    ));
    Ok(())
}

/// Accepts connections on `listener` until the runtime stops.
pub async fn serve_graphite(
    listener: TcpListener,
    state: Arc<IngestState>,
    templates: Arc<Templates>,
) {
    loop {
        match listener.accept().await {
            Ok((conn, peer)) => {
                let (state, templates) = (Arc::clone(&state), Arc::clone(&templates));
                tokio::spawn(async move {
                    connection(conn, peer.to_string(), state, templates).await;
                });
            }
            Err(e) => {
                tracing::warn!(target: "tidemark::ingest", "graphite: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(
    conn: TcpStream,
    peer: String,
    state: Arc<IngestState>,
    templates: Arc<Templates>,
) {
    let mut lines = BufReader::new(conn).lines();
    let (mut chunk, mut n_lines, mut first_line, mut logged) =
        (String::new(), 0usize, 1usize, 0usize);
    loop {
        let next = if n_lines == 0 {
            lines.next_line().await.map(Some)
        } else {
            match tokio::time::timeout(CHUNK_WAIT, lines.next_line()).await {
                Ok(r) => r.map(Some),
                Err(_) => Ok(None),
            }
        };
        let (done, flush) = match next {
            Ok(Some(Some(line))) => {
                chunk.push_str(&line);
                chunk.push('\n');
                n_lines += 1;
                (false, n_lines >= CHUNK_LINES)
            }
            Ok(Some(None)) => (true, true),
            Ok(None) => (false, true),
            Err(e) => {
                tracing::warn!(target: "tidemark::ingest", peer = peer.as_str(), "graphite: connection error: {e}");
                (true, true)
            }
        };
        if flush && n_lines > 0 {
            let text = std::mem::take(&mut chunk);
            let (st, t) = (Arc::clone(&state), Arc::clone(&templates));
            let start = first_line;
            let parsed = tokio::task::spawn_blocking(move || {
                let mut b = st.builder();
                graphite::parse(&text, start, now_ms(), &t, &mut b);
                st.admit(b)
            })
            .await;
            let Ok(v) = parsed else { return };
            if v.rejected > 0 && logged < LOGGED_ERRORS {
                logged += 1;
                tracing::warn!(target: "tidemark::ingest", peer = peer.as_str(), "graphite: {} lines rejected: {}", v.rejected, v.errors);
            }
            // Retry until stored: not reading meanwhile holds the sender back.
            let mut backoff = Duration::from_millis(100);
            let batch = v.batch;
            loop {
                match state.store(batch.clone()).await {
                    Ok(_) => break,
                    Err(e) => {
                        state
                            .metrics
                            .sink_failures
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(target: "tidemark::ingest", peer = peer.as_str(), "graphite: not stored ({e}); retrying in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            first_line += n_lines;
            n_lines = 0;
        }
        if done {
            return;
        }
    }
}

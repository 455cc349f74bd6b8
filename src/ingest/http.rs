//! Push endpoints: `POST /write` and `/api/v2/write` (Influx line protocol, `precision`, gzip),
//! `POST /api/v1/write` (Prometheus remote write 1.0), `POST /api/v1/import/prometheus` (text
//! exposition format).
//!
//! A request is acknowledged only after its accepted samples are appended to the log (and
//! fsynced under `fsync = "always"`). Malformed lines get a 400 naming each line and why, while
//! the valid lines of the same request are stored (the Influx convention).

use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::influx::Precision;
use super::{describe_errors, influx, promtext, remote_write, BatchBuilder, IngestError};
use crate::model::{LimitError, METRIC_NAME};
use crate::server::AppState;
use crate::transport::codec;
use crate::transport::log::RecordKind;

/// The push formats.
#[derive(Clone, Copy, Debug)]
pub enum Format {
    Influx(Precision, bool),
    PromText,
    RemoteWrite,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, IngestError> {
    let mut out = Vec::with_capacity(body.len() * 4);
    let mut d = flate2::read::GzDecoder::new(body).take(limit as u64 + 1);
    d.read_to_end(&mut out)
        .map_err(|e| IngestError::Decode(format!("gzip: {e}")))?;
    if out.len() > limit {
        return Err(IngestError::TooLarge {
            got: out.len(),
            limit,
        });
    }
    Ok(out)
}

/// What a write did.
pub struct WriteOutcome {
    pub accepted: usize,
    pub errors: String,
    pub rejected: usize,
}

/// Parses, validates and logs one request body. Blocking.
pub fn write_blocking(
    state: &AppState,
    format: Format,
    gzipped: bool,
    body: &[u8],
) -> Result<WriteOutcome, Response> {
    let limits = &state.cfg.ingest;
    let decoded;
    let body = if gzipped {
        decoded = gunzip(body, limits.max_body_bytes).map_err(ingest_error)?;
        &decoded[..]
    } else {
        body
    };
    let hot = &state.hot;
    let min_ts = hot.min_valid_ts();
    let reason = format!(
        "is older than the hot retention window: the newest sample is at {} ms and hot.retention is {} h, so samples before {} ms are rejected; raise [hot] retention in tidemark.toml to accept older data",
        hot.newest().unwrap_or(0),
        hot.retention_ms() as f64 / 3_600_000.0,
        min_ts
    );
    let mut b = BatchBuilder::new(limits).with_min_ts(min_ts, reason);
    let now = now_ms();
    match format {
        Format::Influx(p, _) => influx::parse(body, p, now, &mut b),
        Format::PromText => promtext::parse(body, now, &mut b),
        Format::RemoteWrite => {
            remote_write::parse(body, limits.max_body_bytes, &mut b).map_err(ingest_error)?
        }
    }
    let per_metric = limits.max_series_per_metric;
    b.retain_series(|id, canon| {
        if hot.catalog.contains(id) {
            return Ok(());
        }
        let labels = super::decode_canonical(canon);
        let metric = labels.get(METRIC_NAME).unwrap_or_default();
        if hot.catalog.series_of_metric(metric) >= per_metric {
            return Err(LimitError::TooManySeries {
                metric: metric.to_string(),
                limit: per_metric,
            });
        }
        hot.catalog.register(id, labels);
        Ok(())
    });
    state.metrics.add_rejected(&b.rejected);
    let (batch, errors, rejected) = b.finish();
    let accepted = batch.samples.len();
    if let Some((lo, hi)) = batch.time_range() {
        let mut payload = Vec::new();
        codec::encode(&batch, &mut payload);
        state
            .log
            .append(RecordKind::Batch, lo, hi, &payload)
            .map_err(|e| {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "1")],
                    format!("cannot append to the log: {e}"),
                )
                    .into_response()
            })?;
        state.hot.observe_newest(hi);
        state
            .metrics
            .samples_ingested
            .fetch_add(accepted as u64, Ordering::Relaxed);
    }
    Ok(WriteOutcome {
        accepted,
        errors: describe_errors(&errors, rejected),
        rejected,
    })
}

fn ingest_error(e: IngestError) -> Response {
    match e {
        IngestError::TooLarge { .. } => {
            (StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).into_response()
        }
        IngestError::Decode(_) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

fn body_error(state: &AppState, r: BytesRejection) -> Response {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        state
            .metrics
            .rejected_requests_too_large
            .fetch_add(1, Ordering::Relaxed);
        let limit = state.cfg.ingest.max_body_bytes;
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than ingest.max_body_bytes = {limit}; split the batch or raise the limit in tidemark.toml [ingest]"),
        )
            .into_response();
    }
    (r.status(), r.body_text()).into_response()
}

async fn handle(
    state: Arc<AppState>,
    format: Format,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let body = match body {
        Ok(b) => b,
        Err(r) => return body_error(&state, r),
    };
    let gzipped = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let st = Arc::clone(&state);
    let res =
        tokio::task::spawn_blocking(move || write_blocking(&st, format, gzipped, &body)).await;
    let outcome = match res {
        Ok(Ok(o)) => o,
        Ok(Err(resp)) => {
            if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
                state
                    .metrics
                    .rejected_requests_too_large
                    .fetch_add(1, Ordering::Relaxed);
            }
            return resp;
        }
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("write failed: {e}"),
            )
                .into_response()
        }
    };
    if outcome.rejected == 0 {
        return StatusCode::NO_CONTENT.into_response();
    }
    let msg = format!(
        "partial write: {} samples accepted, {} rejected: {}",
        outcome.accepted, outcome.rejected, outcome.errors
    );
    match format {
        Format::Influx(_, v2) => {
            let body = if v2 {
                serde_json::json!({ "code": "invalid", "message": msg })
            } else {
                serde_json::json!({ "error": msg })
            };
            (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
        }
        _ => (StatusCode::BAD_REQUEST, msg).into_response(),
    }
}

fn precision(q: &Option<String>) -> Result<Precision, Response> {
    let params: Vec<(String, String)> = q
        .as_deref()
        .map(|q| serde_urlencoded::from_str(q).unwrap_or_default())
        .unwrap_or_default();
    match params.iter().find(|(k, _)| k == "precision") {
        None => Ok(Precision::Ns),
        Some((_, v)) => Precision::parse(v).ok_or_else(|| {
            (
                StatusCode::BAD_REQUEST,
                format!("invalid precision {v:?}: use ns, us, ms or s"),
            )
                .into_response()
        }),
    }
}

/// `POST /write` (Influx 1.x).
pub async fn write_v1(
    State(s): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match precision(&q) {
        Ok(p) => handle(s, Format::Influx(p, false), headers, body).await,
        Err(r) => r,
    }
}

/// `POST /api/v2/write` (Influx 2.x).
pub async fn write_v2(
    State(s): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match precision(&q) {
        Ok(p) => handle(s, Format::Influx(p, true), headers, body).await,
        Err(r) => r,
    }
}

/// `POST /api/v1/write` (remote write; the body is snappy-compressed protobuf).
pub async fn remote_write(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(s, Format::RemoteWrite, headers, body).await
}

/// `POST /api/v1/import/prometheus` (text exposition format).
pub async fn import_prometheus(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(s, Format::PromText, headers, body).await
}

//! Push endpoints: `POST /write` and `/api/v2/write` (Influx line protocol, `precision`, gzip),
//! `POST /api/v1/write` (Prometheus remote write 1.0), `POST /api/v1/import/prometheus` (text
//! exposition format).
//!
//! A request is acknowledged only after its accepted samples are durable in the [`Sink`]: the
//! embedded log (appended and, under `fsync = "always"`, fsynced) in `tidemark up`, or the Kafka
//! topic (acknowledged by all in-sync replicas) in `tidemark ingest`. When the sink cannot take
//! them the client gets 503 with `Retry-After`, never a silent drop. Malformed lines get a 400
//! naming each line and why, while the valid lines of the same request are stored (the Influx
//! convention).

use crate::time::now_ms;
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::influx::Precision;
use super::{
    describe_errors_as, influx, otlp, promtext, remote_write, BatchBuilder, IngestError, WriteBatch,
};
use crate::config::WriteScope;
use crate::model::metadata::MetadataStore;
use crate::model::{LimitError, Limits, METRIC_NAME};
use crate::ops::Metrics;
use crate::store::hot::HotIndex;

/// The push formats.
#[derive(Clone, Copy, Debug)]
pub enum Format {
    Influx(Precision, bool),
    PromText,
    RemoteWrite,
    /// OTLP/HTTP metrics; `true`: the JSON encoding.
    Otlp(bool),
}

pub use crate::transport::sink::{Sink, SinkUnavailable};

/// What the push endpoints share.
pub struct IngestState {
    pub limits: Limits,
    pub sink: Sink,
    pub metrics: Arc<Metrics>,
    /// The hot index of this process, if it has one (`up`): its retention window and the
    /// per-metric series limit are checked at ingest. Stateless `ingest` processes have none.
    pub hot: Option<Arc<HotIndex>>,
    /// Metric metadata from pushes and scrapes (`/api/v1/metadata`).
    pub metadata: Arc<MetadataStore>,
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

/// A validated request: the batch to commit, and what was rejected.
pub struct Validated {
    pub batch: WriteBatch,
    pub errors: String,
    pub rejected: usize,
    /// OTLP: the data points refused (a refused metric counts all of its points).
    pub rejected_points: Option<i64>,
}

/// Decompresses, parses and validates one request body. Blocking.
pub fn validate(
    state: &IngestState,
    format: Format,
    gzipped: bool,
    body: &[u8],
    scope: Option<&WriteScope>,
) -> Result<Validated, Response> {
    let limits = &state.limits;
    let decoded;
    let body = if gzipped {
        decoded = gunzip(body, limits.max_body_bytes).map_err(ingest_error)?;
        &decoded[..]
    } else {
        body
    };
    let mut b = state.builder();
    let now = now_ms();
    match format {
        Format::Influx(p, _) => influx::parse(body, p, now, &mut b),
        Format::PromText => {
            promtext::parse(body, now, &mut b);
            // Only the comment lines are read again (found with memchr, not a second parse).
            let meta = promtext::metadata_lines(promtext::comment_lines(body));
            if !meta.is_empty() {
                state.metadata.record_all(&meta, now);
            }
        }
        Format::RemoteWrite => {
            let meta =
                remote_write::parse(body, limits.max_body_bytes, &mut b).map_err(ingest_error)?;
            state.metadata.record_all(&meta, now);
        }
        Format::Otlp(json) => {
            let req = otlp::decode(body, json).map_err(ingest_error)?;
            let outcome = otlp::translate(&req, &mut b);
            state.metadata.record_all(&outcome.metadata, now);
            enforce_scope(&mut b, scope);
            let mut v = state.admit(b);
            v.rejected_points = Some(v.rejected as i64 + outcome.extra_rejected_points);
            return Ok(v);
        }
    }
    enforce_scope(&mut b, scope);
    Ok(state.admit(b))
}

/// Rejects (naming them) the series that do not carry every label of the token's scope.
fn enforce_scope(b: &mut BatchBuilder<'_>, scope: Option<&WriteScope>) {
    let Some(WriteScope(need)) = scope else {
        return;
    };
    b.retain_series(|_, canon| {
        let labels = super::decode_canonical(canon);
        if need
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|x| x == v))
        {
            return Ok(());
        }
        Err(LimitError::OutOfScope {
            series: labels.to_string(),
            need: need
                .iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect::<Vec<_>>()
                .join(", "),
        })
    });
}

impl IngestState {
    /// A batch builder with this process's limits that rejects samples older than the hot
    /// retention window (naming it and the key that raises it).
    pub fn builder(&self) -> BatchBuilder<'_> {
        let mut b = BatchBuilder::new(&self.limits);
        if let Some(hot) = &self.hot {
            let min_ts = hot.min_valid_ts();
            let reason = format!(
                "is older than the hot retention window: the newest sample is at {} ms and hot.retention is {} h, so samples before {} ms are rejected; raise [hot] retention in tidemark.toml to accept older data",
                hot.newest().unwrap_or(0),
                hot.retention_ms() as f64 / 3_600_000.0,
                min_ts
            );
            b = b.with_min_ts(min_ts, reason);
        }
        b
    }

    /// The store's checks on a parsed batch (new series registered in the catalog, the
    /// per-metric series limit), counted; the batch to commit and what was rejected.
    pub fn admit(&self, mut b: BatchBuilder<'_>) -> Validated {
        let limits = &self.limits;
        if let Some(hot) = &self.hot {
            let per_metric = limits.max_series_per_metric;
            let ids = b.series_ids();
            let unknown: std::collections::HashSet<crate::model::SeriesId> = hot
                .catalog
                .unknown(&ids)
                .into_iter()
                .map(|i| ids[i])
                .collect();
            b.retain_series(|id, canon| {
                if !unknown.contains(&id) {
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
        }
        self.metrics.add_rejected(&b.rejected);
        let position = b.position;
        let (batch, errors, rejected) = b.finish();
        Validated {
            batch,
            errors: describe_errors_as(&errors, rejected, position),
            rejected_points: None,
            rejected,
        }
    }

    /// Makes `batch` durable in the sink, then counts it and moves the hot retention window;
    /// returns the samples stored.
    pub async fn store(&self, batch: WriteBatch) -> Result<usize, SinkUnavailable> {
        let accepted = batch.samples.len();
        let newest = batch.time_range().map(|r| r.1);
        self.sink.commit(batch).await?;
        if let (Some(hot), Some(t)) = (&self.hot, newest) {
            hot.observe_newest(t);
        }
        self.metrics
            .samples_ingested
            .fetch_add(accepted as u64, Ordering::Relaxed);
        Ok(accepted)
    }
}

fn ingest_error(e: IngestError) -> Response {
    match e {
        IngestError::TooLarge { .. } => {
            (StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).into_response()
        }
        IngestError::Decode(_) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

fn body_error(state: &IngestState, r: BytesRejection) -> Response {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        state
            .metrics
            .rejected_requests_too_large
            .fetch_add(1, Ordering::Relaxed);
        let limit = state.limits.max_body_bytes;
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than ingest.max_body_bytes = {limit}; split the batch or raise the limit in tidemark.toml [ingest]"),
        )
            .into_response();
    }
    (r.status(), r.body_text()).into_response()
}

async fn handle(
    state: Arc<IngestState>,
    format: Format,
    scope: Option<WriteScope>,
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
        tokio::task::spawn_blocking(move || validate(&st, format, gzipped, &body, scope.as_ref()))
            .await;
    let v = match res {
        Ok(Ok(v)) => v,
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
    let accepted = match state.store(v.batch).await {
        Ok(n) => n,
        Err(e) => {
            state.metrics.sink_failures.fetch_add(1, Ordering::Relaxed);
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                format!("not stored, retry: {e}"),
            )
                .into_response();
        }
    };
    if let Format::Otlp(json) = format {
        // OTLP/HTTP: 200 with an ExportMetricsServiceResponse; refused points are a partial
        // success (the exporter logs the message and does not retry).
        let points = v.rejected_points.unwrap_or(v.rejected as i64);
        let msg = if v.rejected > 0 {
            format!("{accepted} samples accepted; rejected: {}", v.errors)
        } else {
            String::new()
        };
        let ct = if json {
            "application/json"
        } else {
            "application/x-protobuf"
        };
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, ct)],
            otlp::response(points, &msg, json),
        )
            .into_response();
    }
    if v.rejected == 0 {
        return StatusCode::NO_CONTENT.into_response();
    }
    let msg = format!(
        "partial write: {accepted} samples accepted, {} rejected: {}",
        v.rejected, v.errors
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
    State(s): State<Arc<IngestState>>,
    scope: Option<axum::Extension<WriteScope>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match precision(&q) {
        Ok(p) => {
            handle(
                s,
                Format::Influx(p, false),
                scope.map(|e| e.0),
                headers,
                body,
            )
            .await
        }
        Err(r) => r,
    }
}

/// `POST /api/v2/write` (Influx 2.x).
pub async fn write_v2(
    State(s): State<Arc<IngestState>>,
    scope: Option<axum::Extension<WriteScope>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match precision(&q) {
        Ok(p) => {
            handle(
                s,
                Format::Influx(p, true),
                scope.map(|e| e.0),
                headers,
                body,
            )
            .await
        }
        Err(r) => r,
    }
}

/// `POST /api/v1/otlp/v1/metrics` (OTLP/HTTP, `application/x-protobuf` or
/// `application/json`, as Prometheus 3 serves it).
pub async fn otlp_metrics(
    State(s): State<Arc<IngestState>>,
    scope: Option<axum::Extension<WriteScope>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json = match ct.as_str() {
        "application/x-protobuf" | "application/protobuf" => false,
        "application/json" => true,
        other => {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported content type {other:?}: OTLP/HTTP bodies are application/x-protobuf or application/json"),
            )
                .into_response()
        }
    };
    handle(s, Format::Otlp(json), scope.map(|e| e.0), headers, body).await
}

/// `POST /api/v1/write` (remote write; the body is snappy-compressed protobuf).
pub async fn remote_write(
    State(s): State<Arc<IngestState>>,
    scope: Option<axum::Extension<WriteScope>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(s, Format::RemoteWrite, scope.map(|e| e.0), headers, body).await
}

/// `POST /api/v1/import/prometheus` (text exposition format).
pub async fn import_prometheus(
    State(s): State<Arc<IngestState>>,
    scope: Option<axum::Extension<WriteScope>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(s, Format::PromText, scope.map(|e| e.0), headers, body).await
}

/// The push routes, for `up` and `ingest` alike.
pub fn routes(state: Arc<IngestState>) -> axum::Router {
    use axum::routing::post;
    let limit = state.limits.max_body_bytes;
    axum::Router::new()
        .route("/write", post(write_v1))
        .route("/api/v2/write", post(write_v2))
        .route("/api/v1/write", post(remote_write))
        .route("/api/v1/import/prometheus", post(import_prometheus))
        .route("/api/v1/otlp/v1/metrics", post(otlp_metrics))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
}

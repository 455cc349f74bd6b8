//! The Prometheus HTTP API, query side: `/api/v1/query`, `/api/v1/query_range`,
//! `/api/v1/series`, `/api/v1/labels`, `/api/v1/label/<name>/values`, `/api/v1/metadata`,
//! `/api/v1/status/buildinfo`, with Prometheus's JSON shapes and error format.

use crate::time::now_ms;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value as Json};
use tidemark_dataflows::Rollup;

use super::aggregate::go_float;
use super::engine::{selector_matchers, Engine};
use super::{QueryError, QueryValue, SelectHints, Selected, Series, Storage};
use crate::model::Labels;
use crate::ops::Metrics;
use crate::store::cold::query::ColdReader;
use crate::store::hot::index::Matcher;
use crate::store::hot::HotIndex;
use crate::store::tiered::Tiered;

/// What the query handlers share: this process's hot index and metrics, and the other
/// processes of a cluster (base URLs) that queries fan out to.
pub struct QueryState {
    pub hot: Arc<HotIndex>,
    pub metrics: Arc<Metrics>,
    /// Other worker processes' HTTP base URLs (empty in `tidemark up`).
    pub peers: Vec<String>,
    /// The cold tiers, read for data older than the hot index holds: set at start in `up`; in
    /// a worker process when its first job opens its `[tiers] url`.
    pub cold: ColdSlot,
    /// Metric metadata from pushes and scrapes.
    pub metadata: Arc<crate::model::metadata::MetadataStore>,
    /// `[query]`: limits and delayed name removal.
    pub limits: crate::config::QueryConfig,
    /// Slots for queries evaluated at once (`[query] max_concurrency`).
    pub slots: Arc<tokio::sync::Semaphore>,
    /// The `query_range` result cache (`None`: `[query] cache_bytes = 0`, or a worker
    /// process, whose queries fan out).
    pub cache: Option<super::cache::ResultCache>,
}

/// The cold tiers a query service reads, set once they are known.
pub type ColdSlot = Arc<std::sync::OnceLock<Arc<ColdReader>>>;

impl QueryState {
    /// The cold tiers' reader, when there are cold tiers.
    pub fn cold(&self) -> Option<&Arc<ColdReader>> {
        self.cold.get()
    }

    /// The query slots for `limits`.
    pub fn slots_for(limits: &crate::config::QueryConfig) -> Arc<tokio::sync::Semaphore> {
        Arc::new(tokio::sync::Semaphore::new(limits.max_concurrency.max(1)))
    }
}

/// The query routes (Prometheus API, plus `/api/v1/rollups`).
pub fn routes(state: Arc<QueryState>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/metadata", get(metadata).post(metadata))
        .route("/api/v1/rollups", get(rollups))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .route("/api/v1/format_query", get(format_query).post(format_query))
        .route("/api/v1/parse_query", get(parse_query).post(parse_query))
        .route(
            "/api/v1/query_exemplars",
            get(query_exemplars).post(query_exemplars),
        )
        .with_state(state)
}

impl Storage for HotIndex {
    /// Decodes the selected series on every core when there are many (a fleet query decodes
    /// 2,500 series x 360 samples: half its time), in the catalog's order either way.
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<Series> {
        let ids: Vec<_> = self.catalog.select(matchers).into_iter().collect();
        let part = |ids: &[crate::model::SeriesId]| {
            let mut out = Vec::with_capacity(ids.len());
            for (&id, samples) in ids.iter().zip(self.samples_many(ids, start, end)) {
                if samples.is_empty() {
                    continue;
                }
                if let Some(labels) = self.catalog.labels(id) {
                    out.push(Series { labels, samples });
                }
            }
            out
        };
        in_parallel(&ids, part)
    }

    /// With `newest_only`, each series' newest sample alone ([`HotIndex::newest_in`]): an
    /// instant query at the newest time reads the held samples and decodes nothing. An
    /// instant selector over a grid of times gets only the samples it can pick.
    fn select_hinted(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
        hints: &SelectHints,
    ) -> Vec<Selected> {
        if hints.instant && hints.step > 0 && !hints.newest_only {
            return self.select_step_picks(matchers, start, end, hints);
        }
        if !hints.newest_only {
            return self
                .select(matchers, start, end)
                .into_iter()
                .map(Selected::from)
                .collect();
        }
        let mut out = Vec::new();
        for id in self.catalog.select(matchers) {
            let Some(p) = self.newest_in(id, start, end) else {
                continue;
            };
            if let Some(labels) = self.catalog.labels(id) {
                out.push(Selected {
                    labels,
                    rollups: Vec::new(),
                    samples: vec![p],
                });
            }
        }
        out
    }

    fn series_hint(&self) -> usize {
        self.catalog.len()
    }

    fn oldest_sample(&self) -> Option<i64> {
        self.oldest_appended()
    }
}

impl HotIndex {
    /// An instant selector over a grid of evaluation times: each series decoded into one
    /// reused buffer and only the samples the selector can pick kept
    /// ([`crate::store::step_picks`]), on every core when there are many series.
    fn select_step_picks(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
        hints: &SelectHints,
    ) -> Vec<Selected> {
        let ids: Vec<_> = self.catalog.select(matchers).into_iter().collect();
        let part = |ids: &[crate::model::SeriesId]| {
            let mut out = Vec::with_capacity(ids.len());
            self.for_each_samples(ids, start, end, |i, all| {
                let mut samples = Vec::new();
                crate::store::step_picks(
                    all,
                    hints.first,
                    hints.step,
                    end,
                    hints.range,
                    &mut samples,
                );
                if samples.is_empty() {
                    return;
                }
                if let Some(labels) = self.catalog.labels(ids[i]) {
                    out.push(Selected {
                        labels,
                        rollups: Vec::new(),
                        samples,
                    });
                }
            });
            out
        };
        in_parallel(&ids, part)
    }
}

/// `part` over `ids` split across the cores when there are many (a fleet query decodes 2,500
/// series x 360 samples: half its time), the parts' results in `ids`' order.
fn in_parallel<T: Send>(
    ids: &[crate::model::SeriesId],
    part: impl Fn(&[crate::model::SeriesId]) -> Vec<T> + Sync,
) -> Vec<T> {
    let threads = parallelism().min(ids.len() / PARALLEL_SERIES).max(1);
    if threads == 1 {
        return part(ids);
    }
    let per = ids.len().div_ceil(threads);
    let part = &part;
    std::thread::scope(|s| {
        let rest: Vec<_> = ids[per..]
            .chunks(per)
            .map(|c| s.spawn(move || part(c)))
            .collect();
        let mut out = part(&ids[..per]);
        for h in rest {
            out.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        out
    })
}

/// Series per thread below which a selection decodes on the calling thread alone.
const PARALLEL_SERIES: usize = 256;

/// The cores a query may decode on.
fn parallelism() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A Prometheus API error response.
pub fn error(status: StatusCode, kind: &str, msg: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"status": "error", "errorType": kind, "error": msg.into()})),
    )
        .into_response()
}

fn query_error(e: QueryError) -> Response {
    let status = match e {
        QueryError::BadData(_) => StatusCode::BAD_REQUEST,
        QueryError::Execution(_) => StatusCode::UNPROCESSABLE_ENTITY,
        QueryError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.error_type(), e.to_string())
}

fn success(data: Json) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

/// Query-string and form-body parameters together, in order.
pub fn params(q: &Option<String>, body: &Bytes) -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = q
        .as_deref()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    if !body.is_empty() {
        if let Ok(mut b) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) {
            p.append(&mut b);
        }
    }
    p
}

fn get<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
}

/// Parses a time parameter: Unix seconds (fractional allowed) or RFC 3339.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(v) = s.parse::<f64>() {
        if v.is_finite() {
            // Keep query arithmetic far from i64 overflow, as for ingested timestamps.
            return Ok(((v * 1000.0).round() as i64)
                .clamp(-crate::model::MAX_ABS_TS, crate::model::MAX_ABS_TS));
        }
    }
    crate::time::parse_rfc3339(s)
}

/// Parses a step or duration: seconds (fractional) or a PromQL duration.
pub fn parse_step(s: &str) -> Result<i64, String> {
    if let Ok(v) = s.parse::<f64>() {
        return Ok((v * 1000.0).round() as i64);
    }
    crate::time::parse_duration_ms(s)
        .ok_or_else(|| format!("cannot parse {s:?} to a valid duration"))
}

fn secs(t: i64) -> Json {
    json!(t as f64 / 1000.0)
}

fn metric_json(l: &Labels) -> Json {
    let mut m = Map::new();
    for (k, v) in l.iter() {
        m.insert(k.to_string(), Json::String(v.to_string()));
    }
    Json::Object(m)
}

/// The request's `timeout` parameter (seconds or a duration), when given.
fn timeout_param(p: &[(String, String)]) -> Result<Option<i64>, Response> {
    get(p, "timeout")
        .map(|t| {
            parse_step(t).map_err(|e| {
                error(
                    StatusCode::BAD_REQUEST,
                    "bad_data",
                    format!("invalid parameter \"timeout\": {e}"),
                )
            })
        })
        .transpose()
}

#[allow(clippy::too_many_arguments)]
async fn run_query(
    state: Arc<QueryState>,
    query: String,
    start: i64,
    end: i64,
    step: i64,
    range: bool,
    timeout: Option<i64>,
    nocache: bool,
    stats: bool,
) -> Response {
    state.metrics.queries.fetch_add(1, Ordering::Relaxed);
    let received = std::time::Instant::now();
    // A syntax error is the request's (Prometheus's `invalid parameter "query": 1:23: parse
    // error: ...`), answered before a slot is taken.
    if let Err(e) = super::engine::parse_query_text(&query, start, end) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            format!("invalid parameter \"query\": {e}"),
        );
    }
    // The deadline runs from the request, its wait for a slot included (as Prometheus's).
    let limit = state.limits.timeout.0;
    let (timeout_ms, by_parameter) = match timeout {
        Some(t) if t < limit => (t, true),
        _ => (limit, false),
    };
    let budget = super::Budget::new(timeout_ms, by_parameter, state.limits.max_samples);
    let wait = std::time::Duration::from_millis(timeout_ms.max(0) as u64);
    let slot = match tokio::time::timeout(wait, Arc::clone(&state.slots).acquire_owned()).await {
        Ok(Ok(slot)) => slot,
        _ => {
            return query_error(QueryError::Timeout(format!(
                "query timed out waiting for an evaluation slot: {} queries were running ([query] max_concurrency in tidemark.toml)",
                state.limits.max_concurrency
            )))
        }
    };
    let res = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let _running = Running::new(&state.metrics);
        let queued = received.elapsed();
        if let Some(ms) = test_pause_ms() {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        let budget = &budget;
        let eval = |start: i64, end: i64, notes: &super::Annotations| {
            let e = Eval {
                query: &query,
                start,
                end,
                step,
                range,
                notes,
                budget,
            };
            evaluate(&state, &e)
        };
        let cache = state
            .cache
            .as_ref()
            .filter(|_| range && !nocache && state.peers.is_empty());
        let lookup = cache.and_then(|c| {
            c.lookup(&state.hot, &state.metrics, &query, start, end, step)
        });
        let (v, warnings, infos) = match lookup {
            None => {
                let notes = super::Annotations::default();
                let v = eval(start, end, &notes)?;
                let (w, i) = notes.take();
                (v, w, i)
            }
            Some(l) => {
                let (mut parts, mut ws, mut is) = (Vec::new(), Vec::new(), Vec::new());
                if let Some((series, w, i)) = l.cached {
                    parts.push(series);
                    ws.push(w);
                    is.push(i);
                }
                for (a, b) in l.missing {
                    let notes = super::Annotations::default();
                    match eval(a, b, &notes)? {
                        QueryValue::Matrix(m) => parts.push(m),
                        // Not a series result: nothing to join or keep.
                        other => {
                            let (w, i) = notes.take();
                            return Ok(super::json::success(&other, &w, &i));
                        }
                    }
                    let (w, i) = notes.take();
                    ws.push(w);
                    is.push(i);
                }
                let v = QueryValue::Matrix(super::cache::merge(parts));
                let (w, i) = (super::cache::merge_notes(ws), super::cache::merge_notes(is));
                if let Some(c) = cache {
                    c.store(&state.hot, &state.metrics, l.key, start, end, &v, &w, &i);
                }
                (v, w, i)
            }
        };
        let series = match &v {
            QueryValue::Vector(v) => v.len(),
            QueryValue::Matrix(m) => m.len(),
            _ => 0,
        };
        let max = state.limits.max_series;
        if max > 0 && series > max {
            return Err(QueryError::Execution(format!(
                "query returned {series} series, more than {max} ([query] max_series in tidemark.toml)"
            )));
        }
        // Prometheus sorts a range query's series by labels.
        let evaluated = received.elapsed();
        let mut v = v;
        if let (QueryValue::Matrix(m), true) = (&mut v, range) {
            m.sort_by(|a, b| a.labels.cmp(&b.labels));
        }
        let stats = stats.then(|| {
            let total = received.elapsed();
            let secs = |d: std::time::Duration| d.as_secs_f64();
            json!({
                "timings": {
                    "evalTotalTime": secs(total - queued),
                    "resultSortTime": secs(total - evaluated),
                    "queryPreparationTime": 0.0,
                    "innerEvalTime": secs(evaluated - queued),
                    "execQueueTime": secs(queued),
                    "execTotalTime": secs(total),
                },
                // Samples (and rollups) the selections loaded: all of a selection's are
                // loaded together, so the peak is the same figure.
                "samples": {
                    "totalQueryableSamples": budget.loaded(),
                    "peakSamples": budget.loaded(),
                },
            })
        });
        // Encoded here, on the blocking pool, not on the runtime's threads.
        Ok::<_, QueryError>(super::json::success_with_stats(
            &v,
            &warnings,
            &infos,
            stats.as_ref(),
        ))
    })
    .await;
    match res {
        Ok(Ok(body)) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Ok(Err(e)) => query_error(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// Counts a query in `tidemark_queries_running` while it holds its slot.
struct Running<'a>(&'a Metrics);

impl<'a> Running<'a> {
    fn new(m: &'a Metrics) -> Self {
        m.queries_running.fetch_add(1, Ordering::Relaxed);
        Running(m)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.queries_running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `TIDEMARK_TEST_QUERY_PAUSE_MS`: every query sleeps this long holding its slot, so that a
/// test can hold all of them and see the next query wait (`[query] max_concurrency`).
fn test_pause_ms() -> Option<u64> {
    static P: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *P.get_or_init(|| {
        std::env::var("TIDEMARK_TEST_QUERY_PAUSE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
    })
}

/// One evaluation: a query over `[start, end]` at `step` (`range`: a range query), its
/// annotations and budget.
pub struct Eval<'a> {
    pub query: &'a str,
    pub start: i64,
    pub end: i64,
    pub step: i64,
    pub range: bool,
    pub notes: &'a super::Annotations,
    pub budget: &'a super::Budget,
}

/// Evaluates on this process's stores (the hot index, with the cold tiers behind it when
/// configured), or across the cluster's processes.
fn evaluate(state: &QueryState, e: &Eval<'_>) -> Result<QueryValue, QueryError> {
    if state.peers.is_empty() {
        evaluate_on(state, &*state.hot, e)
    } else {
        super::fanout::cluster_query(state, e)
    }
}

/// Evaluates on `storage` (this process's hot index, or the cluster's fan-out), with the cold
/// tiers behind it for what is older than the hot index keeps, when there are tiers.
pub fn evaluate_on(
    state: &QueryState,
    storage: &dyn Storage,
    e: &Eval<'_>,
) -> Result<QueryValue, QueryError> {
    let run = |storage: &dyn Storage| {
        Engine::new(storage, e.start, e.end, e.step).and_then(|engine| {
            engine
                .annotated(e.notes)
                .with_budget(e.budget)
                .with_delayed_name_removal(state.limits.delayed_name_removal)
                .query(e.query, e.range)
        })
    };
    match state.cold() {
        Some(cold) => {
            let tiered = Tiered::new(storage, state.hot.complete_from(), cold);
            let v = run(&tiered)?;
            match tiered.error() {
                Some(err) => Err(QueryError::Execution(err)),
                None => Ok(v),
            }
        }
        None => run(storage),
    }
}

/// `GET|POST /api/v1/query`.
pub async fn query(
    State(s): State<Arc<QueryState>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let p = params(&q, &body);
    let Some(query) = get(&p, "query").map(str::to_string) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            "invalid parameter \"query\": missing query",
        );
    };
    let t = match get(&p, "time").map(parse_time).transpose() {
        Ok(t) => t.unwrap_or_else(now_ms),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                format!("invalid parameter \"time\": {e}"),
            )
        }
    };
    let timeout = match timeout_param(&p) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let stats = get(&p, "stats").is_some_and(|v| !v.is_empty());
    run_query(s, query, t, t, 1, false, timeout, false, stats).await
}

/// `GET|POST /api/v1/query_range`.
pub async fn query_range(
    State(s): State<Arc<QueryState>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let p = params(&q, &body);
    let Some(query) = get(&p, "query").map(str::to_string) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            "invalid parameter \"query\": missing query",
        );
    };
    let parse = |k: &str, f: fn(&str) -> Result<i64, String>| -> Result<i64, Response> {
        match get(&p, k) {
            None => Err(error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                format!("invalid parameter \"{k}\": missing {k}"),
            )),
            Some(v) => f(v).map_err(|e| {
                error(
                    StatusCode::BAD_REQUEST,
                    "bad_data",
                    format!("invalid parameter \"{k}\": {e}"),
                )
            }),
        }
    };
    let (start, end, step) = match (
        parse("start", parse_time),
        parse("end", parse_time),
        parse("step", parse_step),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r,
    };
    if end < start {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            "invalid parameter \"end\": end timestamp must not be before start time",
        );
    }
    if step <= 0 {
        return error(StatusCode::BAD_REQUEST, "bad_data", "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer");
    }
    let timeout = match timeout_param(&p) {
        Ok(t) => t,
        Err(r) => return r,
    };
    // `nocache=1` (or `true`) bypasses the result cache, for reading and for keeping.
    let nocache = get(&p, "nocache").is_some_and(|v| v == "1" || v == "true");
    // `stats=all` (any value): `data.stats` with timings and the samples loaded.
    let stats = get(&p, "stats").is_some_and(|v| !v.is_empty());
    run_query(s, query, start, end, step, true, timeout, nocache, stats).await
}

fn match_params(p: &[(String, String)]) -> Result<Vec<Vec<Matcher>>, Response> {
    let mut sets = Vec::new();
    for (k, v) in p {
        if k != "match[]" {
            continue;
        }
        match promql_parser::parser::parse(v) {
            Ok(promql_parser::parser::Expr::VectorSelector(vs)) => {
                sets.extend(selector_matchers(&vs))
            }
            Ok(_) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "bad_data",
                    format!("invalid parameter \"match[]\": {v:?} is not a series selector"),
                ))
            }
            Err(e) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "bad_data",
                    format!("invalid parameter \"match[]\": {e}"),
                ))
            }
        }
    }
    Ok(sets)
}

fn time_range(p: &[(String, String)]) -> Result<(i64, i64), Response> {
    let start = get(p, "start")
        .map(parse_time)
        .transpose()
        .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_data", e))?;
    let end = get(p, "end")
        .map(parse_time)
        .transpose()
        .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_data", e))?;
    Ok((start.unwrap_or(i64::MIN), end.unwrap_or(i64::MAX)))
}

/// The label sets of the series matching any of `sets` with a sample in `[start, end]`
/// (unbounded: every series). A range reaching before the hot index's retention reads the
/// cold tiers too ([`Tiered`]: raw, or the rollups that outlive it), so the metadata APIs
/// answer for the same data the queries do.
fn selected(
    state: &QueryState,
    sets: &[Vec<Matcher>],
    start: i64,
    end: i64,
) -> Result<Vec<Labels>, Response> {
    let mut out: Vec<Labels> = Vec::new();
    let hot_from = state.hot.complete_from();
    let cold = state.cold().filter(|_| reaches_cold(state, start));
    for ms in sets {
        if let Some(cold) = cold {
            let tiered = Tiered::new(state.hot.as_ref(), hot_from, cold);
            // An unbounded end: as far as any tier can hold (a year past now).
            let (lo, hi) = (start, end.min(now_ms() + 366 * 86_400_000));
            out.extend(tiered.select(ms, lo, hi).into_iter().map(|s| s.labels));
            if let Some(e) = tiered.error() {
                return Err(error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "execution",
                    format!("reading the cold tiers: {e}"),
                ));
            }
            continue;
        }
        for id in state.hot.catalog.select(ms) {
            if (start != i64::MIN || end != i64::MAX)
                && state.hot.any_sample_in(id, start, end).is_none()
            {
                continue;
            }
            if let Some(l) = state.hot.catalog.labels(id) {
                out.push(l);
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// [`selected`] on the blocking pool: the cold tiers' reader blocks on its own I/O.
async fn selected_off_runtime(
    state: &Arc<QueryState>,
    sets: Vec<Vec<Matcher>>,
    start: i64,
    end: i64,
) -> Result<Vec<Labels>, Response> {
    let state = Arc::clone(state);
    tokio::task::spawn_blocking(move || selected(&state, &sets, start, end))
        .await
        .unwrap_or_else(|e| {
            Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                e.to_string(),
            ))
        })
}

/// A metadata request's range starts before the hot index's retention and the cold tiers are
/// there. A request without `start` reads the hot index alone (every series seen within its
/// retention): listing a year of cold partitions for each metric-name completion would be a
/// scan of the whole store.
fn reaches_cold(state: &QueryState, start: i64) -> bool {
    state.cold().is_some() && start != i64::MIN && start < state.hot.complete_from()
}

/// Every series: the selection of a metadata request without `match[]` whose range reaches
/// the cold tiers.
fn all_series() -> Vec<Vec<Matcher>> {
    match promql_parser::parser::parse(r#"{__name__=~".+"}"#) {
        Ok(promql_parser::parser::Expr::VectorSelector(vs)) => selector_matchers(&vs),
        _ => Vec::new(),
    }
}

/// The series selection of a metadata request: its `match[]` selectors (required or not) and
/// its `[start, end]` (unbounded when absent).
struct Selection {
    sets: Vec<Vec<Matcher>>,
    start: i64,
    end: i64,
}

fn selection(p: &[(String, String)], required: bool) -> Result<Selection, Response> {
    let sets = match_params(p)?;
    if required && sets.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            "no match[] parameter provided",
        ));
    }
    let (start, end) = time_range(p)?;
    Ok(Selection { sets, start, end })
}

/// `GET|POST /api/v1/series`.
pub async fn series(
    State(s): State<Arc<QueryState>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let sel = match selection(&params(&q, &body), true) {
        Ok(sel) => sel,
        Err(r) => return r,
    };
    match selected_off_runtime(&s, sel.sets, sel.start, sel.end).await {
        Ok(series) => success(Json::Array(series.iter().map(metric_json).collect())),
        Err(r) => r,
    }
}

/// The series a label request names: `None` when the hot catalog answers it whole (no
/// `match[]` and a range the hot index holds).
async fn label_sets(s: &Arc<QueryState>, sel: Selection) -> Result<Option<Vec<Labels>>, Response> {
    if sel.sets.is_empty() && !reaches_cold(s, sel.start) {
        return Ok(None);
    }
    let sets = if sel.sets.is_empty() {
        all_series()
    } else {
        sel.sets
    };
    selected_off_runtime(s, sets, sel.start, sel.end)
        .await
        .map(Some)
}

/// `GET|POST /api/v1/labels`.
pub async fn labels(
    State(s): State<Arc<QueryState>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let sel = match selection(&params(&q, &body), false) {
        Ok(sel) => sel,
        Err(r) => return r,
    };
    let series = match label_sets(&s, sel).await {
        Ok(Some(series)) => series,
        Ok(None) => return success(json!(s.hot.catalog.label_names())),
        Err(r) => return r,
    };
    let mut names: Vec<String> = series
        .iter()
        .flat_map(|l| l.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>())
        .collect();
    names.sort();
    names.dedup();
    success(json!(names))
}

/// `GET /api/v1/label/<name>/values`.
pub async fn label_values(
    State(s): State<Arc<QueryState>>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let sel = match selection(&params(&q, &Bytes::new()), false) {
        Ok(sel) => sel,
        Err(r) => return r,
    };
    let series = match label_sets(&s, sel).await {
        Ok(Some(series)) => series,
        Ok(None) => return success(json!(s.hot.catalog.label_values(&name))),
        Err(r) => return r,
    };
    let mut vals: Vec<String> = series
        .iter()
        .filter_map(|l| l.get(&name).map(str::to_string))
        .collect();
    vals.sort();
    vals.dedup();
    success(json!(vals))
}

/// `GET /api/v1/rollups?match[]=SELECTOR&resolution=1m|1h&start=T&end=T` (Tidemark's own):
/// the stored rollups of the matching series whose window starts in `[start, end]`, as rows
/// `{metric, start, count, sum, min, max, first, last, increase}` (start in seconds). Windows
/// older than the hot index keeps (`[hot] minute_rollup_retention` for 1m, `retention` for
/// 1h) come from the cold tier of the resolution; where both have a window, the hot index's
/// (newer: it takes late corrections first) wins.
pub async fn rollups(State(s): State<Arc<QueryState>>, RawQuery(q): RawQuery) -> Response {
    use crate::store::cold::Tier;
    use crate::store::hot::Resolution;
    let p = params(&q, &Bytes::new());
    let sel = match selection(&p, true) {
        Ok(sel) => sel,
        Err(r) => return r,
    };
    let (res, tier) = match get(&p, "resolution").unwrap_or("1m") {
        "1m" => (Resolution::OneMinute, Tier::Minute),
        "1h" => (Resolution::OneHour, Tier::Hour),
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                format!("invalid parameter \"resolution\": {other:?}; use 1m or 1h"),
            )
        }
    };
    let found = tokio::task::spawn_blocking(move || -> Result<Vec<Json>, String> {
        let hot_from = match res {
            Resolution::OneMinute => s
                .hot
                .newest()
                .map_or(i64::MAX, |_| s.hot.minute_rollups_from()),
            Resolution::OneHour => s.hot.complete_from(),
        };
        // By series: labels and rows by window start.
        let mut by_series: BTreeMap<u64, (Labels, BTreeMap<i64, Rollup>)> = BTreeMap::new();
        for ms in &sel.sets {
            if let (Some(cold), true) = (s.cold(), sel.start < hot_from) {
                let rows = cold
                    .read(tier, ms, sel.start, sel.end)
                    .map_err(|e| format!("reading the cold {tier} tier: {e}"))?;
                for (id, cs) in rows {
                    let e = by_series
                        .entry(id)
                        .or_insert_with(|| (cs.labels.clone(), BTreeMap::new()));
                    e.1.extend(cs.rollups.into_iter().map(|r| (r.start, r)));
                }
            }
            for id in s.hot.catalog.select(ms) {
                let Some(labels) = s.hot.catalog.labels(id) else {
                    continue;
                };
                let rows = s.hot.rollups(id, res, sel.start, sel.end);
                if rows.is_empty() {
                    continue;
                }
                let e = by_series
                    .entry(id)
                    .or_insert_with(|| (labels, BTreeMap::new()));
                e.1.extend(rows.into_iter().map(|r| (r.start, r)));
            }
        }
        Ok(by_series
            .into_values()
            .filter(|(_, rows)| !rows.is_empty())
            .map(|(labels, rows)| {
                let rows: Vec<Json> = rows
                    .values()
                    .map(|r| {
                        json!({"start": secs(r.start), "count": r.count, "sum": go_float(r.sum), "min": go_float(r.min), "max": go_float(r.max),
                               "first": go_float(r.first), "last": go_float(r.last), "increase": go_float(r.increase),
                               "first_ts": secs(r.first_ts), "last_ts": secs(r.last_ts)})
                    })
                    .collect();
                json!({"metric": metric_json(&labels), "rollups": rows})
            })
            .collect())
    })
    .await;
    match found {
        Ok(Ok(out)) => success(Json::Array(out)),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// `GET /api/v1/metadata?limit=&limit_per_metric=&metric=`: the `# TYPE`/`# HELP`/`# UNIT`
/// of scraped and pushed text and remote write's metadata, in Prometheus's shape.
pub async fn metadata(
    State(s): State<Arc<QueryState>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let p = params(&q, &body);
    let num = |k: &str| -> Result<usize, Response> {
        match get(&p, k).map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(0),
            Some(v) => v.parse::<i64>().map(|n| n.max(0) as usize).map_err(|_| {
                error(
                    StatusCode::BAD_REQUEST,
                    "bad_data",
                    format!("invalid parameter {k:?}: {v:?} is not an integer"),
                )
            }),
        }
    };
    let (limit, per) = match (num("limit"), num("limit_per_metric")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let metric = get(&p, "metric").filter(|m| !m.is_empty());
    success(s.metadata.json(limit, per, metric))
}

/// The `query` parameter parsed (`start()` and `end()` read as 0: a parse has no range), or
/// Prometheus's `bad_data` error.
fn parsed_param(q: &Option<String>, body: &Bytes) -> Result<promql_parser::parser::Expr, Response> {
    let p = params(q, body);
    let Some(query) = get(&p, "query") else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            "invalid parameter \"query\": missing query",
        ));
    };
    super::engine::parse_query_text(query, 0, 0).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            format!("invalid parameter \"query\": {e}"),
        )
    })
}

/// `GET|POST /api/v1/format_query`: the query pretty-printed (Prometheus's `Prettify`).
pub async fn format_query(RawQuery(q): RawQuery, body: Bytes) -> Response {
    match parsed_param(&q, &body) {
        Ok(expr) => success(json!(expr.prettify())),
        Err(r) => r,
    }
}

/// `GET|POST /api/v1/parse_query`: the query's syntax tree as Prometheus 3 returns it
/// ([`super::ast_json`]).
pub async fn parse_query(RawQuery(q): RawQuery, body: Bytes) -> Response {
    match parsed_param(&q, &body) {
        Ok(expr) => success(super::ast_json::translate(&expr)),
        Err(r) => r,
    }
}

/// `GET|POST /api/v1/query_exemplars`: Tidemark stores no exemplars, so a valid query answers
/// an empty list (what Prometheus answers where none were scraped), which Grafana's exemplar
/// toggle expects.
pub async fn query_exemplars(RawQuery(q): RawQuery, body: Bytes) -> Response {
    match parsed_param(&q, &body) {
        Ok(_) => success(json!([])),
        Err(r) => r,
    }
}

/// `GET /api/v1/status/buildinfo`.
pub async fn buildinfo() -> Response {
    success(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "rust",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1435781451.781").unwrap(), 1_435_781_451_781);
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z").unwrap(),
            1_435_781_451_781
        );
        assert_eq!(
            parse_time("2015-07-01T22:10:51.781+02:00").unwrap(),
            1_435_781_451_781
        );
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_step("15s").unwrap(), 15_000);
        assert_eq!(parse_step("0.5").unwrap(), 500);
    }
}

//! The HTTP side of a worker process: the query API over the whole cluster (fan-out to the
//! other processes and merge), the control API (on process 0), `/metrics`, and the internal
//! endpoints the fan-out uses.
//!
//! * `POST /api/v1/jobs` (TOML body): validate, check the topics exist, sequence a submit.
//! * `GET /api/v1/jobs`: every job with state, watermark, lag and per-partition offsets,
//!   merged over all processes.
//! * `DELETE /api/v1/jobs/<name>`: cancel.
//! * `POST /api/v1/jobs/<name>/replay?from_time=RFC3339|from_offsets=P:O,...`: rewind.
//! * `POST /internal/v1/select`: this process's series for a selector (binary, see
//!   [`encode_series`]); `GET /internal/v1/jobs`: this process's job status.

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;

use serde_json::{json, Value as Json};

use super::spec::JobSpec;
use super::{Binding, Command, JobStatus, Registry};
use crate::alert::eval::Rules;
use crate::ops::{labels, render_counters, Metrics, TextWriter};
use crate::query::api::{self, QueryState};
use crate::query::fanout::{encode_series, from_wire, to_peer, SelectRequest, LOCAL_HEADER};
use crate::store::hot::HotIndex;
use crate::store::Storage;
use crate::transport::consumer::topic_partitions;

/// What the control handlers share.
pub struct ControlState {
    pub process: usize,
    pub hot: Arc<HotIndex>,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    /// Other processes' HTTP base URLs.
    pub peers: Vec<String>,
    /// Process 0's base URL (where jobs are submitted).
    pub leader: String,
    /// Commands to global worker 0 (process 0 only).
    pub commands: Option<Mutex<mpsc::Sender<Command>>>,
    pub bindings: Arc<Mutex<BTreeMap<String, Vec<Binding>>>>,
    pub brokers: String,
    /// Each job's rules, on process 0 (where worker 0 evaluates them).
    pub rules: Arc<JobRules>,
    /// `[auth] tokens`: jobs, replays and reload need `admin`, the rest `read`.
    pub auth: Arc<crate::config::AuthConfig>,
    /// Jobs this process kept on disk when it started: ready waits until they run again.
    pub expected_jobs: Vec<String>,
    /// Timely worker threads of this process.
    pub local_workers: usize,
    /// This process's checkpoints (`None`: off).
    pub checkpoints: Option<Arc<super::checkpoint::WorkerCheckpoints>>,
    /// `[query]` of the process's `tidemark.toml`.
    pub query: crate::config::QueryConfig,
    /// The cold tiers queries read: the first `[tiers] url` a job of this process opened.
    pub cold: crate::query::api::ColdSlot,
    /// `[ui] dashboards`: a directory of Grafana dashboard JSON files.
    pub dashboards: Option<std::path::PathBuf>,
    /// The configuration and flags in effect.
    pub status: Arc<crate::web::status::ProcessStatus>,
}

/// `/-/ready`: 200 once every job this process kept on disk runs again and, for every job,
/// each local worker's source has replayed its WAL and holds its Kafka partitions; 503 with
/// what is missing otherwise.
async fn worker_ready(State(s): State<Arc<ControlState>>) -> Response {
    match readiness(&s) {
        Ok(()) => (StatusCode::OK, "Tidemark worker is Ready.\n").into_response(),
        Err(missing) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Tidemark worker is not ready: {missing}\n"),
        )
            .into_response(),
    }
}

/// What this process still waits for before it is ready, joined with `; `.
fn readiness(s: &ControlState) -> Result<(), String> {
    let jobs = s.registry.jobs.lock().unwrap_or_else(|e| e.into_inner());
    let mut missing = Vec::new();
    for name in &s.expected_jobs {
        if !jobs.contains_key(name) {
            missing.push(format!("job {name:?} is not running yet"));
        }
    }
    for (name, j) in jobs.iter().filter(|(_, j)| j.state != "cancelled") {
        if j.ready_workers.len() < s.local_workers {
            missing.push(format!(
                "job {name:?}: {} of {} local workers replayed their WAL and hold their partitions ({} WAL records replayed so far)",
                j.ready_workers.len(),
                s.local_workers,
                j.wal_records_replayed
            ));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("; "))
    }
}

/// `GET /api/v1/status/cluster`: every process of the cluster in order, with its URL and
/// whether it is ready (a peer's own `/-/ready`, asked now with a 2 s timeout), and why not;
/// this process's worker threads and index.
async fn cluster_status(State(s): State<Arc<ControlState>>) -> Response {
    let own = readiness(&s);
    let peers = s.peers.clone();
    let answers = tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(std::time::Duration::from_secs(2)))
                .build(),
        );
        peers
            .iter()
            .map(|p| {
                let url = format!("{p}/-/ready");
                match to_peer(agent.get(&url)).call() {
                    Ok(mut r) => {
                        let ok = r.status().is_success();
                        let text = r.body_mut().read_to_string().unwrap_or_default();
                        (
                            p.clone(),
                            ok,
                            if ok {
                                None
                            } else {
                                Some(text.trim().to_string())
                            },
                        )
                    }
                    Err(e) => (p.clone(), false, Some(format!("{url}: {e}"))),
                }
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let mut processes = Vec::new();
    let mut peers = answers.into_iter();
    for i in 0..=s.peers.len() {
        if i == s.process {
            processes.push(json!({
                "process": i,
                "url": null,
                "self": true,
                "ready": own.is_ok(),
                "error": own.as_ref().err(),
            }));
        } else if let Some((url, ready, error)) = peers.next() {
            processes.push(json!({
                "process": i, "url": url, "self": false, "ready": ready, "error": error,
            }));
        }
    }
    axum::Json(json!({
        "status": "success",
        "data": {
            "process": s.process,
            "localWorkers": s.local_workers,
            "leader": s.leader,
            "processes": processes,
        },
    }))
    .into_response()
}

/// `GET /api/v1/status/tsdb`: this process's hot index (a worker's queries merge every
/// process's; these figures are its own).
async fn worker_tsdb(State(s): State<Arc<ControlState>>) -> Response {
    let mut data = crate::web::status::tsdb_json(&s.hot);
    data["tidemark"] = json!({"process": s.process, "hotRetentionMs": s.hot.retention_ms()});
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

/// Rules by job name, with the rule files they were opened with.
pub type JobRules = Mutex<BTreeMap<String, (Vec<String>, Arc<Rules>)>>;

async fn internal_select(State(s): State<Arc<ControlState>>, body: Bytes) -> Response {
    let req: SelectRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let matchers = match from_wire(&req.matchers) {
        Ok(m) => m,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let hot = Arc::clone(&s.hot);
    let res = tokio::task::spawn_blocking(move || {
        encode_series(&hot.select(&matchers, req.start, req.end))
    })
    .await;
    match res {
        Ok(b) => b.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Forwards a metadata request (`series`, `labels`, `label values`, `rollups`) to every
/// peer and merges the `data` arrays (union, sorted).
async fn merge_peers(s: Arc<ControlState>, req: Request, local: Response) -> Response {
    if req.headers().contains_key(LOCAL_HEADER) || s.peers.is_empty() {
        return local;
    }
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return local;
    };
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let Ok(local_body) = axum::body::to_bytes(local.into_body(), 1 << 30).await else {
        return api::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "local answer",
        );
    };
    let mut merged: Json = match serde_json::from_slice(&local_body) {
        Ok(v) => v,
        Err(_) => return (StatusCode::OK, local_body).into_response(),
    };
    if merged["status"] != "success" {
        return (StatusCode::BAD_REQUEST, local_body).into_response();
    }
    let peers = s.peers.clone();
    let method = parts.method.clone();
    let ctype = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-www-form-urlencoded")
        .to_string();
    let answers = tokio::task::spawn_blocking(move || {
        peers
            .iter()
            .map(|p| {
                let url = format!("{p}{pq}");
                let r = if method == axum::http::Method::POST {
                    to_peer(ureq::post(&url))
                        .header(LOCAL_HEADER, "1")
                        .header("content-type", &ctype)
                        .send(&body[..])
                } else {
                    to_peer(ureq::get(&url)).header(LOCAL_HEADER, "1").call()
                };
                r.map_err(|e| format!("{url}: {e}")).and_then(|mut r| {
                    let b = r.body_mut().read_to_vec().map_err(|e| e.to_string())?;
                    serde_json::from_slice::<Json>(&b).map_err(|e| e.to_string())
                })
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let mut all: Vec<Json> = merged["data"].as_array().cloned().unwrap_or_default();
    for a in answers {
        match a {
            Ok(v) => all.extend(v["data"].as_array().cloned().unwrap_or_default()),
            Err(e) => {
                return api::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("a worker process did not answer: {e}"),
                )
            }
        }
    }
    all.sort_by_key(|v| v.to_string());
    all.dedup();
    merged["data"] = Json::Array(all);
    (
        [(header::CONTENT_TYPE, "application/json")],
        merged.to_string(),
    )
        .into_response()
}

fn job_rules(s: &ControlState) -> Vec<Arc<Rules>> {
    s.rules
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .map(|(_, r)| Arc::clone(r))
        .collect()
}

/// Rules live on process 0: other processes answer with its answer.
async fn from_leader(s: &ControlState, method: &str, path_and_query: String) -> Response {
    let url = format!("{}{path_and_query}", s.leader);
    let method = method.to_string();
    let res = tokio::task::spawn_blocking(move || {
        let r = if method == "POST" {
            to_peer(ureq::post(&url))
                .config()
                .http_status_as_error(false)
                .build()
                .send_empty()
        } else {
            to_peer(ureq::get(&url))
                .config()
                .http_status_as_error(false)
                .build()
                .call()
        };
        r.map_err(|e| format!("{url}: {e}")).and_then(|mut r| {
            let status = r.status().as_u16();
            let body = r.body_mut().read_to_vec().map_err(|e| e.to_string())?;
            Ok((status, body))
        })
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match res {
        Ok((status, body)) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => api::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("worker process 0 (which evaluates the rules) did not answer: {e}"),
        ),
    }
}

async fn rules_api(State(s): State<Arc<ControlState>>, RawQuery(q): RawQuery) -> Response {
    if s.commands.is_none() {
        let pq = format!(
            "/api/v1/rules{}",
            q.map(|q| format!("?{q}")).unwrap_or_default()
        );
        return from_leader(&s, "GET", pq).await;
    }
    crate::alert::api::rules_response(&job_rules(&s), &q)
}

async fn alerts_api(State(s): State<Arc<ControlState>>) -> Response {
    if s.commands.is_none() {
        return from_leader(&s, "GET", "/api/v1/alerts".into()).await;
    }
    crate::alert::api::alerts_response(&job_rules(&s))
}

/// Reads every job's rule files again (a file with errors keeps its running rules).
async fn reload(State(s): State<Arc<ControlState>>) -> Response {
    if s.commands.is_none() {
        return from_leader(&s, "POST", "/-/reload".into()).await;
    }
    let rules = job_rules(&s);
    let res = tokio::task::spawn_blocking(move || {
        let mut n = 0;
        let mut errors = Vec::new();
        for r in rules {
            match r.reload() {
                Ok(k) => n += k,
                Err(es) => errors.extend(es.into_iter().map(|e| e.to_string())),
            }
        }
        (n, errors)
    })
    .await
    .unwrap_or_else(|e| (0, vec![e.to_string()]));
    match res {
        (n, errors) if errors.is_empty() => {
            (StatusCode::OK, format!("reloaded: {n} rules\n")).into_response()
        }
        (_, errors) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "failed to reload rules (a rule file with errors keeps its running rules):\n{}\n",
                errors.join("\n")
            ),
        )
            .into_response(),
    }
}

fn forbidden_off_leader(s: &ControlState) -> Option<Response> {
    if s.commands.is_some() {
        return None;
    }
    Some(
        (
            StatusCode::MISDIRECTED_REQUEST,
            (json!({"status": "error", "errorType": "bad_data",
                "error": format!("jobs are managed by worker process 0: use --to {}", s.leader)}))
            .to_string(),
        )
            .into_response(),
    )
}

fn send(s: &ControlState, c: Command) -> Result<(), Response> {
    let Some(tx) = &s.commands else {
        return Err(forbidden_off_leader(s).expect("not leader"));
    };
    tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(c)
        .map_err(|_| {
            api::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "worker 0 is not running",
            )
        })
}

fn bad(msg: impl Into<String>) -> Response {
    api::error(StatusCode::BAD_REQUEST, "bad_data", msg)
}

async fn submit(State(s): State<Arc<ControlState>>, body: Bytes) -> Response {
    if let Some(r) = forbidden_off_leader(&s) {
        return r;
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    let spec = match JobSpec::parse(&text, "the submitted job spec") {
        Ok(spec) => spec,
        Err(e) => return bad(e.to_string()),
    };
    let brokers = if spec.source.brokers.is_empty() {
        s.brokers.clone()
    } else {
        spec.source.brokers.clone()
    };
    let topics = spec.source.topics.clone();
    let checked = tokio::task::spawn_blocking(move || {
        for t in &topics {
            topic_partitions(&brokers, t).map_err(|e| format!("source.topics: {e}"))?;
        }
        Ok::<(), String>(())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    if let Err(e) = checked {
        return bad(format!("job {}: {e}", spec.name));
    }
    if !spec.rules.files.is_empty() {
        let files: Vec<std::path::PathBuf> = spec.rules.files.iter().map(Into::into).collect();
        let (_, errors) = crate::alert::rules::load_rule_files(&files);
        if !errors.is_empty() {
            let list: Vec<String> = errors.iter().map(|e| format!("rules.files: {e}")).collect();
            return bad(format!("job {}:\n{}", spec.name, list.join("\n")));
        }
        let (brokers, topic) = (
            if spec.source.brokers.is_empty() {
                s.brokers.clone()
            } else {
                spec.source.brokers.clone()
            },
            spec.rules.topic.clone(),
        );
        let checked = tokio::task::spawn_blocking(move || {
            topic_partitions(&brokers, &topic).map_err(|e| format!("rules.topic: {e}"))
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        if let Err(e) = checked {
            return bad(format!("job {}: {e}", spec.name));
        }
    }
    // Global worker 0 (process 0) adds the rule files' text as it sequences the command.
    let submit = Command::Submit {
        spec: text,
        rules: Vec::new(),
    };
    if let Err(r) = send(&s, submit) {
        return r;
    }
    (
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"status": "success", "data": {"name": spec.name, "state": "submitted"}}).to_string(),
    )
        .into_response()
}

/// This process's view of the jobs.
fn local_jobs(s: &ControlState) -> BTreeMap<String, JobStatus> {
    s.registry
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Per job, the frontier of the oldest checkpoint this process keeps (see
/// [`super::checkpoint`]); empty without checkpoints.
async fn internal_checkpoint(State(s): State<Arc<ControlState>>) -> Response {
    let kept = match &s.checkpoints {
        Some(c) => {
            let c = Arc::clone(c);
            tokio::task::spawn_blocking(move || c.kept())
                .await
                .unwrap_or_default()
        }
        None => BTreeMap::new(),
    };
    axum::Json(kept).into_response()
}

async fn internal_jobs(State(s): State<Arc<ControlState>>) -> Response {
    axum::Json(local_jobs(&s)).into_response()
}

/// Every process's view, merged: watermarks and partitions are owned by one process each.
pub async fn all_jobs(s: &ControlState) -> Result<BTreeMap<String, JobStatus>, String> {
    let mut jobs = local_jobs(s);
    let peers = s.peers.clone();
    let answers = tokio::task::spawn_blocking(move || {
        peers
            .iter()
            .map(|p| {
                let url = format!("{p}/internal/v1/jobs");
                // A peer that hangs (stopped, swapping) must not hang the jobs list.
                to_peer(ureq::get(&url))
                    .config()
                    .timeout_global(Some(std::time::Duration::from_secs(5)))
                    .build()
                    .call()
                    .map_err(|e| format!("{url}: {e}"))
                    .and_then(|mut r| {
                        let b = r.body_mut().read_to_vec().map_err(|e| e.to_string())?;
                        serde_json::from_slice::<BTreeMap<String, JobStatus>>(&b)
                            .map_err(|e| e.to_string())
                    })
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| e.to_string())?;
    for a in answers {
        for (name, j) in a? {
            let e = jobs.entry(name).or_insert_with(|| JobStatus {
                samples: 0,
                problems: Vec::new(),
                ..j.clone()
            });
            // The epoch every process has reached (a replay is under way until all have).
            e.epoch = e.epoch.min(j.epoch);
            e.watermarks.extend(j.watermarks);
            e.partitions.extend(j.partitions);
            e.samples += j.samples;
            e.late_accepted += j.late_accepted;
            e.late_dropped += j.late_dropped;
            e.wal_records_replayed += j.wal_records_replayed;
            e.problems.extend(j.problems);
        }
    }
    Ok(jobs)
}

async fn list_jobs(State(s): State<Arc<ControlState>>) -> Response {
    match all_jobs(&s).await {
        Ok(jobs) => {
            let data: Vec<Json> = jobs
                .values()
                .map(|j| {
                    let mut v = serde_json::to_value(j).unwrap_or_default();
                    v["watermark"] = json!(j.watermark());
                    v["lag"] = json!(j.lag());
                    v
                })
                .collect();
            axum::Json(json!({"status": "success", "data": data})).into_response()
        }
        Err(e) => api::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("a worker process did not answer: {e}"),
        ),
    }
}

async fn cancel(State(s): State<Arc<ControlState>>, Path(name): Path<String>) -> Response {
    if !local_jobs(&s).contains_key(&name) {
        return api::error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no job named {name:?}: see `tidemark jobs`"),
        );
    }
    match send(&s, Command::Cancel { name: name.clone() }) {
        Ok(()) => {
            axum::Json(json!({"status": "success", "data": {"name": name, "state": "cancelling"}}))
                .into_response()
        }
        Err(r) => r,
    }
}

/// Start offsets for a replay from event time `t`: per partition, the last binding whose
/// newest event time is before `t` (every message with event time >= t is at or after it);
/// partitions without such a binding start at offset 0.
pub fn offsets_for_time(bindings: &[Binding], t: i64) -> BTreeMap<(usize, i32), i64> {
    let mut out: BTreeMap<(usize, i32), i64> = BTreeMap::new();
    let mut parts: Vec<(usize, i32)> = bindings.iter().map(|b| (b.topic, b.partition)).collect();
    parts.sort();
    parts.dedup();
    for p in parts {
        let best = bindings
            .iter()
            .filter(|b| (b.topic, b.partition) == p && b.max_ts < t)
            .map(|b| b.offset)
            .max()
            .unwrap_or(0);
        out.insert(p, best);
    }
    out
}

/// Newest event time before the given offsets, per the bindings (for `--from-offsets`).
pub fn time_for_offsets(bindings: &[Binding], offsets: &BTreeMap<(usize, i32), i64>) -> i64 {
    offsets
        .iter()
        .map(|(p, &o)| {
            bindings
                .iter()
                .filter(|b| (b.topic, b.partition) == *p && b.offset <= o)
                .map(|b| b.max_ts)
                .max()
                .unwrap_or(i64::MIN)
        })
        .max()
        .unwrap_or(i64::MIN)
}

async fn replay(
    State(s): State<Arc<ControlState>>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    if let Some(r) = forbidden_off_leader(&s) {
        return r;
    }
    let jobs = local_jobs(&s);
    let Some(job) = jobs.get(&name) else {
        return api::error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no job named {name:?}: see `tidemark jobs`"),
        );
    };
    let Ok(spec) = JobSpec::parse(&job.spec, "stored spec") else {
        return bad("the job's stored spec no longer parses");
    };
    let p = api::params(&q, &Bytes::new());
    let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let bindings = s
        .bindings
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&name)
        .cloned()
        .unwrap_or_default();
    const HOUR: i64 = 3_600_000;
    let (offsets, rollups_from) = match (get("from_time"), get("from_offsets")) {
        (Some(t), None) => {
            let t = match api::parse_time(&t) {
                Ok(t) => t,
                Err(e) => {
                    return bad(format!(
                        "from_time: {e}; use RFC 3339, e.g. 2026-11-22T10:00:00Z"
                    ))
                }
            };
            // Whole hours, so no rebuilt 1m or 1h window misses data read before the offsets.
            let aligned = t.div_euclid(HOUR) * HOUR;
            (offsets_for_time(&bindings, aligned), aligned)
        }
        (None, Some(list)) => {
            let mut offsets = BTreeMap::new();
            for item in list.split(',').filter(|x| !x.is_empty()) {
                let parsed = item.split_once(':').and_then(|(a, b)| {
                    let (topic, part) = match a.rsplit_once('/') {
                        Some((t, p)) => (spec.source.topics.iter().position(|x| x == t)?, p),
                        None => (0, a),
                    };
                    Some(((topic, part.parse::<i32>().ok()?), b.parse::<i64>().ok()?))
                });
                match parsed {
                    Some((k, o)) if o >= 0 => {
                        offsets.insert(k, o);
                    }
                    _ => {
                        return bad(format!(
                            "from_offsets: {item:?} is not PARTITION:OFFSET (or TOPIC/PARTITION:OFFSET for a topic of the job)"
                        ))
                    }
                }
            }
            if offsets.is_empty() {
                return bad("from_offsets: give at least one PARTITION:OFFSET");
            }
            // Rebuild the windows that start after everything before the offsets.
            let t = time_for_offsets(&bindings, &offsets);
            let from = if t == i64::MIN {
                i64::MIN
            } else {
                (t.div_euclid(HOUR) + 1) * HOUR
            };
            (offsets, from)
        }
        _ => return bad("give exactly one of from_time or from_offsets"),
    };
    let list: Vec<(usize, i32, i64)> = offsets.iter().map(|(k, o)| (k.0, k.1, *o)).collect();
    if let Err(r) = send(
        &s,
        Command::Replay {
            name: name.clone(),
            offsets: list.clone(),
            rollups_from,
        },
    ) {
        return r;
    }
    let shown: BTreeMap<String, i64> = list
        .iter()
        .map(|(t, p, o)| (format!("{}/{p}", spec.source.topics[*t]), *o))
        .collect();
    axum::Json(json!({"status": "success", "data": {"name": name, "offsets": shown, "rollups_from": rollups_from}}))
        .into_response()
}

fn render_metrics(s: &ControlState) -> String {
    let mut w = TextWriter(String::with_capacity(4096));
    render_counters(&s.metrics, &mut w);
    crate::store::hot::render_memory(&s.hot, &mut w);
    if let Some(c) = &s.checkpoints {
        c.render(&mut w);
    }
    let jobs = local_jobs(s);
    let mut lag = Vec::new();
    let mut wm = Vec::new();
    let mut delay = Vec::new();
    let mut malformed = Vec::new();
    let mut last_bad = Vec::new();
    let mut samples = Vec::new();
    let mut late = Vec::new();
    for j in jobs.values() {
        let newest = j.partitions.values().map(|p| p.max_ts).max().unwrap_or(0);
        let watermark = j.watermark();
        let job = labels(&[("job", &j.name)]);
        wm.push((job.clone(), watermark as f64 / 1000.0));
        delay.push((
            job.clone(),
            ((newest as f64) - watermark as f64).max(0.0) / 1000.0,
        ));
        samples.push((job, j.samples as f64));
        late.push((
            labels(&[("job", &j.name), ("action", "accepted")]),
            j.late_accepted as f64,
        ));
        late.push((
            labels(&[("job", &j.name), ("action", "dropped")]),
            j.late_dropped as f64,
        ));
        for p in j.partitions.values() {
            let l = labels(&[
                ("job", &j.name),
                ("topic", &p.topic),
                ("partition", &p.partition.to_string()),
            ]);
            if p.high >= 0 && p.position >= 0 {
                lag.push((l.clone(), (p.high - p.position).max(0) as f64));
            }
            malformed.push((l.clone(), p.malformed as f64));
            if let Some((off, _)) = &p.last_malformed {
                last_bad.push((l, *off as f64));
            }
        }
    }
    let fam = |w: &mut TextWriter, name: &str, kind: &str, help: &str, v: &[(String, f64)]| {
        let refs: Vec<(&str, f64)> = v.iter().map(|(l, x)| (l.as_str(), *x)).collect();
        w.family(name, kind, help, &refs);
    };
    fam(
        &mut w,
        "tidemark_kafka_consumer_lag_messages",
        "gauge",
        "Messages between the job's read position and the partition's high watermark.",
        &lag,
    );
    fam(&mut w, "tidemark_job_watermark_seconds", "gauge", "The job's watermark (its timely frontier) as far as this process's sources hold it, in event time.", &wm);
    fam(
        &mut w,
        "tidemark_watermark_delay_seconds",
        "gauge",
        "How far the job's watermark trails the newest event time its partitions have seen.",
        &delay,
    );
    fam(
        &mut w,
        "tidemark_kafka_malformed_messages_total",
        "counter",
        "Messages (or messages with lines) that failed to decode; their valid samples were kept.",
        &malformed,
    );
    fam(
        &mut w,
        "tidemark_kafka_last_malformed_offset",
        "gauge",
        "Offset of the last malformed message per partition.",
        &last_bad,
    );
    fam(
        &mut w,
        "tidemark_job_samples_total",
        "counter",
        "Samples the job's sources in this process sent into the dataflow.",
        &samples,
    );
    fam(
        &mut w,
        "tidemark_job_late_samples_total",
        "counter",
        "Late samples: accepted into a still-open window, or dropped from rollups.",
        &late,
    );
    w.family(
        "tidemark_hot_series",
        "gauge",
        "Series in this process's hot index.",
        &[("", s.hot.catalog.len() as f64)],
    );
    w.family(
        "tidemark_hot_samples",
        "gauge",
        "Raw samples in this process's hot index.",
        &[("", s.hot.sample_count() as f64)],
    );
    w.family(
        "tidemark_hot_samples_appended_total",
        "counter",
        "Raw samples this process's hot index took (retention drops them later).",
        &[(
            "",
            s.hot
                .stats
                .samples_appended
                .load(std::sync::atomic::Ordering::Relaxed) as f64,
        )],
    );
    w.family(
        "tidemark_hot_bytes",
        "gauge",
        "Bytes of samples and rollups in this process's hot index.",
        &[("", s.hot.bytes() as f64)],
    );
    crate::store::hot::render_chunk_files(&s.hot, &mut w);
    crate::ops::render_process(&mut w);
    w.0
}

async fn metrics(State(s): State<Arc<ControlState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_metrics(&s),
    )
        .into_response()
}

/// The router of a worker process.
pub fn router(s: Arc<ControlState>) -> Router {
    let q = Arc::new(QueryState {
        hot: Arc::clone(&s.hot),
        metrics: Arc::clone(&s.metrics),
        peers: s.peers.clone(),
        cold: Arc::clone(&s.cold),
        // Workers read Kafka, which carries samples only.
        metadata: Default::default(),
        limits: s.query.clone(),
        slots: QueryState::slots_for(&s.query),
        // A worker's queries fan out to its peers, whose samples it does not see arrive.
        cache: None,
    });
    let merged = {
        let s = Arc::clone(&s);
        let local = api::routes(Arc::clone(&q));
        move |req: Request| {
            let s = Arc::clone(&s);
            let local = local.clone();
            async move {
                use tower::ServiceExt as _;
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 64 << 20)
                    .await
                    .unwrap_or_default();
                // Without the extensions: they hold this route's path parameters, and the
                // inner router's `{name}` would be a second one (`label/<name>/values`
                // failed with "Expected 1 but got 2").
                let mut inner = parts.clone();
                inner.extensions = Default::default();
                let fwd = Request::from_parts(inner, axum::body::Body::from(body.clone()));
                let resp = match local.oneshot(fwd).await {
                    Ok(r) => r,
                    Err(e) => match e {},
                };
                merge_peers(
                    s,
                    Request::from_parts(parts, axum::body::Body::from(body)),
                    resp,
                )
                .await
            }
        }
    };
    Router::new()
        .route("/api/v1/series", get(merged.clone()).post(merged.clone()))
        .route("/api/v1/labels", get(merged.clone()).post(merged.clone()))
        .route("/api/v1/label/{name}/values", get(merged.clone()))
        .route("/api/v1/rollups", get(merged))
        .route("/api/v1/jobs", post(submit).get(list_jobs))
        .route("/api/v1/jobs/{name}", delete(cancel))
        .route("/api/v1/jobs/{name}/replay", post(replay))
        .route("/api/v1/rules", get(rules_api))
        .route("/api/v1/alerts", get(alerts_api))
        .route("/-/reload", post(reload).put(reload))
        .route("/internal/v1/select", post(internal_select))
        .route("/internal/v1/jobs", get(internal_jobs))
        .route("/internal/v1/checkpoint", get(internal_checkpoint))
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "Tidemark is Healthy.\n" }))
        .route("/-/ready", get(worker_ready))
        .route("/api/v1/status/cluster", get(cluster_status))
        .route("/api/v1/status/tsdb", get(worker_tsdb))
        .with_state(Arc::clone(&s))
        .merge(crate::web::routes())
        .merge(crate::web::status::routes(Arc::clone(&s.status)))
        .merge(crate::web::dashboards::routes(Arc::new(
            crate::web::dashboards::Dashboards {
                dir: s.dashboards.clone(),
            },
        )))
        .fallback_service(api::routes(q))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&s.auth),
            crate::http::authorize,
        ))
        .layer(axum::middleware::from_fn(crate::http::request_log))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(p: i32, offset: i64, max_ts: i64) -> Binding {
        Binding {
            topic: 0,
            partition: p,
            offset,
            max_ts,
            at_ms: 0,
        }
    }

    #[test]
    fn time_to_offsets_uses_the_last_binding_before_the_time() {
        let bs = [
            b(0, 10, 1_000),
            b(0, 20, 2_000),
            b(0, 30, 3_000),
            b(1, 5, 2_500),
        ];
        let o = offsets_for_time(&bs, 2_500);
        assert_eq!(o[&(0, 0)], 20);
        assert_eq!(o[&(0, 1)], 0, "no binding before the time: from the start");
        assert_eq!(
            time_for_offsets(&bs, &BTreeMap::from([((0, 0), 25)])),
            2_000
        );
    }
}

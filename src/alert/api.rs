//! HTTP routes of alerting: Prometheus's `/api/v1/rules`, `/api/v1/alerts` and `/-/reload`;
//! Alertmanager's v2 API (`/api/v2/alerts`, `/api/v2/silences`, `/api/v2/silence/{id}`,
//! `/api/v2/status`, `/api/v2/receivers`) so `amtool` works; `/api/v1/notifications` (the
//! outbox and the last deliveries); and the notifier's `/metrics` families.
//!
//! Access control is the server's (`crate::http::required_role`): changing silences and
//! reloading need `admin`, posting alerts `write`, reading `read`.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use std::collections::BTreeMap;

use super::eval::{rule_key, AlertEvent, Rules};
use super::notify::config::{parse_notify_config, LabelMatcher, NotifyConfig, DEFAULT_CONFIG};
use super::notify::{silences::PostableSilence, AlertQuery, Notifier};
use super::rules::RuleKind;
use super::template::go_float;
use crate::ops::TextWriter;
use crate::time::now_ms;
use crate::time::rfc3339;
use tidemark_dataflows::rules::AlertStatus;

/// What the alerting routes share.
pub struct AlertState {
    pub rules: Option<Arc<Rules>>,
    pub notifier: Arc<Notifier>,
    /// The routing file (`None`: the built-in default), read again on reload.
    pub notify_file: Option<PathBuf>,
}

/// Loads the routing configuration from `file`, or the default.
pub fn load_notify_config(file: Option<&std::path::Path>) -> Result<NotifyConfig, String> {
    match file {
        None => parse_notify_config(std::path::Path::new("<default>"), DEFAULT_CONFIG)
            .map_err(|e| e.to_string()),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            parse_notify_config(p, &text).map_err(|e| e.to_string())
        }
    }
}

fn error(status: StatusCode, kind: &str, msg: String) -> Response {
    (
        status,
        Json(json!({"status": "error", "errorType": kind, "error": msg})),
    )
        .into_response()
}

fn v2_error(status: StatusCode, msg: String) -> Response {
    (status, Json(Value::String(msg))).into_response()
}

/// The routes.
pub fn routes(state: Arc<AlertState>) -> Router {
    Router::new()
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/alerts", get(alerts_v1))
        .route("/api/v1/notifications", get(notifications))
        .route("/-/reload", post(reload).put(reload))
        .route("/api/v2/alerts", get(alerts_v2).post(post_alerts))
        .route("/api/v2/alerts/groups", get(alert_groups))
        .route("/api/v2/silences", get(list_silences).post(post_silence))
        .route(
            "/api/v2/silence/{id}",
            get(get_silence).delete(delete_silence),
        )
        .route("/api/v2/status", get(status))
        .route("/api/v2/receivers", get(receivers))
        .with_state(state)
}

fn multi(raw: &Option<String>, key: &str) -> Vec<String> {
    let pairs: Vec<(String, String)> = raw
        .as_deref()
        .map(|q| serde_urlencoded::from_str(q).unwrap_or_default())
        .unwrap_or_default();
    pairs
        .into_iter()
        .filter(|(k, _)| k == key || *k == format!("{key}[]"))
        .map(|(_, v)| v)
        .collect()
}

/// `/api/v1/rules` over several rule sets (a cluster's jobs), filtered by the query's `type`,
/// `rule_name[]` and `rule_group[]`.
pub fn rules_response(rules: &[Arc<Rules>], q: &Option<String>) -> Response {
    let kind = multi(q, "type").into_iter().next().unwrap_or_default();
    if !kind.is_empty() && kind != "alert" && kind != "record" {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            format!("unsupported type {kind:?}: use alert or record"),
        );
    }
    let (names, groups) = (multi(q, "rule_name"), multi(q, "rule_group"));
    let (mut all, mut load_errors) = (Vec::new(), Vec::new());
    for r in rules {
        let d = r.api_rules(&kind, &names, &groups);
        all.extend(d["groups"].as_array().cloned().unwrap_or_default());
        load_errors.extend(d["loadErrors"].as_array().cloned().unwrap_or_default());
    }
    let mut data = json!({ "groups": all });
    if !load_errors.is_empty() {
        data["loadErrors"] = Value::Array(load_errors);
    }
    Json(json!({"status": "success", "data": data})).into_response()
}

/// `/api/v1/alerts` over several rule sets.
pub fn alerts_response(rules: &[Arc<Rules>]) -> Response {
    let all: Vec<Value> = rules
        .iter()
        .flat_map(|r| {
            r.api_alerts()["alerts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    Json(json!({"status": "success", "data": {"alerts": all}})).into_response()
}

async fn rules(State(s): State<Arc<AlertState>>, RawQuery(q): RawQuery) -> Response {
    rules_response(s.rules.as_slice(), &q)
}

async fn alerts_v1(State(s): State<Arc<AlertState>>) -> Response {
    alerts_response(s.rules.as_slice())
}

async fn notifications(State(s): State<Arc<AlertState>>) -> Response {
    Json(json!({"status": "success", "data": s.notifier.outbox_json()})).into_response()
}

/// Reloads the rule files and the routing file; all or nothing for each.
async fn reload(State(s): State<Arc<AlertState>>) -> Response {
    let st = Arc::clone(&s);
    let res = tokio::task::spawn_blocking(move || {
        let mut errors = Vec::new();
        let mut rules = 0;
        if let Some(r) = &st.rules {
            match r.reload() {
                Ok(n) => rules = n,
                Err(es) => errors.extend(es.into_iter().map(|e| e.to_string())),
            }
        }
        match load_notify_config(st.notify_file.as_deref()) {
            Ok(c) => st.notifier.set_config(c),
            Err(e) => errors.push(e),
        }
        (rules, errors)
    })
    .await;
    match res {
        Ok((n, errors)) if errors.is_empty() => (StatusCode::OK, format!("reloaded: {n} rules\n")).into_response(),
        Ok((_, errors)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "failed to reload config (a rule file with errors keeps its running rules; a bad routing file keeps the running routing):\n{}\n",
                errors.join("\n")
            ),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("reload failed: {e}\n")).into_response(),
    }
}

fn filters(raw: &Option<String>) -> Result<Vec<LabelMatcher>, String> {
    multi(raw, "filter")
        .iter()
        .map(|f| LabelMatcher::parse(f.trim_matches(['{', '}'])))
        .collect()
}

fn flag(raw: &Option<String>, key: &str) -> bool {
    multi(raw, key).first().is_none_or(|v| v != "false")
}

/// The alert selection of a `GET /api/v2/alerts[/groups]` query string.
fn alert_query(q: &Option<String>) -> Result<AlertQuery, Response> {
    Ok(AlertQuery {
        active: flag(q, "active"),
        silenced: flag(q, "silenced"),
        inhibited: flag(q, "inhibited"),
        filter: filters(q).map_err(|e| v2_error(StatusCode::BAD_REQUEST, e))?,
    })
}

async fn alerts_v2(State(s): State<Arc<AlertState>>, RawQuery(q): RawQuery) -> Response {
    match alert_query(&q) {
        Ok(q) => Json(Value::Array(s.notifier.alerts_json(&q))).into_response(),
        Err(r) => r,
    }
}

/// `GET /api/v2/alerts/groups` (Alertmanager's; Grafana's Alertmanager data source and the
/// UI's alerts view): the alerts grouped as the routing groups them.
async fn alert_groups(State(s): State<Arc<AlertState>>, RawQuery(q): RawQuery) -> Response {
    match alert_query(&q) {
        Ok(q) => Json(Value::Array(s.notifier.groups_json(&q))).into_response(),
        Err(r) => r,
    }
}

/// `POST /api/v2/alerts`: alerts from another Prometheus (or `amtool alert add`). An alert
/// whose `endsAt` has passed is resolved.
async fn post_alerts(State(s): State<Arc<AlertState>>, body: axum::body::Bytes) -> Response {
    #[derive(serde::Deserialize)]
    struct Posted {
        labels: std::collections::BTreeMap<String, String>,
        #[serde(default)]
        annotations: std::collections::BTreeMap<String, String>,
        #[serde(default, rename = "startsAt")]
        starts_at: Option<String>,
        #[serde(default, rename = "endsAt")]
        ends_at: Option<String>,
        #[serde(default, rename = "generatorURL")]
        generator_url: String,
    }
    let posted: Vec<Posted> = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return v2_error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    let now = now_ms();
    let mut events = Vec::with_capacity(posted.len());
    for (i, p) in posted.into_iter().enumerate() {
        if p.labels.is_empty() {
            return v2_error(
                StatusCode::BAD_REQUEST,
                format!("alerts[{i}]: labels must not be empty"),
            );
        }
        let t = |v: &Option<String>, f: &str| -> Result<Option<i64>, Response> {
            match v
                .as_deref()
                .filter(|s| !s.is_empty() && !s.starts_with("0001-"))
            {
                None => Ok(None),
                Some(x) => crate::query::api::parse_time(x).map(Some).map_err(|e| {
                    v2_error(StatusCode::BAD_REQUEST, format!("alerts[{i}].{f}: {e}"))
                }),
            }
        };
        let starts = match t(&p.starts_at, "startsAt") {
            Ok(v) => v.unwrap_or(now),
            Err(r) => return r,
        };
        let ends = match t(&p.ends_at, "endsAt") {
            Ok(v) => v.filter(|e| *e <= now).unwrap_or(0),
            Err(r) => return r,
        };
        events.push(AlertEvent {
            labels: p.labels,
            annotations: p.annotations,
            starts_at: starts,
            ends_at: ends,
            tick: 0,
            generator_url: p.generator_url,
        });
    }
    let n = Arc::clone(&s.notifier);
    match tokio::task::spawn_blocking(move || n.ingest(&events)).await {
        Ok(Ok(_)) => StatusCode::OK.into_response(),
        Ok(Err(e)) => v2_error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => v2_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn list_silences(State(s): State<Arc<AlertState>>, RawQuery(q): RawQuery) -> Response {
    match filters(&q) {
        Ok(f) => Json(Value::Array(s.notifier.silences(&f))).into_response(),
        Err(e) => v2_error(StatusCode::BAD_REQUEST, e),
    }
}

async fn post_silence(State(s): State<Arc<AlertState>>, body: axum::body::Bytes) -> Response {
    let p: PostableSilence = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return v2_error(StatusCode::BAD_REQUEST, format!("silence: {e}")),
    };
    let n = Arc::clone(&s.notifier);
    match tokio::task::spawn_blocking(move || n.put_silence(p)).await {
        Ok(Ok(id)) => Json(json!({"silenceID": id})).into_response(),
        Ok(Err(e)) if e.contains("not found") => v2_error(StatusCode::NOT_FOUND, e),
        Ok(Err(e)) => v2_error(StatusCode::BAD_REQUEST, e),
        Err(e) => v2_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn get_silence(State(s): State<Arc<AlertState>>, Path(id): Path<String>) -> Response {
    match s.notifier.silence(&id) {
        Some(j) => Json(j).into_response(),
        None => v2_error(StatusCode::NOT_FOUND, format!("silence {id} not found")),
    }
}

async fn delete_silence(State(s): State<Arc<AlertState>>, Path(id): Path<String>) -> Response {
    let n = Arc::clone(&s.notifier);
    match tokio::task::spawn_blocking(move || n.expire_silence(&id)).await {
        Ok(Ok(())) => StatusCode::OK.into_response(),
        Ok(Err(e)) if e.contains("not found") => v2_error(StatusCode::NOT_FOUND, e),
        Ok(Err(e)) => v2_error(StatusCode::BAD_REQUEST, e),
        Err(e) => v2_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn status(State(s): State<Arc<AlertState>>) -> Response {
    Json(json!({
        "cluster": {"name": "tidemark", "status": "disabled", "peers": []},
        "versionInfo": {
            "version": env!("CARGO_PKG_VERSION"), "revision": "", "branch": "", "buildUser": "",
            "buildDate": "", "goVersion": "none (Tidemark, Rust)"
        },
        "config": {"original": s.notifier.config().original},
        "uptime": s.notifier.uptime(),
    }))
    .into_response()
}

async fn receivers(State(s): State<Arc<AlertState>>) -> Response {
    let names: Vec<Value> = s
        .notifier
        .config()
        .receivers
        .keys()
        .map(|n| json!({"name": n}))
        .collect();
    Json(Value::Array(names)).into_response()
}

/// `receiver="...",integration="..."[,reason="..."]`.
fn receiver_labels(receiver: &str, integration: &str, reason: Option<&str>) -> String {
    let mut pairs = vec![("receiver", receiver), ("integration", integration)];
    pairs.extend(reason.map(|r| ("reason", r)));
    crate::ops::labels(&pairs)
}

fn as_refs(v: &[(String, f64)]) -> Vec<(&str, f64)> {
    v.iter().map(|(l, x)| (l.as_str(), *x)).collect()
}

/// Appends the rule and notifier families to `/metrics`.
pub fn render_metrics(s: &AlertState, w: &mut TextWriter) {
    use std::sync::atomic::Ordering::Relaxed;
    if let Some(r) = &s.rules {
        w.family(
            "tidemark_rule_evaluations_total",
            "counter",
            "Rule evaluations (one per rule and tick), by who made them: the incremental plans \
             maintained by the job, or the query engine (rules without a plan, and ticks a \
             plan does not cover: before its first tick, after a catch-up skipped ticks).",
            &[
                ("path=\"engine\"", r.evaluations.load(Relaxed) as f64),
                (
                    "path=\"incremental\"",
                    r.evaluations_incremental.load(Relaxed) as f64,
                ),
            ],
        );
        w.family(
            "tidemark_rule_evaluation_failures_total",
            "counter",
            "Rule evaluations, recorded-sample writes and state saves that failed.",
            &[("", r.eval_failures.load(Relaxed) as f64)],
        );
        w.family(
            "tidemark_rule_last_tick_seconds",
            "gauge",
            "The last evaluation tick, in event time.",
            &[("", r.last_tick().unwrap_or(0) as f64 / 1000.0)],
        );
    }
    let m = &s.notifier.metrics;
    let by_receiver = |x: &std::sync::Mutex<std::collections::BTreeMap<(String, String), u64>>| {
        x.lock()
            .map(|x| {
                x.iter()
                    .map(|((r, i), v)| (receiver_labels(r, i, None), *v as f64))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let sent = by_receiver(&m.sent);
    let dropped = by_receiver(&m.dropped);
    let failed: Vec<(String, f64)> = m
        .failed
        .lock()
        .map(|x| {
            x.iter()
                .map(|((r, i, why), v)| (receiver_labels(r, i, Some(why)), *v as f64))
                .collect()
        })
        .unwrap_or_default();
    w.family(
        "tidemark_notifications_total",
        "counter",
        "Notifications delivered, by receiver and integration.",
        &as_refs(&sent),
    );
    w.family(
        "tidemark_notifications_failed_total",
        "counter",
        "Failed delivery attempts, by receiver, integration and reason (connect, timeout, http_4xx, http_5xx, smtp, config, other).",
        &as_refs(&failed),
    );
    w.family(
        "tidemark_notifications_dropped_total",
        "counter",
        "Notifications given up (give-up age passed or a permanent error), by receiver and integration.",
        &as_refs(&dropped),
    );
    w.family(
        "tidemark_alerts_received_total",
        "counter",
        "Alert events the notifier received.",
        &[("", m.alerts_received.load(Relaxed) as f64)],
    );
}
/// The rule evaluator's state as `/api/v1/rules` and `/api/v1/alerts` show it.
impl Rules {
    /// `/api/v1/rules` data: `type` is `alert`, `record` or empty; `names` and `groups` filter
    /// by rule and group name when non-empty.
    pub fn api_rules(&self, kind: &str, names: &[String], groups: &[String]) -> Value {
        let inner = self.lock();
        let mut out = Vec::new();
        for gs in &inner.groups {
            if !groups.is_empty() && !groups.contains(&gs.group.name) {
                continue;
            }
            let mut rules = Vec::new();
            for (ri, r) in gs.group.rules.iter().enumerate() {
                if (kind == "alert" && !r.is_alert()) || (kind == "record" && r.is_alert()) {
                    continue;
                }
                if !names.is_empty() && !names.contains(&r.name) {
                    continue;
                }
                let h = &gs.health[ri];
                let health = if !h.evaluated {
                    "unknown"
                } else if h.last_error.is_empty() {
                    "ok"
                } else {
                    "err"
                };
                let labels: BTreeMap<&str, &str> = r
                    .labels
                    .iter()
                    .map(|(k, v, _)| (k.as_str(), v.as_str()))
                    .collect();
                let mut j = json!({
                    "name": r.name,
                    "query": r.expr_text,
                    "labels": labels,
                    "health": health,
                    "lastError": h.last_error,
                    "evaluationTime": h.eval_seconds,
                    "incremental": gs.inc[ri].is_some(),
                    "lastEvaluation": if h.evaluated { rfc3339(h.last_eval as i64) } else { "0001-01-01T00:00:00Z".into() },
                });
                if let RuleKind::Alert {
                    for_ms,
                    keep_firing_for_ms,
                    annotations,
                } = &r.kind
                {
                    let m = inner.machines.get(&rule_key(&gs.group, r));
                    let alerts: Vec<Value> = m
                        .map(|m| m.active().map(alert_json).collect())
                        .unwrap_or_default();
                    let state = m.map_or("inactive", |m| {
                        if m.active().any(|a| a.status == AlertStatus::Firing) {
                            "firing"
                        } else if m.active().next().is_some() {
                            "pending"
                        } else {
                            "inactive"
                        }
                    });
                    let ann: BTreeMap<&str, &str> = annotations
                        .iter()
                        .map(|(k, v, _)| (k.as_str(), v.as_str()))
                        .collect();
                    let o = j.as_object_mut().expect("object");
                    o.insert("type".into(), "alerting".into());
                    o.insert("state".into(), state.into());
                    o.insert("duration".into(), json!(*for_ms as f64 / 1000.0));
                    o.insert(
                        "keepFiringFor".into(),
                        json!(*keep_firing_for_ms as f64 / 1000.0),
                    );
                    o.insert("annotations".into(), json!(ann));
                    o.insert("alerts".into(), json!(alerts));
                } else {
                    j.as_object_mut()
                        .expect("object")
                        .insert("type".into(), "recording".into());
                }
                rules.push(j);
            }
            if rules.is_empty() && (!names.is_empty() || !kind.is_empty()) {
                continue;
            }
            out.push(json!({
                "name": gs.group.name,
                "file": gs.group.file.display().to_string(),
                "interval": gs.group.interval_ms.unwrap_or(self.cfg.resolution_ms) as f64 / 1000.0,
                "limit": gs.group.limit,
                "rules": rules,
                "evaluationTime": gs.eval_seconds,
                "lastEvaluation": rfc3339(gs.last_eval as i64),
            }));
        }
        let errors: Vec<String> = inner.load_errors.iter().map(|e| e.to_string()).collect();
        let mut data = json!({ "groups": out });
        if !errors.is_empty() {
            data.as_object_mut()
                .expect("object")
                .insert("loadErrors".into(), json!(errors));
        }
        data
    }

    /// `/api/v1/alerts` data: every pending and firing alert.
    pub fn api_alerts(&self) -> Value {
        let inner = self.lock();
        let mut alerts = Vec::new();
        for gs in &inner.groups {
            for r in &gs.group.rules {
                if let Some(m) = inner.machines.get(&rule_key(&gs.group, r)) {
                    alerts.extend(m.active().map(alert_json));
                }
            }
        }
        json!({ "alerts": alerts })
    }
}

/// Prometheus's alert JSON (`value` as Go's `%e`-style shortest string).
fn alert_json(a: &tidemark_dataflows::rules::Alert) -> Value {
    let labels: BTreeMap<&str, &str> = a
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let ann: BTreeMap<&str, &str> = a
        .annotations
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut j = json!({
        "labels": labels,
        "annotations": ann,
        "state": if a.status == AlertStatus::Firing { "firing" } else { "pending" },
        "activeAt": rfc3339(a.active_at as i64),
        "value": go_e_shortest(a.value),
    });
    if a.keep_firing_since > 0 {
        j.as_object_mut().expect("object").insert(
            "keepFiringSince".into(),
            rfc3339(a.keep_firing_since as i64).into(),
        );
    }
    j
}

/// Go's `strconv.FormatFloat(v, 'e', -1, 64)` (`9.5e+01`).
fn go_e_shortest(v: f64) -> String {
    if !v.is_finite() {
        return go_float(v);
    }
    let s = format!("{v:e}");
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    let e: i32 = e.parse().unwrap_or(0);
    format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}

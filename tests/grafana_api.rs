//! Grafana's two data sources against `tidemark up`: every call Grafana 11's Prometheus data
//! source makes (with `httpMethod: POST`, so queries, labels and series are form bodies; label
//! values and metadata stay GETs) and every call its Alertmanager data source makes
//! (`implementation: prometheus`: status, alerts with filters, alert groups, silences created,
//! read, listed and expired, receivers), each answered in the shape Grafana reads.

mod support;

use serde_json::{json, Value};
use support::{agent, enc, now_ms, Tidemark};

const RULES: &str = "groups:\n- name: hosts\n  rules:\n  - alert: HighCpu\n    expr: cpu > 90\n    labels: {severity: page}\n    annotations: {summary: 'CPU high on {{ $labels.host }}'}\n";

/// `(status, JSON body)` of a request as Grafana sends it: a form body for POST.
fn call(t: &Tidemark, method: &str, path: &str, form: &str) -> (u16, Value) {
    let (status, text) = match method {
        "POST" => t.post(
            path,
            "application/x-www-form-urlencoded",
            &[],
            form.as_bytes(),
        ),
        _ => t.get(path),
    };
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
    (status, v)
}

/// The `data` of a successful Prometheus API answer.
fn data(t: &Tidemark, method: &str, path: &str, form: &str) -> Value {
    let (status, v) = call(t, method, path, form);
    assert_eq!(status, 200, "{method} {path} {form}: {v}");
    assert_eq!(v["status"], "success", "{method} {path} {form}: {v}");
    v["data"].clone()
}

#[test]
fn grafanas_prometheus_and_alertmanager_calls_answer_in_their_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES).unwrap();
    let t = Tidemark::start(
        dir.path(),
        &format!(
            "[rules]\nfiles = [{:?}]\n[scrape]\nself_scrape = false\n",
            rules.display().to_string()
        ),
        2,
    );
    // An hour ago: a (95) and b (10) every 10 s for 2 minutes, and a clock sample that moves
    // the watermark past them (rules run on event time).
    let b = (now_ms() - 3_600_000) / 60_000 * 60_000;
    let mut body = String::new();
    for s in (0..=120).step_by(10) {
        body.push_str(&format!("cpu{{host=\"a\"}} 95 {}\n", b + s * 1000));
        body.push_str(&format!("cpu{{host=\"b\"}} 10 {}\n", b + s * 1000));
    }
    body.push_str(&format!("clock 1 {}\n", b + 180_000));
    t.push_text(&body);
    t.eventually("HighCpu firing", || {
        let (_, text) = t.get("/api/v2/alerts");
        text.contains("HighCpu").then_some(())
    });
    let (start, end) = (b / 1000, b / 1000 + 180);
    let at = format!("{}.5", b / 1000 + 60);

    // ---- the Prometheus data source ----
    // Health check and feature detection.
    assert!(data(&t, "GET", "/api/v1/status/buildinfo", "")["version"].is_string());
    let d = data(
        &t,
        "POST",
        "/api/v1/query",
        &format!("query={}&time={at}", enc("1+1")),
    );
    assert_eq!(d["resultType"], "scalar");
    assert_eq!(d["result"][1], "2");
    // Panels: a range query and an instant one.
    let d = data(
        &t,
        "POST",
        "/api/v1/query_range",
        &format!("query={}&start={start}&end={end}&step=15", enc("cpu")),
    );
    assert_eq!(d["resultType"], "matrix");
    assert_eq!(d["result"].as_array().unwrap().len(), 2, "{d}");
    let d = data(
        &t,
        "POST",
        "/api/v1/query",
        &format!("query={}&time={at}", enc("cpu{host=\"a\"}")),
    );
    assert_eq!(d["result"][0]["value"][1], "95", "{d}");
    // The query editor: label names, metric names, label values, series, metadata.
    let d = data(
        &t,
        "GET",
        &format!("/api/v1/labels?start={start}&end={end}"),
        "",
    );
    assert!(d.as_array().unwrap().contains(&json!("host")), "{d}");
    let d = data(
        &t,
        "POST",
        "/api/v1/labels",
        &format!("match[]={}&start={start}&end={end}", enc("cpu")),
    );
    assert_eq!(d, json!(["__name__", "host"]));
    let d = data(
        &t,
        "GET",
        &format!("/api/v1/label/__name__/values?start={start}&end={end}"),
        "",
    );
    assert!(d.as_array().unwrap().contains(&json!("cpu")), "{d}");
    let d = data(
        &t,
        "GET",
        &format!(
            "/api/v1/label/host/values?match[]={}&start={start}&end={end}",
            enc("cpu")
        ),
        "",
    );
    assert_eq!(d, json!(["a", "b"]));
    let d = data(
        &t,
        "POST",
        "/api/v1/series",
        &format!(
            "match[]={}&start={start}&end={end}",
            enc("{__name__=\"cpu\"}")
        ),
    );
    assert_eq!(
        d,
        json!([{"__name__": "cpu", "host": "a"}, {"__name__": "cpu", "host": "b"}])
    );
    assert!(data(&t, "GET", "/api/v1/metadata?limit=10000", "").is_object());
    assert!(data(&t, "GET", "/api/v1/metadata?metric=cpu", "").is_object());
    // Exemplars (the panel toggle): none stored, an empty list.
    let d = data(
        &t,
        "POST",
        "/api/v1/query_exemplars",
        &format!("query={}&start={start}&end={end}", enc("cpu")),
    );
    assert_eq!(d, json!([]));
    // "Format query" in the editor, and the rules and alerts of Grafana's alerting view.
    let d = data(
        &t,
        "GET",
        &format!("/api/v1/format_query?query={}", enc("sum(cpu)by(host)")),
        "",
    );
    assert_eq!(d, "sum by (host) (cpu)");
    let d = data(&t, "GET", "/api/v1/rules", "");
    assert_eq!(d["groups"][0]["rules"][0]["name"], "HighCpu", "{d}");
    assert_eq!(d["groups"][0]["rules"][0]["state"], "firing", "{d}");
    let d = data(&t, "GET", "/api/v1/alerts", "");
    assert_eq!(d["alerts"][0]["labels"]["alertname"], "HighCpu", "{d}");

    // ---- the Alertmanager data source ----
    let (status, v) = call(&t, "GET", "/api/v2/status", "");
    assert_eq!(status, 200, "{v}");
    assert!(v["config"]["original"].is_string(), "{v}");
    assert!(v["versionInfo"]["version"].is_string(), "{v}");
    assert!(v["cluster"]["status"].is_string(), "{v}");
    let (status, v) = call(
        &t,
        "GET",
        &format!(
            "/api/v2/alerts?active=true&silenced=false&inhibited=false&filter={}",
            enc("alertname=\"HighCpu\"")
        ),
        "",
    );
    assert_eq!(status, 200, "{v}");
    let alerts = v.as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{v}");
    assert_eq!(alerts[0]["labels"]["host"], "a");
    assert_eq!(alerts[0]["status"]["state"], "active");
    assert_eq!(alerts[0]["annotations"]["summary"], "CPU high on a");
    let (status, v) = call(&t, "GET", "/api/v2/alerts/groups?active=true", "");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v[0]["alerts"][0]["labels"]["alertname"], "HighCpu", "{v}");
    assert!(v[0]["receiver"]["name"].is_string(), "{v}");
    let (status, v) = call(&t, "GET", "/api/v2/receivers", "");
    assert_eq!(status, 200, "{v}");
    assert!(v.as_array().is_some_and(|r| !r.is_empty()), "{v}");
    // A silence as Grafana's silence editor posts it, read back, listed, expired.
    let silence = json!({
        "matchers": [{"name": "host", "value": "a", "isRegex": false, "isEqual": true}],
        "startsAt": "2020-01-01T00:00:00Z",
        "endsAt": "2999-01-01T00:00:00Z",
        "createdBy": "grafana",
        "comment": "maintenance",
    });
    let (status, text) = t.post(
        "/api/v2/silences",
        "application/json",
        &[],
        silence.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    let id = serde_json::from_str::<Value>(&text).unwrap()["silenceID"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, v) = call(&t, "GET", &format!("/api/v2/silence/{id}"), "");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"]["state"], "active", "{v}");
    assert_eq!(v["createdBy"], "grafana");
    let (status, v) = call(
        &t,
        "GET",
        &format!("/api/v2/silences?filter={}", enc("host=\"a\"")),
        "",
    );
    assert_eq!(status, 200, "{v}");
    assert!(
        v.as_array().unwrap().iter().any(|s| s["id"] == id.as_str()),
        "{v}"
    );
    // The silenced alert: out of silenced=false, in silenced=true.
    t.eventually("the alert silenced", || {
        let (_, v) = call(&t, "GET", "/api/v2/alerts?silenced=true&active=true", "");
        (v[0]["status"]["state"] == "suppressed").then_some(())
    });
    let r = agent()
        .delete(format!("{}/api/v2/silence/{id}", t.url))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, v) = call(&t, "GET", &format!("/api/v2/silence/{id}"), "");
    assert_eq!(v["status"]["state"], "expired", "{v}");
}

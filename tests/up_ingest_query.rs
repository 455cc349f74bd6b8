//! `tidemark up` end to end: push each format over HTTP, query it back through
//! `/api/v1/query_range`; bad input; SIGKILL after acknowledged writes.

mod support;

use std::io::Write;

use support::{enc, now_ms, Tidemark};
use tidemark::ingest::remote_write::{
    encode, Label, MetricMetadata, Sample, TimeSeries, WriteRequest,
};

fn range(t: &Tidemark, q: &str, start_ms: i64, end_ms: i64, step_s: u32) -> serde_json::Value {
    t.api(&format!(
        "/api/v1/query_range?query={}&start={}&end={}&step={step_s}",
        enc(q),
        start_ms as f64 / 1000.0,
        end_ms as f64 / 1000.0
    ))
}

fn values(series: &serde_json::Value) -> Vec<(f64, String)> {
    series["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_f64().unwrap(), p[1].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn push_three_formats_and_query_range() {
    let dir = tempfile::tempdir().unwrap();
    // No rules: the shipped ones would record `pool:http_requests:rate5m` from this data, and
    // the series counts below are of what was pushed.
    let t = Tidemark::start(dir.path(), "[rules]\nenabled = false\n", 2);
    let base = (now_ms() / 60_000 - 30) * 60_000; // 30 minutes ago, minute aligned

    // Influx line protocol, gzip, precision=ms, several fields.
    let mut lines = String::new();
    for i in 0..10 {
        lines.push_str(&format!(
            "cpu,host=a,region=eu load=0.{i},idle={}i {}\n",
            90 - i,
            base + i * 10_000
        ));
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(lines.as_bytes()).unwrap();
    let (status, body) = t.post(
        "/api/v2/write?precision=ms",
        "text/plain",
        &[("Content-Encoding", "gzip")],
        &gz.finish().unwrap(),
    );
    assert_eq!(status, 204, "{body}");

    // Prometheus remote write.
    let req = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: "rw_metric".into(),
                },
                Label {
                    name: "job".into(),
                    value: "node".into(),
                },
            ],
            samples: (0..10)
                .map(|i| Sample {
                    value: i as f64 * 2.0,
                    timestamp: base + i * 10_000,
                })
                .collect(),
        }],
        metadata: vec![MetricMetadata {
            r#type: 2,
            metric_family_name: "rw_metric".into(),
            help: "A gauge written remotely.".into(),
            unit: String::new(),
        }],
    };
    let (status, body) = t.post(
        "/api/v1/write",
        "application/x-protobuf",
        &[("Content-Encoding", "snappy")],
        &encode(&req),
    );
    assert_eq!(status, 204, "{body}");

    // Prometheus text format.
    let mut text = String::from("# TYPE http_requests_total counter\n");
    for i in 0..10 {
        text.push_str(&format!(
            "http_requests_total{{code=\"200\",path=\"/x\"}} {} {}\n",
            i * 100,
            base + i * 10_000
        ));
    }
    let (status, body) = t.post(
        "/api/v1/import/prometheus",
        "text/plain",
        &[],
        text.as_bytes(),
    );
    assert_eq!(status, 204, "{body}");
    // Both pushes' metadata is served as Prometheus serves it.
    let meta = t.api("/api/v1/metadata");
    assert_eq!(meta["rw_metric"][0]["type"], "gauge", "{meta}");
    assert_eq!(meta["rw_metric"][0]["help"], "A gauge written remotely.");
    assert_eq!(meta["http_requests_total"][0]["type"], "counter", "{meta}");
    let one = t.api("/api/v1/metadata?metric=rw_metric");
    assert_eq!(one.as_object().unwrap().len(), 1, "{one}");

    // Influx v1 with seconds precision.
    let (status, body) = t.post(
        "/write?precision=s",
        "text/plain",
        &[],
        format!("disk,host=a used=1234i {}\n", base / 1000).as_bytes(),
    );
    assert_eq!(status, 204, "{body}");

    // Every acknowledged sample becomes queryable (each worker applies its own series).
    t.eventually("all 41 samples in the hot index", || {
        (t.metric("tidemark_hot_samples") >= 41.0).then_some(())
    });
    let end = base + 90_000;
    let d = t.eventually("the influx samples", || {
        let d = range(&t, "cpu_load", base, end, 10);
        (d["result"].as_array().unwrap().len() == 1 && values(&d["result"][0]).len() == 10)
            .then_some(d)
    });
    assert_eq!(d["resultType"], "matrix");
    assert_eq!(
        d["result"][0]["metric"],
        serde_json::json!({"__name__": "cpu_load", "host": "a", "region": "eu"})
    );
    let v = values(&d["result"][0]);
    assert_eq!(v[0], (base as f64 / 1000.0, "0".to_string()));
    assert_eq!(v[3].1, "0.3");
    let d = range(&t, "cpu_idle", base, end, 10);
    assert_eq!(values(&d["result"][0])[9].1, "81");

    let d = range(&t, "rw_metric{job=\"node\"}", base, end, 10);
    assert_eq!(
        values(&d["result"][0])
            .iter()
            .map(|p| p.1.clone())
            .collect::<Vec<_>>(),
        (0..10).map(|i| (i * 2).to_string()).collect::<Vec<_>>()
    );

    let d = range(&t, "rate(http_requests_total[1m])", base + 60_000, end, 30);
    let v = values(&d["result"][0]);
    assert_eq!(
        d["result"][0]["metric"],
        serde_json::json!({"code": "200", "path": "/x"})
    );
    for (_, r) in v {
        assert!((r.parse::<f64>().unwrap() - 10.0).abs() < 1e-9, "rate {r}");
    }
    let d = t.api(&format!(
        "/api/v1/query?query={}&time={}",
        enc("disk_used"),
        (base + 1000) as f64 / 1000.0
    ));
    assert_eq!(d["result"][0]["value"][1], "1234");

    // Annotations beside the data, as Prometheus's API returns them: `rate` of a gauge's name
    // notes an info at the selector's position; a counter's name notes none.
    let annotated = |q: &str| {
        let (status, body) = t.get(&format!(
            "/api/v1/query?query={}&time={}",
            enc(q),
            (base + 90_000) as f64 / 1000.0
        ));
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let r = annotated("rate(cpu_idle[5m])");
    assert_eq!(
        r["infos"],
        serde_json::json!([
            "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: \"cpu_idle\" (1:6)"
        ]),
        "{r}"
    );
    assert!(r.get("warnings").is_none(), "{r}");
    let r = annotated("rate(http_requests_total[5m])");
    assert!(
        r.get("infos").is_none() && r.get("warnings").is_none(),
        "{r}"
    );
    let r = annotated("quantile(2, cpu_idle)");
    assert_eq!(
        r["warnings"],
        serde_json::json!([
            "PromQL warning: quantile value should be between 0 and 1, got 2 (1:10)"
        ]),
        "{r}"
    );

    // Editors' endpoints: the query formatted, its syntax tree, exemplars (none stored).
    assert_eq!(
        t.api(&format!(
            "/api/v1/format_query?query={}",
            enc("sum(rate(x[5m]))by(job)")
        )),
        "sum by (job) (rate(x[5m]))"
    );
    let tree = t.api(&format!("/api/v1/parse_query?query={}", enc("rate(x[5m])")));
    assert_eq!(
        (
            &tree["type"],
            &tree["args"][0]["type"],
            &tree["args"][0]["range"]
        ),
        (
            &serde_json::json!("call"),
            &serde_json::json!("matrixSelector"),
            &serde_json::json!(300000)
        ),
        "{tree}"
    );
    assert_eq!(
        t.api(&format!("/api/v1/query_exemplars?query={}", enc("x"))),
        serde_json::json!([])
    );
    let (status, body) = t.get(&format!("/api/v1/parse_query?query={}", enc("rate(x[5m]")));
    assert_eq!(status, 400, "{body}");

    // Metadata endpoints.
    let names = t.api("/api/v1/labels");
    for n in ["__name__", "code", "host", "job", "path", "region"] {
        assert!(
            names.as_array().unwrap().iter().any(|x| x == n),
            "{n} in {names}"
        );
    }
    let vals = t.api("/api/v1/label/__name__/values");
    assert!(
        vals.as_array().unwrap().iter().any(|x| x == "rw_metric"),
        "{vals}"
    );
    let series = t.api(&format!("/api/v1/series?match[]={}", enc("{host=\"a\"}")));
    assert_eq!(series.as_array().unwrap().len(), 3, "{series}");
    assert_eq!(
        t.api("/api/v1/status/buildinfo")["version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(t.metric("tidemark_samples_ingested_total"), 41.0);
    assert_eq!(t.metric("tidemark_hot_series"), 5.0);
    assert!(t.metric("tidemark_hot_bytes") > 0.0);
    // Memory by component: the walked parts hold the 5 series once applied (the walk is
    // reused for up to 5 s, so a scrape from before the samples landed may be shown first);
    // `other` is the rest of RSS.
    let mem = |c: &str| t.metric(&format!("tidemark_memory_bytes{{component=\"{c}\"}}"));
    let parts = [
        "catalog_labels",
        "catalog_postings",
        "hot_series_table",
        "hot_samples",
        "other",
    ];
    t.eventually("memory by component", || {
        parts.iter().all(|c| mem(c) > 0.0).then_some(())
    });

    // Query errors use Prometheus's shape.
    let (status, body) = t.get(&format!("/api/v1/query?query={}", enc("sum(")));
    assert_eq!(status, 400);
    let e: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (e["status"].as_str(), e["errorType"].as_str()),
        (Some("error"), Some("bad_data"))
    );
}

/// Each `[query]` limit answers Prometheus's error JSON naming its `tidemark.toml` key, and a
/// query within them still answers.
#[test]
fn query_limits_answer_prometheus_errors_naming_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tidemark::start(
        dir.path(),
        "[rules]\nenabled = false\n[query]\nmax_samples = 30\nmax_series = 2\n",
        1,
    );
    let base = (now_ms() / 60_000 - 30) * 60_000;
    let mut lines = String::new();
    for host in ["a", "b", "c"] {
        for i in 0..10 {
            lines.push_str(&format!("cpu,host={host} load={i} {}\n", base + i * 10_000));
        }
    }
    let (status, body) = t.post(
        "/api/v2/write?precision=ms",
        "text/plain",
        &[],
        lines.as_bytes(),
    );
    assert_eq!(status, 204, "{body}");
    t.eventually("30 samples in the hot index", || {
        (t.metric("tidemark_hot_samples") >= 30.0).then_some(())
    });
    let at = (base + 90_000) as f64 / 1000.0;
    let ask = |q: &str, extra: &str| {
        let (status, body) = t.get(&format!("/api/v1/query?query={}&time={at}{extra}", enc(q)));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        (status, v)
    };
    // Within the limits: 2 series, 2 samples loaded (an instant selector at one time reads
    // each series' newest sample, as Prometheus counts it).
    let (status, v) = ask(r#"cpu_load{host=~"a|b"}"#, "");
    assert_eq!(
        (status, v["data"]["result"].as_array().map(Vec::len)),
        (200, Some(2)),
        "{v}"
    );
    // `stats=all`: the samples loaded (2, as above) and the timings, inside `data`.
    let (status, v) = ask(r#"cpu_load{host=~"a|b"}"#, "&stats=all");
    assert_eq!(status, 200, "{v}");
    let stats = &v["data"]["stats"];
    assert_eq!(stats["samples"]["totalQueryableSamples"], 2, "{v}");
    assert!(
        stats["timings"]["execTotalTime"].as_f64().unwrap() >= 0.0,
        "{v}"
    );
    assert_eq!(v["data"]["result"].as_array().map(Vec::len), Some(2));
    // 20 samples loaded: 2 series x 10 in the range.
    let (status, v) = ask(
        r#"count_over_time(cpu_load{host=~"a|b"}[5m])"#,
        "&stats=all",
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["data"]["stats"]["samples"]["totalQueryableSamples"], 20,
        "{v}"
    );
    // A syntax error: Prometheus's 400 with where it is.
    let (status, v) = ask("sum(cpu_load", "");
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        v["error"],
        "invalid parameter \"query\": 1:13: parse error: unclosed left parenthesis"
    );
    // Without the parameter, no stats.
    let (_, v) = ask(r#"cpu_load{host=~"a|b"}"#, "");
    assert!(v["data"].get("stats").is_none(), "{v}");
    // 3 series returned.
    let (status, v) = ask("cpu_load", "");
    assert_eq!(
        (status, v["errorType"].as_str()),
        (422, Some("execution")),
        "{v}"
    );
    assert!(
        v["error"].as_str().unwrap().contains("[query] max_series"),
        "{v}"
    );
    // 57 samples loaded (3 series x 10 samples in the range, and x 9 a second earlier).
    let (status, v) = ask(
        "sum(count_over_time(cpu_load[5m])) + sum(count_over_time(cpu_load[5m] offset 1s))",
        "",
    );
    assert_eq!(
        (status, v["errorType"].as_str()),
        (422, Some("execution")),
        "{v}"
    );
    assert!(
        v["error"].as_str().unwrap().contains("[query] max_samples"),
        "{v}"
    );
    // A deadline already passed: the request's timeout parameter is named.
    let (status, v) = ask(r#"cpu_load{host="a"}"#, "&timeout=0.000001");
    assert_eq!(
        (status, v["errorType"].as_str()),
        (503, Some("timeout")),
        "{v}"
    );
    assert!(
        v["error"].as_str().unwrap().contains("timeout parameter"),
        "{v}"
    );
    let (status, v) = ask(r#"cpu_load{host="a"}"#, "&timeout=1h");
    assert_eq!(status, 200, "{v}");
}

#[test]
fn bad_input_is_reported_by_line_and_valid_lines_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        "[ingest]\nmax_body_bytes = 4096\nmax_labels_per_series = 4\nmax_series_per_metric = 3\n";
    let t = Tidemark::start(dir.path(), cfg, 1);
    let ts = now_ms();
    let body = format!(
        "ok,h=a value=1 {ts}\nbroken line\nok,h=b value=oops {ts}\nwide,a=1,b=2,c=3,d=4 value=1 {ts}\nok,h=c value=3 {ts}\ns,h=a msg=\"text\" {ts}\n"
    );
    let (status, msg) = t.post(
        "/api/v2/write?precision=ms",
        "text/plain",
        &[],
        body.as_bytes(),
    );
    assert_eq!(status, 400, "{msg}");
    for needle in [
        "line 2:",
        "line 3:",
        "line 4:",
        "max_labels_per_series",
        "line 6:",
        "string field",
    ] {
        assert!(msg.contains(needle), "{needle:?} missing from {msg}");
    }
    let q = t.eventually("the valid lines", || {
        let d = t.api(&format!("/api/v1/query?query={}", enc("ok")));
        (d["result"].as_array().unwrap().len() == 2).then_some(d)
    });
    assert_eq!(q["result"].as_array().unwrap().len(), 2);

    // The per-metric series limit names the key to raise.
    let body = format!(
        "lim,h=1 value=1 {ts}\nlim,h=2 value=1 {ts}\nlim,h=3 value=1 {ts}\nlim,h=4 value=1 {ts}\n"
    );
    let (status, msg) = t.post("/write?precision=ms", "text/plain", &[], body.as_bytes());
    assert_eq!(status, 400);
    assert!(
        msg.contains("line 4") && msg.contains("max_series_per_metric"),
        "{msg}"
    );

    // Invalid metric names in the text format.
    let (status, msg) = t.post(
        "/api/v1/import/prometheus",
        "text/plain",
        &[],
        b"1bad 3\ngood 4\n",
    );
    assert_eq!(status, 400);
    assert!(
        msg.contains("line 1") && msg.contains("invalid metric name"),
        "{msg}"
    );

    // Oversized bodies get 413, raw or after gzip.
    let big = vec![b'x'; 10_000];
    let (status, msg) = t.post("/write", "text/plain", &[], &big);
    assert_eq!(status, 413, "{msg}");
    assert!(msg.contains("max_body_bytes"), "{msg}");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b'#'; 100_000]).unwrap();
    let (status, msg) = t.post(
        "/write",
        "text/plain",
        &[("Content-Encoding", "gzip")],
        &gz.finish().unwrap(),
    );
    assert_eq!(status, 413, "{msg}");

    // Garbage remote write and gzip are 400s, not crashes.
    let (status, _) = t.post(
        "/api/v1/write",
        "application/x-protobuf",
        &[],
        b"\xff\x00garbage",
    );
    assert_eq!(status, 400);
    let (status, _) = t.post(
        "/write",
        "text/plain",
        &[("Content-Encoding", "gzip")],
        b"not gzip",
    );
    assert_eq!(status, 400);
    let (status, _) = t.post(
        "/write?precision=fortnights",
        "text/plain",
        &[],
        b"a value=1",
    );
    assert_eq!(status, 400);

    // Samples older than the hot retention window (26 h before the newest) are rejected.
    let old = ts - 27 * 3_600_000;
    let (status, msg) = t.post(
        "/write?precision=ms",
        "text/plain",
        &[],
        format!("old value=1 {old}\n").as_bytes(),
    );
    assert_eq!(status, 400);
    assert!(
        msg.contains("older than the hot retention window") && msg.contains("[hot] retention"),
        "{msg}"
    );
    assert!(t.metric("tidemark_samples_rejected_total{reason=\"too_old\"}") >= 1.0);
    assert!(t.metric("tidemark_samples_rejected_total{reason=\"parse\"}") >= 3.0);
    // Still serving.
    assert_eq!(t.get("/-/healthy").0, 200);
}

#[test]
fn sigkill_after_acknowledged_writes_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Tidemark::start(dir.path(), "", 2);
    let base = (now_ms() / 1000 - 3600) * 1000;
    let mut expected = 0;
    for batch in 0..20 {
        let mut body = String::new();
        for s in 0..50 {
            body.push_str(&format!(
                "kill_test,series=s{s} value={batch} {}\n",
                base + batch * 10_000
            ));
            expected += 1;
        }
        let (status, msg) = t.post("/write?precision=ms", "text/plain", &[], body.as_bytes());
        assert_eq!(status, 204, "{msg}");
    }
    // Acknowledged: kill without warning, then restart on the same data dir.
    t.kill();
    t.spawn();
    let d = t.api(&format!(
        "/api/v1/query?query={}&time={}",
        enc("sum(count_over_time(kill_test[1h]))"),
        (base + 200_000) as f64 / 1000.0
    ));
    assert_eq!(d["result"][0]["value"][1], expected.to_string());
    // And a graceful stop exits 0 and keeps everything too.
    assert!(t.terminate().success());
    t.spawn();
    let d = t.api(&format!(
        "/api/v1/query?query={}&time={}",
        enc("count(kill_test)"),
        (base + 200_000) as f64 / 1000.0
    ));
    assert_eq!(d["result"][0]["value"][1], "50");
}

#[test]
fn garbage_requests_never_take_the_server_down() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tidemark::start(dir.path(), "[ingest]\nmax_body_bytes = 65536\n", 1);
    let mut rng = support::Rng(0xfeed_beef);
    let alphabet: &[u8] = b"ab_,= \"\\\n{}0123456789.eE+-iutf#:\x00\xff\xc3";
    let paths = [
        "/write",
        "/api/v2/write?precision=ms",
        "/api/v1/write",
        "/api/v1/import/prometheus",
    ];
    for round in 0..200 {
        let len = rng.below(400) as usize;
        let body: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
            .collect();
        let encoding = ["", "gzip", "snappy"][round % 3];
        let headers: Vec<(&str, &str)> = if encoding.is_empty() {
            vec![]
        } else {
            vec![("Content-Encoding", encoding)]
        };
        let (status, msg) = t.post(paths[round % paths.len()], "text/plain", &headers, &body);
        assert!(status < 500, "{status} for {body:?}: {msg}");
        // And queries made of the same bytes.
        let q = String::from_utf8_lossy(&body).into_owned();
        for path in [
            "/api/v1/query?query=",
            "/api/v1/series?match[]=",
            "/api/v1/query_range?step=60&start=0&end=86400&query=",
        ] {
            let (status, msg) = t.get(&format!("{path}{}", enc(&q)));
            assert!(status < 500, "{status} for {path}{q:?}: {msg}");
        }
    }
    assert_eq!(t.get("/-/healthy").0, 200);
    assert_eq!(t.get("/-/ready").0, 200);
}

#[test]
fn a_query_waiting_for_a_slot_past_its_timeout_names_max_concurrency() {
    // One slot; every query holds its slot 8 s (the test hook), so the first keeps it while
    // the second waits, and the second's 0.5 s timeout runs out in the wait.
    let dir = tempfile::tempdir().unwrap();
    let t = Tidemark::start_with_env(
        dir.path(),
        "[rules]\nenabled = false\n[query]\nmax_concurrency = 1\n",
        1,
        vec![("TIDEMARK_TEST_QUERY_PAUSE_MS".into(), "8000".into())],
    );
    let url = t.url.clone();
    let first = std::thread::spawn(move || {
        support::agent()
            .get(&format!("{url}/api/v1/query?query=vector(1)"))
            .call()
            .map(|r| r.status().as_u16())
    });
    t.eventually("the first query holding the only slot", || {
        (t.metric("tidemark_queries_running") == 1.0).then_some(())
    });
    let (status, body) = t.get("/api/v1/query?query=vector(2)&timeout=500ms");
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["errorType"], "timeout", "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("[query] max_concurrency"),
        "{v}"
    );
    assert_eq!(first.join().unwrap().ok(), Some(200));
}

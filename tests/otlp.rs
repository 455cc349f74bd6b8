//! OTLP/HTTP metrics from the real OpenTelemetry Python SDK (PyPI `opentelemetry-sdk` and
//! `opentelemetry-exporter-otlp-proto-http`, in `.venv-test/`) into `tidemark up`, queryable
//! under the names Prometheus 3 gives them; OTLP/JSON with a refused metric (partial success
//! naming it, the rest kept); a malformed body (400 naming the problem).

mod support;

use std::process::Command;

use serde_json::Value;
use support::duckdb::python;
use support::{enc, Tidemark};

const SDK_SCRIPT: &str = r#"
import sys
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

exporter = OTLPMetricExporter(endpoint=sys.argv[1])
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60000)
provider = MeterProvider(
    resource=Resource.create({
        "service.name": "checkout",
        "service.instance.id": "i-1",
        "deployment.environment": "test",
    }),
    metric_readers=[reader],
)
meter = provider.get_meter("shop", "1.2.3")
orders = meter.create_counter("orders", unit="{order}", description="Orders placed.")
latency = meter.create_histogram("http.server.request.duration", unit="s", description="Request latency.")
depth = meter.create_up_down_counter("queue.depth", description="Jobs waiting.")
util = meter.create_gauge("cpu.utilization", unit="1")
for i in range(10):
    orders.add(1, {"region": "eu"})
    latency.record(0.004 * (i + 1), {"http.route": "/buy"})
depth.add(7)
depth.add(-2)
util.set(0.25)
ok = provider.force_flush(10000)
provider.shutdown()
print("flushed" if ok else "flush failed")
"#;

fn instant(tm: &Tidemark, q: &str) -> Vec<Value> {
    tm.api(&format!("/api/v1/query?query={}", enc(q)))["result"]
        .as_array()
        .unwrap()
        .clone()
}

fn value(v: &Value) -> f64 {
    v["value"][1].as_str().unwrap().parse().unwrap()
}

#[test]
fn the_opentelemetry_sdk_pushes_metrics_named_as_prometheus_3_names_them() {
    let d = tempfile::tempdir().unwrap();
    let tm = Tidemark::start(d.path(), "[rules]\nenabled = false\n", 1);
    let out = Command::new(python())
        .args(["-c", SDK_SCRIPT])
        .arg(format!("{}/api/v1/otlp/v1/metrics", tm.url))
        .output()
        .expect("run the OpenTelemetry SDK (bash .ci/test installs it into .venv-test/)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("flushed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = "job=\"checkout\",instance=\"i-1\"";
    let r = tm.eventually("the SDK's counter is queryable", || {
        let r = instant(&tm, &format!("orders_total{{{id},region=\"eu\"}}"));
        (r.len() == 1).then_some(r)
    });
    assert_eq!(value(&r[0]), 10.0);
    // The histogram: cumulative buckets, +Inf = count, sum.
    let inf = instant(
        &tm,
        &format!(
            "http_server_request_duration_seconds_bucket{{{id},le=\"+Inf\",http_route=\"/buy\"}}"
        ),
    );
    assert_eq!(value(&inf[0]), 10.0, "{inf:?}");
    let count = instant(
        &tm,
        &format!("http_server_request_duration_seconds_count{{{id}}}"),
    );
    assert_eq!(value(&count[0]), 10.0);
    let sum = instant(
        &tm,
        &format!("http_server_request_duration_seconds_sum{{{id}}}"),
    );
    assert!((value(&sum[0]) - 0.22).abs() < 1e-9, "{sum:?}");
    let q = instant(
        &tm,
        &format!("histogram_quantile(0.5, sum by (le) (http_server_request_duration_seconds_bucket{{{id}}}))"),
    );
    // The SDK's default bucket bounds are 0, 5, 10, 25, ...: every value is in (0, 5].
    assert!(value(&q[0]) > 0.0 && value(&q[0]) <= 5.0, "{q:?}");
    // An up-down counter is a gauge (no _total); a gauge of unit 1 is a _ratio.
    assert_eq!(
        value(&instant(&tm, &format!("queue_depth{{{id}}}"))[0]),
        5.0
    );
    assert_eq!(
        value(&instant(&tm, &format!("cpu_utilization_ratio{{{id}}}"))[0]),
        0.25
    );
    // The resource's other attributes are on target_info.
    let ti = instant(&tm, &format!("target_info{{{id}}}"));
    assert_eq!(ti.len(), 1, "{ti:?}");
    assert_eq!(ti[0]["metric"]["deployment_environment"], "test");
    assert_eq!(ti[0]["metric"]["telemetry_sdk_language"], "python");
    // Description and type are metadata.
    let meta = tm.api("/api/v1/metadata?metric=orders_total");
    assert_eq!(meta["orders_total"][0]["type"], "counter", "{meta}");
    assert_eq!(meta["orders_total"][0]["help"], "Orders placed.");
}

#[test]
fn otlp_json_keeps_the_good_metrics_and_names_the_refused_one() {
    let d = tempfile::tempdir().unwrap();
    let tm = Tidemark::start(d.path(), "[rules]\nenabled = false\n", 1);
    let now_ns = support::now_ms() as u128 * 1_000_000;
    let body = format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"batch"}}}}]}},
        "scopeMetrics":[{{"metrics":[
          {{"name":"jobs.done","sum":{{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{{"timeUnixNano":"{now_ns}","asInt":"3"}}]}}}},
          {{"name":"jobs.delta","sum":{{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{{"timeUnixNano":"{now_ns}","asInt":"1"}},{{"timeUnixNano":"{now_ns}","asInt":"2"}}]}}}}
        ]}}]}}]}}"#
    );
    let (status, resp) = tm.post(
        "/api/v1/otlp/v1/metrics",
        "application/json",
        &[],
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{resp}");
    let v: Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(v["partialSuccess"]["rejectedDataPoints"], "2", "{v}");
    let msg = v["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(
        msg.contains("metric 2: metric \"jobs.delta\": delta temporality"),
        "{msg}"
    );
    let r = tm.eventually("the good metric is kept", || {
        let r = instant(&tm, "jobs_done_total{job=\"batch\"}");
        (r.len() == 1).then_some(r)
    });
    assert_eq!(value(&r[0]), 3.0);
    // Malformed bodies: 400 with what is wrong; a wrong content type: 415.
    let (status, resp) = tm.post(
        "/api/v1/otlp/v1/metrics",
        "application/x-protobuf",
        &[],
        b"\xff\xff\xff\xff",
    );
    assert_eq!(status, 400, "{resp}");
    assert!(resp.contains("ExportMetricsServiceRequest"), "{resp}");
    let (status, resp) = tm.post(
        "/api/v1/otlp/v1/metrics",
        "application/json",
        &[],
        br#"{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "x", "gauge": {"dataPoints": [{"asDouble": "many"}]}}]}]}]}"#,
    );
    assert_eq!(status, 400, "{resp}");
    assert!(
        resp.contains(
            "resourceMetrics[0].scopeMetrics[0].metrics[0]: asDouble: \"many\" is not a number"
        ),
        "{resp}"
    );
    let (status, _) = tm.post("/api/v1/otlp/v1/metrics", "text/plain", &[], b"x");
    assert_eq!(status, 415);
}

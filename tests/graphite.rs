//! Graphite plaintext over TCP into `tidemark up`: a real Graphite client (PyPI `graphyte`, in
//! `.venv-test/`) sends through templates and Graphite 1.1 tags; malformed lines among good
//! ones are rejected by line number (logged and counted) and the good ones kept.

mod support;

use std::io::Write;
use std::process::Command;

use serde_json::Value;
use support::duckdb::python;
use support::{enc, free_port, Tidemark};

fn instant(tm: &Tidemark, q: &str) -> Vec<Value> {
    tm.api(&format!("/api/v1/query?query={}", enc(q)))["result"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn graphite_lines_become_series_through_templates() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let tm = Tidemark::start(
        d.path(),
        &format!(
            "[rules]\nenabled = false\n[ingest]\ngraphite_listen = \"127.0.0.1:{port}\"\ngraphite_templates = [\"servers.* .host.measurement.field dc=eu\", \"stats.* .measurement*\"]\n"
        ),
        1,
    );
    let now = support::now_ms() / 1000;
    let script = format!(
        r#"
import graphyte
s = graphyte.Sender("127.0.0.1", port={port}, timeout=5)
s.send("servers.web01.cpu.idle", 93.5, timestamp={now})
s.send("servers.web02.cpu.idle", 41, timestamp={now})
s.send("stats.gauges.queue-depth", 7, timestamp={now})
s.send("app.requests", 12, timestamp={now}, tags={{"env": "prod"}})
print("sent")
"#
    );
    let out = Command::new(python())
        .args(["-c", &script])
        .output()
        .expect("run graphyte (bash .ci/test installs it into .venv-test/)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = tm.eventually("graphyte's lines are queryable", || {
        let r = instant(&tm, "cpu_idle{dc=\"eu\"}");
        (r.len() == 2).then_some(r)
    });
    let web01 = r.iter().find(|s| s["metric"]["host"] == "web01").unwrap();
    assert_eq!(web01["value"][1], "93.5");
    assert_eq!(instant(&tm, "gauges_queue_depth")[0]["value"][1], "7");
    assert_eq!(
        instant(&tm, "app_requests{env=\"prod\"}")[0]["value"][1],
        "12"
    );
    // Malformed lines among good ones, on a raw connection: the good ones are kept, the bad
    // ones logged by line and counted.
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        c,
        "raw.good 1 {now}\nraw.bad value {now}\nraw.worse\nraw.also_good 2 {now}\n"
    )
    .unwrap();
    drop(c);
    tm.eventually("the good raw lines are stored", || {
        let a = instant(&tm, "raw_good");
        let b = instant(&tm, "raw_also_good");
        (a.len() == 1 && b.len() == 1).then_some(())
    });
    let log = tm.eventually("the bad lines are logged", || {
        let l = tm.log_text();
        l.contains("graphite: 2 lines rejected").then_some(l)
    });
    assert!(
        log.contains("line 2: value \\\"value\\\" is not a number")
            || log.contains("line 2: value \"value\" is not a number"),
        "{log}"
    );
    assert!(log.contains("line 3: missing value"), "{log}");
    assert!(tm.metric("tidemark_samples_rejected_total{reason=\"parse\"}") >= 2.0);
}

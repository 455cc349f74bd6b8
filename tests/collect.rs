//! Scraping with the real binary: Debian's node_exporter as a real target, Tidemark's own
//! `/metrics`, and targets served by this test (healthy, failing, garbage) found through a
//! file SD file that the test edits.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::targets::NodeExporter;
use support::Tidemark;

/// A tiny HTTP server answering every request with `status` and `body`.
struct Served {
    addr: String,
    stop: Arc<AtomicBool>,
}

impl Served {
    fn start(status: u16, body: &'static str) -> Served {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !s.load(Ordering::Acquire) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        let mut r = BufReader::new(c.try_clone().unwrap());
                        let mut line = String::new();
                        while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                            line.clear();
                        }
                        let _ = write!(
                            c,
                            "HTTP/1.1 {status} X\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Served { addr, stop }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn instant(tm: &Tidemark, q: &str) -> Vec<Value> {
    tm.api(&format!("/api/v1/query?query={}", support::enc(q)))["result"]
        .as_array()
        .unwrap()
        .clone()
}

fn value(v: &Value) -> f64 {
    v["value"][1].as_str().unwrap().parse().unwrap()
}

fn start(dir: &Path, scrape_yml: &str) -> Tidemark {
    let path = dir.join("scrape.yml");
    std::fs::write(&path, scrape_yml).unwrap();
    Tidemark::start(
        dir,
        &format!(
            "[scrape]\nconfig = {:?}\nself_interval = \"1s\"\n[rules]\nenabled = false\n",
            path.display().to_string()
        ),
        1,
    )
}

#[test]
fn scrapes_node_exporter_and_its_own_metrics() {
    let d = tempfile::tempdir().unwrap();
    let ne = NodeExporter::start();
    let tm = start(
        d.path(),
        &format!(
            "scrape_configs:\n  - job_name: node\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['{}']\n        labels: {{env: test}}\n",
            ne.addr
        ),
    );
    let cpu = tm.eventually("node_exporter's CPU seconds are stored", || {
        let r = instant(&tm, "sum by (instance, job, env) (node_cpu_seconds_total)");
        (r.len() == 1).then(|| r[0].clone())
    });
    assert_eq!(cpu["metric"]["instance"], ne.addr.as_str());
    assert_eq!(cpu["metric"]["env"], "test");
    assert!(value(&cpu) > 0.0);
    let up = instant(&tm, "up{job=\"node\"}");
    assert_eq!(value(&up[0]), 1.0);
    let n = instant(&tm, "scrape_samples_scraped{job=\"node\"}");
    assert!(value(&n[0]) > 100.0, "{n:?}");
    // Its own /metrics, as job tidemark.
    tm.eventually("Tidemark scrapes itself", || {
        let r = instant(&tm, "tidemark_samples_ingested_total{job=\"tidemark\"}");
        (r.len() == 1 && value(&r[0]) > 0.0).then_some(())
    });
    let t = tm.api("/api/v1/targets");
    let active = t["activeTargets"].as_array().unwrap();
    assert_eq!(active.len(), 2, "{t}");
    let node = active.iter().find(|a| a["scrapePool"] == "node").unwrap();
    assert_eq!(node["health"], "up", "{node}");
    assert_eq!(node["scrapeUrl"], format!("http://{}/metrics", ne.addr));
    assert_eq!(node["labels"]["env"], "test");
    assert_eq!(node["discoveredLabels"]["__address__"], ne.addr.as_str());
    assert_eq!(node["scrapeInterval"], "1s");
    // TYPE/HELP of the scrapes: per target, and for /api/v1/metadata.
    let tm_meta = tm.api(&format!(
        "/api/v1/targets/metadata?match_target={}&metric=node_cpu_seconds_total",
        support::enc("{job=\"node\"}")
    ));
    let entries = tm_meta.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{tm_meta}");
    assert_eq!(entries[0]["target"]["instance"], ne.addr.as_str());
    assert_eq!(entries[0]["type"], "counter");
    assert_eq!(entries[0]["help"], "Seconds the CPUs spent in each mode.");
    let none = tm.api(&format!(
        "/api/v1/targets/metadata?match_target={}",
        support::enc("{job=\"nope\"}")
    ));
    assert_eq!(none, serde_json::json!([]));
    let (status, body) = tm.get("/api/v1/targets/metadata?match_target=%7Bjob%3D");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("match_target"), "{body}");
    let meta = tm.api("/api/v1/metadata?metric=node_load1");
    assert_eq!(meta["node_load1"][0]["type"], "gauge", "{meta}");
    assert_eq!(meta["node_load1"][0]["help"], "1m load average.");
    // Tidemark's own families too.
    let meta = tm.api("/api/v1/metadata?metric=tidemark_samples_ingested_total");
    assert!(
        meta["tidemark_samples_ingested_total"][0]["type"].is_string(),
        "{meta}"
    );
}

#[test]
fn file_sd_targets_come_and_go_and_failures_show_in_targets() {
    let d = tempfile::tempdir().unwrap();
    let good = Served::start(
        200,
        "# TYPE app_requests counter\napp_requests_total{path=\"/\"} 7\n",
    );
    let failing = Served::start(500, "boom");
    let garbage = Served::start(200, "app_requests_total{path=\"/\" 7\n");
    // Accepts connections and never answers: the scrape times out.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let sd = d.path().join("targets.json");
    std::fs::write(&sd, "[]").unwrap();
    let tm = start(
        d.path(),
        &format!(
            "scrape_configs:\n  - job_name: app\n    scrape_interval: 1s\n    file_sd_configs:\n      - files: ['{}']\n",
            d.path().join("*.json").display()
        ),
    );
    std::fs::write(
        &sd,
        format!(
            "[{{\"targets\": [\"{}\", \"{}\", \"{}\", \"{}\"], \"labels\": {{\"team\": \"a\"}}}}]",
            good.addr, failing.addr, garbage.addr, silent_addr
        ),
    )
    .unwrap();
    tm.eventually("the file's targets are scraped", || {
        let r = instant(&tm, "app_requests_total{team=\"a\"}");
        (r.len() == 1 && value(&r[0]) == 7.0).then_some(())
    });
    let targets = tm.eventually("the failing targets are down with their errors", || {
        let t = tm.api("/api/v1/targets?state=active");
        let a = t["activeTargets"].as_array()?.clone();
        let app: Vec<Value> = a.into_iter().filter(|x| x["scrapePool"] == "app").collect();
        (app.len() == 4 && app.iter().all(|x| x["health"] != "unknown")).then_some(app)
    });
    let by = |addr: &str| {
        targets
            .iter()
            .find(|t| t["labels"]["instance"] == addr)
            .unwrap()
            .clone()
    };
    assert_eq!(by(&good.addr)["health"], "up");
    assert_eq!(by(&failing.addr)["health"], "down");
    assert!(
        by(&failing.addr)["lastError"]
            .as_str()
            .unwrap()
            .contains("server returned HTTP status 500"),
        "{}",
        by(&failing.addr)
    );
    assert!(
        by(&garbage.addr)["lastError"]
            .as_str()
            .unwrap()
            .starts_with("line 1: "),
        "{}",
        by(&garbage.addr)
    );
    assert_eq!(by(&silent_addr)["health"], "down");
    assert_eq!(
        by(&silent_addr)["lastError"],
        "context deadline exceeded",
        "{}",
        by(&silent_addr)
    );
    let up = instant(&tm, "sum(up{job=\"app\"})");
    assert_eq!(value(&up[0]), 1.0);

    // The file loses the good target: its series get staleness markers and vanish from
    // instant queries at once (not after the 5 minute lookback); the target leaves the API.
    std::fs::write(&sd, format!("[{{\"targets\": [\"{}\"]}}]", failing.addr)).unwrap();
    tm.eventually("the removed target's series are stale", || {
        let r = instant(&tm, "app_requests_total");
        let up = instant(&tm, &format!("up{{instance=\"{}\"}}", good.addr));
        (r.is_empty() && up.is_empty()).then_some(())
    });
    let t = tm.api("/api/v1/targets");
    let app = t["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["scrapePool"] == "app")
        .count();
    assert_eq!(app, 1, "{t}");
}

#[test]
fn a_bad_scrape_file_stops_the_start_with_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("scrape.yml");
    std::fs::write(
        &path,
        "scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - source_labels: [x]\n        regex: '(['\n        target_label: y\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("tidemark.toml"),
        format!("[scrape]\nconfig = {:?}\n", path.display().to_string()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["up", "--listen", "127.0.0.1:0", "--config"])
        .arg(d.path().join("tidemark.toml"))
        .arg("--data-dir")
        .arg(d.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("scrape.yml:2: job \"a\": relabel_configs[0]: invalid regex"),
        "{err}"
    );
}

/// A collector keeps a connection per target, so a process raises its open-file limit from
/// the soft value most systems start it with (1,024) to the hard one, as Prometheus (Go's
/// runtime) does: started with a soft limit of 256, `tidemark agent` runs with the hard one.
#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -Sn 256 && exec {:?} agent --listen 127.0.0.1:0 --push-to http://127.0.0.1:9/api/v1/write --interval 60s --buffer-dir {:?}",
            env!("CARGO_BIN_EXE_tidemark"),
            dir.path().join("buf")
        ))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let limits = |pid: u32| -> Option<(u64, u64)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
        let line = text.lines().find(|l| l.starts_with("Max open files"))?;
        let f: Vec<&str> = line.split_whitespace().collect();
        Some((f[3].parse().ok()?, f[4].parse().ok()?))
    };
    // The limit is raised at the start of `main`: wait until the process is running it.
    let mut got = None;
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(25));
        let exe = std::fs::read_link(format!("/proc/{}/exe", child.id())).ok();
        if exe.is_some_and(|e| e.ends_with("tidemark")) {
            got = limits(child.id()).filter(|(soft, _)| *soft != 256);
            if got.is_some() {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let (soft, hard) = got.expect("the soft limit stayed at 256");
    assert_eq!(soft, hard, "soft {soft}, hard {hard}");
}

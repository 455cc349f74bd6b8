//! `tidemark agent` with real components: Debian's node_exporter on the same machine (the
//! agent's figures must agree with its), a real `tidemark up` receiving the pushes, and an HTTP
//! receiver that goes away for 30 s (the backlog is buffered, spilled to disk past its memory
//! bound, and delivered in order with nothing lost).

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::receivers::HttpReceiver;
use support::targets::NodeExporter;
use support::{agent, free_port, Tidemark};
use tidemark::ingest::{promtext, BatchBuilder};
use tidemark::model::Limits;

/// A running `tidemark agent`.
struct Agent {
    child: Child,
    url: String,
}

impl Agent {
    fn start(dir: &std::path::Path, push_to: &str, extra: &[&str]) -> Agent {
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
                .args(["agent", "--push-to", push_to, "--interval", "1s"])
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .arg("--buffer-dir")
                .arg(dir.join("buffer"))
                .args(["--instance", "agent-host"])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
                .spawn()
                .unwrap();
            let url = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if agent()
                    .get(format!("{url}/-/ready"))
                    .call()
                    .is_ok_and(|r| r.status() == 200)
                {
                    return Agent { child, url };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "the agent did not start: {}",
            std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
        );
    }

    fn metrics(&self) -> BTreeMap<String, f64> {
        scrape(&format!("{}/metrics", self.url))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An exposition page as canonical series text -> value (parsed by Tidemark's own text
/// parser, so label order does not matter).
fn scrape(url: &str) -> BTreeMap<String, f64> {
    let body = agent()
        .get(url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_vec()
        .unwrap();
    let limits = Limits::default();
    let mut b = BatchBuilder::new(&limits);
    promtext::parse(&body, 0, &mut b);
    let (batch, errs, _) = b.finish();
    assert!(errs.is_empty(), "{url}: {errs:?}");
    batch
        .samples
        .iter()
        .map(|s| {
            let k = batch.labels(s.series as usize).to_string();
            (
                k.strip_suffix("{}").map(str::to_string).unwrap_or(k),
                s.value,
            )
        })
        .collect()
}

fn only(m: &BTreeMap<String, f64>, prefix: &str) -> BTreeMap<String, f64> {
    m.iter()
        .filter(|(k, _)| *k == prefix || k.strip_prefix(prefix).is_some_and(|r| r.starts_with('{')))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

#[test]
fn the_agents_figures_agree_with_node_exporter_and_reach_tidemark() {
    let d = tempfile::tempdir().unwrap();
    let tm = Tidemark::start(d.path(), "[rules]\nenabled = false\n", 1);
    let ne = NodeExporter::start();
    let ne_addr = ne.addr.clone();
    let ag = Agent::start(
        d.path(),
        &format!("{}/api/v1/write", tm.url),
        &["--label", "pool=p1"],
    );
    // The same machine, read at (nearly) the same moment.
    std::thread::sleep(Duration::from_millis(1500));
    let a = ag.metrics();
    let n = scrape(&format!("http://{ne_addr}/metrics"));
    drop(ne);
    // Memory: MemTotal is fixed; the others move a little between the two reads.
    let total = "node_memory_MemTotal_bytes";
    assert_eq!(a[total], n[total]);
    let avail = "node_memory_MemAvailable_bytes";
    assert!(
        (a[avail] - n[avail]).abs() <= 0.05 * n[total],
        "MemAvailable {} vs {}",
        a[avail],
        n[avail]
    );
    // Every /proc/meminfo field node_exporter reports, the agent reports under its name.
    let mem_ne: Vec<&String> = n.keys().filter(|k| k.starts_with("node_memory_")).collect();
    for k in &mem_ne {
        assert!(
            a.contains_key(*k),
            "node_exporter has {k}, the agent does not"
        );
    }
    // CPU: the same series (cpu x mode), and the same seconds within 1 % (the two reads are
    // moments apart).
    let (ca, cn) = (
        only(&a, "node_cpu_seconds_total"),
        only(&n, "node_cpu_seconds_total"),
    );
    assert_eq!(ca.keys().collect::<Vec<_>>(), cn.keys().collect::<Vec<_>>());
    let (sa, sn): (f64, f64) = (ca.values().sum(), cn.values().sum());
    assert!((sa - sn).abs() <= 0.01 * sn, "CPU seconds {sa} vs {sn}");
    // Load, processes, filesystems, network, disks: the series node_exporter has.
    for name in [
        "node_load1",
        "node_filesystem_size_bytes",
        "node_filesystem_avail_bytes",
        "node_network_receive_bytes_total",
        "node_disk_reads_completed_total",
        "node_boot_time_seconds",
        "node_procs_running",
        "node_context_switches_total",
    ] {
        let (fa, fn_) = (only(&a, name), only(&n, name));
        assert_eq!(
            fa.keys().collect::<Vec<_>>(),
            fn_.keys().collect::<Vec<_>>(),
            "{name}: the agent's series differ from node_exporter's"
        );
    }
    for (k, v) in only(&n, "node_filesystem_size_bytes") {
        assert_eq!(a[&k], v, "{k}");
    }
    assert!((a["node_load1"] - n["node_load1"]).abs() < 1.0);
    assert_eq!(
        a["node_boot_time_seconds"].round(),
        n["node_boot_time_seconds"].round()
    );
    println!(
        "agent vs node_exporter: MemAvailable {:.0} vs {:.0} bytes, CPU seconds {sa:.2} vs {sn:.2}, {} CPU series, {} memory fields",
        a[avail],
        n[avail],
        ca.len(),
        mem_ne.len()
    );

    // The pushes reach Tidemark with job, instance and the extra label; the shipped fleet
    // rules' inputs are there.
    let r = tm.eventually("the agent's samples are queryable", || {
        let v = tm.api(&format!(
            "/api/v1/query?query={}",
            support::enc(
                "node_memory_MemTotal_bytes{job=\"node\",instance=\"agent-host\",pool=\"p1\"}"
            )
        ));
        let r = v["result"].as_array()?.clone();
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(r.len(), 1);
    tm.eventually("cpu_usage_percent (fleet rules) is pushed", || {
        let v = tm.api(&format!(
            "/api/v1/query?query={}",
            support::enc("cpu_usage_percent{instance=\"agent-host\"}")
        ));
        (!v["result"].as_array()?.is_empty()).then_some(())
    });
    let meta = tm.api("/api/v1/metadata?metric=node_cpu_seconds_total");
    assert_eq!(
        meta["node_cpu_seconds_total"][0]["type"], "counter",
        "{meta}"
    );
}

#[test]
fn the_agent_buffers_through_a_30s_outage_and_delivers_the_backlog_in_order() {
    let d = tempfile::tempdir().unwrap();
    let receiver = HttpReceiver::start();
    let push_to = receiver.url("/api/v1/write");
    // A 20 kB memory bound: most of the backlog spills to disk.
    let ag = Agent::start(d.path(), &push_to, &["--buffer-memory", "20kB"]);
    std::thread::sleep(Duration::from_secs(3));
    let (port, requests) = receiver.stop();
    let down = Instant::now();
    // During the outage the backlog grows, in memory and on disk, and nothing is dropped.
    let mut max_disk = 0.0f64;
    while down.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_secs(2));
        let m = ag.metrics();
        max_disk = max_disk.max(m["tidemark_agent_buffered_samples{where=\"disk\"}"]);
    }
    let during = ag.metrics();
    assert!(
        during["tidemark_agent_send_failures_total"] > 0.0,
        "the outage was seen"
    );
    assert!(max_disk > 0.0, "the backlog spilled to disk");
    let receiver = HttpReceiver::start_on(port, requests);
    // The backlog drains.
    let deadline = Instant::now() + Duration::from_secs(60);
    let m = loop {
        let m = ag.metrics();
        let left = m["tidemark_agent_buffered_samples{where=\"memory\"}"]
            + m["tidemark_agent_buffered_samples{where=\"disk\"}"];
        if left == 0.0
            && m["tidemark_agent_samples_sent_total"]
                > during["tidemark_agent_samples_collected_total"]
        {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "the backlog did not drain: {m:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(m["tidemark_agent_dropped_samples_total"], 0.0);
    // Every collection arrived once, in order, with no gap across the outage.
    let limits = Limits::default();
    let mut stamps = Vec::new();
    let mut samples = 0u64;
    for r in receiver.at("/api/v1/write") {
        let mut b = BatchBuilder::new(&limits);
        tidemark::ingest::remote_write::parse(&r.body, 64 << 20, &mut b).unwrap();
        let (batch, errs, _) = b.finish();
        assert!(errs.is_empty());
        let ts: std::collections::BTreeSet<i64> = batch.samples.iter().map(|s| s.ts).collect();
        assert_eq!(ts.len(), 1, "one collection per request");
        stamps.push(*ts.first().unwrap());
        samples += batch.samples.len() as u64;
    }
    let collections = stamps.len();
    for w in stamps.windows(2) {
        assert!(w[1] > w[0], "out of order: {} after {}", w[1], w[0]);
        assert!(
            w[1] - w[0] <= 1_500,
            "a collection is missing: {} ms between {} and {}",
            w[1] - w[0],
            w[0],
            w[1]
        );
    }
    assert!(samples as f64 <= m["tidemark_agent_samples_sent_total"]);
    println!(
        "agent outage: 30 s down, {collections} collections delivered in order ({samples} samples), at most {max_disk} samples on disk, {} failed sends, 0 dropped",
        during["tidemark_agent_send_failures_total"]
    );
    assert!(collections >= 30);
}

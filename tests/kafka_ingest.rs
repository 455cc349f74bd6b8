//! `tidemark ingest` against a real Kafka-protocol broker (tansu): every accepted sample is
//! produced exactly once, keyed by metric; with the broker down a push gets 503 and nothing
//! is lost once it is back.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::kafka::Broker;
use support::{free_port, now_ms, Tidemark};
use tidemark::ingest::{influx, BatchBuilder};
use tidemark::model::Limits;

/// Parses message values back into `(series, ts, value)` triples.
fn decode(messages: &[(i32, i64, Vec<u8>, Vec<u8>)]) -> Vec<(String, i64, String)> {
    let limits = Limits::default();
    let mut out = Vec::new();
    for (_, _, _, value) in messages {
        let mut b = BatchBuilder::new(&limits);
        influx::parse(value, influx::Precision::Ns, 0, &mut b);
        let (batch, errs, _) = b.finish();
        assert!(
            errs.is_empty(),
            "a produced message does not parse: {errs:?}"
        );
        for s in &batch.samples {
            out.push((
                batch.labels(s.series as usize).to_string(),
                s.ts,
                s.value.to_string(),
            ));
        }
    }
    out.sort();
    out
}

fn config(broker_port: u16, timeout: &str) -> String {
    format!("[kafka]\nbrokers = \"127.0.0.1:{broker_port}\"\ntopic = \"metrics\"\nproduce_timeout = \"{timeout}\"\n")
}

#[test]
fn ingest_produces_every_accepted_sample_once_keyed_by_metric() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_on(free_port(), dir.path());
    broker.create_topic("metrics", 3);
    let t = Tidemark::start_ingest(dir.path(), &config(broker.port, "10s"));
    let base = now_ms() - 60_000;
    let mut want = Vec::new();
    for push in 0..3 {
        let mut body = String::new();
        for host in 0..5 {
            for (m, v) in [
                ("cpu_load", 0.5),
                ("mem_used_bytes", 1024.0),
                ("disk_used_bytes", 7.0),
            ] {
                let ts = base + push * 10_000;
                body.push_str(&format!(
                    "{m},host=h{host} value={} {ts}\n",
                    v + push as f64
                ));
                want.push((
                    format!("{m}{{host=\"h{host}\"}}"),
                    ts,
                    (v + push as f64).to_string(),
                ));
            }
        }
        body.push_str("broken line\n");
        let (status, msg) = t.post("/write?precision=ms", "text/plain", &[], body.as_bytes());
        assert_eq!(status, 400, "{msg}");
        assert!(
            msg.contains("15 samples accepted, 1 rejected") && msg.contains("line 16"),
            "{msg}"
        );
    }
    want.sort();
    // One message per metric and push.
    let got = broker.read_all("metrics", 3, 9, Duration::from_secs(30));
    assert_eq!(
        got.len(),
        9,
        "messages: {:?}",
        got.iter()
            .map(|m| (m.0, m.1, String::from_utf8_lossy(&m.2).into_owned()))
            .collect::<Vec<_>>()
    );
    assert_eq!(decode(&got), want);
    // Keyed by metric name, so one metric lives in one partition.
    let mut partition_of: BTreeMap<Vec<u8>, i32> = BTreeMap::new();
    for (p, _, key, _) in &got {
        assert!(
            [&b"cpu_load"[..], b"mem_used_bytes", b"disk_used_bytes"].contains(&key.as_slice()),
            "key {key:?}"
        );
        assert_eq!(
            *partition_of.entry(key.clone()).or_insert(*p),
            *p,
            "metric {key:?} spread over partitions"
        );
    }
    assert_eq!(t.metric("tidemark_samples_ingested_total"), 45.0);
}

#[test]
fn broker_down_gives_503_and_nothing_is_lost_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let t = Tidemark::start_ingest_unready(dir.path(), &config(port, "2s"));
    // Not ready while no broker answers, and it says which brokers and why.
    let (status, why) = t.get("/-/ready");
    assert_eq!(status, 503, "{why}");
    assert!(
        why.contains(&format!("127.0.0.1:{port}")) && why.contains("\"metrics\""),
        "{why}"
    );
    let ts = now_ms();
    let body = format!("up,job=a value=1 {ts}\nup,job=b value=0 {ts}\n");
    // No broker: the push is refused with Retry-After, not silently dropped.
    let mut req = support::agent().post(format!("{}/write?precision=ms", t.url));
    req = req.header("Content-Type", "text/plain");
    let resp = req.send(body.as_bytes()).unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(t.metric("tidemark_write_unavailable_total"), 1.0);
    // The broker comes up; the client retries as told.
    let broker = Broker::start_on(port, dir.path());
    broker.create_topic("metrics", 1);
    let mut ready = (0, String::new());
    for _ in 0..30 {
        ready = t.get("/-/ready");
        if ready.0 == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(ready.0, 200, "ready once the broker answers: {}", ready.1);
    assert!(ready.1.contains("1 partitions"), "{}", ready.1);
    let mut status = 0;
    for _ in 0..30 {
        status = t
            .post("/write?precision=ms", "text/plain", &[], body.as_bytes())
            .0;
        if status == 204 {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(status, 204);
    let got = broker.read_all("metrics", 1, 2, Duration::from_secs(20));
    assert_eq!(
        decode(&got),
        vec![
            ("up{job=\"a\"}".to_string(), ts, "1".to_string()),
            ("up{job=\"b\"}".to_string(), ts, "0".to_string())
        ]
    );
    // Nothing else arrives later (no duplicate from the refused attempt).
    assert_eq!(
        broker
            .read_all("metrics", 1, 3, Duration::from_secs(3))
            .len(),
        1
    );
}

/// `tidemark ingest --scrape`: two collectors on a static ring share 20 targets and produce
/// the scrapes to Kafka; every scrape the targets answered is in the topic exactly once, from
/// one collector or the other, never both.
#[test]
fn ingest_scrape_collectors_share_targets_and_produce_each_scrape_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_on(free_port(), dir.path());
    broker.create_topic("metrics", 3);
    let fleet = support::targets::Fleet::start();
    let scrape = dir.path().join("scrape.yml");
    let targets: Vec<String> = (0..20)
        .map(|i| {
            format!(
                "      - targets: ['{}']\n        labels: {{__metrics_path__: /t/{i}, instance: t{i}}}\n",
                fleet.addr
            )
        })
        .collect();
    std::fs::write(
        &scrape,
        format!(
            "scrape_configs:\n  - job_name: fleet\n    scrape_interval: 1s\n    static_configs:\n{}",
            targets.concat()
        ),
    )
    .unwrap();
    let mut pool: Vec<Tidemark> = ["a", "b"]
        .iter()
        .map(|id| {
            let d = dir.path().join(id);
            std::fs::create_dir_all(&d).unwrap();
            Tidemark::start_ingest(
                &d,
                &format!(
                    "{}[scrape]\nconfig = {:?}\n[scrape.ring]\nmember = {id:?}\nmembers = [\"a\", \"b\"]\n",
                    config(broker.port, "10s"),
                    scrape.display().to_string()
                ),
            )
        })
        .collect();
    // Each serves the ring and lists the targets it scrapes (and its own /metrics, job
    // "tidemark", which every collector scrapes itself).
    let ring = pool[0].api("/api/v1/status/ring");
    assert_eq!(ring["membership"], "static", "{ring}");
    let mine: Vec<usize> = pool
        .iter()
        .map(|t| {
            t.eventually("its targets are scraped", || {
                let a = t.api("/api/v1/targets?state=active");
                let a: Vec<_> = a["activeTargets"]
                    .as_array()?
                    .iter()
                    .filter(|x| x["scrapePool"] == "fleet")
                    .cloned()
                    .collect();
                (!a.is_empty() && a.iter().all(|x| x["health"] == "up")).then_some(a.len())
            })
        })
        .collect();
    assert_eq!(mine.iter().sum::<usize>(), 20, "{mine:?}");
    assert!(mine.iter().all(|n| *n > 0), "{mine:?}");
    std::thread::sleep(Duration::from_secs(4));
    for t in &mut pool {
        assert!(t.terminate().success());
    }
    let served = fleet.counts();
    let total: usize = served.values().sum();
    // Each target keeps its connection between scrapes (as Prometheus's client does): at
    // most one per target and collector, not one per scrape.
    let conns = fleet.connections.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        total >= 60 && conns <= 40,
        "{total} scrapes over {conns} connections"
    );
    // Each scrape gives 6 samples: fleet_value and the five report series.
    let got = broker.read_all("metrics", 3, usize::MAX, Duration::from_secs(15));
    let samples = decode(&got);
    let mut per: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (series, ts, _) in &samples {
        if series.starts_with("fleet_value{") {
            per.entry(series.clone()).or_default().push(*ts);
        }
    }
    assert_eq!(
        per.len(),
        20,
        "{:?}",
        per.keys().take(3).collect::<Vec<_>>()
    );
    for (i, n) in &served {
        let series = format!("fleet_value{{instance=\"t{i}\", job=\"fleet\"}}");
        let ts = per
            .get(&series)
            .unwrap_or_else(|| panic!("{series} missing in {:?}", per.keys().next()));
        let mut uniq = ts.clone();
        uniq.dedup();
        assert_eq!(
            uniq.len(),
            ts.len(),
            "{series} produced twice at a timestamp"
        );
        // A scrape in flight at the shutdown may be answered and not produced.
        assert!(
            ts.len() == *n || ts.len() + 1 == *n,
            "{series}: {n} scrapes served, {} produced",
            ts.len()
        );
    }
    println!(
        "ingest --scrape: {total} scrapes served to 2 collectors ({mine:?} targets), {} samples produced",
        samples.len()
    );
}

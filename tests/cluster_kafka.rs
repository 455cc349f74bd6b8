//! The worker cluster against a real Kafka-protocol broker (tansu): `tidemark ingest` produces,
//! two `tidemark worker` processes consume, queries on either process see everything; a
//! SIGKILLed process and a restart lose nothing and duplicate nothing; replay from a time
//! rebuilds identical rollups; 1x1, 1x2 and 2x1 clusters give identical results; bad job
//! specs, missing topics and malformed messages get clear errors without stopping anything.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::cluster::Cluster;
use support::kafka::Broker;
use support::{enc, free_port, now_ms, Rng, Tidemark};

const HOUR: i64 = 3_600_000;
const HOSTS: usize = 6;
const METRICS: [&str; 3] = ["cpu", "mem", "disk"];

/// Keyed by series, so every partition carries data (keyed by metric, these three metrics
/// would share fewer partitions and an empty partition holds the watermark back until its
/// idle timeout).
fn ingest_config(port: u16) -> String {
    format!("[kafka]\nbrokers = \"127.0.0.1:{port}\"\ntopic = \"metrics\"\npartition_key = \"series\"\nproduce_timeout = \"10s\"\n")
}

fn job_spec(name: &str, brokers: &str, group: &str, idle: &str) -> String {
    format!(
        "name = \"{name}\"\n[source]\nbrokers = \"{brokers}\"\ntopics = [\"metrics\"]\ngroup = \"{group}\"\n\
         [watermark]\nout_of_orderness = \"1s\"\nidle_timeout = \"{idle}\"\nallowed_lateness = \"30s\"\n"
    )
}

/// Submits job `name` (consumer group `group`, idle timeout 1 h) writing its cold tiers under
/// `dir/cold`; returns that directory.
fn submit_with_tiers(
    c: &Cluster,
    dir: &std::path::Path,
    name: &str,
    brokers: &str,
    group: &str,
) -> std::path::PathBuf {
    let spec = dir.join("job.toml");
    let cold = dir.join("cold");
    std::fs::write(
        &spec,
        format!(
            "{}[tiers]\nurl = \"file://{}\"\n",
            job_spec(name, brokers, group, "1h"),
            cold.display()
        ),
    )
    .unwrap();
    let (ok, out) = c.cli(&["submit", spec.to_str().unwrap()]);
    assert!(ok, "{out}");
    cold
}

/// Line protocol for minutes `[from, to)` after `base` (one sample per host, metric, minute,
/// half-way through it, so each lies inside a rollup window `(start, start + width]`):
/// `cpu_usage`, `mem_usage`, `disk_usage` with host and pool tags.
fn lines(base: i64, from: i64, to: i64) -> String {
    let mut s = String::new();
    for m in from..to {
        let ts = base + m * 60_000 + 30_000;
        for h in 0..HOSTS {
            for (k, metric) in METRICS.iter().enumerate() {
                let v = ((m * 7 + h as i64 * 13 + k as i64 * 5) % 100) as f64 + 0.25;
                s.push_str(&format!(
                    "{metric},host=h{h},pool=p{} usage={v} {ts}\n",
                    h % 2
                ));
            }
        }
    }
    s
}

fn push(ingest: &Tidemark, body: &str) {
    let (st, b) = ingest.post("/write?precision=ms", "text/plain", &[], body.as_bytes());
    assert_eq!(st, 204, "push: {b}");
}

/// Pushes minutes `[from, to)` one minute per request, in time order, as scrapes arrive.
fn push_minutes(ingest: &Tidemark, base: i64, from: i64, to: i64) {
    for m in from..to {
        push(ingest, &lines(base, m, m + 1));
    }
}

/// Samples the cluster holds for the test metrics in `[base, base + 4h]`, seen from process `i`.
fn count(c: &Cluster, i: usize, base: i64) -> Option<i64> {
    let q = enc("sum(count_over_time(cpu_usage[5h])) + sum(count_over_time(mem_usage[5h])) + sum(count_over_time(disk_usage[5h]))");
    let v = c.get(
        i,
        &format!("/api/v1/query?query={q}&time={}", (base + 4 * HOUR) / 1000),
    );
    if v["status"] != "success" {
        return None;
    }
    v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse::<f64>().ok())
        .map(|f| f as i64)
}

/// `GET /api/v1/rollups` of the test metrics at `res` (`1m`, `1h`) from process `i`: the
/// series, each with its rows.
fn rollup_series(c: &Cluster, i: usize, base: i64, res: &str) -> Vec<serde_json::Value> {
    let v = c.get(
        i,
        &format!(
            "/api/v1/rollups?match[]={}&resolution={res}&start={}&end={}",
            enc("{__name__=~\"cpu_usage|mem_usage|disk_usage\"}"),
            (base - HOUR) / 1000,
            (base + 5 * HOUR) / 1000
        ),
    );
    assert_eq!(v["status"], "success", "{v}");
    v["data"].as_array().unwrap().clone()
}

/// Every 1m and 1h rollup of the test metrics, as sorted text rows.
fn rollups(c: &Cluster, i: usize, base: i64) -> Vec<String> {
    let mut rows = Vec::new();
    for res in ["1m", "1h"] {
        for s in rollup_series(c, i, base, res) {
            for r in s["rollups"].as_array().unwrap() {
                rows.push(format!("{res} {} {r}", s["metric"]));
            }
        }
    }
    rows.sort();
    rows
}

fn metric_value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until the job's committed offsets reach its high watermarks on every partition.
fn wait_committed(c: &Cluster, job: &str) {
    c.eventually(60, "offsets committed", || {
        let j = c.job(job);
        let parts = j["partitions"].as_object()?.clone();
        (!parts.is_empty()
            && parts.values().all(|p| {
                p["high"].as_i64().unwrap_or(-1) >= 0
                    && p["committed"].as_i64() == p["high"].as_i64()
            }))
        .then_some(())
    });
}

#[test]
fn two_processes_consume_survive_sigkill_and_replay_identically() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_on(free_port(), dir.path());
    broker.create_topic("metrics", 4);
    let ingest = Tidemark::start_ingest(dir.path(), &ingest_config(broker.port));
    let mut c = Cluster::start(&dir.path().join("cluster"), 2, 1, &broker.addr());

    // Bad specs: an unknown key, a missing topic. Clear errors, nothing submitted.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"x\"\n[source]\ntopics = [\"metrics\"]\nformt = \"line_protocol\"\n",
    )
    .unwrap();
    let (ok, out) = c.cli(&["submit", bad.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("line 4: source.formt: unknown key: did you mean `format`?"),
        "{out}"
    );
    std::fs::write(
        &bad,
        job_spec("nosuch", &broker.addr(), "g", "1h").replace("\"metrics\"", "\"no-such-topic\""),
    )
    .unwrap();
    let (ok, out) = c.cli(&["submit", bad.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("topic \"no-such-topic\" does not exist"),
        "{out}"
    );

    let spec = dir.path().join("job.toml");
    std::fs::write(&spec, job_spec("fleet", &broker.addr(), "tm-fleet", "1h")).unwrap();
    let (ok, out) = c.cli(&["submit", spec.to_str().unwrap()]);
    assert!(ok, "{out}");

    // Three hours of data, one hour at a time, so bindings exist at hour boundaries.
    let base = (now_ms() - 6 * HOUR).div_euclid(HOUR) * HOUR;
    let per_hour = 60 * HOSTS as i64 * METRICS.len() as i64;
    for hour in 0..2 {
        push_minutes(&ingest, base, hour * 60, hour * 60 + 60);
        let want = per_hour * (hour + 1);
        c.eventually(60, "first hours queryable", || {
            (count(&c, 1, base) == Some(want)).then_some(())
        });
        // Let a commit (and its bindings) happen at this point of the stream.
        std::thread::sleep(Duration::from_millis(1500));
    }
    // A malformed message (ingest would refuse it, so it goes straight to Kafka): counted and
    // reported with its partition and offset, its valid line kept, the job goes on.
    broker.produce_raw(
        "metrics",
        0,
        b"cpu,host=hx,pool=p0 usage=1 1000000\nthis is not line protocol\n",
    );
    let bad_msgs = c.eventually(30, "malformed message reported", || {
        let t = c.text(0, "/metrics") + &c.text(1, "/metrics");
        let n = metric_value(&t, "tidemark_kafka_malformed_messages_total{");
        (n >= 1.0 && t.contains("tidemark_kafka_last_malformed_offset{job=\"fleet\",topic=\"metrics\",partition=\"0\"}")).then_some(n)
    });
    assert_eq!(bad_msgs, 1.0);
    assert_eq!(
        count(&c, 0, base),
        Some(per_hour * 2),
        "queries on process 0 see process 1's shard"
    );

    // SIGKILL process 1 while the third hour is produced; process 0 stops with it (a timely
    // cluster is static); restart both.
    c.kill(1);
    push_minutes(&ingest, base, 120, 180);
    assert!(
        c.exits_within(0, Duration::from_secs(30)),
        "process 0 did not stop after losing its peer: {}",
        c.logs()
    );
    c.restart();
    // Ready means the WAL was replayed (and the partitions assigned) on every worker: the
    // restart waited on `/-/ready`, so the replay has happened by now.
    let job = c.job("fleet");
    assert!(
        job["wal_records_replayed"].as_u64().unwrap_or(0) > 0,
        "ready before the WAL was replayed: {job}"
    );
    let total = per_hour * 3;
    c.eventually(90, "every sample after restart", || {
        (count(&c, 1, base) == Some(total)).then_some(())
    });

    // Close every window: a sample two hours later on every partition (the idle timeout is an
    // hour here, so every partition holds the watermark until it has seen one).
    for p in 0..4 {
        broker.produce_raw(
            "metrics",
            p,
            format!("tick value=1 {}\n", (base + 5 * HOUR) * 1_000_000).as_bytes(),
        );
    }
    let first = c.eventually(60, "all 1h windows closed", || {
        let wm = c.job("fleet")["watermark"].as_i64()?;
        if wm < base + 5 * HOUR - 1_000 {
            return None;
        }
        let r = rollups(&c, 0, base);
        let hours = r.iter().filter(|l| l.starts_with("1h")).count();
        (hours == 3 * HOSTS * METRICS.len()).then_some(r)
    });
    let minutes = first.iter().filter(|l| l.starts_with("1m")).count();
    assert_eq!(
        minutes,
        180 * HOSTS * METRICS.len(),
        "{}\n{}",
        c.job("fleet"),
        first
            .iter()
            .filter(|l| l.starts_with("1m") && l.contains("cpu_usage") && l.contains("h0"))
            .map(|l| l
                .split("\"start\":")
                .nth(1)
                .unwrap_or("")
                .split(',')
                .next()
                .unwrap_or("")
                .to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert_eq!(
        first,
        rollups(&c, 1, base),
        "both processes answer the same"
    );
    wait_committed(&c, "fleet");

    // Replay from the middle of the second hour: rollups rebuilt identically.
    let from = base + HOUR + 30 * 60_000;
    let t = tidemark::time::rfc3339(from);
    let (ok, out) = c.cli(&[
        "replay",
        "--job",
        "fleet",
        "--from-time",
        &t,
        "--timeout-secs",
        "120",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("caught up"), "{out}");
    let j = c.job("fleet");
    assert_eq!(j["epoch"].as_u64(), Some(2), "{j}");
    // The replay re-read hours 1 and 2 (and the tick) from Kafka.
    assert!(j["samples"].as_i64().unwrap() >= 2 * per_hour, "{j}");
    let again = c.eventually(60, "rollups after replay", || {
        let r = rollups(&c, 1, base);
        (r == first).then_some(r)
    });
    assert_eq!(again.len(), first.len());
    assert_eq!(count(&c, 0, base), Some(total), "replay duplicated nothing");

    // `tidemark jobs` shows the job; `cancel` stops it.
    let (ok, out) = c.cli(&["jobs"]);
    assert!(ok && out.contains("fleet"), "{out}");
    let (ok, out) = c.cli(&["cancel", "fleet"]);
    assert!(ok, "{out}");
    c.eventually(10, "cancelled", || {
        (c.job("fleet")["state"] == "cancelled").then_some(())
    });
}

/// The same topic consumed by a 1x1, a 1x2 and a 2x1 cluster: identical rollups and counts.
#[test]
fn one_by_one_one_by_two_and_two_by_one_agree() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_on(free_port(), dir.path());
    broker.create_topic("metrics", 3);
    let ingest = Tidemark::start_ingest(dir.path(), &ingest_config(broker.port));
    // The first shape later produces a tick an hour into the next UTC day (below); every later
    // shape reads it, and the hot index keeps 26 h before its newest sample. With base + 5 h in
    // the first hours of a day that tick would be up to 30 h after base and push the test's
    // samples out of retention (the test failed between 01:00 and 06:00 UTC): then the data
    // moves back to end the day before.
    let base = {
        let b = (now_ms() - 6 * HOUR).div_euclid(HOUR) * HOUR;
        let h = (b + 5 * HOUR).rem_euclid(24 * HOUR) / HOUR;
        if h < 5 {
            b - (h + 1) * HOUR
        } else {
            b
        }
    };
    push_minutes(&ingest, base, 0, 90);
    // Then a later sample on every partition: it closes every window once the partition's data
    // before it is read, whatever the cluster's shape and speed (no wall-clock idleness).
    for p in 0..3 {
        broker.produce_raw(
            "metrics",
            p,
            format!("tick value=1 {}\n", (base + 5 * HOUR) * 1_000_000).as_bytes(),
        );
    }
    let mut results: Vec<(String, Vec<String>)> = Vec::new();
    for (k, (procs, workers)) in [(1, 1), (1, 2), (2, 1)].into_iter().enumerate() {
        let c = Cluster::start(
            &dir.path().join(format!("c{k}")),
            procs,
            workers,
            &broker.addr(),
        );
        let spec = dir.path().join(format!("job{k}.toml"));
        let cold = dir.path().join(format!("cold{k}"));
        std::fs::write(
            &spec,
            format!(
                "{}[tiers]\nurl = \"file://{}\"\n",
                job_spec("golden", &broker.addr(), &format!("golden-{k}"), "1h"),
                cold.display()
            ),
        )
        .unwrap();
        let (ok, out) = c.cli(&["submit", spec.to_str().unwrap()]);
        assert!(ok, "{out}");
        let want = 90 * HOSTS as i64 * METRICS.len() as i64;
        c.eventually(60, "all samples", || {
            (count(&c, 0, base) == Some(want)).then_some(())
        });
        // Every window closed and applied. The 1m and 1h rollups reach the hot index through
        // separate sinks, so an hour's row can be visible a moment before its last minutes'.
        let r = c.eventually(60, "windows closed", || {
            let r = rollups(&c, 0, base);
            let n = |res: &str| r.iter().filter(|l| l.starts_with(res)).count();
            (n("1h") == 2 * HOSTS * METRICS.len() && n("1m") == 90 * HOSTS * METRICS.len())
                .then_some(r)
        });
        results.push((format!("{procs}x{workers}"), r));

        // The job writes the cold tiers: every sample and rollup once. The ticks' raw hour is
        // not sealed, so their offsets stay uncommitted until a later tick seals it.
        let glob = |tier: &str| {
            format!(
                "read_parquet('{}/tier={tier}/**/*.parquet', hive_partitioning=1)",
                cold.display()
            )
        };
        let counted = |tier: &str, what: &str| -> i64 {
            let r = support::duckdb::query(&format!(
                "SELECT {what} FROM {} WHERE metric IN ('cpu_usage', 'mem_usage', 'disk_usage')",
                glob(tier)
            ));
            r[0][0]
                .as_i64()
                .or_else(|| r[0][0].as_str()?.parse().ok())
                .unwrap_or(-1)
        };
        let highs = c.eventually(60, "cold tiers sealed", || {
            let files = std::fs::read_dir(cold.join("tier=1m")).ok()?.count();
            let sealed = files > 0
                && counted("raw", "count(*)") == want
                && counted("1m", "count(*)") == want;
            let j = c.job("golden");
            let parts = j["partitions"].as_object()?.clone();
            (sealed
                && parts.len() == 3
                && parts
                    .values()
                    .all(|p| p["committed"].as_i64() < p["high"].as_i64()))
            .then(|| {
                parts
                    .values()
                    .map(|p| p["high"].as_i64().unwrap())
                    .collect::<Vec<_>>()
            })
        });
        // The 1h tier's partitions are days: a tick an hour into the next day seals this one
        // (and the first ticks' hour), and with it every offset before the new ticks commits.
        // The first shape produces it; the later ones find it in the topic, its raw hour still
        // unsealed, so the last offsets stay uncommitted (checked above). Later shapes do not
        // check that every earlier offset commits: a record read early, while another partition
        // holds the watermark back, is sent at an early time, and the unsealed partition it
        // lands in rightly holds every commit after that time.
        if k == 0 {
            let next_day = (base + 5 * HOUR).div_euclid(24 * HOUR) * 24 * HOUR + 24 * HOUR;
            for p in 0..3 {
                broker.produce_raw(
                    "metrics",
                    p,
                    format!("tick value=2 {}\n", (next_day + HOUR + 60_000) * 1_000_000).as_bytes(),
                );
            }
            c.eventually(
                60,
                "the ticks' offsets committed once their day is sealed",
                || {
                    let j = c.job("golden");
                    let parts = j["partitions"].as_object()?.clone();
                    let mut committed: Vec<i64> = parts
                        .values()
                        .map(|p| p["committed"].as_i64().unwrap_or(-1))
                        .collect();
                    committed.sort();
                    let mut want = highs.clone();
                    want.sort();
                    committed
                        .iter()
                        .zip(&want)
                        .all(|(c, h)| c >= h)
                        .then_some(())
                },
            );
        }
        assert_eq!(counted("1h", "sum(count)"), want, "{procs}x{workers} 1h");
    }
    let (name0, golden) = &results[0];
    assert_eq!(
        golden.iter().filter(|l| l.starts_with("1m")).count(),
        90 * HOSTS * METRICS.len()
    );
    for (name, r) in &results[1..] {
        let missing: Vec<&String> = golden.iter().filter(|l| !r.contains(l)).collect();
        let extra: Vec<&String> = r.iter().filter(|l| !golden.contains(l)).collect();
        let mut by_series: BTreeMap<String, (usize, String, String)> = BTreeMap::new();
        for l in &missing {
            let (head, row) = l.rsplit_once(" {\"start\":").unwrap();
            let start = row.split(',').next().unwrap().to_string();
            let e = by_series
                .entry(head.to_string())
                .or_insert((0, start.clone(), start.clone()));
            e.0 += 1;
            e.1 = e.1.clone().min(start.clone());
            e.2 = e.2.clone().max(start);
        }
        if !by_series.is_empty() {
            eprintln!("missing by series (count, first start, last start): {by_series:#?}");
        }
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{name} differs from {name0}: {} rows only in {name0}, {} only in {name}\n\
             only in {name0} (first 10): {:#?}\nonly in {name} (first 10): {:#?}",
            missing.len(),
            extra.len(),
            &missing[..missing.len().min(10)],
            &extra[..extra.len().min(10)],
        );
    }
}

/// The value of a sample of `lines` (the oracle of the rollup checks below).
fn value(m: i64, h: usize, k: usize) -> f64 {
    ((m * 7 + h as i64 * 13 + k as i64 * 5) % 100) as f64 + 0.25
}

fn num(v: &serde_json::Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// `(resolution, metric, host, start s) -> (count, sum, min, max)` of every rollup the cluster
/// answers for the test metrics.
type RollupRows = BTreeMap<(String, String, String, i64), (u64, f64, f64, f64)>;

fn rollup_rows(c: &Cluster, i: usize, base: i64) -> RollupRows {
    let mut out = BTreeMap::new();
    for res in ["1m", "1h"] {
        for s in rollup_series(c, i, base, res) {
            let metric = s["metric"]["__name__"].as_str().unwrap().to_string();
            let host = s["metric"]["host"].as_str().unwrap().to_string();
            for r in s["rollups"].as_array().unwrap() {
                out.insert(
                    (
                        res.to_string(),
                        metric.clone(),
                        host.clone(),
                        num(&r["start"]) as i64,
                    ),
                    (
                        r["count"].as_u64().unwrap_or(0),
                        num(&r["sum"]),
                        num(&r["min"]),
                        num(&r["max"]),
                    ),
                );
            }
        }
    }
    out
}

/// The rollups of minutes `[0, minutes)` computed from the pushed values alone.
fn expected_rollups(base: i64, minutes: i64) -> RollupRows {
    let mut out = BTreeMap::new();
    for (k, metric) in METRICS.iter().enumerate() {
        for h in 0..HOSTS {
            let key = |res: &str, start: i64| {
                (
                    res.to_string(),
                    format!("{metric}_usage"),
                    format!("h{h}"),
                    start / 1000,
                )
            };
            for m in 0..minutes {
                let v = value(m, h, k);
                out.insert(key("1m", base + m * 60_000), (1, v, v, v));
            }
            for hour in 0..minutes / 60 {
                let vs: Vec<f64> = (hour * 60..hour * 60 + 60)
                    .map(|m| value(m, h, k))
                    .collect();
                let min = vs.iter().copied().fold(f64::INFINITY, f64::min);
                let max = vs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                out.insert(
                    key("1h", base + hour * HOUR),
                    (60, vs.iter().sum(), min, max),
                );
            }
        }
    }
    out
}

/// Offsets of the segments a WAL directory holds (file names are their first offsets).
fn wal_segments(dir: &std::path::Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let n = e.file_name().into_string().ok()?;
                    n.strip_suffix(".seg")?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Checkpoints bound the WALs: every process checkpoints its hot index, the cluster agrees on
/// a safe time, each source records its replay point and deletes the WAL before it. A
/// SIGKILL inside a checkpoint write and a restart load the newest complete checkpoints,
/// replay only the WAL after the replay points,
/// seed the open windows, hours and cold partitions from the index, and end with every sample
/// once and the rollups the pushed values give (computed here from the values alone).
#[test]
fn checkpoints_bound_the_wals_and_a_restart_resumes_from_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_on(free_port(), dir.path());
    broker.create_topic("metrics", 4);
    let ingest = Tidemark::start_ingest(dir.path(), &ingest_config(broker.port));
    let mut c = Cluster::start_with_env(
        &dir.path().join("cluster"),
        2,
        1,
        &broker.addr(),
        Some("[checkpoint]\ninterval = \"1s\"\nkeep = 2\n"),
        // Small WAL segments, so that truncation has whole segments to delete; a pause in the
        // middle of every checkpoint write, so that the kill below lands inside one.
        &[
            ("TIDEMARK_TEST_LOG_SEGMENT_BYTES", "8192"),
            ("TIDEMARK_TEST_CHECKPOINT_PAUSE_MS", "1500"),
        ],
    );
    let cold = submit_with_tiers(&c, dir.path(), "fleet", &broker.addr(), "tm-ckpt");
    let base = (now_ms() - 6 * HOUR).div_euclid(HOUR) * HOUR;
    let per_hour = 60 * HOSTS as i64 * METRICS.len() as i64;
    push_minutes(&ingest, base, 0, 120);
    c.eventually(90, "two hours queryable", || {
        (count(&c, 1, base) == Some(2 * per_hour)).then_some(())
    });
    // Both processes checkpointed, agreed on a safe time and deleted WAL segments behind it.
    let cluster_dir = c.dir.clone();
    let wal = |i: usize| cluster_dir.join(format!("data-{i}/jobs/fleet/wal/w{i}"));
    c.eventually(60, "WAL segments deleted behind the checkpoints", || {
        (0..2)
            .all(|i| {
                let t = c.text(i, "/metrics");
                metric_value(
                    &t,
                    "tidemark_worker_wal_segments_deleted_total{job=\"fleet\"}",
                ) > 0.0
                    && wal_segments(&wal(i)).first().is_some_and(|&o| o > 0)
                    && wal(i).join("replay-from").exists()
            })
            .then_some(())
    });
    let t = c.text(0, "/metrics");
    assert!(
        metric_value(&t, "tidemark_checkpoints_total{result=\"written\"}") >= 2.0,
        "{t}"
    );

    // SIGKILL process 1 inside a checkpoint write while the third hour is produced; process 0
    // stops with it.
    push_minutes(&ingest, base, 120, 150);
    let ckpts = cluster_dir.join("data-1/checkpoints");
    c.eventually(30, "process 1 inside a checkpoint write", || {
        std::fs::read_dir(&ckpts)
            .ok()?
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".tdc.tmp"))
            .then_some(())
    });
    c.kill(1);
    push_minutes(&ingest, base, 150, 180);
    assert!(
        c.exits_within(0, Duration::from_secs(30)),
        "process 0 did not stop after losing its peer: {}",
        c.logs()
    );
    let kept: Vec<(u64, Vec<u64>)> = (0..2)
        .map(|i| {
            let p = std::fs::read_to_string(wal(i).join("replay-from")).unwrap();
            (
                p.split_whitespace().next().unwrap().parse().unwrap(),
                wal_segments(&wal(i)),
            )
        })
        .collect();
    c.restart();
    // The restart loaded a checkpoint on both processes and replayed each WAL from its
    // replay point, not from its start.
    let logs = c.logs();
    for (i, (from, segments)) in kept.iter().enumerate() {
        // (The first start had no checkpoint to load and nothing to resume.)
        let log = std::fs::read_to_string(c.log(i)).unwrap();
        assert!(log.contains("loaded checkpoint"), "process {i}: {logs}");
        if i == 1 {
            // The write the kill interrupted was discarded; the one before it was loaded.
            assert!(
                log.contains("a checkpoint write that did not finish"),
                "{logs}"
            );
        }
        assert!(
            log.contains(&format!("replays its WAL from offset {from} ")),
            "process {i} (replay point {from}, segments {segments:?}): {logs}"
        );
        assert!(*from > 0 && segments[0] > 0, "{from} {segments:?}");
    }
    let total = per_hour * 3;
    c.eventually(90, "every sample once after the restart", || {
        (count(&c, 0, base) == Some(total)).then_some(())
    });
    // Close every window and seal every hour: a later sample on every partition.
    for p in 0..4 {
        broker.produce_raw(
            "metrics",
            p,
            format!("tick value=1 {}\n", (base + 5 * HOUR) * 1_000_000).as_bytes(),
        );
    }
    let want = expected_rollups(base, 180);
    let got = c.eventually(90, "all windows closed", || {
        let r = rollup_rows(&c, 0, base);
        (r.len() >= want.len()).then_some(r)
    });
    let wrong: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), *v, got.get(k).copied()))
        .take(10)
        .collect();
    assert!(
        wrong.is_empty() && got.len() == want.len(),
        "{} rollups, {} expected; first differences (key, want, got): {wrong:#?}",
        got.len(),
        want.len()
    );
    assert_eq!(
        got,
        rollup_rows(&c, 1, base),
        "both processes answer the same"
    );
    // The raw tier holds every sample once, the open hour's included.
    let raw = c.eventually(90, "raw tier sealed", || {
        let r = support::duckdb::query(&format!(
            "SELECT count(*) FROM read_parquet('{}/tier=raw/**/*.parquet', hive_partitioning=1) WHERE metric IN ('cpu_usage', 'mem_usage', 'disk_usage')",
            cold.display()
        ));
        let n = r[0][0]
            .as_i64()
            .or_else(|| r[0][0].as_str()?.parse().ok())
            .unwrap_or(-1);
        (n >= total).then_some(n)
    });
    assert_eq!(raw, total);
}

#[test]
fn cluster_queries_read_the_cold_tiers_for_data_older_than_the_hot_indexes() {
    // The hot indexes keep an hour; two hours of data, then a tick three hours later: once
    // the job has sealed those hours into the cold tiers, the hot indexes drop them, and
    // queries on either process answer from the tiers.
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_on(free_port(), dir.path());
    broker.create_topic("metrics", 2);
    let ingest = Tidemark::start_ingest(dir.path(), &ingest_config(broker.port));
    let c = Cluster::start_with_config(
        &dir.path().join("cluster"),
        2,
        1,
        &broker.addr(),
        Some("[hot]\nretention = \"1h\"\n"),
    );
    let cold = submit_with_tiers(&c, dir.path(), "aged", &broker.addr(), "tm-aged");
    let base = (now_ms() - 6 * HOUR).div_euclid(HOUR) * HOUR;
    let want = 120 * HOSTS as i64 * METRICS.len() as i64;
    push_minutes(&ingest, base, 0, 120);
    c.eventually(90, "two hours queryable from the hot indexes", || {
        (count(&c, 0, base) == Some(want)).then_some(())
    });
    // A minute three hours later, for every series: each process's index moves its retention
    // window past the two hours (it is relative to the newest sample it holds).
    push_minutes(&ingest, base, 300, 301);
    let hot = |i: usize| metric_value(&c.text(i, "/metrics"), "tidemark_hot_samples ");
    let last_minute = (HOSTS * METRICS.len()) as f64;
    c.eventually(
        120,
        "the two hours sealed and gone from the hot indexes",
        || {
            let raw = std::fs::read_dir(cold.join("tier=raw")).ok()?.count();
            (raw > 0 && hot(0) + hot(1) <= last_minute).then_some(())
        },
    );
    for i in 0..2 {
        assert_eq!(count(&c, i, base), Some(want), "process {i} from the tiers");
    }
    let v = c.get(
        1,
        &format!(
            "/api/v1/query_range?query={}&start={}&end={}&step=600",
            enc("sum(cpu_usage)"),
            (base + 10 * 60_000) / 1000,
            (base + 110 * 60_000) / 1000
        ),
    );
    let values = v["data"]["result"][0]["values"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(values.len(), 11, "{v}");
    // The metadata APIs over those hours: each process reads the same tiers and the answers
    // merge, every series and name once, from either process.
    let (from, to) = (base / 1000, (base + 2 * HOUR) / 1000);
    for i in 0..2 {
        let series = c.get(
            i,
            &format!(
                "/api/v1/series?match[]={}&start={from}&end={to}",
                enc(r#"{__name__=~"cpu_usage|mem_usage|disk_usage"}"#)
            ),
        );
        let list = series["data"].as_array().cloned().unwrap_or_default();
        let mut distinct: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        distinct.sort();
        distinct.dedup();
        assert_eq!(
            (list.len(), distinct.len()),
            (HOSTS * METRICS.len(), HOSTS * METRICS.len()),
            "process {i}: {series}"
        );
        let names = c.get(
            i,
            &format!("/api/v1/label/__name__/values?start={from}&end={to}"),
        );
        assert_eq!(
            names["data"],
            serde_json::json!(["cpu_usage", "disk_usage", "mem_usage"]),
            "process {i}"
        );
    }
}

#[test]
fn a_two_process_cluster_answers_random_queries_as_tidemark_up_does() {
    // The same fleet pushed to `tidemark up` and, through `tidemark ingest` and Kafka, to a
    // two-process cluster: random queries from the grammar answer alike from `up` and from
    // either process (the fan-out merges both processes' shards).
    use support::fleet;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_on(free_port(), dir.path());
    broker.create_topic("metrics", 2);
    let ingest = Tidemark::start_ingest(dir.path(), &ingest_config(broker.port));
    let c = Cluster::start(&dir.path().join("cluster"), 2, 1, &broker.addr());
    let spec = dir.path().join("job.toml");
    std::fs::write(&spec, job_spec("diff", &broker.addr(), "tm-diff", "1h")).unwrap();
    let (ok, out) = c.cli(&["submit", spec.to_str().unwrap()]);
    assert!(ok, "{out}");
    let up_dir = dir.path().join("up");
    std::fs::create_dir_all(&up_dir).unwrap();
    let up = Tidemark::start(&up_dir, "[rules]\nenabled = false\n", 2);
    let base = (now_ms() / 60_000 - 50) * 60_000;
    let end = base + 40 * 60_000;
    let mut sent = 0;
    let mut from = base;
    while from <= end {
        let body = fleet::lines(from, from + 5 * 60_000);
        sent += body.lines().count();
        push(&ingest, &body);
        let (st, b) = up.post("/write?precision=ms", "text/plain", &[], body.as_bytes());
        assert_eq!(st, 204, "{b}");
        from += 5 * 60_000;
    }
    let hot = |i: usize| metric_value(&c.text(i, "/metrics"), "tidemark_hot_samples ");
    c.eventually(90, "every sample in the cluster and in up", || {
        (hot(0) + hot(1) >= sent as f64 && up.metric("tidemark_hot_samples") >= sent as f64)
            .then_some(())
    });
    assert!(hot(0) > 0.0 && hot(1) > 0.0, "both processes hold a shard");
    let mut r = Rng(0xd1ff_c1a5);
    let (mut points, mut empty) = (0, 0);
    for k in 0..30 {
        let q = fleet::query(&mut r, k % 3);
        let path = format!(
            "/api/v1/query_range?query={}&start={}&end={}&step=60&nocache=1",
            enc(&q),
            (base + 10 * 60_000) / 1000,
            end / 1000
        );
        let want = up.api(&path);
        let n: usize = want["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["values"].as_array().unwrap().len())
            .sum();
        points += n;
        empty += usize::from(n == 0);
        for i in 0..2 {
            let got = c.get(i, &path);
            assert_eq!(got["status"], "success", "{q} on process {i}: {got}");
            assert_eq!(got["data"], want, "{q} on process {i}");
        }
    }
    assert!(
        points > 5_000 && empty <= 3,
        "{points} points, {empty} empty answers"
    );
}

//! Cold tiers end to end: a backfill of three hours through `tidemark up`; once the watermark
//! passes each partition's end plus the allowed lateness its Parquet files appear under
//! `<data_dir>/cold` in the Hive layout; real DuckDB reads every tier and its counts and sums
//! equal what was pushed and what Tidemark's own queries answer; a restart (the log replayed)
//! adds no file and no row.

mod support;

use std::path::Path;

use support::s3::S3Server;
use support::{duckdb, enc, now_ms, Tidemark};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const HOSTS: i64 = 20;
const CONFIG: &str =
    "[job]\nout_of_orderness = \"1s\"\nallowed_lateness = \"1m\"\nidle_timeout = \"1h\"\n";

/// `cpu` and `mem` for every host, every 10 s over three hours from `base`, pushed ten minutes
/// at a time. Values are whole numbers, so sums are exact in any engine.
fn pushes(base: i64) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in 0..18 {
        let mut body = String::new();
        for step in 0..60 {
            let i = chunk * 60 + step;
            let ts = base + i * 10_000;
            for h in 0..HOSTS {
                body.push_str(&format!("cpu,host=h{h} value={} {ts}\n", (i + h) % 100));
                body.push_str(&format!("mem,host=h{h} value={} {ts}\n", 1000 * h + i));
            }
        }
        out.push(body);
    }
    out
}

fn expected(base: i64) -> (i64, f64, f64) {
    let (mut n, mut cpu, mut mem) = (0, 0.0, 0.0);
    let _ = base;
    for i in 0..1080 {
        for h in 0..HOSTS {
            n += 2;
            cpu += ((i + h) % 100) as f64;
            mem += (1000 * h + i) as f64;
        }
    }
    (n, cpu, mem)
}

/// Pushes line protocol (ms timestamps); it must be accepted.
fn push(t: &Tidemark, body: &str) {
    let (status, msg) = t.post("/write?precision=ms", "text/plain", &[], body.as_bytes());
    assert_eq!(status, 204, "{msg}");
}

/// A sample five minutes after midnight: the watermark passes every partition before it.
fn flush_after(midnight: i64) -> String {
    format!("flush value=1 {}\n", midnight + 5 * 60_000)
}

/// Pushes the three hours before the last midnight UTC and a flush after it; returns
/// (midnight, start of the data).
fn backfill(t: &Tidemark) -> (i64, i64) {
    let midnight = now_ms().div_euclid(DAY) * DAY;
    let base = midnight - 3 * HOUR;
    for body in pushes(base) {
        push(t, &body);
    }
    push(t, &flush_after(midnight));
    (midnight, base)
}

/// The main files of the three hours before midnight and of their day, at 2 workers.
fn sealed_files(day: &str) -> Vec<String> {
    let mut v = Vec::new();
    for tier in ["raw", "1m"] {
        for h in 21..24 {
            for w in 0..2 {
                v.push(format!(
                    "tier={tier}/date={day}/hour={h}/part-up-w{w}-m.parquet"
                ));
            }
        }
    }
    for w in 0..2 {
        v.push(format!("tier=1h/date={day}/part-up-w{w}-m.parquet"));
    }
    v.sort();
    v
}

fn files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// The tier files under `root` with their sizes.
fn sizes(root: &Path) -> Vec<(String, u64)> {
    files(root)
        .into_iter()
        .filter(|f| f.starts_with("tier="))
        .map(|f| {
            let len = std::fs::metadata(root.join(&f)).unwrap().len();
            (f, len)
        })
        .collect()
}

fn num(v: &serde_json::Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn backfill_lands_in_every_tier_and_duckdb_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Tidemark::start(dir.path(), CONFIG, 2);
    // Three hours ending at midnight UTC, then a sample just after it: every raw and 1m
    // partition of those hours and the day's 1h partition are sealed.
    let (midnight, base) = backfill(&t);

    let cold = t.data_dir.join("cold");
    let day = {
        let (y, m, d) = civil(base);
        format!("{y:04}-{m:02}-{d:02}")
    };
    let want_files = sealed_files(&day);
    let got = t.eventually("every partition sealed", || {
        let f: Vec<String> = files(&cold)
            .into_iter()
            .filter(|f| f.starts_with("tier="))
            .collect();
        (f == want_files).then_some(f)
    });
    assert_eq!(got, want_files);
    assert_eq!(t.metric("tidemark_cold_files_written_total"), 14.0);
    assert_eq!(t.metric("tidemark_cold_write_failures_total"), 0.0);

    let (n, cpu, mem) = expected(base);
    let glob = |tier: &str| {
        format!(
            "read_parquet('{}/tier={tier}/**/*.parquet', hive_partitioning=1)",
            cold.display()
        )
    };
    // Raw: every sample once, with its labels; the partition columns come from the paths.
    let rows = duckdb::query(&format!(
        "SELECT metric, count(*), sum(value), count(DISTINCT series_id), epoch_ms(min(ts)), epoch_ms(max(ts)), \
         count(DISTINCT labels['host']), min(tier), count(DISTINCT hour) \
         FROM {} GROUP BY metric ORDER BY metric",
        glob("raw")
    ));
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][0], "cpu");
    assert_eq!(num(&rows[0][1]) as i64, n / 2);
    assert_eq!(num(&rows[0][2]), cpu);
    assert_eq!(num(&rows[1][2]), mem);
    assert_eq!(num(&rows[0][3]) as i64, HOSTS);
    assert_eq!(num(&rows[0][4]) as i64, base);
    assert_eq!(num(&rows[0][5]) as i64, midnight - 10_000);
    assert_eq!(num(&rows[0][6]) as i64, HOSTS);
    assert_eq!(rows[0][7], "raw");
    assert_eq!(num(&rows[0][8]) as i64, 3);
    // 1m and 1h rollups: one row per series and window, counts and sums add up to the raw data.
    for (tier, windows) in [("1m", 180), ("1h", 3)] {
        let r = duckdb::query(&format!(
            "SELECT count(*), sum(count), sum(sum), min(min), max(max), \
             count(DISTINCT (series_id, ts)) FROM {}",
            glob(tier)
        ));
        assert_eq!(num(&r[0][0]) as i64, 2 * HOSTS * windows, "{tier}: {r:?}");
        assert_eq!(num(&r[0][1]) as i64, n, "{tier}");
        assert_eq!(num(&r[0][2]), cpu + mem, "{tier}");
        assert_eq!(num(&r[0][3]), 0.0, "{tier}");
        assert_eq!(num(&r[0][4]), (1000 * (HOSTS - 1) + 1079) as f64, "{tier}");
        assert_eq!(r[0][0], r[0][5], "{tier}: one row per series and window");
    }
    // Tidemark's own answer over the same data equals DuckDB's.
    let d = t.api(&format!(
        "/api/v1/query?query={}&time={}",
        enc("sum(count_over_time(cpu[3h])) + sum(count_over_time(mem[3h]))"),
        (midnight - 1) / 1000
    ));
    assert_eq!(num(&d["result"][0]["value"][1]) as i64, n);
    let exact = duckdb::query(&format!(
        "SELECT sum(d) FROM (SELECT max(value) - min(value) AS d FROM {}          WHERE metric = 'mem' GROUP BY series_id)",
        glob("raw")
    ));
    let d = t.api(&format!(
        "/api/v1/query?query={}&time={}",
        enc("sum(max_over_time(mem[3h]) - min_over_time(mem[3h]))"),
        (midnight - 1) / 1000
    ));
    assert_eq!(num(&exact[0][0]), (1079 * HOSTS) as f64);
    assert_eq!(num(&d["result"][0]["value"][1]), (1079 * HOSTS) as f64);
    // Each 1h row holds the increase inside its hour (359 for 360 samples one apart).
    let hourly = duckdb::query(&format!(
        "SELECT sum(increase) FROM {} WHERE metric = 'mem'",
        glob("1h")
    ));
    assert_eq!(num(&hourly[0][0]), (3 * 359 * HOSTS) as f64);

    // A restart replays the log into the hot index; the writers skip what their checkpoints
    // say is stored: same files, same rows.
    let before = sizes(&cold);
    let status = t.terminate();
    assert!(status.success(), "{status}");
    t.spawn();
    t.eventually("log replayed", || {
        (t.metric("tidemark_hot_samples") as i64 >= n).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let after = sizes(&cold);
    assert_eq!(before, after);
    assert_eq!(t.metric("tidemark_cold_files_written_total"), 0.0);
    let rows = duckdb::query(&format!("SELECT count(*) FROM {}", glob("raw")));
    assert_eq!(num(&rows[0][0]) as i64, n);
}

#[test]
fn an_s3_outage_holds_the_writers_back_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s3 = S3Server::start(&dir.path().join("s3"), "cold");
    let config = format!("{CONFIG}[cold]\nurl = \"s3://cold/tm\"\n");
    let home = dir.path().join("tm");
    std::fs::create_dir_all(&home).unwrap();
    let t = Tidemark::start_with_env(&home, &config, 2, s3.env());
    let midnight = now_ms().div_euclid(DAY) * DAY;
    let base = midnight - 3 * HOUR;
    let all = pushes(base);
    for body in &all[..9] {
        push(&t, body);
    }
    let (y, m, d) = civil(base);
    let day = format!("{y:04}-{m:02}-{d:02}");
    let bucket = dir.path().join("s3/cold/tm");
    let parquet = |root: &Path| -> Vec<String> {
        files(root)
            .into_iter()
            .filter(|f| f.starts_with("tier=") && f.ends_with(".parquet"))
            .collect()
    };
    // The first hour is sealed and stored in S3.
    t.eventually("hour 21 in S3", || {
        let f = parquet(&bucket);
        f.iter()
            .any(|f| f.starts_with(&format!("tier=raw/date={day}/hour=21/")))
            .then_some(())
    });
    // S3 goes away while the rest arrives: pushes are still acknowledged (the log has them),
    // the writers retry, and /metrics says so.
    s3.stop();
    for body in &all[9..] {
        push(&t, body);
    }
    push(&t, &flush_after(midnight));
    t.eventually("write failures reported", || {
        (t.metric("tidemark_cold_write_failures_total") > 0.0).then_some(())
    });
    // Back: every partition arrives, every sample exactly once.
    std::thread::sleep(std::time::Duration::from_secs(2));
    s3.spawn();
    let want = sealed_files(&day);
    t.eventually("every partition in S3 after the outage", || {
        (parquet(&bucket) == want).then_some(())
    });
    let (n, cpu, mem) = expected(base);
    let r = duckdb::query(&format!(
        "SELECT count(*), count(DISTINCT (series_id, ts)), sum(value) FROM read_parquet('{}/tier=raw/**/*.parquet', hive_partitioning=1)",
        bucket.display()
    ));
    assert_eq!(num(&r[0][0]) as i64, n, "{r:?}");
    assert_eq!(r[0][0], r[0][1]);
    assert_eq!(num(&r[0][2]), cpu + mem);
    let r = duckdb::query(&format!(
        "SELECT sum(count) FROM read_parquet('{}/tier=1h/**/*.parquet', hive_partitioning=1)",
        bucket.display()
    ));
    assert_eq!(num(&r[0][0]) as i64, n);
}

/// `(year, month, day)` of a UTC time in ms.
fn civil(ms: i64) -> (i64, i64, i64) {
    let rfc = tidemark::cluster::client::rfc3339(ms);
    let p: Vec<i64> = rfc[..10].split('-').map(|x| x.parse().unwrap()).collect();
    (p[0], p[1], p[2])
}

#[test]
fn retention_deletes_expired_partitions_and_compaction_merges_late_corrections() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{CONFIG}[cold]\nraw_retention = \"2h\"\nminute_retention = \"3h\"\ncompaction_interval = \"1s\"\n"
    );
    let t = Tidemark::start(dir.path(), &config, 2);
    let midnight = now_ms().div_euclid(DAY) * DAY;
    let base = midnight - 3 * HOUR;
    for body in pushes(base) {
        push(&t, &body);
    }
    // Late for the sealed 22:00 hour: a correction of one sample and one new sample.
    let late = format!(
        "mem,host=h3 value=-1 {}\nmem,host=h3 value=-2 {}\n",
        base + HOUR,
        base + HOUR + 5
    );
    push(&t, &late);
    push(&t, &flush_after(midnight));

    let (y, m, d) = civil(base);
    let day = format!("{y:04}-{m:02}-{d:02}");
    // The watermark is 00:05 - 1s: raw partitions ending 2 h before it are gone (21:00); sealed
    // partitions with several files ending an hour and the lateness before it are compacted.
    let mut want = vec![
        format!(
            "tier=raw/date={day}/hour=22/part-compacted-w0-x{}.parquet",
            midnight - HOUR
        ),
        format!("tier=raw/date={day}/hour=23/part-up-w0-m.parquet"),
        format!("tier=raw/date={day}/hour=23/part-up-w1-m.parquet"),
        format!("tier=1m/date={day}/hour=21/part-compacted-w0-x0.parquet"),
        format!("tier=1m/date={day}/hour=22/part-compacted-w0-x0.parquet"),
        format!("tier=1m/date={day}/hour=23/part-up-w0-m.parquet"),
        format!("tier=1m/date={day}/hour=23/part-up-w1-m.parquet"),
        format!("tier=1h/date={day}/part-up-w0-m.parquet"),
        format!("tier=1h/date={day}/part-up-w1-m.parquet"),
    ];
    want.sort();
    let cold = t.data_dir.join("cold");
    t.eventually("retention and compaction", || {
        let f: Vec<String> = files(&cold)
            .into_iter()
            .filter(|f| f.starts_with("tier="))
            .collect();
        (f == want).then_some(())
    });
    // No duplicates: the correction replaced its sample, the new late sample is there once.
    let raw = format!(
        "read_parquet('{}/tier=raw/**/*.parquet', hive_partitioning=1)",
        cold.display()
    );
    let r = duckdb::query(&format!(
        "SELECT count(*), count(DISTINCT (series_id, ts)), sum(CASE WHEN value < 0 THEN value END) FROM {raw}"
    ));
    let per_hour = 2 * HOSTS * 360;
    assert_eq!(num(&r[0][0]) as i64, 2 * per_hour + 1, "{r:?}");
    assert_eq!(r[0][0], r[0][1]);
    assert_eq!(num(&r[0][2]), -3.0);
    assert!(t.metric("tidemark_cold_compactions_total") >= 3.0);

    // `tidemark tiers` lists what is there.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["tiers", "--data-dir"])
        .arg(&t.data_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("raw            2       3"), "{text}");
    assert!(text.contains(&format!("tier=1h/date={day}")), "{text}");
}

#[test]
fn sigkill_while_sealing_leaves_no_partial_or_duplicate_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Tidemark::start(dir.path(), CONFIG, 2);
    // The flush seals the last hour, the day and their rollups: kill while that is written.
    let (_, base) = backfill(&t);
    t.kill();
    t.spawn();
    let cold = t.data_dir.join("cold");
    let (n, cpu, mem) = expected(base);
    let glob = format!(
        "read_parquet('{}/tier=raw/**/*.parquet', hive_partitioning=1)",
        cold.display()
    );
    t.eventually("every raw sample in Parquet after the restart", || {
        let r = duckdb::query(&format!("SELECT count(*) FROM {glob}"));
        (num(&r[0][0]) as i64 == n).then_some(())
    });
    let r = duckdb::query(&format!(
        "SELECT count(*), count(DISTINCT (series_id, ts)), sum(value) FROM {glob}"
    ));
    assert_eq!(r[0][0], r[0][1], "no duplicates");
    assert_eq!(num(&r[0][2]), cpu + mem);
    // DuckDB read every *.parquet file whole: none is partial (object stores publish a file
    // only when it is complete).
}

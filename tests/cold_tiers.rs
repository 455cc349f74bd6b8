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

/// `cpu` and `mem` for every host, every 10 s over three hours from `base` (5 s past each
/// 10 s, so no sample ends a rollup window `(start, start + width]` and every window lies in
/// its own hour), pushed ten minutes at a time. Values are whole numbers, so sums are exact in any engine.
fn pushes(base: i64) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in 0..18 {
        let mut body = String::new();
        for step in 0..60 {
            let i = chunk * 60 + step;
            let ts = base + 5_000 + i * 10_000;
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
    support::files_under(root)
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
    assert_eq!(num(&rows[0][4]) as i64, base + 5_000);
    assert_eq!(num(&rows[0][5]) as i64, midnight - 5_000);
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
    let rfc = tidemark::time::rfc3339(ms);
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
        base + HOUR + 5_000,
        base + HOUR + 6
    );
    push(&t, &late);
    push(&t, &flush_after(midnight));

    let (y, m, d) = civil(base);
    let day = format!("{y:04}-{m:02}-{d:02}");
    // The watermark is 00:05 - 1s: raw partitions ending 2 h before it are gone (21:00); sealed
    // partitions with several files ending an hour and the lateness before it are compacted.
    let mut want = vec![
        // Named after the correction's file: the 5-minute window it was sent in (the
        // watermark then was 23:59:54).
        format!(
            "tier=raw/date={day}/hour=22/part-compacted-w0-x{}.parquet",
            midnight - 5 * 60_000
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
    // What the tiers hold, as the maintenance listed them (after retention, before or after
    // a compaction): raw 22:00 and 23:00, 1m 21:00 to 23:00, the day's 1h partition.
    t.eventually("the listed partitions on /metrics", || {
        let n = |tier: &str| t.metric(&format!("tidemark_cold_partitions{{tier=\"{tier}\"}}"));
        (n("raw") == 2.0 && n("1m") == 3.0 && n("1h") == 1.0).then_some(())
    });
    let raw_bytes: u64 = files(&cold)
        .iter()
        .filter(|f| f.starts_with("tier=raw/"))
        .map(|f| std::fs::metadata(cold.join(f)).unwrap().len())
        .sum();
    t.eventually("the raw tier's bytes as on disk", || {
        (t.metric("tidemark_cold_stored_bytes{tier=\"raw\"}") == raw_bytes as f64).then_some(())
    });

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
    // Every raw file write pauses once its first record batch is encoded: the kill below
    // lands inside a seal, not before or after it.
    let pause = vec![
        (
            "TIDEMARK_TEST_COLD_WRITE_PAUSE_MS".to_string(),
            "120000".to_string(),
        ),
        (
            "TIDEMARK_TEST_COLD_WRITE_PAUSE_MATCH".to_string(),
            "tier=raw/".to_string(),
        ),
    ];
    let mut t = Tidemark::start_with_env(dir.path(), CONFIG, 2, pause);
    // The flush seals the last hours, the day and their rollups.
    let (_, base) = backfill(&t);
    let path = t.paused_cold_write();
    let cold = t.data_dir.join("cold");
    let file = cold.join(&path);
    assert!(!file.exists(), "{path} is not finished before the kill");
    t.kill();
    assert!(!file.exists());
    t.env.clear();
    t.spawn();
    let (n, cpu, mem) = expected(base);
    let glob = format!(
        "read_parquet('{}/tier=raw/**/*.parquet', hive_partitioning=1)",
        cold.display()
    );
    t.eventually("every raw sample in Parquet after the restart", || {
        // DuckDB fails on a glob that matches nothing: wait for the first file.
        if !files(&cold).iter().any(|f| f.starts_with("tier=raw/")) {
            return None;
        }
        let r = duckdb::query(&format!("SELECT count(*) FROM {glob}"));
        (num(&r[0][0]) as i64 == n).then_some(())
    });
    assert!(file.exists(), "the killed write of {path} is done again");
    let r = duckdb::query(&format!(
        "SELECT count(*), count(DISTINCT (series_id, ts)), sum(value) FROM {glob}"
    ));
    assert_eq!(r[0][0], r[0][1], "no duplicates");
    assert_eq!(num(&r[0][2]), cpu + mem);
    // DuckDB read every *.parquet file whole: none is partial (object stores publish a file
    // only when it is complete), and no staged upload is left.
    let stray: Vec<String> = files(&cold)
        .into_iter()
        .filter(|f| f.contains('#'))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

/// Three days of a small fleet on 30 s grids (one host off-grid by 7 s): a counter with a reset
/// and a gauge, so samples sit exactly on window boundaries. Returns the series (labels as
/// pairs, samples) and the line-protocol pushes, two hours per push.
#[allow(clippy::type_complexity)]
fn fleet(
    start: i64,
    end: i64,
) -> (
    Vec<(Vec<(&'static str, String)>, Vec<(i64, f64)>)>,
    Vec<String>,
) {
    let mut series = Vec::new();
    for (h, phase) in [(0, 0), (1, 0), (2, 7_000)] {
        let (mut c, mut g) = (Vec::new(), Vec::new());
        let mut v = 0.0;
        let mut ts = start + phase;
        let mut i = 0i64;
        while ts < end {
            v += ((i * 7 + h * 3) % 11) as f64;
            if i % 5000 == 4999 {
                v = 3.0; // a counter reset
            }
            c.push((ts, v));
            g.push((ts, ((i * 13 + h * 17) % 97) as f64 + 0.25));
            ts += 30_000;
            i += 1;
        }
        let host = format!("h{h}");
        series.push((
            vec![
                ("__name__", "reqs_total".to_string()),
                ("host", host.clone()),
            ],
            c,
        ));
        series.push((vec![("__name__", "cpu".to_string()), ("host", host)], g));
    }
    let mut pushes = Vec::new();
    let mut from = start;
    while from < end {
        let to = from + 2 * HOUR;
        let mut body = String::new();
        for (labels, samples) in &series {
            for &(ts, v) in samples.iter().filter(|p| p.0 >= from && p.0 < to) {
                body.push_str(&format!(
                    "{},host={} value={v} {ts}\n",
                    labels[0].1, labels[1].1
                ));
            }
        }
        pushes.push(body);
        from = to;
    }
    (series, pushes)
}

/// A random query over [`fleet`]'s metrics, any function (the raw tier answers anything).
fn raw_query(r: &mut support::Rng, depth: u32) -> String {
    let pick = |r: &mut support::Rng, xs: &[&'static str]| xs[r.below(xs.len() as u64) as usize];
    let m = pick(
        r,
        &[
            "",
            r#"{host="h1"}"#,
            r#"{host=~"h0|h2"}"#,
            r#"{host!="h0"}"#,
        ],
    );
    let range = pick(r, &["1m", "2m", "5m", "10m", "1h"]);
    let leaf = match r.below(12) {
        0 => format!("cpu{m}"),
        1 => format!("reqs_total{m}"),
        2 => format!("rate(reqs_total{m}[{range}])"),
        3 => format!("irate(reqs_total{m}[{range}])"),
        4 => format!("increase(reqs_total{m}[{range}])"),
        5 => format!("resets(reqs_total{m}[{range}])"),
        6 => format!("deriv(cpu{m}[{range}])"),
        7 => format!("max_over_time(cpu{m}[{range}])"),
        8 => format!("quantile_over_time(0.5, cpu{m}[{range}])"),
        9 => format!("stddev_over_time(cpu{m}[{range}])"),
        10 => format!("changes(cpu{m}[{range}])"),
        _ => format!("cpu{m} offset 10m"),
    };
    if depth == 0 {
        return leaf;
    }
    let inner = raw_query(r, depth - 1);
    match r.below(6) {
        0 => format!("sum by (host) ({inner})"),
        1 => format!("avg ({inner})"),
        2 => format!("topk(2, {inner})"),
        3 => format!("{inner} * 2 + 1"),
        4 => format!("count ({inner} > 40)"),
        _ => format!("max_over_time(({leaf})[5m:1m])"),
    }
}

/// A random query the 1m and 1h rollups answer exactly at 1 h steps: `*_over_time` of whole
/// windows, `increase` and `rate`, under aggregations and arithmetic.
fn rollup_query(r: &mut support::Rng, depth: u32) -> String {
    let pick = |r: &mut support::Rng, xs: &[&'static str]| xs[r.below(xs.len() as u64) as usize];
    let m = pick(r, &["", r#"{host="h1"}"#, r#"{host!="h2"}"#]);
    let range = pick(r, &["1h", "2h", "3h"]);
    let leaf = match r.below(7) {
        0 => format!("increase(reqs_total{m}[{range}])"),
        1 => format!("rate(reqs_total{m}[{range}])"),
        2 => format!("avg_over_time(cpu{m}[{range}])"),
        3 => format!("min_over_time(cpu{m}[{range}])"),
        4 => format!("max_over_time(cpu{m}[{range}])"),
        5 => format!("sum_over_time(cpu{m}[{range}])"),
        _ => format!("count_over_time(cpu{m}[{range}])"),
    };
    if depth == 0 {
        return leaf;
    }
    let inner = rollup_query(r, depth - 1);
    match r.below(5) {
        0 => format!("sum by (host) ({inner})"),
        1 => format!("max ({inner})"),
        2 => format!("topk(1, {inner})"),
        3 => format!("{inner} / 2 - 1"),
        _ => format!("avg ({inner})"),
    }
}

#[test]
fn queries_across_hot_and_every_cold_tier_match_answers_from_raw_data() {
    use tidemark::model::Labels;
    use tidemark::query::engine::Engine;
    use tidemark::query::promqltest::MemStorage;
    use tidemark::query::QueryValue;

    // The hot index keeps an hour; raw a day, 1m two days, 1h a year.
    let config = format!(
        "{CONFIG}[hot]\nretention = \"1h\"\n[cold]\nraw_retention = \"1d\"\nminute_retention = \"2d\"\ncompaction_interval = \"1s\"\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let t = Tidemark::start(dir.path(), &config, 2);
    // The 1h steps below read the 1m tier for the day of `end` before the hot hour: in the
    // first hours of a UTC day there is no such part (the test failed from 00:00 to 03:00 UTC),
    // so the data then ends at 23:00 of the day before.
    let end = {
        let e = now_ms().div_euclid(HOUR) * HOUR - HOUR;
        let h = e.rem_euclid(DAY) / HOUR;
        if h < 4 {
            e - (h + 1) * HOUR
        } else {
            e
        }
    };
    let start = end - 3 * DAY;
    let (series, mut pushes) = fleet(start, end);
    // A metric only in the first two hours (in the first push): days older than the hot
    // index's hour, and than the raw and 1m tiers' retention; only the 1h tier keeps it.
    let old_only: String = (0..240)
        .map(|i| format!("old_only,host=h9 value={i} {}\n", start + i * 30_000))
        .collect();
    pushes[0].push_str(&old_only);
    for body in &pushes {
        push(&t, body);
    }
    let cold = t.data_dir.join("cold");
    let date = |ms: i64| {
        let (y, m, d) = civil(ms);
        format!("{y:04}-{m:02}-{d:02}")
    };
    let hour_dir = |tier: &str, ms: i64| {
        format!(
            "tier={tier}/date={}/hour={:02}/",
            date(ms),
            ms.rem_euclid(DAY) / HOUR
        )
    };
    // Sealed through the hour before the last one; retention has dropped the oldest 1m and raw
    // partitions; compaction has merged the two workers' files of older partitions (the
    // newest still have one file per worker: queries read both kinds).
    t.eventually("tiers sealed, expired and compacted", || {
        let f = files(&cold);
        let has = |p: &str| f.iter().any(|x| x.starts_with(p));
        let done = has(&hour_dir("raw", end - 2 * HOUR))
            && has(&hour_dir("1m", end - 2 * HOUR))
            && !has(&hour_dir("1m", start))
            && !has(&hour_dir("raw", end - 30 * HOUR))
            && !f
                .iter()
                .any(|x| x.starts_with(&hour_dir("raw", end - 20 * HOUR)) && x.contains("-w1-m"))
            && f.iter().any(|x| x.starts_with("tier=1h/"));
        done.then_some(())
    });
    assert_eq!(t.metric("tidemark_cold_write_failures_total"), 0.0);

    let mut oracle = MemStorage::default();
    for (labels, samples) in &series {
        oracle.add(Labels::from_pairs(labels.clone()), samples.iter().copied());
    }
    let rows = |tier: &str| {
        t.metric(&format!(
            "tidemark_cold_query_rows_total{{tier=\"{tier}\"}}"
        ))
    };
    let check = |q: &str, from: i64, to: i64, step: i64| -> usize {
        let d = t.api(&format!(
            "/api/v1/query_range?query={}&start={}&end={}&step={}",
            enc(q),
            from / 1000,
            to / 1000,
            step / 1000
        ));
        let QueryValue::Matrix(want) = Engine::new(&oracle, from, to, step)
            .unwrap()
            .query(q, true)
            .unwrap()
        else {
            panic!("{q}: not a matrix")
        };
        let got = d["result"].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{q}: series");
        let mut points = 0;
        for w in &want {
            let g = got
                .iter()
                .find(|g| {
                    let m = g["metric"].as_object().unwrap();
                    m.len() == w.labels.len()
                        && w.labels
                            .iter()
                            .all(|(k, v)| m.get(k).and_then(|x| x.as_str()) == Some(v))
                })
                .unwrap_or_else(|| panic!("{q}: {:?} missing", w.labels));
            let values = g["values"].as_array().unwrap();
            assert_eq!(values.len(), w.samples.len(), "{q} {:?}: steps", w.labels);
            for (gv, &(ts, v)) in values.iter().zip(&w.samples) {
                let (gt, gv) = ((num(&gv[0]) * 1000.0).round() as i64, num(&gv[1]));
                let close = (gv - v).abs() <= 1e-9 * gv.abs().max(v.abs()).max(1.0);
                assert!(
                    gt == ts && close,
                    "{q} {:?} at {ts}: {gv} from the tiers, {v} from raw data",
                    w.labels
                );
                points += 1;
            }
        }
        points
    };
    // 1 h steps over three days: 1h tier (whole days), 1m tier (today, not sealed in 1h), hot.
    for q in [
        "increase(reqs_total[1h])",
        "sum by (host) (rate(reqs_total[2h]))",
        "avg_over_time(cpu[1h])",
        "min_over_time(cpu[1h])",
        "max_over_time(cpu[3h])",
        "sum_over_time(cpu[1h])",
        "count_over_time(cpu[1h])",
        "cpu",
    ] {
        assert!(check(q, start + 3 * HOUR, end, HOUR) >= 3 * 60, "{q}");
    }
    assert!(rows("1h") > 0.0 && rows("1m") > 0.0, "1h and 1m tiers read");
    // 5 m steps over the 1m tier's two days, into the hot index.
    let raw_before = rows("raw");
    for q in ["rate(reqs_total[5m])", "avg_over_time(cpu[10m])", "cpu"] {
        assert!(check(q, end - 40 * HOUR, end, 5 * 60_000) >= 3 * 400, "{q}");
    }
    assert_eq!(
        rows("raw"),
        raw_before,
        "aligned 5 m steps need no raw rows"
    );
    // 30 s steps over the raw tier's day, into the hot index.
    for q in ["rate(reqs_total[2m])", "irate(reqs_total[2m])", "cpu"] {
        assert!(check(q, end - 20 * HOUR, end, 30_000) >= 3 * 2000, "{q}");
    }
    assert!(rows("raw") > raw_before, "raw tier read");

    // Random queries from two grammars against the same oracle, each over a range that
    // starts in the tiers and ends in the hot index (its hour is [end - 1h, end]):
    // - anything PromQL over the raw tier, at 30 s steps;
    // - the functions the rollups answer exactly, at the windows' 1 h steps, over the 1h and
    //   1m tiers, under random aggregations and arithmetic.
    let mut rng = support::Rng(0x5eed_c01d);
    let (mut points, mut answered) = (0, 0);
    let raw_before = rows("raw");
    for i in 0..24 {
        let q = raw_query(&mut rng, 1 + i % 2);
        let n = check(&q, end - 3 * HOUR, end, 30_000);
        points += n;
        answered += usize::from(n > 0);
    }
    let hour_before = rows("1h");
    for i in 0..16 {
        let q = rollup_query(&mut rng, 1 + i % 2);
        let n = check(&q, start + 3 * HOUR, end, HOUR);
        points += n;
        answered += usize::from(n > 0);
    }
    eprintln!("random queries: {answered} of 40 answered, {points} points compared");
    assert!(
        answered >= 32 && points > 5_000,
        "{answered} of 40 random queries answered, {points} points compared"
    );
    assert!(
        rows("raw") > raw_before && rows("1h") > hour_before,
        "the random queries read the raw and 1h tiers"
    );

    // The metadata APIs answer for the same data: a range before the hot index's retention
    // reads the tiers that hold it.
    let (from, to) = ((start + HOUR) / 1000, (start + 2 * HOUR) / 1000);
    let hour_rows = rows("1h");
    let series = t.api(&format!(
        "/api/v1/series?match[]={}&start={from}&end={to}",
        enc("old_only")
    ));
    assert_eq!(
        series,
        serde_json::json!([{"__name__": "old_only", "host": "h9"}]),
        "series of the 1h tier"
    );
    assert!(rows("1h") > hour_rows, "the 1h tier was read");
    let names = t.api(&format!(
        "/api/v1/label/__name__/values?start={from}&end={to}"
    ));
    let names: Vec<&str> = names
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["cpu", "old_only", "reqs_total"],
        "metric names in that range"
    );
    let hosts = t.api(&format!(
        "/api/v1/label/host/values?match[]={}&start={from}&end={to}",
        enc("old_only")
    ));
    assert_eq!(hosts, serde_json::json!(["h9"]));
    let labels = t.api(&format!(
        "/api/v1/labels?match[]={}&start={from}&end={to}",
        enc("old_only")
    ));
    assert_eq!(labels, serde_json::json!(["__name__", "host"]));
    // The last hour: the hot index alone, which no longer has the old metric's samples.
    let recent = t.api(&format!(
        "/api/v1/series?match[]={}&start={}&end={}",
        enc("old_only"),
        (end - HOUR) / 1000,
        end / 1000
    ));
    assert_eq!(recent, serde_json::json!([]));
}

#[test]
fn a_restart_re_reads_a_buffered_correction_and_skips_the_records_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{CONFIG}[checkpoint]\ninterval = \"1s\"\n");
    let mut t = Tidemark::start(dir.path(), &config, 2);
    let midnight = now_ms().div_euclid(DAY) * DAY;
    let base = midnight - 3 * HOUR;
    let all = pushes(base);
    // 21:00 to 22:20, then 22:20 to 22:23:15: the 21:00 hour seals (at 22:01), and the
    // watermark stops inside the 5-minute correction window 22:20-22:25.
    let lines: Vec<&str> = all[8].lines().collect();
    let part = |a: usize, b: usize| lines[a..b].join("\n") + "\n";
    for body in &all[..8] {
        push(&t, body);
    }
    push(&t, &part(0, 800));
    let raw_21 = t.data_dir.join("cold");
    t.eventually("the 21:00 raw partition sealed", || {
        files(&raw_21)
            .iter()
            .any(|f| f.starts_with("tier=raw/") && f.contains("/hour=21/"))
            .then_some(())
    });
    // A correction for the sealed hour: buffered until its correction window ends.
    push(&t, &format!("mem,host=h3 value=-1 {}\n", base + 15_000));
    // Records after it, all of whose samples are in the open 22:00 hour.
    push(&t, &part(800, 1000));
    let records = 8 + 3;
    t.eventually("a checkpoint after the correction", || {
        (t.metric("tidemark_checkpoint_last_log_offset") >= records as f64).then_some(())
    });
    // Killed before the correction window ended: the correction is only in the log.
    let correction_file = |f: &String| {
        f.starts_with("tier=raw/")
            && f.contains("/hour=21/")
            && f.rsplit('-')
                .next()
                .is_some_and(|kind| kind.starts_with('c'))
    };
    assert!(!files(&raw_21).iter().any(correction_file));
    t.kill();
    t.spawn();
    // The restart read the log again from before the correction, for the raw tier only, and
    // decoded only the record that holds samples of a sealed partition.
    let (decoded, skipped) = t.eventually("the cold replay", || {
        let log = std::fs::read_to_string(&t.log_path).unwrap_or_default();
        let done: Vec<(u64, u64)> = log
            .lines()
            .filter_map(|l| {
                let r = l.split("cold replay done: ").nth(1)?;
                let mut w = r.split_whitespace();
                let d = w.next()?.parse().ok()?;
                let s = w.nth(2)?.parse().ok()?;
                Some((d, s))
            })
            .collect();
        (!done.is_empty()).then(|| done.iter().fold((0, 0), |(a, b), (d, s)| (a + d, b + s)))
    });
    assert!(
        decoded >= 1 && skipped >= 1,
        "{decoded} decoded, {skipped} skipped"
    );
    // The rest of the day: the correction window ends, and the correction is written.
    push(&t, &part(1000, lines.len()));
    for body in &all[9..] {
        push(&t, body);
    }
    push(&t, &flush_after(midnight));
    let raw = format!(
        "read_parquet('{}/tier=raw/**/*.parquet', hive_partitioning=1)",
        raw_21.display()
    );
    t.eventually("the correction in the raw tier", || {
        let r = duckdb::query(&format!("SELECT count(*) FROM {raw} WHERE value < 0"));
        (num(&r[0][0]) as i64 == 1).then_some(())
    });
    // It came as a correction file of the sealed hour, written after the restart.
    assert!(files(&raw_21).iter().any(correction_file));
}

//! Rollups under disorder: samples pushed out of order and late; the 1-minute (and 1-hour)
//! rollups must equal an oracle computed from scratch from the same pushes. The same input at 1
//! and at 2 workers must give identical results.

mod support;

use std::collections::BTreeMap;

use support::{enc, now_ms, Rng, Tidemark};

const OOO_MS: i64 = 5_000;
const LATENESS_MS: i64 = 120_000;
const CONFIG: &str =
    "[job]\nout_of_orderness = \"5s\"\nallowed_lateness = \"2m\"\nidle_timeout = \"1h\"\n";

/// One push = one log record: `(series label, ts, value)` samples.
type Push = Vec<(u32, i64, f64)>;

/// A workload: 4 counters over 40 minutes at 10 s, pushed in shuffled groups, with some
/// samples re-sent late (inside the lateness) and some very late (beyond it).
fn workload(base: i64) -> Vec<Push> {
    let mut rng = Rng(0x5eed);
    let mut pushes = Vec::new();
    let mut value = [0f64; 4];
    let mut held_back: Vec<(u32, i64, f64)> = Vec::new();
    let mut very_late: Vec<(u32, i64, f64)> = Vec::new();
    for chunk in 0..40 {
        let mut p: Push = Vec::new();
        for step in 0..6 {
            let ts = base + (chunk * 6 + step) * 10_000;
            for s in 0..4u32 {
                value[s as usize] += rng.below(100) as f64;
                if rng.below(50) == 0 {
                    value[s as usize] = rng.below(10) as f64; // counter reset
                }
                let sample = (s, ts, value[s as usize]);
                match rng.below(20) {
                    0 | 1 => held_back.push(sample), // sent a few minutes late
                    2 => very_late.push(sample),     // sent after the window closed for good
                    _ => p.push(sample),
                }
            }
        }
        // Shuffle within the push (disorder inside the out-of-orderness bound).
        for i in (1..p.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            p.swap(i, j);
        }
        pushes.push(p);
        // Release held-back samples a few pushes later: some within lateness, some beyond.
        if chunk % 3 == 2 {
            pushes.push(std::mem::take(&mut held_back));
        }
    }
    pushes.push(held_back);
    pushes.push(very_late);
    // A far-future flush sample on another metric closes every window.
    pushes.push(vec![(99, base + 4 * 3_600_000, 0.0)]);
    pushes
}

fn body(p: &Push) -> String {
    p.iter()
        .map(|(s, ts, v)| {
            if *s == 99 {
                format!("flush value={v} {ts}\n")
            } else {
                format!("ctr,s=s{s} value={v} {ts}\n")
            }
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
struct Roll {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    first: f64,
    last: f64,
    increase: f64,
}

/// The oracle: replay the pushes, track the watermark (max event time - out-of-orderness of the
/// pushes before), drop samples whose window closed for good before they came, and aggregate.
fn oracle(pushes: &[Push], width: i64) -> (BTreeMap<(u32, i64), Roll>, u64, u64) {
    let mut wm = 0i64;
    let mut kept: BTreeMap<(u32, i64), BTreeMap<i64, f64>> = BTreeMap::new();
    let (mut late, mut dropped) = (0, 0);
    for p in pushes {
        for &(s, ts, v) in p {
            // Windows are (start, start + width]: a sample on a boundary ends the window.
            let minute = (ts - 1).div_euclid(60_000) * 60_000;
            if wm >= minute + 60_000 + LATENESS_MS {
                dropped += 1;
                continue;
            }
            if ts < wm {
                late += 1;
            }
            if s == 99 {
                continue;
            }
            kept.entry((s, (ts - 1).div_euclid(width) * width))
                .or_default()
                .insert(ts, v);
        }
        let max = p.iter().map(|x| x.1).max().unwrap();
        wm = wm.max(max - OOO_MS);
    }
    let rolls = kept
        .into_iter()
        .map(|(k, pts)| {
            let v: Vec<f64> = pts.values().copied().collect();
            let mut r = Roll {
                count: v.len() as u64,
                sum: 0.0,
                min: v[0],
                max: v[0],
                first: v[0],
                last: v[v.len() - 1],
                increase: 0.0,
            };
            for (i, x) in v.iter().enumerate() {
                r.sum += x;
                r.min = r.min.min(*x);
                r.max = r.max.max(*x);
                if i > 0 {
                    r.increase += if *x < v[i - 1] { *x } else { x - v[i - 1] };
                }
            }
            (k, r)
        })
        .collect();
    (rolls, late, dropped)
}

fn fetch(t: &Tidemark, res: &str, base: i64) -> BTreeMap<(u32, i64), Roll> {
    let d = t.api(&format!(
        "/api/v1/rollups?match[]={}&resolution={res}&start={}&end={}",
        enc("ctr"),
        (base - 3_600_000) / 1000,
        (base + 3 * 3_600_000) / 1000
    ));
    let mut out = BTreeMap::new();
    for s in d.as_array().unwrap() {
        let sid: u32 = s["metric"]["s"].as_str().unwrap()[1..].parse().unwrap();
        for r in s["rollups"].as_array().unwrap() {
            let f = |k: &str| r[k].as_str().unwrap().parse::<f64>().unwrap();
            let start = (r["start"].as_f64().unwrap() * 1000.0).round() as i64;
            out.insert(
                (sid, start),
                Roll {
                    count: r["count"].as_u64().unwrap(),
                    sum: f("sum"),
                    min: f("min"),
                    max: f("max"),
                    first: f("first"),
                    last: f("last"),
                    increase: f("increase"),
                },
            );
        }
    }
    out
}

/// The distinct (series, time) pairs of the `ctr` samples pushed.
fn distinct_samples(pushes: &[Push]) -> std::collections::BTreeSet<(u32, i64)> {
    pushes
        .iter()
        .flatten()
        .filter(|s| s.0 != 99)
        .map(|s| (s.0, s.1))
        .collect()
}

fn push_all(t: &Tidemark, pushes: &[Push]) {
    for p in pushes {
        let (status, msg) = t.post("/write?precision=ms", "text/plain", &[], body(p).as_bytes());
        assert_eq!(status, 204, "{msg}");
    }
}

fn close(a: &Roll, b: &Roll) -> bool {
    let f = |x: f64, y: f64| (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0);
    a.count == b.count
        && f(a.sum, b.sum)
        && f(a.min, b.min)
        && f(a.max, b.max)
        && f(a.first, b.first)
        && f(a.last, b.last)
        && f(a.increase, b.increase)
}

fn run(
    workers: usize,
    base: i64,
    pushes: &[Push],
) -> (Tidemark, tempfile::TempDir, BTreeMap<(u32, i64), Roll>) {
    let dir = tempfile::tempdir().unwrap();
    let t = Tidemark::start(dir.path(), CONFIG, workers);
    push_all(&t, pushes);
    let (want, _, _) = oracle(pushes, 60_000);
    let got = t.eventually("all 1-minute rollups", || {
        let got = fetch(&t, "1m", base);
        (got.len() == want.len()).then_some(got)
    });
    (t, dir, got)
}

#[test]
fn late_and_out_of_order_rollups_match_the_oracle() {
    let base = (now_ms() / 3_600_000 - 6) * 3_600_000;
    let pushes = workload(base);
    let (want, late, dropped) = oracle(&pushes, 60_000);
    assert!(
        late > 0 && dropped > 0,
        "the workload must exercise both paths: late {late}, dropped {dropped}"
    );
    let (t, _dir, got) = run(2, base, &pushes);
    for (k, w) in &want {
        let g = got.get(k).unwrap_or_else(|| panic!("missing rollup {k:?}"));
        assert!(close(g, w), "rollup {k:?}: got {g:?}, want {w:?}");
    }
    assert_eq!(
        t.metric("tidemark_late_samples_total{action=\"dropped\"}") as u64,
        dropped
    );
    assert_eq!(
        t.metric("tidemark_late_samples_total{action=\"accepted\"}") as u64,
        late
    );

    // 1-hour rollups are built from the 1-minute ones and equal the oracle at 1 h.
    let (want_h, _, _) = oracle(&pushes, 3_600_000);
    let got_h = t.eventually("1-hour rollups", || {
        let g = fetch(&t, "1h", base);
        (g.len() == want_h.len()).then_some(g)
    });
    for (k, w) in &want_h {
        assert!(
            close(&got_h[k], w),
            "hour rollup {k:?}: got {:?}, want {w:?}",
            got_h[k]
        );
    }

    // Raw samples keep everything, dropped-from-rollup ones included.
    let total: usize = pushes
        .iter()
        .map(|p| p.iter().filter(|s| s.0 != 99).count())
        .sum();
    let d = t.api(&format!(
        "/api/v1/query?query={}&time={}",
        enc("sum(count_over_time(ctr[2h]))"),
        (base + 3_600_000) / 1000
    ));
    let distinct = distinct_samples(&pushes);
    assert_eq!(
        d["result"][0]["value"][1]
            .as_str()
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        distinct.len(),
        "of {total} pushed"
    );
}

#[test]
fn one_and_two_workers_give_identical_results() {
    let base = (now_ms() / 3_600_000 - 6) * 3_600_000;
    let pushes = workload(base);
    let (t1, _d1, r1) = run(1, base, &pushes);
    let (t2, _d2, r2) = run(2, base, &pushes);
    assert_eq!(r1, r2);
    for q in [
        "sum by (s) (rate(ctr[5m]))",
        "max_over_time(ctr[10m])",
        "ctr",
        "increase(ctr[1h])",
    ] {
        let path = format!(
            "/api/v1/query_range?query={}&start={}&end={}&step=60",
            enc(q),
            base / 1000,
            (base + 2_400_000) / 1000
        );
        assert_eq!(t1.api(&path), t2.api(&path), "{q}");
    }
}

#[test]
fn an_idle_log_advances_event_time_so_windows_close() {
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        "[job]\nout_of_orderness = \"1s\"\nallowed_lateness = \"2m\"\nidle_timeout = \"300ms\"\n";
    let mut t = Tidemark::start(dir.path(), cfg, 2);
    let base = (now_ms() / 60_000 - 120) * 60_000;
    let body: String = [0, 10, 20, 30, 40, 50, 58]
        .iter()
        // Half a second past each second: all inside the minute window (base, base + 1 min].
        .map(|s| format!("idle_metric value={s} {}\n", base + s * 1000 + 500))
        .collect();
    let (status, msg) = t.post("/write?precision=ms", "text/plain", &[], body.as_bytes());
    assert_eq!(status, 204, "{msg}");
    // No later sample ever comes: only idle ticks can move the watermark past the window end.
    let d = t.eventually("the idle tick to close the minute", || {
        let d = t.api(&format!(
            "/api/v1/rollups?match[]=idle_metric&start={}&end={}",
            base / 1000 - 60,
            base / 1000 + 60
        ));
        (!d.as_array().unwrap().is_empty()).then_some(d)
    });
    let r = &d[0]["rollups"][0];
    assert_eq!(
        (r["count"].as_u64(), r["sum"].as_str(), r["last"].as_str()),
        (Some(7), Some("208"), Some("58"))
    );
    assert!(t.metric("tidemark_watermark_seconds") * 1000.0 >= (base + 60_000) as f64);
    // The ticks are in the log, so a restart replays to the same rollup.
    t.kill();
    t.spawn();
    let d = t.eventually("the rollup after restart", || {
        let d = t.api(&format!(
            "/api/v1/rollups?match[]=idle_metric&start={}&end={}",
            base / 1000 - 60,
            base / 1000 + 60
        ));
        (!d.as_array().unwrap().is_empty()).then_some(d)
    });
    assert_eq!(d[0]["rollups"][0]["count"].as_u64(), Some(7));
}

/// Runs the `tidemark` command line; returns (success, stdout + stderr).
fn cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn replaying_the_embedded_log_rebuilds_identical_rollups_without_duplicates() {
    let base = (now_ms() / 3_600_000 - 8) * 3_600_000;
    // Two hours of the disorderly workload (the first without its closing flush).
    let mut pushes = workload(base);
    pushes.pop();
    let second_hour = pushes.len() as u64;
    pushes.extend(workload(base + 3_600_000));
    let (t, _dir, minutes) = run(2, base, &pushes);
    let (want_h, _, _) = oracle(&pushes, 3_600_000);
    let hours = t.eventually("1-hour rollups", || {
        let g = fetch(&t, "1h", base);
        (g.len() == want_h.len()).then_some(g)
    });
    let count_query = format!(
        "/api/v1/query?query={}&time={}",
        enc("sum(count_over_time(ctr[3h]))"),
        (base + 2 * 3_600_000) / 1000
    );
    let raw_count = t.api(&count_query)["result"][0]["value"][1].clone();
    assert!(raw_count.is_string(), "{raw_count}");

    // From a time inside the second hour: the log's own record time ranges pick the first
    // record with a sample of that hour, windows from that hour on are rebuilt.
    let at = base + 3_600_000 + 20 * 60_000;
    let (ok, out) = cli(&[
        "replay",
        "--from-time",
        &tidemark::time::rfc3339(at),
        "--to",
        &t.url,
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("caught up"), "{out}");
    let status = t.api("/api/v1/replay");
    assert_eq!(status["rollups_from"], base + 3_600_000, "{status}");
    // Records before the second workload hold only first-hour samples (the held-back ones of
    // the first hour come before it), so the replay starts at its first push at the latest.
    let from = status["from"].as_u64().unwrap();
    assert!(from <= second_hour && from > 0, "replay started at {from}");
    let again = t.eventually("rollups after replaying from a time", || {
        let m = fetch(&t, "1m", base);
        (m == minutes).then_some(m)
    });
    assert_eq!(again, minutes);
    assert_eq!(fetch(&t, "1h", base), hours);
    assert_eq!(t.api(&count_query)["result"][0]["value"][1], raw_count);

    // From an offset: every window after the newest sample before it is rebuilt.
    let (ok, out) = cli(&["replay", "--from-offset", "3", "--to", &t.url]);
    assert!(ok, "{out}");
    let status = t.api("/api/v1/replay");
    assert_eq!(status["from"], 3, "{status}");
    assert_eq!(
        status["rollups_from"].as_i64().unwrap() % 3_600_000,
        0,
        "{status}"
    );
    t.eventually("rollups after replaying from an offset", || {
        (fetch(&t, "1m", base) == minutes).then_some(())
    });
    assert_eq!(fetch(&t, "1h", base), hours);
    assert_eq!(t.api(&count_query)["result"][0]["value"][1], raw_count);

    // Bad requests: clear errors, the job keeps running.
    let (ok, out) = cli(&["replay", "--from-offset", "999999", "--to", &t.url]);
    assert!(!ok);
    assert!(out.contains("past the end of the log"), "{out}");
    let (ok, out) = cli(&["replay", "--from-time", "yesterday", "--to", &t.url]);
    assert!(!ok);
    assert!(out.contains("from_time"), "{out}");
    let (status, msg) = t.post(
        "/write?precision=ms",
        "text/plain",
        &[],
        format!("ctr,s=s7 value=1 {}\n", base + 2 * 3_600_000).as_bytes(),
    );
    assert_eq!(status, 204, "{msg}");
}

const CHECKPOINTS: &str = "[job]\nout_of_orderness = \"5s\"\nallowed_lateness = \"2m\"\nidle_timeout = \"1h\"\n[checkpoint]\ninterval = \"1s\"\n";

/// Waits for a checkpoint of this process whose cut covers the first `records` log records
/// (each push is one record).
fn checkpointed(t: &Tidemark, records: usize) {
    t.eventually("a checkpoint covering the pushes", || {
        (t.metric("tidemark_checkpoint_last_log_offset") >= records as f64).then_some(())
    });
}

/// Every 1-minute and 1-hour rollup and the raw sample count equal the oracle's.
fn assert_oracle(t: &Tidemark, base: i64, pushes: &[Push]) {
    for (res, width) in [("1m", 60_000), ("1h", 3_600_000)] {
        let (want, _, _) = oracle(pushes, width);
        let got = t.eventually("every rollup", || {
            let g = fetch(t, res, base);
            (g.len() == want.len()).then_some(g)
        });
        for (k, w) in &want {
            let g = &got[k];
            assert!(close(g, w), "{res} rollup {k:?}: got {g:?}, want {w:?}");
        }
    }
    let distinct = distinct_samples(pushes);
    let d = t.api(&format!(
        "/api/v1/query?query={}&time={}",
        enc("sum(count_over_time(ctr[2h]))"),
        (base + 3_600_000) / 1000
    ));
    let n: usize = d["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        n,
        distinct.len(),
        "raw samples: each acknowledged one exactly once"
    );
}

/// The files of a directory of the data dir, sorted by name.
fn files_in(t: &Tidemark, sub: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(t.data_dir.join(sub))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn checkpoint_files(t: &Tidemark) -> Vec<std::path::PathBuf> {
    files_in(t, "checkpoints")
}

#[test]
fn sigkill_and_resume_from_checkpoints_give_the_oracle_rollups() {
    let base = (now_ms() / 3_600_000 - 6) * 3_600_000;
    let pushes = workload(base);
    let third = pushes.len() / 3;
    let dir = tempfile::tempdir().unwrap();
    // Log segments of 1 KiB (records are about 100-300 bytes), so checkpoints truncate the log within the test.
    let env = vec![("TIDEMARK_TEST_LOG_SEGMENT_BYTES".into(), "1024".into())];
    let mut t = Tidemark::start_with_env(dir.path(), CHECKPOINTS, 2, env);
    push_all(&t, &pushes[..third]);
    checkpointed(&t, third);
    // The log before the oldest checkpoint kept is gone: the restart cannot replay it.
    t.eventually("the log truncated behind the checkpoints", || {
        (t.metric("tidemark_checkpoint_log_segments_deleted_total") > 0.0).then_some(())
    });
    let segments = segment_names(&t);
    assert_ne!(segments[0], "00000000000000000000.seg", "{segments:?}");
    t.kill();
    t.spawn();
    // The restart loaded the checkpoint (4 counters) and read only the log after it.
    assert!(t.metric("tidemark_checkpoint_restore_series") >= 4.0);
    push_all(&t, &pushes[third..2 * third]);
    checkpointed(&t, 2 * third);
    t.kill();
    // The newest checkpoint is damaged: the previous one and the log after it are used.
    let files = checkpoint_files(&t);
    assert_eq!(files.len(), 2, "two kept: {files:?}");
    let newest = files.last().unwrap();
    let mut b = std::fs::read(newest).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x10;
    std::fs::write(newest, &b).unwrap();
    t.spawn();
    assert_eq!(t.metric("tidemark_checkpoint_damaged_skipped_total"), 1.0);
    assert!(t.metric("tidemark_checkpoint_restore_series") >= 4.0);
    let log = std::fs::read_to_string(&t.log_path).unwrap();
    assert!(
        log.contains("checkpoint not usable, trying the previous one")
            && log.contains("checksum mismatch"),
        "{log}"
    );
    push_all(&t, &pushes[2 * third..]);
    assert_oracle(&t, base, &pushes);
}

/// Sealed chunks go to `<data_dir>/chunks/`; a checkpoint references them instead of
/// copying them, and a restart after SIGKILL reads them from there.
#[test]
fn sealed_chunks_on_disk_are_referenced_by_the_checkpoint_and_read_after_sigkill() {
    let base = (now_ms() / 3_600_000 - 6) * 3_600_000;
    let pushes = workload(base);
    let dir = tempfile::tempdir().unwrap();
    let mut t = Tidemark::start(dir.path(), CHECKPOINTS, 2);
    push_all(&t, &pushes);
    // 240 samples a counter: a sealed chunk each, spilled within seconds.
    t.eventually("sealed chunks on disk", || {
        (t.metric("tidemark_hot_chunk_disk_bytes") > 0.0).then_some(())
    });
    let written = t.metric("tidemark_checkpoints_total{result=\"written\"}");
    t.eventually("a checkpoint after the spill", || {
        (t.metric("tidemark_checkpoints_total{result=\"written\"}") > written).then_some(())
    });
    let on_disk = t.metric("tidemark_hot_chunk_disk_bytes");
    let in_memory_before = t.metric("tidemark_memory_bytes{component=\"hot_samples\"}");
    t.kill();
    assert!(!files_in(&t, "chunks").is_empty());
    t.spawn();
    // Loaded from the checkpoint as references: nothing was re-read into memory.
    assert!(t.metric("tidemark_checkpoint_restore_series") >= 4.0);
    assert!(t.metric("tidemark_hot_chunk_disk_bytes") >= on_disk);
    assert!(t.metric("tidemark_memory_bytes{component=\"hot_samples\"}") <= in_memory_before);
    assert_oracle(&t, base, &pushes);
    assert_eq!(t.metric("tidemark_hot_chunk_read_errors_total"), 0.0);
}

/// 1-minute rollups leave memory after `[hot] minute_rollup_retention` once the cold 1m tier
/// has them; `/api/v1/rollups` then answers from that tier, with the same figures.
#[test]
fn minute_rollups_past_their_hot_retention_are_answered_from_the_cold_tier() {
    let base = (now_ms() / 3_600_000 - 6) * 3_600_000;
    let pushes = workload(base);
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{CHECKPOINTS}[hot]\nminute_rollup_retention = \"10m\"\n");
    let env = vec![("TIDEMARK_TEST_GC_INTERVAL_MS".into(), "200".into())];
    let t = Tidemark::start_with_env(dir.path(), &config, 2, env);
    push_all(&t, &pushes);
    // The flush sample 4 h after the data seals its partitions; then the 1-minute rollups
    // (4 series x 40 windows; 1-hour ones stay) leave memory.
    // (4 series x 40 windows: about 2.9 KB with the 1-hour rollups, which stay: 0.65 KB.)
    t.eventually("1-minute rollups out of memory", || {
        (t.metric("tidemark_memory_bytes{component=\"hot_rollups\"}") < 1000.0).then_some(())
    });
    assert!(!files_in(&t, "cold/tier=1m").is_empty());
    assert_oracle(&t, base, &pushes);
}

#[test]
fn a_checkpoint_killed_half_written_is_discarded_and_the_previous_one_used() {
    let base = (now_ms() / 3_600_000 - 6) * 3_600_000;
    let pushes = workload(base);
    let half = pushes.len() / 2;
    let dir = tempfile::tempdir().unwrap();
    let mut t = Tidemark::start(dir.path(), CHECKPOINTS, 2);
    push_all(&t, &pushes[..half]);
    checkpointed(&t, half);
    t.kill();
    // The next process pauses half way through every checkpoint write.
    t.env = vec![("TIDEMARK_TEST_CHECKPOINT_PAUSE_MS".into(), "120000".into())];
    t.spawn();
    push_all(&t, &pushes[half..]);
    let tmp = t.eventually("a checkpoint write in progress", || {
        checkpoint_files(&t)
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "tmp"))
    });
    let log = std::fs::read_to_string(&t.log_path).unwrap();
    assert!(log.contains("pausing 120000 ms half way"), "{log}");
    t.kill(); // inside the write: the .tmp is there and the rename has not happened
    assert!(tmp.exists());
    t.env.clear();
    t.spawn();
    let log = std::fs::read_to_string(&t.log_path).unwrap();
    assert!(
        log.contains("a checkpoint write that did not finish"),
        "{log}"
    );
    assert!(checkpoint_files(&t)
        .iter()
        .all(|p| p.extension().is_some_and(|e| e == "tdc")));
    assert!(t.metric("tidemark_checkpoint_restore_series") >= 4.0);
    assert_oracle(&t, base, &pushes);
}

/// The log's segment file names, sorted (oldest first).
fn segment_names(t: &Tidemark) -> Vec<String> {
    files_in(t, "log")
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .filter(|n| n.ends_with(".seg"))
        .collect()
}

#[test]
fn a_process_killed_inside_a_log_truncation_restarts_and_finishes_it() {
    let base = (now_ms() / 3_600_000 - 6) * 3_600_000;
    let pushes = workload(base);
    let half = pushes.len() / 2;
    let dir = tempfile::tempdir().unwrap();
    // A few records a segment, so that a truncation deletes several.
    let small = (
        "TIDEMARK_TEST_LOG_SEGMENT_BYTES".to_string(),
        "512".to_string(),
    );
    let pause = (
        "TIDEMARK_TEST_LOG_TRUNCATE_PAUSE_MS".to_string(),
        "120000".to_string(),
    );
    let mut t = Tidemark::start_with_env(dir.path(), CHECKPOINTS, 2, vec![small.clone(), pause]);
    push_all(&t, &pushes[..half]);
    // The checkpointer is inside a truncation: one segment deleted, more to go.
    let line = t.eventually("a log truncation paused half way", || {
        let log = std::fs::read_to_string(&t.log_path).ok()?;
        log.lines()
            .find(|l| l.contains("TIDEMARK_TEST_LOG_TRUNCATE_PAUSE_MS"))
            .map(str::to_string)
    });
    let to_go: usize = line
        .split("segment deleted, ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(to_go >= 1, "{line}");
    let at_kill = segment_names(&t);
    t.kill();
    assert_ne!(
        at_kill[0], "00000000000000000000.seg",
        "one segment was deleted"
    );
    let leftovers: Vec<String> = at_kill[..to_go].to_vec();
    for s in &leftovers {
        assert!(t.data_dir.join("log").join(s).exists(), "{s} left behind");
    }
    // The restart opens the log as the killed truncation left it and loads the checkpoint.
    t.env = vec![small];
    t.spawn();
    assert!(t.metric("tidemark_checkpoint_restore_series") >= 4.0);
    push_all(&t, &pushes[half..]);
    // The next truncation deletes what the killed one left: no orphaned segments.
    t.eventually(
        "the segments the killed truncation left are deleted",
        || {
            let now = segment_names(&t);
            leftovers.iter().all(|s| !now.contains(s)).then_some(())
        },
    );
    assert_oracle(&t, base, &pushes);
}

/// Every file under the cold tiers' directory of the data dir, recursively.
fn cold_files(t: &Tidemark) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    walk(&t.data_dir.join("cold"), &mut out);
    out.sort();
    out
}

#[test]
fn a_process_killed_inside_a_cold_partition_seal_writes_the_partition_once_on_restart() {
    let base = (now_ms() / 3_600_000 - 6) * 3_600_000;
    let pushes = workload(base);
    let dir = tempfile::tempdir().unwrap();
    let pause = (
        "TIDEMARK_TEST_COLD_WRITE_PAUSE_MS".to_string(),
        "120000".to_string(),
    );
    // The raw tier's files: its first hour seals only when the flush sample comes.
    let only_raw = (
        "TIDEMARK_TEST_COLD_WRITE_PAUSE_MATCH".to_string(),
        "tier=raw/".to_string(),
    );
    let mut t = Tidemark::start_with_env(dir.path(), CHECKPOINTS, 2, vec![pause, only_raw]);
    // A checkpoint of the first pushes; then the rest: partitions seal as event time passes
    // them (the far-future flush sample, the last push, closes the first hour), and each file
    // write pauses once its first record batch is encoded.
    let third = pushes.len() / 3;
    push_all(&t, &pushes[..third]);
    checkpointed(&t, third);
    push_all(&t, &pushes[third..]);
    let path = t.paused_cold_write();
    let file = t.data_dir.join("cold").join(&path);
    // Inside the seal: the file is not there, and the writer's sealed-through mark has not
    // moved past its partition (so the restart must write it).
    assert!(!file.exists(), "{path} is not finished before the kill");
    let sealed_before = cold_files(&t)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .count();
    t.kill();
    assert!(!file.exists());
    t.env.clear();
    t.spawn();
    // It started from the checkpoint taken before the seal, and the log after it.
    assert!(t.metric("tidemark_checkpoint_restore_series") >= 4.0);
    // The restart seals the partition from what it rebuilt.
    t.eventually("the killed write done again", || {
        file.exists().then_some(())
    });
    let parquet: Vec<_> = cold_files(&t)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert!(parquet.len() > sealed_before, "{parquet:?}");
    // No unfinished upload or temporary file anywhere in the cold tiers.
    let stray: Vec<_> = cold_files(&t)
        .into_iter()
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            !(ext == "parquet" || ext == "json")
        })
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    // Every raw sample of the sealed hour is in the raw tier once (DuckDB reads the files).
    let hour: std::collections::BTreeSet<(u32, i64)> = distinct_samples(&pushes)
        .into_iter()
        .filter(|&(_, ts)| ts < base + 3_600_000)
        .collect();
    let glob = format!(
        "read_parquet('{}/tier=raw/**/*.parquet', hive_partitioning=1)",
        t.data_dir.join("cold").display()
    );
    let raw = t.eventually("the first hour's raw partition", || {
        cold_files(&t)
            .iter()
            .any(|p| {
                p.to_string_lossy().contains("tier=raw")
                    && p.extension().is_some_and(|e| e == "parquet")
            })
            .then_some(())?;
        let r = support::duckdb::query(&format!(
            "SELECT count(*), count(DISTINCT (series_id, ts)) FROM {glob} WHERE metric = 'ctr'"
        ));
        let n = |v: &serde_json::Value| v.as_i64().unwrap_or(-1);
        (n(&r[0][0]) >= hour.len() as i64).then(|| (n(&r[0][0]), n(&r[0][1])))
    });
    assert_eq!(
        raw,
        (hour.len() as i64, hour.len() as i64),
        "each sample once"
    );
    assert_oracle(&t, base, &pushes);
}

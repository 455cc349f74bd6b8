//! The footprint at restart: `tidemark up` with its defaults (the fleet rules on) takes
//! 200,000 series of the fleet workload, checkpoints, is killed, and starts again on that data
//! dir: the restart must not need more memory than the live run did (peak RSS, a ratio, not a
//! time), and it must have loaded the checkpoint rather than replayed the whole log.

mod support;

use support::Tidemark;

/// Peak resident set (VmHWM) of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb * 1024
}

#[test]
fn a_restart_of_200k_series_with_the_default_rules_stays_under_the_live_peak() {
    const HOSTS: usize = 50_000; // x 4 metrics
    const POINTS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let mut t = Tidemark::start(dir.path(), "[checkpoint]\ninterval = \"3s\"\n", 2);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark-loadgen"))
        .args(["--url", &t.url, "--hosts", &HOSTS.to_string()])
        .args(["--points", &POINTS.to_string(), "--stream"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let series = (HOSTS * 4) as f64;
    t.eventually("every sample in the hot index", || {
        (t.metric("tidemark_hot_samples") >= series * POINTS as f64).then_some(())
    });
    // Each series is pushed in order, but the job's two workers decode alternate log records;
    // without the held-back sample and the bound on how far a worker reads ahead, 18-47 % of
    // the samples reached their series out of order (benches/README.md, Footprint).
    let ooo = t.metric("tidemark_hot_samples_out_of_order_total");
    assert!(
        ooo <= series * POINTS as f64 / 100.0,
        "{ooo} samples out of order"
    );
    // The default rules kept up incrementally over the whole push: a first run starts at the
    // oldest sample (not an hour of empty ticks before it, which the engine evaluated), and
    // a push read back a minute or two of event time per step is not a catch-up.
    t.eventually("rule ticks evaluated", || {
        (t.metric("tidemark_rule_evaluations_total{path=\"incremental\"}") > 0.0).then_some(())
    });
    assert_eq!(
        t.metric("tidemark_rule_evaluations_total{path=\"engine\"}"),
        0.0,
        "rule ticks the query engine evaluated"
    );
    let end = t.metric("tidemark_log_end_offset");
    t.eventually("a checkpoint covering the whole log", || {
        (t.metric("tidemark_checkpoint_last_log_offset") >= end).then_some(())
    });
    let live = peak_rss(t.child.as_ref().unwrap().id());
    t.kill();
    t.spawn();
    let restarted = peak_rss(t.child.as_ref().unwrap().id());
    assert!(
        t.metric("tidemark_checkpoint_restore_series") >= series,
        "the restart loaded the checkpoint"
    );
    assert!(t.metric("tidemark_hot_samples") >= series * POINTS as f64);
    let ratio = restarted as f64 / live as f64;
    eprintln!(
        "live peak {} MiB, restart peak {} MiB: {ratio:.2}",
        live >> 20,
        restarted >> 20
    );
    assert!(
        ratio <= 1.0,
        "the restart peaked at {ratio:.2} x the live run ({} vs {} MiB)",
        restarted >> 20,
        live >> 20
    );
}

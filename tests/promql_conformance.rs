//! Runs the shared PromQL conformance scripts (`../shared/conformance/promql/*.test`) through
//! `tidemark promqltest` and keeps the pass count from going down. Raise `MIN_PASSED` when the
//! engine improves; the per-file figures are in `benches/README.md`.

use std::path::PathBuf;
use std::process::Command;

/// Float cases passed at the last recorded run.
const MIN_PASSED: usize = 620;

fn scripts() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/promql");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "the conformance scripts are expected at {}: {e}",
                dir.display()
            )
        })
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    v.sort();
    v
}

#[test]
fn promqltest_pass_count_does_not_go_down() {
    let files = scripts();
    assert!(files.len() >= 10, "found only {} scripts", files.len());
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .arg("promqltest")
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    println!("{text}");
    let last = text.lines().last().unwrap();
    let passed: usize = last.split(' ').next().unwrap().parse().unwrap();
    assert!(
        passed >= MIN_PASSED,
        "conformance went down: {passed} < {MIN_PASSED}\n{text}"
    );
}

#[test]
fn runner_fails_wrong_expectations() {
    // A script whose expectation is wrong must count as failed, never as passed.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("wrong.test");
    std::fs::write(&p, "load 1m\n  m{a=\"1\"} 1 2 3\n\neval instant at 2m m\n  m{a=\"1\"} 4\n\neval instant at 2m m\n  m{a=\"1\"} 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .arg("promqltest")
        .arg(&p)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines().last().unwrap() == "1 passed, 1 failed",
        "{text}"
    );
}

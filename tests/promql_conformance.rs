//! Runs the shared PromQL conformance scripts (`../shared/conformance/promql/*.test`) through
//! `tidemark promqltest` with the strict runner (a case is unsupported only when it needs
//! native-histogram samples; annotations, error messages and the times of range vectors are
//! checked) and holds the floor of every file: passes may not go down nor unsupported cases
//! up. Raise the floor when the engine improves; the per-file figures are in the README.

use std::path::PathBuf;
use std::process::Command;

/// Per file: float cases passed and cases unsupported at the last recorded run.
const FLOOR: &[(&str, usize, usize)] = &[
    ("aggregators.test", 125, 35),
    ("collision.test", 2, 0),
    ("ema_over_time.test", 13, 0),
    ("functions.test", 333, 98),
    ("histograms.test", 93, 92),
    ("limit.test", 1, 36),
    ("literals.test", 25, 0),
    ("name_label_dropping.test", 30, 0),
    ("range_queries.test", 17, 1),
    ("selectors.test", 31, 0),
    ("staleness.test", 17, 0),
    ("trig_functions.test", 19, 0),
];

/// Prometheus's scripts (`../shared/conformance/promql`) and Tidemark's own (`tests/promql`:
/// `ema_over_time`).
fn scripts() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut v: Vec<PathBuf> = Vec::new();
    for dir in [
        root.join("../shared/conformance/promql"),
        root.join("tests/promql"),
    ] {
        v.extend(
            std::fs::read_dir(&dir)
                .unwrap_or_else(|e| {
                    panic!(
                        "the conformance scripts are expected at {}: {e}",
                        dir.display()
                    )
                })
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "test")),
        );
    }
    v.sort();
    v
}

/// `N passed, N failed, N unsupported` of a report line.
fn counts(line: &str) -> (usize, usize, usize) {
    let n: Vec<usize> = line
        .rsplit(": ")
        .next()
        .unwrap()
        .split(", ")
        .map(|p| p.split(' ').next().unwrap().parse().unwrap())
        .collect();
    (n[0], n[1], n[2])
}

#[test]
fn promqltest_holds_the_floor_of_every_file() {
    let files = scripts();
    assert!(files.len() >= 12, "found only {} scripts", files.len());
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .arg("promqltest")
        .arg("-v")
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
    let mut below = Vec::new();
    for (file, min_passed, max_unsupported) in FLOOR {
        let line = text
            .lines()
            .find(|l| !l.starts_with(' ') && l.contains(&format!("/{file}: ")))
            .unwrap_or_else(|| panic!("no report line for {file}\n{text}"));
        let (passed, _, unsupported) = counts(line);
        if passed < *min_passed || unsupported > *max_unsupported {
            below.push(format!(
                "{file}: {passed} passed (floor {min_passed}), {unsupported} unsupported (at most {max_unsupported})"
            ));
        }
    }
    assert!(
        below.is_empty(),
        "conformance went down:\n{}\n{text}",
        below.join("\n")
    );
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert!(
            FLOOR.iter().any(|(n, _, _)| *n == name),
            "{name} has no floor: add it to FLOOR"
        );
    }
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

//! Logs of the real binary: every stderr line of `tidemark up` is a logfmt (default) or JSON
//! record with a time, a level and a component; request logs only at `--log.level=debug`; a
//! bad log flag is refused with what to use.

mod support;

use std::process::Command;

use support::Tidemark;
use tidemark::logging::parse_logfmt;

const LEVELS: [&str; 4] = ["debug", "info", "warn", "error"];
const COMPONENTS: [&str; 10] = [
    "ingest", "log", "job", "rules", "notify", "tiers", "kafka", "cluster", "http", "cli",
];

/// Pushes one sample and asks one query, then stops the server with SIGTERM (so the shutdown
/// lines are written too); returns its log.
fn run(t: &mut Tidemark) -> String {
    let (code, body) = t.post("/write", "text/plain", &[], b"cpu,host=a value=1\n");
    assert_eq!(code, 204, "{body}");
    let (code, body) = t.get("/api/v1/query?query=up");
    assert_eq!(code, 200, "{body}");
    assert!(t.terminate().success());
    std::fs::read_to_string(&t.log_path).unwrap()
}

#[test]
fn logfmt_by_default_every_line_with_level_and_component_and_no_request_logs() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Tidemark::start(dir.path(), "", 1);
    let log = run(&mut t);
    let mut msgs = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let pairs = parse_logfmt(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let keys: Vec<&str> = pairs.iter().take(4).map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["ts", "level", "component", "msg"], "{line}");
        let get = |k: &str| pairs.iter().find(|(a, _)| a == k).unwrap().1.clone();
        assert!(tidemark::time::parse_rfc3339(&get("ts")).is_ok(), "{line}");
        assert!(LEVELS.contains(&get("level").as_str()), "{line}");
        assert!(COMPONENTS.contains(&get("component").as_str()), "{line}");
        assert_ne!(get("level"), "debug", "{line}");
        msgs.push((get("component"), get("msg")));
    }
    let has = |c: &str, m: &str| msgs.iter().any(|(a, b)| a == c && b.starts_with(m));
    assert!(has("http", "listening on http://127.0.0.1:"), "{log}");
    assert!(has("http", "ready: replayed"), "{log}");
    assert!(has("http", "shutting down"), "{log}");
    assert!(has("job", "checkpoint "), "{log}");
    assert!(!msgs.iter().any(|(_, m)| m == "request"), "{log}");
}

#[test]
fn json_lines_and_debug_request_logs() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Tidemark::start_with_args(
        dir.path(),
        "",
        1,
        Vec::new(),
        &["--log.format", "json", "--log.level", "debug"],
    );
    let log = run(&mut t);
    let mut requests = Vec::new();
    let (mut ready, mut checkpoint) = (false, false);
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(tidemark::time::parse_rfc3339(v["ts"].as_str().unwrap()).is_ok());
        assert!(LEVELS.contains(&v["level"].as_str().unwrap()), "{line}");
        assert!(
            COMPONENTS.contains(&v["component"].as_str().unwrap()),
            "{line}"
        );
        assert!(v["msg"].is_string(), "{line}");
        let msg = v["msg"].as_str().unwrap();
        // The lifecycle lines carry their figures as typed fields too.
        if msg.starts_with("ready: replayed") {
            ready = v["records"].is_u64() && v["series"].is_u64() && v["seconds"].is_f64();
        }
        if msg.starts_with("checkpoint ") && msg.contains(" written: ") {
            checkpoint = v["path"].is_string() && v["bytes"].is_u64() && v["series"].is_u64();
        }
        if v["msg"] == "request" {
            assert_eq!(v["component"], "http");
            assert_eq!(v["level"], "debug");
            requests.push((
                v["method"].as_str().unwrap().to_string(),
                v["path"].as_str().unwrap().to_string(),
                v["status"].as_u64().unwrap(),
            ));
        }
    }
    assert!(ready && checkpoint, "{log}");
    assert!(
        requests.contains(&("POST".into(), "/write".into(), 204)),
        "{requests:?}"
    );
    assert!(
        requests.contains(&("GET".into(), "/api/v1/query".into(), 200)),
        "{requests:?}"
    );
}

#[test]
fn bad_log_flags_are_refused_with_what_to_use() {
    for (args, want) in [
        (["--log.level", "loud"], "use debug, info, warn or error"),
        (["--log.format", "xml"], "use logfmt or json"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(args)
            .args(["tiers", "--url", "memory://"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
    }
}

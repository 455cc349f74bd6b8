//! Alert latency: from the push of the sample that crosses a threshold to the webhook request
//! that announces it, through the whole of `tidemark up` (log append, job, watermark with the
//! default 5 s out-of-orderness, rule tick at 1 s resolution, notifier with `group_wait: 0s`,
//! outbox, HTTP). A pusher sends `cpu{host}` for 40 hosts every 97 ms with event time = wall
//! time; every 537 ms one more host jumps to 95 (rule `cpu > 90`, `for: 0s`, grouped by host),
//! so the crossings fall at every phase of the 1 s ticks.
//!
//! Prints p50, p99 and max of the latency, and splits it: a crossing at event time t is
//! evaluated at the next tick at or after t (the *alignment*, uniform in [0, resolution)),
//! which is final once a sample 5 s newer arrived (the out-of-orderness); the rest is the
//! pipeline's own *overhead* (the pusher's 97 ms cadence, log, job, rule tick, notifier,
//! outbox, HTTP).
//!
//! `cargo bench --bench alert_latency` (release) measures the default 1 s resolution and
//! 250 ms; `cargo test --benches` runs 3 crossings at 1 s.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads one HTTP request; returns the `host` label of its first alert.
fn host_of(s: &mut TcpStream) -> Option<String> {
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut len = 0;
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).ok()? == 0 {
            return None;
        }
        let t = l.trim_end();
        if t.is_empty() {
            break;
        }
        if let Some(v) = t.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    let j: serde_json::Value = serde_json::from_slice(&body).ok()?;
    j["alerts"][0]["labels"]["host"]
        .as_str()
        .map(str::to_string)
}

fn post(url: &str, body: String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let _ = agent
        .post(url)
        .header("content-type", "text/plain")
        .send(body.as_bytes());
}

fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    // The default resolution, and a finer one: the tick alignment shrinks with it.
    let runs: &[u64] = if full { &[1_000, 250] } else { &[1_000] };
    for &res in runs {
        run(res, if full { 120 } else { 3 });
    }
}

/// One `tidemark up` with `[rules] resolution = res` ms, `crossings` hosts crossing.
fn run(res: u64, crossings: usize) {
    let hosts = crossings.max(40);
    let dir = tempfile::tempdir().unwrap();
    let hook = TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_port = hook.local_addr().unwrap().port();
    let arrived: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let a = Arc::clone(&arrived);
    std::thread::spawn(move || {
        for s in hook.incoming() {
            let Ok(mut s) = s else { continue };
            let a = Arc::clone(&a);
            std::thread::spawn(move || {
                while let Some(h) = host_of(&mut s) {
                    a.lock().unwrap().push((h, now_ms()));
                }
            });
        }
    });
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n- name: g\n  rules:\n  - alert: Hot\n    expr: cpu > 90\n",
    )
    .unwrap();
    let am = dir.path().join("am.yml");
    std::fs::write(
        &am,
        format!("route:\n  receiver: hook\n  group_by: [host]\n  group_wait: 0s\n  group_interval: 1m\nreceivers:\n- name: hook\n  webhook_configs: [{{url: 'http://127.0.0.1:{hook_port}/'}}]\n"),
    )
    .unwrap();
    let cfg = dir.path().join("tidemark.toml");
    std::fs::write(
        &cfg,
        format!(
            "[rules]\nfiles = [{rules:?}]\nresolution = \"{res}ms\"\n[alerting]\nconfig = {am:?}\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args([
            "up",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--workers",
            "2",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&cfg)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start tidemark");
    let deadline = Instant::now() + Duration::from_secs(60);
    while ureq::get(format!("{url}/-/ready")).call().is_err() {
        assert!(Instant::now() < deadline, "tidemark did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let write = format!("{url}/api/v1/import/prometheus");
    let start = Instant::now();
    // Per host, the event time (= wall time) of its crossing sample.
    let mut pushed: Vec<Option<i64>> = vec![None; hosts];
    let mut next_cross = 0;
    let end = start + Duration::from_millis(537 * crossings as u64 + 9_000);
    while Instant::now() < end {
        let t = now_ms();
        let due = (start.elapsed().as_millis() / 537) as usize;
        let crossing = (next_cross < crossings
            && due > next_cross
            && start.elapsed() > Duration::from_secs(2))
        .then_some(next_cross);
        let mut body = String::new();
        for (h, p) in pushed.iter().enumerate() {
            let hot = p.is_some() || crossing == Some(h);
            body.push_str(&format!(
                "cpu{{host=\"h{h}\"}} {} {t}\n",
                if hot { 95 } else { 20 }
            ));
        }
        let sent = Instant::now();
        post(&write, body);
        if let Some(h) = crossing {
            pushed[h] = Some(t);
            next_cross += 1;
        }
        std::thread::sleep(Duration::from_millis(97).saturating_sub(sent.elapsed()));
    }
    let got = arrived.lock().unwrap().clone();
    let _ = child.kill();
    let _ = child.wait();
    let (mut lat, mut align, mut over) = (Vec::new(), Vec::new(), Vec::new());
    for (h, at) in &got {
        let i: usize = h.trim_start_matches('h').parse().unwrap();
        if let Some(t) = pushed[i] {
            let tick = (t + res as i64 - 1).div_euclid(res as i64) * res as i64;
            lat.push((at - t) as f64 / 1000.0);
            align.push((tick - t) as f64 / 1000.0);
            over.push((at - tick - 5_000) as f64 / 1000.0);
        }
    }
    for v in [&mut lat, &mut align, &mut over] {
        v.sort_by(f64::total_cmp);
    }
    assert_eq!(
        lat.len(),
        next_cross,
        "every crossing notified once: {got:?}"
    );
    let line = |v: &[f64]| {
        format!(
            "p50 {:.3} s, p99 {:.3} s, max {:.3} s",
            pct(v, 0.5),
            pct(v, 0.99),
            v[v.len() - 1]
        )
    };
    println!(
        "alert latency over {} crossings (out-of-orderness 5 s, {res} ms ticks, group_wait 0s): {}\n  = out-of-orderness 5 s + alignment to the tick ({}) + pipeline overhead ({})",
        lat.len(),
        line(&lat),
        line(&align),
        line(&over)
    );
}

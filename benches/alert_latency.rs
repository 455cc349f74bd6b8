//! Alert latency: from the push of the sample that crosses a threshold to the webhook request
//! that announces it, through the whole of `tidemark up` (log append, job, watermark with the
//! default 5 s out-of-orderness, rule tick at 1 s resolution, notifier with `group_wait: 0s`,
//! outbox, HTTP). A pusher sends `cpu{host}` for 40 hosts every 97 ms with event time = wall
//! time; every 500 ms one more host jumps to 95 (rule `cpu > 90`, `for: 0s`, grouped by host).
//! Prints p50, p99 and max, minus and including the out-of-orderness.
//!
//! `cargo bench --bench alert_latency` (release); `cargo test --benches` runs 3 crossings.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    let crossings = if full { 120 } else { 3 };
    let hosts = crossings.max(40);
    let dir = tempfile::tempdir().unwrap();
    let hook = TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_port = hook.local_addr().unwrap().port();
    let arrived: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let a = Arc::clone(&arrived);
    std::thread::spawn(move || {
        for s in hook.incoming() {
            let Ok(mut s) = s else { continue };
            let a = Arc::clone(&a);
            std::thread::spawn(move || {
                while let Some(h) = host_of(&mut s) {
                    a.lock().unwrap().push((h, Instant::now()));
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
        format!("[rules]\nfiles = [{rules:?}]\n[alerting]\nconfig = {am:?}\n"),
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
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let start = Instant::now();
    let mut pushed: Vec<Option<Instant>> = vec![None; hosts];
    let mut next_cross = 0;
    let end = start + Duration::from_millis(500 * crossings as u64 + 9_000);
    while Instant::now() < end {
        let t = now_ms();
        let due = (start.elapsed().as_millis() / 500) as usize;
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
            pushed[h] = Some(sent);
            next_cross += 1;
        }
        // 97 ms, not 100: crossings fall at every phase of the 1 s ticks.
        std::thread::sleep(Duration::from_millis(97).saturating_sub(sent.elapsed()));
    }
    let got = arrived.lock().unwrap().clone();
    let _ = child.kill();
    let _ = child.wait();
    let mut lat: Vec<f64> = Vec::new();
    for (h, at) in &got {
        let i: usize = h.trim_start_matches('h').parse().unwrap();
        if let Some(p) = pushed[i] {
            lat.push(at.duration_since(p).as_secs_f64());
        }
    }
    lat.sort_by(f64::total_cmp);
    assert_eq!(
        lat.len(),
        next_cross,
        "every crossing notified once: {got:?}"
    );
    println!(
        "alert latency over {} crossings (out-of-orderness 5 s, 1 s ticks, group_wait 0s): p50 {:.3} s, p99 {:.3} s, max {:.3} s; minus the out-of-orderness: p50 {:.3} s, p99 {:.3} s",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat[lat.len() - 1],
        pct(&lat, 0.5) - 5.0,
        pct(&lat, 0.99) - 5.0
    );
}

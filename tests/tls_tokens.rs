//! HTTPS on the listener (rustls, a certificate generated for 127.0.0.1 by this test): the
//! API answers over TLS and not over plain HTTP, pushes are stored, and the process scrapes
//! its own /metrics over HTTPS. Write tokens scoped to labels: a sample outside the token's
//! labels is rejected and named, in every push format, and the rest of the batch is kept.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{enc, free_port, Tidemark};

struct Https {
    child: Child,
    url: String,
    agent: ureq::Agent,
    log: std::path::PathBuf,
}

impl Drop for Https {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Https {
    fn get(&self, path: &str) -> (u16, String) {
        let mut r = self
            .agent
            .get(format!("{}{path}", self.url))
            .call()
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    }
}

fn start_https(dir: &std::path::Path) -> Https {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let ca = ureq::tls::Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
                .build(),
        )
        .build()
        .into();
    std::fs::write(
        dir.join("tidemark.toml"),
        format!(
            "[server]\ntls_cert_file = {:?}\ntls_key_file = {:?}\n[scrape]\nself_interval = \"1s\"\n[rules]\nenabled = false\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    )
    .unwrap();
    let log = dir.join("tidemark.log");
    for _ in 0..5 {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--config"])
            .arg(dir.join("tidemark.toml"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let url = format!("https://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if agent
                .get(format!("{url}/-/ready"))
                .call()
                .is_ok_and(|r| r.status() == 200)
            {
                return Https {
                    child,
                    url,
                    agent,
                    log,
                };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!(
        "tidemark did not start over HTTPS: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn https_serves_the_api_stores_pushes_and_scrapes_itself() {
    let d = tempfile::tempdir().unwrap();
    let t = start_https(d.path());
    // Plain HTTP on the same port does not get an answer.
    let plain = support::agent()
        .get(t.url.replace("https://", "http://") + "/-/ready")
        .call();
    assert!(
        plain.as_ref().map_or(true, |r| r.status() != 200),
        "plain HTTP was answered"
    );
    let now = support::now_ms();
    let r = t
        .agent
        .post(format!("{}/api/v1/import/prometheus", t.url))
        .header("Content-Type", "text/plain")
        .send(format!("tls_metric{{x=\"1\"}} 42 {now}\n"))
        .unwrap();
    assert_eq!(r.status(), 204);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = t.get(&format!(
            "/api/v1/query?query={}",
            enc("tls_metric or up{job=\"tidemark\"}")
        ));
        let v: Value = serde_json::from_str(&body).unwrap();
        let r = v["data"]["result"].as_array().cloned().unwrap_or_default();
        let pushed = r.iter().any(|s| s["metric"]["__name__"] == "tls_metric");
        let scraped = r
            .iter()
            .any(|s| s["metric"]["__name__"] == "up" && s["value"][1] == "1");
        if pushed && scraped {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "over HTTPS: {body}\n{}",
            std::fs::read_to_string(&t.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(std::fs::read_to_string(&t.log)
        .unwrap()
        .contains("listening on https://"));
}

#[test]
fn a_bad_tls_setting_stops_the_start_naming_the_key() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("cert.pem"), "not a certificate").unwrap();
    for (cfg, want) in [
        (
            format!(
                "[server]\ntls_cert_file = {:?}\n",
                d.path().join("cert.pem").display().to_string()
            ),
            "set both",
        ),
        (
            format!(
                "[server]\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
                d.path().join("cert.pem").display().to_string(),
                d.path().join("missing.pem").display().to_string()
            ),
            "server.tls_cert_file",
        ),
    ] {
        std::fs::write(d.path().join("tidemark.toml"), cfg).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["up", "--listen", "127.0.0.1:0", "--config"])
            .arg(d.path().join("tidemark.toml"))
            .arg("--data-dir")
            .arg(d.path().join("data"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn scoped_write_tokens_reject_samples_outside_their_labels() {
    let d = tempfile::tempdir().unwrap();
    let t = Tidemark::start(
        d.path(),
        "[rules]\nenabled = false\n[auth]\ntokens = [{ token = \"admin\", role = \"admin\" }, { token = \"tenant-a\", role = \"write\", labels = { tenant = \"a\" } }]\n",
        1,
    );
    let bearer = [("Authorization", "Bearer tenant-a")];
    let now = support::now_ms();
    // The text format: one sample in scope, two outside it.
    let (status, msg) = t.post(
        "/api/v1/import/prometheus",
        "text/plain",
        &bearer,
        format!("jobs{{tenant=\"a\"}} 1 {now}\njobs{{tenant=\"b\"}} 2 {now}\njobs 3 {now}\n")
            .as_bytes(),
    );
    assert_eq!(status, 400, "{msg}");
    assert!(msg.contains("1 samples accepted, 2 rejected"), "{msg}");
    assert!(
        msg.contains("line 2: series jobs{tenant=\"b\"} is outside this token's scope: its samples must carry tenant=\"a\""),
        "{msg}"
    );
    assert!(msg.contains("line 3: series jobs{} is outside"), "{msg}");
    // Influx line protocol and OTLP/JSON are held to the same labels.
    let (status, msg) = t.post(
        "/write?precision=ms",
        "text/plain",
        &bearer,
        format!("disk,tenant=a used=5 {now}\ndisk,tenant=c used=6 {now}\n").as_bytes(),
    );
    assert_eq!(status, 400, "{msg}");
    assert!(
        msg.contains("tenant=\\\"c\\\"") || msg.contains("tenant=\"c\""),
        "{msg}"
    );
    let otlp = format!(
        r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"q","gauge":{{"dataPoints":[
          {{"attributes":[{{"key":"tenant","value":{{"stringValue":"a"}}}}],"timeUnixNano":"{ns}","asDouble":1}},
          {{"attributes":[{{"key":"tenant","value":{{"stringValue":"z"}}}}],"timeUnixNano":"{ns}","asDouble":2}}]}}}}]}}]}}]}}"#,
        ns = now as u128 * 1_000_000
    );
    let (status, body) = t.post(
        "/api/v1/otlp/v1/metrics",
        "application/json",
        &bearer,
        otlp.as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("outside this token's scope"), "{body}");
    // An unscoped admin token writes anything; reads see what was kept.
    let (status, _) = t.post(
        "/api/v1/import/prometheus",
        "text/plain",
        &[("Authorization", "Bearer admin")],
        format!("jobs{{tenant=\"b\"}} 9 {now}\n").as_bytes(),
    );
    assert_eq!(status, 204);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut r = support::agent()
            .get(format!(
                "{}/api/v1/query?query={}",
                t.url,
                enc("count by (__name__, tenant) ({__name__=~\"jobs|disk_used|q\"})")
            ))
            .header("Authorization", "Bearer admin")
            .call()
            .unwrap();
        let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        let mut got: Vec<String> = v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                format!(
                    "{}/{}",
                    s["metric"]["__name__"].as_str().unwrap_or(""),
                    s["metric"]["tenant"].as_str().unwrap_or("")
                )
            })
            .collect();
        got.sort();
        if got == ["disk_used/a", "jobs/a", "jobs/b", "q/a"] {
            break;
        }
        assert!(Instant::now() < deadline, "{got:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

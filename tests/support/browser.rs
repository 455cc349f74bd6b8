//! Real headless Chromium (Debian `chromium`), driven by Debian's `chromedriver` over the W3C
//! WebDriver protocol (JSON over HTTP, with ureq): a fresh profile per browser, the flags this
//! machine's closed network needs, and the browser's console log for the no-errors checks.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{free_port, installed_bin};

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port (another one when the bind loses a race) and a
    /// headless Chromium session.
    pub fn start() -> Browser {
        let chromedriver = installed_bin("chromedriver", "Debian's chromium-driver");
        let chromium = installed_bin("chromium", "Debian's chromium");
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut driver = Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver");
            let base = format!("http://127.0.0.1:{port}");
            let ready = (0..100).any(|_| {
                std::thread::sleep(Duration::from_millis(50));
                ureq::get(&format!("{base}/status")).call().is_ok()
            });
            if !ready {
                last = format!("chromedriver did not answer on port {port}");
                let _ = driver.kill();
                let _ = driver.wait();
                continue;
            }
            let profile = tempfile::tempdir().unwrap();
            let caps = json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [
                        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--no-first-run", "--window-size=1280,900",
                        format!("--user-data-dir={}", profile.path().display()),
                    ],
                },
                "goog:loggingPrefs": {"browser": "ALL"},
            }}});
            match post(&format!("{base}/session"), &caps) {
                Ok(v) => {
                    let session = v["value"]["sessionId"].as_str().unwrap().to_string();
                    return Browser {
                        driver,
                        base,
                        session,
                        _profile: profile,
                    };
                }
                Err(e) => {
                    last = e;
                    let _ = driver.kill();
                    let _ = driver.wait();
                }
            }
        }
        panic!("no browser session: {last}");
    }

    fn url(&self, rest: &str) -> String {
        format!("{}/session/{}{rest}", self.base, self.session)
    }

    pub fn goto(&self, url: &str) {
        post(&self.url("/url"), &json!({ "url": url })).unwrap();
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page; its return value.
    pub fn js(&self, script: &str, args: Value) -> Value {
        let v = post(
            &self.url("/execute/sync"),
            &json!({"script": script, "args": args}),
        )
        .unwrap_or_else(|e| panic!("script {script}: {e}"));
        v["value"].clone()
    }

    /// Waits until `script` returns something other than null/false; returns it.
    pub fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.js(script, json!([]));
            if !v.is_null() && v != json!(false) {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "waited 30 s for {what}; page state {}, errors {}",
                    self.js("return document.body.dataset.state", json!([])),
                    self.js("return window.tidemarkErrors", json!([]))
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Answers the page's open `prompt()` with `text` (WebDriver's user prompt commands).
    pub fn answer_prompt(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while post(&self.url("/alert/text"), &json!({ "text": text })).is_err() {
            assert!(Instant::now() < deadline, "no prompt opened");
            std::thread::sleep(Duration::from_millis(50));
        }
        post(&self.url("/alert/accept"), &json!({})).unwrap();
    }

    /// The browser console's entries at level SEVERE since the last call (chromedriver's log
    /// endpoint).
    pub fn severe_console(&self) -> Vec<String> {
        let v = post(&self.url("/se/log"), &json!({"type": "browser"})).unwrap_or_default();
        v["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Saves a PNG of the page to `path`.
    pub fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let text = ureq::get(&self.url("/screenshot"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(v["value"].as_str().unwrap())
            .unwrap();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn post(url: &str, body: &Value) -> Result<Value, String> {
    let mut r = ureq::post(url)
        .config()
        .http_status_as_error(false)
        .build()
        .header("content-type", "application/json")
        .send(&serde_json::to_vec(body).unwrap()[..])
        .map_err(|e| format!("{url}: {e}"))?;
    let status = r.status().as_u16();
    let text = r
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .map_err(|e| format!("{url}: {e}"))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{url}: {e}: {text}"))?;
    if status != 200 {
        return Err(format!("{url}: HTTP {status}: {v}"));
    }
    Ok(v)
}

//! Test support: starts the real `tidemark` binary on a free loopback port with its own data
//! dir, and talks HTTP to it.
#![allow(dead_code)]

pub mod browser;
pub mod cluster;
pub mod duckdb;
pub mod fleet;
pub mod kafka;
pub mod receivers;
pub mod s3;
pub mod targets;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An installed program: on the PATH or in `~/.cargo/bin`; panics with how to install it.
pub fn installed_bin(name: &str, install: &str) -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(PathBuf::from)
        .chain(
            std::env::var("HOME")
                .ok()
                .map(|h| PathBuf::from(h).join(".cargo/bin")),
        )
    {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed: run `bash .ci/test`, which installs it ({install})");
}

/// A free port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `tidemark up`.
pub struct Tidemark {
    pub child: Option<Child>,
    pub url: String,
    pub data_dir: PathBuf,
    pub config: Option<PathBuf>,
    pub workers: usize,
    pub log_path: PathBuf,
    /// `tidemark ingest` instead of `tidemark up`.
    pub ingest: bool,
    /// Extra environment variables (e.g. `AWS_*` for an S3 cold store).
    pub env: Vec<(String, String)>,
    /// What a start waits for: `/-/ready`, or `/-/healthy` for a process that is meant to
    /// start unready (ingest before its brokers are up).
    probe: &'static str,
    /// Extra command-line arguments (e.g. `--log.format json`).
    pub args: Vec<String>,
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

impl Tidemark {
    /// Starts a server with `config` (TOML text, may be empty) in `dir`.
    pub fn start(dir: &Path, config: &str, workers: usize) -> Tidemark {
        Self::start_with_env(dir, config, workers, Vec::new())
    }

    /// Like [`Tidemark::start`], with extra environment variables.
    pub fn start_with_env(
        dir: &Path,
        config: &str,
        workers: usize,
        env: Vec<(String, String)>,
    ) -> Tidemark {
        Self::start_with_args(dir, config, workers, env, &[])
    }

    /// Like [`Tidemark::start_with_env`], with extra command-line arguments.
    pub fn start_with_args(
        dir: &Path,
        config: &str,
        workers: usize,
        env: Vec<(String, String)>,
        args: &[&str],
    ) -> Tidemark {
        let cfg_path = dir.join("tidemark.toml");
        // The tests own what is in the log: the self-scrape (on by default) is off unless a
        // test configures `[scrape]` itself.
        let config = if config.contains("[scrape]") {
            config.to_string()
        } else {
            format!("{config}\n[scrape]\nself_scrape = false\n")
        };
        std::fs::write(&cfg_path, config).unwrap();
        let mut t = Tidemark {
            child: None,
            url: String::new(),
            data_dir: dir.join("data"),
            config: Some(cfg_path),
            workers,
            log_path: dir.join("tidemark.log"),
            ingest: false,
            env,
            probe: "/-/ready",
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        t.spawn();
        t
    }

    /// Starts `tidemark ingest` with `config` (its [kafka] table names the brokers) and waits
    /// until it is ready (its brokers answer).
    pub fn start_ingest(dir: &Path, config: &str) -> Tidemark {
        Self::ingest(dir, config, "/-/ready")
    }

    /// Starts `tidemark ingest` and waits only until it serves HTTP (`/-/healthy`): for
    /// brokers that are not up yet, while `/-/ready` says why it is not ready.
    pub fn start_ingest_unready(dir: &Path, config: &str) -> Tidemark {
        Self::ingest(dir, config, "/-/healthy")
    }

    fn ingest(dir: &Path, config: &str, probe: &'static str) -> Tidemark {
        let cfg_path = dir.join("tidemark-ingest.toml");
        std::fs::write(&cfg_path, config).unwrap();
        let mut t = Tidemark {
            child: None,
            url: String::new(),
            data_dir: dir.join("unused"),
            config: Some(cfg_path),
            workers: 0,
            log_path: dir.join("tidemark-ingest.log"),
            ingest: true,
            env: Vec::new(),
            probe,
            args: Vec::new(),
        };
        t.spawn();
        t
    }

    /// (Re)starts the process on a fresh port with the same data dir, and waits until ready.
    /// `free_port` releases the port it found: when another test's process takes it first,
    /// tidemark cannot bind it and exits, and the start is retried on another port.
    pub fn spawn(&mut self) {
        for _ in 0..4 {
            let port = self.launch(free_port());
            if !self.wait_ready(&format!("binding 127.0.0.1:{port}")) {
                return;
            }
        }
        panic!("tidemark could not bind a free port in 4 tries");
    }

    /// Starts the child listening on `port`.
    fn launch(&mut self, port: u16) -> u16 {
        self.url = format!("http://127.0.0.1:{port}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
        if self.ingest {
            cmd.arg("ingest")
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"));
        } else {
            cmd.arg("up")
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data-dir")
                .arg(&self.data_dir)
                .arg("--workers")
                .arg(self.workers.to_string());
        }
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        cmd.args(&self.args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tidemark");
        self.child = Some(child);
        port
    }

    /// Waits until ready; true when the child exited because it could not bind (its log
    /// says `bind_error`, which names the port), to be retried.
    fn wait_ready(&mut self, bind_error: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        let a = agent();
        while Instant::now() < deadline {
            if let Ok(r) = a.get(format!("{}{}", self.url, self.probe)).call() {
                if r.status() == 200 {
                    return false;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
                if log.contains(bind_error) {
                    self.child = None;
                    return true;
                }
                panic!("tidemark exited with {status}: {log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "tidemark not ready in 60s: {}",
            std::fs::read_to_string(&self.log_path).unwrap_or_default()
        );
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let c = self.child.take().expect("running");
        let pid = c.id();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        let mut c = c;
        c.wait().unwrap()
    }

    /// POSTs a body; returns (status, body text).
    pub fn post(
        &self,
        path: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        let mut req = agent()
            .post(format!("{}{}", self.url, path))
            .header("Content-Type", content_type);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut r = req.send(body).expect("request");
        let status = r.status().as_u16();
        let mut s = String::new();
        r.body_mut().as_reader().read_to_string(&mut s).unwrap();
        (status, s)
    }

    /// Pushes `body` in the Prometheus text format (`/api/v1/import/prometheus`) and asserts
    /// that it was taken.
    pub fn push_text(&self, body: &str) {
        let (status, text) = self.post(
            "/api/v1/import/prometheus",
            "text/plain",
            &[],
            body.as_bytes(),
        );
        assert!(status < 300, "{status} {text}");
    }

    /// GETs a path; returns (status, body text).
    pub fn get(&self, path_and_query: &str) -> (u16, String) {
        self.get_with(path_and_query, &[])
    }

    /// [`Tidemark::get`] with request headers (a bearer token).
    pub fn get_with(&self, path_and_query: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut req = agent().get(format!("{}{}", self.url, path_and_query));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut r = req.call().expect("request");
        let status = r.status().as_u16();
        let mut s = String::new();
        r.body_mut().as_reader().read_to_string(&mut s).unwrap();
        (status, s)
    }

    /// GETs an API path and parses the JSON, asserting success.
    pub fn api(&self, path_and_query: &str) -> serde_json::Value {
        let (status, body) = self.get(path_and_query);
        assert_eq!(status, 200, "{path_and_query}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{body}");
        v["data"].clone()
    }

    /// Value of one of the server's own metrics.
    pub fn metric(&self, name_and_labels: &str) -> f64 {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find_map(|l| {
                l.strip_prefix(name_and_labels)
                    .and_then(|r| r.strip_prefix(' '))
                    .map(|v| v.parse().unwrap())
            })
            .unwrap_or_else(|| panic!("metric {name_and_labels} not found in {body}"))
    }

    /// The cold file whose write paused half way (`TIDEMARK_TEST_COLD_WRITE_PAUSE_MS`), as
    /// its path under the cold store, once the server's log says so.
    pub fn paused_cold_write(&self) -> String {
        let line = self.eventually("a cold file write paused half way", || {
            let log = std::fs::read_to_string(&self.log_path).ok()?;
            log.lines()
                .find(|l| l.contains("TIDEMARK_TEST_COLD_WRITE_PAUSE_MS"))
                .map(str::to_string)
        });
        tidemark::logging::parse_logfmt(&line)
            .unwrap_or_else(|e| panic!("{line}: {e}"))
            .into_iter()
            .find_map(|(k, v)| (k == "path").then_some(v))
            .unwrap_or_else(|| panic!("no path in {line}"))
    }

    /// The server's log with each logfmt line decoded: its `msg` unescaped, then its other
    /// fields as `key=value` (lines that are not logfmt as they are), for matching what a line
    /// says.
    pub fn log_text(&self) -> String {
        let raw = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        raw.lines()
            .map(|l| match tidemark::logging::parse_logfmt(l) {
                Ok(pairs) => pairs
                    .into_iter()
                    .filter(|(k, _)| k != "ts")
                    .map(|(k, v)| if k == "msg" { v } else { format!("{k}={v}") })
                    .collect::<Vec<_>>()
                    .join(" "),
                Err(_) => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls `f` until it returns Some, for at most 30 s.
    pub fn eventually<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; server log: {}",
                    std::fs::read_to_string(&self.log_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tidemark {
    fn drop(&mut self) {
        self.kill();
    }
}

/// URL-encodes a query parameter value.
/// Every file under `root`, as paths relative to it, sorted.
pub fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

pub fn enc(s: &str) -> String {
    tidemark::cluster::client::urlencode(s)
}

/// Wall-clock now in ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A deterministic xorshift generator.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

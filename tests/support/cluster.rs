//! A `tidemark worker` cluster on loopback: N processes x W worker threads.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{agent, free_port};

pub struct Cluster {
    pub procs: Vec<Option<Child>>,
    pub urls: Vec<String>,
    pub hosts: PathBuf,
    pub dir: PathBuf,
    pub workers: usize,
    pub brokers: String,
    /// A tidemark.toml every process gets (`--config`).
    pub config: Option<PathBuf>,
    /// `TIDEMARK_TOKEN` for the CLI.
    pub token: Option<String>,
    /// Environment variables every process gets.
    pub env: Vec<(String, String)>,
}

impl Cluster {
    /// Starts `processes` worker processes with `workers` threads each, data under `dir`.
    pub fn start(dir: &Path, processes: usize, workers: usize, brokers: &str) -> Cluster {
        Self::start_with_config(dir, processes, workers, brokers, None)
    }

    /// As [`Cluster::start`], every process with `config` as its tidemark.toml.
    pub fn start_with_config(
        dir: &Path,
        processes: usize,
        workers: usize,
        brokers: &str,
        config: Option<&str>,
    ) -> Cluster {
        Self::start_with_env(dir, processes, workers, brokers, config, &[])
    }

    /// As [`Cluster::start_with_config`], every process with `env` in its environment.
    pub fn start_with_env(
        dir: &Path,
        processes: usize,
        workers: usize,
        brokers: &str,
        config: Option<&str>,
        env: &[(&str, &str)],
    ) -> Cluster {
        std::fs::create_dir_all(dir).unwrap();
        let config = config.map(|text| {
            let p = dir.join("tidemark.toml");
            std::fs::write(&p, text).unwrap();
            p
        });
        let mut text = String::new();
        let mut urls = Vec::new();
        for _ in 0..processes {
            let (t, h) = (free_port(), free_port());
            text.push_str(&format!("127.0.0.1:{t} 127.0.0.1:{h}\n"));
            urls.push(format!("http://127.0.0.1:{h}"));
        }
        let hosts = dir.join("hosts");
        std::fs::write(&hosts, text).unwrap();
        let mut c = Cluster {
            procs: (0..processes).map(|_| None).collect(),
            urls,
            hosts,
            dir: dir.to_path_buf(),
            workers,
            brokers: brokers.into(),
            config,
            token: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        for i in 0..processes {
            c.spawn(i);
        }
        for i in 0..processes {
            c.wait_ready(i);
        }
        c
    }

    pub fn log(&self, i: usize) -> PathBuf {
        self.dir.join(format!("worker-{i}.log"))
    }

    pub fn spawn(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(i))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.args(["worker", "--process", &i.to_string()]);
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        let child = cmd
            .args(["--processes", &self.procs.len().to_string()])
            .arg("--hosts")
            .arg(&self.hosts)
            .args(["--workers", &self.workers.to_string()])
            .arg("--data-dir")
            .arg(self.dir.join(format!("data-{i}")))
            .args(["--brokers", &self.brokers])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tidemark worker");
        self.procs[i] = Some(child);
    }

    pub fn wait_ready(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = agent().get(format!("{}/-/ready", self.urls[i])).call() {
                if r.status() == 200 {
                    return;
                }
            }
            if let Some(Ok(Some(st))) = self.procs[i].as_mut().map(|c| c.try_wait()) {
                panic!("worker {i} exited with {st}: {}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("worker {i} not ready in 60s: {}", self.logs());
    }

    pub fn logs(&self) -> String {
        (0..self.procs.len())
            .map(|i| {
                format!(
                    "\n--- worker {i} ---\n{}",
                    std::fs::read_to_string(self.log(i)).unwrap_or_default()
                )
            })
            .collect()
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for process `i` to exit by itself; true if it did within `timeout`.
    pub fn exits_within(&mut self, i: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.procs[i].as_mut().map(|c| c.try_wait()) {
                self.procs[i] = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Restarts every process that is not running.
    pub fn restart(&mut self) {
        for i in 0..self.procs.len() {
            if self.procs[i].is_none() {
                self.spawn(i);
            }
        }
        for i in 0..self.procs.len() {
            self.wait_ready(i);
        }
    }

    /// Runs the `tidemark` CLI against process 0: `(success, stdout + stderr)`.
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
        if let Some(t) = &self.token {
            cmd.env("TIDEMARK_TOKEN", t);
        }
        let out = cmd
            .args(args)
            .args(["--to", &self.urls[0]])
            .output()
            .expect("run tidemark");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    pub fn get(&self, i: usize, path: &str) -> serde_json::Value {
        let mut r = agent()
            .get(format!("{}{path}", self.urls[i]))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let body = r.body_mut().read_to_string().unwrap();
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("GET {path}: {body}"))
    }

    /// The body of `GET path` on process `i` (empty when it does not answer).
    pub fn text(&self, i: usize, path: &str) -> String {
        agent()
            .get(format!("{}{path}", self.urls[i]))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default()
    }

    /// The job's entry in `GET /api/v1/jobs`.
    pub fn job(&self, name: &str) -> serde_json::Value {
        let v = self.get(0, "/api/v1/jobs");
        v["data"]
            .as_array()
            .and_then(|a| a.iter().find(|j| j["name"] == name).cloned())
            .unwrap_or_default()
    }

    /// Polls `f` until it returns Some, for up to `secs`.
    pub fn eventually<T>(&self, secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > deadline {
                let jobs = self.text(0, "/api/v1/jobs");
                let metrics = self.text(0, "/metrics");
                let metrics: Vec<&str> = metrics.lines().filter(|l| !l.starts_with('#')).collect();
                panic!(
                    "timed out waiting for {what}: jobs {jobs}\nmetrics {metrics:?}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i);
        }
    }
}

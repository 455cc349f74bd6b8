//! `tidemark agent`: collects this machine's metrics every interval, pushes them by remote
//! write (in order, through a memory-then-disk buffer while the target is unreachable) and
//! serves them on its own `/metrics`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::http::header;
use axum::routing::get;
use axum::Router;

use crate::collect::agent::buffer::Buffer;
use crate::collect::agent::host::{self, Family};
use crate::collect::agent::{encode, render, AgentStats};
use crate::http::shutdown_signal;
use crate::time::now_ms;

/// What `tidemark agent` is told.
#[derive(Clone, Debug)]
pub struct AgentOpts {
    /// Remote write URL (`http://host:9090/api/v1/write`).
    pub push_to: String,
    pub interval_ms: i64,
    pub listen: SocketAddr,
    /// Labels added to every pushed sample (job, instance, and `--label`s).
    pub labels: Vec<(String, String)>,
    /// A `write` token for the target.
    pub token: Option<String>,
    pub buffer_memory: usize,
    pub buffer_dir: Option<PathBuf>,
    pub buffer_disk: usize,
    /// Normally `/proc`.
    pub procfs: PathBuf,
}

/// Parses `64MiB`, `1GiB`, `500kB`, `1000` (bytes).
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (give e.g. 64MiB, 1GiB, 500kB)"))?;
    let mult = match unit.trim() {
        "" | "B" => 1.0,
        "kB" | "KB" => 1e3,
        "KiB" => 1024.0,
        "MB" => 1e6,
        "MiB" => 1024.0 * 1024.0,
        "GB" => 1e9,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        u => {
            return Err(format!(
                "{s:?}: unknown unit {u:?} (B, kB, KiB, MB, MiB, GB, GiB)"
            ))
        }
    };
    Ok((n * mult) as usize)
}

struct Shared {
    opts: AgentOpts,
    stats: AgentStats,
    buffer: Mutex<Buffer>,
    wake: Condvar,
    latest: Mutex<Vec<Family>>,
    stop: AtomicBool,
}

impl Shared {
    fn publish_sizes(&self, b: &Buffer) {
        let [(_, mb, ms), (_, db, ds)] = b.sizes();
        let s = &self.stats;
        s.buffered_bytes_memory.store(mb as u64, Ordering::Relaxed);
        s.buffered_bytes_disk.store(db as u64, Ordering::Relaxed);
        s.buffered_samples_memory.store(ms, Ordering::Relaxed);
        s.buffered_samples_disk.store(ds, Ordering::Relaxed);
        s.dropped_samples
            .store(b.dropped_samples, Ordering::Relaxed);
    }
}

/// Collects at each interval boundary (aligned to the clock) and queues the batch.
fn collect_loop(sh: &Shared) {
    let every = sh.opts.interval_ms.max(100);
    let mut prev_cpu: Option<Family> = None;
    let mut last_meta = i64::MIN / 2;
    while !sh.stop.load(Ordering::Acquire) {
        let ts = now_ms();
        let mut fams = host::collect(&sh.opts.procfs);
        if let Some(cpu) = fams
            .iter()
            .find(|f| f.name == "node_cpu_seconds_total")
            .cloned()
        {
            if let Some(p) = prev_cpu
                .as_ref()
                .and_then(|p| host::cpu_usage_percent(p, &cpu))
            {
                fams.push(p);
            }
            prev_cpu = Some(cpu);
        }
        sh.stats.collections.fetch_add(1, Ordering::Relaxed);
        // The agent's own counters go along (as of before this batch).
        let mut pushed = fams.clone();
        pushed.extend(sh.stats.families());
        let with_meta = ts - last_meta >= 60_000;
        if with_meta {
            last_meta = ts;
        }
        let batch = encode(&pushed, &sh.opts.labels, ts, with_meta);
        sh.stats
            .collected_samples
            .fetch_add(batch.samples, Ordering::Relaxed);
        {
            let mut b = sh.buffer.lock().unwrap_or_else(|e| e.into_inner());
            b.push(batch);
            sh.publish_sizes(&b);
        }
        sh.wake.notify_all();
        *sh.latest.lock().unwrap_or_else(|e| e.into_inner()) = fams;
        // Sleep to the next boundary.
        let next = (ts / every + 1) * every;
        while !sh.stop.load(Ordering::Acquire) && now_ms() < next {
            std::thread::sleep(Duration::from_millis((next - now_ms()).clamp(1, 100) as u64));
        }
    }
}

/// Sends the oldest batch until the buffer is empty; waits and retries (backing off up to
/// 5 s) while the target is unreachable or answers 5xx/429; a 4xx drops the batch (counted)
/// since sending it again cannot succeed.
fn send_loop(sh: &Shared) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .user_agent(format!("Tidemark-agent/{}", env!("CARGO_PKG_VERSION")))
            .build(),
    );
    let mut backoff = Duration::from_millis(250);
    while !sh.stop.load(Ordering::Acquire) {
        let front = {
            let mut b = sh.buffer.lock().unwrap_or_else(|e| e.into_inner());
            if b.is_empty() {
                let _ = sh.wake.wait_timeout(b, Duration::from_millis(500));
                continue;
            }
            b.front()
        };
        let Some(batch) = front else { continue };
        let mut req = agent
            .post(&sh.opts.push_to)
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0");
        if let Some(t) = &sh.opts.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let outcome = match req.send(&batch.body[..]) {
            Ok(r) => {
                let status = r.status().as_u16();
                match status {
                    200..=299 => Ok(true),
                    429 | 500..=599 => Err(format!("HTTP {status}")),
                    _ => Ok(false),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(delivered) => {
                let mut b = sh.buffer.lock().unwrap_or_else(|e| e.into_inner());
                b.pop();
                if delivered {
                    sh.stats
                        .sent_samples
                        .fetch_add(batch.samples, Ordering::Relaxed);
                    sh.stats.sent_requests.fetch_add(1, Ordering::Relaxed);
                } else {
                    tracing::warn!(target: "tidemark::agent", url = sh.opts.push_to.as_str(), samples = batch.samples, "the target refused a batch for good (4xx); dropped");
                    b.dropped_samples += batch.samples;
                }
                sh.publish_sizes(&b);
                backoff = Duration::from_millis(250);
            }
            Err(e) => {
                sh.stats.send_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "tidemark::agent", url = sh.opts.push_to.as_str(), "push failed ({e}); the backlog is kept and sent in order when the target is back; retrying in {backoff:?}");
                let until = std::time::Instant::now() + backoff;
                while std::time::Instant::now() < until && !sh.stop.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs the agent until SIGTERM or Ctrl-C. What is still in memory then is spilled to the
/// buffer directory (within its bound), so a restart sends it.
pub fn run(opts: AgentOpts) -> anyhow::Result<()> {
    let buffer = Buffer::open(
        opts.buffer_memory,
        opts.buffer_dir.as_deref(),
        opts.buffer_disk,
    )
    .context("opening the agent's buffer (--buffer-dir)")?;
    let listen = opts.listen;
    let sh = Arc::new(Shared {
        opts,
        stats: AgentStats::default(),
        buffer: Mutex::new(buffer),
        wake: Condvar::new(),
        latest: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let threads: Vec<std::thread::JoinHandle<()>> = [
        ("agent-collect", collect_loop as fn(&Shared)),
        ("agent-send", send_loop as fn(&Shared)),
    ]
    .into_iter()
    .map(|(name, f)| {
        let sh = Arc::clone(&sh);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || f(&sh))
            .expect("spawning an agent thread")
    })
    .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        tracing::info!(
            "agent listening on http://{}, pushing to {} every {} ms",
            listener.local_addr()?,
            sh.opts.push_to,
            sh.opts.interval_ms
        );
        let s = Arc::clone(&sh);
        let app = Router::new()
            .route(
                "/metrics",
                get(move || {
                    let s = Arc::clone(&s);
                    async move {
                        let mut fams = s.latest.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        fams.extend(s.stats.families());
                        (
                            [(
                                header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )],
                            render(&fams),
                        )
                    }
                }),
            )
            .route(
                "/-/healthy",
                get(|| async { "Tidemark agent is Healthy.\n" }),
            )
            .route("/-/ready", get(|| async { "Tidemark agent is Ready.\n" }));
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        anyhow::Ok(())
    });
    sh.stop.store(true, Ordering::Release);
    sh.wake.notify_all();
    for t in threads {
        let _ = t.join();
    }
    // Keep the unsent backlog: memory spills to disk on the way out.
    let mut b = sh.buffer.lock().unwrap_or_else(|e| e.into_inner());
    let [(mem_batches, _, mem_samples), _] = b.sizes();
    if mem_batches > 0 {
        let kept = b.flush_to_disk();
        tracing::info!(target: "tidemark::agent", "stopping: {kept} of {mem_samples} unsent samples in memory written to the buffer directory");
    }
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("500kB"), Ok(500_000));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
    }
}

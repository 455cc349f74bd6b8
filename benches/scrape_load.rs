//! The CPU cost of scraping a fleet: 1,000 targets x 500 samples every 10 s (50,000
//! samples/s), the collector as `tidemark ingest --scrape` runs it (discovery, one loop per
//! target at its offset, HTTP fetch, parse, relabel, staleness, report series, the push path's
//! validation) appending to an embedded log (fsync never). The targets are served by a child
//! process (this binary re-run with `serve`), so the CPU measured is the collector's alone:
//! this process's user + system time over a window after a warm-up, as a share of one core.
//!
//! `cargo bench --bench scrape_load` (about 90 s); `SCRAPE_TARGETS`, `SCRAPE_WINDOW_S` change
//! the target count and the measured window.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidemark::collect::config::ScrapeConfig;
use tidemark::collect::manager::Collector;
use tidemark::collect::ring::Membership;
use tidemark::ingest::http::{IngestState, Sink};
use tidemark::model::Limits;
use tidemark::transport::log::Log;

/// The allocator of the `tidemark` binary (jemalloc), so the figure is the binary's.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The page every target serves: 500 samples, node_exporter-like.
fn page() -> String {
    let mut s = String::new();
    for f in 0..50 {
        let name = format!("node_family{f}_seconds_total");
        s.push_str(&format!(
            "# HELP {name} Family {f}.\n# TYPE {name} counter\n"
        ));
        for i in 0..10 {
            s.push_str(&format!(
                "{name}{{device=\"dev{i}\",mode=\"m{}\"}} {}\n",
                i % 4,
                1_234_567.891 + (f * 10 + i) as f64
            ));
        }
    }
    s
}

/// `serve`: answers every GET with the page (keep-alive), printing its port first.
fn serve() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    println!("{}", l.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    let body = Arc::new(page());
    for c in l.incoming().flatten() {
        let body = Arc::clone(&body);
        std::thread::spawn(move || {
            let mut w = c.try_clone().unwrap();
            let mut r = BufReader::new(c);
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).map_or(true, |n| n == 0) {
                    return;
                }
                while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                if write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{}",
                    body.len(),
                    body
                )
                .is_err()
                {
                    return;
                }
            }
        });
    }
}

/// This process's user + system CPU seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (11 and 12 after the state field).
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("serve") {
        serve();
        return;
    }
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` runs nothing here
    }
    let n: usize = std::env::var("SCRAPE_TARGETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let window: u64 = std::env::var("SCRAPE_WINDOW_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let mut server = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("serve")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let port = port.trim();
    let dir = tempfile::tempdir().unwrap();
    let groups: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "      - targets: ['127.0.0.1:{port}']\n        labels: {{__metrics_path__: /t/{i}, instance: t{i}, pool: p{}}}\n",
                i / 100
            )
        })
        .collect();
    let cfg = ScrapeConfig::parse(
        std::path::Path::new("bench.yml"),
        &format!(
            "scrape_configs:\n  - job_name: node\n    scrape_interval: 10s\n    static_configs:\n{}",
            groups.concat()
        ),
    )
    .unwrap();
    let log = Log::open(
        &dir.path().join("log"),
        tidemark::config::FsyncPolicy::Never,
    )
    .unwrap();
    let state = Arc::new(IngestState {
        limits: Limits::default(),
        sink: Sink::Log(log.clone()),
        metrics: Default::default(),
        hot: None,
        metadata: Default::default(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (cpu, samples, secs) = rt.block_on(async {
        let _c = Collector::start(cfg, Arc::clone(&state), Membership::alone());
        // Warm-up: every target scraped twice (series caches filled).
        tokio::time::sleep(Duration::from_secs(25)).await;
        let (c0, s0, t0) = (
            cpu_seconds(),
            state
                .metrics
                .samples_ingested
                .load(std::sync::atomic::Ordering::Relaxed),
            Instant::now(),
        );
        tokio::time::sleep(Duration::from_secs(window)).await;
        (
            cpu_seconds() - c0,
            state
                .metrics
                .samples_ingested
                .load(std::sync::atomic::Ordering::Relaxed)
                - s0,
            t0.elapsed().as_secs_f64(),
        )
    });
    let _ = server.kill();
    let _ = server.wait();
    println!(
        "scrape load: {n} targets x 500 samples every 10 s for {secs:.0} s: {samples} samples stored ({:.0}/s), collector CPU {cpu:.2} s = {:.1} % of one core, {:.2} us per sample",
        samples as f64 / secs,
        100.0 * cpu / secs,
        1e6 * cpu / samples.max(1) as f64
    );
}

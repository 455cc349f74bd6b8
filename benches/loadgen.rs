//! `tidemark-loadgen`: the end-to-end benchmark. Pushes the fleet workload (benches/fleet.rs:
//! 2,500 hosts x 4 metrics = 10,000 series x 360 points at 10 s) as Influx line protocol in
//! 10,000-line batches over 4 keep-alive connections to a running `tidemark up`, then reports
//! acknowledged samples/s, the time until everything is queryable, peak RSS, hot-index
//! bytes/sample, and the latency of `sum by (region) (rate(http_requests_total[5m]))` over 1 h
//! at 60 s step. `benches/e2e.sh` starts the server and runs this.
//!
//! Modes for the Kafka path (`benches/kafka_e2e.sh`): `--push-only` pushes and stops once
//! acknowledged (to fill the topic before any worker runs); `--drain N` pushes nothing and
//! times until the hot indexes of `--hot-urls` hold N more samples; `--latency N` then pushes
//! N single-sample probes, one at a time, and times each from acknowledgement to queryable.

#[path = "fleet.rs"]
mod fleet;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

struct Args {
    url: String,
    connections: usize,
    hosts: usize,
    points: usize,
    queries: usize,
    /// Where the hot index lives (summed): `--url` for `tidemark up`; the worker processes
    /// when `--url` is a `tidemark ingest`.
    hot_urls: Vec<String>,
    push_only: bool,
    drain: Option<f64>,
    latency: usize,
    /// Generate each timestamp's lines while pushing (memory independent of the run's size),
    /// and skip the query and latency phases: the scale benchmark (`benches/scale.sh`).
    stream: bool,
    /// With `--stream`: the target is another system (VictoriaMetrics in `benches/scale.sh`):
    /// report the acknowledged rate only, do not read Tidemark's `/metrics`.
    peer: bool,
    /// Seconds before now at which the event times end (default 60): a run started a few
    /// minutes after the hour can keep its events inside the hour before it.
    end_ago: i64,
    /// The first event time in ms (default: from `--end-ago` and now), so that two systems
    /// can be given identical data (`benches/query.sh`).
    start: Option<i64>,
}

fn args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:9470".into(),
        connections: 4,
        hosts: 2500,
        points: 360,
        queries: 50,
        hot_urls: Vec::new(),
        push_only: false,
        drain: None,
        latency: 0,
        stream: false,
        peer: false,
        end_ago: 60,
        start: None,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--url" => a.url = val,
            "--connections" => a.connections = val.parse().expect("--connections N"),
            "--hosts" => a.hosts = val.parse().expect("--hosts N"),
            "--points" => a.points = val.parse().expect("--points N"),
            "--end-ago" => a.end_ago = val.parse().expect("--end-ago SECONDS"),
            "--start" => a.start = Some(val.parse().expect("--start MILLISECONDS")),
            "--queries" => a.queries = val.parse().expect("--queries N"),
            "--hot-urls" => a.hot_urls = val.split(',').map(str::to_string).collect(),
            "--drain" => a.drain = Some(val.parse().expect("--drain SAMPLES")),
            "--latency" => a.latency = val.parse().expect("--latency N"),
            "--push-only" => {
                a.push_only = true;
                i += 1;
                continue;
            }
            "--stream" => {
                a.stream = true;
                i += 1;
                continue;
            }
            "--peer" => {
                a.peer = true;
                i += 1;
                continue;
            }
            other => panic!(
                "unknown argument {other}; use --url --connections --hosts --points --end-ago --start --queries --hot-urls --push-only --drain --latency --stream --peer"
            ),
        }
        i += 2;
    }
    if a.hot_urls.is_empty() {
        a.hot_urls = vec![a.url.clone()];
    }
    a
}

/// A metric summed over the processes holding the hot index.
fn hot(a: &Args, name: &str) -> f64 {
    a.hot_urls.iter().map(|u| metric(u, name)).sum()
}

/// A minimal HTTP/1.1 keep-alive client, so the measurement is of the server.
struct Conn {
    host: String,
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Conn {
    fn open(url: &str) -> Conn {
        let host = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let w = TcpStream::connect(&host).expect("connect");
        w.set_nodelay(true).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        Conn { host, w, r }
    }

    fn request(&mut self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        self.w.write_all(head.as_bytes()).unwrap();
        self.w.write_all(body).unwrap();
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let mut len = 0usize;
        loop {
            line.clear();
            self.r.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        self.r.read_exact(&mut body).unwrap();
        (status, body)
    }
}

fn metric(url: &str, name: &str) -> f64 {
    let (_, body) = Conn::open(url).request("GET", "/metrics", b"");
    String::from_utf8(body)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|r| r.strip_prefix(' '))
                .map(|v| v.parse().unwrap())
        })
        .unwrap_or(0.0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Samples that reached the hot indexes: taken, or refused as older than the retention (a run
/// longer than the retention has its oldest samples dropped, so what the indexes hold stops
/// growing).
fn arrived(a: &Args) -> f64 {
    hot(a, "tidemark_hot_samples_appended_total")
        + hot(a, "tidemark_hot_samples_out_of_retention_total")
}

/// Waits until `n` samples more than `before` ([`arrived`]) reached the hot indexes.
fn wait_hot(a: &Args, before: f64, n: f64, t0: Instant) {
    while arrived(a) - before < n {
        std::thread::sleep(Duration::from_millis(10));
        if t0.elapsed() > Duration::from_secs(3600) {
            panic!("samples did not all arrive in the hot index");
        }
    }
}

/// `--drain N`: the time until N samples already in the topic reach the hot indexes.
fn drain(a: &Args, n: f64) {
    let t0 = Instant::now();
    wait_hot(a, 0.0, n, t0);
    let took = t0.elapsed().as_secs_f64();
    println!(
        "Kafka -> hot index: {n} samples in {took:.2} s, {:.0} samples/s",
        n / took
    );
}

/// `--latency N`: push one sample at a time and time acknowledged -> queryable.
fn latency(a: &Args, n: usize) {
    let mut push = Conn::open(&a.url);
    let mut query = Conn::open(&a.hot_urls[0]);
    let run = std::process::id();
    let mut lat = Vec::new();
    for i in 0..n {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let line = format!("tidemark_probe,run={run},n={i} value=1 {now}\n");
        let (status, body) = push.request("POST", "/write?precision=ms", line.as_bytes());
        assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
        let t = Instant::now();
        let path = format!(
            "/api/v1/query?query=tidemark_probe%7Brun%3D%22{run}%22%2Cn%3D%22{i}%22%7D&time={}",
            now as f64 / 1000.0
        );
        loop {
            let (status, body) = query.request("GET", &path, b"");
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            if String::from_utf8_lossy(&body).contains("\"value\"") {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "probe {i} never became queryable"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(20));
    }
    lat.sort_by(|x, y| x.partial_cmp(y).unwrap());
    println!(
        "push acknowledged -> queryable: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {n} probes",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat[lat.len() - 1]
    );
}

/// Pushes the fleet point by point: each connection's thread owns a slice of the hosts and
/// writes its lines of one timestamp in 10,000-line batches; the threads move to the next
/// timestamp together, so the watermark advances as it would with live agents.
fn stream(a: &Args, start: i64) {
    use std::sync::{Arc, Barrier};
    let samples = (a.hosts * 4 * a.points) as f64;
    let before = if a.peer { 0.0 } else { arrived(a) };
    let t0 = Instant::now();
    let barrier = Arc::new(Barrier::new(a.connections));
    let per = a.hosts.div_ceil(a.connections);
    let threads: Vec<_> = (0..a.connections)
        .map(|c| {
            let (url, barrier, points) = (a.url.clone(), Arc::clone(&barrier), a.points);
            let (lo, hi) = (c * per, ((c + 1) * per).min(a.hosts));
            std::thread::spawn(move || {
                use std::io::Write as _;
                let mut conn = Conn::open(&url);
                let mut hosts: Vec<fleet::Host> = (lo..hi).map(fleet::Host::new).collect();
                let mut buf = Vec::with_capacity(10_000 * 90);
                for p in 0..points {
                    let ts = start + p as i64 * 10_000;
                    let mut lines = 0;
                    for h in hosts.iter_mut() {
                        let v = h.step();
                        for (m, name) in fleet::METRICS.iter().enumerate() {
                            let _ = writeln!(
                                buf,
                                "{name},host={},region={},env={} value={} {ts}",
                                h.name, h.region, h.env, v[m]
                            );
                        }
                        lines += 4;
                        if lines >= 10_000 {
                            let (status, body) = conn.request("POST", "/write?precision=ms", &buf);
                            assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
                            buf.clear();
                            lines = 0;
                        }
                    }
                    if !buf.is_empty() {
                        let (status, body) = conn.request("POST", "/write?precision=ms", &buf);
                        assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
                        buf.clear();
                    }
                    barrier.wait();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("pusher");
    }
    let acked = t0.elapsed();
    if a.peer {
        println!(
            "peer: {samples} samples acknowledged in {:.2} s, {:.0} samples/s",
            acked.as_secs_f64(),
            samples / acked.as_secs_f64()
        );
        return;
    }
    wait_hot(a, before, samples, t0);
    let applied = t0.elapsed();
    println!(
        "workload: {} series x {} points = {samples} samples, streamed over {} connections",
        a.hosts * 4,
        a.points,
        a.connections
    );
    ingest_rates(samples, acked, applied);
}

/// Prints the acknowledged and in-the-hot-index ingest rates.
fn ingest_rates(samples: f64, acked: Duration, applied: Duration) {
    println!(
        "ingest (acknowledged): {:.2} s, {:.0} samples/s",
        acked.as_secs_f64(),
        samples / acked.as_secs_f64()
    );
    println!(
        "ingest (in the hot index): {:.2} s, {:.0} samples/s",
        applied.as_secs_f64(),
        samples / applied.as_secs_f64()
    );
}

fn main() {
    let a = args();
    if let Some(n) = a.drain {
        drain(&a, n);
        if a.latency > 0 {
            latency(&a, a.latency);
        }
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let start = a
        .start
        .unwrap_or((now / 10_000 - a.points as i64 - a.end_ago / 10) * 10_000);
    if a.stream {
        stream(&a, start);
        return;
    }
    eprintln!(
        "generating {} hosts x 4 metrics x {} points ...",
        a.hosts, a.points
    );
    let batches = fleet::line_batches(a.hosts, a.points, start);
    let samples = (a.hosts * 4 * a.points) as f64;
    let bytes: usize = batches.iter().map(|b| b.len()).sum();
    let rss_before = metric(&a.url, "process_resident_memory_bytes");
    let hot_before = if a.push_only { 0.0 } else { arrived(&a) };

    let t0 = Instant::now();
    std::thread::scope(|s| {
        for c in 0..a.connections {
            let batches = &batches;
            let url = a.url.clone();
            let n = a.connections;
            s.spawn(move || {
                let mut conn = Conn::open(&url);
                for b in batches.iter().skip(c).step_by(n) {
                    let (status, body) = conn.request("POST", "/write?precision=ms", b);
                    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
                }
            });
        }
    });
    let acked = t0.elapsed();
    if a.push_only {
        println!(
            "pushed (acknowledged): {samples} samples in {:.2} s, {:.0} samples/s",
            acked.as_secs_f64(),
            samples / acked.as_secs_f64()
        );
        return;
    }
    wait_hot(&a, hot_before, samples, t0);
    let applied = t0.elapsed();
    let rss = metric(&a.url, "process_resident_memory_bytes");
    let hot_bytes = hot(&a, "tidemark_hot_bytes");
    let raw_bytes = hot(&a, "tidemark_hot_raw_bytes");
    let rollup_bytes = hot(&a, "tidemark_hot_rollup_bytes");
    let hot_samples = hot(&a, "tidemark_hot_samples");
    let chunk_bps = metric(&a.url, "tidemark_hot_chunk_bytes_per_sample");

    // Query latency.
    let q = "sum%20by%20(region)%20(rate(http_requests_total%5B5m%5D))";
    let end = (start + a.points as i64 * 10_000) / 1000;
    let path = format!(
        "/api/v1/query_range?query={q}&start={}&end={end}&step=60",
        end - 3600
    );
    let mut conn = Conn::open(&a.hot_urls[0]);
    let (status, body) = conn.request("GET", &path, b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("\"region\":\"us-east\""),
        "unexpected query result {text}"
    );
    let mut lat = Vec::new();
    for _ in 0..a.queries {
        let t = Instant::now();
        let (status, _) = conn.request("GET", &path, b"");
        assert_eq!(status, 200);
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(|x, y| x.partial_cmp(y).unwrap());

    println!("workload: {} series x {} points = {} samples, {} batches of {} lines, {:.1} MB of line protocol, {} connections", a.hosts * 4, a.points, samples, batches.len(), a.hosts * 4, bytes as f64 / 1e6, a.connections);
    ingest_rates(samples, acked, applied);
    println!(
        "RSS: {:.1} MiB before, {:.1} MiB after",
        rss_before / 1048576.0,
        rss / 1048576.0
    );
    println!(
        "hot index: {:.1} MiB in all; raw samples {:.1} MiB = {:.2} bytes/sample (sealed chunks {:.2} bytes/sample; open heads Gorilla-compressed as appended); rollups {:.1} MiB",
        hot_bytes / 1048576.0,
        raw_bytes / 1048576.0,
        raw_bytes / hot_samples,
        chunk_bps,
        rollup_bytes / 1048576.0
    );
    if !lat.is_empty() {
        println!("query_range sum by (region) (rate(http_requests_total[5m])) 1h @ 60s: p50 {:.2} ms, p99 {:.2} ms over {} runs", pct(&lat, 0.5), pct(&lat, 0.99), lat.len());
    }
    if a.latency > 0 {
        latency(&a, a.latency);
    }
}

//! The fleet workload of the benchmarks, generated deterministically: 2,500 hosts with labels
//! `host`, `region` (4 values) and `env` (3 values), each with `cpu_load` (a load average with
//! 3 decimals), `mem_used_bytes` (kB-granular bytes, as /proc/meminfo gives them),
//! `disk_used_bytes` (4 KiB blocks, growing in bursts) and `http_requests_total` (a counter
//! with occasional resets): 10,000 series, one point every 10 s.
#![allow(dead_code)]

pub const REGIONS: [&str; 4] = ["us-east", "us-west", "eu-central", "ap-south"];
pub const ENVS: [&str; 3] = ["prod", "staging", "dev"];
pub const METRICS: [&str; 4] = [
    "cpu_load",
    "mem_used_bytes",
    "disk_used_bytes",
    "http_requests_total",
];
pub const INTERVAL_MS: i64 = 10_000;

/// A deterministic xorshift generator.
#[derive(Clone)]
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo) as u64) as i64
    }
}

/// One host's generator state.
#[derive(Clone)]
pub struct Host {
    pub name: String,
    pub region: &'static str,
    pub env: &'static str,
    rng: Rng,
    cpu_milli: i64,
    mem_kb: i64,
    disk_blocks: i64,
    requests: i64,
    rate: i64,
}

impl Host {
    pub fn new(i: usize) -> Host {
        let mut rng =
            Rng(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
        let _ = rng.next();
        Host {
            name: format!("host-{i:05}"),
            region: REGIONS[i % 4],
            env: ENVS[(i / 4) % 3],
            cpu_milli: rng.range(100, 4000),
            mem_kb: rng.range(2 << 20, 32 << 20),
            disk_blocks: rng.range(1 << 20, 1 << 26),
            requests: 0,
            rate: rng.range(10, 1000),
            rng,
        }
    }

    /// The next point of each of the four metrics, in `METRICS` order.
    pub fn step(&mut self) -> [f64; 4] {
        let r = &mut self.rng;
        self.cpu_milli = (self.cpu_milli + r.range(-50, 51)).clamp(0, 16_000);
        self.mem_kb = (self.mem_kb + r.range(-2048, 2049)).max(1 << 20);
        if r.range(0, 10) < 3 {
            self.disk_blocks += r.range(1, 256);
        }
        if r.range(0, 2000) == 0 {
            self.requests = 0; // restart
        } else {
            self.requests += self.rate * 10 + r.range(-self.rate / 2, self.rate / 2 + 1);
        }
        [
            self.cpu_milli as f64 / 1000.0,
            (self.mem_kb * 1024) as f64,
            (self.disk_blocks * 4096) as f64,
            self.requests as f64,
        ]
    }
}

/// All hosts.
pub fn hosts(n: usize) -> Vec<Host> {
    (0..n).map(Host::new).collect()
}

/// One series' points: `(metric index, host index, points)`.
pub type SeriesPoints = (usize, usize, Vec<(i64, f64)>);

/// Per-series point lists `(metric index, host index, points)` for `points` steps from `start`.
pub fn series(n_hosts: usize, points: usize, start: i64) -> Vec<SeriesPoints> {
    let mut hs = hosts(n_hosts);
    let mut out: Vec<SeriesPoints> = (0..n_hosts)
        .flat_map(|h| (0..4).map(move |m| (m, h, Vec::with_capacity(points))))
        .collect();
    for p in 0..points {
        let ts = start + p as i64 * INTERVAL_MS;
        for (h, host) in hs.iter_mut().enumerate() {
            let v = host.step();
            for m in 0..4 {
                out[h * 4 + m].2.push((ts, v[m]));
            }
        }
    }
    out
}

/// Batches of one line per series and timestamp, one batch per timestamp, each line written by
/// `line(buf, metric, host, value, ts)`.
fn batches(
    n_hosts: usize,
    points: usize,
    start: i64,
    line: impl Fn(&mut Vec<u8>, &str, &Host, f64, i64),
) -> Vec<Vec<u8>> {
    let mut hs = hosts(n_hosts);
    let mut out = Vec::with_capacity(points);
    for p in 0..points {
        let ts = start + p as i64 * INTERVAL_MS;
        let mut b = Vec::with_capacity(n_hosts * 4 * 90);
        for host in hs.iter_mut() {
            let v = host.step();
            for (m, name) in METRICS.iter().enumerate() {
                line(&mut b, name, host, v[m], ts);
            }
        }
        out.push(b);
    }
    out
}

/// Line-protocol batches: one batch per timestamp with every series (10,000 lines for 2,500 hosts).
pub fn line_batches(n_hosts: usize, points: usize, start: i64) -> Vec<Vec<u8>> {
    use std::io::Write;
    batches(n_hosts, points, start, |b, name, h, v, ts| {
        let _ = writeln!(
            b,
            "{name},host={},region={},env={} value={v} {ts}",
            h.name, h.region, h.env
        );
    })
}

/// The same points in Prometheus text format (one batch per timestamp).
pub fn prom_batches(n_hosts: usize, points: usize, start: i64) -> Vec<Vec<u8>> {
    use std::io::Write;
    batches(n_hosts, points, start, |b, name, h, v, ts| {
        let _ = writeln!(
            b,
            "{name}{{host=\"{}\",region=\"{}\",env=\"{}\"}} {v} {ts}",
            h.name, h.region, h.env
        );
    })
}

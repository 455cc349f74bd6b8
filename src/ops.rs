//! Tidemark's own metrics (`/metrics`, Prometheus text format), health and readiness.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters shared by ingest, the job and the server.
#[derive(Default)]
pub struct Metrics {
    pub samples_ingested: AtomicU64,
    pub requests: AtomicU64,
    pub rejected: [AtomicU64; 3],
    pub rejected_requests_too_large: AtomicU64,
    /// Pushes refused with 503 because the log or Kafka could not take them.
    pub sink_failures: AtomicU64,
    pub late_accepted: AtomicU64,
    pub late_dropped: AtomicU64,
    pub queries: AtomicU64,
    /// Queries holding an evaluation slot now (`[query] max_concurrency` of them at most).
    pub queries_running: AtomicU64,
    /// The `query_range` result cache: requests that reused kept steps, requests that found
    /// none, keys evicted for room, and bytes held.
    pub query_cache_hits: AtomicU64,
    pub query_cache_misses: AtomicU64,
    pub query_cache_evictions: AtomicU64,
    pub query_cache_bytes: AtomicU64,
    pub ready: AtomicBool,
}

impl Metrics {
    /// Adds a batch builder's rejection counts.
    pub fn add_rejected(&self, counts: &[usize; 3]) {
        for (c, n) in self.rejected.iter().zip(counts) {
            c.fetch_add(*n as u64, Ordering::Relaxed);
        }
    }
}

/// A tiny Prometheus text-format writer.
pub struct TextWriter(pub String);

/// A sample's labels in the exposition format, `name="value",...`, every value escaped (`\\`,
/// `"` and newlines, as the text format requires): the only way label text is built for
/// `/metrics`.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

impl TextWriter {
    /// Writes `# HELP`, `# TYPE` and samples `(labels, value)`; build `labels` with
    /// [`labels`].
    pub fn family(&mut self, name: &str, kind: &str, help: &str, samples: &[(&str, f64)]) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            if labels.is_empty() {
                let _ = writeln!(self.0, "{name} {v}");
            } else {
                let _ = writeln!(self.0, "{name}{{{labels}}} {v}");
            }
        }
    }
}

/// Why a line or sample was rejected, for the `reason` label of the rejection counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reject {
    /// The line is malformed.
    Parse,
    /// A name, label or series limit refused the series.
    Limit,
    /// The sample is older than the hot retention window.
    TooOld,
}

impl Reject {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Parse => "parse",
            Reject::Limit => "limit",
            Reject::TooOld => "too_old",
        }
    }
}

/// Renders the counters of `m`.
pub fn render_counters(m: &Metrics, w: &mut TextWriter) {
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    w.family(
        "tidemark_samples_ingested_total",
        "counter",
        "Samples accepted by push ingest.",
        &[("", g(&m.samples_ingested))],
    );
    w.family(
        "tidemark_write_requests_total",
        "counter",
        "Push requests received.",
        &[("", g(&m.requests))],
    );
    let reasons = [Reject::Parse, Reject::Limit, Reject::TooOld];
    let labels: Vec<String> = reasons
        .iter()
        .map(|r| labels(&[("reason", r.as_str())]))
        .collect();
    let mut rej: Vec<(&str, f64)> = labels
        .iter()
        .zip(&m.rejected)
        .map(|(l, c)| (l.as_str(), g(c)))
        .collect();
    rej.push((
        "reason=\"body_too_large\"",
        g(&m.rejected_requests_too_large),
    ));
    w.family(
        "tidemark_samples_rejected_total",
        "counter",
        "Lines or samples rejected at ingest, by reason (body_too_large counts requests).",
        &rej,
    );
    w.family(
        "tidemark_late_samples_total",
        "counter",
        "Samples behind the watermark: accepted into a window still open for lateness, or dropped from rollups (kept raw).",
        &[("action=\"accepted\"", g(&m.late_accepted)), ("action=\"dropped\"", g(&m.late_dropped))],
    );
    w.family(
        "tidemark_write_unavailable_total",
        "counter",
        "Pushes answered 503 because the log or Kafka could not take them (the client retries).",
        &[("", g(&m.sink_failures))],
    );
    w.family(
        "tidemark_queries_total",
        "counter",
        "PromQL queries evaluated.",
        &[("", g(&m.queries))],
    );
    w.family(
        "tidemark_queries_running",
        "gauge",
        "Queries being evaluated now; at most [query] max_concurrency, the others wait for a slot.",
        &[("", g(&m.queries_running))],
    );
    w.family(
        "tidemark_query_cache_requests_total",
        "counter",
        "query_range requests by what the result cache held: hit (at least one step reused), miss (none). Requests with nocache=1 and queries that cannot be cached are not counted.",
        &[
            ("result=\"hit\"", g(&m.query_cache_hits)),
            ("result=\"miss\"", g(&m.query_cache_misses)),
        ],
    );
    w.family(
        "tidemark_query_cache_evictions_total",
        "counter",
        "Queries whose kept steps the result cache dropped for room ([query] cache_bytes), least recently used first.",
        &[("", g(&m.query_cache_evictions))],
    );
    w.family(
        "tidemark_query_cache_bytes",
        "gauge",
        "Bytes the query_range result cache holds (points, labels, annotations).",
        &[("", g(&m.query_cache_bytes))],
    );
}

/// How long walked memory figures are reused.
pub const MEMORY_WALK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Bytes jemalloc holds resident beyond what is allocated (pages freed and not yet returned,
/// fragmentation, its metadata); `None` without the `jemalloc` feature or when this process's
/// allocator is not jemalloc (its statistics then show nothing allocated).
pub fn allocator_slack() -> Option<i64> {
    #[cfg(feature = "jemalloc")]
    {
        use tikv_jemalloc_ctl::{epoch, stats};
        epoch::advance().ok()?;
        let allocated = stats::allocated::read().ok()? as i64;
        let resident = stats::resident::read().ok()? as i64;
        (allocated > 0).then_some((resident - allocated).max(0))
    }
    #[cfg(not(feature = "jemalloc"))]
    None
}

/// `process_resident_memory_bytes`, as every process of Tidemark reports it.
pub fn render_process(w: &mut TextWriter) {
    w.family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        &[("", rss_bytes())],
    );
}

/// The process's resident set size in bytes (`VmRSS`), 0 where `/proc` is not available.
pub fn rss_bytes() -> f64 {
    proc_status_bytes("VmRSS:")
}

/// The process's peak resident set size in bytes (`VmHWM`), 0 where `/proc` is not available.
pub fn peak_rss_bytes() -> f64 {
    proc_status_bytes("VmHWM:")
}

fn proc_status_bytes(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_the_exposition_parses_back() {
        let l = labels(&[("job", "a\"b"), ("path", "c:\\d"), ("why", "x\ny")]);
        assert_eq!(l, r#"job="a\"b",path="c:\\d",why="x\ny""#);
        let mut w = TextWriter(String::new());
        w.family("t_total", "counter", "A test.", &[(&l, 1.0), ("", 2.0)]);
        // Each sample is one line, as the text format requires.
        let samples: Vec<&str> = w.0.lines().filter(|x| !x.starts_with('#')).collect();
        assert_eq!(samples, [format!("t_total{{{l}}} 1").as_str(), "t_total 2"]);
        // And Tidemark's own text-format parser reads the values back unescaped.
        let limits = crate::model::Limits::default();
        let mut b = crate::ingest::BatchBuilder::new(&limits);
        crate::ingest::promtext::parse(w.0.as_bytes(), 0, &mut b);
        let (batch, errors, _) = b.finish();
        assert!(errors.is_empty(), "{errors:?}");
        let first = crate::model::decode_canonical(
            &batch.arena[batch.series[0].1.start as usize..batch.series[0].1.end as usize],
        );
        assert_eq!(first.get("job"), Some("a\"b"));
        assert_eq!(first.get("path"), Some("c:\\d"));
        assert_eq!(first.get("why"), Some("x\ny"));
    }
}

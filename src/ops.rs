//! Tidemark's own metrics (`/metrics`, Prometheus text format), health and readiness.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::ingest::Reject;

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
}

/// How long walked memory figures are reused.
pub const MEMORY_WALK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Bytes of resident memory by component (`tidemark_memory_bytes{component}`): the hot
/// index's parts (walked), the operators' state (kept by the operators,
/// [`tidemark_dataflows::memory`]), and `other`: the process's resident set minus all of
/// those (allocator slack, buffers in flight, code, the runtime).
///
/// Walking the index takes a few milliseconds per 100,000 series, so the walked figures are
/// kept for [`MEMORY_WALK_EVERY`] between scrapes while the series count stays the same (a
/// load generator polls `/metrics` often).
pub fn render_memory(hot: &crate::store::hot::HotIndex, w: &mut TextWriter) {
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;
    use tidemark_dataflows::memory::Component;
    type Walked = (Instant, usize, (i64, i64), crate::store::hot::HotMemory);
    static LAST: OnceLock<Mutex<Option<Walked>>> = OnceLock::new();
    let mut last = LAST
        .get_or_init(|| Mutex::new(None))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let series = hot.catalog.len();
    let fresh = last
        .as_ref()
        .is_some_and(|(at, n, _, _)| *n == series && at.elapsed() < MEMORY_WALK_EVERY);
    if !fresh {
        *last = Some((Instant::now(), series, hot.catalog.memory(), hot.memory()));
    }
    let (_, _, (labels, postings), h) = last.expect("walked above");
    drop(last);
    let mut parts: Vec<(String, i64)> = vec![
        ("catalog_labels".into(), labels),
        ("catalog_postings".into(), postings),
        ("hot_series_table".into(), h.series_table),
        ("hot_samples".into(), h.samples),
        ("hot_out_of_order".into(), h.out_of_order),
        ("hot_rollups".into(), h.rollups),
    ];
    parts.extend(
        Component::ALL
            .iter()
            .map(|c| (c.name().to_string(), c.bytes())),
    );
    let accounted: i64 = parts.iter().map(|p| p.1).sum();
    let slack = allocator_slack();
    if let Some(slack) = slack {
        parts.push(("allocator".into(), slack));
    }
    parts.push((
        "other".into(),
        (rss_bytes() as i64 - accounted - slack.unwrap_or(0)).max(0),
    ));
    let labels: Vec<String> = parts
        .iter()
        .map(|(c, _)| self::labels(&[("component", c)]))
        .collect();
    let samples: Vec<(&str, f64)> = labels
        .iter()
        .zip(&parts)
        .map(|(l, p)| (l.as_str(), p.1 as f64))
        .collect();
    w.family(
        "tidemark_memory_bytes",
        "gauge",
        "Resident memory by component (estimates from lengths and capacities; other = resident set minus the rest).",
        &samples,
    );
}

/// Bytes jemalloc holds resident beyond what is allocated (pages freed and not yet returned,
/// fragmentation, its metadata); `None` without the `jemalloc` feature or when this process's
/// allocator is not jemalloc (its statistics then show nothing allocated).
fn allocator_slack() -> Option<i64> {
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

/// `/metrics` families of the hot index's chunk directory (none without one).
pub fn render_chunk_files(hot: &crate::store::hot::HotIndex, w: &mut TextWriter) {
    if hot.chunk_files().is_none() {
        return;
    }
    w.family(
        "tidemark_hot_chunk_disk_bytes",
        "gauge",
        "Encoded bytes of sealed chunks spilled to the chunk directory (referenced by the index).",
        &[(
            "",
            hot.stats.chunk_disk_bytes.load(Ordering::Relaxed) as f64,
        )],
    );
    let files: Vec<(&str, &crate::store::hot::chunkfile::ChunkFiles)> =
        hot.all_chunk_files().collect();
    let per_kind = |f: fn(&crate::store::hot::chunkfile::ChunkFiles) -> f64| -> Vec<(String, f64)> {
        files
            .iter()
            .map(|(k, c)| (labels(&[("kind", k)]), f(c)))
            .collect()
    };
    let bytes = per_kind(|c| c.file_bytes.load(Ordering::Relaxed) as f64);
    w.family(
        "tidemark_hot_chunk_files_bytes",
        "gauge",
        "Bytes of the chunk directory's segment files, by kind (raw chunks, 1m and 1h rollup blocks; with blocks rewritten or dropped since, until their segment expires).",
        &bytes.iter().map(|(l, v)| (l.as_str(), *v)).collect::<Vec<_>>(),
    );
    let sum: f64 = per_kind(|c| c.read_errors.load(Ordering::Relaxed) as f64)
        .iter()
        .map(|p| p.1)
        .sum();
    w.family(
        "tidemark_hot_chunks_compacted_total",
        "counter",
        "Chunks on disk merged into larger ones, by kind: raw chunks once older than 2 hours, 1m and 1h rollup blocks in runs (a series keeps one reference in memory per chunk on disk).",
        &[
            (
                "kind=\"raw\"",
                hot.stats.chunks_compacted.load(Ordering::Relaxed) as f64,
            ),
            (
                "kind=\"1m\"",
                hot.stats.rollup_blocks_compacted[0].load(Ordering::Relaxed) as f64,
            ),
            (
                "kind=\"1h\"",
                hot.stats.rollup_blocks_compacted[1].load(Ordering::Relaxed) as f64,
            ),
        ],
    );
    w.family(
        "tidemark_hot_chunk_read_errors_total",
        "counter",
        "Sealed chunks and rollup blocks that could not be read back from the chunk directory (missing or damaged segment); they were left out of the read.",
        &[("", sum)],
    );
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
        let first = crate::ingest::decode_canonical(
            &batch.arena[batch.series[0].1.start as usize..batch.series[0].1.end as usize],
        );
        assert_eq!(first.get("job"), Some("a\"b"));
        assert_eq!(first.get("path"), Some("c:\\d"));
        assert_eq!(first.get("why"), Some("x\ny"));
    }
}

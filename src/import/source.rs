//! Where an import reads from, an hour at a time: a Prometheus server's remote-read API, or a
//! file (OpenMetrics or Prometheus text with timestamps, or an `influx_inspect export`),
//! parsed once and spilled to disk by hour so that hours come out in time order whatever the
//! file's order (promtool's files are grouped by series, not by time).
//!
//! An hour `H` is handed out as every sample with time in `[H, H + 1 h]`, both ends included:
//! the raw partition of `H` takes `[H, H + 1 h)`, and the rollup windows `(H, H + 1 h]` (see
//! [`tidemark_dataflows::Rollup`]) take `(H, H + 1 h]`, so neither needs the neighbouring hour.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::ingest::influx::{self, Precision};
use crate::ingest::promtext::{self, TextOptions};
use crate::ingest::BatchBuilder;
use crate::model::{Labels, Limits, SeriesId};
use crate::store::cold::layout::HOUR_MS;
use crate::transport::remote_proto::{self, LabelMatcher, Query, ReadRequest};

use super::ImportError;

/// The samples of one hour `H`: times in `[H, H + 1 h]`, sorted by (time, series).
#[derive(Clone, Debug, Default)]
pub struct Hour {
    pub start: i64,
    /// Labels of the series the samples refer to (by index).
    pub series: Vec<Labels>,
    /// `(series index, time, value)`.
    pub samples: Vec<(u32, i64, f64)>,
}

impl Hour {
    pub fn end(&self) -> i64 {
        self.start + HOUR_MS
    }

    /// Sorts by (time, series) and keeps the last of samples with equal series and time.
    fn finish(&mut self) {
        // A stable sort keeps equal keys in arrival order: the last one wins.
        self.samples.sort_by_key(|s| (s.1, s.0));
        self.samples.dedup_by(|later, earlier| {
            if later.0 == earlier.0 && later.1 == earlier.1 {
                *earlier = *later;
                true
            } else {
                false
            }
        });
    }
}

/// A source of hours.
pub trait Source {
    /// What is imported, for the resume state (a different source starts afresh).
    fn key(&self) -> String;
    /// The first and last sample time (`None`: nothing to import).
    fn span(&self) -> Option<(i64, i64)>;
    /// Samples in all, when known up front (files).
    fn total_samples(&self) -> Option<u64>;
    /// Whether hour `start` may hold samples (files: only the hours they have).
    fn has_hour(&self, start: i64) -> bool;
    /// The samples of hour `start` (see [`Hour`]).
    fn hour(&mut self, start: i64) -> Result<Hour, ImportError>;
}

/// The hour holding `ts` (`[H, H + 1 h)`).
pub fn hour_of(ts: i64) -> i64 {
    ts.div_euclid(HOUR_MS) * HOUR_MS
}

// ---------------------------------------------------------------------------------------------
// Files.

/// What a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// OpenMetrics text: timestamps in seconds, `# EOF` at the end.
    OpenMetrics,
    /// The Prometheus text format with integer millisecond timestamps.
    PromText,
    /// Influx line protocol, as `influx_inspect export` writes it (its `# DDL` section and
    /// `CREATE DATABASE` statements are skipped), timestamps in `precision`.
    Influx(Precision),
}

impl FileFormat {
    /// `openmetrics`, `prometheus`, `influx`; `None` for anything else.
    pub fn parse(s: &str, precision: Precision) -> Option<FileFormat> {
        match s {
            "openmetrics" => Some(FileFormat::OpenMetrics),
            "prometheus" | "text" => Some(FileFormat::PromText),
            "influx" => Some(FileFormat::Influx(precision)),
            _ => None,
        }
    }

    /// Guesses from the first 64 KiB: an `influx_inspect export` header or a line-protocol
    /// first line is Influx, a `# EOF` line or a fractional timestamp OpenMetrics, otherwise
    /// the Prometheus text format.
    pub fn detect(head: &[u8], precision: Precision) -> FileFormat {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        if text.contains("# INFLUXDB EXPORT") || text.contains("# CONTEXT-DATABASE:") {
            return FileFormat::Influx(precision);
        }
        if text.lines().any(|l| l.trim() == "# EOF") {
            return FileFormat::OpenMetrics;
        }
        if let Some(first) = lines.find(|l| !l.starts_with('#')) {
            // Line protocol: `measurement[,tags] field=value[,...] [ts]`; text format:
            // `name[{labels}] value [ts]`.
            let head = first.split([' ', '{']).next().unwrap_or("");
            let rest = &first[head.len()..];
            if !first[..head.len()].contains('=')
                && rest
                    .trim_start()
                    .split(' ')
                    .next()
                    .is_some_and(|f| f.contains('='))
                && !rest.starts_with('{')
            {
                return FileFormat::Influx(precision);
            }
            if head.contains(',') {
                return FileFormat::Influx(precision);
            }
            // A timestamp with a fraction, or one too small for milliseconds since 1973, is
            // OpenMetrics' seconds.
            let after = first.rsplit_once('}').map_or(first, |(_, r)| r);
            let fields: Vec<&str> = after.split_whitespace().collect();
            let ts = match fields.len() {
                n if n >= 2 && first.contains('}') => Some(fields[1]),
                n if n >= 3 => Some(fields[2]),
                _ => None,
            };
            if let Some(ts) = ts {
                if ts.contains('.') || ts.parse::<i64>().is_ok_and(|t| t.abs() < 100_000_000_000) {
                    return FileFormat::OpenMetrics;
                }
            }
        }
        FileFormat::PromText
    }

    fn name(self) -> &'static str {
        match self {
            FileFormat::OpenMetrics => "openmetrics",
            FileFormat::PromText => "prometheus",
            FileFormat::Influx(_) => "influx",
        }
    }
}

/// Bytes of one spilled sample: series index (u32), time (i64), value bits (u64).
const SPILL_REC: usize = 20;
/// Spill buffer per hour before it is appended to its file.
const SPILL_BUF: usize = 256 * 1024;
/// The file is parsed this many bytes at a time (cut at a line end).
const READ_BLOCK: usize = 8 << 20;
/// Line errors printed in full (the rest are counted).
pub const SHOWN_ERRORS: usize = 20;

/// A file parsed into hour files under a spill directory.
pub struct FileSource {
    key: String,
    dir: PathBuf,
    series: Vec<Labels>,
    /// Hour start -> samples spilled (its own hour and, as edges, samples exactly at its end).
    hours: BTreeMap<i64, u64>,
    span: Option<(i64, i64)>,
    samples: u64,
    /// Lines rejected, and the first [`SHOWN_ERRORS`] of them as `path:line: reason`.
    pub rejected: u64,
    pub errors: Vec<String>,
    pub format: FileFormat,
}

impl FileSource {
    /// Parses `path` into `spill_dir` (created; emptied first), skipping samples before
    /// `skip_before` (an earlier run stored them). Bad lines are counted and the first
    /// [`SHOWN_ERRORS`] kept with their line numbers; the valid lines around them are kept.
    pub fn open(
        path: &Path,
        format: Option<FileFormat>,
        precision: Precision,
        spill_dir: &Path,
        skip_before: i64,
    ) -> Result<FileSource, ImportError> {
        let io = |e: std::io::Error| ImportError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let (key, format) = file_key(path, format, precision)?;
        let mut f = File::open(path).map_err(io)?;
        if spill_dir.exists() {
            std::fs::remove_dir_all(spill_dir).map_err(|e| ImportError::Io {
                path: spill_dir.to_path_buf(),
                source: e,
            })?;
        }
        std::fs::create_dir_all(spill_dir).map_err(|e| ImportError::Io {
            path: spill_dir.to_path_buf(),
            source: e,
        })?;
        let mut block = vec![0u8; READ_BLOCK];
        let mut carry: Vec<u8> = Vec::new();
        let n = f.read(&mut block).map_err(io)?;
        let mut src = FileSource {
            key,
            dir: spill_dir.to_path_buf(),
            series: Vec::new(),
            hours: BTreeMap::new(),
            span: None,
            samples: 0,
            rejected: 0,
            errors: Vec::new(),
            format,
        };
        let mut spill = Spill::new(spill_dir);
        let mut ids: HashMap<SeriesId, u32> = HashMap::new();
        let limits = Limits::default();
        let mut line_base = 0usize;
        let mut in_ddl = false;
        let mut filled = n;
        loop {
            let at_eof = filled == 0;
            carry.extend_from_slice(&block[..filled]);
            let cut = if at_eof {
                carry.len()
            } else {
                match carry.iter().rposition(|&b| b == b'\n') {
                    Some(p) => p + 1,
                    None => {
                        filled = f.read(&mut block).map_err(io)?;
                        continue;
                    }
                }
            };
            let mut chunk: Vec<u8> = carry.drain(..cut).collect();
            if let FileFormat::Influx(_) = format {
                blank_influx_ddl(&mut chunk, &mut in_ddl);
            }
            let mut b = BatchBuilder::new(&limits);
            match format {
                FileFormat::OpenMetrics | FileFormat::PromText => promtext::parse_with(
                    &chunk,
                    0,
                    TextOptions {
                        openmetrics: format == FileFormat::OpenMetrics,
                        require_timestamp: true,
                    },
                    &mut b,
                ),
                FileFormat::Influx(p) => influx::parse_timestamped(&chunk, p, &mut b),
            }
            let (batch, errors, count) = b.finish();
            src.rejected += count as u64;
            for e in errors {
                if src.errors.len() < SHOWN_ERRORS {
                    src.errors.push(format!(
                        "{}:{}: {}",
                        path.display(),
                        line_base + e.line,
                        e.reason
                    ));
                }
            }
            line_base += chunk.iter().filter(|&&c| c == b'\n').count();
            let local: Vec<u32> = (0..batch.series.len())
                .map(|i| {
                    let id = batch.series[i].0;
                    *ids.entry(id).or_insert_with(|| {
                        src.series.push(batch.labels(i));
                        (src.series.len() - 1) as u32
                    })
                })
                .collect();
            for s in &batch.samples {
                // The hour holding the sample, and the hour it ends (exactly on a boundary).
                let h = hour_of(s.ts);
                let edge = (s.ts == h).then(|| h - HOUR_MS);
                if h + HOUR_MS < skip_before {
                    continue;
                }
                let rec = (local[s.series as usize], s.ts, s.value);
                spill.push(h, rec).map_err(io)?;
                *src.hours.entry(h).or_default() += 1;
                if let Some(e) = edge {
                    spill.push(e, rec).map_err(io)?;
                    src.hours.entry(e).or_default();
                }
                src.samples += 1;
                src.span = Some(match src.span {
                    None => (s.ts, s.ts),
                    Some((lo, hi)) => (lo.min(s.ts), hi.max(s.ts)),
                });
            }
            if at_eof {
                break;
            }
            filled = f.read(&mut block).map_err(io)?;
        }
        spill.flush_all().map_err(io)?;
        Ok(src)
    }

    /// Removes the spill directory.
    pub fn cleanup(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What identifies a file import (its absolute path, size, modification time and format),
/// and the format (given, or detected from the file's first 64 KiB).
pub fn file_key(
    path: &Path,
    format: Option<FileFormat>,
    precision: Precision,
) -> Result<(String, FileFormat), ImportError> {
    let io = |e: std::io::Error| ImportError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let format = match format {
        Some(f) => f,
        None => {
            // The head, and the tail for OpenMetrics' closing `# EOF`.
            use std::io::{Seek, SeekFrom};
            let mut f = File::open(path).map_err(io)?;
            let mut head = vec![0u8; 64 << 10];
            let n = f.read(&mut head).map_err(io)?;
            head.truncate(n);
            if meta.len() > n as u64 {
                let mut tail = Vec::new();
                f.seek(SeekFrom::End(-(meta.len().min(64) as i64)))
                    .and_then(|_| f.read_to_end(&mut tail))
                    .map_err(io)?;
                head.push(b'\n');
                head.extend_from_slice(&tail);
            }
            FileFormat::detect(&head, precision)
        }
    };
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis());
    let key = format!(
        "file {} ({} bytes, modified {mtime}, {})",
        abs.display(),
        meta.len(),
        format.name()
    );
    Ok((key, format))
}

/// Per-hour spill buffers, appended to `<dir>/<hour>.bin`.
struct Spill {
    dir: PathBuf,
    bufs: HashMap<i64, Vec<u8>>,
}

impl Spill {
    fn new(dir: &Path) -> Spill {
        Spill {
            dir: dir.to_path_buf(),
            bufs: HashMap::new(),
        }
    }

    fn push(&mut self, hour: i64, (series, ts, v): (u32, i64, f64)) -> std::io::Result<()> {
        let b = self.bufs.entry(hour).or_default();
        b.extend_from_slice(&series.to_le_bytes());
        b.extend_from_slice(&ts.to_le_bytes());
        b.extend_from_slice(&v.to_bits().to_le_bytes());
        if b.len() >= SPILL_BUF {
            let bytes = std::mem::take(b);
            self.append(hour, &bytes)?;
        }
        Ok(())
    }

    fn append(&self, hour: i64, bytes: &[u8]) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{hour}.bin")))?;
        f.write_all(bytes)
    }

    fn flush_all(&mut self) -> std::io::Result<()> {
        for (h, b) in std::mem::take(&mut self.bufs) {
            if !b.is_empty() {
                self.append(h, &b)?;
            }
        }
        Ok(())
    }
}

/// Blanks the `# DDL` section of an `influx_inspect export` (`CREATE DATABASE ...`), keeping
/// the line count; `in_ddl` carries the section across blocks.
fn blank_influx_ddl(chunk: &mut [u8], in_ddl: &mut bool) {
    let mut start = 0;
    while start < chunk.len() {
        let end = chunk[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(chunk.len(), |p| start + p);
        let line = &chunk[start..end];
        let t = crate::ingest::trim(line);
        if t == b"# DDL" {
            *in_ddl = true;
        } else if t == b"# DML" {
            *in_ddl = false;
        } else if *in_ddl || t.starts_with(b"CREATE DATABASE") {
            chunk[start..end].fill(b' ');
        }
        start = end + 1;
    }
}

impl Source for FileSource {
    fn key(&self) -> String {
        self.key.clone()
    }

    fn span(&self) -> Option<(i64, i64)> {
        self.span
    }

    fn total_samples(&self) -> Option<u64> {
        Some(self.samples)
    }

    fn has_hour(&self, start: i64) -> bool {
        self.hours.contains_key(&start)
    }

    fn hour(&mut self, start: i64) -> Result<Hour, ImportError> {
        let path = self.dir.join(format!("{start}.bin"));
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(ImportError::Io { path, source: e }),
        };
        let mut used: HashMap<u32, u32> = HashMap::new();
        let mut hour = Hour {
            start,
            ..Hour::default()
        };
        hour.samples.reserve(bytes.len() / SPILL_REC);
        for r in bytes.chunks_exact(SPILL_REC) {
            let s = u32::from_le_bytes(r[0..4].try_into().expect("4 bytes"));
            let ts = i64::from_le_bytes(r[4..12].try_into().expect("8 bytes"));
            let v = f64::from_bits(u64::from_le_bytes(r[12..20].try_into().expect("8 bytes")));
            let local = *used.entry(s).or_insert_with(|| {
                hour.series.push(self.series[s as usize].clone());
                (hour.series.len() - 1) as u32
            });
            hour.samples.push((local, ts, v));
        }
        hour.finish();
        Ok(hour)
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus remote read.

/// A Prometheus server's `/api/v1/read`, queried an hour at a time with `SAMPLES` responses.
pub struct RemoteRead {
    url: String,
    /// One matcher set per `--match`.
    matchers: Vec<Vec<LabelMatcher>>,
    match_text: Vec<String>,
    start: i64,
    end: i64,
    agent: ureq::Agent,
}

/// Largest remote-read response body accepted (an hour of a large server's samples).
const MAX_READ_BYTES: u64 = 4 << 30;

impl RemoteRead {
    /// `url` is the server's base URL; `matches` are PromQL series selectors.
    pub fn new(url: &str, matches: &[String], start: i64, end: i64) -> Result<Self, ImportError> {
        if matches.is_empty() {
            return Err(ImportError::Usage(
                "--from-prometheus needs at least one --match selector, such as --match '{job=~\".+\"}'"
                    .into(),
            ));
        }
        if end < start {
            return Err(ImportError::Usage(format!(
                "--end ({}) is before --start ({})",
                crate::time::rfc3339(end),
                crate::time::rfc3339(start)
            )));
        }
        let matchers = matches
            .iter()
            .map(|m| parse_selector(m))
            .collect::<Result<Vec<_>, _>>()?;
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(std::time::Duration::from_secs(600)))
                .build(),
        );
        Ok(RemoteRead {
            url: url.trim_end_matches('/').to_string(),
            matchers,
            match_text: matches.to_vec(),
            start,
            end,
            agent,
        })
    }
}

/// A PromQL series selector as remote-read matchers (the metric name as `__name__ = ...`).
pub fn parse_selector(sel: &str) -> Result<Vec<LabelMatcher>, ImportError> {
    use promql_parser::label::MatchOp;
    let bad = |reason: String| {
        ImportError::Usage(format!(
            "--match {sel:?}: {reason}; give a series selector such as 'up' or '{{job=~\".+\"}}'"
        ))
    };
    let expr = promql_parser::parser::parse(sel).map_err(bad)?;
    let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
        return Err(bad("not a series selector".into()));
    };
    if !vs.matchers.or_matchers.is_empty() {
        return Err(bad(
            "`or` in a selector is not supported here; give --match twice".into(),
        ));
    }
    let mut out: Vec<LabelMatcher> = vs
        .matchers
        .matchers
        .iter()
        .map(|m| LabelMatcher {
            r#type: match m.op {
                MatchOp::Equal => 0,
                MatchOp::NotEqual => 1,
                MatchOp::Re(_) => 2,
                MatchOp::NotRe(_) => 3,
            },
            name: m.name.clone(),
            value: m.value.clone(),
        })
        .collect();
    if let Some(name) = &vs.name {
        out.push(LabelMatcher {
            r#type: 0,
            name: crate::model::METRIC_NAME.into(),
            value: name.clone(),
        });
    }
    Ok(out)
}

impl Source for RemoteRead {
    fn key(&self) -> String {
        format!(
            "prometheus {} match {:?} from {} to {}",
            self.url, self.match_text, self.start, self.end
        )
    }

    fn span(&self) -> Option<(i64, i64)> {
        Some((self.start, self.end))
    }

    fn total_samples(&self) -> Option<u64> {
        None
    }

    fn has_hour(&self, start: i64) -> bool {
        start + HOUR_MS >= self.start && start <= self.end
    }

    fn hour(&mut self, start: i64) -> Result<Hour, ImportError> {
        let (lo, hi) = (start.max(self.start), (start + HOUR_MS).min(self.end));
        let req = ReadRequest {
            queries: self
                .matchers
                .iter()
                .map(|m| Query {
                    start_timestamp_ms: lo,
                    end_timestamp_ms: hi,
                    matchers: m.clone(),
                })
                .collect(),
            accepted_response_types: vec![],
        };
        let url = format!("{}/api/v1/read", self.url);
        let failed = |reason: String| ImportError::Source {
            what: url.clone(),
            reason,
        };
        let mut resp = self
            .agent
            .post(&url)
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .header("X-Prometheus-Remote-Read-Version", "0.1.0")
            .send(&remote_proto::encode_read(&req)[..])
            .map_err(|e| failed(format!("{e}; is the Prometheus server up at that URL?")))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_READ_BYTES)
            .read_to_vec()
            .map_err(|e| failed(format!("reading the response: {e}")))?;
        if status != 200 {
            let text = String::from_utf8_lossy(&body[..body.len().min(500)]).to_string();
            return Err(failed(format!(
                "HTTP {status}: {}{}",
                text.trim(),
                if text.contains("limit") {
                    " (narrow --match, or raise the server's --storage.remote.read-sample-limit)"
                } else {
                    ""
                }
            )));
        }
        let read = remote_proto::decode_read_response(&body).map_err(failed)?;
        let mut hour = Hour {
            start,
            ..Hour::default()
        };
        let mut seen: HashMap<SeriesId, u32> = HashMap::new();
        for ts in read.results.into_iter().flat_map(|r| r.timeseries) {
            let labels = Labels::from_pairs(
                ts.labels
                    .iter()
                    .filter(|l| !l.value.is_empty())
                    .map(|l| (l.name.as_str(), l.value.as_str())),
            );
            let id = labels.series_id();
            let idx = *seen.entry(id).or_insert_with(|| {
                hour.series.push(labels);
                (hour.series.len() - 1) as u32
            });
            hour.samples
                .extend(ts.samples.iter().map(|s| (idx, s.timestamp, s.value)));
        }
        hour.finish();
        Ok(hour)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats() {
        let p = Precision::Ns;
        assert_eq!(
            FileFormat::detect(b"# HELP a b\na{x=\"1\"} 1 1700000000000\n", p),
            FileFormat::PromText
        );
        assert_eq!(
            FileFormat::detect(b"a_total 1 1700000000.5\n# EOF\n", p),
            FileFormat::OpenMetrics
        );
        assert_eq!(
            FileFormat::detect(b"a_total{x=\"a b\"} 1 1700000000\n", p),
            FileFormat::OpenMetrics,
            "seconds"
        );
        assert_eq!(
            FileFormat::detect(b"a_total 1 1700000000000\n", p),
            FileFormat::PromText,
            "milliseconds"
        );
        assert_eq!(
            FileFormat::detect(b"# INFLUXDB EXPORT: x\n# DDL\nCREATE DATABASE t\n", p),
            FileFormat::Influx(p)
        );
        assert_eq!(
            FileFormat::detect(b"cpu,host=a usage=1 1700000000000000000\n", p),
            FileFormat::Influx(p)
        );
        assert_eq!(
            FileFormat::detect(b"cpu usage=1 1700000000000000000\n", p),
            FileFormat::Influx(p)
        );
    }

    #[test]
    fn blanks_the_ddl_section_only() {
        let mut c = b"# DDL\nCREATE DATABASE db WITH NAME autogen\n# DML\n# CONTEXT-DATABASE:db\ncpu v=1 1\n".to_vec();
        let mut in_ddl = false;
        blank_influx_ddl(&mut c, &mut in_ddl);
        let s = String::from_utf8(c).unwrap();
        assert_eq!(s.lines().count(), 5);
        assert!(!s.contains("CREATE"));
        assert!(s.contains("cpu v=1 1"));
        assert!(!in_ddl);
    }

    #[test]
    fn file_hours_hold_their_end_edge_and_survive_bad_lines() {
        let d = tempfile::tempdir().unwrap();
        let h = 1_764_547_200_000i64; // an hour boundary
        let text = format!(
            "# TYPE m gauge\nm{{a=\"1\"}} 1 {}\nm{{a=\"1\"}} 2 {}\nm{{a=\"1\"}} oops {}\nm{{a=\"2\"}} 3 {}\nm{{a=\"1\"}} 4 {}\n",
            h + HOUR_MS,
            h + 10_000,
            h + 20_000,
            h + 30_000,
            h + HOUR_MS + 5_000
        );
        let f = d.path().join("in.prom");
        std::fs::write(&f, text).unwrap();
        let mut src =
            FileSource::open(&f, None, Precision::Ns, &d.path().join("spill"), 0).unwrap();
        assert_eq!(src.format, FileFormat::PromText);
        assert_eq!(src.rejected, 1);
        assert!(src.errors[0].contains("in.prom:4:"), "{:?}", src.errors);
        assert_eq!(src.total_samples(), Some(4));
        assert!(src.has_hour(h) && src.has_hour(h + HOUR_MS));
        let first = src.hour(h).unwrap();
        let times: Vec<i64> = first.samples.iter().map(|s| s.1 - h).collect();
        assert_eq!(
            times,
            vec![10_000, 30_000, HOUR_MS],
            "the end edge belongs to it too"
        );
        let second = src.hour(h + HOUR_MS).unwrap();
        assert_eq!(second.samples.len(), 2);
        src.cleanup();
        assert!(!d.path().join("spill").exists());
    }

    #[test]
    fn selectors_become_remote_read_matchers() {
        let m = parse_selector("http_requests_total{job=~\"api|web\",code!=\"200\"}").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!((m[0].r#type, m[0].value.as_str()), (2, "api|web"));
        assert_eq!((m[1].r#type, m[1].name.as_str()), (1, "code"));
        assert_eq!(m[2].name, "__name__");
        let e = parse_selector("rate(x[5m])").unwrap_err().to_string();
        assert!(e.contains("not a series selector"), "{e}");
    }
}

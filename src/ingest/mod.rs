//! Push ingest: parsers for Influx line protocol, Prometheus text exposition and Prometheus remote
//! write, all feeding one [`BatchBuilder`] that interns series, validates them against the
//! [`Limits`] and collects per-line errors without dropping the valid lines around them.

pub mod graphite;
pub mod http;
pub mod influx;
pub mod otlp;
pub mod promtext;
pub mod remote_write;
pub mod tcp;

use std::borrow::Cow;

use crate::model::{
    decode_canonical, BatchSample, IdMap, LimitError, Limits, SeriesId, WriteBatch, MAX_ABS_TS,
    METRIC_NAME,
};
use crate::ops::Reject;

/// One rejected input line (or remote-write time series), with its 1-based position.
#[derive(Clone, Debug, PartialEq)]
pub struct LineError {
    /// 1-based line number (remote write: 1-based time series index).
    pub line: usize,
    /// What is wrong and, where it applies, how to fix it.
    pub reason: String,
}

/// Why a whole request was refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("request body is {got} bytes, more than ingest.max_body_bytes = {limit}; split the batch or raise the limit in tidemark.toml [ingest]")]
    TooLarge { got: usize, limit: usize },
    #[error("cannot decode request body: {0}")]
    Decode(String),
}

/// Reusable scratch label set a parser fills for each line. Label names and values borrow
/// from the request body (`Cow::Borrowed`) unless they had to be unescaped or sanitized; the
/// metric name lives in a reused buffer because Influx builds it from measurement and field.
#[derive(Default)]
pub struct SeriesBuf<'a> {
    name: String,
    has_name: bool,
    labels: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// Set by parsers that sanitize names: the builder then checks only counts and lengths.
    pub names_prevalidated: bool,
}

impl<'a> SeriesBuf<'a> {
    /// Forgets the previous line's labels, keeping allocations.
    pub fn clear(&mut self) {
        self.labels.clear();
        self.has_name = false;
    }
    /// Adds a pair (order does not matter; [`BatchBuilder::add`] sorts). `__name__` sets the
    /// metric name.
    pub fn push(&mut self, name: Cow<'a, str>, value: Cow<'a, str>) {
        if name.len() == METRIC_NAME.len() && name == METRIC_NAME {
            self.set_name(&[&value]);
        } else {
            self.labels.push((name, value));
        }
    }
    /// Adds a label the caller knows is not `__name__`.
    #[inline]
    pub fn push_label(&mut self, name: Cow<'a, str>, value: Cow<'a, str>) {
        self.labels.push((name, value));
    }
    /// Sets the metric name to the concatenation of `parts` (Influx `measurement_field`).
    pub fn set_name(&mut self, parts: &[&str]) {
        self.name.clear();
        for p in parts {
            self.name.push_str(p);
        }
        self.has_name = true;
    }
    /// Mutable access to the value of the last pushed label (for in-place unescaping).
    pub fn last_value_mut(&mut self) -> Option<&mut String> {
        self.labels.last_mut().map(|p| p.1.to_mut())
    }
    /// Number of labels, the metric name included.
    pub fn len(&self) -> usize {
        self.labels.len() + usize::from(self.has_name)
    }
    /// True when no label is set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The labels, the metric name included, sorted by name and without empty values; an
    /// error names a label given twice.
    pub fn sorted_pairs(&mut self) -> Result<Vec<(String, String)>, String> {
        if let Some(dup) = self.sort() {
            return Err(format!("duplicate label name {dup:?}"));
        }
        Ok(self
            .pairs()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    /// Sorts the labels by name; returns a duplicated name, if any.
    #[inline]
    fn sort(&mut self) -> Option<String> {
        if !self.labels.windows(2).all(|w| short_less(&w[0].0, &w[1].0)) {
            self.labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            if let Some(w) = self.labels.windows(2).find(|w| w[0].0 == w[1].0) {
                return Some(w[0].0.to_string());
            }
        }
        None
    }
    /// Writes the canonical encoding of [`Self::pairs`] (see [`crate::model::canonical_encode`]).
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        let mut put = |k: &str, v: &str| {
            if !v.is_empty() {
                out.extend_from_slice(k.as_bytes());
                out.push(0xff);
                out.extend_from_slice(v.as_bytes());
                out.push(0xfe);
            }
        };
        let split = self
            .labels
            .partition_point(|p| short_less(&p.0, METRIC_NAME));
        for (k, v) in &self.labels[..split] {
            put(k, v);
        }
        if self.has_name {
            put(METRIC_NAME, &self.name);
        }
        for (k, v) in &self.labels[split..] {
            put(k, v);
        }
    }

    /// The sorted pairs with `__name__` merged in place, without empty values.
    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let split = self
            .labels
            .partition_point(|p| short_less(&p.0, METRIC_NAME));
        let name =
            (self.has_name && !self.name.is_empty()).then_some((METRIC_NAME, self.name.as_str()));
        self.labels[..split]
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_ref()))
            .chain(name)
            .chain(
                self.labels[split..]
                    .iter()
                    .map(|(k, v)| (k.as_ref(), v.as_ref())),
            )
            .filter(|p| !p.1.is_empty())
    }
}

/// `a < b` for short strings without a `memcmp` call.
#[inline]
fn short_less(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x < y;
        }
    }
    a.len() < b.len()
}

enum Slot {
    Accepted(u32),
    Rejected,
}

/// Interns series of one request, validates each new one once, and collects samples and errors.
pub struct BatchBuilder<'l> {
    limits: &'l Limits,
    batch: WriteBatch,
    slots: IdMap<Slot>,
    canon: Vec<u8>,
    errors: Vec<LineError>,
    error_count: usize,
    first_line: Vec<usize>,
    min_ts: i64,
    min_ts_reason: String,
    /// Rejections by reason: parse, limit, too old.
    pub rejected: [usize; 3],
    /// What an error's position counts: `line` (text formats), `time series` (remote
    /// write), `metric` (OTLP).
    pub position: &'static str,
}

/// At most this many errors are kept with their text; the rest are counted.
pub const MAX_REPORTED_ERRORS: usize = 20;

impl<'l> BatchBuilder<'l> {
    pub fn new(limits: &'l Limits) -> Self {
        BatchBuilder {
            limits,
            batch: WriteBatch::default(),
            slots: IdMap::default(),
            canon: Vec::with_capacity(256),
            errors: Vec::new(),
            error_count: 0,
            first_line: Vec::new(),
            min_ts: i64::MIN,
            min_ts_reason: String::new(),
            rejected: [0; 3],
            position: "line",
        }
    }

    /// Expects about `n` distinct series (avoids rehashing while interning).
    pub fn reserve(&mut self, n: usize) {
        self.slots.reserve(n);
        self.batch.series.reserve(n);
        self.batch.samples.reserve(n);
        self.batch.arena.reserve(n * 64);
    }

    /// Rejects samples older than `min_ts`, explaining why with `reason`.
    pub fn with_min_ts(mut self, min_ts: i64, reason: String) -> Self {
        self.min_ts = min_ts;
        self.min_ts_reason = reason;
        self
    }

    /// Records a parse error for `line`.
    pub fn error(&mut self, line: usize, reason: impl Into<String>) {
        self.reject(Reject::Parse, line, reason)
    }

    /// Records a rejection of `kind` for `line`.
    pub fn reject(&mut self, kind: Reject, line: usize, reason: impl Into<String>) {
        self.rejected[kind as usize] += 1;
        self.error_count += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(LineError {
                line,
                reason: reason.into(),
            });
        }
    }

    /// Whether a sample's time is in range and not older than the builder's minimum (else it
    /// is rejected, naming the reason).
    #[inline(always)]
    fn time_ok(&mut self, ts: i64, line: usize) -> bool {
        if !(-MAX_ABS_TS..=MAX_ABS_TS).contains(&ts) {
            self.error(line, format!("timestamp {ts} ms is out of range (more than 30,000 years from 1970); check the precision parameter"));
            return false;
        }
        if ts < self.min_ts {
            let msg = format!("sample at {ts} ms {}", self.min_ts_reason);
            self.reject(Reject::TooOld, line, msg);
            return false;
        }
        true
    }

    /// Adds one sample of the series in `buf` (whose labels are sorted in place).
    pub fn add(&mut self, buf: &mut SeriesBuf<'_>, ts: i64, value: f64, line: usize) {
        if !self.time_ok(ts, line) {
            return;
        }
        if let Some(dup) = buf.sort() {
            self.error(line, format!("duplicate label name {dup:?}"));
            return;
        }
        buf.encode(&mut self.canon);
        let id = xxhash_rust::xxh3::xxh3_64(&self.canon);
        let idx = match self.slots.get(&id) {
            Some(Slot::Accepted(i)) => *i,
            Some(Slot::Rejected) => {
                self.error_count += 1;
                self.rejected[Reject::Limit as usize] += 1;
                return;
            }
            None => {
                let n = buf.pairs().count();
                match self
                    .limits
                    .check(ExactIter(buf.pairs(), n), !buf.names_prevalidated)
                {
                    Ok(()) => {
                        let start = self.batch.arena.len() as u32;
                        self.batch.arena.extend_from_slice(&self.canon);
                        let i = self.batch.series.len() as u32;
                        self.batch
                            .series
                            .push((id, start..self.batch.arena.len() as u32));
                        self.first_line.push(line);
                        self.slots.insert(id, Slot::Accepted(i));
                        i
                    }
                    Err(e) => {
                        self.slots.insert(id, Slot::Rejected);
                        self.reject(Reject::Limit, line, e.to_string());
                        return;
                    }
                }
            }
        };
        self.batch.samples.push(BatchSample {
            series: idx,
            ts,
            value,
        });
    }

    /// A series' canonical bytes and id, exactly as [`BatchBuilder::add`] computes them, and
    /// whether its labels pass this builder's limits: for callers that add the same series
    /// many times ([`BatchBuilder::add_encoded`]).
    pub fn encode_series(&self, pairs: &[(String, String)]) -> Result<(SeriesId, Vec<u8>), String> {
        let mut buf = SeriesBuf::default();
        for (k, v) in pairs {
            buf.push(Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str()));
        }
        if let Some(dup) = buf.sort() {
            return Err(format!("duplicate label name {dup:?}"));
        }
        let n = buf.pairs().count();
        self.limits
            .check(ExactIter(buf.pairs(), n), !buf.names_prevalidated)
            .map_err(|e| e.to_string())?;
        let mut canon = Vec::with_capacity(64);
        buf.encode(&mut canon);
        Ok((xxhash_rust::xxh3::xxh3_64(&canon), canon))
    }

    /// Adds one sample of a series encoded and checked by [`BatchBuilder::encode_series`]
    /// (only the time checks run here).
    pub fn add_encoded(&mut self, id: SeriesId, canon: &[u8], ts: i64, value: f64, line: usize) {
        if !self.time_ok(ts, line) {
            return;
        }
        let idx = match self.slots.get(&id) {
            Some(Slot::Accepted(i)) => *i,
            Some(Slot::Rejected) => {
                self.error_count += 1;
                self.rejected[Reject::Limit as usize] += 1;
                return;
            }
            None => {
                let start = self.batch.arena.len() as u32;
                self.batch.arena.extend_from_slice(canon);
                let i = self.batch.series.len() as u32;
                self.batch
                    .series
                    .push((id, start..self.batch.arena.len() as u32));
                self.first_line.push(line);
                self.slots.insert(id, Slot::Accepted(i));
                i
            }
        };
        self.batch.samples.push(BatchSample {
            series: idx,
            ts,
            value,
        });
    }

    /// Drops series (and their samples) that `admit` refuses, reporting each at its first line.
    /// Used for checks against the store, such as the per-metric series limit; `admit` gets the
    /// series id and its canonical label bytes.
    /// The ids of the series in the batch so far, in order.
    pub fn series_ids(&self) -> Vec<SeriesId> {
        self.batch.series.iter().map(|s| s.0).collect()
    }

    pub fn retain_series(
        &mut self,
        mut admit: impl FnMut(SeriesId, &[u8]) -> Result<(), LimitError>,
    ) {
        let mut remap = vec![u32::MAX; self.batch.series.len()];
        let mut kept = Vec::with_capacity(self.batch.series.len());
        let mut errs = Vec::new();
        for (i, (id, range)) in std::mem::take(&mut self.batch.series)
            .into_iter()
            .enumerate()
        {
            let canon = &self.batch.arena[range.start as usize..range.end as usize];
            match admit(id, canon) {
                Ok(()) => {
                    remap[i] = kept.len() as u32;
                    kept.push((id, range));
                }
                Err(e) => errs.push((self.first_line[i], e.to_string())),
            }
        }
        for (line, e) in errs {
            self.reject(Reject::Limit, line, e);
        }
        if kept.len() != remap.len() {
            self.batch.samples.retain_mut(|s| {
                s.series = remap[s.series as usize];
                s.series != u32::MAX
            });
        }
        self.batch.series = kept;
    }

    /// Samples accepted so far.
    pub fn sample_count(&self) -> usize {
        self.batch.samples.len()
    }

    /// The batch, the first errors, and the total number of rejected samples or lines.
    pub fn finish(self) -> (WriteBatch, Vec<LineError>, usize) {
        (self.batch, self.errors, self.error_count)
    }
}

struct ExactIter<I>(I, usize);
impl<I: Iterator> Iterator for ExactIter<I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        self.0.next()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.1, Some(self.1))
    }
}
impl<I: Iterator> ExactSizeIterator for ExactIter<I> {}

/// Renders errors as `line N: reason; ...` with a count of the ones not shown.
pub fn describe_errors(errors: &[LineError], total: usize) -> String {
    describe_errors_as(errors, total, "line")
}

/// [`describe_errors`], positions counted in `position` (`metric 3: ...`).
pub fn describe_errors_as(errors: &[LineError], total: usize, position: &str) -> String {
    let mut s = String::new();
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            s.push_str("; ");
        }
        s.push_str(&format!("{position} {}: {}", e.line, e.reason));
    }
    if total > errors.len() {
        s.push_str(&format!("; and {} more rejected", total - errors.len()));
    }
    s
}

/// Parses a decimal float quickly. Exact (correctly rounded) whenever it answers: it takes the
/// Clinger fast path (mantissa below 2^53 and at most 22 fractional digits) and otherwise falls
/// back to the standard library. Accepts what Go's `ParseFloat` and Prometheus accept, including
/// `NaN`, `Inf`, `+Inf`, `-Inf` in any letter case.
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    let (neg, digits) = match s.first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let mut mant: u64 = 0;
    let mut frac_digits = 0usize;
    let mut seen_dot = false;
    let mut n = 0usize;
    for &c in digits {
        match c {
            b'0'..=b'9' => {
                if n >= 18 {
                    return slow_f64(s);
                }
                mant = mant * 10 + u64::from(c - b'0');
                n += 1;
                if seen_dot {
                    frac_digits += 1;
                }
            }
            b'.' if !seen_dot => seen_dot = true,
            _ => return slow_f64(s),
        }
    }
    if n == 0 || mant >= (1u64 << 53) || frac_digits > 22 {
        return slow_f64(s);
    }
    let v = mant as f64 / POW10[frac_digits];
    Some(if neg { -v } else { v })
}

#[cold]
fn slow_f64(s: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(s).ok()?;
    match s.to_ascii_lowercase().as_str() {
        "nan" => return Some(f64::NAN),
        "inf" | "+inf" | "infinity" | "+infinity" => return Some(f64::INFINITY),
        "-inf" | "-infinity" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    // Go accepts hex floats and underscores rarely; Rust's parser covers the decimal forms.
    let v: f64 = s.parse().ok()?;
    Some(v)
}

/// The non-empty, non-comment lines of a text body as `(1-based line number, line)`, each
/// trimmed; a line that is not valid UTF-8 comes as `Err(reason)`. The body is validated once
/// as a whole; only a body with invalid bytes is checked line by line.
pub fn text_lines(body: &[u8]) -> impl Iterator<Item = (usize, Result<&str, String>)> {
    let whole = std::str::from_utf8(body).ok();
    body.split(|&b| b == b'\n')
        .enumerate()
        .filter_map(move |(i, raw)| {
            let raw = trim(raw);
            if raw.is_empty() || raw[0] == b'#' {
                return None;
            }
            let line = match whole {
                Some(text) => {
                    let start = raw.as_ptr() as usize - body.as_ptr() as usize;
                    Ok(&text[start..start + raw.len()])
                }
                None => std::str::from_utf8(raw)
                    .map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to() + 1)),
            };
            Some((i + 1, line))
        })
}

/// Strips spaces, tabs and carriage returns at both ends.
pub fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = s {
        s = rest;
    }
    s
}

/// Parses a signed decimal integer without allocation.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, d) = match s.first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if d.is_empty() || d.len() > 19 {
        return None;
    }
    let mut v: i64 = 0;
    for &c in d {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(i64::from(c - b'0'))?;
    }
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_float_matches_std() {
        for s in [
            "0",
            "1",
            "-1.5",
            "0.734",
            "123456789.123",
            "3.14159265358979",
            "1e3",
            "-0.0001",
            "+2",
            "12345678901234567890",
        ] {
            let want: f64 = s.trim_start_matches('+').parse().unwrap();
            assert_eq!(
                parse_f64(s.as_bytes()).unwrap().to_bits(),
                want.to_bits(),
                "{s}"
            );
        }
        assert!(parse_f64(b"NaN").unwrap().is_nan());
        assert_eq!(parse_f64(b"-Inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_f64(b"abc"), None);
        assert_eq!(parse_f64(b""), None);
        assert_eq!(parse_f64(b"."), None);
        assert_eq!(parse_f64(b"1.2.3"), None);
    }

    #[test]
    fn builder_interns_and_rejects() {
        let limits = Limits {
            max_labels_per_series: 2,
            ..Limits::default()
        };
        let mut b = BatchBuilder::new(&limits);
        let mut buf = SeriesBuf::default();
        buf.push("host".into(), "a".into());
        buf.push("__name__".into(), "cpu".into());
        b.add(&mut buf, 1, 1.0, 1);
        b.add(&mut buf, 2, 2.0, 2);
        buf.clear();
        buf.push("__name__".into(), "cpu".into());
        buf.push("host".into(), "a".into());
        buf.push("x".into(), "y".into());
        b.add(&mut buf, 3, 3.0, 3);
        let (batch, errs, n) = b.finish();
        assert_eq!(batch.series.len(), 1);
        assert_eq!(batch.samples.len(), 2);
        assert_eq!(n, 1);
        assert_eq!(errs[0].line, 3);
        assert!(
            errs[0].reason.contains("max_labels_per_series"),
            "{}",
            errs[0].reason
        );
    }
}

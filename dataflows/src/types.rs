//! Records that travel through the job.

use serde::{Deserialize, Serialize};

/// One sample: series id, event time in ms, value. 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub series: u64,
    pub ts: i64,
    pub value: f64,
}

/// Prometheus's staleness marker bits; such samples end a series and are not aggregated.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// An aggregate of one series over one tumbling window `(start, start + width]`: left-open and
/// right-closed like a PromQL range, so `sum_over_time(m[1m])` at an aligned `t` is exactly the
/// `sum` of the window ending at `t`, and a range of whole windows is exactly their union.
/// Upsert key: `(series, start)`; a corrected rollup replaces the earlier one.
///
/// With `first_ts` and `last_ts` a run of rollups carries what `rate`/`increase` extrapolation
/// needs (the first and last sample's time and value, the count, the reset-corrected increase).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    pub series: u64,
    /// Window start, ms (aligned to the width; exclusive).
    pub start: i64,
    /// Window width, ms (60 000 or 3 600 000).
    pub width: i64,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// Value of the earliest sample.
    pub first: f64,
    /// Value of the latest sample.
    pub last: f64,
    /// Time of the earliest sample, ms.
    pub first_ts: i64,
    /// Time of the latest sample, ms.
    pub last_ts: i64,
    /// Counter increase over the window's samples, resets handled as Prometheus does (a drop
    /// means the counter restarted from zero).
    pub increase: f64,
}

impl Rollup {
    /// Rolls up samples of one series sorted by time (at most one per timestamp).
    /// Returns `None` for an empty slice.
    pub fn from_sorted(
        series: u64,
        start: i64,
        width: i64,
        samples: &[(i64, f64)],
    ) -> Option<Rollup> {
        let (&(first_ts, first), rest) = samples.split_first()?;
        let mut r = Rollup {
            series,
            start,
            width,
            count: 1,
            sum: first,
            min: first,
            max: first,
            first,
            last: first,
            first_ts,
            last_ts: first_ts,
            increase: 0.0,
        };
        for &(ts, v) in rest {
            r.count += 1;
            r.sum += v;
            r.min = min_nan(r.min, v);
            r.max = max_nan(r.max, v);
            r.increase += counter_delta(r.last, v);
            r.last = v;
            r.last_ts = ts;
        }
        Some(r)
    }

    /// Appends `p`, which follows every sample of `self` in time (a later window, or a later
    /// sample as a one-sample rollup): the window fields are left as they are.
    pub fn merge(&mut self, p: &Rollup) {
        self.count += p.count;
        self.sum += p.sum;
        self.min = min_nan(self.min, p.min);
        self.max = max_nan(self.max, p.max);
        self.increase += counter_delta(self.last, p.first) + p.increase;
        self.last = p.last;
        self.last_ts = p.last_ts;
    }

    /// One sample as a rollup of the window `(ts - 1, ts]`.
    pub fn point(series: u64, ts: i64, v: f64) -> Rollup {
        Rollup {
            series,
            start: ts - 1,
            width: 1,
            count: 1,
            sum: v,
            min: v,
            max: v,
            first: v,
            last: v,
            first_ts: ts,
            last_ts: ts,
            increase: 0.0,
        }
    }

    /// Window end (inclusive).
    pub fn end(&self) -> i64 {
        self.start.saturating_add(self.width)
    }

    /// Combines finer rollups of one series, sorted by start, into one of `width`: the increase
    /// includes the steps between one window's last sample and the next one's first.
    pub fn combine(series: u64, start: i64, width: i64, parts: &[Rollup]) -> Option<Rollup> {
        let (first, rest) = parts.split_first()?;
        let mut r = Rollup {
            series,
            start,
            width,
            ..*first
        };
        for p in rest {
            r.merge(p);
        }
        Some(r)
    }
}

/// Increase from `a` to `b` of a counter: a drop is a reset to zero.
pub fn counter_delta(a: f64, b: f64) -> f64 {
    if b < a {
        b
    } else {
        b - a
    }
}

fn min_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b < a {
        b
    } else {
        a
    }
}

fn max_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b > a {
        b
    } else {
        a
    }
}

/// Lateness counts reported by a window operator: samples behind the watermark that still
/// corrected an open window, and samples too late for any window (kept raw, dropped from rollups).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateStats {
    pub accepted: u64,
    pub dropped: u64,
}

/// A series' label set as the store keeps it: its canonical encoding ([`canonical_pairs`]) in
/// one shared buffer behind a thin pointer. Every holder keeps 8 bytes (a table slot of the
/// catalog or of a cold writer is 16 bytes instead of 24); the length and the one reference
/// count (no weak count) are the buffer's 16-byte header, as a standard `Arc<[u8]>`'s two
/// counts are. Compared and hashed as its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedLabels(triomphe::ThinArc<(), u8>);

impl SharedLabels {
    /// Bytes of its buffer: the header and the encoding.
    pub fn heap_bytes(&self) -> usize {
        16 + self.len()
    }
}

impl std::ops::Deref for SharedLabels {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0.slice
    }
}

impl From<&[u8]> for SharedLabels {
    fn from(bytes: &[u8]) -> Self {
        SharedLabels(triomphe::ThinArc::from_header_and_slice((), bytes))
    }
}

impl From<Vec<u8>> for SharedLabels {
    fn from(bytes: Vec<u8>) -> Self {
        SharedLabels::from(&bytes[..])
    }
}

impl Default for SharedLabels {
    fn default() -> Self {
        SharedLabels::from(&[][..])
    }
}

impl std::hash::Hash for SharedLabels {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

impl std::fmt::Debug for SharedLabels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(canonical_pairs(self)).finish()
    }
}

/// The pairs of a label set in its canonical encoding (per pair, sorted by name: the name,
/// `0xff`, the value, `0xfe`; neither byte occurs in UTF-8), as the catalog keeps label sets.
/// A damaged buffer ends the iteration (or yields empty text), never panics.
///
/// ```
/// use tidemark_dataflows::types::canonical_pairs;
/// let b = b"__name__\xffup\xfejob\xffnode\xfe";
/// let pairs: Vec<_> = canonical_pairs(b).collect();
/// assert_eq!(pairs, vec![("__name__", "up"), ("job", "node")]);
/// ```
pub fn canonical_pairs(bytes: &[u8]) -> CanonicalPairs<'_> {
    CanonicalPairs { rest: bytes }
}

/// Compares two label sets in their canonical encoding as their pairs compare (name, then
/// value, pair by pair; a set that is a prefix of another is less), without decoding them: at
/// the first byte where they differ, the end of a buffer is least, a separator (the end of a
/// name or value: that text is a prefix of the other's) next, then the bytes as they are. The
/// common prefix is skipped 16 bytes at a time.
///
/// ```
/// use std::cmp::Ordering;
/// use tidemark_dataflows::types::canonical_cmp;
/// // "a" < "ab" as text, although 0xff (the end of "a") is above b'b'.
/// assert_eq!(canonical_cmp(b"a\xffx\xfe", b"ab\xffx\xfe"), Ordering::Less);
/// assert_eq!(canonical_cmp(b"a\xffx\xfe", b"a\xffx\xfeb\xffy\xfe"), Ordering::Less);
/// assert_eq!(canonical_cmp(b"a\xffy\xfe", b"a\xffx\xfe"), Ordering::Greater);
/// ```
pub fn canonical_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 16 <= n && a[i..i + 16] == b[i..i + 16] {
        i += 16;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    let rank = |x: Option<&u8>| match x {
        None => 0u16,
        Some(0xfe | 0xff) => 1,
        Some(&c) => 2 + u16::from(c),
    };
    rank(a.get(i)).cmp(&rank(b.get(i)))
}

/// See [`canonical_pairs`].
#[derive(Clone, Debug)]
pub struct CanonicalPairs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for CanonicalPairs<'a> {
    type Item = (&'a str, &'a str);
    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        if self.rest.is_empty() {
            return None;
        }
        let text = |b: &'a [u8]| std::str::from_utf8(b).unwrap_or_default();
        let k = self.rest.iter().position(|&b| b == 0xff)?;
        let v = self.rest[k + 1..].iter().position(|&b| b == 0xfe)? + k + 1;
        let pair = (text(&self.rest[..k]), text(&self.rest[k + 1..v]));
        self.rest = &self.rest[v + 1..];
        Some(pair)
    }
}

/// A `Hasher` for keys that are already good 64-bit hashes (series ids are xxh3 of their
/// labels): it passes them through. The operators' per-series tables used SipHash before.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A `HashMap` keyed by series id without rehashing.
pub type IdMap<V> = std::collections::HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;
/// A `HashSet` of series ids without rehashing.
pub type IdSet = std::collections::HashSet<u64, std::hash::BuildHasherDefault<IdHasher>>;

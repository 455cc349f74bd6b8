use std::cmp::Ordering;
use std::fmt;
use tidemark_dataflows::types::SharedLabels;

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::SeriesId;

/// The reserved label that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

const NAME_END: u8 = 0xff;
const PAIR_END: u8 = 0xfe;

/// A label set, sorted by label name, names unique. Includes `__name__` when the series has one.
///
/// Held as one shared buffer in the canonical encoding ([`canonical_encode`]: per pair the
/// name, `0xff`, the value, `0xfe`) behind a thin pointer ([`SharedLabels`]), so a set costs
/// one allocation of its text plus a 16-byte header instead of a vector and two strings per
/// pair (about 100 instead of 500 bytes for a fleet series: the catalog holds one per series),
/// a clone shares it (the catalog hands out its sets without copying them), each holder keeps
/// 8 bytes (the catalog's and the cold writers' table slots are 16 bytes, not 24), and the
/// series id is a hash of the buffer as it is.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Labels(SharedLabels);

/// Writes the canonical encoding of sorted label pairs into `out`: for each pair, the name, `0xff`,
/// the value, `0xfe`. Neither byte can occur in UTF-8, so the encoding is unambiguous.
pub fn canonical_encode<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>, out: &mut Vec<u8>) {
    out.clear();
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(NAME_END);
        out.extend_from_slice(v.as_bytes());
        out.push(PAIR_END);
    }
}

/// Why bytes are not a canonical label encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label set bytes at {at}: {why}")]
pub struct CanonicalError {
    pub at: usize,
    pub why: &'static str,
}

/// The pairs of a [`Labels`], in name order.
pub type Pairs<'a> = tidemark_dataflows::types::CanonicalPairs<'a>;

impl Labels {
    /// Builds a label set from pairs in any order; empty values are dropped (Prometheus treats
    /// an empty label value as an absent label); a later duplicate name replaces an earlier one.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut v: Vec<(K, V)> = pairs
            .into_iter()
            .filter(|(_, v)| !v.as_ref().is_empty())
            .collect();
        // Stable: of equal names the later stays later.
        v.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        let mut out: Vec<(&str, &str)> = Vec::with_capacity(v.len());
        for (k, val) in &v {
            match out.last_mut() {
                Some(last) if last.0 == k.as_ref() => *last = (k.as_ref(), val.as_ref()),
                _ => out.push((k.as_ref(), val.as_ref())),
            }
        }
        Self::from_sorted_iter(out.into_iter())
    }

    /// Wraps pairs the caller guarantees sorted by name, unique, with non-empty values.
    pub fn from_sorted_unchecked(pairs: Vec<(String, String)>) -> Self {
        debug_assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0));
        Self::from_sorted_iter(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// Wraps pairs the caller guarantees sorted by name, unique, with non-empty values (the
    /// catalog rebuilding a set it checked when it was registered).
    pub fn from_sorted_pairs_unchecked<'a>(
        pairs: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        Self::from_sorted_iter(pairs)
    }

    fn from_sorted_iter<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Self {
        let mut buf = Vec::new();
        canonical_encode(pairs, &mut buf);
        Labels(buf.into())
    }

    /// A label set from its canonical encoding (as [`canonical_encode`] writes it), checked:
    /// UTF-8, every pair ended, names sorted and unique, values non-empty.
    pub fn from_canonical(bytes: &[u8]) -> Result<Self, CanonicalError> {
        let fail = |at, why| Err(CanonicalError { at, why });
        let mut at = 0;
        let mut prev: Option<&[u8]> = None;
        while at < bytes.len() {
            let Some(k) = bytes[at..].iter().position(|&b| b == NAME_END) else {
                return fail(at, "a label name without its end byte");
            };
            let name = &bytes[at..at + k];
            let Some(v) = bytes[at + k + 1..].iter().position(|&b| b == PAIR_END) else {
                return fail(at, "a label value without its end byte");
            };
            let value = &bytes[at + k + 1..at + k + 1 + v];
            if std::str::from_utf8(name).is_err() || std::str::from_utf8(value).is_err() {
                return fail(at, "not UTF-8");
            }
            if value.is_empty() {
                return fail(at, "an empty label value");
            }
            if prev.is_some_and(|p| p >= name) {
                return fail(at, "label names not sorted or not unique");
            }
            prev = Some(name);
            at += k + 1 + v + 1;
        }
        Ok(Labels(bytes.into()))
    }

    /// The canonical encoding (what [`Labels::series_id`] hashes).
    pub fn canonical(&self) -> &[u8] {
        &self.0
    }

    /// The canonical encoding, shared (no copy).
    pub fn shared(&self) -> SharedLabels {
        self.0.clone()
    }

    /// An empty label set.
    pub fn empty() -> Self {
        Labels::default()
    }

    /// The value of label `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// The metric name (`__name__`), if present.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// Number of label pairs, `__name__` included.
    pub fn len(&self) -> usize {
        self.0.iter().filter(|&&b| b == PAIR_END).count()
    }

    /// True when there are no labels at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The sorted pairs.
    pub fn iter(&self) -> Pairs<'_> {
        tidemark_dataflows::types::canonical_pairs(&self.0)
    }

    /// The sorted pairs as owned strings.
    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Heap bytes held: the buffer with its 16-byte header (length and reference count).
    pub fn heap_bytes(&self) -> usize {
        self.0.heap_bytes()
    }

    /// The stable series id of this label set.
    pub fn series_id(&self) -> SeriesId {
        xxhash_rust::xxh3::xxh3_64(&self.0)
    }

    /// Sets (or with an empty value removes) a label.
    pub fn set(&mut self, name: &str, value: &str) {
        if value.is_empty() {
            return self.remove(name);
        }
        if self.get(name) == Some(value) {
            return;
        }
        let mut buf = Vec::with_capacity(self.0.len() + name.len() + value.len() + 2);
        let mut placed = false;
        for (k, v) in self.iter() {
            if !placed && k >= name {
                buf.extend_from_slice(name.as_bytes());
                buf.push(NAME_END);
                buf.extend_from_slice(value.as_bytes());
                buf.push(PAIR_END);
                placed = true;
                if k == name {
                    continue;
                }
            }
            buf.extend_from_slice(k.as_bytes());
            buf.push(NAME_END);
            buf.extend_from_slice(v.as_bytes());
            buf.push(PAIR_END);
        }
        if !placed {
            buf.extend_from_slice(name.as_bytes());
            buf.push(NAME_END);
            buf.extend_from_slice(value.as_bytes());
            buf.push(PAIR_END);
        }
        self.0 = buf.into();
    }

    /// Removes a label if present.
    pub fn remove(&mut self, name: &str) {
        if self.get(name).is_some() {
            self.retain(|k| k != name);
        }
    }

    /// A copy without `__name__`.
    pub fn without_name(&self) -> Labels {
        let mut l = self.clone();
        l.remove(METRIC_NAME);
        l
    }

    /// Keeps only the labels for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let mut buf = Vec::with_capacity(self.0.len());
        canonical_encode(self.iter().filter(|(k, _)| keep(k)), &mut buf);
        if buf.len() != self.0.len() {
            self.0 = buf.into();
        }
    }
}

/// The canonical encoding (the rule operators read label sets so).
impl AsRef<[u8]> for Labels {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// By pairs, names first (as a sorted `Vec<(String, String)>` compares), computed on the
/// encoded bytes without decoding them ([`tidemark_dataflows::types::canonical_cmp`]).
impl Ord for Labels {
    /// As the pairs compare (name, then value, pair by pair), on the encoded bytes.
    fn cmp(&self, other: &Self) -> Ordering {
        tidemark_dataflows::types::canonical_cmp(&self.0, &other.0)
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

fn write_escaped(f: &mut fmt::Formatter<'_>, v: &str) -> fmt::Result {
    for c in v.chars() {
        match c {
            '\\' => f.write_str("\\\\")?,
            '"' => f.write_str("\\\"")?,
            '\n' => f.write_str("\\n")?,
            c => fmt::Write::write_char(f, c)?,
        }
    }
    Ok(())
}

impl fmt::Display for Labels {
    /// Prometheus notation: `name{a="b", c="d"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.metric_name() {
            f.write_str(n)?;
        }
        f.write_str("{")?;
        let mut first = true;
        for (k, v) in self.iter().filter(|(k, _)| *k != METRIC_NAME) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{k}=\"")?;
            write_escaped(f, v)?;
            f.write_str("\"")?;
        }
        f.write_str("}")
    }
}

impl Serialize for Labels {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Decodes a canonical label encoding (see [`crate::model::canonical_encode`]) into labels.
pub fn decode_canonical(bytes: &[u8]) -> Labels {
    if let Ok(l) = Labels::from_canonical(bytes) {
        return l;
    }
    // Not a valid encoding (never written by ingest): keep what can be read.
    let mut pairs = Vec::new();
    for pair in bytes.split(|&b| b == 0xfe) {
        if pair.is_empty() {
            continue;
        }
        let mut it = pair.splitn(2, |&b| b == 0xff);
        let k = String::from_utf8_lossy(it.next().unwrap_or_default()).into_owned();
        let v = String::from_utf8_lossy(it.next().unwrap_or_default()).into_owned();
        pairs.push((k, v));
    }
    Labels::from_pairs(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A label set is one pointer wherever it is held (the catalog's table slot is its id and
    /// this), and a clone shares the buffer, compares, hashes and reads as the bytes do.
    #[test]
    fn a_label_set_is_a_thin_shared_pointer() {
        use std::hash::{BuildHasher, BuildHasherDefault};
        assert_eq!(std::mem::size_of::<Labels>(), 8);
        assert_eq!(std::mem::size_of::<Option<Labels>>(), 8);
        let a = Labels::from_pairs([("host", "h-1"), ("__name__", "up")]);
        let b = a.clone();
        assert_eq!(
            a.canonical().as_ptr(),
            b.canonical().as_ptr(),
            "shared, not copied"
        );
        let c = Labels::from_canonical(a.canonical()).unwrap();
        assert_eq!(a, c);
        let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
        assert_eq!(h.hash_one(&a), h.hash_one(a.canonical()));
        assert_eq!(a.get("host"), Some("h-1"));
        assert_eq!(a.heap_bytes(), 16 + a.canonical().len());
        assert!(Labels::empty().is_empty());
    }

    /// The byte comparison orders label sets exactly as their pairs compare, on sets built to
    /// share prefixes (names and values that are prefixes of each other, non-ASCII text, sets
    /// that are prefixes of others; an empty value drops its pair, as `from_pairs` does).
    #[test]
    fn order_on_bytes_equals_the_order_of_pairs() {
        let names = ["a", "ab", "b", "__name__", "job", "jobs", "\u{e9}"];
        let values = ["", "x", "xy", "y", "xy\u{e9}", "0123456789abcdefghij"];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut sets = Vec::new();
        for _ in 0..400 {
            let k = next(4);
            let pairs: Vec<(&str, &str)> = (0..k)
                .map(|_| (names[next(names.len())], values[next(values.len())]))
                .collect();
            sets.push(Labels::from_pairs(pairs));
        }
        for a in &sets {
            for b in &sets {
                assert_eq!(a.cmp(b), a.iter().cmp(b.iter()), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn sorted_deduped_and_stable_id() {
        let a = Labels::from_pairs([
            ("b", "2"),
            ("__name__", "m"),
            ("a", "1"),
            ("a", "3"),
            ("e", ""),
        ]);
        assert_eq!(a.len(), 3);
        assert_eq!(a.get("a"), Some("3"));
        assert_eq!(a.to_string(), "m{a=\"3\", b=\"2\"}");
        let b = Labels::from_pairs([("a", "3"), ("b", "2"), ("__name__", "m")]);
        assert_eq!(a.series_id(), b.series_id());
        // The id is written to Parquet: pin it.
        assert_eq!(Labels::from_pairs([("__name__", "up")]).series_id(), {
            xxhash_rust::xxh3::xxh3_64(b"__name__\xffup\xfe")
        });
    }

    #[test]
    fn edits_keep_the_encoding_sorted_and_order_is_by_pairs() {
        let mut l = Labels::from_pairs([("b", "2"), ("d", "4")]);
        l.set("c", "3");
        l.set("a", "1");
        l.set("e", "5");
        l.set("b", "20");
        assert_eq!(
            l.to_string(),
            "{a=\"1\", b=\"20\", c=\"3\", d=\"4\", e=\"5\"}"
        );
        l.set("c", "");
        l.remove("e");
        assert_eq!(l.clone().into_pairs().len(), 3);
        assert_eq!(Labels::from_canonical(l.canonical()).unwrap(), l);
        assert_eq!(l.series_id(), Labels::from_pairs(l.iter()).series_id());
        // "a" sorts before "ab" as names, although "a\xff" sorts after "ab" as bytes.
        let a = Labels::from_pairs([("a", "1")]);
        let ab = Labels::from_pairs([("ab", "1")]);
        assert!(a < ab);
        assert_eq!(format!("{a:?}"), "{\"a\": \"1\"}");
    }

    #[test]
    fn damaged_canonical_bytes_are_refused_with_where_and_why() {
        for (bytes, why) in [
            (&b"a\xff1"[..], "a label value without its end byte"),
            (b"a", "a label name without its end byte"),
            (
                b"b\xff1\xfea\xff2\xfe",
                "label names not sorted or not unique",
            ),
            (b"a\xff\xfe", "an empty label value"),
            (b"a\xff\xc3\xfe", "not UTF-8"),
        ] {
            assert_eq!(
                Labels::from_canonical(bytes).unwrap_err().why,
                why,
                "{bytes:?}"
            );
        }
        assert!(Labels::from_canonical(b"").unwrap().is_empty());
    }
}

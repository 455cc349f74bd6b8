use std::fmt;

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::SeriesId;

/// The reserved label that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// A label set, sorted by label name, names unique. Includes `__name__` when the series has one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<(String, String)>);

impl AsRef<[(String, String)]> for Labels {
    fn as_ref(&self) -> &[(String, String)] {
        &self.0
    }
}

/// Writes the canonical encoding of sorted label pairs into `out`: for each pair, the name, `0xff`,
/// the value, `0xfe`. Neither byte can occur in UTF-8, so the encoding is unambiguous.
pub fn canonical_encode<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>, out: &mut Vec<u8>) {
    out.clear();
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0xff);
        out.extend_from_slice(v.as_bytes());
        out.push(0xfe);
    }
}

impl Labels {
    /// Builds a label set from pairs in any order; empty values are dropped (Prometheus treats
    /// an empty label value as an absent label); a later duplicate name replaces an earlier one.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut v: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        // Keep the last of duplicates.
        let mut out: Vec<(String, String)> = Vec::with_capacity(v.len());
        for p in v {
            if let Some(last) = out.last_mut() {
                if last.0 == p.0 {
                    *last = p;
                    continue;
                }
            }
            out.push(p);
        }
        Labels(out)
    }

    /// Wraps pairs the caller guarantees sorted by name, unique, with non-empty values.
    pub fn from_sorted_unchecked(pairs: Vec<(String, String)>) -> Self {
        debug_assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0));
        Labels(pairs)
    }

    /// An empty label set.
    pub fn empty() -> Self {
        Labels(Vec::new())
    }

    /// The value of label `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|p| p.0.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    /// The metric name (`__name__`), if present.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// Number of label pairs, `__name__` included.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no labels at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The sorted pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The pairs as a slice.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// Consumes into the sorted pairs.
    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.0
    }

    /// The stable series id of this label set.
    pub fn series_id(&self) -> SeriesId {
        let mut buf = Vec::with_capacity(64);
        canonical_encode(self.iter(), &mut buf);
        xxhash_rust::xxh3::xxh3_64(&buf)
    }

    /// Sets (or with an empty value removes) a label.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.binary_search_by(|p| p.0.as_str().cmp(name)) {
            Ok(i) if value.is_empty() => {
                self.0.remove(i);
            }
            Ok(i) => self.0[i].1 = value.to_string(),
            Err(_) if value.is_empty() => {}
            Err(i) => self.0.insert(i, (name.to_string(), value.to_string())),
        }
    }

    /// Removes a label if present.
    pub fn remove(&mut self, name: &str) {
        if let Ok(i) = self.0.binary_search_by(|p| p.0.as_str().cmp(name)) {
            self.0.remove(i);
        }
    }

    /// A copy without `__name__`.
    pub fn without_name(&self) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|(k, _)| k != METRIC_NAME)
                .cloned()
                .collect(),
        )
    }

    /// Keeps only the labels for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.0.retain(|(k, _)| keep(k));
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
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_deduped_and_stable_id() {
        let a = Labels::from_pairs([
            ("b", "2"),
            ("__name__", "m"),
            ("a", "1"),
            ("a", "3"),
            ("e", ""),
        ]);
        assert_eq!(a.pairs().len(), 3);
        assert_eq!(a.get("a"), Some("3"));
        assert_eq!(a.to_string(), "m{a=\"3\", b=\"2\"}");
        let b = Labels::from_pairs([("a", "3"), ("b", "2"), ("__name__", "m")]);
        assert_eq!(a.series_id(), b.series_id());
        // The id is written to Parquet: pin it.
        assert_eq!(Labels::from_pairs([("__name__", "up")]).series_id(), {
            xxhash_rust::xxh3::xxh3_64(b"__name__\xffup\xfe")
        });
    }
}

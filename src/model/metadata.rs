//! Metric metadata (`# TYPE`, `# HELP`, `# UNIT` of the exposition formats, remote write's
//! `MetricMetadata`): what `/api/v1/metadata` answers. Kept per metric family name, each
//! distinct (type, help, unit) once, bounded in families; scrapes, text pushes and remote
//! write record into one store.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{json, Value};

/// One metric family's metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Metadata {
    /// `counter`, `gauge`, `histogram`, `gaugehistogram`, `summary`, `info`, `stateset` or
    /// `unknown`.
    pub kind: String,
    pub help: String,
    pub unit: String,
}

impl Metadata {
    pub fn json(&self) -> Value {
        json!({"type": self.kind, "help": self.help, "unit": self.unit})
    }
}

/// Most metric families kept; further new names are not recorded (counted).
pub const MAX_FAMILIES: usize = 200_000;
/// Most distinct metadata kept for one family.
const MAX_PER_FAMILY: usize = 8;

/// The metadata of every family seen, with when each entry was last seen.
#[derive(Default)]
pub struct MetadataStore {
    families: Mutex<BTreeMap<String, Vec<(Metadata, i64)>>>,
    dropped: std::sync::atomic::AtomicU64,
}

impl MetadataStore {
    /// Records `meta` for `family`, seen at `now_ms`.
    pub fn record(&self, family: &str, meta: &Metadata, now_ms: i64) {
        let mut f = self.families.lock().unwrap_or_else(|e| e.into_inner());
        if !f.contains_key(family) && f.len() >= MAX_FAMILIES {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        let entries = f.entry(family.to_string()).or_default();
        if let Some(e) = entries.iter_mut().find(|(m, _)| m == meta) {
            e.1 = now_ms;
            return;
        }
        if entries.len() >= MAX_PER_FAMILY {
            // The least recently seen goes.
            if let Some(i) = (0..entries.len()).min_by_key(|i| entries[*i].1) {
                entries.remove(i);
            }
        }
        entries.push((meta.clone(), now_ms));
    }

    /// Records every family of `metas`.
    pub fn record_all<'a>(
        &self,
        metas: impl IntoIterator<Item = &'a (String, Metadata)>,
        now: i64,
    ) {
        for (name, m) in metas {
            self.record(name, m, now);
        }
    }

    /// Families not recorded because the store was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.families
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `/api/v1/metadata`'s `data`: `{family: [{type, help, unit}]}`, at most `limit` families
    /// (0: all) and `per_metric` entries each (0: all), only `metric` when given. The most
    /// recently seen entry comes first.
    pub fn json(&self, limit: usize, per_metric: usize, metric: Option<&str>) -> Value {
        let f = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = serde_json::Map::new();
        let pick = |entries: &Vec<(Metadata, i64)>| -> Value {
            let mut e: Vec<&(Metadata, i64)> = entries.iter().collect();
            e.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            if per_metric > 0 {
                e.truncate(per_metric);
            }
            Value::Array(e.iter().map(|(m, _)| m.json()).collect())
        };
        match metric {
            Some(name) => {
                if let Some(e) = f.get(name) {
                    out.insert(name.to_string(), pick(e));
                }
            }
            None => {
                for (name, e) in f.iter() {
                    if limit > 0 && out.len() >= limit {
                        break;
                    }
                    out.insert(name.clone(), pick(e));
                }
            }
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: &str, help: &str) -> Metadata {
        Metadata {
            kind: kind.into(),
            help: help.into(),
            unit: String::new(),
        }
    }

    #[test]
    fn distinct_entries_newest_first_and_limits() {
        let s = MetadataStore::default();
        s.record("a", &m("counter", "old"), 1);
        s.record("a", &m("counter", "new"), 2);
        s.record("a", &m("counter", "old"), 0);
        s.record("b", &m("gauge", "b"), 1);
        let j = s.json(0, 0, None);
        assert_eq!(j["a"][0]["help"], "new");
        assert_eq!(j["a"].as_array().unwrap().len(), 2);
        assert_eq!(j["b"][0]["type"], "gauge");
        assert_eq!(s.json(1, 0, None).as_object().unwrap().len(), 1);
        assert_eq!(s.json(0, 1, None)["a"].as_array().unwrap().len(), 1);
        assert_eq!(s.json(0, 0, Some("b")).as_object().unwrap().len(), 1);
        assert!(s.json(0, 0, Some("zz")).as_object().unwrap().is_empty());
    }
}

//! The series catalog and inverted label index: label pair -> posting set of series ids.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use regex::Regex;

use crate::ingest::decode_canonical;
use crate::model::{IdMap, Labels, SeriesId, METRIC_NAME};

/// A label matcher: `=`, `!=`, `=~`, `!~`. Regexes are fully anchored, as in Prometheus.
#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
}

/// The matcher operations.
#[derive(Clone, Debug)]
pub enum MatchOp {
    Eq(String),
    Ne(String),
    Re(Regex),
    Nre(Regex),
}

impl Matcher {
    /// `name = value`.
    pub fn eq(name: &str, value: &str) -> Self {
        Matcher {
            name: name.to_string(),
            op: MatchOp::Eq(value.to_string()),
        }
    }

    /// Builds a regex matcher, anchoring the pattern.
    pub fn regex(name: &str, pattern: &str, negate: bool) -> Result<Self, regex::Error> {
        let re = Regex::new(&format!("^(?s:{pattern})$"))?;
        Ok(Matcher {
            name: name.to_string(),
            op: if negate {
                MatchOp::Nre(re)
            } else {
                MatchOp::Re(re)
            },
        })
    }

    /// Whether a label value (`""` when absent) matches.
    pub fn matches(&self, v: &str) -> bool {
        match &self.op {
            MatchOp::Eq(x) => v == x,
            MatchOp::Ne(x) => v != x,
            MatchOp::Re(r) => r.is_match(v),
            MatchOp::Nre(r) => !r.is_match(v),
        }
    }
}

type Postings = HashMap<String, HashMap<String, BTreeSet<SeriesId>>>;

const SHARDS: usize = 16;

/// Every series the hot tier knows, with its labels and the postings.
pub struct Catalog {
    shards: Box<[RwLock<IdMap<Arc<Labels>>>]>,
    postings: RwLock<Postings>,
    count: AtomicUsize,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            shards: (0..SHARDS).map(|_| RwLock::new(IdMap::default())).collect(),
            postings: RwLock::new(HashMap::new()),
            count: AtomicUsize::new(0),
        }
    }
}

fn shard(id: SeriesId) -> usize {
    (id >> 59) as usize % SHARDS
}

impl Catalog {
    /// True when the series is known.
    pub fn contains(&self, id: SeriesId) -> bool {
        self.shards[shard(id)]
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&id)
    }

    /// Which of `ids` are not known, as indices into `ids`: each shard's lock is taken once
    /// (a log record or an ingest batch names thousands of series, nearly all known; a lock
    /// and lookup per series was 5 % of the job's CPU at 1 M series).
    pub fn unknown(&self, ids: &[SeriesId]) -> Vec<usize> {
        let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); SHARDS];
        for (i, id) in ids.iter().enumerate() {
            by_shard[shard(*id)].push(i);
        }
        let mut missing: Vec<usize> = Vec::new();
        for (sh, idx) in by_shard.iter().enumerate() {
            if idx.is_empty() {
                continue;
            }
            let known = self.shards[sh].read().unwrap_or_else(|e| e.into_inner());
            missing.extend(idx.iter().filter(|&&i| !known.contains_key(&ids[i])));
        }
        missing.sort_unstable();
        missing
    }

    /// [`Catalog::register_canonical`] for many series, the known ones found with
    /// [`Catalog::unknown`]. Returns how many were new.
    pub fn register_canonical_batch(&self, series: &[(SeriesId, &[u8])]) -> usize {
        let ids: Vec<SeriesId> = series.iter().map(|s| s.0).collect();
        self.unknown(&ids)
            .into_iter()
            .filter(|&i| self.register_canonical(series[i].0, series[i].1))
            .count()
    }

    /// Registers a series from its canonical encoding unless known. Returns true when new.
    pub fn register_canonical(&self, id: SeriesId, canonical: &[u8]) -> bool {
        if self.contains(id) {
            return false;
        }
        self.register(id, decode_canonical(canonical))
    }

    /// Registers a series unless known. Returns true when new.
    pub fn register(&self, id: SeriesId, labels: Labels) -> bool {
        let labels = Arc::new(labels);
        {
            let mut s = self.shards[shard(id)]
                .write()
                .unwrap_or_else(|e| e.into_inner());
            if s.contains_key(&id) {
                return false;
            }
            s.insert(id, Arc::clone(&labels));
        }
        let mut p = self.postings.write().unwrap_or_else(|e| e.into_inner());
        for (k, v) in labels.iter() {
            p.entry(k.to_string())
                .or_default()
                .entry(v.to_string())
                .or_default()
                .insert(id);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Forgets a series.
    pub fn remove(&self, id: SeriesId) {
        let Some(labels) = self.shards[shard(id)]
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
        else {
            return;
        };
        let mut p = self.postings.write().unwrap_or_else(|e| e.into_inner());
        for (k, v) in labels.iter() {
            if let Some(values) = p.get_mut(k) {
                if let Some(set) = values.get_mut(v) {
                    set.remove(&id);
                    if set.is_empty() {
                        values.remove(v);
                    }
                }
                if values.is_empty() {
                    p.remove(k);
                }
            }
        }
        self.count.fetch_sub(1, Ordering::Relaxed);
    }

    /// Labels of a series.
    pub fn labels(&self, id: SeriesId) -> Option<Arc<Labels>> {
        self.shards[shard(id)]
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Estimated bytes held: `(labels, postings)`. Labels: each series' table slot and its
    /// label set (one buffer; a 16-byte allocator header per allocation); postings: the label
    /// names and values and about 13 bytes per id in a B-tree set.
    pub fn memory(&self) -> (i64, i64) {
        const ALLOC: usize = 16;
        let string = |s: &str| {
            if s.is_empty() {
                0
            } else {
                s.len().next_multiple_of(8) + ALLOC
            }
        };
        let slot = tidemark_dataflows::memory::hash_slot(16);
        let mut labels = 0i64;
        for sh in self.shards.iter() {
            let sh = sh.read().unwrap_or_else(|e| e.into_inner());
            labels += sh.capacity() as i64 * slot;
            for l in sh.values() {
                // The Arc (two counts and the boxed buffer) and the buffer.
                let heap = 16 + 16 + ALLOC + l.heap_bytes().next_multiple_of(8) + ALLOC;
                labels += heap as i64;
            }
        }
        let p = self.postings.read().unwrap_or_else(|e| e.into_inner());
        let mut postings = 0i64;
        for (k, values) in p.iter() {
            postings += (string(k) + 72) as i64 + values.capacity() as i64 * 80;
            for (v, set) in values.iter() {
                postings += string(v) as i64 + set.len() as i64 * 13;
            }
        }
        (labels, postings)
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// True when no series is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of series of one metric name.
    pub fn series_of_metric(&self, metric: &str) -> usize {
        let p = self.postings.read().unwrap_or_else(|e| e.into_inner());
        p.get(METRIC_NAME)
            .and_then(|v| v.get(metric))
            .map_or(0, |s| s.len())
    }

    /// Series matching every matcher. A label that is absent has the value `""`.
    pub fn select(&self, matchers: &[Matcher]) -> Vec<SeriesId> {
        let p = self.postings.read().unwrap_or_else(|e| e.into_inner());
        // Candidate sets from matchers that cannot match an absent label; an equality
        // matcher's posting set is borrowed (a metric's set may hold millions of ids).
        let mut sets: Vec<std::borrow::Cow<'_, BTreeSet<SeriesId>>> = Vec::new();
        let empty = BTreeSet::new();
        for m in matchers.iter().filter(|m| !m.matches("")) {
            let values = p.get(&m.name);
            let set = match (&m.op, values) {
                (_, None) => std::borrow::Cow::Borrowed(&empty),
                (MatchOp::Eq(v), Some(vals)) => {
                    std::borrow::Cow::Borrowed(vals.get(v).unwrap_or(&empty))
                }
                (_, Some(vals)) => std::borrow::Cow::Owned(
                    vals.iter()
                        .filter(|(v, _)| m.matches(v))
                        .flat_map(|(_, s)| s.iter().copied())
                        .collect(),
                ),
            };
            if set.is_empty() {
                return Vec::new();
            }
            sets.push(set);
        }
        sets.sort_by_key(|s| s.len());
        let candidates: Vec<SeriesId> = match sets.split_first() {
            Some((first, rest)) => first
                .iter()
                .copied()
                .filter(|id| rest.iter().all(|s| s.contains(id)))
                .collect(),
            None => p
                .values()
                .flat_map(|vals| vals.values().flat_map(|s| s.iter().copied()))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        };
        drop(p);
        // Check the remaining matchers against each candidate's labels.
        let rest: Vec<&Matcher> = matchers.iter().filter(|m| m.matches("")).collect();
        if rest.is_empty() {
            return candidates;
        }
        candidates
            .into_iter()
            .filter(|id| {
                self.labels(*id)
                    .is_some_and(|l| rest.iter().all(|m| m.matches(l.get(&m.name).unwrap_or(""))))
            })
            .collect()
    }

    /// All label names, sorted.
    pub fn label_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .postings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// All values of a label, sorted.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        let p = self.postings.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = p
            .get(name)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_select() {
        let c = Catalog::default();
        let mk = |pairs: &[(&str, &str)]| {
            let l = Labels::from_pairs(pairs.iter().copied());
            c.register(l.series_id(), l);
        };
        mk(&[("__name__", "cpu"), ("host", "a"), ("env", "prod")]);
        mk(&[("__name__", "cpu"), ("host", "b")]);
        mk(&[("__name__", "mem"), ("host", "a"), ("env", "dev")]);
        let sel = |ms: Vec<Matcher>| c.select(&ms).len();
        assert_eq!(sel(vec![Matcher::eq("__name__", "cpu")]), 2);
        assert_eq!(
            sel(vec![Matcher::eq("__name__", "cpu"), Matcher::eq("env", "")]),
            1
        );
        assert_eq!(
            sel(vec![Matcher {
                name: "env".into(),
                op: MatchOp::Ne("prod".into())
            }]),
            2
        );
        assert_eq!(
            sel(vec![
                Matcher::regex("host", "a|b", false).unwrap(),
                Matcher::regex("__name__", "c.*", true).unwrap()
            ]),
            1
        );
        assert_eq!(sel(vec![Matcher::regex("host", ".*", false).unwrap()]), 3);
        assert_eq!(sel(vec![Matcher::eq("nope", "x")]), 0);
        assert_eq!(c.series_of_metric("cpu"), 2);
        let id = Labels::from_pairs([("__name__", "cpu"), ("host", "b")]).series_id();
        c.remove(id);
        assert_eq!(c.series_of_metric("cpu"), 1);
        assert_eq!(c.label_values("host"), vec!["a"]);
    }
}

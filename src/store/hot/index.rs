//! The series catalog and inverted label index: label pair -> posting set of series ids.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

use regex::Regex;

use crate::model::decode_canonical;
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

/// A 16-byte allocator header per allocation, in the estimates.
const ALLOC: usize = 16;

/// The series ids with one label pair, sorted. Most sets of a fleet are a host's few series
/// (a boxed slice: 8 bytes an id); a metric's, a region's or a pool's are chunks of ids, boxed:
/// the enum is 16 bytes instead of 32 in the values' table, whose entries are nearly all a
/// host's (250,000 of them at 1 M series).
#[derive(Clone, Debug)]
enum Posting {
    Few(Box<[SeriesId]>),
    Many(Box<Chunked>),
}

/// Largest [`Posting::Few`].
const FEW: usize = 16;

impl Default for Posting {
    fn default() -> Self {
        Posting::Few(Box::default())
    }
}

impl Posting {
    fn insert(&mut self, id: SeriesId) {
        match self {
            Posting::Few(ids) => {
                let Err(i) = ids.binary_search(&id) else {
                    return;
                };
                if ids.len() < FEW {
                    let mut v = std::mem::take(ids).into_vec();
                    v.insert(i, id);
                    *ids = v.into_boxed_slice();
                } else {
                    let mut set: Chunked = ids.iter().copied().collect();
                    set.insert(id);
                    *self = Posting::Many(Box::new(set));
                }
            }
            Posting::Many(set) => {
                set.insert(id);
            }
        }
    }

    fn remove(&mut self, id: SeriesId) {
        match self {
            Posting::Few(ids) => {
                if let Ok(i) = ids.binary_search(&id) {
                    let mut v = std::mem::take(ids).into_vec();
                    v.remove(i);
                    *ids = v.into_boxed_slice();
                }
            }
            Posting::Many(set) => {
                set.remove(id);
                // Back to a slice once well under its limit (not at it: a set going up and
                // down around 16 would convert on every change).
                if set.len() <= FEW / 2 {
                    let ids: Box<[SeriesId]> = set.iter().collect();
                    *self = Posting::Few(ids);
                }
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Posting::Few(ids) => ids.len(),
            Posting::Many(set) => set.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn contains(&self, id: &SeriesId) -> bool {
        match self {
            Posting::Few(ids) => ids.binary_search(id).is_ok(),
            Posting::Many(set) => set.contains(*id),
        }
    }

    /// The ids, ascending.
    fn iter(&self) -> impl Iterator<Item = SeriesId> + '_ {
        let (few, many) = match self {
            Posting::Few(ids) => (Some(ids.iter().copied()), None),
            Posting::Many(set) => (None, Some(set.iter())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }

    /// Estimated heap bytes: 8 bytes an id in a slice, and the chunks' capacity.
    fn memory(&self) -> i64 {
        match self {
            Posting::Few(ids) if ids.is_empty() => 0,
            Posting::Few(ids) => (ids.len() * 8 + ALLOC) as i64,
            Posting::Many(set) => set.memory() + std::mem::size_of::<Chunked>() as i64,
        }
    }
}

/// Most ids a chunk of a [`Chunked`] set holds before it is split in two.
const CHUNK: usize = 1024;
/// Ids a chunk grows by (not by doubling: most chunks are far from full).
const CHUNK_STEP: usize = 64;

/// A large posting set: its ids sorted, in chunks of 512 to 1,024, each grown 64 ids at a
/// time. About 8.5 bytes an id where a `BTreeSet` took 13-16 (its nodes two-thirds full at
/// random inserts): a fleet's metric, region and env sets hold every series, so this is
/// about 20 bytes a series. An insert moves at most a chunk (8 KiB).
#[derive(Clone, Debug, Default)]
struct Chunked {
    chunks: Vec<Vec<SeriesId>>,
    len: usize,
}

impl Chunked {
    /// The chunk `id` is in or belongs in: the first whose last id is not below it.
    fn chunk_of(&self, id: SeriesId) -> usize {
        self.chunks
            .partition_point(|c| c.last().is_some_and(|&l| l < id))
            .min(self.chunks.len().saturating_sub(1))
    }

    fn insert(&mut self, id: SeriesId) -> bool {
        if self.chunks.is_empty() {
            self.chunks.push(Vec::with_capacity(CHUNK_STEP));
        }
        let i = self.chunk_of(id);
        let c = &mut self.chunks[i];
        let Err(at) = c.binary_search(&id) else {
            return false;
        };
        if c.len() == c.capacity() {
            c.reserve_exact(CHUNK_STEP);
        }
        c.insert(at, id);
        if c.len() > CHUNK {
            let mut right = Vec::with_capacity(c.len() - CHUNK / 2 + CHUNK_STEP);
            right.extend_from_slice(&c[CHUNK / 2..]);
            c.truncate(CHUNK / 2);
            c.shrink_to(CHUNK / 2 + CHUNK_STEP);
            self.chunks.insert(i + 1, right);
        }
        self.len += 1;
        true
    }

    fn remove(&mut self, id: SeriesId) -> bool {
        if self.chunks.is_empty() {
            return false;
        }
        let i = self.chunk_of(id);
        let c = &mut self.chunks[i];
        let Ok(at) = c.binary_search(&id) else {
            return false;
        };
        c.remove(at);
        if c.is_empty() {
            self.chunks.remove(i);
        } else if c.capacity() - c.len() > 2 * CHUNK_STEP {
            c.shrink_to(c.len() + CHUNK_STEP);
        }
        self.len -= 1;
        true
    }

    fn contains(&self, id: SeriesId) -> bool {
        self.chunks
            .get(self.chunk_of(id))
            .is_some_and(|c| c.binary_search(&id).is_ok())
    }

    fn len(&self) -> usize {
        self.len
    }

    fn iter(&self) -> impl Iterator<Item = SeriesId> + '_ {
        self.chunks.iter().flatten().copied()
    }

    fn memory(&self) -> i64 {
        let ids: usize = self.chunks.iter().map(Vec::capacity).sum();
        (ids * 8 + self.chunks.capacity() * std::mem::size_of::<Vec<SeriesId>>()) as i64
    }
}

impl FromIterator<SeriesId> for Chunked {
    /// From ids in any order (duplicates collapse): full chunks of `CHUNK / 2` to `CHUNK`.
    fn from_iter<I: IntoIterator<Item = SeriesId>>(ids: I) -> Self {
        let mut all: Vec<SeriesId> = ids.into_iter().collect();
        all.sort_unstable();
        all.dedup();
        let len = all.len();
        let chunks = all.chunks(CHUNK).map(<[SeriesId]>::to_vec).collect();
        Chunked { chunks, len }
    }
}

/// Label name -> value -> the series with that pair.
type Postings = HashMap<Box<str>, HashMap<Box<str>, Posting>>;

const SHARDS: usize = 16;

/// Every series the hot tier knows, with its labels and the postings.
pub struct Catalog {
    /// Per series its label set (shared with the lookups: [`Labels`] is behind an `Arc`).
    shards: Box<[RwLock<IdMap<Labels>>]>,
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
        {
            let mut s = self.shards[shard(id)]
                .write()
                .unwrap_or_else(|e| e.into_inner());
            if s.contains_key(&id) {
                return false;
            }
            s.insert(id, labels.clone());
        }
        let mut p = self.postings.write().unwrap_or_else(|e| e.into_inner());
        // Looked up by `&str` first: a key is allocated only for a new name or value.
        for (k, v) in labels.iter() {
            if !p.contains_key(k) {
                p.insert(k.into(), HashMap::new());
            }
            let values = p.get_mut(k).expect("inserted above");
            if !values.contains_key(v) {
                values.insert(v.into(), Posting::default());
            }
            values.get_mut(v).expect("inserted above").insert(id);
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
                    set.remove(id);
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

    /// Labels of a series (shared, not copied).
    pub fn labels(&self, id: SeriesId) -> Option<Labels> {
        self.shards[shard(id)]
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Estimated bytes held: `(labels, postings)`. Labels: each series' table slot and its
    /// label set (one shared buffer with its reference count); postings: the tables, the label
    /// names and values, and about 8 (slice) or 13 (B-tree) bytes per id.
    pub fn memory(&self) -> (i64, i64) {
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
                labels += l.heap_bytes().next_multiple_of(16) as i64;
            }
        }
        let p = self.postings.read().unwrap_or_else(|e| e.into_inner());
        let outer = tidemark_dataflows::memory::hash_slot(16 + 48);
        let inner = tidemark_dataflows::memory::hash_slot(16 + std::mem::size_of::<Posting>());
        let mut postings = p.capacity() as i64 * outer;
        for (k, values) in p.iter() {
            postings += string(k) as i64 + values.capacity() as i64 * inner;
            for (v, set) in values.iter() {
                postings += string(v) as i64 + set.memory();
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
            .map_or(0, Posting::len)
    }

    /// Series matching every matcher. A label that is absent has the value `""`.
    pub fn select(&self, matchers: &[Matcher]) -> Vec<SeriesId> {
        let p = self.postings.read().unwrap_or_else(|e| e.into_inner());
        // Candidate sets from matchers that cannot match an absent label; an equality
        // matcher's posting set is borrowed (a metric's set may hold millions of ids).
        let mut sets: Vec<std::borrow::Cow<'_, Posting>> = Vec::new();
        let empty = Posting::default();
        for m in matchers.iter().filter(|m| !m.matches("")) {
            let values = p.get(m.name.as_str());
            let set = match (&m.op, values) {
                (_, None) => std::borrow::Cow::Borrowed(&empty),
                (MatchOp::Eq(v), Some(vals)) => {
                    std::borrow::Cow::Borrowed(vals.get(v.as_str()).unwrap_or(&empty))
                }
                (_, Some(vals)) => std::borrow::Cow::Owned(Posting::Many(Box::new(
                    vals.iter()
                        .filter(|(v, _)| m.matches(v))
                        .flat_map(|(_, s)| s.iter())
                        .collect(),
                ))),
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
                .filter(|id| rest.iter().all(|s| s.contains(id)))
                .collect(),
            None => p
                .values()
                .flat_map(|vals| vals.values().flat_map(|s| s.iter()))
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
            .map(|k| k.to_string())
            .collect();
        v.sort();
        v
    }

    /// All values of a label, sorted.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        let p = self.postings.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = p
            .get(name)
            .map(|m| m.keys().map(|k| k.to_string()).collect())
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

    #[test]
    fn label_sets_are_shared_and_removed_series_leave_no_postings() {
        let c = Catalog::default();
        let mut ids = Vec::new();
        // 40 hosts x 3 metrics: a host's value is in 3 series (a slice), a metric's in 40
        // (past `FEW`: a B-tree), the region in all.
        for h in 0..40 {
            for m in ["cpu", "mem", "disk"] {
                let host = format!("host-{h:03}");
                let l = Labels::from_pairs([("__name__", m), ("host", &host), ("region", "eu")]);
                let id = l.series_id();
                assert!(c.register(id, l.clone()));
                assert!(
                    !c.register(id, l.clone()),
                    "a second registration is a no-op"
                );
                let back = c.labels(id).unwrap();
                assert_eq!(back, l);
                assert!(
                    std::ptr::eq(back.canonical(), c.labels(id).unwrap().canonical()),
                    "lookups share the catalog's buffer"
                );
                ids.push((id, l));
            }
        }
        assert_eq!(c.len(), 120);
        assert_eq!(c.series_of_metric("cpu"), 40);
        assert_eq!(c.label_values("host").len(), 40);
        let (labels, postings) = c.memory();
        assert!(labels > 0 && postings > 0);
        for (id, l) in &ids {
            if l.get("host") == Some("host-000") || l.metric_name() == Some("disk") {
                c.remove(*id);
                assert!(c.labels(*id).is_none());
            }
        }
        assert_eq!(c.len(), 120 - 3 - 39);
        assert_eq!(c.series_of_metric("disk"), 0);
        assert_eq!(c.series_of_metric("cpu"), 39);
        assert!(!c.label_values("host").contains(&"host-000".to_string()));
        assert!(!c.label_values("__name__").contains(&"disk".to_string()));
        let sel = c.select(&[
            Matcher::eq("region", "eu"),
            Matcher::regex("host", "host-00[0-2]", false).unwrap(),
        ]);
        assert_eq!(sel.len(), 4, "host-001 and host-002, cpu and mem");
        let sel = c.select(&[
            Matcher::eq("__name__", "cpu"),
            Matcher::eq("host", "host-007"),
        ]);
        assert_eq!(sel.len(), 1);
    }

    #[test]
    fn posting_sets_grow_from_a_slice_into_chunks_and_stay_sorted() {
        // A value's entry in its name's table: the key and this (a slice, or boxed chunks).
        assert_eq!(std::mem::size_of::<Posting>(), 16);
        let mut p = Posting::default();
        let ids: Vec<u64> = (0..40u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        for (n, &id) in ids.iter().enumerate() {
            p.insert(id);
            p.insert(id);
            assert_eq!(p.len(), n + 1);
            assert_eq!(matches!(p, Posting::Many(_)), n + 1 > FEW);
        }
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(p.iter().collect::<Vec<_>>(), sorted);
        assert!(ids.iter().all(|id| p.contains(id)));
        assert!(!p.contains(&7));
        // Shrinking: chunks until half the slice limit, then a sorted slice again.
        let mut shrinking = Posting::default();
        for &id in &ids {
            shrinking.insert(id);
        }
        for (k, &id) in ids.iter().enumerate() {
            shrinking.remove(id);
            let left = ids.len() - k - 1;
            assert_eq!(shrinking.len(), left);
            assert_eq!(
                matches!(shrinking, Posting::Few(_)),
                left <= FEW / 2,
                "{left} left"
            );
            let mut want: Vec<u64> = ids[k + 1..].to_vec();
            want.sort_unstable();
            assert_eq!(shrinking.iter().collect::<Vec<_>>(), want);
        }
        let mut few = Posting::default();
        for &id in &ids[..5] {
            few.insert(id);
        }
        few.remove(ids[2]);
        few.remove(12345);
        let mut want: Vec<u64> = ids[..5].iter().copied().filter(|&i| i != ids[2]).collect();
        want.sort_unstable();
        assert_eq!(few.iter().collect::<Vec<_>>(), want);
    }

    #[test]
    fn chunked_sets_split_merge_away_and_agree_with_a_btreeset() {
        let mut set = Chunked::default();
        let mut oracle = BTreeSet::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // 5,000 ids over a range small enough for repeats: several splits, duplicates ignored.
        for _ in 0..5_000 {
            let id = next() % 20_000;
            assert_eq!(set.insert(id), oracle.insert(id));
        }
        assert!(set.chunks.len() > 4, "{} chunks", set.chunks.len());
        assert!(set.chunks.iter().all(|c| !c.is_empty() && c.len() <= CHUNK));
        assert_eq!(set.len(), oracle.len());
        assert!(set.iter().eq(oracle.iter().copied()));
        for id in 0..20_000 {
            assert_eq!(set.contains(id), oracle.contains(&id), "{id}");
        }
        // About 8.5 bytes an id (a B-tree takes 13-16).
        assert!(
            set.memory() < set.len() as i64 * 10,
            "{} bytes",
            set.memory()
        );
        // Removing every other id, then the rest: chunks that empty go.
        let ids: Vec<u64> = oracle.iter().copied().collect();
        for (k, id) in ids.iter().enumerate() {
            if k % 2 == 0 {
                assert!(set.remove(*id));
                oracle.remove(id);
            }
        }
        assert!(!set.remove(ids[0]));
        assert!(set.iter().eq(oracle.iter().copied()));
        for id in oracle.clone() {
            assert!(set.remove(id));
        }
        assert_eq!((set.len(), set.chunks.len()), (0, 0));
        assert!(!set.contains(5) && !set.remove(5));
        let back: Chunked = [9u64, 3, 9, 1].into_iter().collect();
        assert_eq!(
            (back.len(), back.iter().collect::<Vec<_>>()),
            (3, vec![1, 3, 9])
        );
    }
}

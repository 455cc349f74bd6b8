//! The `query_range` result cache: a dashboard that refreshes the last hour every 30 s asks
//! for 60 steps of which 59 it asked for before. Results are kept per query and step grid,
//! and a request computes only the steps the cache does not hold.
//!
//! - **Key**: the query as the parser prints it back (whitespace and spelling normalised), the
//!   step, and the grid's phase (`start mod step`): steps of one key fall on one grid.
//! - **What is kept**: one contiguous run of steps per key, `[first, last]`, each series'
//!   points in it, and the run's annotations. Only steps that are final are kept: at or
//!   before the newest sample time minus `[job] out_of_orderness` (the watermark), and at or
//!   after the start of the hot index's retention (older steps read the cold tiers, whose
//!   rollups may answer differently from the raw samples the step was computed on).
//! - **Late samples**: a step at `t` reads samples at or before `t` (queries with a negative
//!   offset, `@`, or `start()`/`end()` are not cached). The hot index reports the oldest sample
//!   time appended since the cache last asked ([`HotIndex::take_touched_from`]); before each
//!   lookup the cache cuts every run back to the steps before it. A late sample inside
//!   `allowed_lateness` so invalidates exactly the steps it can change, and in-order ingest
//!   touches only steps that were not final.
//! - **Size**: the bytes of the kept points and labels, bounded by `[query] cache_bytes`;
//!   the least recently used keys go first.
//! - `nocache=1` on the request neither reads nor writes it. Hits (a request that reused at
//!   least one step), misses and bytes are on `/metrics`.
//!
//! A range query's step is an instant query at that time (Prometheus's semantics, and the
//! engine's: [`super::engine`]), so a result assembled from runs computed at different times
//! equals one computed at once; the differential tests compare the JSON byte for byte.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use super::{QueryValue, Series};
use crate::model::Labels;
use crate::ops::Metrics;
use crate::store::hot::HotIndex;

/// The cache's key: the normalised query, the step, and the phase of its grid.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    query: String,
    step: i64,
    phase: i64,
}

impl Key {
    /// The key of `query` at `step` from `start`; `None` when the query cannot be cached: it
    /// does not parse, or a step's value may depend on later samples or on the query's range
    /// (a negative offset, `@`, `start()`, `end()`).
    pub fn new(query: &str, start: i64, step: i64) -> Option<Key> {
        let expr = promql_parser::parser::parse(query).ok()?;
        let text = expr.to_string();
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if compact.contains('@')
            || compact.contains("offset-")
            || compact.contains("start()")
            || compact.contains("end()")
        {
            return None;
        }
        Some(Key {
            query: text,
            step,
            phase: start.rem_euclid(step),
        })
    }
}

/// One key's kept steps.
struct Entry {
    /// The first and last step kept (`first > last`: none).
    first: i64,
    last: i64,
    series: Vec<Series>,
    warnings: Vec<String>,
    infos: Vec<String>,
    bytes: usize,
    used: u64,
}

impl Entry {
    fn measure(&mut self) {
        self.bytes = 128
            + self
                .series
                .iter()
                .map(|s| 48 + s.labels.as_ref().len() + 16 * s.samples.len())
                .sum::<usize>()
            + self
                .warnings
                .iter()
                .chain(&self.infos)
                .map(String::len)
                .sum::<usize>();
    }

    /// Drops the steps at and after `t` (`last` stays on the key's grid).
    fn cut(&mut self, t: i64, key: &Key) {
        if t > self.last {
            return;
        }
        for s in &mut self.series {
            let keep = s.samples.partition_point(|p| p.0 < t);
            s.samples.truncate(keep);
        }
        self.series.retain(|s| !s.samples.is_empty());
        self.last = align_down(t - 1, key.phase, key.step);
        self.measure();
    }
}

struct Inner {
    map: HashMap<Key, Entry>,
    bytes: usize,
    clock: u64,
}

/// The result cache of one process's query API.
pub struct ResultCache {
    max_bytes: usize,
    /// `[job] out_of_orderness`: steps later than the newest sample time minus this are not
    /// final.
    out_of_orderness: i64,
    inner: Mutex<Inner>,
}

/// What the cache holds for a request, and what is left to compute.
pub struct Lookup {
    pub key: Key,
    /// Series and annotations of the kept steps inside the request.
    pub cached: Option<(Vec<Series>, Vec<String>, Vec<String>)>,
    /// Ranges of steps to evaluate, `(start, end)` on the request's grid.
    pub missing: Vec<(i64, i64)>,
}

impl ResultCache {
    pub fn new(max_bytes: usize, out_of_orderness: i64) -> ResultCache {
        ResultCache {
            max_bytes,
            out_of_orderness,
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                bytes: 0,
                clock: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies the samples appended since the last call ([`HotIndex::take_touched_from`]).
    fn invalidate(&self, inner: &mut Inner, hot: &HotIndex) {
        if let Some(t) = hot.take_touched_from() {
            let mut bytes = 0;
            inner.map.retain(|k, e| {
                e.cut(t, k);
                bytes += e.bytes;
                e.first <= e.last
            });
            inner.bytes = bytes;
        }
    }

    /// What the cache holds of `query` over `[start, end]` at `step`; `None` when the query
    /// cannot be cached.
    pub fn lookup(
        &self,
        hot: &HotIndex,
        metrics: &Metrics,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Option<Lookup> {
        let key = Key::new(query, start, step)?;
        let mut inner = self.lock();
        self.invalidate(&mut inner, hot);
        inner.clock += 1;
        let clock = inner.clock;
        let hit = inner.map.get_mut(&key).and_then(|e| {
            e.used = clock;
            // The kept steps inside the request.
            let (lo, hi) = (e.first.max(start), e.last.min(end));
            (lo <= hi).then(|| {
                let series = e
                    .series
                    .iter()
                    .filter_map(|s| {
                        let a = s.samples.partition_point(|p| p.0 < lo);
                        let b = s.samples.partition_point(|p| p.0 <= hi);
                        (b > a).then(|| Series {
                            labels: s.labels.clone(),
                            samples: s.samples[a..b].to_vec(),
                        })
                    })
                    .collect();
                (lo, hi, series, e.warnings.clone(), e.infos.clone())
            })
        });
        drop(inner);
        let Some((lo, hi, series, warnings, infos)) = hit else {
            metrics.query_cache_misses.fetch_add(1, Ordering::Relaxed);
            return Some(Lookup {
                key,
                cached: None,
                missing: vec![(start, end)],
            });
        };
        metrics.query_cache_hits.fetch_add(1, Ordering::Relaxed);
        // `lo` and `hi` are on the request's grid (same phase), so are the ranges around them.
        let mut missing = Vec::new();
        if lo > start {
            missing.push((start, lo - step));
        }
        if hi < end {
            missing.push((hi + step, end));
        }
        Some(Lookup {
            key,
            cached: Some((series, warnings, infos)),
            missing,
        })
    }

    /// Keeps the final steps of a request's whole result (`series` covers `[start, end]`).
    #[allow(clippy::too_many_arguments)]
    pub fn store(
        &self,
        hot: &HotIndex,
        metrics: &Metrics,
        key: Key,
        start: i64,
        end: i64,
        result: &QueryValue,
        warnings: &[String],
        infos: &[String],
    ) {
        let QueryValue::Matrix(series) = result else {
            return;
        };
        let Some(newest) = hot.newest() else {
            return;
        };
        let step = key.step;
        // The grid's steps from the first at or after the hot retention's start to the last
        // at or before the watermark.
        let from = start.max(align_up(hot.complete_from(), key.phase, step));
        let to = end.min(align_down(
            newest.saturating_sub(self.out_of_orderness),
            key.phase,
            step,
        ));
        if from > to {
            return;
        }
        let kept: Vec<Series> = series
            .iter()
            .filter_map(|s| {
                let a = s.samples.partition_point(|p| p.0 < from);
                let b = s.samples.partition_point(|p| p.0 <= to);
                (b > a).then(|| Series {
                    labels: s.labels.clone(),
                    samples: s.samples[a..b].to_vec(),
                })
            })
            .collect();
        let mut inner = self.lock();
        inner.clock += 1;
        let mut e = Entry {
            first: from,
            last: to,
            series: kept,
            warnings: warnings.to_vec(),
            infos: infos.to_vec(),
            bytes: 0,
            used: inner.clock,
        };
        e.measure();
        if e.bytes > self.max_bytes {
            return;
        }
        if let Some(old) = inner.map.remove(&key) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += e.bytes;
        inner.map.insert(key, e);
        // Least recently used first.
        while inner.bytes > self.max_bytes {
            let Some(k) = inner
                .map
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(old) = inner.map.remove(&k) {
                inner.bytes -= old.bytes;
                metrics
                    .query_cache_evictions
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        metrics
            .query_cache_bytes
            .store(inner.bytes as u64, Ordering::Relaxed);
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

/// The first time at or after `t` on the grid `phase + k * step`.
fn align_up(t: i64, phase: i64, step: i64) -> i64 {
    if t == i64::MAX {
        return t;
    }
    let d = (t - phase).rem_euclid(step);
    if d == 0 {
        t
    } else {
        t + (step - d)
    }
}

/// The last time at or before `t` on the grid `phase + k * step`.
fn align_down(t: i64, phase: i64, step: i64) -> i64 {
    t - (t - phase).rem_euclid(step)
}

/// Joins the cached series with the ones computed for the missing steps: series with equal
/// labels are one series, points in time order.
pub fn merge(parts: Vec<Vec<Series>>) -> Vec<Series> {
    let mut by: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
    for part in parts {
        for s in part {
            by.entry(s.labels).or_default().extend(s.samples);
        }
    }
    by.into_iter()
        .map(|(labels, mut samples)| {
            samples.sort_by_key(|p| p.0);
            Series { labels, samples }
        })
        .collect()
}

/// Annotations of several parts, each once, in order of first appearance.
pub fn merge_notes(parts: Vec<Vec<String>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in parts.into_iter().flatten() {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_normalise_the_text_and_refuse_range_dependent_queries() {
        let a = Key::new("sum by(job)(rate(x[5m]))", 60_000, 60_000).unwrap();
        let b = Key::new("sum  by (job) ( rate( x[5m] ) )", 120_000, 60_000).unwrap();
        assert_eq!(a, b);
        assert_ne!(
            a,
            Key::new("sum by(job)(rate(x[5m]))", 90_000, 60_000).unwrap()
        );
        assert_ne!(
            a,
            Key::new("sum by(job)(rate(x[5m]))", 60_000, 30_000).unwrap()
        );
        for q in [
            "x @ 100",
            "x offset -5m",
            "x @ start()",
            "rate(x[5m] @ end())",
            "x{",
        ] {
            assert!(Key::new(q, 0, 60_000).is_none(), "{q}");
        }
        assert!(Key::new("x offset 5m", 0, 60_000).is_some());
    }

    #[test]
    fn grids_align() {
        assert_eq!(align_up(61_000, 1_000, 60_000), 61_000);
        assert_eq!(align_up(61_001, 1_000, 60_000), 121_000);
        assert_eq!(align_down(120_999, 1_000, 60_000), 61_000);
        assert_eq!(align_down(-1, 0, 60_000), -60_000);
    }

    #[test]
    fn merged_parts_are_one_series_per_label_set_in_time_order() {
        let l = |v: &str| Labels::from_pairs([("a", v)]);
        let m = merge(vec![
            vec![Series {
                labels: l("x"),
                samples: vec![(3, 3.0)],
            }],
            vec![
                Series {
                    labels: l("y"),
                    samples: vec![(1, 1.0)],
                },
                Series {
                    labels: l("x"),
                    samples: vec![(1, 1.0)],
                },
            ],
        ]);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].labels, l("x"));
        assert_eq!(m[0].samples, vec![(1, 1.0), (3, 3.0)]);
        assert_eq!(
            merge_notes(vec![
                vec!["a".into(), "b".into()],
                vec!["b".into(), "c".into()]
            ]),
            vec!["a", "b", "c"]
        );
    }
}

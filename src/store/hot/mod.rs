//! The hot tier: every series' recent samples in memory as compressed chunks ([`chunk`]), the
//! series catalog and inverted label index ([`index`]), and the 1-minute and 1-hour rollups
//! beside the raw samples.
//!
//! Durability comes from the log the job reads: on start the job replays the retained log into
//! an empty index, so the log is this index's write-ahead log. Retention is measured from the
//! newest sample, as Prometheus measures its head block, so a backfill of past hours is
//! accepted while anything older than `retention` before the newest sample is rejected.

pub mod chunk;
pub mod index;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::RwLock;

use tidemark_dataflows::sink::HotSink;
use tidemark_dataflows::{Rollup, Sample};

use crate::model::{IdMap, SeriesId};
use chunk::{Chunk, CHUNK_SAMPLES};
use index::Catalog;

const SHARDS: usize = 64;

/// Which rollups a query wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    OneMinute,
    OneHour,
}

#[derive(Default)]
struct SeriesData {
    sealed: Vec<Chunk>,
    head: Vec<(i64, f64)>,
    r1m: Vec<Rollup>,
    r1h: Vec<Rollup>,
}

/// Counters the index keeps for `/metrics`.
#[derive(Default)]
pub struct HotStats {
    pub samples_appended: AtomicU64,
    pub samples_out_of_retention: AtomicU64,
    pub chunk_bytes: AtomicI64,
    pub head_samples: AtomicI64,
    pub sealed_samples: AtomicI64,
    pub rollups: AtomicI64,
}

/// The in-memory hot tier.
pub struct HotIndex {
    pub catalog: Catalog,
    shards: Box<[RwLock<IdMap<SeriesData>>]>,
    newest: AtomicI64,
    retention_ms: i64,
    pub stats: HotStats,
}

fn shard(id: SeriesId) -> usize {
    (id >> 32) as usize % SHARDS
}

fn upsert_rollup(v: &mut Vec<Rollup>, r: Rollup) -> bool {
    match v.last() {
        Some(last) if last.start < r.start => {
            v.push(r);
            true
        }
        None => {
            v.push(r);
            true
        }
        _ => match v.binary_search_by_key(&r.start, |x| x.start) {
            Ok(i) => {
                v[i] = r;
                false
            }
            Err(i) => {
                v.insert(i, r);
                true
            }
        },
    }
}

impl SeriesData {
    /// Inserts a sample; returns (chunk byte delta, head sample delta, sealed sample delta).
    fn insert(&mut self, ts: i64, v: f64) -> (i64, i64, i64) {
        // The head holds everything after the last sealed chunk; older samples go into chunks.
        if self.sealed.last().is_some_and(|c| ts <= c.max_ts) {
            return self.insert_sealed(ts, v);
        }
        match self.head.last() {
            Some(&(last, _)) if ts <= last => match self.head.binary_search_by_key(&ts, |p| p.0) {
                Ok(i) => {
                    self.head[i].1 = v;
                    return (0, 0, 0);
                }
                Err(i) => self.head.insert(i, (ts, v)),
            },
            _ => self.head.push((ts, v)),
        }
        if self.head.len() >= CHUNK_SAMPLES {
            let c = Chunk::encode(&self.head);
            let bytes = c.size() as i64;
            let n = self.head.len() as i64;
            self.sealed.push(c);
            self.head.clear();
            return (bytes, 1 - n, n);
        }
        (0, 1, 0)
    }

    /// A sample older than the head goes into the sealed chunk that covers its time.
    #[cold]
    fn insert_sealed(&mut self, ts: i64, v: f64) -> (i64, i64, i64) {
        let i = self
            .sealed
            .iter()
            .rposition(|c| c.min_ts <= ts)
            .unwrap_or(0);
        let mut samples = Vec::with_capacity(self.sealed[i].count as usize + 1);
        self.sealed[i].decode_into(&mut samples);
        let added = match samples.binary_search_by_key(&ts, |p| p.0) {
            Ok(j) => {
                samples[j].1 = v;
                0
            }
            Err(j) => {
                samples.insert(j, (ts, v));
                1
            }
        };
        let before = self.sealed[i].size() as i64;
        self.sealed[i] = Chunk::encode(&samples);
        (self.sealed[i].size() as i64 - before, 0, added)
    }

    fn samples_in(&self, start: i64, end: i64, out: &mut Vec<(i64, f64)>) {
        for c in &self.sealed {
            if c.max_ts < start || c.min_ts > end {
                continue;
            }
            let from = out.len();
            c.decode_into(out);
            // Trim to the range.
            let mut w = from;
            for r in from..out.len() {
                if out[r].0 >= start && out[r].0 <= end {
                    out[w] = out[r];
                    w += 1;
                }
            }
            out.truncate(w);
        }
        let lo = self.head.partition_point(|p| p.0 < start);
        let hi = self.head.partition_point(|p| p.0 <= end);
        out.extend_from_slice(&self.head[lo..hi.max(lo)]);
    }
}

impl HotIndex {
    /// An empty index keeping `retention_ms` before the newest sample.
    pub fn new(retention_ms: i64) -> Self {
        HotIndex {
            catalog: Catalog::default(),
            shards: (0..SHARDS).map(|_| RwLock::new(IdMap::default())).collect(),
            newest: AtomicI64::new(i64::MIN),
            retention_ms,
            stats: HotStats::default(),
        }
    }

    /// The newest sample time, if any sample was appended.
    pub fn newest(&self) -> Option<i64> {
        let n = self.newest.load(Ordering::Relaxed);
        (n != i64::MIN).then_some(n)
    }

    /// The oldest timestamp the index accepts now.
    pub fn min_valid_ts(&self) -> i64 {
        self.newest()
            .map_or(i64::MIN, |n| n.saturating_sub(self.retention_ms))
    }

    /// Retention window in ms.
    pub fn retention_ms(&self) -> i64 {
        self.retention_ms
    }

    /// Appends samples of series already in the catalog; returns how many were too old.
    pub fn append_samples(&self, samples: &[Sample]) -> usize {
        if let Some(max) = samples.iter().map(|s| s.ts).max() {
            self.newest.fetch_max(max, Ordering::Relaxed);
        }
        let min_ok = self.min_valid_ts();
        let mut too_old = 0;
        let (mut dbytes, mut dhead, mut dsealed) = (0, 0, 0);
        for s in samples {
            if s.ts < min_ok {
                too_old += 1;
                continue;
            }
            let mut shard = self.shards[shard(s.series)]
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let (b, h, se) = shard.entry(s.series).or_default().insert(s.ts, s.value);
            dbytes += b;
            dhead += h;
            dsealed += se;
        }
        let st = &self.stats;
        st.samples_appended
            .fetch_add((samples.len() - too_old) as u64, Ordering::Relaxed);
        st.samples_out_of_retention
            .fetch_add(too_old as u64, Ordering::Relaxed);
        st.chunk_bytes.fetch_add(dbytes, Ordering::Relaxed);
        st.head_samples.fetch_add(dhead, Ordering::Relaxed);
        st.sealed_samples.fetch_add(dsealed, Ordering::Relaxed);
        too_old
    }

    /// Upserts rollups by (series, start).
    pub fn upsert(&self, rollups: &[Rollup]) {
        let mut added = 0;
        for r in rollups {
            let mut shard = self.shards[shard(r.series)]
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let s = shard.entry(r.series).or_default();
            let v = if r.width >= 3_600_000 {
                &mut s.r1h
            } else {
                &mut s.r1m
            };
            if upsert_rollup(v, *r) {
                added += 1;
            }
        }
        self.stats.rollups.fetch_add(added, Ordering::Relaxed);
    }

    /// Raw samples of a series in `[start, end]`, sorted by time.
    pub fn samples(&self, id: SeriesId, start: i64, end: i64, out: &mut Vec<(i64, f64)>) {
        let shard = self.shards[shard(id)]
            .read()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(s) = shard.get(&id) {
            s.samples_in(start, end, out);
        }
    }

    /// Rollups of a series whose window starts in `[start, end]`.
    pub fn rollups(&self, id: SeriesId, res: Resolution, start: i64, end: i64) -> Vec<Rollup> {
        let shard = self.shards[shard(id)]
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let Some(s) = shard.get(&id) else {
            return Vec::new();
        };
        let v = match res {
            Resolution::OneMinute => &s.r1m,
            Resolution::OneHour => &s.r1h,
        };
        let lo = v.partition_point(|r| r.start < start);
        let hi = v.partition_point(|r| r.start <= end);
        v[lo..hi.max(lo)].to_vec()
    }

    /// Bytes the samples and rollups take: compressed chunks, uncompressed head samples
    /// (16 bytes each) and rollups.
    pub fn bytes(&self) -> i64 {
        let st = &self.stats;
        st.chunk_bytes.load(Ordering::Relaxed)
            + st.head_samples.load(Ordering::Relaxed) * 16
            + st.rollups.load(Ordering::Relaxed) * std::mem::size_of::<Rollup>() as i64
    }

    /// Samples held.
    pub fn sample_count(&self) -> i64 {
        self.stats.head_samples.load(Ordering::Relaxed)
            + self.stats.sealed_samples.load(Ordering::Relaxed)
    }

    /// Drops data older than the retention window, and series left with nothing.
    pub fn gc(&self) {
        let cutoff = self.min_valid_ts();
        if cutoff == i64::MIN {
            return;
        }
        let mut removed = Vec::new();
        let (mut dbytes, mut dhead, mut dsealed, mut drollups) = (0i64, 0i64, 0i64, 0i64);
        for sh in self.shards.iter() {
            let mut sh = sh.write().unwrap_or_else(|e| e.into_inner());
            sh.retain(|id, s| {
                s.sealed.retain(|c| {
                    let keep = c.max_ts >= cutoff;
                    if !keep {
                        dbytes -= c.size() as i64;
                        dsealed -= i64::from(c.count);
                    }
                    keep
                });
                let n = s.head.partition_point(|p| p.0 < cutoff);
                if n > 0 {
                    s.head.drain(..n);
                    dhead -= n as i64;
                }
                for v in [&mut s.r1m, &mut s.r1h] {
                    let n = v.partition_point(|r| r.start + r.width < cutoff);
                    v.drain(..n);
                    drollups -= n as i64;
                }
                let keep = !(s.sealed.is_empty()
                    && s.head.is_empty()
                    && s.r1m.is_empty()
                    && s.r1h.is_empty());
                if !keep {
                    removed.push(*id);
                }
                keep
            });
        }
        for id in removed {
            self.catalog.remove(id);
        }
        let st = &self.stats;
        st.chunk_bytes.fetch_add(dbytes, Ordering::Relaxed);
        st.head_samples.fetch_add(dhead, Ordering::Relaxed);
        st.sealed_samples.fetch_add(dsealed, Ordering::Relaxed);
        st.rollups.fetch_add(drollups, Ordering::Relaxed);
    }
}

impl HotSink for HotIndex {
    fn append(&self, samples: &[Sample]) {
        self.append_samples(samples);
    }
    fn upsert_rollups(&self, rollups: &[Rollup]) {
        self.upsert(rollups);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_and_sealed_inserts() {
        let h = HotIndex::new(i64::MAX / 4);
        let id = 42;
        let mut samples: Vec<Sample> = (0..300)
            .map(|i| Sample {
                series: id,
                ts: i * 10,
                value: i as f64,
            })
            .collect();
        // Reverse a window and re-send duplicates: last write wins.
        samples[100..140].reverse();
        h.append_samples(&samples);
        h.append_samples(&[
            Sample {
                series: id,
                ts: 50,
                value: -1.0,
            },
            Sample {
                series: id,
                ts: 55,
                value: -2.0,
            },
        ]);
        let mut out = Vec::new();
        h.samples(id, 0, 10_000, &mut out);
        assert_eq!(out.len(), 301);
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(out[5], (50, -1.0));
        assert_eq!(out[6], (55, -2.0));
        assert_eq!(h.sample_count(), 301);
        let mut out = Vec::new();
        h.samples(id, 1000, 1200, &mut out);
        assert_eq!(out.len(), 21);
    }

    #[test]
    fn retention_from_newest() {
        let h = HotIndex::new(1000);
        h.append_samples(&[Sample {
            series: 1,
            ts: 5000,
            value: 1.0,
        }]);
        assert_eq!(
            h.append_samples(&[
                Sample {
                    series: 1,
                    ts: 3000,
                    value: 1.0
                },
                Sample {
                    series: 1,
                    ts: 4500,
                    value: 1.0
                }
            ]),
            1
        );
        h.append_samples(&[Sample {
            series: 1,
            ts: 7000,
            value: 1.0,
        }]);
        h.gc();
        let mut out = Vec::new();
        h.samples(1, 0, 10_000, &mut out);
        assert_eq!(out, vec![(7000, 1.0)]);
    }
}

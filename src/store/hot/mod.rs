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
pub mod rollups;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tidemark_dataflows::sink::HotSink;
use tidemark_dataflows::{Rollup, Sample};

use crate::model::{IdMap, SeriesId};
use chunk::{Chunk, CHUNK_SAMPLES};
use index::Catalog;
use rollups::RollupSeries;

const SHARDS: usize = 64;

/// Out-of-order samples gathered before they are merged into sealed chunks.
const OOO_MERGE: usize = 32;

/// Samples kept uncompressed after a full chunk's worth, to absorb disorder (32 samples is
/// about 5 minutes at a 10 s interval).
const HEAD_SLACK: usize = 32;

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
    /// Samples at or before the last sealed chunk's end, waiting to be merged into it.
    ooo: Vec<(i64, f64)>,
    r1m: RollupSeries,
    r1h: RollupSeries,
}

/// Counters the index keeps for `/metrics`.
#[derive(Default)]
pub struct HotStats {
    pub samples_appended: AtomicU64,
    pub samples_out_of_retention: AtomicU64,
    pub chunk_bytes: AtomicI64,
    pub head_samples: AtomicI64,
    pub sealed_samples: AtomicI64,
    pub rollup_bytes: AtomicI64,
}

/// Bytes the hot index holds, by part (see [`HotIndex::memory`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct HotMemory {
    /// The per-series table (hash slots of the series' state).
    pub series_table: i64,
    /// Raw samples: chunks, uncompressed heads, out-of-order buffers.
    pub samples: i64,
    /// 1-minute and 1-hour rollups.
    pub rollups: i64,
}

/// What a pin holds in the index: raw samples, 1-minute or 1-hour rollups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinKind {
    Raw = 0,
    Minute = 1,
    Hour = 2,
}

/// The in-memory hot tier.
pub struct HotIndex {
    pub catalog: Catalog,
    shards: Box<[RwLock<IdMap<SeriesData>>]>,
    newest: AtomicI64,
    retention_ms: i64,
    pub stats: HotStats,
    /// Times before which the cold writers no longer need data, by kind (see [`HotIndex::pin`]).
    pins: std::sync::Mutex<Vec<(PinKind, std::sync::Weak<AtomicI64>)>>,
}

fn shard(id: SeriesId) -> usize {
    (id >> 32) as usize % SHARDS
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
        // Seal the oldest CHUNK_SAMPLES only once HEAD_SLACK newer ones exist, so samples that
        // arrive a little out of order still land in the uncompressed head instead of forcing
        // a sealed chunk to be re-encoded.
        if self.head.len() >= CHUNK_SAMPLES + HEAD_SLACK {
            let c = Chunk::encode(&self.head[..CHUNK_SAMPLES]);
            let bytes = c.size() as i64;
            self.sealed.push(c);
            self.head.drain(..CHUNK_SAMPLES);
            let n = CHUNK_SAMPLES as i64;
            return (bytes, 1 - n, n);
        }
        (0, 1, 0)
    }

    /// A sample at or before the last sealed chunk's end waits in the out-of-order buffer;
    /// every [`OOO_MERGE`] such samples are merged into the chunks that cover them, so late
    /// data costs one re-encode per chunk and batch, not one per sample.
    #[cold]
    fn insert_sealed(&mut self, ts: i64, v: f64) -> (i64, i64, i64) {
        let added = match self.ooo.binary_search_by_key(&ts, |p| p.0) {
            Ok(j) => {
                self.ooo[j].1 = v;
                0
            }
            Err(j) => {
                self.ooo.insert(j, (ts, v));
                1
            }
        };
        if self.ooo.len() < OOO_MERGE {
            return (0, added, 0);
        }
        let (b, h, s) = self.merge_ooo();
        (b, h + added, s)
    }

    /// Merges the out-of-order buffer into the sealed chunks; returns the counter deltas.
    fn merge_ooo(&mut self) -> (i64, i64, i64) {
        let ooo = std::mem::take(&mut self.ooo);
        let n = ooo.len() as i64;
        if self.sealed.is_empty() {
            // Everything it belonged to expired: the samples join the head.
            let mut merged = Vec::with_capacity(ooo.len() + self.head.len());
            merge_sorted(&ooo, &self.head, &mut merged);
            let dhead = merged.len() as i64 - self.head.len() as i64 - n;
            self.head = merged;
            return (0, dhead, 0);
        }
        let (mut dbytes, mut dsealed) = (0i64, 0i64);
        let mut k = 0;
        let mut samples = Vec::new();
        let mut merged = Vec::new();
        while k < ooo.len() {
            let i = self
                .sealed
                .iter()
                .rposition(|c| c.min_ts <= ooo[k].0)
                .unwrap_or(0);
            let limit = self.sealed.get(i + 1).map_or(i64::MAX, |c| c.min_ts);
            let end = k + ooo[k..].partition_point(|p| p.0 < limit);
            samples.clear();
            self.sealed[i].decode_into(&mut samples);
            merged.clear();
            merge_sorted(&ooo[k..end], &samples, &mut merged);
            dsealed += merged.len() as i64 - samples.len() as i64;
            let before = self.sealed[i].size() as i64;
            self.sealed[i] = Chunk::encode(&merged);
            dbytes += self.sealed[i].size() as i64 - before;
            k = end;
        }
        (dbytes, -n, dsealed)
    }

    /// Heap bytes of the raw samples: chunk table, chunk bytes, head and out-of-order buffers.
    fn raw_heap_bytes(&self) -> usize {
        self.sealed.capacity() * std::mem::size_of::<Chunk>()
            + self.sealed.iter().map(Chunk::size).sum::<usize>()
            + (self.head.capacity() + self.ooo.capacity()) * 16
    }

    fn samples_in(&self, start: i64, end: i64, out: &mut Vec<(i64, f64)>) {
        let from_all = out.len();
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
        let lo = self.ooo.partition_point(|p| p.0 < start);
        let hi = self.ooo.partition_point(|p| p.0 <= end);
        if hi > lo {
            let rest = out.split_off(from_all);
            merge_sorted(&self.ooo[lo..hi], &rest, out);
        }
    }
}

/// Merges two time-sorted runs into `out`; on equal timestamps `newer` wins.
fn merge_sorted(newer: &[(i64, f64)], older: &[(i64, f64)], out: &mut Vec<(i64, f64)>) {
    let (mut i, mut j) = (0, 0);
    while i < newer.len() && j < older.len() {
        match newer[i].0.cmp(&older[j].0) {
            std::cmp::Ordering::Less => {
                out.push(newer[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(older[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(newer[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&newer[i..]);
    out.extend_from_slice(&older[j..]);
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
            pins: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A pin: while it lives, data of `kind` at or after its value is neither rejected as too
    /// old nor dropped by retention. The cold writers write sealed partitions from this index,
    /// so each pins what it has not written yet (a backfill can move the newest sample, and so
    /// the retention window, past partitions not sealed yet). Starts at `i64::MIN`: everything.
    pub fn pin(&self, kind: PinKind) -> Arc<AtomicI64> {
        let p = Arc::new(AtomicI64::new(i64::MIN));
        let mut pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        pins.retain(|(_, w)| w.strong_count() > 0);
        pins.push((kind, Arc::downgrade(&p)));
        p
    }

    /// The lowest live pin of `kind` (`i64::MAX` when none).
    fn pinned(&self, kind: PinKind) -> i64 {
        let pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        pins.iter()
            .filter(|(k, _)| *k == kind)
            .filter_map(|(_, w)| w.upgrade())
            .map(|p| p.load(Ordering::Acquire))
            .min()
            .unwrap_or(i64::MAX)
    }

    /// The newest sample time, if any sample was appended.
    pub fn newest(&self) -> Option<i64> {
        let n = self.newest.load(Ordering::Relaxed);
        (n != i64::MIN).then_some(n)
    }

    /// Records that samples up to `ts` were accepted (ingest calls this on acknowledging, so
    /// the retention window moves with what was acknowledged, not with the job's progress).
    pub fn observe_newest(&self, ts: i64) {
        self.newest.fetch_max(ts, Ordering::Relaxed);
    }

    /// The oldest timestamp the index accepts now: the retention window from the newest
    /// sample, or the cold writers' pin on raw samples when that is older.
    pub fn min_valid_ts(&self) -> i64 {
        self.retention_cutoff().min(self.pinned(PinKind::Raw))
    }

    fn retention_cutoff(&self) -> i64 {
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
        let mut bytes = 0;
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
            bytes += v.upsert(*r);
        }
        self.stats.rollup_bytes.fetch_add(bytes, Ordering::Relaxed);
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
        v.range(id, start, end)
    }

    /// Bytes the raw samples take: compressed chunks plus uncompressed head samples (16 bytes
    /// each).
    pub fn raw_bytes(&self) -> i64 {
        let st = &self.stats;
        st.chunk_bytes.load(Ordering::Relaxed) + st.head_samples.load(Ordering::Relaxed) * 16
    }

    /// Bytes the stored rollups take.
    pub fn rollup_bytes(&self) -> i64 {
        self.stats.rollup_bytes.load(Ordering::Relaxed)
    }

    /// Bytes of raw samples and rollups.
    pub fn bytes(&self) -> i64 {
        self.raw_bytes() + self.rollup_bytes()
    }

    /// Samples held.
    pub fn sample_count(&self) -> i64 {
        self.stats.head_samples.load(Ordering::Relaxed)
            + self.stats.sealed_samples.load(Ordering::Relaxed)
    }

    /// Bytes held, walked series by series (one shard locked at a time): raw samples with the
    /// per-series table entries, and rollups.
    pub fn memory(&self) -> HotMemory {
        let slot = tidemark_dataflows::memory::hash_slot(8 + std::mem::size_of::<SeriesData>());
        let mut m = HotMemory::default();
        for sh in self.shards.iter() {
            let sh = sh.read().unwrap_or_else(|e| e.into_inner());
            m.series_table += sh.capacity() as i64 * slot;
            for s in sh.values() {
                m.samples += s.raw_heap_bytes() as i64;
                m.rollups += (s.r1m.heap_bytes() + s.r1h.heap_bytes()) as i64;
            }
        }
        m
    }

    /// Drops data older than the retention window, and series left with nothing.
    pub fn gc(&self) {
        let retention = self.retention_cutoff();
        if retention == i64::MIN {
            return;
        }
        let cutoff = retention.min(self.pinned(PinKind::Raw));
        let (cut_1m, cut_1h) = (
            retention.min(self.pinned(PinKind::Minute)),
            retention.min(self.pinned(PinKind::Hour)),
        );
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
                for buf in [&mut s.head, &mut s.ooo] {
                    let n = buf.partition_point(|p| p.0 < cutoff);
                    if n > 0 {
                        buf.drain(..n);
                        dhead -= n as i64;
                    }
                }
                drollups += s.r1m.gc(cut_1m) + s.r1h.gc(cut_1h);
                let keep = !(s.sealed.is_empty()
                    && s.head.is_empty()
                    && s.ooo.is_empty()
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
        st.rollup_bytes.fetch_add(drollups, Ordering::Relaxed);
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
        // Enough late samples to trigger a merge into the sealed chunks.
        let late: Vec<Sample> = (0..40)
            .map(|i| Sample {
                series: id,
                ts: i * 10 + 5,
                value: 0.5,
            })
            .collect();
        h.append_samples(&late);
        h.append_samples(&[Sample {
            series: id,
            ts: 7,
            value: 7.0,
        }]);
        let mut out = Vec::new();
        h.samples(id, 0, 10_000, &mut out);
        // 300 in order, 55 (once: the later 0.5 at 55 replaced -2.0), 39 more late, and 7.
        assert_eq!(out.len(), 341);
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(out[1], (5, 0.5));
        assert_eq!(out[2], (7, 7.0));
        assert!(out.contains(&(50, -1.0)));
        assert!(out.contains(&(55, 0.5)));
        assert_eq!(h.sample_count(), 341);
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

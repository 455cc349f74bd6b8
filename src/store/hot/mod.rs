//! The hot tier: every series' recent samples as compressed chunks ([`chunk`]), the series
//! catalog and inverted label index ([`index`]), and the 1-minute and 1-hour rollups beside
//! the raw samples. With a chunk directory ([`HotIndex::with_chunk_files`], as `tidemark up`
//! runs), sealed chunks move to local disk ([`chunkfile`], [`HotIndex::spill`]) and memory
//! holds each series' open head, a reference per sealed chunk, and its rollups. Chunks older
//! than [`COMPACT_AFTER_MS`] are merged into chunks of 720 to 960 samples as they are spilled,
//! so that the references a series keeps do not grow with the retention in 120-sample steps
//! (78 for the default 26 hours: about 1.1 KB a series; about 20 merged).
//!
//! Durability comes from the log the job reads: on start the job replays the retained log into
//! an empty index, so the log is this index's write-ahead log. Retention is measured from the
//! newest sample, as Prometheus measures its head block, so a backfill of past hours is
//! accepted while anything older than `retention` before the newest sample is rejected.

pub mod checkpoint;
pub mod chunk;
pub mod chunkfile;
pub mod index;
pub mod rollups;
mod sealed;
pub mod snap;
mod thin;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tidemark_dataflows::sink::HotSink;
use tidemark_dataflows::{Rollup, Sample};

use crate::model::{IdMap, SeriesId};
use chunk::{Appender, Chunk, CHUNK_SAMPLES};
use chunkfile::{ChunkFileError, ChunkFiles, DiskRef, Prefetched};
use index::Catalog;
use rollups::RollupSeries;
use sealed::Sealed;
use thin::Thin;

const SHARDS: usize = 64;

/// Sealed chunks this long before the newest sample are merged into larger ones
/// (`SeriesData::compact`): late samples rarely reach back this far, and recent ranges keep
/// reading small chunks.
pub const COMPACT_AFTER_MS: i64 = 2 * 3_600_000;

/// Out-of-order samples gathered before they are merged into sealed chunks.
const OOO_MERGE: usize = 32;

/// Which rollups a query wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    OneMinute,
    OneHour,
}

struct SeriesData {
    sealed: Sealed,
    /// The samples after the last sealed chunk, compressed as they are appended.
    head: Appender,
    /// Samples at or before the newest one that arrived out of order, waiting to be merged
    /// into the chunk or head that covers them.
    ooo: Thin<(i64, f64)>,
    /// The newest sample, held back from the head ([`NO_SAMPLE`]: none): newer than every
    /// other sample of the series. The job's workers decode log records in parallel, so a
    /// series' next sample often arrives just before the one before it (47 % of the samples at
    /// 200,000 series went to the out-of-order buffer); held back one step, such a pair goes
    /// into the head in order.
    held_ts: i64,
    held_value: f64,
    r1m: RollupSeries,
    r1h: RollupSeries,
}

/// How many samples the head takes before it is sealed: [`CHUNK_SAMPLES`], and for a series'
/// first chunk 60 to 120 by its id. Series that start together (a fleet, every scale run)
/// otherwise fill their heads in step and seal them in the same minute of event time: at
/// 1 M series the highest RSS of a run came when every head held about 120 samples (187
/// bytes a series) and the burst of a million seals had left 257 bytes a series of freed
/// pages with the allocator; staggered, heads hold 60 on average.
fn head_cut(id: SeriesId, first: bool) -> usize {
    if first {
        let half = CHUNK_SAMPLES / 2;
        half + (id % (half as u64 + 1)) as usize
    } else {
        CHUNK_SAMPLES
    }
}

/// [`SeriesData::held_ts`] when no sample is held.
const NO_SAMPLE: i64 = i64::MIN;

impl Default for SeriesData {
    fn default() -> Self {
        SeriesData {
            sealed: Sealed::default(),
            head: Appender::default(),
            ooo: Thin::default(),
            held_ts: NO_SAMPLE,
            held_value: 0.0,
            r1m: RollupSeries::default(),
            r1h: RollupSeries::default(),
        }
    }
}

/// Changes to the counters of [`HotStats`] from one operation.
#[derive(Clone, Copy, Default)]
struct Delta {
    chunk_bytes: i64,
    head_bytes: i64,
    head_samples: i64,
    sealed_samples: i64,
    /// Samples that arrived at or before their series' newest one.
    out_of_order: i64,
    /// Of those, samples the head already held bit for bit (dropped).
    duplicates: i64,
    /// Chunks sealed or rewritten in memory (to be spilled to disk).
    new_chunks: i64,
    chunk_disk_bytes: i64,
    /// Chunks merged into larger ones ([`SeriesData::compact`]).
    compacted: i64,
}

impl std::ops::AddAssign for Delta {
    fn add_assign(&mut self, o: Delta) {
        self.out_of_order += o.out_of_order;
        self.duplicates += o.duplicates;
        self.new_chunks += o.new_chunks;
        self.compacted += o.compacted;
        self.chunk_disk_bytes += o.chunk_disk_bytes;
        self.chunk_bytes += o.chunk_bytes;
        self.head_bytes += o.head_bytes;
        self.head_samples += o.head_samples;
        self.sealed_samples += o.sealed_samples;
    }
}

/// Counters the index keeps for `/metrics`.
#[derive(Default)]
pub struct HotStats {
    pub samples_appended: AtomicU64,
    pub samples_out_of_retention: AtomicU64,
    /// Samples that arrived at or before their series' newest one (corrections, duplicates,
    /// disorder) and went through the out-of-order buffer.
    pub samples_out_of_order: AtomicU64,
    /// Samples the head already held with the same value (a restart's replay re-sends what its
    /// checkpoint has): dropped without touching the head.
    pub samples_duplicate: AtomicU64,
    /// Encoded bytes of the sealed chunks, in memory or on disk.
    pub chunk_bytes: AtomicI64,
    /// The part of `chunk_bytes` on disk.
    pub chunk_disk_bytes: AtomicI64,
    /// Bytes of the compressed heads and the out-of-order buffers (16 bytes a sample).
    pub head_bytes: AtomicI64,
    pub head_samples: AtomicI64,
    pub sealed_samples: AtomicI64,
    pub rollup_bytes: AtomicI64,
    /// Chunks a loaded checkpoint referenced in segments no longer there (dropped).
    pub chunks_missing: AtomicU64,
    /// Sealed chunks merged into larger ones once older than [`COMPACT_AFTER_MS`].
    pub chunks_compacted: AtomicU64,
    /// 1-minute and 1-hour rollup blocks on disk merged into larger ones
    /// ([`rollups::RollupSeries::compact`]).
    pub rollup_blocks_compacted: [AtomicU64; 2],
}

/// Bytes the hot index holds, by part (see [`HotIndex::memory`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct HotMemory {
    /// The per-series table: hash slots and the boxed state of each series.
    pub series_table: i64,
    /// Raw samples: the series' state, chunks and compressed heads.
    pub samples: i64,
    /// Raw samples waiting in out-of-order buffers.
    pub out_of_order: i64,
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

impl HotStats {
    fn add(&self, d: Delta) {
        self.samples_out_of_order
            .fetch_add(d.out_of_order as u64, Ordering::Relaxed);
        self.samples_duplicate
            .fetch_add(d.duplicates as u64, Ordering::Relaxed);
        self.chunks_compacted
            .fetch_add(d.compacted as u64, Ordering::Relaxed);
        self.chunk_bytes.fetch_add(d.chunk_bytes, Ordering::Relaxed);
        self.chunk_disk_bytes
            .fetch_add(d.chunk_disk_bytes, Ordering::Relaxed);
        self.head_bytes.fetch_add(d.head_bytes, Ordering::Relaxed);
        self.head_samples
            .fetch_add(d.head_samples, Ordering::Relaxed);
        self.sealed_samples
            .fetch_add(d.sealed_samples, Ordering::Relaxed);
    }
}

/// The in-memory hot tier.
pub struct HotIndex {
    pub catalog: Catalog,
    /// Series state boxed: a slot is 16 bytes, so the table's power-of-two slack costs 16
    /// bytes a slot rather than the state's 230 (a heap profile's 505 bytes a series).
    shards: Box<[RwLock<IdMap<Box<SeriesData>>>]>,
    newest: AtomicI64,
    /// The oldest sample time appended since [`HotIndex::take_touched_from`] last read it
    /// (`i64::MAX`: none): the query result cache drops the steps at and after it.
    touched: AtomicI64,
    /// The oldest sample appended since the index was made (`i64::MAX`: none), for a rule
    /// evaluator with no saved tick to start at ([`HotIndex::oldest_appended`]).
    oldest: AtomicI64,
    retention_ms: i64,
    /// 1-minute rollups kept this long before the newest sample (or while pinned).
    minute_rollup_ms: i64,
    pub stats: HotStats,
    /// Times before which the cold writers no longer need data, by kind (see [`HotIndex::pin`]).
    pins: std::sync::Mutex<Vec<(PinKind, std::sync::Weak<AtomicI64>)>>,
    /// Where sealed chunks go ([`HotIndex::spill`]); `None`: they stay in memory.
    files: Option<ChunkFiles>,
    /// Where 1-minute and 1-hour rollup blocks go (`1m/` and `1h/` in the chunk directory).
    rollup_files: [Option<ChunkFiles>; 2],
    /// Per shard: series with chunks in memory not yet spilled.
    unspilled: Box<[Mutex<Vec<SeriesId>>]>,
}

fn shard(id: SeriesId) -> usize {
    (id >> 32) as usize % SHARDS
}

/// Reads the table slot, entry and head ends of each series in `ids` before a loop appends to
/// them or reads them ([`HotIndex::append_samples`], [`HotIndex::warm`]). At 1 M series each is
/// a cache miss, and the lookups here do not depend on each other, so the processor overlaps
/// the misses, where the work between two lookups of those loops kept them one after the
/// other: for appends 2.77 - 2.84 against 3.12 - 3.14 us per sample until idle at 1 M series
/// (benches/README.md, Footprint). A run is a shard's part of a batch (about 150 series) or a
/// window's slice of reads (32), whose lines stay in the cache until the loop reaches them.
fn warm_up(table: &IdMap<Box<SeriesData>>, ids: impl Iterator<Item = SeriesId>) {
    let mut acc = 0i64;
    for id in ids {
        if let Some(s) = table.get(&id) {
            acc ^= s.held_ts ^ s.head.touch();
        }
    }
    std::hint::black_box(acc);
}

impl SeriesData {
    fn head_bytes(&self) -> i64 {
        (self.head.size() + self.ooo.len() * 16) as i64
    }

    /// The held sample, if any.
    fn held(&self) -> Option<(i64, f64)> {
        (self.held_ts != NO_SAMPLE).then_some((self.held_ts, self.held_value))
    }

    /// The newest sample when it is known without decoding: the held one (every series that
    /// took a sample in order holds one).
    fn newest_sample(&self) -> Option<(i64, f64)> {
        self.held()
    }

    /// Inserts a sample; returns the counter changes. The newest sample is held back one step
    /// ([`SeriesData::held_ts`]) before it goes into the head.
    fn insert(&mut self, id: SeriesId, ts: i64, v: f64, files: Option<&ChunkFiles>) -> Delta {
        match self.held() {
            None if ts == NO_SAMPLE => self.commit(id, ts, v, files),
            None => {
                self.hold(ts, v);
                Delta {
                    head_samples: 1,
                    ..Delta::default()
                }
            }
            Some((held, _)) if ts > held => {
                let mut d = self.commit(id, held, self.held_value, files);
                // The held sample was counted when it came.
                d.head_samples -= 1;
                self.hold(ts, v);
                d.head_samples += 1;
                d
            }
            Some((held, _)) if ts == held => {
                self.held_value = v; // the last write wins
                Delta::default()
            }
            Some(_) => self.commit(id, ts, v, files),
        }
    }

    fn hold(&mut self, ts: i64, v: f64) {
        (self.held_ts, self.held_value) = (ts, v);
    }

    /// Puts a sample into the head, or into the out-of-order buffer when it is at or before
    /// the newest one there; returns the counter changes.
    fn commit(&mut self, id: SeriesId, ts: i64, v: f64, files: Option<&ChunkFiles>) -> Delta {
        let before = self.head_bytes();
        // In order: appended to the compressed head. Anything at or before the newest sample
        // (a correction, a duplicate, disorder) waits in the out-of-order buffer.
        let newest = if self.head.is_empty() {
            self.sealed.max_ts()
        } else {
            Some(self.head.last_ts())
        };
        let mut d = if newest.is_some_and(|n| ts <= n) {
            // A sample the head already holds, bit for bit (a restart's replay re-sends what
            // its checkpoint has): nothing to change, and no re-encode of the head.
            if self.head_has(ts, v) {
                Delta {
                    duplicates: 1,
                    ..Delta::default()
                }
            } else {
                let mut d = self.insert_ooo(ts, v, files);
                d.out_of_order += 1;
                d
            }
        } else {
            self.head.push(ts, v);
            Delta {
                head_samples: 1,
                ..Delta::default()
            }
        };
        if self.head.len() >= head_cut(id, self.sealed.is_empty()) {
            d += self.seal_head();
        }
        d.head_bytes += self.head_bytes() - before;
        d
    }

    /// Whether the head holds exactly `(ts, v)`.
    #[cold]
    fn head_has(&self, ts: i64, v: f64) -> bool {
        if self.head.is_empty() || ts < self.head.first_ts() || ts > self.head.last_ts() {
            return false;
        }
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<(i64, f64)>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            s.clear();
            self.head.decode_into(&mut s);
            s.binary_search_by_key(&ts, |p| p.0)
                .is_ok_and(|i| s[i].1.to_bits() == v.to_bits())
        })
    }

    /// Seals the head as a chunk (the smallest codec); head bytes are counted by the caller.
    fn seal_head(&mut self) -> Delta {
        let samples = std::mem::take(&mut self.head).samples();
        let c = Chunk::encode(&samples);
        let n = samples.len() as i64;
        let d = Delta {
            chunk_bytes: c.size() as i64,
            head_samples: -n,
            sealed_samples: n,
            new_chunks: 1,
            ..Delta::default()
        };
        self.sealed.push(c);
        d
    }

    /// A sample at or before the newest one goes into the head at once when the head covers
    /// it (one re-encode of the head, in memory). Older ones wait in the out-of-order buffer;
    /// every [`OOO_MERGE`] of them are merged into the chunks that cover them, so late data
    /// costs one re-encode (and, on disk, one read) per chunk and batch, not one per sample.
    /// (Buffered until 32 regardless, the disorder between the job's workers, about 1 % of
    /// the samples, kept some 17 samples waiting in every series: 280 bytes a series.)
    #[cold]
    fn insert_ooo(&mut self, ts: i64, v: f64, files: Option<&ChunkFiles>) -> Delta {
        let added = match self.ooo.binary_search_by_key(&ts, |p| p.0) {
            Ok(j) => {
                self.ooo[j].1 = v;
                0
            }
            Err(j) => {
                let ooo = self.ooo.vec_mut();
                if ooo.len() == ooo.capacity() {
                    // By 4 samples, not by doubling (up to 32 wait here per series).
                    ooo.reserve_exact(4);
                }
                ooo.insert(j, (ts, v));
                1
            }
        };
        let mut d = Delta {
            head_samples: added,
            ..Delta::default()
        };
        let into_head = !self.head.is_empty() && ts >= self.head.first_ts();
        if into_head || self.ooo.len() >= OOO_MERGE {
            d += self.merge_ooo(files);
        }
        d
    }

    /// Merges the out-of-order buffer into the sealed chunks and the head; returns the
    /// counter changes (head bytes excepted: the caller measures them).
    fn merge_ooo(&mut self, files: Option<&ChunkFiles>) -> Delta {
        let ooo = std::mem::take(&mut self.ooo).into_vec();
        let mut d = Delta {
            head_samples: -(ooo.len() as i64),
            ..Delta::default()
        };
        // Samples after the last sealed chunk belong to the head.
        let sealed_end = self.sealed.max_ts().unwrap_or(i64::MIN);
        let split = ooo.partition_point(|p| p.0 <= sealed_end);
        let (into_chunks, into_head) = ooo.split_at(split);
        let mut merged = Vec::new();
        if !into_chunks.is_empty() {
            let mut sealed = self.sealed.take_all();
            let mut k = 0;
            let mut samples = Vec::new();
            let mut scratch = Vec::new();
            while k < into_chunks.len() {
                let i = sealed
                    .iter()
                    .rposition(|c| c.min_ts <= into_chunks[k].0)
                    .unwrap_or(0);
                let limit = sealed.get(i + 1).map_or(i64::MAX, |c| c.min_ts);
                let end = k + into_chunks[k..].partition_point(|p| p.0 < limit);
                samples.clear();
                if let Err(e) = sealed[i].decode(files, &mut scratch, &mut samples) {
                    // The chunk stays as it is; these late samples cannot be merged into it.
                    report_read_error(&e);
                    k = end;
                    continue;
                }
                merged.clear();
                merge_sorted(&into_chunks[k..end], &samples, &mut merged);
                d.sealed_samples += merged.len() as i64 - samples.len() as i64;
                let before = sealed[i].size() as i64;
                if sealed[i].disk_ref().is_some() {
                    d.chunk_disk_bytes -= before;
                }
                // A dense backfill into one chunk's span would grow it without bound (and a
                // chunk holds at most 65,535 samples): past twice a merged chunk's size it is
                // split into even parts of at most [`sealed::COMPACT_MAX`].
                let parts = if merged.len() > 2 * sealed::COMPACT_MAX {
                    merged.len().div_ceil(sealed::COMPACT_MAX)
                } else {
                    1
                };
                let per = merged.len().div_ceil(parts);
                let new: Vec<Chunk> = merged.chunks(per).map(Chunk::encode).collect();
                d.chunk_bytes += new.iter().map(|c| c.size() as i64).sum::<i64>() - before;
                d.new_chunks += new.len() as i64;
                release(files, sealed.splice(i..=i, new));
                k = end;
            }
            self.sealed.set_all(sealed);
        }
        if !into_head.is_empty() {
            let head = std::mem::take(&mut self.head).samples();
            merged.clear();
            merge_sorted(into_head, &head, &mut merged);
            d.head_samples += merged.len() as i64 - head.len() as i64;
            for part in merged.chunks(CHUNK_SAMPLES) {
                self.head = Appender::from_samples(part);
                if self.head.len() >= CHUNK_SAMPLES {
                    d += self.seal_head();
                }
            }
        }
        d
    }

    /// Merges runs of sealed chunks older than `horizon` into larger chunks
    /// ([`sealed::compaction_runs`]), in memory until the next spill writes them; returns the
    /// counter changes. A series keeps a reference per chunk on disk (about 15 bytes): 78 of
    /// them for the 26 hours of hot retention in 120-sample chunks, about 20 compacted. A run
    /// whose chunks cannot be read back stays as it is.
    fn compact(&mut self, horizon: i64, files: Option<&ChunkFiles>) -> Delta {
        let runs =
            sealed::compaction_runs(self.sealed.iter().map(|c| (c.max_ts, c.count)), horizon);
        if runs.is_empty() {
            return Delta::default();
        }
        let mut all = self.sealed.take_all();
        let mut d = Delta::default();
        let (mut samples, mut scratch) = (Vec::new(), Vec::new());
        // From the newest run, so that the older runs' positions stay.
        'runs: for run in runs.into_iter().rev() {
            samples.clear();
            for c in &all[run.clone()] {
                if let Err(e) = c.decode(files, &mut scratch, &mut samples) {
                    report_read_error(&e);
                    continue 'runs;
                }
            }
            if !samples.windows(2).all(|w| w[0].0 < w[1].0) {
                // Chunks never overlap; if they did, merging would drop samples.
                continue;
            }
            let merged = Chunk::encode(&samples);
            for c in &all[run.clone()] {
                d.chunk_bytes -= c.size() as i64;
                if c.disk_ref().is_some() {
                    d.chunk_disk_bytes -= c.size() as i64;
                }
            }
            d.chunk_bytes += merged.size() as i64;
            d.new_chunks += 1;
            d.compacted += run.len() as i64;
            release(files, all.splice(run, [merged]));
        }
        self.sealed.set_all(all);
        d
    }

    /// Heap bytes of the raw samples: chunk table, chunk bytes and head (the out-of-order
    /// buffer is counted apart).
    /// A time in `[start, end)` the series may have a raw sample at (a chunk spanning the
    /// range counts: nothing is decoded).
    fn any_sample_in(&self, start: i64, end: i64) -> Option<i64> {
        let span = |lo: i64, hi: i64| (hi >= start && lo < end).then(|| lo.max(start));
        self.sealed
            .iter()
            .find_map(|c| span(c.min_ts, c.max_ts))
            .or_else(|| {
                (!self.head.is_empty())
                    .then(|| span(self.head.first_ts(), self.head.last_ts()))
                    .flatten()
            })
            .or_else(|| {
                self.ooo
                    .iter()
                    .map(|p| p.0)
                    .find(|&t| t >= start && t < end)
            })
            .or_else(|| self.held().map(|p| p.0).filter(|&t| t >= start && t < end))
    }

    fn raw_heap_bytes(&self) -> usize {
        self.sealed.heap_bytes() + self.head.heap_bytes()
    }

    /// Where the sealed chunks overlapping `[start, end]` that are on disk are, onto `out`.
    fn disk_refs_in(&self, start: i64, end: i64, out: &mut Vec<DiskRef>) {
        for c in self.sealed.iter() {
            if c.min_ts > end {
                break;
            }
            if c.max_ts >= start {
                out.extend(c.disk_ref());
            }
        }
    }

    /// The samples in `[start, end]` onto `out`: chunks on disk from `pre` when read ahead,
    /// else read into `scratch`.
    fn samples_in(
        &self,
        start: i64,
        end: i64,
        files: Option<&ChunkFiles>,
        pre: Option<&Prefetched>,
        scratch: &mut Vec<u8>,
        out: &mut Vec<(i64, f64)>,
    ) {
        let from_all = out.len();
        // Room for every sample the overlapping chunks and the head hold, so that decoding
        // does not grow the vector step by step.
        let mut want = self.head.len() + self.ooo.len() + 1;
        for c in self.sealed.iter() {
            if c.min_ts > end {
                break;
            }
            if c.max_ts >= start {
                want += usize::from(c.count);
            }
        }
        out.reserve(want);
        for c in self.sealed.iter() {
            if c.min_ts > end {
                break;
            }
            if c.max_ts < start {
                continue;
            }
            let from = out.len();
            if let Err(e) = c.decode_from(files, pre, scratch, out) {
                report_read_error(&e);
                continue;
            }
            keep_range(out, from, start, end);
        }
        if !self.head.is_empty() && self.head.last_ts() >= start && self.head.first_ts() <= end {
            let from = out.len();
            self.head.decode_into(out);
            keep_range(out, from, start, end);
        }
        let lo = self.ooo.partition_point(|p| p.0 < start);
        let hi = self.ooo.partition_point(|p| p.0 <= end);
        if hi > lo {
            let rest = out.split_off(from_all);
            merge_sorted(&self.ooo[lo..hi], &rest, out);
        }
        // Newer than all of the above.
        if let Some((t, v)) = self.held().filter(|&(t, _)| t >= start && t <= end) {
            out.push((t, v));
        }
    }
}

impl SeriesData {
    /// The newest sample in `[start, end]`, decoding at most the head or one chunk: the held
    /// sample when it is in range (it is newer than every other), else the newest of the
    /// out-of-order buffer's (which wins a tie, as in [`merge_sorted`]) and of the in-order
    /// samples at or before `end`.
    fn newest_in(&self, start: i64, end: i64, files: Option<&ChunkFiles>) -> Option<(i64, f64)> {
        if let Some((t, v)) = self.held() {
            if t <= end {
                return (t >= start).then_some((t, v));
            }
        }
        let i = self.ooo.partition_point(|p| p.0 <= end);
        let ooo = i.checked_sub(1).map(|i| self.ooo[i]);
        let mut buf = Vec::new();
        if !self.head.is_empty() && self.head.first_ts() <= end {
            self.head.decode_into(&mut buf);
        } else {
            let mut newest = None;
            for c in self.sealed.iter() {
                if c.min_ts > end {
                    break;
                }
                newest = Some(c);
            }
            if let Some(c) = newest.filter(|c| c.max_ts >= start) {
                if let Err(e) = c.decode(files, &mut Vec::new(), &mut buf) {
                    report_read_error(&e);
                }
            }
        }
        let k = buf.partition_point(|p| p.0 <= end);
        let ordered = k.checked_sub(1).map(|k| buf[k]);
        let best = match (ooo, ordered) {
            (Some(a), Some(b)) => {
                if a.0 >= b.0 {
                    a
                } else {
                    b
                }
            }
            (a, b) => a.or(b)?,
        };
        (best.0 >= start).then_some(best)
    }
}

/// Series whose chunks [`HotIndex::samples_many`] reads ahead together: with 3 chunks of
/// about 200 bytes each an hour, a group's read is under a megabyte (the chunks of the
/// series between them included) until the range spans about 10 hours.
const READ_GROUP: usize = 512;

/// A chunk made by merging others ([`SeriesData::compact`]), or rewritten from one: written
/// to its own segments.
fn is_merged(c: &Chunk) -> bool {
    usize::from(c.count) > 2 * CHUNK_SAMPLES
}

/// Tells the chunk files that the index dropped these chunks' references (called with the
/// shard's lock held, after the chunks left the series: [`ChunkFiles::release`]).
fn release(files: Option<&ChunkFiles>, dropped: impl IntoIterator<Item = Chunk>) {
    if let Some(f) = files {
        for r in dropped.into_iter().filter_map(|c| c.disk_ref()) {
            f.release(r);
        }
    }
}

/// Logs a chunk that could not be read back, at most once every 10 s with how many were held
/// back (the count is on `/metrics` as `tidemark_hot_chunk_read_errors_total`).
#[cold]
fn report_read_error(e: &ChunkFileError) {
    static EVERY: crate::logging::Every =
        crate::logging::Every::new(std::time::Duration::from_secs(10));
    if let Some(held_back) = EVERY.ready() {
        tracing::warn!(
            held_back,
            "a sealed chunk could not be read, its samples are left out of this read: {e}"
        );
    }
}

/// Keeps, of the samples from `from` on, those in `[start, end]`.
fn keep_range(out: &mut Vec<(i64, f64)>, from: usize, start: i64, end: i64) {
    let mut w = from;
    for r in from..out.len() {
        if out[r].0 >= start && out[r].0 <= end {
            out[w] = out[r];
            w += 1;
        }
    }
    out.truncate(w);
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
            touched: AtomicI64::new(i64::MAX),
            oldest: AtomicI64::new(i64::MAX),
            retention_ms,
            minute_rollup_ms: retention_ms,
            stats: HotStats::default(),
            pins: std::sync::Mutex::new(Vec::new()),
            files: None,
            rollup_files: [None, None],
            unspilled: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// Moves sealed chunks to `files` from now on ([`HotIndex::spill`]); set before the index
    /// is loaded from a checkpoint that references them.
    /// Rollup blocks go to `1m/` and `1h/` inside it (each kind's segments expire with its
    /// own retention: mixed with raw chunks, 1-minute blocks kept 2 h in the index stayed on
    /// disk for the raw retention, about 5 bytes per raw sample); when those cannot be
    /// opened (reported), rollup blocks stay in memory.
    pub fn with_chunk_files(mut self, files: ChunkFiles) -> Self {
        for (k, sub) in ["1m", "1h"].into_iter().enumerate() {
            let dir = files.dir().join(sub);
            self.rollup_files[k] = match ChunkFiles::open(&dir) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::warn!(
                        "cannot open {}: {e}; rollup blocks stay in memory, which grows with the data (check that the data dir is writable)",
                        dir.display()
                    );
                    None
                }
            };
        }
        self.files = Some(files);
        self
    }

    /// The files rollup blocks of a resolution go to.
    fn rollup_files(&self, res: Resolution) -> Option<&ChunkFiles> {
        match res {
            Resolution::OneMinute => self.rollup_files[0].as_ref(),
            Resolution::OneHour => self.rollup_files[1].as_ref(),
        }
    }

    /// Every chunk directory (raw chunks, 1-minute and 1-hour blocks), for `/metrics`.
    pub fn all_chunk_files(&self) -> impl Iterator<Item = (&'static str, &ChunkFiles)> + '_ {
        let kinds = ["raw", "1m", "1h"];
        let all = [
            self.files.as_ref(),
            self.rollup_files[0].as_ref(),
            self.rollup_files[1].as_ref(),
        ];
        kinds
            .into_iter()
            .zip(all)
            .filter_map(|(k, f)| Some((k, f?)))
    }

    /// Deletes the chunk segments nothing loaded references (after a checkpoint was loaded, or
    /// without one: all of them); returns how many.
    pub fn remove_unreferenced_chunks(&self) -> usize {
        self.all_chunk_files()
            .map(|(_, f)| f.remove_unreferenced())
            .sum()
    }

    /// Keeps 1-minute rollups `ms` before the newest sample rather than the whole retention
    /// (the cold writers' pin still holds what they have not written): when the cold 1m tier
    /// answers for older windows.
    pub fn with_minute_rollup_retention(mut self, ms: i64) -> Self {
        self.minute_rollup_ms = ms.clamp(0, self.retention_ms);
        self
    }

    /// The oldest 1-minute window start the index keeps whatever the pins (`i64::MIN`:
    /// everything).
    pub fn minute_rollups_from(&self) -> i64 {
        self.newest()
            .map_or(i64::MIN, |n| n.saturating_sub(self.minute_rollup_ms))
    }

    /// The chunk directory, if sealed chunks go to disk.
    pub fn chunk_files(&self) -> Option<&ChunkFiles> {
        self.files.as_ref()
    }

    /// Merges the old chunks of the series it visits (`SeriesData::compact`), then writes
    /// the chunks sealed or merged, and the rollup blocks made, since the last call to the chunk
    /// files (raw chunks, 1-minute and 1-hour blocks each to their own, so that each kind's
    /// segments go with its own retention) and drops their bytes from memory, a shard at a
    /// time (its lock held while its batches are written: the job's appends to it wait that
    /// long); returns the blocks written. Without chunk files nothing moves; a kind whose
    /// write fails (reported) stays in memory and is tried again.
    pub fn spill(&self) -> usize {
        let Some(files) = &self.files else {
            return 0;
        };
        // Raw chunks, 1-minute and 1-hour blocks, and merged raw chunks: these go to their own
        // segments (stream 1), as they stay 24 hours where the chunks merged into them went
        // after 2 to 4; in the same segments they kept those alive.
        let targets: [Option<&ChunkFiles>; 4] = [
            Some(files),
            self.rollup_files[0].as_ref(),
            self.rollup_files[1].as_ref(),
            Some(files),
        ];
        let mut moved = 0;
        let horizon = self
            .newest
            .load(Ordering::Relaxed)
            .saturating_sub(COMPACT_AFTER_MS);
        // Per kind (raw, 1m, 1h, merged): the bytes to append, their references, the newest
        // time.
        let mut batch: [Vec<u8>; 4] = Default::default();
        let mut refs: [Vec<DiskRef>; 4] = Default::default();
        // Per series written: its id, and where its blocks of each kind start in `refs`.
        let mut placed: Vec<(SeriesId, [usize; 4])> = Vec::new();
        for (i, sh) in self.shards.iter().enumerate() {
            let mut ids =
                std::mem::take(&mut *self.unspilled[i].lock().unwrap_or_else(|e| e.into_inner()));
            if ids.is_empty() {
                continue;
            }
            ids.sort_unstable();
            ids.dedup();
            let mut sh = sh.write().unwrap_or_else(|e| e.into_inner());
            batch.iter_mut().for_each(Vec::clear);
            refs.iter_mut().for_each(Vec::clear);
            placed.clear();
            let mut max_ts = [i64::MIN; 4];
            let mut compacted = Delta::default();
            for &id in &ids {
                let Some(s) = sh.get_mut(&id) else { continue };
                compacted += s.compact(horizon, Some(files));
                for (k, r) in [&mut s.r1m, &mut s.r1h].into_iter().enumerate() {
                    let (added, blocks) = r.compact(targets[k + 1]);
                    if blocks > 0 {
                        self.stats.rollup_bytes.fetch_add(added, Ordering::Relaxed);
                        self.stats.rollup_blocks_compacted[k]
                            .fetch_add(blocks as u64, Ordering::Relaxed);
                    }
                }
                placed.push((
                    id,
                    [refs[0].len(), refs[1].len(), refs[2].len(), refs[3].len()],
                ));
                let mut put = |k: usize, b: &[u8], end: i64| {
                    if targets[k].is_none() {
                        return;
                    }
                    refs[k].push(DiskRef {
                        seg: 0,
                        off: batch[k].len() as u32,
                        len: b.len() as u32,
                    });
                    batch[k].extend_from_slice(b);
                    max_ts[k] = max_ts[k].max(end);
                };
                for c in s.sealed.in_memory() {
                    let k = if is_merged(c) { 3 } else { 0 };
                    put(k, c.mem_bytes().expect("a chunk in memory"), c.max_ts);
                }
                for (b, end) in s.r1m.in_memory() {
                    put(1, b, end);
                }
                for (b, end) in s.r1h.in_memory() {
                    put(2, b, end);
                }
            }
            let (mut failed, mut raw_failed) = (false, false);
            for k in 0..4 {
                let Some(f) = targets[k].filter(|_| !refs[k].is_empty()) else {
                    continue;
                };
                let stream = usize::from(k == 3);
                match f.append_to(stream, &batch[k], max_ts[k]) {
                    Ok((seg, base)) => {
                        for r in refs[k].iter_mut() {
                            r.seg = seg;
                            r.off += base;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(
                            "writing {} blocks to {} failed, they stay in memory (retried): {e}",
                            refs[k].len(),
                            f.dir().display()
                        );
                        refs[k].clear();
                        failed = true;
                        if k == 3 || k == 0 {
                            // A series' chunks in memory become references all at once.
                            raw_failed = true;
                        }
                    }
                }
            }
            let (mut disk, mut freed) = (0i64, 0i64);
            for (j, &(id, at)) in placed.iter().enumerate() {
                let Some(s) = sh.get_mut(&id) else { continue };
                let to = |k: usize| placed.get(j + 1).map_or(refs[k].len(), |p| p.1[k]);
                let span = |k: usize| refs[k].get(at[k]..to(k)).unwrap_or_default();
                if !raw_failed && !s.sealed.in_memory().is_empty() {
                    // The two raw kinds' references back in the chunks' order.
                    let (mut fresh, mut merged) = (span(0).iter(), span(3).iter());
                    let chunks: Vec<DiskRef> = s
                        .sealed
                        .in_memory()
                        .iter()
                        .map(|c| {
                            if is_merged(c) {
                                merged.next()
                            } else {
                                fresh.next()
                            }
                        })
                        .map(|r| *r.expect("a reference per chunk written"))
                        .collect();
                    disk += chunks.iter().map(|r| i64::from(r.len)).sum::<i64>();
                    s.sealed.spilled(&chunks);
                }
                if !refs[1].is_empty() && s.r1m.in_memory().next().is_some() {
                    freed += s.r1m.spilled(span(1));
                }
                if !refs[2].is_empty() && s.r1h.in_memory().next().is_some() {
                    freed += s.r1h.spilled(span(2));
                }
            }
            if failed {
                self.unspilled[i]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(ids);
            }
            self.stats.rollup_bytes.fetch_sub(freed, Ordering::Relaxed);
            self.stats.add(compacted);
            moved += refs.iter().map(Vec::len).sum::<usize>();
            self.stats
                .chunk_disk_bytes
                .fetch_add(disk, Ordering::Relaxed);
        }
        moved
    }

    /// A checkpoint of the index begins; returns its epoch for
    /// [`HotIndex::checkpoint_durable`] ([`ChunkFiles::checkpoint_begins`]).
    pub fn checkpoint_begins(&self) -> u64 {
        self.files.as_ref().map_or(0, ChunkFiles::checkpoint_begins)
    }

    /// The checkpoint begun at `epoch` is durable and the caller keeps the newest `kept`:
    /// chunk segments nothing has referenced since before the oldest of them began are
    /// deleted (the chunks in them were merged into others); returns how many.
    pub fn checkpoint_durable(&self, epoch: u64, kept: usize) -> usize {
        self.files.as_ref().map_or(0, |f| {
            f.set_checkpoints_kept(kept);
            f.checkpoint_durable(epoch)
        })
    }

    /// Makes the chunks spilled so far durable (a checkpoint references them).
    pub fn sync_chunk_files(&self) -> std::io::Result<()> {
        let mut all = self.files.iter().chain(self.rollup_files.iter().flatten());
        all.try_for_each(ChunkFiles::sync)
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

    /// The oldest sample time appended to this index since it was made (samples that came
    /// with a loaded checkpoint not included: `None` until something is appended).
    pub fn oldest_appended(&self) -> Option<i64> {
        let n = self.oldest.load(Ordering::Relaxed);
        (n != i64::MAX).then_some(n)
    }

    /// Records that samples up to `ts` were accepted (ingest calls this on acknowledging, so
    /// the retention window moves with what was acknowledged, not with the job's progress).
    pub fn observe_newest(&self, ts: i64) {
        self.newest.fetch_max(ts, Ordering::Relaxed);
    }

    /// The oldest timestamp ingest accepts now: the retention window from the newest sample.
    pub fn min_valid_ts(&self) -> i64 {
        self.newest()
            .map_or(i64::MIN, |n| n.saturating_sub(self.retention_ms))
    }

    /// The time from which queries read this index rather than the cold tiers: the retention
    /// window from the newest sample. An index without samples holds nothing, so everything
    /// comes from the cold tiers (`i64::MAX`): data imported straight into them before any
    /// push, or a restart without checkpoints, still answers.
    /// The oldest sample time appended since the last call (`None`: nothing), for the query
    /// result cache: a query's step at `t` reads samples at or before `t` only, so what was
    /// computed for steps before this time still holds. Set after the samples are visible to
    /// queries, so a query evaluated after a call that returned `None` saw everything older.
    pub fn take_touched_from(&self) -> Option<i64> {
        let t = self.touched.swap(i64::MAX, Ordering::AcqRel);
        (t != i64::MAX).then_some(t)
    }

    pub fn complete_from(&self) -> i64 {
        self.newest()
            .map_or(i64::MAX, |n| n.saturating_sub(self.retention_ms))
    }

    /// The oldest timestamp the job's appends keep: the retention window, or the cold
    /// writers' pin on raw samples when that is older (a sample ingest accepted may fall
    /// behind the window, moved by later pushes, before the job applies it).
    fn append_cutoff(&self) -> i64 {
        self.min_valid_ts().min(self.pinned(PinKind::Raw))
    }

    /// Retention window in ms.
    pub fn retention_ms(&self) -> i64 {
        self.retention_ms
    }

    /// Appends samples of series already in the catalog; returns how many were too old.
    pub fn append_samples(&self, samples: &[Sample]) -> usize {
        self.append_inner(samples, None)
    }

    /// Appends as [`HotIndex::append_samples`] does, and sets `before[i]` to the newest sample
    /// the series of `samples[i]` held before it (`None`: a new series, or a sample older than
    /// the retention, which is not appended) ([`HotSink::append_reporting`]).
    pub fn append_reporting(
        &self,
        samples: &[Sample],
        before: &mut Vec<Option<(i64, f64)>>,
    ) -> usize {
        before.clear();
        before.resize(samples.len(), None);
        self.append_inner(samples, Some(before))
    }

    fn append_inner(
        &self,
        samples: &[Sample],
        mut before: Option<&mut Vec<Option<(i64, f64)>>>,
    ) -> usize {
        if let Some(max) = samples.iter().map(|s| s.ts).max() {
            self.newest.fetch_max(max, Ordering::Relaxed);
        }
        let min_ok = self.append_cutoff();
        if let Some(min) = samples.iter().map(|s| s.ts).filter(|&t| t >= min_ok).min() {
            self.oldest.fetch_min(min, Ordering::Relaxed);
        }
        let mut too_old = 0;
        let mut d = Delta::default();
        // By shard (a stable counting sort: a series' samples keep their order), so that each
        // shard's lock is taken once per batch rather than once per sample.
        let mut starts = [0u32; SHARDS + 1];
        for s in samples {
            starts[shard(s.series) + 1] += 1;
        }
        for i in 1..=SHARDS {
            starts[i] += starts[i - 1];
        }
        let mut at = starts;
        let mut order = vec![0u32; samples.len()];
        for (i, s) in samples.iter().enumerate() {
            let sh = shard(s.series);
            order[at[sh] as usize] = i as u32;
            at[sh] += 1;
        }
        for sh in 0..SHARDS {
            let run = &order[starts[sh] as usize..starts[sh + 1] as usize];
            if run.is_empty() {
                continue;
            }
            let files = self.files.as_ref();
            let mut sealed = Vec::new();
            let mut shard = self.shards[sh].write().unwrap_or_else(|e| e.into_inner());
            warm_up(&shard, run.iter().map(|&i| samples[i as usize].series));
            for &i in run {
                let s = &samples[i as usize];
                if s.ts < min_ok {
                    too_old += 1;
                    continue;
                }
                let e = shard.entry(s.series).or_default();
                if let Some(b) = before.as_deref_mut() {
                    b[i as usize] = e.newest_sample();
                }
                let di = e.insert(s.series, s.ts, s.value, files);
                if di.new_chunks > 0 && files.is_some() {
                    sealed.push(s.series);
                }
                d += di;
            }
            drop(shard);
            if !sealed.is_empty() {
                self.unspilled[sh]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(sealed);
            }
        }
        if let Some(min) = samples.iter().map(|s| s.ts).min() {
            self.touched.fetch_min(min, Ordering::AcqRel);
        }
        let st = &self.stats;
        st.samples_appended
            .fetch_add((samples.len() - too_old) as u64, Ordering::Relaxed);
        st.samples_out_of_retention
            .fetch_add(too_old as u64, Ordering::Relaxed);
        st.add(d);
        too_old
    }

    /// Upserts rollups by (series, start).
    ///
    /// By shard, as [`HotIndex::append_samples`] does: each shard's lock is taken once per
    /// batch and its entries are looked up before the loop (a closing window upserts the
    /// rollups of thousands of series at a time; a lock per rollup and one miss after another
    /// were 2.3 % of the CPU at 1 M series).
    pub fn upsert(&self, rollups: &[Rollup]) {
        let mut bytes = 0;
        let mut order: Vec<u32> = (0..rollups.len() as u32).collect();
        // Stable: a series' rollups keep their order.
        order.sort_by_key(|&i| shard(rollups[i as usize].series));
        let mut unspilled = Vec::new();
        for run in order.chunk_by(|&a, &b| {
            shard(rollups[a as usize].series) == shard(rollups[b as usize].series)
        }) {
            let i = shard(rollups[run[0] as usize].series);
            let mut shard = self.shards[i].write().unwrap_or_else(|e| e.into_inner());
            warm_up(&shard, run.iter().map(|&j| rollups[j as usize].series));
            unspilled.clear();
            for &j in run {
                let r = &rollups[j as usize];
                let s = shard.entry(r.series).or_default();
                let (v, files) = if r.width >= 3_600_000 {
                    (&mut s.r1h, self.rollup_files(Resolution::OneHour))
                } else {
                    (&mut s.r1m, self.rollup_files(Resolution::OneMinute))
                };
                bytes += v.upsert(*r, files);
                if files.is_some() && v.in_memory().next().is_some() {
                    unspilled.push(r.series);
                }
            }
            drop(shard);
            if !unspilled.is_empty() {
                self.unspilled[i]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&unspilled);
            }
        }
        self.stats.rollup_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Loads the table slots, entries and heads of `ids` ahead of reads of their samples (see
    /// `warm_up`), taking each shard's lock once per run of ids in it.
    pub fn warm(&self, ids: &[SeriesId]) {
        let mut at = 0;
        while at < ids.len() {
            let sh = shard(ids[at]);
            let n = ids[at..].iter().take_while(|&&id| shard(id) == sh).count();
            let table = self.shards[sh].read().unwrap_or_else(|e| e.into_inner());
            warm_up(&table, ids[at..at + n].iter().copied());
            at += n;
        }
    }

    /// Raw samples of a series in `[start, end]`, sorted by time.
    pub fn samples(&self, id: SeriesId, start: i64, end: i64, out: &mut Vec<(i64, f64)>) {
        let shard = self.shards[shard(id)]
            .read()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(s) = shard.get(&id) {
            s.samples_in(start, end, self.files.as_ref(), None, &mut Vec::new(), out);
        }
    }

    /// [`HotIndex::samples`] of each of `ids` (one vector per id, empty where it has none),
    /// in groups of 512 series whose chunks on disk are read ahead together
    /// ([`ChunkFiles::read_many`]): one positioned read per run of nearby chunks instead of
    /// one per chunk. A chunk that moved between the two passes (spilled or merged) is read
    /// on its own.
    pub fn samples_many(&self, ids: &[SeriesId], start: i64, end: i64) -> Vec<Vec<(i64, f64)>> {
        let mut out = Vec::with_capacity(ids.len());
        self.for_each_samples(ids, start, end, |_, v| out.push(std::mem::take(v)));
        out
    }

    /// Decodes the samples in `[start, end]` of each of `ids` in turn (read ahead as
    /// [`HotIndex::samples_many`] does) into one buffer and hands it to `f` with the series'
    /// index in `ids`: a caller that keeps only some of them (an instant selector's picks)
    /// allocates nothing per series; one that takes the buffer gets a fresh one next.
    pub fn for_each_samples(
        &self,
        ids: &[SeriesId],
        start: i64,
        end: i64,
        mut f: impl FnMut(usize, &mut Vec<(i64, f64)>),
    ) {
        let mut v = Vec::new();
        let mut refs = Vec::new();
        let mut scratch = Vec::new();
        let mut read = Prefetched::default();
        let mut index = 0;
        for group in ids.chunks(READ_GROUP) {
            let pre = match &self.files {
                Some(files) => {
                    refs.clear();
                    for &id in group {
                        let shard = self.shards[shard(id)]
                            .read()
                            .unwrap_or_else(|e| e.into_inner());
                        if let Some(s) = shard.get(&id) {
                            s.disk_refs_in(start, end, &mut refs);
                        }
                    }
                    files.read_many(&mut refs, &mut read);
                    Some(&read)
                }
                None => None,
            };
            for &id in group {
                v.clear();
                {
                    let shard = self.shards[shard(id)]
                        .read()
                        .unwrap_or_else(|e| e.into_inner());
                    if let Some(s) = shard.get(&id) {
                        s.samples_in(start, end, self.files.as_ref(), pre, &mut scratch, &mut v);
                    }
                }
                f(index, &mut v);
                index += 1;
            }
        }
    }

    /// The newest sample of a series in `[start, end]`, decoding at most one chunk.
    pub fn newest_in(&self, id: SeriesId, start: i64, end: i64) -> Option<(i64, f64)> {
        let shard = self.shards[shard(id)]
            .read()
            .unwrap_or_else(|e| e.into_inner());
        shard
            .get(&id)
            .and_then(|s| s.newest_in(start, end, self.files.as_ref()))
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
        v.range(id, start, end, self.rollup_files(res))
    }

    /// Bytes the raw samples take: sealed chunks, compressed heads, out-of-order buffers.
    pub fn raw_bytes(&self) -> i64 {
        let st = &self.stats;
        st.chunk_bytes.load(Ordering::Relaxed) + st.head_bytes.load(Ordering::Relaxed)
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
        let slot = tidemark_dataflows::memory::hash_slot(16);
        // jemalloc's size class of the boxed entry (classes step by 32 bytes from 128 to 256).
        let boxed = std::mem::size_of::<SeriesData>().next_multiple_of(32) as i64;
        let mut m = HotMemory::default();
        for sh in self.shards.iter() {
            let sh = sh.read().unwrap_or_else(|e| e.into_inner());
            m.series_table += sh.capacity() as i64 * slot + sh.len() as i64 * boxed;
            for s in sh.values() {
                m.samples += s.raw_heap_bytes() as i64;
                m.out_of_order += (s.ooo.capacity() * 16) as i64;
                m.rollups += (s.r1m.heap_bytes() + s.r1h.heap_bytes()) as i64;
            }
        }
        m
    }

    /// Drops data older than the retention window, and series left with nothing.
    pub fn gc(&self) {
        let retention = self.min_valid_ts();
        if retention == i64::MIN {
            return;
        }
        let cutoff = retention.min(self.pinned(PinKind::Raw));
        let (cut_1m, cut_1h) = (
            self.minute_rollups_from()
                .max(retention)
                .min(self.pinned(PinKind::Minute)),
            retention.min(self.pinned(PinKind::Hour)),
        );
        let mut removed = Vec::new();
        let mut d = Delta::default();
        let mut drollups = 0i64;
        for sh in self.shards.iter() {
            let mut sh = sh.write().unwrap_or_else(|e| e.into_inner());
            sh.retain(|id, s| {
                let dropped = s.sealed.drop_before(cutoff);
                for c in &dropped {
                    d.chunk_bytes -= c.size() as i64;
                    if c.disk_ref().is_some() {
                        d.chunk_disk_bytes -= c.size() as i64;
                    }
                    d.sealed_samples -= i64::from(c.count);
                }
                release(self.files.as_ref(), dropped);
                let before = s.head_bytes();
                let n = s.ooo.partition_point(|p| p.0 < cutoff);
                if n > 0 {
                    s.ooo.vec_mut().drain(..n);
                    s.ooo.tidy();
                    d.head_samples -= n as i64;
                }
                if s.held().is_some_and(|(t, _)| t < cutoff) {
                    s.held_ts = NO_SAMPLE;
                    d.head_samples -= 1;
                }
                if !s.head.is_empty() && s.head.first_ts() < cutoff {
                    // Only a series that stopped has a head this old: keep what is left.
                    let mut samples = std::mem::take(&mut s.head).samples();
                    let n = samples.partition_point(|p| p.0 < cutoff);
                    samples.drain(..n);
                    d.head_samples -= n as i64;
                    s.head = Appender::from_samples(&samples);
                }
                d.head_bytes += s.head_bytes() - before;
                drollups += s.r1m.gc(cut_1m) + s.r1h.gc(cut_1h);
                let keep = !(s.sealed.is_empty()
                    && s.head.is_empty()
                    && s.ooo.is_empty()
                    && s.held().is_none()
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
        self.stats.add(d);
        self.stats
            .rollup_bytes
            .fetch_add(drollups, Ordering::Relaxed);
        // Every chunk or block in such a segment was dropped above.
        for (f, cut) in [
            self.files.as_ref(),
            self.rollup_files[0].as_ref(),
            self.rollup_files[1].as_ref(),
        ]
        .into_iter()
        .zip([cutoff, cut_1m, cut_1h])
        {
            if let Some(f) = f {
                f.remove_before(cut);
            }
        }
    }
}

/// Checkpoint layout of one series (see [`snap`]): its id, canonical labels, chunks, head,
/// out-of-order buffer and rollups.
impl SeriesData {
    fn snap(&self, e: &mut snap::Enc<'_>) {
        e.len(self.sealed.len());
        for c in self.sealed.iter() {
            c.snap(e);
        }
        self.head.snap(e);
        // The held sample is written as the newest of the out-of-order samples (it is newer
        // than all of them), so the layout stays; `unsnap` holds it again.
        let held = self.held();
        e.len(self.ooo.len() + usize::from(held.is_some()));
        for &(t, v) in self.ooo.iter().chain(held.iter()) {
            e.i64(t);
            e.f64(v);
        }
        self.r1m.snap(e);
        self.r1h.snap(e);
    }

    fn unsnap(d: &mut snap::Dec<'_>) -> Result<SeriesData, snap::DecError> {
        let n = d.len(27, "chunks")?;
        let mut chunks = Vec::with_capacity(n);
        for _ in 0..n {
            chunks.push(Chunk::unsnap(d)?);
        }
        let mut sealed = Sealed::default();
        sealed.set_all(chunks);
        let head = Appender::unsnap(d)?;
        let n = d.len(16, "out-of-order samples")?;
        let mut ooo = Vec::with_capacity(n);
        for _ in 0..n {
            ooo.push((d.i64("sample time")?, d.f64("sample value")?));
        }
        let mut s = SeriesData {
            sealed,
            head,
            ooo: ooo.into(),
            r1m: RollupSeries::unsnap(d)?,
            r1h: RollupSeries::unsnap(d)?,
            ..SeriesData::default()
        };
        // A sample that was held when written is held again.
        let newest_in = s
            .sealed
            .max_ts()
            .into_iter()
            .chain((!s.head.is_empty()).then(|| s.head.last_ts()))
            .max()
            .unwrap_or(NO_SAMPLE);
        if let Some(&(t, v)) = s.ooo.last().filter(|p| p.0 > newest_in) {
            s.ooo.vec_mut().pop();
            s.ooo = std::mem::take(&mut s.ooo).into_vec().into();
            s.hold(t, v);
        }
        Ok(s)
    }

    /// The counters this series adds to [`HotStats`].
    fn counted(&self) -> (Delta, i64) {
        let d = Delta {
            chunk_bytes: self.sealed.iter().map(|c| c.size() as i64).sum(),
            chunk_disk_bytes: self
                .sealed
                .iter()
                .filter(|c| c.disk_ref().is_some())
                .map(|c| c.size() as i64)
                .sum(),
            head_bytes: self.head_bytes(),
            head_samples: (self.head.len() + self.ooo.len() + usize::from(self.held().is_some()))
                as i64,
            sealed_samples: self.sealed.iter().map(|c| i64::from(c.count)).sum(),
            ..Delta::default()
        };
        (d, self.r1m.bytes() + self.r1h.bytes())
    }
}

/// Checkpoints: the index written shard by shard and read back series by series.
impl HotIndex {
    /// Number of shards (units of [`HotIndex::snap_shard`]).
    pub const SHARDS: usize = SHARDS;

    /// Appends every series of shard `i` to `out`, each as a length-prefixed record, holding
    /// the shard's read lock while it copies (the job's appends to it wait that long);
    /// returns how many series it wrote. Series without labels in the catalog are left out
    /// (none are expected: the job registers a series before it sends its samples).
    pub fn snap_shard(&self, i: usize, out: &mut Vec<u8>) -> usize {
        let sh = self.shards[i].read().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        for (&id, s) in sh.iter() {
            let Some(labels) = self.catalog.labels(id) else {
                continue;
            };
            let at = out.len();
            out.extend_from_slice(&[0; 4]);
            let mut e = snap::Enc(out);
            e.u64(id);
            e.bytes(labels.canonical());
            s.snap(&mut e);
            let len = u32::try_from(out.len() - at - 4).expect("a series record under 4 GiB");
            out[at..at + 4].copy_from_slice(&len.to_le_bytes());
            n += 1;
        }
        n
    }

    /// Adds one series record written by [`HotIndex::snap_shard`] (into an index being
    /// loaded: an existing series of the same id is replaced).
    /// `version`: the checkpoint's layout version ([`snap::VERSION`] for this build's).
    pub fn unsnap_series(&self, record: &[u8], version: u32) -> Result<(), snap::DecError> {
        let mut d = snap::Dec::with_version(record, version);
        let id = d.u64("series id")?;
        let canon = d.bytes("series labels")?;
        let mut data = SeriesData::unsnap(&mut d)?;
        if !d.is_empty() {
            return Err(d.fail("series record", "bytes after the record"));
        }
        // Chunks on disk: their segments are kept; a chunk whose segment is gone (retention
        // deleted it after this checkpoint was written) is older than what the index keeps.
        let mut chunks = data.sealed.take_all();
        chunks.retain(|c| match c.disk_ref() {
            None => true,
            Some(r) => {
                let there = self.files.as_ref().is_some_and(|f| f.note(r, c.max_ts));
                if !there {
                    self.stats.chunks_missing.fetch_add(1, Ordering::Relaxed);
                }
                there
            }
        });
        data.sealed.set_all(chunks);
        for (r, files) in [
            (&mut data.r1m, &self.rollup_files[0]),
            (&mut data.r1h, &self.rollup_files[1]),
        ] {
            r.retain_on_disk(|d, end| {
                let there = files.as_ref().is_some_and(|f| f.note(d, end));
                if !there {
                    self.stats.chunks_missing.fetch_add(1, Ordering::Relaxed);
                }
                there
            });
        }
        let spill = !data.sealed.in_memory().is_empty()
            || data.r1m.in_memory().next().is_some()
            || data.r1h.in_memory().next().is_some();
        self.catalog.register_canonical(id, canon);
        let (delta, rollup_bytes) = data.counted();
        if let Some(newest) = data
            .sealed
            .max_ts()
            .into_iter()
            .chain((!data.head.is_empty()).then(|| data.head.last_ts()))
            .chain(data.ooo.last().map(|p| p.0))
            .max()
        {
            self.newest.fetch_max(newest, Ordering::Relaxed);
        }
        self.shards[shard(id)]
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Box::new(data));
        if spill && self.files.is_some() {
            self.unspilled[shard(id)]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(id);
        }
        self.stats.add(delta);
        self.stats
            .rollup_bytes
            .fetch_add(rollup_bytes, Ordering::Relaxed);
        Ok(())
    }

    /// A time in `[start, end)` the series may have a raw sample at (a chunk spanning the
    /// range counts: nothing is decoded), for rebuilding the cold writers' open partitions.
    pub fn any_sample_in(&self, id: SeriesId, start: i64, end: i64) -> Option<i64> {
        let shard = self.shards[shard(id)]
            .read()
            .unwrap_or_else(|e| e.into_inner());
        shard.get(&id)?.any_sample_in(start, end)
    }

    /// The series `owns` names that may have rows of `kind` in `[start, end)` (decided as
    /// [`HotIndex::any_sample_in`] and [`HotIndex::any_rollup_in`] decide), unordered: what a
    /// cold writer writes when it seals that partition. One read lock per shard.
    pub fn series_in(
        &self,
        kind: PinKind,
        start: i64,
        end: i64,
        owns: &dyn Fn(SeriesId) -> bool,
    ) -> Vec<SeriesId> {
        let mut out = Vec::new();
        for sh in &self.shards {
            let sh = sh.read().unwrap_or_else(|e| e.into_inner());
            out.extend(
                sh.iter()
                    .filter(|(&id, _)| owns(id))
                    .filter_map(|(&id, s)| {
                        let found = match kind {
                            PinKind::Raw => s.any_sample_in(start, end),
                            PinKind::Minute => s.r1m.any_in(start, end),
                            PinKind::Hour => s.r1h.any_in(start, end),
                        };
                        found.map(|_| id)
                    }),
            );
        }
        out
    }

    /// As [`HotIndex::any_sample_in`], for rollups of a resolution (by window start).
    pub fn any_rollup_in(
        &self,
        id: SeriesId,
        res: Resolution,
        start: i64,
        end: i64,
    ) -> Option<i64> {
        let shard = self.shards[shard(id)]
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let s = shard.get(&id)?;
        match res {
            Resolution::OneMinute => s.r1m.any_in(start, end),
            Resolution::OneHour => s.r1h.any_in(start, end),
        }
    }

    /// The series ids of shard `i`.
    pub fn shard_ids(&self, i: usize) -> Vec<SeriesId> {
        let sh = self.shards[i].read().unwrap_or_else(|e| e.into_inner());
        sh.keys().copied().collect()
    }
}

impl HotSink for HotIndex {
    fn append(&self, samples: &[Sample]) {
        self.append_samples(samples);
    }
    fn append_reporting(&self, samples: &[Sample], before: &mut Vec<Option<(i64, f64)>>) {
        HotIndex::append_reporting(self, samples, before);
    }
    fn upsert_rollups(&self, rollups: &[Rollup]) {
        self.upsert(rollups);
    }
    fn warm(&self, series: &[u64]) {
        HotIndex::warm(self, series);
    }
}

/// `hot` with the chunk files in `dir`; when they cannot be opened, `hot` as it is (sealed
/// chunks stay in memory), with a warning that says so and what to check.
pub fn with_chunk_files_or_memory(hot: HotIndex, dir: &std::path::Path) -> HotIndex {
    match chunkfile::ChunkFiles::open(dir) {
        Ok(f) => hot.with_chunk_files(f),
        Err(e) => {
            tracing::warn!(
                "cannot open {}: {e}; sealed chunks stay in memory, which grows with the data (check that the data dir is writable)",
                dir.display()
            );
            hot
        }
    }
}

/// Bytes of resident memory by component (`tidemark_memory_bytes{component}`): the hot
/// index's parts (walked), the operators' state (kept by the operators,
/// [`tidemark_dataflows::memory`]), and `other`: the process's resident set minus all of
/// those (allocator slack, buffers in flight, code, the runtime).
///
/// Walking the index takes a few milliseconds per 100,000 series, so the walked figures are
/// kept for [`crate::ops::MEMORY_WALK_EVERY`] between scrapes while the series count stays the same (a
/// load generator polls `/metrics` often).
pub fn render_memory(hot: &HotIndex, w: &mut crate::ops::TextWriter) {
    use crate::ops::{allocator_slack, rss_bytes, MEMORY_WALK_EVERY};
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;
    use tidemark_dataflows::memory::Component;
    type Walked = (Instant, usize, (i64, i64), HotMemory);
    static LAST: OnceLock<Mutex<Option<Walked>>> = OnceLock::new();
    let mut last = LAST
        .get_or_init(|| Mutex::new(None))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let series = hot.catalog.len();
    let fresh = last
        .as_ref()
        .is_some_and(|(at, n, _, _)| *n == series && at.elapsed() < MEMORY_WALK_EVERY);
    if !fresh {
        *last = Some((Instant::now(), series, hot.catalog.memory(), hot.memory()));
    }
    let (_, _, (labels, postings), h) = last.expect("walked above");
    drop(last);
    let mut parts: Vec<(String, i64)> = vec![
        ("catalog_labels".into(), labels),
        ("catalog_postings".into(), postings),
        ("hot_series_table".into(), h.series_table),
        ("hot_samples".into(), h.samples),
        ("hot_out_of_order".into(), h.out_of_order),
        ("hot_rollups".into(), h.rollups),
    ];
    parts.extend(
        Component::ALL
            .iter()
            .map(|c| (c.name().to_string(), c.bytes())),
    );
    let accounted: i64 = parts.iter().map(|p| p.1).sum();
    let slack = allocator_slack();
    if let Some(slack) = slack {
        parts.push(("allocator".into(), slack));
    }
    parts.push((
        "other".into(),
        (rss_bytes() as i64 - accounted - slack.unwrap_or(0)).max(0),
    ));
    let labels: Vec<String> = parts
        .iter()
        .map(|(c, _)| crate::ops::labels(&[("component", c)]))
        .collect();
    let samples: Vec<(&str, f64)> = labels
        .iter()
        .zip(&parts)
        .map(|(l, p)| (l.as_str(), p.1 as f64))
        .collect();
    w.family(
        "tidemark_memory_bytes",
        "gauge",
        "Resident memory by component (estimates from lengths and capacities; other = resident set minus the rest).",
        &samples,
    );
}

/// `/metrics` families of the hot index's chunk directory (none without one).
pub fn render_chunk_files(hot: &HotIndex, w: &mut crate::ops::TextWriter) {
    if hot.chunk_files().is_none() {
        return;
    }
    w.family(
        "tidemark_hot_chunk_disk_bytes",
        "gauge",
        "Encoded bytes of sealed chunks spilled to the chunk directory (referenced by the index).",
        &[(
            "",
            hot.stats.chunk_disk_bytes.load(Ordering::Relaxed) as f64,
        )],
    );
    let files: Vec<(&str, &chunkfile::ChunkFiles)> = hot.all_chunk_files().collect();
    let per_kind = |f: fn(&chunkfile::ChunkFiles) -> f64| -> Vec<(String, f64)> {
        files
            .iter()
            .map(|(k, c)| (crate::ops::labels(&[("kind", k)]), f(c)))
            .collect()
    };
    let bytes = per_kind(|c| c.file_bytes.load(Ordering::Relaxed) as f64);
    w.family(
        "tidemark_hot_chunk_files_bytes",
        "gauge",
        "Bytes of the chunk directory's segment files, by kind (raw chunks, 1m and 1h rollup blocks; with blocks rewritten or dropped since, until their segment expires).",
        &bytes.iter().map(|(l, v)| (l.as_str(), *v)).collect::<Vec<_>>(),
    );
    let sum: f64 = per_kind(|c| c.read_errors.load(Ordering::Relaxed) as f64)
        .iter()
        .map(|p| p.1)
        .sum();
    w.family(
        "tidemark_hot_chunks_compacted_total",
        "counter",
        "Chunks on disk merged into larger ones, by kind: raw chunks once older than 2 hours, 1m and 1h rollup blocks in runs (a series keeps one reference in memory per chunk on disk).",
        &[
            (
                "kind=\"raw\"",
                hot.stats.chunks_compacted.load(Ordering::Relaxed) as f64,
            ),
            (
                "kind=\"1m\"",
                hot.stats.rollup_blocks_compacted[0].load(Ordering::Relaxed) as f64,
            ),
            (
                "kind=\"1h\"",
                hot.stats.rollup_blocks_compacted[1].load(Ordering::Relaxed) as f64,
            ),
        ],
    );
    w.family(
        "tidemark_hot_chunk_read_errors_total",
        "counter",
        "Sealed chunks and rollup blocks that could not be read back from the chunk directory (missing or damaged segment); they were left out of the read.",
        &[("", sum)],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new index over the same chunk directory, loaded from `h`'s checkpoint records (as a
    /// restarted process loads them).
    fn reopened(h: &HotIndex, dir: &std::path::Path) -> HotIndex {
        h.sync_chunk_files().unwrap();
        let mut records = Vec::new();
        for i in 0..HotIndex::SHARDS {
            h.snap_shard(i, &mut records);
        }
        let back = HotIndex::new(i64::MAX / 4).with_chunk_files(ChunkFiles::open(dir).unwrap());
        let mut at = 0;
        while at < records.len() {
            let len = u32::from_le_bytes(records[at..at + 4].try_into().unwrap()) as usize;
            back.unsnap_series(&records[at + 4..at + 4 + len], snap::VERSION)
                .unwrap();
            at += 4 + len;
        }
        back
    }

    #[test]
    fn rollups_upserted_by_shard_keep_each_series_order_so_the_last_wins() {
        let h = HotIndex::new(i64::MAX / 4);
        let r = |series, start, v: f64| {
            Rollup::from_sorted(series, start, 60_000, &[(start + 1, v)]).unwrap()
        };
        // Ids in different shards (the shard is the high half), one series twice.
        let (a, b) = (3u64 << 32, 5u64 << 32 | 1);
        h.upsert(&[r(a, 0, 1.0), r(b, 0, 2.0), r(a, 0, 7.0), r(a, 60_000, 3.0)]);
        let sums = |id| -> Vec<f64> {
            h.rollups(id, Resolution::OneMinute, 0, i64::MAX)
                .iter()
                .map(|r| r.sum)
                .collect()
        };
        assert_eq!(sums(a), vec![7.0, 3.0]);
        assert_eq!(sums(b), vec![2.0]);
    }

    #[test]
    fn an_append_reports_each_series_newest_sample_before_each_of_its_samples() {
        let h = HotIndex::new(3_600_000);
        let s = |series, ts, value| Sample { series, ts, value };
        let mut before = Vec::new();
        // A new series, then its second sample in the same batch; another series between.
        h.append_reporting(
            &[s(1, 10_000, 1.0), s(2, 10_000, 5.0), s(1, 20_000, 2.0)],
            &mut before,
        );
        assert_eq!(before, vec![None, None, Some((10_000, 1.0))]);
        // Out of order: the newest stays the newest; older than the retention: not appended.
        h.append_reporting(
            &[
                s(1, 15_000, 9.0),
                s(1, 30_000, 3.0),
                s(2, 20_000 - 3_600_000 * 2, 0.0),
            ],
            &mut before,
        );
        assert_eq!(before, vec![Some((20_000, 2.0)), Some((20_000, 2.0)), None]);
        let mut got = Vec::new();
        h.samples(1, 0, i64::MAX, &mut got);
        assert_eq!(
            got,
            vec![(10_000, 1.0), (15_000, 9.0), (20_000, 2.0), (30_000, 3.0)]
        );
    }

    /// Series, with values that exercise every codec, as (series, ts, value) in send order.
    fn workload(series: u64, points: i64) -> Vec<Sample> {
        let mut out = Vec::new();
        for i in 0..points {
            for id in 1..=series {
                let value = match id % 3 {
                    0 => (i * 7 + id as i64) as f64 / 1000.0,
                    1 => ((i as f64) * 0.37 + id as f64).sin(),
                    _ => (i * 4096) as f64,
                };
                out.push(Sample {
                    series: id,
                    ts: 1_000_000 + i * 10_000,
                    value,
                });
            }
        }
        out
    }

    /// The last write of each (series, time), computed apart from the index.
    fn oracle(
        sent: &[Sample],
    ) -> std::collections::BTreeMap<u64, std::collections::BTreeMap<i64, f64>> {
        let mut m: std::collections::BTreeMap<u64, std::collections::BTreeMap<i64, f64>> =
            Default::default();
        for s in sent {
            m.entry(s.series).or_default().insert(s.ts, s.value);
        }
        m
    }

    /// Every series holds what was sent, read one by one and read ahead together
    /// ([`HotIndex::samples_many`]), whole and in a middle range.
    fn assert_holds(h: &HotIndex, sent: &[Sample]) {
        let all = oracle(sent);
        let ids: Vec<SeriesId> = all.keys().copied().collect();
        let (lo, hi) = (1_500_000, 40_000_000);
        let many = h.samples_many(&ids, i64::MIN, i64::MAX);
        let part = h.samples_many(&ids, lo, hi);
        for (i, (id, want)) in all.into_iter().enumerate() {
            let mut got = Vec::new();
            h.samples(id, i64::MIN, i64::MAX, &mut got);
            let want: Vec<(i64, f64)> = want.into_iter().collect();
            assert_eq!(got, want, "series {id}");
            assert_eq!(many[i], want, "series {id} read ahead");
            let want_part: Vec<(i64, f64)> = want
                .into_iter()
                .filter(|p| p.0 >= lo && p.0 <= hi)
                .collect();
            assert_eq!(part[i], want_part, "series {id} in [{lo}, {hi}] read ahead");
        }
    }

    #[test]
    fn sealed_chunks_spill_to_disk_merge_late_samples_and_reload_from_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let h = HotIndex::new(i64::MAX / 4).with_chunk_files(ChunkFiles::open(dir.path()).unwrap());
        for id in 1..=20u64 {
            h.catalog
                .register_canonical(id, format!("m{id}").as_bytes());
        }
        let mut sent = workload(20, 600);
        h.append_samples(&sent);
        let before = h.memory().samples;
        let moved = h.spill();
        // 600 points, 599 committed (one held): a first chunk of `head_cut` (61 to 80 samples
        // for these ids), then chunks of 120.
        let chunks: usize = (1..=20u64)
            .map(|id| 1 + (599 - head_cut(id, true)) / CHUNK_SAMPLES)
            .sum();
        assert_eq!(moved, chunks);
        assert_eq!(h.spill(), 0, "nothing new to spill");
        let after = h.memory().samples;
        let disk = h.stats.chunk_disk_bytes.load(Ordering::Relaxed);
        assert!(
            disk > 0 && before - after >= disk,
            "{before} -> {after}, {disk} on disk"
        );
        assert_eq!(disk, h.stats.chunk_bytes.load(Ordering::Relaxed));
        assert_holds(&h, &sent);

        // Late samples into spilled chunks: each touched chunk is read back, merged and
        // re-encoded in memory, then spilled again.
        let late: Vec<Sample> = (1..=20u64)
            .flat_map(|id| {
                (0..40).map(move |i| Sample {
                    series: id,
                    ts: 1_000_000 + i * 100_000 + 5_000,
                    value: -(i as f64),
                })
            })
            .collect();
        h.append_samples(&late);
        sent.extend_from_slice(&late);
        assert_holds(&h, &sent);
        assert!(h.spill() > 0);
        assert_holds(&h, &sent);
        assert_eq!(
            h.stats.chunk_disk_bytes.load(Ordering::Relaxed),
            h.stats.chunk_bytes.load(Ordering::Relaxed)
        );

        // A checkpoint references the chunks; a new process loads it over the same directory.
        let back = reopened(&h, dir.path());
        assert_eq!(back.chunk_files().unwrap().remove_unreferenced(), 0);
        assert_holds(&back, &sent);
        assert_eq!(back.stats.chunks_missing.load(Ordering::Relaxed), 0);
        assert_eq!(
            back.chunk_files()
                .unwrap()
                .read_errors
                .load(Ordering::Relaxed),
            0
        );
    }

    #[test]
    fn chunks_older_than_two_hours_merge_into_larger_ones_on_disk_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        // Small segments (a few spills each), so that segments empty out as their chunks are
        // merged, and merged chunks share no segment with fresh ones.
        let files = ChunkFiles::open(dir.path())
            .unwrap()
            .with_segment_bytes(4_000);
        let h = HotIndex::new(i64::MAX / 4).with_chunk_files(files);
        for id in 1..=3u64 {
            h.catalog
                .register_canonical(id, format!("m{id}").as_bytes());
        }
        // 6 hours at 10 s, an hour at a time, each hour spilled (as `up` spills every few
        // seconds: what matters is that compaction sees the chunks as they age).
        let mut sent = workload(3, 2160);
        for hour in sent.chunks(3 * 360) {
            h.append_samples(hour);
            h.spill();
        }
        assert_holds(&h, &sent);
        let newest = h.newest().unwrap();
        let horizon = newest - COMPACT_AFTER_MS;
        let chunks = |h: &HotIndex, id: u64| -> Vec<(i64, i64, u16, bool)> {
            let sh = h.shards[shard(id)].read().unwrap();
            let s = sh.get(&id).unwrap();
            s.sealed
                .iter()
                .map(|c| (c.min_ts, c.max_ts, c.count, c.disk_ref().is_some()))
                .collect()
        };
        for id in 1..=3u64 {
            let cs = chunks(&h, id);
            // 2,159 samples sealed or in the head: 18 chunks of up to 120 without compaction.
            let merged: Vec<_> = cs
                .iter()
                .filter(|c| usize::from(c.2) > CHUNK_SAMPLES)
                .collect();
            assert_eq!(merged.len(), 1, "series {id}: {cs:?}");
            let m = merged[0];
            assert!(
                (sealed::COMPACT_MIN..=sealed::COMPACT_MAX).contains(&usize::from(m.2)) && m.3,
                "series {id}: the merged chunk is on disk after the spill: {m:?}"
            );
            assert_eq!(cs[0], *m, "series {id}: the oldest chunks merged");
            assert!(m.1 < horizon);
            // Nothing newer than the horizon was touched.
            for c in cs.iter().filter(|c| c.1 >= horizon) {
                assert!(usize::from(c.2) <= CHUNK_SAMPLES, "{c:?}");
            }
            assert!(cs.len() < 12, "series {id}: {} chunks", cs.len());
        }
        let compacted = h.stats.chunks_compacted.load(Ordering::Relaxed);
        assert!(compacted >= 3 * 7, "{compacted} chunks compacted");
        assert_eq!(
            h.stats.chunk_disk_bytes.load(Ordering::Relaxed),
            h.stats.chunk_bytes.load(Ordering::Relaxed),
            "every chunk, merged ones included, is on disk and counted once"
        );
        let sealed: i64 = (1..=3u64)
            .map(|id| chunks(&h, id).iter().map(|c| i64::from(c.2)).sum::<i64>())
            .sum();
        assert_eq!(sealed, h.stats.sealed_samples.load(Ordering::Relaxed));

        // A late sample inside a merged chunk is merged into it (read back from disk).
        let late: Vec<Sample> = (1..=3u64)
            .map(|id| Sample {
                series: id,
                ts: 1_000_000 + 100 * 10_000 + 1,
                value: 42.0,
            })
            .collect();
        h.append_samples(&late);
        sent.extend_from_slice(&late);
        for id in 1..=3u64 {
            let mut sh = h.shards[shard(id)].write().unwrap();
            let d = sh.get_mut(&id).unwrap().merge_ooo(h.files.as_ref());
            h.stats.add(d);
            h.unspilled[shard(id)].lock().unwrap().push(id);
        }
        h.spill();
        assert_holds(&h, &sent);

        // The chunk files' count of referenced bytes per segment is what the series hold.
        let f = h.chunk_files().unwrap();
        let mut referenced = std::collections::BTreeMap::<u32, i64>::new();
        for id in 1..=3u64 {
            let sh = h.shards[shard(id)].read().unwrap();
            for c in sh.get(&id).unwrap().sealed.iter() {
                let r = c.disk_ref().unwrap();
                *referenced.entry(r.seg).or_default() += i64::from(r.len);
            }
        }
        // Merged chunks are written to segments of their own.
        let mut fresh_segs = std::collections::BTreeSet::new();
        let mut merged_segs = std::collections::BTreeSet::new();
        for id in 1..=3u64 {
            let sh = h.shards[shard(id)].read().unwrap();
            for c in sh.get(&id).unwrap().sealed.iter() {
                let set = if is_merged(&c) {
                    &mut merged_segs
                } else {
                    &mut fresh_segs
                };
                set.insert(c.disk_ref().unwrap().seg);
            }
        }
        assert!(!merged_segs.is_empty() && fresh_segs.is_disjoint(&merged_segs));
        let live = f.live_bytes();
        for (seg, &bytes) in &live {
            assert_eq!(
                bytes,
                referenced.get(seg).copied().unwrap_or(0),
                "segment {seg}"
            );
        }
        // Segments whose chunks were all merged go after two checkpoints that began after
        // that (the caller keeps two), and nothing referenced goes with them.
        let empty = live.values().filter(|&&b| b == 0).count();
        assert!(empty >= 2, "{live:?}");
        let segments = f.segment_count();
        let e1 = h.checkpoint_begins();
        assert_eq!(h.checkpoint_durable(e1, 2), 0);
        let e2 = h.checkpoint_begins();
        assert_eq!(h.checkpoint_durable(e2, 2), empty);
        assert_eq!(f.segment_count(), segments - empty);
        assert_holds(&h, &sent);
        assert_eq!(f.read_errors.load(Ordering::Relaxed), 0);

        // A checkpoint holds the merged chunks' references; a new process reads them back.
        let back = reopened(&h, dir.path());
        assert_eq!(back.chunk_files().unwrap().remove_unreferenced(), 0);
        assert_holds(&back, &sent);
        assert_eq!(back.stats.chunks_missing.load(Ordering::Relaxed), 0);
        for id in 1..=3u64 {
            assert_eq!(chunks(&back, id), chunks(&h, id));
        }
    }

    #[test]
    fn a_series_entry_fits_jemallocs_160_byte_class() {
        // Boxed per series: jemalloc's classes step by 32 bytes here (160, 192, 224): at 161
        // bytes and up it takes 192 (32 bytes a series, 32 MB at 1 M series). A rollup
        // series' references and tail in one buffer, and the head's bit stream in a boxed
        // slice, took it from 216 to 176; the head's count and codec state in its bit
        // writer's spare bytes, and its first time read from its bytes, to 160.
        assert!(
            std::mem::size_of::<SeriesData>() <= 160,
            "{}",
            std::mem::size_of::<SeriesData>()
        );
    }

    #[test]
    fn rollup_blocks_spill_to_disk_take_corrections_and_reload_from_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let h = HotIndex::new(i64::MAX / 4).with_chunk_files(ChunkFiles::open(dir.path()).unwrap());
        let roll = |id: u64, start: i64, width: i64, v: f64| {
            let pts = [(start, v), (start + width / 2, v * 1.5 + 0.25)];
            Rollup::from_sorted(id, start, width, &pts).unwrap()
        };
        let mut want: std::collections::BTreeMap<(u64, i64, i64), Rollup> = Default::default();
        for id in 1..=5u64 {
            h.catalog
                .register_canonical(id, format!("m{id}").as_bytes());
            let mut rows = Vec::new();
            for m in 0..300 {
                rows.push(roll(id, m * 60_000, 60_000, (m % 23) as f64 * 0.5));
            }
            for hr in 0..5 {
                rows.push(roll(id, hr * 3_600_000, 3_600_000, hr as f64 + 0.125));
            }
            for r in &rows {
                want.insert((id, r.width, r.start), *r);
            }
            h.upsert(&rows);
        }
        let check = |h: &HotIndex, want: &std::collections::BTreeMap<(u64, i64, i64), Rollup>| {
            for id in 1..=5u64 {
                for (res, width) in [
                    (Resolution::OneMinute, 60_000),
                    (Resolution::OneHour, 3_600_000),
                ] {
                    let got = h.rollups(id, res, i64::MIN, i64::MAX);
                    let exp: Vec<Rollup> = want
                        .range((id, width, i64::MIN)..=(id, width, i64::MAX))
                        .map(|(_, r)| *r)
                        .collect();
                    assert_eq!(got, exp, "series {id} width {width}");
                }
            }
        };
        check(&h, &want);
        let (mem, stat) = (h.memory().rollups, h.rollup_bytes());
        assert!(h.spill() > 0);
        assert_eq!(h.spill(), 0, "nothing new to spill");
        let (mem2, stat2) = (h.memory().rollups, h.rollup_bytes());
        // The blocks left memory: what stays is their references and the tails.
        assert!(mem2 * 3 < mem, "{mem} -> {mem2} bytes");
        assert!(stat2 < stat, "{stat} -> {stat2}");
        check(&h, &want);
        // Each kind in its own files: nothing went to the raw chunks' segments.
        let bytes: Vec<(&str, u64)> = h
            .all_chunk_files()
            .map(|(k, f)| (k, f.file_bytes.load(Ordering::Relaxed)))
            .collect();
        assert_eq!(bytes[0], ("raw", 0));
        assert!(
            bytes[1].0 == "1m" && bytes[1].1 > 0 && bytes[2].0 == "1h" && bytes[2].1 > 0,
            "{bytes:?}"
        );
        assert!(dir.path().join("1m").is_dir() && dir.path().join("1h").is_dir());

        // Corrections to windows in blocks on disk: read back, rewritten, spilled again.
        let fix: Vec<Rollup> = (1..=5u64)
            .flat_map(|id| {
                [
                    roll(id, 10 * 60_000, 60_000, -1.0),
                    roll(id, 3_600_000, 3_600_000, -2.0),
                ]
            })
            .collect();
        h.upsert(&fix);
        for r in &fix {
            want.insert((r.series, r.width, r.start), *r);
        }
        check(&h, &want);
        assert!(h.spill() > 0);
        check(&h, &want);

        // A checkpoint references the blocks; a new process loads it over the same directory.
        let back = reopened(&h, dir.path());
        assert_eq!(back.remove_unreferenced_chunks(), 0);
        check(&back, &want);
        assert_eq!(back.stats.chunks_missing.load(Ordering::Relaxed), 0);
        let errors = back
            .chunk_files()
            .unwrap()
            .read_errors
            .load(Ordering::Relaxed);
        assert_eq!(errors, 0);
    }

    #[test]
    fn retention_deletes_chunk_segments_whose_chunks_all_expired() {
        let dir = tempfile::tempdir().unwrap();
        let h = HotIndex::new(2_000_000).with_chunk_files(ChunkFiles::open(dir.path()).unwrap());
        h.catalog.register_canonical(1, b"m");
        let first = workload(1, 240);
        h.append_samples(&first);
        // 239 committed: a first chunk of 61 (`head_cut` of series 1), one of 120.
        assert_eq!(h.spill(), 2);
        // Segments are closed only when full or by a restart: a new process's chunks go to a
        // new segment, so the old one can expire.
        let files = h.chunk_files().unwrap();
        assert_eq!(files.segment_count(), 1);
        let later: Vec<Sample> = (0..500)
            .map(|i| Sample {
                series: 1,
                ts: 10_000_000 + i * 10_000,
                value: 1.0,
            })
            .collect();
        let h2 = HotIndex::new(2_000_000).with_chunk_files(ChunkFiles::open(dir.path()).unwrap());
        let mut recs = Vec::new();
        for i in 0..HotIndex::SHARDS {
            h.snap_shard(i, &mut recs);
        }
        h.sync_chunk_files().unwrap();
        drop(h);
        h2.unsnap_series(&recs[4..], snap::VERSION).unwrap();
        h2.append_samples(&later);
        h2.spill();
        assert_eq!(h2.chunk_files().unwrap().segment_count(), 2);
        h2.gc();
        // The first segment's chunks ended before the window: it is gone, its chunks too.
        assert_eq!(h2.chunk_files().unwrap().segment_count(), 1);
        let mut out = Vec::new();
        h2.samples(1, i64::MIN, i64::MAX, &mut out);
        // Whole chunks go: the newer workload's first chunk began with the older one's head
        // (from 3,200,000, in the new segment: the older one's chunks were 61 and 120
        // samples, `head_cut`), and stays.
        assert_eq!(out[0].0, 3_200_000);
        assert!(out.iter().all(|p| p.0 < 3_400_000 || p.0 >= 10_000_000));
        assert_eq!(out.last().unwrap().0, 10_000_000 + 499 * 10_000);
        assert_eq!(
            h2.chunk_files()
                .unwrap()
                .read_errors
                .load(Ordering::Relaxed),
            0
        );
    }

    #[test]
    fn a_sample_the_head_holds_again_changes_nothing_and_a_new_value_still_wins() {
        let h = HotIndex::new(i64::MAX / 4);
        let id = 7;
        let s = |ts: i64, value: f64| Sample {
            series: id,
            ts,
            value,
        };
        let first: Vec<Sample> = (0..50).map(|i| s(i * 10, i as f64 * 1.5)).collect();
        h.append_samples(&first);
        let before = h.memory();
        // A replay re-sends what the index has: the head is neither buffered nor re-encoded.
        h.append_samples(&first[10..45]);
        let after = h.memory();
        assert_eq!(h.stats.samples_duplicate.load(Ordering::Relaxed), 35);
        assert_eq!(h.stats.samples_out_of_order.load(Ordering::Relaxed), 0);
        assert_eq!(after.out_of_order, 0);
        assert_eq!(after.samples, before.samples);
        let mut got = Vec::new();
        h.samples(id, i64::MIN, i64::MAX, &mut got);
        let want: Vec<(i64, f64)> = first.iter().map(|x| (x.ts, x.value)).collect();
        assert_eq!(got, want);
        // Not a duplicate: another value at a time the head holds replaces it.
        h.append_samples(&[s(200, -1.0)]);
        assert_eq!(h.stats.samples_out_of_order.load(Ordering::Relaxed), 1);
        got.clear();
        h.samples(id, 200, 200, &mut got);
        assert_eq!(got, vec![(200, -1.0)]);
    }

    #[test]
    fn the_newest_sample_in_a_range_is_the_last_of_the_samples_read_whole() {
        // The oracle: `samples` (every chunk, the head, the buffer, the held sample merged)
        // read whole, its last point. Chunks in memory and spilled, late samples waiting and
        // merged, duplicates.
        let dir = tempfile::tempdir().unwrap();
        let h = HotIndex::new(i64::MAX / 4).with_chunk_files(ChunkFiles::open(dir.path()).unwrap());
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for round in 0..6 {
            let mut batch = Vec::new();
            for id in 1..=20u64 {
                for k in 0..(40 + next(200)) as i64 {
                    // Mostly in order, a tenth late by up to 2,000 ms.
                    // On the 10 ms grid: a late sample often rewrites one already held.
                    let ts = round * 4_000 + k * 10
                        - if next(10) == 0 {
                            10 * next(200) as i64
                        } else {
                            0
                        };
                    batch.push(Sample {
                        series: id,
                        ts: ts.max(0),
                        value: next(1_000) as f64,
                    });
                }
            }
            h.append_samples(&batch);
            if round % 2 == 1 {
                h.spill();
            }
            for id in 1..=20u64 {
                for _ in 0..30 {
                    let start = next(26_000) as i64;
                    let end = start + next(3_000) as i64;
                    let mut all = Vec::new();
                    h.samples(id, start, end, &mut all);
                    assert_eq!(
                        h.newest_in(id, start, end),
                        all.last().copied(),
                        "series {id} in [{start}, {end}] after round {round}"
                    );
                }
            }
        }
        assert_eq!(h.newest_in(99, 0, i64::MAX), None);
    }

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
        // Older samples wait for a merge; disorder within the head goes into it at once,
        // with what waits.
        assert!(h.memory().out_of_order > 0);
        h.append_samples(&[Sample {
            series: id,
            ts: 2_975,
            value: 0.25,
        }]);
        assert_eq!(h.memory().out_of_order, 0);
        let mut out = Vec::new();
        h.samples(id, 0, 10_000, &mut out);
        // 300 in order, 55 (once: the later 0.5 at 55 replaced -2.0), 39 more late, 7 and
        // 2,975 (disorder: before the head's newest, 2,980).
        assert_eq!(out.len(), 342);
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(out[1], (5, 0.5));
        assert_eq!(out[2], (7, 7.0));
        assert!(out.contains(&(50, -1.0)));
        assert!(out.contains(&(55, 0.5)));
        assert!(out.contains(&(2_975, 0.25)));
        assert_eq!(h.sample_count(), 342);
        let mut out = Vec::new();
        h.samples(id, 1000, 1200, &mut out);
        assert_eq!(out.len(), 21);
    }

    /// A backfill of 70,000 samples at 1 ms inside the span of one sealed chunk (10 s apart)
    /// once made a chunk of more than 65,535 samples, which `Chunk::encode` refuses with a
    /// panic. The chunk is split instead, and every sample is kept.
    #[test]
    fn a_dense_backfill_into_one_chunk_splits_it_and_keeps_every_sample() {
        let h = HotIndex::new(i64::MAX / 4);
        let id = 7;
        let mut sent: Vec<Sample> = (0..300)
            .map(|i| Sample {
                series: id,
                ts: i * 10_000,
                value: i as f64,
            })
            .collect();
        h.append_samples(&sent);
        let late: Vec<Sample> = (0..70_000)
            .map(|i| Sample {
                series: id,
                ts: 1 + i,
                value: (i % 17) as f64,
            })
            .filter(|s| s.ts % 10_000 != 0)
            .collect();
        for batch in late.chunks(1_000) {
            h.append_samples(batch);
        }
        sent.extend_from_slice(&late);
        assert_holds(&h, &sent);
        let sh = h.shards[shard(id)].read().unwrap();
        let counts: Vec<usize> = sh
            .get(&id)
            .unwrap()
            .sealed
            .iter()
            .map(|c| usize::from(c.count))
            .collect();
        assert!(
            counts.iter().all(|&n| n <= 2 * sealed::COMPACT_MAX),
            "{counts:?}"
        );
        assert!(counts.len() > 70, "{} chunks", counts.len());
    }

    #[test]
    fn a_sample_just_before_the_newest_goes_into_the_head_in_order() {
        let h = HotIndex::new(i64::MAX / 4);
        let id = 9;
        let sample = |ts: i64| Sample {
            series: id,
            ts,
            value: ts as f64 / 10.0,
        };
        // Pairs swapped, as two workers decoding adjacent records deliver them: 10 before 0,
        // 30 before 20, ... (and one duplicate of the held sample, which replaces it).
        for i in 0..150 {
            h.append_samples(&[sample(i * 20 + 10), sample(i * 20)]);
        }
        h.append_samples(&[Sample {
            series: id,
            ts: 2_990,
            value: -1.0,
        }]);
        assert_eq!(h.stats.samples_out_of_order.load(Ordering::Relaxed), 0);
        assert_eq!(h.sample_count(), 300);
        let mut out = Vec::new();
        h.samples(id, 0, 10_000, &mut out);
        assert_eq!(out.len(), 300);
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(out[299], (2_990, -1.0));
        assert_eq!(out[298], (2_980, 298.0));
        assert_eq!(h.any_sample_in(id, 2_985, 3_000), Some(2_990));
        // A checkpoint keeps the held sample, and the loaded series holds it again.
        let labels =
            crate::model::Labels::from_pairs(vec![("__name__".to_string(), "x".to_string())]);
        h.catalog.register_canonical(id, labels.canonical());
        let mut buf = Vec::new();
        for i in 0..HotIndex::SHARDS {
            h.snap_shard(i, &mut buf);
        }
        let loaded = HotIndex::new(i64::MAX / 4);
        let len = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(len + 4, buf.len(), "one series record");
        loaded.unsnap_series(&buf[4..], snap::VERSION).unwrap();
        let mut again = Vec::new();
        loaded.samples(id, 0, 10_000, &mut again);
        assert_eq!(again, out);
        assert_eq!(loaded.sample_count(), 300);
        let shard = loaded.shards[shard(id)].read().unwrap();
        let s = &shard[&id];
        assert_eq!((s.held(), s.ooo.len()), (Some((2_990, -1.0)), 0));
        drop(shard);
        // The next sample commits it into the head.
        loaded.append_samples(&[sample(3_000)]);
        let mut next = Vec::new();
        loaded.samples(id, 2_980, 10_000, &mut next);
        assert_eq!(next, vec![(2_980, 298.0), (2_990, -1.0), (3_000, 300.0)]);
        assert_eq!(loaded.stats.samples_out_of_order.load(Ordering::Relaxed), 0);
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

    #[test]
    fn minute_rollups_leave_memory_after_their_retention_unless_pinned() {
        const H: i64 = 3_600_000;
        let h = HotIndex::new(26 * H).with_minute_rollup_retention(2 * H);
        let roll = |start: i64, width: i64| Rollup {
            series: 1,
            start,
            width,
            count: 1,
            sum: 1.0,
            min: 1.0,
            max: 1.0,
            first: 1.0,
            last: 1.0,
            increase: 0.0,
            first_ts: start + 1,
            last_ts: start + 1,
        };
        // Five hours of 1-minute rollups and their 1-hour ones.
        let minutes: Vec<Rollup> = (0..300).map(|m| roll(m * 60_000, 60_000)).collect();
        h.upsert(&minutes);
        h.upsert(&(0..5).map(|i| roll(i * H, H)).collect::<Vec<_>>());
        h.append_samples(&[Sample {
            series: 1,
            ts: 5 * H,
            value: 1.0,
        }]);
        let pin = h.pin(PinKind::Minute);
        pin.store(H, Ordering::Release);
        h.gc();
        // Pinned from hour 1 (a cold writer has not written it): the first block (two hours)
        // is still needed.
        let kept = h.rollups(1, Resolution::OneMinute, 0, i64::MAX);
        assert_eq!(kept.len(), 300);
        // Unpinned: kept from 2 hours before the newest sample, by whole blocks.
        pin.store(i64::MAX, Ordering::Release);
        h.gc();
        let kept = h.rollups(1, Resolution::OneMinute, 0, i64::MAX);
        assert_eq!(kept.first().unwrap().start, 2 * H);
        assert_eq!(kept.last().unwrap().start, 299 * 60_000);
        assert_eq!(h.minute_rollups_from(), 3 * H);
        // 1-hour rollups follow the retention.
        assert_eq!(h.rollups(1, Resolution::OneHour, 0, i64::MAX).len(), 5);
    }

    #[test]
    fn series_that_start_together_seal_their_first_heads_at_different_sizes() {
        let h = HotIndex::new(i64::MAX / 4);
        let ids: Vec<u64> = (0..61u64).collect();
        for &id in &ids {
            h.catalog
                .register_canonical(id, format!("m{id}").as_bytes());
        }
        // 200 samples each, every series in the same batches: each first head is cut at a
        // size of its own, 60 to 120, and the heads then differ by as much.
        for t in 0..200i64 {
            let batch: Vec<Sample> = ids
                .iter()
                .map(|&series| Sample {
                    series,
                    ts: t * 10_000,
                    value: t as f64,
                })
                .collect();
            h.append_samples(&batch);
        }
        let mut heads: Vec<usize> = Vec::new();
        for sh in h.shards.iter() {
            heads.extend(sh.read().unwrap().values().map(|s| s.head.len()));
        }
        heads.sort_unstable();
        heads.dedup();
        assert_eq!(heads.len(), 61, "every head a different size: {heads:?}");
        for &id in &ids {
            let mut got = Vec::new();
            h.samples(id, i64::MIN, i64::MAX, &mut got);
            assert_eq!(got.len(), 200, "series {id}");
        }
        assert_eq!(head_cut(7, true), 67);
        assert_eq!(head_cut(7, false), CHUNK_SAMPLES);
    }
}

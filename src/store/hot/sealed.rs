//! The sealed chunks of one series, and the packed references to blocks on disk that it and
//! the rollups ([`super::rollups`]) keep. A chunk in memory is a [`Chunk`] (48 bytes plus its
//! bytes); a chunk on disk is only a reference, kept packed: about 15 bytes instead of 48. At
//! the default 26 hours of hot retention a series has 78 chunks on disk: 3.7 KB of references
//! as `Chunk`s, about 1.2 KB packed.
//!
//! Packed layout, one entry per block on disk, oldest first (varints, [`put_var`]):
//! ```text
//! min (first: zigzag; then zigzag of min - the previous entry's max) | max - min | count
//! tag (first: as is; then zigzag of the difference to the previous entry's)
//! segment (first: as is; then zigzag of the difference to the previous entry's) | offset | length
//! ```
//! Blocks do not overlap in time, so the disk and memory lists, each sorted by time, merge
//! into one sorted list.

use std::borrow::Cow;

use tidemark_dataflows::packed::{get_var, put_var, unzigzag, zigzag, Reader};

use super::chunk::{Chunk, ValueCodec};
use super::chunkfile::DiskRef;
use super::thin::Thin;

/// References to blocks on disk (sealed chunks, rollup blocks), oldest first, packed; owned
/// (`Box<[u8]>`) or a view of bytes kept elsewhere (`&[u8]`: a rollup series keeps them in one
/// buffer with its tail).
#[derive(Default, Debug)]
pub(crate) struct PackedRefs<B = Box<[u8]>>(B);

/// One packed reference: the block's first and last time, its count of samples or rows, a
/// tag (a chunk's value codec, a rollup block's window width) and where it is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RefEntry {
    pub min: i64,
    pub max: i64,
    pub count: u16,
    pub tag: u64,
    pub r: DiskRef,
}

/// What the next entry is coded against: the previous one's max, tag and segment.
type Prev = Option<(i64, u64, u32)>;

/// Decodes packed entries in order.
pub(crate) struct Entries<'a> {
    r: Reader<'a>,
    prev: Prev,
}

impl Iterator for Entries<'_> {
    type Item = RefEntry;

    fn next(&mut self) -> Option<RefEntry> {
        if self.r.is_empty() {
            return None;
        }
        let r = &mut self.r;
        // The buffer is only written by `put`: a short read is a bug, not input.
        let mut var = || get_var(r).expect("packed block references");
        let e = match self.prev {
            None => {
                let min = unzigzag(var());
                let max = min.wrapping_add(var() as i64);
                let count = var() as u16;
                let tag = var();
                let seg = var() as u32;
                (min, max, count, tag, seg)
            }
            Some((prev_max, prev_tag, prev_seg)) => {
                let min = prev_max.wrapping_add(unzigzag(var()));
                let max = min.wrapping_add(var() as i64);
                let count = var() as u16;
                let tag = prev_tag.wrapping_add(unzigzag(var()) as u64);
                let seg = (i64::from(prev_seg) + unzigzag(var())) as u32;
                (min, max, count, tag, seg)
            }
        };
        let (min, max, count, tag, seg) = e;
        let (off, len) = (var() as u32, var() as u32);
        self.prev = Some((max, tag, seg));
        Some(RefEntry {
            min,
            max,
            count,
            tag,
            r: DiskRef { seg, off, len },
        })
    }
}

/// Appends an entry after `prev`.
fn put(out: &mut Vec<u8>, prev: Prev, e: &RefEntry) {
    match prev {
        None => {
            put_var(out, zigzag(e.min));
            put_var(out, e.max.wrapping_sub(e.min) as u64);
            put_var(out, u64::from(e.count));
            put_var(out, e.tag);
            put_var(out, u64::from(e.r.seg));
        }
        Some((prev_max, prev_tag, prev_seg)) => {
            put_var(out, zigzag(e.min.wrapping_sub(prev_max)));
            put_var(out, e.max.wrapping_sub(e.min) as u64);
            put_var(out, u64::from(e.count));
            put_var(out, zigzag(e.tag.wrapping_sub(prev_tag) as i64));
            put_var(out, zigzag(i64::from(e.r.seg) - i64::from(prev_seg)));
        }
    }
    put_var(out, u64::from(e.r.off));
    put_var(out, u64::from(e.r.len));
}

impl<B: AsRef<[u8]>> PackedRefs<B> {
    pub fn iter(&self) -> Entries<'_> {
        Entries {
            r: Reader::new(self.0.as_ref()),
            prev: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_empty()
    }

    /// Heap bytes.
    pub fn bytes(&self) -> usize {
        self.0.as_ref().len()
    }

    /// The packed bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_ref()
    }

    pub fn first(&self) -> Option<RefEntry> {
        self.iter().next()
    }

    pub fn last(&self) -> Option<RefEntry> {
        self.iter().last()
    }
}

impl<'a> PackedRefs<&'a [u8]> {
    /// A view of packed bytes (as [`PackedRefs::as_bytes`] gave them).
    pub fn view(bytes: &'a [u8]) -> Self {
        PackedRefs(bytes)
    }

    /// An owned copy.
    pub fn to_owned(&self) -> PackedRefs {
        PackedRefs(self.0.into())
    }
}

impl PackedRefs {
    /// Packs entries sorted by `min`.
    pub fn from_sorted(entries: impl IntoIterator<Item = RefEntry>) -> PackedRefs {
        let mut out = Vec::new();
        let mut prev = None;
        for e in entries {
            put(&mut out, prev, &e);
            prev = Some((e.max, e.tag, e.r.seg));
        }
        PackedRefs(out.into_boxed_slice())
    }

    /// Adds entries sorted by `min`: appended when they are newer than the newest held (the
    /// usual case), else merged in time order.
    pub fn add(&mut self, new: &[RefEntry]) {
        let Some(first) = new.first() else { return };
        let last = self.last();
        if last.is_none_or(|l| first.min > l.max) {
            let mut out = std::mem::take(&mut self.0).into_vec();
            let mut prev = last.map(|l| (l.max, l.tag, l.r.seg));
            for e in new {
                put(&mut out, prev, e);
                prev = Some((e.max, e.tag, e.r.seg));
            }
            self.0 = out.into_boxed_slice();
            return;
        }
        let mut all: Vec<RefEntry> = self.iter().collect();
        all.extend_from_slice(new);
        all.sort_by_key(|e| e.min);
        *self = PackedRefs::from_sorted(all);
    }

    /// Keeps the entries `keep` says to keep.
    pub fn retain(&mut self, mut keep: impl FnMut(&RefEntry) -> bool) {
        if self.iter().all(|e| keep(&e)) {
            return;
        }
        let kept: Vec<RefEntry> = self.iter().filter(|e| keep(e)).collect();
        *self = PackedRefs::from_sorted(kept);
    }
}

/// Sealed chunks are merged into larger ones once they are older than the compaction
/// horizon ([`super::HotIndex::spill`]): a run of adjacent chunks is merged when together they
/// hold at least this many samples (2 hours at 10 s) ...
pub(crate) const COMPACT_MIN: usize = 720;
/// ... and at most this many.
pub(crate) const COMPACT_MAX: usize = 960;

/// Which runs of adjacent chunks (given oldest first as `(max_ts, count)`) to merge: runs of
/// at least two chunks, all ending before `horizon`, of [`COMPACT_MIN`] to [`COMPACT_MAX`]
/// samples together, taken greedily from the oldest. A run that could still grow (cut by the
/// horizon below the minimum) waits, so that each sample is rewritten once, not once per
/// chunk that joins it. A chunk that holds the minimum already (one compacted) joins no run:
/// a run of 720 followed by a fresh 120 would otherwise be rewritten as 840, then 960.
pub(crate) fn compaction_runs(
    chunks: impl IntoIterator<Item = (i64, u16)>,
    horizon: i64,
) -> Vec<std::ops::Range<usize>> {
    runs_between(chunks, horizon, COMPACT_MIN, COMPACT_MAX)
}

/// [`compaction_runs`] with other bounds: runs of `min` to `max` items (rollup blocks on
/// disk merge by the same rule, [`super::rollups::RollupSeries::compact`]).
pub(crate) fn runs_between(
    chunks: impl IntoIterator<Item = (i64, u16)>,
    horizon: i64,
    min: usize,
    max: usize,
) -> Vec<std::ops::Range<usize>> {
    let old: Vec<usize> = chunks
        .into_iter()
        .take_while(|&(max, _)| max < horizon)
        .map(|(_, n)| usize::from(n))
        .collect();
    let mut runs = Vec::new();
    let mut i = 0;
    while i < old.len() {
        if old[i] >= min {
            // Merged already: it joins nothing (else each new chunk after it would rewrite it).
            i += 1;
            continue;
        }
        let (mut sum, mut j) = (old[i], i + 1);
        while j < old.len() && old[j] < min && sum + old[j] <= max {
            sum += old[j];
            j += 1;
        }
        if j - i >= 2 && sum >= min {
            runs.push(i..j);
            i = j;
        } else {
            i += 1;
        }
    }
    runs
}

/// Sealed chunks, oldest first.
#[derive(Default, Debug)]
pub(crate) struct Sealed {
    /// Chunks on disk.
    disk: PackedRefs,
    /// Chunks in memory (sealed since the last spill, or rewritten by a late merge).
    mem: Thin<Chunk>,
}

fn codec(tag: u64) -> ValueCodec {
    match tag {
        0 => ValueCodec::Gorilla,
        1 => ValueCodec::DecimalDelta,
        _ => ValueCodec::DecimalDod,
    }
}

fn chunk_of(e: RefEntry) -> Chunk {
    Chunk::on_disk(e.min, e.max, e.count, codec(e.tag), e.r)
}

fn entry_of(c: &Chunk, r: DiskRef) -> RefEntry {
    RefEntry {
        min: c.min_ts,
        max: c.max_ts,
        count: c.count,
        tag: c.codec as u64,
        r,
    }
}

impl Sealed {
    pub fn is_empty(&self) -> bool {
        self.disk.is_empty() && self.mem.is_empty()
    }

    /// Chunks on disk and in memory.
    pub fn len(&self) -> usize {
        self.disk.iter().count() + self.mem.len()
    }

    /// Every chunk, oldest first (those on disk as references).
    pub fn iter(&self) -> impl Iterator<Item = Cow<'_, Chunk>> + '_ {
        let mut disk = self.disk.iter().peekable();
        let mut mem = self.mem.iter().peekable();
        std::iter::from_fn(move || match (disk.peek(), mem.peek()) {
            (Some(d), Some(m)) if d.min > m.min_ts => mem.next().map(Cow::Borrowed),
            (Some(_), _) => disk.next().map(|e| Cow::Owned(chunk_of(e))),
            (None, _) => mem.next().map(Cow::Borrowed),
        })
    }

    /// The newest chunk's last timestamp.
    pub fn max_ts(&self) -> Option<i64> {
        let disk = self.disk.last().map(|e| e.max);
        let mem = self.mem.last().map(|c| c.max_ts);
        disk.max(mem)
    }

    /// Adds a chunk newer than every chunk held.
    pub fn push(&mut self, c: Chunk) {
        let mut mem = std::mem::take(&mut self.mem).into_vec();
        mem.push(c);
        self.mem = mem.into();
    }

    /// Chunks in memory, oldest first (to be spilled).
    pub fn in_memory(&self) -> &[Chunk] {
        &self.mem
    }

    /// The chunks in memory were written to disk at `refs` (in [`Sealed::in_memory`]'s
    /// order): they become references.
    pub fn spilled(&mut self, refs: &[DiskRef]) {
        debug_assert_eq!(refs.len(), self.mem.len());
        let mem = std::mem::take(&mut self.mem);
        let new: Vec<RefEntry> = mem.iter().zip(refs).map(|(c, &r)| entry_of(c, r)).collect();
        self.disk.add(&new);
    }

    /// Takes every chunk out, oldest first (for rewriting; give them back with
    /// [`Sealed::set_all`]).
    pub fn take_all(&mut self) -> Vec<Chunk> {
        let mut all: Vec<Chunk> = self.disk.iter().map(chunk_of).collect();
        all.extend(std::mem::take(&mut self.mem).into_vec());
        all.sort_by_key(|c| c.min_ts);
        self.disk = PackedRefs::default();
        all
    }

    /// Holds `all` (sorted by time, not overlapping): those on disk packed.
    pub fn set_all(&mut self, all: Vec<Chunk>) {
        let mut disk = Vec::new();
        let mut mem = Vec::new();
        for c in all {
            match c.disk_ref() {
                Some(r) => disk.push(entry_of(&c, r)),
                None => mem.push(c),
            }
        }
        self.disk = PackedRefs::from_sorted(disk);
        self.mem = mem.into();
    }

    /// Drops the chunks that end before `cutoff` (the oldest ones) and returns them.
    pub fn drop_before(&mut self, cutoff: i64) -> Vec<Chunk> {
        let first = self
            .disk
            .first()
            .map(|e| e.max)
            .into_iter()
            .chain(self.mem.first().map(|c| c.max_ts))
            .min();
        if first.is_none_or(|t| t >= cutoff) {
            return Vec::new();
        }
        let mut all = self.take_all();
        let keep = all.partition_point(|c| c.max_ts < cutoff);
        let kept = all.split_off(keep);
        self.set_all(kept);
        all
    }

    /// Heap bytes: the packed references, the in-memory chunks and their bytes.
    pub fn heap_bytes(&self) -> usize {
        self.disk.bytes()
            + self.mem.len() * std::mem::size_of::<Chunk>()
            + self.mem.iter().map(Chunk::heap_bytes).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(t0: i64, n: usize) -> Chunk {
        let s: Vec<(i64, f64)> = (0..n as i64).map(|i| (t0 + i * 10_000, i as f64)).collect();
        Chunk::encode(&s)
    }

    #[test]
    fn compaction_merges_runs_of_old_chunks_once_they_are_large_enough() {
        let h = 1_000;
        // Six chunks of 120 before the horizon: one run of 720.
        let six: Vec<(i64, u16)> = (0..8).map(|k| (k * 100 + 50, 120)).collect();
        assert_eq!(compaction_runs(six.clone(), 600), vec![0..6]);
        // Five: they wait for the sixth (each sample is rewritten once).
        assert!(compaction_runs(six.clone(), 500).is_empty());
        // All of them old: the greedy run takes eight (960), the most a run holds.
        assert_eq!(compaction_runs(six.clone(), h), vec![0..8]);
        // A merged chunk merges with nothing; the chunks after it make their own run.
        let mut after: Vec<(i64, u16)> = vec![(10, 960)];
        after.extend((1..=7).map(|k| (10 + k * 100, 120)));
        assert_eq!(compaction_runs(after, h), vec![1..8]);
        // A first chunk of 70 and a late merge's 130: counts, not chunk numbers, decide.
        let odd = vec![
            (1, 70),
            (2, 130),
            (3, 120),
            (4, 120),
            (5, 120),
            (6, 120),
            (7, 120),
        ];
        assert_eq!(compaction_runs(odd, h), vec![0..7]);
        // A merged chunk of the minimum does not take the fresh chunks after it (it would be
        // rewritten once per chunk up to the maximum).
        assert!(compaction_runs(vec![(1, 720), (2, 120), (3, 120)], h).is_empty());
        assert_eq!(
            runs_between(vec![(1, 64), (2, 8), (3, 8)], h, 16, 24),
            vec![1..3]
        );
        // Two large chunks that do not fit together stay apart.
        assert!(compaction_runs(vec![(1, 600), (2, 500)], h).is_empty());
        assert!(compaction_runs(Vec::new(), h).is_empty());
    }

    #[test]
    fn references_pack_spill_merge_and_drop_in_time_order() {
        let mut s = Sealed::default();
        assert!(s.is_empty() && s.max_ts().is_none());
        // Four chunks of 120 samples at 10 s, spilled two by two.
        let cs: Vec<Chunk> = (0..4).map(|k| chunk(k * 1_200_000, 120)).collect();
        let refs: Vec<DiskRef> = (0..4)
            .map(|k| DiskRef {
                seg: 1 + k / 3,
                off: 1_000_000 * k + 7,
                len: 150 + k,
            })
            .collect();
        for k in 0..2 {
            s.push(cs[2 * k].clone());
            s.push(cs[2 * k + 1].clone());
            s.spilled(&refs[2 * k..2 * k + 2]);
        }
        assert!(s.in_memory().is_empty());
        assert_eq!(s.len(), 4);
        let got: Vec<Chunk> = s.iter().map(Cow::into_owned).collect();
        for (k, c) in got.iter().enumerate() {
            assert_eq!(
                (c.min_ts, c.max_ts, c.count, c.codec),
                (cs[k].min_ts, cs[k].max_ts, 120, cs[k].codec)
            );
            assert_eq!(c.disk_ref(), Some(refs[k]));
        }
        assert_eq!(s.max_ts(), Some(cs[3].max_ts));
        // Packed: well under a Chunk a reference.
        assert!(s.heap_bytes() <= 4 * 16, "{}", s.heap_bytes());
        // A late merge rewrites chunk 1 into memory: the order stays.
        let mut all = s.take_all();
        all[1] = chunk(1_200_000 - 5_000, 121);
        s.set_all(all);
        assert_eq!(s.in_memory().len(), 1);
        let order: Vec<i64> = s.iter().map(|c| c.min_ts).collect();
        assert_eq!(order, vec![0, 1_195_000, 2_400_000, 3_600_000]);
        // Spilled again, it goes back in its place.
        let r = DiskRef {
            seg: 3,
            off: 5,
            len: s.in_memory()[0].size() as u32,
        };
        s.spilled(&[r]);
        let got: Vec<Chunk> = s.iter().map(Cow::into_owned).collect();
        assert_eq!(got[1].disk_ref(), Some(r));
        assert_eq!(got[2].disk_ref(), Some(refs[2]));
        assert_eq!(got.iter().map(|c| c.min_ts).collect::<Vec<_>>(), order);
        // A new chunk in memory is the newest; retention drops the oldest two.
        s.push(chunk(4_800_000, 3));
        assert_eq!(s.max_ts(), Some(4_820_000));
        let dropped = s.drop_before(cs[2].min_ts);
        assert_eq!(dropped.len(), 2);
        assert_eq!(
            s.iter().map(|c| c.min_ts).collect::<Vec<_>>(),
            vec![2_400_000, 3_600_000, 4_800_000]
        );
        assert_eq!(s.iter().next().unwrap().disk_ref(), Some(refs[2]));
        assert!(s.drop_before(0).is_empty());
    }
}

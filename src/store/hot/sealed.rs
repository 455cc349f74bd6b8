//! The sealed chunks of one series. A chunk in memory is a [`Chunk`] (48 bytes plus its
//! bytes); a chunk on disk is only a reference, so it is kept packed: about 14 bytes instead
//! of 48. At the default 26 hours of hot retention a series has 78 chunks on disk: 3.7 KB
//! of references as `Chunk`s, about 1.1 KB packed.
//!
//! Packed layout, one entry per chunk on disk, oldest first (varints, [`put_var`]):
//! ```text
//! min_ts (first: zigzag; then zigzag of min_ts - the previous entry's max_ts)
//! max_ts - min_ts | count * 4 + codec
//! segment (first: as is; then zigzag of the difference to the previous entry's) | offset | length
//! ```
//! Chunks do not overlap in time, so the disk and memory lists, each sorted by time, merge
//! into one sorted list.

use std::borrow::Cow;

use tidemark_dataflows::packed::{get_var, put_var, unzigzag, zigzag, Reader};

use super::chunk::{Chunk, ValueCodec};
use super::chunkfile::DiskRef;

/// Sealed chunks, oldest first.
#[derive(Default, Debug)]
pub(crate) struct Sealed {
    /// Chunks on disk, packed.
    disk: Box<[u8]>,
    /// Chunks in memory (sealed since the last spill, or rewritten by a late merge).
    mem: Box<[Chunk]>,
}

/// One packed entry, decoded.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Entry {
    min_ts: i64,
    max_ts: i64,
    count: u16,
    codec: ValueCodec,
    r: DiskRef,
}

impl Entry {
    fn chunk(self) -> Chunk {
        Chunk::on_disk(self.min_ts, self.max_ts, self.count, self.codec, self.r)
    }
}

/// Decodes packed entries in order.
struct Entries<'a> {
    r: Reader<'a>,
    prev: Option<(i64, u32)>,
}

impl Iterator for Entries<'_> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        if self.r.is_empty() {
            return None;
        }
        let r = &mut self.r;
        // The buffer is only written by `put`: a short read is a bug, not input.
        let mut var = || get_var(r).expect("packed chunk references");
        let (min_ts, span, cc, seg) = match self.prev {
            None => (unzigzag(var()), var() as i64, var(), var() as u32),
            Some((prev_max, prev_seg)) => (
                prev_max.wrapping_add(unzigzag(var())),
                var() as i64,
                var(),
                (i64::from(prev_seg) + unzigzag(var())) as u32,
            ),
        };
        let off = var() as u32;
        let len = var() as u32;
        let codec = match cc & 3 {
            0 => ValueCodec::Gorilla,
            1 => ValueCodec::DecimalDelta,
            _ => ValueCodec::DecimalDod,
        };
        let e = Entry {
            min_ts,
            max_ts: min_ts.wrapping_add(span),
            count: (cc >> 2) as u16,
            codec,
            r: DiskRef { seg, off, len },
        };
        self.prev = Some((e.max_ts, seg));
        Some(e)
    }
}

/// Appends an entry after `prev` (the previous entry's max_ts and segment).
fn put(out: &mut Vec<u8>, prev: Option<(i64, u32)>, c: &Chunk, r: DiskRef) {
    match prev {
        None => put_var(out, zigzag(c.min_ts)),
        Some((prev_max, _)) => put_var(out, zigzag(c.min_ts.wrapping_sub(prev_max))),
    }
    put_var(out, c.max_ts.wrapping_sub(c.min_ts) as u64);
    put_var(out, u64::from(c.count) * 4 + c.codec as u64);
    match prev {
        None => put_var(out, u64::from(r.seg)),
        Some((_, prev_seg)) => put_var(out, zigzag(i64::from(r.seg) - i64::from(prev_seg))),
    }
    put_var(out, u64::from(r.off));
    put_var(out, u64::from(r.len));
}

impl Sealed {
    fn entries(&self) -> Entries<'_> {
        Entries {
            r: Reader::new(&self.disk),
            prev: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.disk.is_empty() && self.mem.is_empty()
    }

    /// Chunks on disk and in memory.
    pub fn len(&self) -> usize {
        self.entries().count() + self.mem.len()
    }

    /// Every chunk, oldest first (those on disk as references).
    pub fn iter(&self) -> impl Iterator<Item = Cow<'_, Chunk>> + '_ {
        let mut disk = self.entries().peekable();
        let mut mem = self.mem.iter().peekable();
        std::iter::from_fn(move || match (disk.peek(), mem.peek()) {
            (Some(d), Some(m)) if d.min_ts > m.min_ts => mem.next().map(Cow::Borrowed),
            (Some(_), _) => disk.next().map(|e| Cow::Owned(e.chunk())),
            (None, _) => mem.next().map(Cow::Borrowed),
        })
    }

    /// The newest chunk's last timestamp.
    pub fn max_ts(&self) -> Option<i64> {
        let disk = self.entries().last().map(|e| e.max_ts);
        let mem = self.mem.last().map(|c| c.max_ts);
        disk.max(mem)
    }

    /// Adds a chunk newer than every chunk held.
    pub fn push(&mut self, c: Chunk) {
        let mut mem = std::mem::take(&mut self.mem).into_vec();
        mem.push(c);
        self.mem = mem.into_boxed_slice();
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
        let newest_on_disk = self.entries().last();
        if newest_on_disk.is_none_or(|e| mem.first().is_none_or(|c| c.min_ts > e.max_ts)) {
            // The usual case: newer than every chunk on disk, appended.
            let mut out = std::mem::take(&mut self.disk).into_vec();
            let mut prev = newest_on_disk.map(|e| (e.max_ts, e.r.seg));
            for (c, &r) in mem.iter().zip(refs) {
                put(&mut out, prev, c, r);
                prev = Some((c.max_ts, r.seg));
            }
            self.disk = out.into_boxed_slice();
            return;
        }
        // A late merge rewrote an older chunk: insert in time order.
        let mut all: Vec<Chunk> = self.entries().map(Entry::chunk).collect();
        for (mut c, &r) in mem.into_vec().into_iter().zip(refs) {
            c.spilled(r);
            all.push(c);
        }
        all.sort_by_key(|c| c.min_ts);
        self.set_all(all);
    }

    /// Takes every chunk out, oldest first (for rewriting; give them back with
    /// [`Sealed::set_all`]).
    pub fn take_all(&mut self) -> Vec<Chunk> {
        let mut all: Vec<Chunk> = self.entries().map(Entry::chunk).collect();
        all.extend(std::mem::take(&mut self.mem).into_vec());
        all.sort_by_key(|c| c.min_ts);
        self.disk = Box::default();
        all
    }

    /// Holds `all` (sorted by time, not overlapping): those on disk packed.
    pub fn set_all(&mut self, all: Vec<Chunk>) {
        let mut disk = Vec::new();
        let mut mem = Vec::new();
        let mut prev = None;
        for c in all {
            match c.disk_ref() {
                Some(r) => {
                    put(&mut disk, prev, &c, r);
                    prev = Some((c.max_ts, r.seg));
                }
                None => mem.push(c),
            }
        }
        self.disk = disk.into_boxed_slice();
        self.mem = mem.into_boxed_slice();
    }

    /// Drops the chunks that end before `cutoff` (the oldest ones) and returns them.
    pub fn drop_before(&mut self, cutoff: i64) -> Vec<Chunk> {
        let first = self
            .entries()
            .next()
            .map(|e| e.max_ts)
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
        self.disk.len()
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

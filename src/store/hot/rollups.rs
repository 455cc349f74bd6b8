//! Rollups of one series at one resolution, compressed like raw samples: blocks of up to
//! [`BLOCK`] rollups stored as one buffer (the window starts once, then nine value columns,
//! [`chunk::encode_columns`]), plus a tail that takes the newest rollups, packed a
//! byte-aligned row at a time (re-packed on each upsert: a few rows). The tail stays short:
//! once it holds its keep plus its move, its oldest rollups join the newest block
//! (re-encoded) or start a new one; a correction to a window in a block re-encodes the block.

use tidemark_dataflows::Rollup;

use tidemark_dataflows::packed::{get_num, get_var, put_num, put_var, unzigzag, zigzag, Reader};

use super::chunk::{self, Chunk};
use super::chunkfile::{ChunkFileError, ChunkFiles, DiskRef};
use super::sealed::{self, PackedRefs, RefEntry};
use super::snap::{Dec, DecError, Enc};
use super::thin::Thin;

/// Most rollups in a block. With chunk files, a block in memory goes to disk at the next
/// spill, and rollups moved out of the tail after that start a new block: blocks on disk hold
/// one move each (8 one-minute or 4 one-hour rollups), about 15 bytes of reference in memory.
pub const BLOCK: usize = 120;
const FIELDS: usize = 9;

/// Newest rollups kept in the tail after a move, and how many move into blocks at a time
/// (one re-encode of the newest block per move). None is kept: a correction within the
/// allowed lateness to a window already in a block re-encodes that block (read back from
/// disk if it was spilled), and corrections are rare (47 samples out of 180 M at or before
/// their series' newest in the 1 M series run). Keeping the 7 newest 1-minute rollups in the
/// tail, as before, held 7 to 15 rows there, about 240 bytes a series; now 0 to 7.
/// 1-minute: 8 moved; 1-hour: 4 moved.
fn tail_policy(width: i64) -> (usize, usize) {
    if width >= 3_600_000 {
        (0, 4)
    } else {
        (0, 8)
    }
}

/// Blocks on disk are merged into one once a run of adjacent ones holds at least the first
/// figure of rollups, at most the second ([`RollupSeries::compact`]). A spill writes the
/// blocks made since the last one, so a block on disk holds one move (8 one-minute or 4
/// one-hour rollups): 15 references (about 15 bytes each) for the 2 hours the 1-minute
/// rollups stay, 7 for the 26 hours of 1-hour ones. Merged once, as raw chunks are: 1-minute
/// runs of 64 to 120 (about 6 references), 1-hour runs of 12 to 24 (about 4).
fn merge_policy(width: i64) -> (usize, usize) {
    if width >= 3_600_000 {
        (12, 24)
    } else {
        (64, BLOCK)
    }
}

/// How many rollups a move takes: a series' first move takes 1 to `moving` of them, by its
/// id, and every later one `moving`. Series that start together (a fleet, a restart of the
/// collectors) would otherwise fill and empty their tails in step: at 1 M series every tail
/// held 6 or 7 one-minute rollups in the same minutes (about 150 bytes a series), where
/// staggered they hold 3.5 on average.
fn first_move(moving: usize, series: u64, first: bool) -> usize {
    if first {
        1 + (series % moving as u64) as usize
    } else {
        moving
    }
}

/// A sealed block: the window starts, then `count, sum, min, max, first, last, increase` and
/// the first and last sample's offset from the window start, in one buffer.
#[derive(Clone, Debug)]
struct Block {
    min_start: i64,
    max_start: i64,
    width: i64,
    count: u16,
    bytes: Box<[u8]>,
}

fn field(r: &Rollup, f: usize) -> f64 {
    match f {
        0 => r.count as f64,
        1 => r.sum,
        2 => r.min,
        3 => r.max,
        4 => r.first,
        5 => r.last,
        6 => r.increase,
        7 => (r.first_ts - r.start) as f64,
        _ => (r.last_ts - r.start) as f64,
    }
}

impl Block {
    fn encode(rows: &[Rollup]) -> Block {
        let ts: Vec<i64> = rows.iter().map(|r| r.start).collect();
        let cols: Vec<Vec<f64>> = (0..FIELDS)
            .map(|f| rows.iter().map(|r| field(r, f)).collect())
            .collect();
        Block {
            min_start: rows[0].start,
            max_start: rows[rows.len() - 1].start,
            width: rows[0].width,
            count: rows.len() as u16,
            bytes: chunk::encode_columns(&ts, &cols),
        }
    }

    fn decode(&self, series: u64) -> Vec<Rollup> {
        rows_of(&self.bytes, series, self.width)
    }

    /// Reads a block on disk back ([`Block::disk_bytes`] were written there).
    fn read(e: &RefEntry, files: Option<&ChunkFiles>) -> Result<Block, ChunkFileError> {
        let files = files.ok_or(ChunkFileError::NoFiles)?;
        let mut bytes = Vec::with_capacity(e.r.len as usize + 8);
        files.read(e.r, &mut bytes)?;
        bytes.extend_from_slice(&[0; 8]);
        let b = Block {
            min_start: e.min,
            max_start: e.max,
            width: e.tag as i64,
            count: e.count,
            bytes: bytes.into_boxed_slice(),
        };
        let rows = b.decode(0);
        let consistent = rows.len() == usize::from(e.count)
            && rows.first().is_some_and(|r| r.start == e.min)
            && rows.last().is_some_and(|r| r.start == e.max);
        if !consistent {
            files
                .read_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(ChunkFileError::Corrupt {
                path: files.dir().join(format!("{:08}.chunks", e.r.seg)),
                off: e.r.off,
            });
        }
        Ok(b)
    }

    /// The bytes to write to disk (without the decoder's padding).
    pub(crate) fn disk_bytes(&self) -> &[u8] {
        &self.bytes[..self.bytes.len() - 8]
    }

    fn entry(&self, r: DiskRef) -> RefEntry {
        RefEntry {
            min: self.min_start,
            max: self.max_start,
            count: self.count,
            tag: self.width as u64,
            r,
        }
    }
}

/// Rows of an encoded block.
fn rows_of(bytes: &[u8], series: u64, width: i64) -> Vec<Rollup> {
    {
        let mut ts = Vec::new();
        let mut cols: [Vec<f64>; FIELDS] = Default::default();
        chunk::decode_columns(bytes, &mut ts, &mut cols);
        ts.iter()
            .enumerate()
            .map(|(i, &start)| Rollup {
                series,
                start,
                width,
                count: cols[0][i] as u64,
                sum: cols[1][i],
                min: cols[2][i],
                max: cols[3][i],
                first: cols[4][i],
                last: cols[5][i],
                increase: cols[6][i],
                first_ts: start + cols[7][i] as i64,
                last_ts: start + cols[8][i] as i64,
            })
            .collect()
    }
}

impl Block {
    /// Heap bytes of the encoded block (its table entry is counted by the caller).
    fn size(&self) -> usize {
        self.bytes.len()
    }

    /// Rollups held.
    fn len(&self) -> usize {
        self.count as usize
    }
}

/// The rollups of one series at one width.
#[derive(Default, Debug)]
pub struct RollupSeries {
    /// Blocks in memory, sorted by start: every block without chunk files; with them, those
    /// made since the last spill and those a correction rewrote. (A [`Thin`] list: one word
    /// in the series' entry, nothing allocated while empty, which is most of the time.)
    blocks: Thin<Block>,
    /// In one buffer (16 bytes in the series' entry instead of 32 for two): the packed
    /// references to blocks on disk (with chunk files: [`super::HotIndex::spill`];
    /// [`PackedRefs`]) after a varint of their length, then the newest rollups, sorted by
    /// start, packed ([`pack_rows`]: about 22 bytes a rollup instead of 96; a heap profile's
    /// largest item was these tails, uncompressed).
    packed: Box<[u8]>,
}

/// Rollups as bytes ([`tidemark_dataflows::packed`]): per row the width's delta from the
/// previous row's, the start's distance from where the previous window ended (zero for the
/// next minute), the count, the six values against the previous row's ([`put_num`]: short
/// decimals as mantissa deltas, others as XORs), and the first and last sample's offsets from
/// the start, each against the previous row's (zero at a steady scrape phase). About 22 bytes
/// a row on the fleet workload (27 with the start as a plain delta and the offsets as they
/// are). The series id is not stored.
fn pack_rows(rows: &[Rollup]) -> Box<[u8]> {
    let mut out = Vec::with_capacity(rows.len() * 32);
    let mut st = RowCodec::default();
    for r in rows {
        st.put(&mut out, r);
    }
    out.into_boxed_slice()
}

fn unpack_rows(b: &[u8], series: u64, out: &mut Vec<Rollup>) {
    let mut rd = Reader::new(b);
    let mut st = RowCodec::default();
    while let Some(r) = st.get(&mut rd, series) {
        out.push(r);
    }
}

/// What a packed row is coded against: the previous row's start, width, sample offsets and
/// values ([`pack_rows`]). A reader that went through every row holds what the writer held
/// after the last one, so a row can be appended to a packed tail without repacking it.
#[derive(Default)]
struct RowCodec {
    start: i64,
    width: i64,
    first: i64,
    last: i64,
    prev: [u64; 6],
}

impl RowCodec {
    fn put(&mut self, out: &mut Vec<u8>, r: &Rollup) {
        put_var(out, zigzag(r.width.wrapping_sub(self.width)));
        put_var(
            out,
            zigzag(r.start.wrapping_sub(self.start.wrapping_add(r.width))),
        );
        (self.start, self.width) = (r.start, r.width);
        put_var(out, r.count);
        for (p, v) in self
            .prev
            .iter_mut()
            .zip([r.sum, r.min, r.max, r.first, r.last, r.increase])
        {
            put_num(out, p, v);
        }
        let (f, l) = (
            r.first_ts.wrapping_sub(r.start),
            r.last_ts.wrapping_sub(r.start),
        );
        put_var(out, zigzag(f.wrapping_sub(self.first)));
        put_var(out, zigzag(l.wrapping_sub(self.last)));
        (self.first, self.last) = (f, l);
    }

    fn get(&mut self, rd: &mut Reader<'_>, series: u64) -> Option<Rollup> {
        self.width = self.width.wrapping_add(unzigzag(get_var(rd)?));
        self.start = self
            .start
            .wrapping_add(self.width)
            .wrapping_add(unzigzag(get_var(rd)?));
        let count = get_var(rd)?;
        let mut v = [0f64; 6];
        for (p, x) in self.prev.iter_mut().zip(v.iter_mut()) {
            *x = get_num(rd, p)?;
        }
        self.first = self.first.wrapping_add(unzigzag(get_var(rd)?));
        self.last = self.last.wrapping_add(unzigzag(get_var(rd)?));
        Some(Rollup {
            series,
            start: self.start,
            width: self.width,
            count,
            sum: v[0],
            min: v[1],
            max: v[2],
            first: v[3],
            last: v[4],
            increase: v[5],
            first_ts: self.start.wrapping_add(self.first),
            last_ts: self.start.wrapping_add(self.last),
        })
    }
}

/// Where the first packed row's window ends (`start + width`), read without the rest.
fn first_row_end(b: &[u8]) -> Option<i64> {
    let mut rd = Reader::new(b);
    let width = unzigzag(get_var(&mut rd)?);
    let start = width.wrapping_add(unzigzag(get_var(&mut rd)?));
    Some(start.wrapping_add(width))
}

fn upsert_sorted(v: &mut Vec<Rollup>, r: Rollup) -> bool {
    match v.last() {
        None => {
            v.push(r);
            true
        }
        Some(last) if last.start < r.start => {
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

impl RollupSeries {
    /// The references to blocks on disk, and the packed tail.
    fn parts(&self) -> (&[u8], &[u8]) {
        if self.packed.is_empty() {
            return (&[], &[]);
        }
        let mut r = Reader::new(&self.packed);
        let n = get_var(&mut r).unwrap_or(0) as usize;
        let at = self.packed.len() - r.remaining();
        let split = (at + n).min(self.packed.len());
        (&self.packed[at..split], &self.packed[split..])
    }

    fn disk(&self) -> PackedRefs<&[u8]> {
        PackedRefs::view(self.parts().0)
    }

    fn tail(&self) -> &[u8] {
        self.parts().1
    }

    fn set_parts(&mut self, disk: &[u8], tail: &[u8]) {
        if disk.is_empty() && tail.is_empty() {
            self.packed = Box::default();
            return;
        }
        let mut out = Vec::with_capacity(disk.len() + tail.len() + 2);
        put_var(&mut out, disk.len() as u64);
        out.extend_from_slice(disk);
        out.extend_from_slice(tail);
        self.packed = out.into_boxed_slice();
    }

    /// Changes the references to blocks on disk.
    fn with_disk(&mut self, f: impl FnOnce(&mut PackedRefs)) {
        let (disk, tail) = self.parts();
        let mut d = PackedRefs::view(disk).to_owned();
        f(&mut d);
        let tail = tail.to_vec();
        self.set_parts(d.as_bytes(), &tail);
    }

    /// Upserts by window start; returns the change in bytes held in memory. A correction to a
    /// window in a block on disk reads the block back into memory (`files`).
    pub fn upsert(&mut self, r: Rollup, files: Option<&ChunkFiles>) -> i64 {
        let newest_block = self
            .blocks
            .last()
            .map(|b| b.max_start)
            .max(self.disk().last().map(|e| e.max));
        if newest_block.is_none_or(|m| r.start > m) {
            return self.upsert_tail(r);
        }
        if let Some(i) = self
            .blocks
            .iter()
            .position(|b| b.min_start <= r.start && r.start <= b.max_start)
        {
            return self.upsert_sealed(i, r);
        }
        if let Some(e) = self
            .disk()
            .iter()
            .find(|e| e.min <= r.start && r.start <= e.max)
        {
            return self.upsert_on_disk(e, r, files);
        }
        // Between blocks or older than all: it joins the block before it (or the oldest).
        let mem = self.blocks.iter().rposition(|b| b.min_start <= r.start);
        let disk = self.disk().iter().filter(|e| e.min <= r.start).last();
        match (mem, disk) {
            (Some(i), Some(e)) if self.blocks[i].min_start > e.min => self.upsert_sealed(i, r),
            (Some(i), None) => self.upsert_sealed(i, r),
            (_, Some(e)) => self.upsert_on_disk(e, r, files),
            (None, None) => match (self.blocks.first(), self.disk().first()) {
                (Some(b), Some(e)) if e.min < b.min_start => self.upsert_on_disk(e, r, files),
                (Some(_), _) => self.upsert_sealed(0, r),
                (None, Some(e)) => self.upsert_on_disk(e, r, files),
                // Not reached: a newest block exists.
                (None, None) => self.upsert_tail(r),
            },
        }
    }

    /// Upserts a rollup newer than every block into the tail, moving the tail's oldest into a
    /// block when it is full.
    fn upsert_tail(&mut self, r: Rollup) -> i64 {
        if let Some(added) = self.append_to_tail(&r) {
            return added;
        }
        let before = self.tail().len() as i64;
        let mut rows = self.tail_rows(r.series);
        upsert_sorted(&mut rows, r);
        let (keep, moving) = tail_policy(r.width);
        let moving = first_move(
            moving,
            r.series,
            self.blocks.is_empty() && self.disk().is_empty(),
        );
        let mut delta = 0;
        if rows.len() >= keep + moving {
            delta += self.compress(rows.drain(..moving).collect());
        }
        self.set_tail(&rows);
        delta + self.tail().len() as i64 - before
    }

    /// The common case of [`RollupSeries::upsert_tail`], in place: a rollup after the tail's
    /// newest that does not fill it is packed onto its end (one reallocation) instead of
    /// unpacking the tail and packing it again (four; 18 % of the CPU time at 1 M series went
    /// to this codec, with the rules' sample runs). `None`: not that case.
    fn append_to_tail(&mut self, r: &Rollup) -> Option<i64> {
        let tail = self.tail();
        if tail.is_empty() {
            return None;
        }
        let mut rd = Reader::new(tail);
        let mut st = RowCodec::default();
        let mut rows = 0;
        while st.get(&mut rd, 0).is_some() {
            rows += 1;
        }
        let (keep, moving) = tail_policy(r.width);
        let first = self.blocks.is_empty() && self.disk().is_empty();
        if r.start <= st.start || rows + 1 >= keep + first_move(moving, r.series, first) {
            return None;
        }
        let mut row = Vec::with_capacity(64);
        st.put(&mut row, r);
        let mut packed = std::mem::take(&mut self.packed).into_vec();
        packed.reserve_exact(row.len());
        packed.extend_from_slice(&row);
        self.packed = packed.into_boxed_slice();
        Some(row.len() as i64)
    }

    /// The tail's rollups, unpacked.
    fn tail_rows(&self, series: u64) -> Vec<Rollup> {
        let mut rows = Vec::with_capacity(self.tail().len() / 24 + 2);
        unpack_rows(self.tail(), series, &mut rows);
        rows
    }

    fn set_tail(&mut self, rows: &[Rollup]) {
        let disk = self.disk().as_bytes().to_vec();
        self.set_parts(&disk, &pack_rows(rows));
    }

    /// Moves rollups (the tail's oldest) into the newest block while it is in memory and has
    /// room (decoded and re-encoded), the rest into a new block; returns the change in the
    /// blocks' bytes.
    fn compress(&mut self, moving: Vec<Rollup>) -> i64 {
        let mut delta = 0;
        let mut rest = &moving[..];
        let on_disk_newest = self.disk().last().map(|e| e.max);
        if let Some(b) = self
            .blocks
            .last_mut()
            .filter(|b| b.len() < BLOCK && on_disk_newest.is_none_or(|m| b.max_start > m))
        {
            let room = BLOCK - b.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            let mut rows = b.decode(now[0].series);
            rows.extend_from_slice(now);
            let before = b.size() as i64;
            *b = Block::encode(&rows);
            delta += b.size() as i64 - before;
            rest = later;
        }
        if !rest.is_empty() {
            let b = Block::encode(rest);
            delta += b.size() as i64;
            let mut blocks = std::mem::take(&mut self.blocks).into_vec();
            blocks.push(b);
            self.blocks = blocks.into();
        }
        delta
    }

    #[cold]
    fn upsert_sealed(&mut self, i: usize, r: Rollup) -> i64 {
        let before = self.blocks[i].size() as i64;
        let mut rows = self.blocks[i].decode(r.series);
        upsert_sorted(&mut rows, r);
        self.blocks[i] = Block::encode(&rows);
        self.blocks[i].size() as i64 - before
    }

    /// A correction to a block on disk: the block comes back into memory (written again at
    /// the next spill). When it cannot be read, the correction is left out (reported).
    #[cold]
    fn upsert_on_disk(&mut self, e: RefEntry, r: Rollup, files: Option<&ChunkFiles>) -> i64 {
        let b = match Block::read(&e, files) {
            Ok(b) => b,
            Err(err) => {
                super::report_read_error(&err);
                return 0;
            }
        };
        self.with_disk(|d| d.retain(|x| x.min != e.min));
        let added = b.size() as i64;
        let i = self.blocks.partition_point(|x| x.min_start < b.min_start);
        let mut blocks = std::mem::take(&mut self.blocks).into_vec();
        blocks.insert(i, b);
        self.blocks = blocks.into();
        added + self.upsert_sealed(i, r)
    }

    /// Merges runs of adjacent blocks on disk older than every block in memory into one block
    /// each (`merge_policy`, `sealed::runs_between`), in memory until the spill that
    /// called this writes it; the references merged are released in `files`. Returns the
    /// bytes added in memory and how many blocks were merged. A run with a block that cannot
    /// be read back stays as it is (reported).
    pub fn compact(&mut self, files: Option<&ChunkFiles>) -> (i64, usize) {
        let Some(files) = files else { return (0, 0) };
        let limit = self.blocks.first().map_or(i64::MAX, |b| b.min_start);
        let Some(first) = self.disk().first() else {
            return (0, 0);
        };
        let (min, max) = merge_policy(first.tag as i64);
        // Called for every series a spill visits: nothing is allocated unless a run may exist.
        let small = |e: &RefEntry| usize::from(e.count) < min;
        let disk = self.disk();
        let eligible = disk.iter().take_while(|e| e.max < limit);
        if eligible
            .filter(small)
            .map(|e| usize::from(e.count))
            .sum::<usize>()
            < min
        {
            return (0, 0);
        }
        let entries: Vec<RefEntry> = self.disk().iter().take_while(|e| e.max < limit).collect();
        let runs =
            sealed::runs_between(entries.iter().map(|e| (e.max, e.count)), i64::MAX, min, max);
        let (mut merged, mut gone) = (Vec::new(), Vec::new());
        'runs: for run in runs {
            let mut rows = Vec::new();
            for e in &entries[run.clone()] {
                match Block::read(e, Some(files)) {
                    Ok(b) if e.tag == first.tag => rows.extend(b.decode(0)),
                    Ok(_) => continue 'runs,
                    Err(err) => {
                        super::report_read_error(&err);
                        continue 'runs;
                    }
                }
            }
            if !rows.windows(2).all(|w| w[0].start < w[1].start) {
                // Blocks never overlap; if they did, merging would drop rollups.
                continue;
            }
            merged.push(Block::encode(&rows));
            gone.extend_from_slice(&entries[run]);
        }
        if merged.is_empty() {
            return (0, 0);
        }
        let added = merged.iter().map(|b| b.size() as i64).sum();
        self.with_disk(|d| d.retain(|e| gone.binary_search_by_key(&e.min, |g| g.min).is_err()));
        for e in &gone {
            files.release(e.r);
        }
        merged.extend(std::mem::take(&mut self.blocks).into_vec());
        self.blocks = merged.into();
        (added, gone.len())
    }

    /// Rollups whose window starts in `[start, end]`, sorted by start. Blocks on disk are
    /// read from `files`; one that cannot be read is left out (reported).
    pub fn range(
        &self,
        series: u64,
        start: i64,
        end: i64,
        files: Option<&ChunkFiles>,
    ) -> Vec<Rollup> {
        let mut out = Vec::new();
        let overlaps = |lo: i64, hi: i64| hi >= start && lo <= end;
        let within = |r: &Rollup| r.start >= start && r.start <= end;
        let mut from_disk = false;
        for e in self.disk().iter().filter(|e| overlaps(e.min, e.max)) {
            match Block::read(&e, files) {
                Ok(b) => out.extend(b.decode(series).into_iter().filter(within)),
                Err(err) => super::report_read_error(&err),
            }
            from_disk = true;
        }
        for b in self.blocks.iter() {
            if overlaps(b.min_start, b.max_start) {
                out.extend(b.decode(series).into_iter().filter(within));
            }
        }
        if from_disk && !self.blocks.is_empty() {
            out.sort_by_key(|r| r.start);
        }
        out.extend(self.tail_rows(series).into_iter().filter(within));
        out
    }

    /// Drops windows that ended before `cutoff`; returns the change in bytes held in memory.
    pub fn gc(&mut self, cutoff: i64) -> i64 {
        let mut delta = 0;
        if self.blocks.iter().any(|b| b.max_start + b.width < cutoff) {
            let mut blocks = std::mem::take(&mut self.blocks).into_vec();
            blocks.retain(|b| {
                let keep = b.max_start + b.width >= cutoff;
                if !keep {
                    delta -= b.size() as i64;
                }
                keep
            });
            self.blocks = blocks.into();
        }
        // Rebuilt only when something is past the cutoff: this runs over every series every
        // minute, and rebuilding each series' buffer there (two allocations and a decode per
        // series and width) left 200-280 MB of freed pages with the allocator at 1 M series,
        // the highest RSS of the run, once a minute.
        let stale = |e: &RefEntry| e.max + (e.tag as i64) < cutoff;
        if self.disk().iter().any(|e| stale(&e)) {
            self.with_disk(|d| d.retain(|e| !stale(e)));
        }
        if first_row_end(self.tail()).is_some_and(|end| end < cutoff) {
            let mut rows = self.tail_rows(0);
            let n = rows.partition_point(|r| r.start + r.width < cutoff);
            let before = self.tail().len() as i64;
            rows.drain(..n);
            self.set_tail(&rows);
            delta += self.tail().len() as i64 - before;
        }
        delta
    }

    /// Heap bytes held: blocks (their buffers and the block table), references to blocks on
    /// disk, and the packed tail.
    pub fn heap_bytes(&self) -> usize {
        self.blocks.len() * std::mem::size_of::<Block>()
            + self.blocks.iter().map(|b| b.size()).sum::<usize>()
            + self.disk().bytes()
            + self.tail().len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.packed.is_empty() && self.blocks.is_empty()
    }

    /// The blocks in memory (to be spilled): their bytes for disk and their last window's end.
    pub fn in_memory(&self) -> impl Iterator<Item = (&[u8], i64)> + '_ {
        self.blocks
            .iter()
            .map(|b| (b.disk_bytes(), b.max_start + b.width))
    }

    /// The blocks in memory were written to disk at `refs` (in [`RollupSeries::in_memory`]'s
    /// order); returns the bytes this frees.
    pub fn spilled(&mut self, refs: &[DiskRef]) -> i64 {
        debug_assert_eq!(refs.len(), self.blocks.len());
        let blocks = std::mem::take(&mut self.blocks);
        let freed = blocks.iter().map(|b| b.size() as i64).sum();
        let entries: Vec<RefEntry> = blocks.iter().zip(refs).map(|(b, &r)| b.entry(r)).collect();
        self.with_disk(|d| d.add(&entries));
        freed
    }

    /// Keeps the references to blocks on disk that `keep` says to keep (a checkpoint being
    /// loaded: those whose segment is gone are dropped).
    pub fn retain_on_disk(&mut self, mut keep: impl FnMut(DiskRef, i64) -> bool) {
        self.with_disk(|d| d.retain(|e| keep(e.r, e.max + e.tag as i64)));
    }
}

fn snap_rollup(e: &mut Enc<'_>, r: &Rollup) {
    e.u64(r.series);
    e.i64(r.start);
    e.i64(r.width);
    e.u64(r.count);
    for v in [r.sum, r.min, r.max, r.first, r.last, r.increase] {
        e.f64(v);
    }
    e.i64(r.first_ts);
    e.i64(r.last_ts);
}

fn unsnap_rollup(d: &mut Dec<'_>) -> Result<Rollup, DecError> {
    Ok(Rollup {
        series: d.u64("rollup series")?,
        start: d.i64("rollup start")?,
        width: d.i64("rollup width")?,
        count: d.u64("rollup count")?,
        sum: d.f64("rollup sum")?,
        min: d.f64("rollup min")?,
        max: d.f64("rollup max")?,
        first: d.f64("rollup first")?,
        last: d.f64("rollup last")?,
        increase: d.f64("rollup increase")?,
        first_ts: d.i64("rollup first_ts")?,
        last_ts: d.i64("rollup last_ts")?,
    })
}

/// Checkpoint layout (see [`super::snap`]).
impl RollupSeries {
    pub fn snap(&self, e: &mut Enc<'_>) {
        // Version 5: blocks in memory and on disk, by start, each with its place.
        let disk: Vec<RefEntry> = self.disk().iter().collect();
        e.len(disk.len() + self.blocks.len());
        let (mut i, mut j) = (0, 0);
        while i < disk.len() || j < self.blocks.len() {
            let take_disk = match (disk.get(i), self.blocks.get(j)) {
                (Some(d), Some(b)) => d.min < b.min_start,
                (Some(_), None) => true,
                _ => false,
            };
            if take_disk {
                let d = &disk[i];
                e.i64(d.min);
                e.i64(d.max);
                e.i64(d.tag as i64);
                e.u16(d.count);
                e.u8(1);
                e.u32(d.r.seg);
                e.u32(d.r.off);
                e.u32(d.r.len);
                i += 1;
            } else {
                let b = &self.blocks[j];
                e.i64(b.min_start);
                e.i64(b.max_start);
                e.i64(b.width);
                e.u16(b.count);
                e.u8(0);
                e.bytes(&b.bytes);
                j += 1;
            }
        }
        // Tail rows as full rollups (their series id is the record's, written as 0 here).
        let rows = self.tail_rows(0);
        e.len(rows.len());
        for r in &rows {
            snap_rollup(e, r);
        }
    }

    /// Reads what [`RollupSeries::snap`] wrote, or, from a version 1 checkpoint, blocks of
    /// nine chunks (converted).
    pub fn unsnap(d: &mut Dec<'_>) -> Result<RollupSeries, DecError> {
        let n = d.len(24, "rollup blocks")?;
        let mut blocks = Vec::with_capacity(n);
        let mut disk = Vec::new();
        for _ in 0..n {
            let (min_start, max_start, width) = (
                d.i64("block min_start")?,
                d.i64("block max_start")?,
                d.i64("block width")?,
            );
            if width <= 0 {
                return Err(d.fail("block width", "not positive"));
            }
            let block = if d.version() == 1 {
                let mut cols = Vec::with_capacity(FIELDS);
                for _ in 0..FIELDS {
                    let mut v = Vec::new();
                    Chunk::unsnap(d)?.decode_into(&mut v);
                    cols.push(v);
                }
                let rows: Vec<Rollup> = (0..cols[0].len())
                    .map(|i| {
                        let v = |f: usize| cols[f].get(i).map_or(0.0, |p| p.1);
                        let start = cols[0][i].0;
                        Rollup {
                            series: 0,
                            start,
                            width,
                            count: v(0) as u64,
                            sum: v(1),
                            min: v(2),
                            max: v(3),
                            first: v(4),
                            last: v(5),
                            increase: v(6),
                            first_ts: start + v(7) as i64,
                            last_ts: start + v(8) as i64,
                        }
                    })
                    .collect();
                if rows.is_empty() {
                    return Err(d.fail("block", "empty"));
                }
                Block::encode(&rows)
            } else {
                let count = d.u16("block count")?;
                if d.version() >= 5 && d.u8("block place")? == 1 {
                    let r = DiskRef {
                        seg: d.u32("block segment")?,
                        off: d.u32("block offset")?,
                        len: d.u32("block length")?,
                    };
                    if count == 0 || r.len == 0 || min_start > max_start {
                        return Err(d.fail("block", "inconsistent header"));
                    }
                    disk.push(RefEntry {
                        min: min_start,
                        max: max_start,
                        count,
                        tag: width as u64,
                        r,
                    });
                    continue;
                }
                let bytes = d.bytes("block bytes")?;
                if count == 0 || bytes.len() < 8 {
                    return Err(d.fail("block", "empty"));
                }
                Block {
                    min_start,
                    max_start,
                    width,
                    count,
                    bytes: bytes.into(),
                }
            };
            if block.min_start != min_start || block.max_start > max_start || min_start > max_start
            {
                return Err(d.fail("block", "inconsistent header"));
            }
            blocks.push(block);
        }
        let n = d.len(96, "rollup tail")?;
        let mut tail = Vec::with_capacity(n);
        for _ in 0..n {
            tail.push(unsnap_rollup(d)?);
        }
        if tail.windows(2).any(|w| w[0].start >= w[1].start) {
            return Err(d.fail("rollup tail", "not sorted by start"));
        }
        if disk.windows(2).any(|w| w[0].min > w[1].min) {
            return Err(d.fail("rollup blocks", "not sorted by start"));
        }
        let mut s = RollupSeries {
            blocks: blocks.into(),
            ..Default::default()
        };
        s.set_parts(PackedRefs::from_sorted(disk).as_bytes(), &pack_rows(&tail));
        Ok(s)
    }

    /// A window start in `[start, end)` this series may have a rollup at (a block spanning
    /// the range counts: no block is decoded).
    pub fn any_in(&self, start: i64, end: i64) -> Option<i64> {
        self.tail_rows(0)
            .iter()
            .map(|r| r.start)
            .find(|&s| s >= start && s < end)
            .or_else(|| {
                self.blocks
                    .iter()
                    .map(|b| (b.min_start, b.max_start))
                    .chain(self.disk().iter().map(|e| (e.min, e.max)))
                    .find(|&(lo, hi)| hi >= start && lo < end)
                    .map(|(lo, _)| lo.max(start))
            })
    }

    /// The bytes in memory [`RollupSeries::upsert`] and [`RollupSeries::gc`] account for
    /// (blocks and tail; not the references to blocks on disk).
    pub fn bytes(&self) -> i64 {
        self.blocks.iter().map(|b| b.size() as i64).sum::<i64>() + self.tail().len() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roll(start: i64, v: f64) -> Rollup {
        Rollup::from_sorted(9, start, 60_000, &[(start, v), (start + 10_000, v + 1.5)]).unwrap()
    }

    #[test]
    fn tail_rows_round_trip_bit_for_bit_with_gaps_and_special_values() {
        let specials = [f64::NAN, f64::INFINITY, -0.0, 1e300, 5e-324, -2.5, 0.1];
        let mut rows = Vec::new();
        let mut start = 1_700_000_000_000i64;
        for i in 0..15usize {
            // Gaps of missing minutes, a width change, samples at shifting phases.
            start += 60_000 * (1 + (i % 4 == 3) as i64 * 2);
            let width = if i == 9 { 3_600_000 } else { 60_000 };
            let v = specials[i % specials.len()];
            rows.push(Rollup {
                series: 7,
                start,
                width,
                count: (i * 3) as u64,
                sum: v,
                min: -v,
                max: v * 2.0,
                first: i as f64 * 0.001,
                last: v,
                increase: i as f64,
                first_ts: start + 1 + (i as i64 % 3) * 1_000,
                last_ts: start + width - (i as i64 % 2),
            });
        }
        let mut back = Vec::new();
        unpack_rows(&pack_rows(&rows), 7, &mut back);
        assert_eq!(back.len(), rows.len());
        let bits = |r: &Rollup| {
            let v = [r.sum, r.min, r.max, r.first, r.last, r.increase].map(f64::to_bits);
            (r.start, r.width, r.count, v, r.first_ts, r.last_ts)
        };
        for (a, b) in rows.iter().zip(&back) {
            assert_eq!(bits(a), bits(b));
        }
        // A steady minute costs well under the 27 bytes of plain deltas.
        let steady: Vec<Rollup> = (0..11)
            .map(|m| {
                let pts: Vec<(i64, f64)> = (1..=6)
                    .map(|k| {
                        (
                            m * 60_000 + k * 10_000,
                            1.0 + ((m * 6 + k) % 7) as f64 * 0.125,
                        )
                    })
                    .collect();
                Rollup::from_sorted(7, m * 60_000, 60_000, &pts).unwrap()
            })
            .collect();
        let n = pack_rows(&steady).len();
        assert!(n <= 11 * 24, "{n} bytes for 11 rows");
        // Appended in place, one row at a time, the tail holds the bytes the whole tail packs
        // to, with blocks on disk before it, and the bytes reported are what it grew by.
        let mut s = RollupSeries::default();
        let disk = PackedRefs::from_sorted(vec![RefEntry {
            min: -600_000,
            max: -120_000,
            count: 8,
            tag: 60_000,
            r: DiskRef {
                seg: 3,
                off: 40,
                len: 90,
            },
        }]);
        s.set_parts(disk.as_bytes(), &pack_rows(&rows[..1]));
        let mut appended = 0;
        for (i, r) in rows.iter().enumerate().skip(1).take(6) {
            let grew = s.append_to_tail(r).expect("an append");
            assert_eq!(grew as usize, s.tail().len() - pack_rows(&rows[..i]).len());
            appended += 1;
        }
        assert_eq!(appended, 6);
        assert_eq!(s.tail(), &*pack_rows(&rows[..7]));
        assert_eq!(
            s.disk().iter().collect::<Vec<_>>(),
            disk.iter().collect::<Vec<_>>()
        );
        // The eighth fills the tail (a move is due), and an older start is no append.
        assert!(s.append_to_tail(&rows[7]).is_none());
        assert!(s.append_to_tail(&rows[2]).is_none());
    }

    #[test]
    fn sealed_blocks_round_trip_and_take_corrections() {
        let mut s = RollupSeries::default();
        let mut bytes = 0;
        for i in 0..400 {
            bytes += s.upsert(roll(i * 60_000, (i % 17) as f64 * 0.25), None);
        }
        assert!(s.blocks.len() >= 2);
        let all = s.range(9, 0, i64::MAX, None);
        assert_eq!(all.len(), 400);
        assert_eq!(all[123], roll(123 * 60_000, (123 % 17) as f64 * 0.25));
        // Compressed: far below the 80 bytes of an uncompressed rollup.
        assert!(bytes < 400 * 30, "{bytes} bytes for 400 rollups");
        // A correction to a sealed window replaces it.
        s.upsert(roll(5 * 60_000, 100.0), None);
        let r = s.range(9, 5 * 60_000, 5 * 60_000, None);
        assert_eq!(r, vec![roll(5 * 60_000, 100.0)]);
        assert_eq!(s.range(9, 0, i64::MAX, None).len(), 400);
        // The tail stays short: older rollups are in blocks of up to 120.
        let (keep, moving) = tail_policy(60_000);
        let n = s.tail_rows(9).len();
        assert!(n < keep + moving, "{n} in the tail");
        assert!(
            s.tail().len() <= n * 48,
            "{} bytes for {n} packed rows",
            s.tail().len()
        );
        assert!(s.blocks.iter().all(|b| b.len() <= BLOCK));
        // A correction to a window in the tail, and to one just moved into a block.
        let last = 399 * 60_000;
        s.upsert(roll(last, 7.0), None);
        s.upsert(roll(last - 20 * 60_000, 8.0), None);
        assert_eq!(s.range(9, last, last, None), vec![roll(last, 7.0)]);
        assert_eq!(
            s.range(9, last - 20 * 60_000, last - 20 * 60_000, None),
            vec![roll(last - 20 * 60_000, 8.0)]
        );
        // Expiry is by whole block: the block of windows 0..119 goes, 120..239 stays.
        s.gc(200 * 60_000);
        assert_eq!(s.range(9, 0, i64::MAX, None)[0].start, 120 * 60_000);
    }

    #[test]
    fn gc_with_nothing_expired_leaves_the_buffers_alone_and_expires_tail_rows() {
        let mut s = RollupSeries::default();
        // Series 9 moves 2 rollups into a block first, then 8 at a time: 3 stay in the tail.
        for i in 0..13 {
            s.upsert(roll(i * 60_000, i as f64), None);
        }
        // Nothing ends before the cutoff: the series' buffer is not rebuilt (a rebuild per
        // series every minute was the highest RSS of a 1 M series run).
        let at = s.packed.as_ptr();
        assert_eq!(s.gc(0), 0);
        assert_eq!(s.packed.as_ptr(), at);
        let tail = s.tail_rows(9);
        assert!(tail.len() >= 2, "{} rows in the tail", tail.len());
        assert_eq!(first_row_end(s.tail()), Some(tail[0].start + 60_000));
        // The tail's rows whose window ended before the cutoff go, the rest stay.
        let cutoff = tail[1].start + 60_000;
        let before = s.range(9, 0, i64::MAX, None);
        s.gc(cutoff);
        let tail_after = s.tail_rows(9);
        assert_eq!(tail_after, tail[1..]);
        // The block before the tail (windows 0 to 9) ended before the cutoff too.
        let after = s.range(9, 0, i64::MAX, None);
        let kept: Vec<Rollup> = before
            .into_iter()
            .filter(|r| r.start + r.width >= cutoff)
            .collect();
        assert_eq!(after, kept);
    }

    /// What a spill does with one series: its blocks in memory written to `files`; returns
    /// the bytes this frees.
    fn write_out(s: &mut RollupSeries, files: &ChunkFiles) -> i64 {
        let mut refs = Vec::new();
        for (b, end) in s.in_memory() {
            let (seg, off) = files.append(b, end).unwrap();
            refs.push(DiskRef {
                seg,
                off,
                len: b.len() as u32,
            });
        }
        s.spilled(&refs)
    }

    #[test]
    fn blocks_on_disk_are_read_back_corrected_and_expired() {
        let dir = tempfile::tempdir().unwrap();
        let files = ChunkFiles::open(dir.path()).unwrap();
        let mut s = RollupSeries::default();
        let spill = |s: &mut RollupSeries| write_out(s, &files);
        let mut want = Vec::new();
        for i in 0..400 {
            let r = roll(i * 60_000, (i % 17) as f64 * 0.25);
            want.push(r);
            s.upsert(r, Some(&files));
            spill(&mut s);
        }
        // Each move of 8 rollups out of the tail became a block on disk (the first one, 2:
        // `first_move` of series 9).
        assert!(s.blocks.is_empty());
        let counts: Vec<u16> = s.disk().iter().map(|e| e.count).collect();
        assert_eq!(counts[0], 2);
        assert!(counts[1..].iter().all(|&c| c == 8), "{counts:?}");
        assert_eq!(s.range(9, 0, i64::MAX, Some(&files)), want);
        assert_eq!(
            s.range(9, 100 * 60_000, 130 * 60_000, Some(&files)),
            want[100..=130]
        );
        // Without the files the blocks on disk are left out, not a panic.
        assert_eq!(s.range(9, 0, i64::MAX, None).len(), s.tail_rows(9).len());
        // A correction to a window on disk brings its block back into memory.
        let fix = roll(37 * 60_000, -3.0);
        s.upsert(fix, Some(&files));
        want[37] = fix;
        assert_eq!(s.blocks.len(), 1, "the corrected block is in memory");
        assert_eq!(s.range(9, 0, i64::MAX, Some(&files)), want);
        spill(&mut s);
        assert_eq!(s.range(9, 0, i64::MAX, Some(&files)), want);
        // Older than every block: it joins the oldest (on disk).
        let early = roll(-60_000, 1.0);
        s.upsert(early, Some(&files));
        want.insert(0, early);
        assert_eq!(s.range(9, i64::MIN, i64::MAX, Some(&files)), want);
        spill(&mut s);
        assert_eq!(s.range(9, i64::MIN, i64::MAX, Some(&files)), want);
        want.remove(0);
        // Expiry by block: the blocks are windows 0..1, then 8 at a time (2..9, 10..17, ...):
        // 186..193 ended before the cutoff and goes, 194..201 ends after it and stays.
        s.gc(200 * 60_000);
        assert_eq!(s.range(9, 0, i64::MAX, Some(&files)), want[194..]);
    }

    /// As [`super::super::HotIndex::spill`] does: merge, then write what is in memory.
    #[test]
    fn blocks_on_disk_merge_in_runs_once_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let files = ChunkFiles::open(dir.path()).unwrap();
        let mut s = RollupSeries::default();
        let merged = std::cell::Cell::new(0);
        let spill = |s: &mut RollupSeries| {
            merged.set(merged.get() + s.compact(Some(&files)).1);
            write_out(s, &files);
        };
        let mut want = Vec::new();
        let mut most = 0;
        for i in 0..400 {
            let r = roll(i * 60_000, (i % 17) as f64 * 0.25 + i as f64);
            want.push(r);
            s.upsert(r, Some(&files));
            spill(&mut s);
            assert_eq!(s.range(9, 0, i64::MAX, Some(&files)), want, "after {i}");
            most = most.max(s.disk().iter().count());
        }
        let counts: Vec<u16> = s.disk().iter().map(|e| e.count).collect();
        // Blocks of 2 (the first move), then 8; runs of 64 to 120 merged.
        assert!(
            counts.iter().filter(|&&c| c >= 64).count() >= 3,
            "{counts:?}"
        );
        assert!(counts.iter().all(|&c| c <= 120), "{counts:?}");
        // No run waits with the minimum in it, and a merged block was not merged again: each
        // rollup went through one merge (blocks merged = rollups moved into merged blocks / 8,
        // give or take the first move's 2).
        let small: usize = counts
            .iter()
            .filter(|&&c| c < 64)
            .map(|&c| c as usize)
            .sum();
        assert!(small < 64 + 8, "{counts:?}");
        let in_merged: usize = counts
            .iter()
            .filter(|&&c| c >= 64)
            .map(|&c| c as usize)
            .sum();
        let merged = merged.get();
        assert!(
            merged <= in_merged / 8 + 1,
            "{merged} merged for {in_merged} rollups"
        );
        // 400 rollups in 8s would be 50 references; merged, at most 15 at any time.
        assert!(most <= 15, "{most} references at most");
        // The files count as live what the series still references.
        let referenced: i64 = s.disk().iter().map(|e| i64::from(e.r.len)).sum();
        assert_eq!(files.live_bytes().values().sum::<i64>(), referenced);
        // A correction inside a merged block reads it back and writes it again.
        let fix = roll(70 * 60_000, -3.0);
        s.upsert(fix, Some(&files));
        want[70] = fix;
        spill(&mut s);
        assert_eq!(s.range(9, 0, i64::MAX, Some(&files)), want);
    }

    #[test]
    fn a_version_1_checkpoint_block_of_nine_chunks_is_read() {
        let rows: Vec<Rollup> = (0..30).map(|i| roll(i * 60_000, i as f64 * 1.5)).collect();
        let mut buf = Vec::new();
        let mut e = Enc(&mut buf);
        e.len(1);
        e.i64(rows[0].start);
        e.i64(rows[29].start);
        e.i64(60_000);
        for f in 0..FIELDS {
            let pts: Vec<(i64, f64)> = rows.iter().map(|r| (r.start, field(r, f))).collect();
            // Version 1 had no place byte (version 4's) after the codec.
            let mut c = Vec::new();
            Chunk::encode(&pts).snap(&mut Enc(&mut c));
            assert_eq!(c.remove(19), 0);
            e.0.extend_from_slice(&c);
        }
        e.len(0);
        let mut d = Dec::with_version(&buf, 1);
        let s = RollupSeries::unsnap(&mut d).unwrap();
        assert!(d.is_empty());
        assert_eq!(s.range(9, 0, i64::MAX, None), rows);
        // The same bytes read as this build's layout are an error, not a panic.
        assert!(RollupSeries::unsnap(&mut Dec::new(&buf)).is_err());
        // And this build's layout round-trips.
        let mut out = Vec::new();
        s.snap(&mut Enc(&mut out));
        assert_eq!(
            RollupSeries::unsnap(&mut Dec::new(&out))
                .unwrap()
                .range(9, 0, i64::MAX, None),
            rows
        );
    }

    #[test]
    fn series_that_start_together_move_their_tails_at_different_minutes() {
        let (_, moving) = tail_policy(60_000);
        let mut fills = vec![0usize; moving];
        for id in 0..64u64 {
            let mut s = RollupSeries::default();
            for m in 0..(3 * moving as i64) {
                let pts = [(m * 60_000 + 1, m as f64)];
                s.upsert(
                    Rollup::from_sorted(id, m * 60_000, 60_000, &pts).unwrap(),
                    None,
                );
            }
            let n = s.tail_rows(id).len();
            assert!(n < moving, "{n} rows in the tail");
            fills[n] += 1;
            // Nothing lost by the first, shorter move.
            assert_eq!(s.range(id, 0, i64::MAX, None).len(), 3 * moving);
        }
        // 64 series, every fill level from 0 to `moving - 1` eight times.
        assert!(fills.iter().all(|&f| f == 64 / moving), "{fills:?}");
        assert_eq!(first_move(8, 13, true), 6);
        assert_eq!(first_move(8, 13, false), 8);
    }
}

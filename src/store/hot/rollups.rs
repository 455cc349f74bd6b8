//! Rollups of one series at one resolution, compressed like raw samples: blocks of up to
//! [`BLOCK`] rollups stored as one buffer (the window starts once, then nine value columns,
//! [`chunk::encode_columns`]), plus a tail that takes the upserts of windows still open for
//! lateness, packed a byte-aligned row at a time (re-packed on each upsert: a few rows). The
//! tail stays short: once it holds its keep plus its move, its oldest rollups join the newest
//! block (re-encoded) or start a new one.

use tidemark_dataflows::Rollup;

use tidemark_dataflows::packed::{get_num, get_var, put_num, put_var, unzigzag, zigzag, Reader};

use super::chunk::{self, Chunk};
use super::snap::{Dec, DecError, Enc};

/// Rollups per sealed block.
pub const BLOCK: usize = 120;
const FIELDS: usize = 9;

/// Newest rollups kept uncompressed, so that corrections within the allowed lateness (5
/// minutes by default: up to 6 one-minute windows back) and the re-emission of open windows
/// after a restart hit the tail; and how many move into blocks at a time (one re-encode of
/// the newest block per move). 1-minute: 7 kept, 8 moved (7 to 15 in the tail, about 40 bytes
/// each packed);
/// 1-hour: 1 kept, 4 moved.
fn tail_policy(width: i64) -> (usize, usize) {
    if width >= 3_600_000 {
        (1, 4)
    } else {
        (7, 8)
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
        let mut ts = Vec::with_capacity(self.count as usize);
        let mut cols: [Vec<f64>; FIELDS] = Default::default();
        chunk::decode_columns(&self.bytes, &mut ts, &mut cols);
        ts.iter()
            .enumerate()
            .map(|(i, &start)| Rollup {
                series,
                start,
                width: self.width,
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
    blocks: Vec<Block>,
    /// The newest rollups, sorted by start, packed ([`pack_rows`]): about 40 bytes a rollup
    /// instead of 96 (a heap profile's largest item was these tails, uncompressed).
    tail: Box<[u8]>,
    tail_rows: u16,
}

/// Rollups as bytes ([`tidemark_dataflows::packed`]): per row the start's and width's deltas
/// from the previous row, the count, the six values against the previous row's ([`put_num`]:
/// short decimals as mantissa deltas, others as XORs; tails written before it, as XORs only,
/// read the same), and the first and last sample's offsets from the start. The series id is
/// not stored.
fn pack_rows(rows: &[Rollup]) -> Box<[u8]> {
    let mut out = Vec::with_capacity(rows.len() * 48);
    let (mut start, mut width) = (0i64, 0i64);
    let mut prev = [0u64; 6];
    for r in rows {
        put_var(&mut out, zigzag(r.start.wrapping_sub(start)));
        put_var(&mut out, zigzag(r.width.wrapping_sub(width)));
        (start, width) = (r.start, r.width);
        put_var(&mut out, r.count);
        for (p, v) in prev
            .iter_mut()
            .zip([r.sum, r.min, r.max, r.first, r.last, r.increase])
        {
            put_num(&mut out, p, v);
        }
        put_var(&mut out, zigzag(r.first_ts.wrapping_sub(r.start)));
        put_var(&mut out, zigzag(r.last_ts.wrapping_sub(r.start)));
    }
    out.into_boxed_slice()
}

fn unpack_rows(b: &[u8], series: u64, out: &mut Vec<Rollup>) {
    let mut rd = Reader::new(b);
    let (mut start, mut width) = (0i64, 0i64);
    let mut prev = [0u64; 6];
    let mut row = || -> Option<Rollup> {
        start = start.wrapping_add(unzigzag(get_var(&mut rd)?));
        width = width.wrapping_add(unzigzag(get_var(&mut rd)?));
        let count = get_var(&mut rd)?;
        let mut v = [0f64; 6];
        for (p, x) in prev.iter_mut().zip(v.iter_mut()) {
            *x = get_num(&mut rd, p)?;
        }
        let first_ts = start.wrapping_add(unzigzag(get_var(&mut rd)?));
        let last_ts = start.wrapping_add(unzigzag(get_var(&mut rd)?));
        Some(Rollup {
            series,
            start,
            width,
            count,
            sum: v[0],
            min: v[1],
            max: v[2],
            first: v[3],
            last: v[4],
            increase: v[5],
            first_ts,
            last_ts,
        })
    };
    while let Some(r) = row() {
        out.push(r);
    }
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
    /// Upserts by window start; returns the change in bytes held.
    pub fn upsert(&mut self, r: Rollup) -> i64 {
        if let Some(i) = self
            .blocks
            .iter()
            .rposition(|b| b.min_start <= r.start)
            .filter(|&i| r.start <= self.blocks[i].max_start)
        {
            return self.upsert_sealed(i, r);
        }
        if self.blocks.last().is_some_and(|b| r.start < b.min_start) {
            // Older than every block: it joins the first one.
            return self.upsert_sealed(0, r);
        }
        let before = self.tail.len() as i64;
        let mut rows = self.tail_rows(r.series);
        upsert_sorted(&mut rows, r);
        let (keep, moving) = tail_policy(r.width);
        let mut delta = 0;
        if rows.len() >= keep + moving {
            delta += self.compress(rows.drain(..moving).collect());
        }
        self.set_tail(&rows);
        delta + self.tail.len() as i64 - before
    }

    /// The tail's rollups, unpacked.
    fn tail_rows(&self, series: u64) -> Vec<Rollup> {
        let mut rows = Vec::with_capacity(self.tail_rows as usize + 1);
        unpack_rows(&self.tail, series, &mut rows);
        rows
    }

    fn set_tail(&mut self, rows: &[Rollup]) {
        self.tail = pack_rows(rows);
        self.tail_rows = rows.len().min(u16::MAX as usize) as u16;
    }

    /// Moves rollups (the tail's oldest) into the newest block while it has room (decoded and
    /// re-encoded), the rest into a new block; returns the change in the blocks' bytes.
    fn compress(&mut self, moving: Vec<Rollup>) -> i64 {
        let mut delta = 0;
        let mut rest = &moving[..];
        if let Some(b) = self.blocks.last_mut().filter(|b| b.len() < BLOCK) {
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
            if self.blocks.len() == self.blocks.capacity() {
                self.blocks.reserve_exact(2);
            }
            self.blocks.push(b);
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

    /// Rollups whose window starts in `[start, end]`.
    pub fn range(&self, series: u64, start: i64, end: i64) -> Vec<Rollup> {
        let mut out = Vec::new();
        for b in &self.blocks {
            if b.max_start < start || b.min_start > end {
                continue;
            }
            out.extend(
                b.decode(series)
                    .into_iter()
                    .filter(|r| r.start >= start && r.start <= end),
            );
        }
        out.extend(
            self.tail_rows(series)
                .into_iter()
                .filter(|r| r.start >= start && r.start <= end),
        );
        out
    }

    /// Drops windows that ended before `cutoff`; returns the change in bytes held.
    pub fn gc(&mut self, cutoff: i64) -> i64 {
        let mut delta = 0;
        self.blocks.retain(|b| {
            let keep = b.max_start + b.width >= cutoff;
            if !keep {
                delta -= b.size() as i64;
            }
            keep
        });
        let mut rows = self.tail_rows(0);
        let n = rows.partition_point(|r| r.start + r.width < cutoff);
        if n > 0 {
            let before = self.tail.len() as i64;
            rows.drain(..n);
            self.set_tail(&rows);
            delta += self.tail.len() as i64 - before;
        }
        delta
    }

    /// Heap bytes held: blocks (their buffers and the block table) and the packed tail.
    pub fn heap_bytes(&self) -> usize {
        self.blocks.capacity() * std::mem::size_of::<Block>()
            + self.blocks.iter().map(|b| b.size()).sum::<usize>()
            + self.tail.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty() && self.tail.is_empty()
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
        e.len(self.blocks.len());
        for b in &self.blocks {
            e.i64(b.min_start);
            e.i64(b.max_start);
            e.i64(b.width);
            e.u16(b.count);
            e.bytes(&b.bytes);
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
        let mut s = RollupSeries {
            blocks,
            ..Default::default()
        };
        s.set_tail(&tail);
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
                    .find(|b| b.max_start >= start && b.min_start < end)
                    .map(|b| b.min_start.max(start))
            })
    }

    /// The bytes [`RollupSeries::upsert`] and [`RollupSeries::gc`] account for.
    pub fn bytes(&self) -> i64 {
        self.blocks.iter().map(|b| b.size() as i64).sum::<i64>() + self.tail.len() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roll(start: i64, v: f64) -> Rollup {
        Rollup::from_sorted(9, start, 60_000, &[(start, v), (start + 10_000, v + 1.5)]).unwrap()
    }

    #[test]
    fn sealed_blocks_round_trip_and_take_corrections() {
        let mut s = RollupSeries::default();
        let mut bytes = 0;
        for i in 0..400 {
            bytes += s.upsert(roll(i * 60_000, (i % 17) as f64 * 0.25));
        }
        assert!(s.blocks.len() >= 2);
        let all = s.range(9, 0, i64::MAX);
        assert_eq!(all.len(), 400);
        assert_eq!(all[123], roll(123 * 60_000, (123 % 17) as f64 * 0.25));
        // Compressed: far below the 80 bytes of an uncompressed rollup.
        assert!(bytes < 400 * 30, "{bytes} bytes for 400 rollups");
        // A correction to a sealed window replaces it.
        s.upsert(roll(5 * 60_000, 100.0));
        let r = s.range(9, 5 * 60_000, 5 * 60_000);
        assert_eq!(r, vec![roll(5 * 60_000, 100.0)]);
        assert_eq!(s.range(9, 0, i64::MAX).len(), 400);
        // The tail stays short: older rollups are in blocks of up to 120.
        let (keep, moving) = tail_policy(60_000);
        let n = s.tail_rows(9).len();
        assert!(
            n < keep + moving && n == s.tail_rows as usize,
            "{n} in the tail"
        );
        assert!(
            s.tail.len() < n * 48,
            "{} bytes for {n} packed rows",
            s.tail.len()
        );
        assert!(s.blocks.iter().all(|b| b.len() <= BLOCK));
        // A correction to a window in the tail, and to one just moved into a block.
        let last = 399 * 60_000;
        s.upsert(roll(last, 7.0));
        s.upsert(roll(last - 20 * 60_000, 8.0));
        assert_eq!(s.range(9, last, last), vec![roll(last, 7.0)]);
        assert_eq!(
            s.range(9, last - 20 * 60_000, last - 20 * 60_000),
            vec![roll(last - 20 * 60_000, 8.0)]
        );
        // Expiry is by whole block: the block of windows 0..119 goes, 120..239 stays.
        s.gc(200 * 60_000);
        assert_eq!(s.range(9, 0, i64::MAX)[0].start, 120 * 60_000);
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
        assert_eq!(s.range(9, 0, i64::MAX), rows);
        // The same bytes read as this build's layout are an error, not a panic.
        assert!(RollupSeries::unsnap(&mut Dec::new(&buf)).is_err());
        // And this build's layout round-trips.
        let mut out = Vec::new();
        s.snap(&mut Enc(&mut out));
        assert_eq!(
            RollupSeries::unsnap(&mut Dec::new(&out))
                .unwrap()
                .range(9, 0, i64::MAX),
            rows
        );
    }
}

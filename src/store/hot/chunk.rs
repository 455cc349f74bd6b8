//! Compressed chunks of one series: timestamps as delta-of-delta, values either as Gorilla XOR
//! or, where it is smaller, VictoriaMetrics-style: floats scaled to integers by a power of ten,
//! then delta (or delta-of-delta) divided by the deltas' common divisor, bit-packed with a
//! per-chunk adaptive width. The encoder tries each value codec and keeps the smallest, so a
//! chunk is never larger than plain Gorilla.
//!
//! Layout (bit stream, big endian within words):
//! ```text
//! 16 count | 64 first ts | [if count > 1: var zigzag first delta | 7 width | dod codes]
//! 2 value codec:
//!   0 Gorilla: 64 first value | XOR codes
//!   1 / 2 decimal delta / delta-of-delta: 5 exponent | var gcd | var zigzag first mantissa
//!         | [codec 2: var zigzag first delta] | 7 width | codes
//! code(width w): '0' + w bits of zigzag value, or '1' + var
//! var: 6 bits (len - 1) + len bits
//! ```

/// A sealed, compressed chunk.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    pub min_ts: i64,
    pub max_ts: i64,
    pub count: u16,
    /// The codec chosen for values.
    pub codec: ValueCodec,
    body: Body,
}

/// Where a sealed chunk's bytes are.
#[derive(Clone, Debug, PartialEq)]
enum Body {
    /// In memory, with the decoder's 8 padding bytes.
    Mem(Box<[u8]>),
    /// In the index's chunk files ([`super::chunkfile`]), without the padding.
    Disk(DiskRef),
}

/// How values are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueCodec {
    Gorilla = 0,
    DecimalDelta = 1,
    DecimalDod = 2,
}

/// Most samples a chunk holds (Prometheus's head chunks hold 120).
pub const CHUNK_SAMPLES: usize = 120;

use super::chunkfile::{ChunkFileError, ChunkFiles, DiskRef, Prefetched};
use super::snap::{Dec, DecError, Enc};

/// A bit stream being written: full 64-bit words go into `buf` (its first `len()` bytes; the
/// rest is room), the bits after them wait in `acc`; `bits` counts both. A boxed slice and a
/// count rather than a vector: an open head sits in every series' entry, and this takes 32
/// bytes of it instead of 40. `meta` is its owner's, in the 4 bytes the layout leaves after
/// the count (an open head's sample count and codec state: [`HeadMeta`]).
#[derive(Default)]
struct BitWriter<M = ()> {
    buf: Box<[u8]>,
    acc: u64,
    bits: u32,
    meta: M,
}

impl<M> BitWriter<M> {
    #[inline]
    fn write(&mut self, value: u64, n: u32) {
        debug_assert!(n <= 64);
        if n == 0 {
            return;
        }
        let value = if n == 64 {
            value
        } else {
            value & ((1u64 << n) - 1)
        };
        let free = 64 - self.bits % 64;
        if n < free {
            self.acc |= value << (free - n);
            self.bits += n;
        } else {
            // The accumulator fills: its word goes into the buffer, the rest starts the next.
            let hi = n - free;
            self.acc |= value >> hi;
            self.bits += free;
            self.push_word();
            self.acc = if hi == 0 { 0 } else { value << (64 - hi) };
            self.bits += hi;
        }
    }
    /// Moves the full accumulator into the buffer (its last full word), which grows by 32
    /// bytes at a time, not by doubling (an open chunk lives long and is a few hundred bytes).
    fn push_word(&mut self) {
        let at = self.len() - 8;
        if at + 8 > self.buf.len() {
            self.reserve_total(at + 32);
        }
        self.buf[at..at + 8].copy_from_slice(&self.acc.to_be_bytes());
    }
    /// Bytes of full words written.
    fn len(&self) -> usize {
        (self.bits / 64) as usize * 8
    }
    /// Bits waiting in the accumulator.
    fn nbits(&self) -> u32 {
        self.bits % 64
    }
    /// Makes the buffer `n` bytes long if it is shorter (exactly: no slack beyond it).
    fn reserve_total(&mut self, n: usize) {
        if n > self.buf.len() {
            let mut v = std::mem::take(&mut self.buf).into_vec();
            v.reserve_exact(n - v.len());
            v.resize(n, 0);
            self.buf = v.into_boxed_slice();
        }
    }
    /// The full words written.
    fn words(&self) -> &[u8] {
        &self.buf[..self.len()]
    }
    /// A self-delimiting unsigned: 6 bits (bit length - 1), then the bits.
    fn write_var(&mut self, v: u64) {
        let len = bit_len(v).max(1);
        self.write(u64::from(len - 1), 6);
        self.write(v, len);
    }
    fn bit_len(&self) -> usize {
        self.bits as usize
    }
    /// Empties it, keeping its buffer.
    fn clear(&mut self) {
        self.acc = 0;
        self.bits = 0;
    }
    /// Writes every bit `other` holds.
    fn append<N>(&mut self, other: &BitWriter<N>) {
        let full = other.len();
        self.reserve_total(self.len() + full + 8);
        for word in other.buf[..full].chunks_exact(8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(word);
            self.write(u64::from_be_bytes(b), 64);
        }
        let rest = other.nbits();
        if rest > 0 {
            self.write(other.acc >> (64 - rest), rest);
        }
    }
    /// The bits written, in a vector of exactly its size (one allocation): the full words, the
    /// accumulator's bytes, then 8 bytes of padding so that a reader can always load 8 bytes
    /// past any position. The writer is left to be cleared and reused.
    fn to_bytes(&self) -> Vec<u8> {
        let bytes = self.nbits().div_ceil(8) as usize;
        let len = self.len();
        let mut out = Vec::with_capacity(len + bytes + 8);
        out.extend_from_slice(&self.buf[..len]);
        out.extend_from_slice(&self.acc.to_be_bytes()[..bytes]);
        out.extend_from_slice(&[0u8; 8]);
        out
    }
}

struct BitReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    #[inline]
    fn peek64(&self) -> u64 {
        let byte = self.pos >> 3;
        let shift = (self.pos & 7) as u32;
        let w = match self.buf.get(byte..byte + 8) {
            Some(s) => u64::from_be_bytes(s.try_into().expect("8 bytes")),
            None => {
                let mut b = [0u8; 8];
                let tail = self.buf.get(byte..).unwrap_or_default();
                b[..tail.len()].copy_from_slice(tail);
                u64::from_be_bytes(b)
            }
        };
        let w = w << shift;
        if shift == 0 {
            w
        } else {
            w | (self.buf.get(byte + 8).copied().unwrap_or(0) as u64) >> (8 - shift)
        }
    }
    #[inline]
    fn read(&mut self, bits: u32) -> u64 {
        if bits == 0 {
            return 0;
        }
        // A damaged stream may ask for more; it decodes to garbage, never panics.
        let bits = bits.min(64);
        let v = self.peek64() >> (64 - bits);
        self.pos += bits as usize;
        v
    }
    fn read_var(&mut self) -> u64 {
        let len = self.read(6) as u32 + 1;
        self.read(len)
    }
    #[inline]
    fn bit(&mut self) -> bool {
        self.read(1) == 1
    }
}

#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn bit_len(v: u64) -> u32 {
    64 - v.leading_zeros()
}

/// Picks the width that minimises the adaptive code's size for these values: a value of `len`
/// bits costs `1 + w` at width `w` when `len <= w`, else `7 + len`. One pass over the lengths
/// with the cost of those above `w` kept as a running sum (the double loop it replaces was 83 %
/// of a rollup block's encoding: 65 x 65 steps per column and codec tried, whatever the rows).
fn best_width(values: &[u64]) -> (u32, usize) {
    let mut hist = [0usize; 65];
    for &v in values {
        hist[bit_len(v) as usize] += 1;
    }
    // Widths above the longest length only cost more.
    let top = hist.iter().rposition(|&n| n > 0).unwrap_or(0);
    let mut above: usize = hist.iter().enumerate().map(|(len, &n)| n * (7 + len)).sum();
    let mut at_most = 0usize;
    let mut best = (64u32, usize::MAX);
    for (w, &n) in hist.iter().enumerate().take(top + 1) {
        above -= n * (7 + w);
        at_most += n;
        let cost = at_most * (1 + w) + above;
        if cost < best.1 {
            best = (w as u32, cost);
        }
    }
    best
}

fn write_codes(w: &mut BitWriter, values: &[u64]) {
    let (width, _) = best_width(values);
    w.write(u64::from(width), 7);
    for &v in values {
        let len = bit_len(v);
        if len <= width {
            w.write(0, 1);
            w.write(v, width);
        } else {
            w.write(1, 1);
            w.write(u64::from(len - 1), 6);
            w.write(v, len);
        }
    }
}

#[inline]
fn read_code(r: &mut BitReader<'_>, width: u32) -> u64 {
    if !r.bit() {
        r.read(width)
    } else {
        let len = r.read(6) as u32 + 1;
        r.read(len)
    }
}

const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// The smallest exponent `e` with `round(v * 10^e) / 10^e == v` bit for bit, if any.
fn decimal_exponent(v: f64) -> Option<u32> {
    if !v.is_finite() || (v == 0.0 && v.is_sign_negative()) {
        return None;
    }
    for (e, &p) in POW10.iter().enumerate() {
        let m = (v * p).round();
        if m.abs() >= 9.007_199_254_740_992e15 {
            return None;
        }
        if (m / p).to_bits() == v.to_bits() {
            return Some(e as u32);
        }
    }
    None
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn encode_gorilla(w: &mut BitWriter, values: &[f64]) {
    let mut prev = values[0].to_bits();
    w.write(prev, 64);
    let (mut lead, mut trail) = (u32::MAX, 0u32);
    for v in &values[1..] {
        let bits = v.to_bits();
        let x = bits ^ prev;
        prev = bits;
        if x == 0 {
            w.write(0, 1);
            continue;
        }
        w.write(1, 1);
        let l = x.leading_zeros().min(31);
        let t = x.trailing_zeros();
        if lead != u32::MAX && l >= lead && t >= trail {
            w.write(0, 1);
            w.write(x >> trail, 64 - lead - trail);
        } else {
            lead = l;
            trail = t;
            let sig = 64 - l - t;
            w.write(1, 1);
            w.write(u64::from(l), 5);
            w.write(u64::from(sig - 1), 6);
            w.write(x >> t, sig);
        }
    }
}

fn encode_decimal(w: &mut BitWriter, values: &[f64], exp: u32, dod: bool) {
    let mut d = Decimals::default();
    d.prepare(values, exp);
    d.encode(w, exp, dod);
}

/// The integer mantissas of a value column at one exponent, their deltas and their deltas of
/// deltas: computed once for both decimal codecs, in buffers a thread reuses
/// ([`write_best_values`]).
#[derive(Default)]
struct Decimals {
    ints: Vec<i64>,
    deltas: Vec<i64>,
    /// The first delta, then the deltas of deltas (the deltas again when there are fewer
    /// than two).
    dods: Vec<i64>,
    codes: Vec<u64>,
}

impl Decimals {
    fn prepare(&mut self, values: &[f64], exp: u32) {
        let p = POW10[exp as usize];
        self.ints.clear();
        self.ints
            .extend(values.iter().map(|v| (v * p).round() as i64));
        self.deltas.clear();
        self.deltas
            .extend(self.ints.windows(2).map(|x| x[1].wrapping_sub(x[0])));
        self.dods.clear();
        if self.deltas.len() > 1 {
            self.dods.push(self.deltas[0]);
            self.dods
                .extend(self.deltas.windows(2).map(|x| x[1].wrapping_sub(x[0])));
        } else {
            self.dods.extend_from_slice(&self.deltas);
        }
    }

    fn encode(&mut self, w: &mut BitWriter, exp: u32, dod: bool) {
        let deltas = if dod { &self.dods } else { &self.deltas };
        // The common divisor of everything after the leading delta(s).
        let skip = usize::from(dod);
        let g = deltas
            .iter()
            .skip(skip)
            .fold(0u64, |g, &d| gcd(g, d.unsigned_abs()))
            .max(1);
        w.write(u64::from(exp), 5);
        w.write_var(g);
        w.write_var(zigzag(self.ints[0]));
        if dod {
            w.write_var(zigzag(deltas.first().copied().unwrap_or(0)));
        }
        self.codes.clear();
        self.codes
            .extend(deltas.iter().skip(skip).map(|&d| zigzag(d / g as i64)));
        write_codes(w, &self.codes);
    }
}

/// What [`write_best_values`] reuses from call to call on a thread: the decimal columns and
/// two trial writers (the one being tried and the smallest so far). A block of rollups
/// encodes nine columns, each tried with three codecs: with fresh buffers that was about 15
/// allocations a column (two thirds of them from the decimal codecs' vectors and writers
/// growing 32 bytes at a time), and with the allocator's arena locks (`tcache:false`, see
/// `.cargo/config.toml`) they showed as 4 % of the job's CPU.
#[derive(Default)]
struct Trials {
    decimals: Decimals,
    trial: BitWriter,
    best: BitWriter,
}

thread_local! {
    static TRIALS: std::cell::RefCell<Trials> = std::cell::RefCell::default();
}

impl Chunk {
    /// Encodes samples sorted by time with distinct timestamps (1..=65535 of them), with the
    /// smallest value codec.
    pub fn encode(samples: &[(i64, f64)]) -> Chunk {
        Self::encode_with(samples, None)
    }

    /// Encodes with the given value codec only (`None`: the smallest); a decimal codec that
    /// cannot represent the values falls back to Gorilla. For comparisons in benchmarks.
    pub fn encode_with(samples: &[(i64, f64)], only: Option<ValueCodec>) -> Chunk {
        assert!(
            !samples.is_empty() && samples.len() <= u16::MAX as usize,
            "chunk of {} samples",
            samples.len()
        );
        let n = samples.len();
        let values: Vec<f64> = samples.iter().map(|s| s.1).collect();
        let (codec, bytes) = with_output(|w| {
            write_timestamps(w, samples.iter().map(|s| s.0), n);
            write_best_values(w, &values, only)
        });
        Chunk {
            min_ts: samples[0].0,
            max_ts: samples[n - 1].0,
            count: n as u16,
            codec,
            body: Body::Mem(bytes.into_boxed_slice()),
        }
    }

    /// A chunk whose bytes are on disk at `r`.
    pub fn on_disk(min_ts: i64, max_ts: i64, count: u16, codec: ValueCodec, r: DiskRef) -> Chunk {
        Chunk {
            min_ts,
            max_ts,
            count,
            codec,
            body: Body::Disk(r),
        }
    }

    /// Encoded size in bytes (without the 8 padding bytes), wherever they are.
    pub fn size(&self) -> usize {
        match &self.body {
            Body::Mem(b) => b.len() - 8,
            Body::Disk(r) => r.len as usize,
        }
    }

    /// Heap bytes of the encoded chunk (0 once on disk).
    pub fn heap_bytes(&self) -> usize {
        match &self.body {
            Body::Mem(b) => b.len(),
            Body::Disk(_) => 0,
        }
    }

    /// The encoded bytes (without padding) while they are in memory.
    pub fn mem_bytes(&self) -> Option<&[u8]> {
        match &self.body {
            Body::Mem(b) => Some(&b[..b.len() - 8]),
            Body::Disk(_) => None,
        }
    }

    /// Where the bytes are on disk, once spilled.
    pub fn disk_ref(&self) -> Option<DiskRef> {
        match self.body {
            Body::Mem(_) => None,
            Body::Disk(r) => Some(r),
        }
    }

    /// The bytes now live at `r` (they were written there from [`Chunk::mem_bytes`]).
    pub fn spilled(&mut self, r: DiskRef) {
        debug_assert_eq!(r.len as usize, self.size());
        self.body = Body::Disk(r);
    }

    /// Appends the chunk's samples to `out`, reading them from `files` when on disk
    /// (`scratch` holds the bytes read). On an error nothing is appended.
    pub fn decode(
        &self,
        files: Option<&ChunkFiles>,
        scratch: &mut Vec<u8>,
        out: &mut Vec<(i64, f64)>,
    ) -> Result<(), ChunkFileError> {
        self.decode_from(files, None, scratch, out)
    }

    /// [`Chunk::decode`], taking the bytes from `pre` when they were read ahead
    /// ([`ChunkFiles::read_many`]).
    pub fn decode_from(
        &self,
        files: Option<&ChunkFiles>,
        pre: Option<&Prefetched>,
        scratch: &mut Vec<u8>,
        out: &mut Vec<(i64, f64)>,
    ) -> Result<(), ChunkFileError> {
        match &self.body {
            Body::Mem(b) => decode_bytes(b, out),
            Body::Disk(r) => {
                let files = files.ok_or(ChunkFileError::NoFiles)?;
                // Read ahead, the bytes are not padded: the reader pads a load past the end.
                let bytes = match pre.and_then(|p| p.get(*r)) {
                    Some(b) => b,
                    None => {
                        files.read(*r, scratch)?;
                        scratch.extend_from_slice(&[0; 8]);
                        &scratch[..]
                    }
                };
                let base = out.len();
                decode_bytes(bytes, out);
                if out.len() - base != usize::from(self.count) {
                    out.truncate(base);
                    files
                        .read_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Err(ChunkFileError::Corrupt {
                        path: files.dir().join(format!("{:08}.chunks", r.seg)),
                        off: r.off,
                    });
                }
            }
        }
        Ok(())
    }

    /// Appends the samples of a chunk in memory to `out` (one on disk appends nothing: use
    /// [`Chunk::decode`]).
    pub fn decode_into(&self, out: &mut Vec<(i64, f64)>) {
        if let Body::Mem(b) = &self.body {
            decode_bytes(b, out);
        }
    }
}

/// Decodes padded chunk bytes (see [`Chunk`]) onto `out`.
fn decode_bytes(buf: &[u8], out: &mut Vec<(i64, f64)>) {
    let mut r = BitReader { buf, pos: 0 };
    let base = out.len();
    read_timestamps(&mut r, |t| out.push((t, 0.0)));
    let vals = &mut out[base..];
    read_values(&mut r, vals.len(), |i, v| vals[i].1 = v);
}

/// The timestamp section: 16 count | 64 first | [var zigzag first delta | 7 width | dod codes].
fn write_timestamps(w: &mut BitWriter, ts: impl Iterator<Item = i64> + Clone, n: usize) {
    let mut it = ts.clone();
    let first = it.next().expect("at least one timestamp");
    w.write(n as u64, 16);
    w.write(first as u64, 64);
    if n > 1 {
        let second = it.next().expect("n timestamps");
        w.write_var(zigzag(second.wrapping_sub(first)));
        let dods: Vec<u64> = ts
            .clone()
            .zip(ts.clone().skip(1))
            .zip(ts.skip(2))
            .map(|((a, b), c)| zigzag(c.wrapping_sub(b).wrapping_sub(b.wrapping_sub(a))))
            .collect();
        write_codes(w, &dods);
    }
}

/// Reads a timestamp section, calling `push` for each in order; returns how many.
fn read_timestamps(r: &mut BitReader<'_>, mut push: impl FnMut(i64)) -> usize {
    let n = r.read(16) as usize;
    let mut t = r.read(64) as i64;
    push(t);
    if n > 1 {
        let mut d = unzigzag(r.read_var());
        t = t.wrapping_add(d);
        push(t);
        let width = r.read(7) as u32;
        for _ in 2..n {
            d = d.wrapping_add(unzigzag(read_code(r, width)));
            t = t.wrapping_add(d);
            push(t);
        }
    }
    n
}

/// Writes a value section with the smallest codec (or `only`; a decimal codec that cannot
/// represent the values falls back to Gorilla); returns the codec.
fn write_best_values(w: &mut BitWriter, values: &[f64], only: Option<ValueCodec>) -> ValueCodec {
    let exp = values
        .iter()
        .try_fold(0u32, |e, &v| decimal_exponent(v).map(|x| x.max(e)));
    let all = [
        ValueCodec::Gorilla,
        ValueCodec::DecimalDelta,
        ValueCodec::DecimalDod,
    ];
    let forced = [only.unwrap_or(ValueCodec::Gorilla)];
    let candidates: &[ValueCodec] = match (exp, only) {
        (None, _) | (_, Some(ValueCodec::Gorilla)) => &[ValueCodec::Gorilla],
        (Some(_), Some(_)) => &forced,
        (Some(_), None) => &all,
    };
    let exp = exp.unwrap_or(0);
    if let [codec] = candidates {
        write_values(w, *codec, values, exp);
        return *codec;
    }
    // Try every applicable codec on a scratch writer; append the smallest (the first of
    // equals) to `w`, bit for bit what writing it there would have written.
    TRIALS.with(|cell| {
        let mut guard = cell.borrow_mut();
        let t = &mut *guard;
        t.decimals.prepare(values, exp);
        let mut best = None;
        for &c in candidates {
            t.trial.clear();
            t.trial.write(c as u64, 2);
            match c {
                ValueCodec::Gorilla => encode_gorilla(&mut t.trial, values),
                ValueCodec::DecimalDelta => t.decimals.encode(&mut t.trial, exp, false),
                ValueCodec::DecimalDod => t.decimals.encode(&mut t.trial, exp, true),
            }
            if best.is_none() || t.trial.bit_len() < t.best.bit_len() {
                std::mem::swap(&mut t.trial, &mut t.best);
                best = Some(c);
            }
        }
        w.append(&t.best);
        best.unwrap_or(ValueCodec::Gorilla)
    })
}

/// Reads a value section of `n` values, calling `set(i, value)` for each.
fn read_values(r: &mut BitReader<'_>, n: usize, mut set: impl FnMut(usize, f64)) {
    if n == 0 {
        return;
    }
    match r.read(2) {
        0 => {
            let mut prev = r.read(64);
            set(0, f64::from_bits(prev));
            let (mut lead, mut trail) = (0u32, 0u32);
            for i in 1..n {
                if r.bit() {
                    if r.bit() {
                        lead = r.read(5) as u32;
                        let sig = r.read(6) as u32 + 1;
                        trail = 64u32.saturating_sub(lead + sig);
                    }
                    let sig = 64 - lead - trail;
                    prev ^= r.read(sig).checked_shl(trail).unwrap_or(0);
                }
                set(i, f64::from_bits(prev));
            }
        }
        codec => {
            let p = POW10[(r.read(5) as usize).min(POW10.len() - 1)];
            let g = r.read_var() as i64;
            let mut m = unzigzag(r.read_var());
            set(0, m as f64 / p);
            if codec == 1 {
                let width = r.read(7) as u32;
                for i in 1..n {
                    m = m.wrapping_add(unzigzag(read_code(r, width)).wrapping_mul(g));
                    set(i, m as f64 / p);
                }
            } else {
                let mut d = unzigzag(r.read_var());
                let width = r.read(7) as u32;
                for i in 1..n {
                    if i > 1 {
                        d = d.wrapping_add(unzigzag(read_code(r, width)).wrapping_mul(g));
                    }
                    m = m.wrapping_add(d);
                    set(i, m as f64 / p);
                }
            }
        }
    }
}

/// Columns of values over one shared, sorted timestamp column, in one buffer: the timestamp
/// section once, then each column's value section with its own smallest codec. One allocation
/// per group instead of a [`Chunk`] (and its timestamps) per column.
pub fn encode_columns(ts: &[i64], cols: &[Vec<f64>]) -> Box<[u8]> {
    assert!(
        !ts.is_empty() && ts.len() <= u16::MAX as usize,
        "column group of {} rows",
        ts.len()
    );
    let ((), b) = with_output(|w| {
        write_timestamps(w, ts.iter().copied(), ts.len());
        for c in cols {
            debug_assert_eq!(c.len(), ts.len());
            write_best_values(w, c, None);
        }
    });
    b.into_boxed_slice()
}

thread_local! {
    /// The writer [`with_output`] lends: a sealed chunk or a block is written into a buffer
    /// that has grown to the thread's largest, then copied out at its exact size, rather
    /// than into a fresh writer that grows 32 bytes at a time (a dozen reallocations for a
    /// chunk of 120 samples) and is shrunk at the end.
    static OUTPUT: std::cell::RefCell<BitWriter> = std::cell::RefCell::default();
}

/// Runs `f` on the thread's empty output writer; returns its result and the bytes written
/// ([`BitWriter::to_bytes`]).
fn with_output<R>(f: impl FnOnce(&mut BitWriter) -> R) -> (R, Vec<u8>) {
    OUTPUT.with(|cell| {
        let mut w = cell.borrow_mut();
        w.clear();
        let r = f(&mut w);
        (r, w.to_bytes())
    })
}

/// Decodes a buffer of [`encode_columns`]: the timestamps into `ts` and each column into
/// `cols` (cleared first; `cols.len()` columns are read).
pub fn decode_columns(bytes: &[u8], ts: &mut Vec<i64>, cols: &mut [Vec<f64>]) {
    ts.clear();
    let mut r = BitReader { buf: bytes, pos: 0 };
    let n = read_timestamps(&mut r, |t| ts.push(t));
    for c in cols.iter_mut() {
        c.clear();
        c.resize(n, 0.0);
        read_values(&mut r, n, |i, v| c[i] = v);
    }
}

fn write_values(w: &mut BitWriter, codec: ValueCodec, values: &[f64], exp: u32) {
    w.write(codec as u64, 2);
    match codec {
        ValueCodec::Gorilla => encode_gorilla(w, values),
        ValueCodec::DecimalDelta => encode_decimal(w, values, exp, false),
        ValueCodec::DecimalDod => encode_decimal(w, values, exp, true),
    }
}

/// The open chunk of a series, compressed as samples are appended: per sample, the timestamp
/// as delta-of-delta in Prometheus's buckets and the value, in one bit stream. Values are
/// written in one of two modes, chosen per head:
/// - **decimal** (VictoriaMetrics's idea, streamed): while every value is a decimal with at
///   most 15 digits after the point, the value is an integer mantissa at the head's exponent
///   (the largest any of its values needs) and each sample stores the mantissa's delta: about
///   1-2.5 bytes a sample on the fleet workload (CPU with 3 decimals, byte counts, counters);
/// - **Gorilla** (as Prometheus's head chunks): the value XORed with the previous one, about
///   3.4-7 bytes a sample; taken when a value is not such a decimal (NaN, staleness markers,
///   most results of arithmetic).
///
/// A value that needs a larger exponent, or that is not a decimal, re-encodes the head once in
/// the mode all its values fit (at most 120 samples). Sealing decodes the head and re-encodes
/// it with [`Chunk::encode`]'s codecs. Timestamps must increase.
///
/// ```text
/// sample 0: 64 ts | value 0
/// sample 1: var zigzag delta | value
/// sample n: dod '0' | '10' 14 bits | '110' 17 | '1110' 20 | '1111' 64 ; value
/// Gorilla: value 0: 64 bits; value: '0' same | '10' bits in the previous window
///          | '11' 5 leading, 6 (len - 1), bits
/// decimal: value 0: var zigzag mantissa; value: z = zigzag(mantissa delta >> shift): '0'
///          (z = 0) | '10' 7 bits | '110' 13 | '1110' 20 | '11110' 32 | '11111' 64
/// ```
///
/// `shift` is the trailing zero bits every mantissa delta of the head has (byte counts in
/// KiB or pages: 10 or 12), set by the first non-zero delta; a delta with fewer re-encodes.
///
/// ```text
/// ```
#[derive(Default)]
pub struct Appender {
    /// The bit stream, and in its spare room the count and codec state. The first sample's
    /// time is the stream's first word, so it is not kept apart: 64 bytes in every series'
    /// entry instead of 80 (the entry in jemalloc's 160-byte class instead of 192).
    w: BitWriter<HeadMeta>,
    last_ts: i64,
    delta: i64,
    /// Gorilla: the last value's bits; decimal: the last mantissa.
    last_bits: u64,
    /// Decimal: the last mantissa delta, shifted (`lead` is 1 when values are written as
    /// delta-of-delta: counters, chosen at the 8th sample and at each re-encode).
    last_delta: i64,
}

/// An open head's count and codec state, kept in its bit writer's spare bytes.
#[derive(Clone, Copy)]
struct HeadMeta {
    /// Samples held: at most [`CHUNK_SAMPLES`] (the hot index seals a head there).
    count: u8,
    lead: u8,
    trail: u8,
    /// The decimal exponent of the values, or [`GORILLA`]. In decimal mode `trail` is the
    /// shift of the mantissa deltas ([`NO_SHIFT`] until the first non-zero one).
    exp: u8,
}

impl Default for HeadMeta {
    fn default() -> Self {
        HeadMeta {
            count: 0,
            lead: u8::MAX,
            trail: 0,
            exp: GORILLA,
        }
    }
}

/// [`HeadMeta::exp`] of a head in Gorilla mode.
const GORILLA: u8 = u8::MAX;
/// The shift of a decimal head whose deltas were all zero so far.
const NO_SHIFT: u8 = 63;

/// A decimal head's value codes: a zero is one `0` bit; otherwise `k` one bits, a `0` bit
/// unless `k` is the last bucket's, and the zigzag value in `DECIMAL_BUCKETS[k - 1]` bits (the
/// smallest bucket it fits). One table for the writer, the reader and [`code_bits`].
const DECIMAL_BUCKETS: [u32; 5] = [7, 13, 20, 32, 64];

/// The bucket (index into [`DECIMAL_BUCKETS`]) of a non-zero zigzag value.
fn decimal_bucket(z: u64) -> usize {
    let n = bit_len(z);
    DECIMAL_BUCKETS
        .iter()
        .position(|&w| n <= w)
        .unwrap_or(DECIMAL_BUCKETS.len() - 1)
}

/// Bits of a decimal head's value code for `z`.
fn code_bits(z: u64) -> u32 {
    if z == 0 {
        return 1;
    }
    let k = decimal_bucket(z);
    let prefix = (k + 1) as u32 + u32::from(k + 1 < DECIMAL_BUCKETS.len());
    prefix + DECIMAL_BUCKETS[k]
}

/// Whether delta-of-delta codes mantissas in fewer bits than deltas.
fn dod_smaller(ms: &[i64], shift: u32) -> bool {
    let (mut plain, mut dod, mut last) = (0u64, 0u64, 0i64);
    for w in ms.windows(2) {
        let d = w[1].wrapping_sub(w[0]) >> shift;
        plain += u64::from(code_bits(zigzag(d)));
        dod += u64::from(code_bits(zigzag(d.wrapping_sub(last))));
        last = d;
    }
    dod < plain
}

/// The trailing zero bits of a mantissa delta (`NO_SHIFT` for zero).
fn delta_shift(d: i64) -> u8 {
    if d == 0 {
        NO_SHIFT
    } else {
        (d.trailing_zeros() as u8).min(NO_SHIFT - 1)
    }
}

/// The mantissa of `v` at exponent `exp`, when `v` is exactly that decimal.
fn mantissa(v: f64, exp: u8) -> Option<i64> {
    let p = *POW10.get(exp as usize)?;
    let m = (v * p).round();
    (m.abs() < 9.007_199_254_740_992e15 && (m / p).to_bits() == v.to_bits()).then_some(m as i64)
}

impl Appender {
    /// Samples held.
    pub fn len(&self) -> usize {
        self.w.meta.count as usize
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.w.meta.count == 0
    }

    /// The first and last timestamps (meaningless when empty).
    pub fn first_ts(&self) -> i64 {
        // The first sample's time is the stream's first word (written whole, 64 bits).
        self.w
            .buf
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, |b: [u8; 8]| i64::from_be_bytes(b))
    }

    pub fn last_ts(&self) -> i64 {
        self.last_ts
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.w.buf.len()
    }

    /// Bytes of the bit stream.
    pub fn size(&self) -> usize {
        self.w.bit_len().div_ceil(8)
    }

    fn write(&mut self, value: u64, bits: u32) {
        self.w.write(value, bits);
    }

    /// Appends a sample; `ts` must be after the last one (callers route others elsewhere), and
    /// the head must hold fewer than 255 (the hot index seals it at [`CHUNK_SAMPLES`]).
    pub fn push(&mut self, ts: i64, v: f64) {
        debug_assert!(self.w.meta.count == 0 || ts > self.last_ts);
        debug_assert!(
            self.w.meta.count < u8::MAX,
            "an open head holds at most 255 samples"
        );
        if self.w.meta.count == 0 {
            self.w.meta.exp = decimal_exponent(v).map_or(GORILLA, |e| e as u8);
            if self.w.meta.exp != GORILLA {
                (self.w.meta.lead, self.w.meta.trail) = (0, NO_SHIFT);
            }
        } else if self.w.meta.exp != GORILLA {
            match mantissa(v, self.w.meta.exp) {
                None => return self.rebuild(ts, v),
                Some(m) => {
                    let s = delta_shift(m.wrapping_sub(self.last_bits as i64));
                    if self.w.meta.trail == NO_SHIFT {
                        // Every delta so far was zero, written the same at any shift.
                        self.w.meta.trail = s;
                    } else if s < self.w.meta.trail {
                        return self.rebuild(ts, v);
                    }
                }
            }
        }
        self.push_in_mode(ts, v);
        if self.w.meta.count == 8 && self.w.meta.exp != GORILLA && self.w.meta.lead == 0 {
            let mut pts = Vec::with_capacity(8);
            self.decode_into(&mut pts);
            let ms: Vec<i64> = pts
                .iter()
                .filter_map(|p| mantissa(p.1, self.w.meta.exp))
                .collect();
            if dod_smaller(&ms, u32::from(self.w.meta.trail.min(NO_SHIFT - 1))) {
                let last = pts.pop().expect("8 samples");
                self.reencode(pts, last, true);
            }
        }
    }

    /// Re-encodes the head and `(ts, v)` in the mode every value fits: decimal at the largest
    /// exponent any of them needs, else Gorilla.
    #[cold]
    fn rebuild(&mut self, ts: i64, v: f64) {
        let mut pts = Vec::with_capacity(self.len() + 1);
        self.decode_into(&mut pts);
        self.reencode(pts, (ts, v), false);
    }

    /// Encodes `pts` and `last` anew in the mode all fit (`dod`: also when delta-of-delta was
    /// found smaller for the head so far).
    fn reencode(&mut self, mut pts: Vec<(i64, f64)>, last: (i64, f64), dod: bool) {
        pts.push(last);
        let exp = pts
            .iter()
            .try_fold(0u32, |e, p| decimal_exponent(p.1).map(|x| x.max(e)))
            .map(|e| e as u8)
            .filter(|&e| pts.iter().all(|p| mantissa(p.1, e).is_some()))
            .unwrap_or(GORILLA);
        let shift = if exp == GORILLA {
            0
        } else {
            pts.windows(2)
                .filter_map(|w| Some(mantissa(w[1].1, exp)?.wrapping_sub(mantissa(w[0].1, exp)?)))
                .map(delta_shift)
                .min()
                .unwrap_or(NO_SHIFT)
        };
        let dod = exp != GORILLA && {
            let ms: Vec<i64> = pts.iter().filter_map(|p| mantissa(p.1, exp)).collect();
            dod || dod_smaller(&ms, u32::from(shift.min(NO_SHIFT - 1)))
        };
        let mut a = Appender::default();
        a.w.meta.exp = exp;
        if exp != GORILLA {
            (a.w.meta.lead, a.w.meta.trail) = (u8::from(dod), shift);
        }
        a.w.reserve_total(self.w.buf.len());
        for (t, x) in pts {
            a.push_in_mode(t, x);
        }
        *self = a;
    }

    /// Appends in the head's mode (the value fits it).
    fn push_in_mode(&mut self, ts: i64, v: f64) {
        match self.w.meta.count {
            0 => {
                self.write(ts as u64, 64);
                self.last_ts = ts;
                self.w.meta.count = 1;
                if self.w.meta.exp == GORILLA {
                    self.last_bits = v.to_bits();
                    self.write(self.last_bits, 64);
                } else {
                    let m = mantissa(v, self.w.meta.exp).unwrap_or_default();
                    self.w.write_var(zigzag(m));
                    self.last_bits = m as u64;
                }
                return;
            }
            1 => {
                let d = ts.wrapping_sub(self.last_ts);
                let z = zigzag(d);
                let len = bit_len(z).max(1);
                self.write(u64::from(len - 1), 6);
                self.write(z, len);
                self.delta = d;
            }
            _ => {
                let d = ts.wrapping_sub(self.last_ts);
                let dod = d.wrapping_sub(self.delta);
                let fits = |n: u32| dod >= -(1i64 << (n - 1)) && dod < (1i64 << (n - 1));
                if dod == 0 {
                    self.write(0, 1);
                } else if fits(14) {
                    self.write(0b10, 2);
                    self.write(dod as u64, 14);
                } else if fits(17) {
                    self.write(0b110, 3);
                    self.write(dod as u64, 17);
                } else if fits(20) {
                    self.write(0b1110, 4);
                    self.write(dod as u64, 20);
                } else {
                    self.write(0b1111, 4);
                    self.write(dod as u64, 64);
                }
                self.delta = d;
            }
        }
        if self.w.meta.exp != GORILLA {
            let m = mantissa(v, self.w.meta.exp).unwrap_or_default();
            let shift = u32::from(self.w.meta.trail.min(NO_SHIFT - 1));
            let d = m.wrapping_sub(self.last_bits as i64) >> shift;
            let z = if self.w.meta.lead == 1 {
                zigzag(d.wrapping_sub(self.last_delta))
            } else {
                zigzag(d)
            };
            self.last_delta = d;
            if z == 0 {
                self.write(0, 1);
            } else {
                // k + 1 one bits, then a zero unless this is the last bucket.
                let k = decimal_bucket(z);
                let last = k + 1 == DECIMAL_BUCKETS.len();
                let ones = (k + 1) as u32;
                let prefix = ((1u64 << ones) - 1) << u32::from(!last);
                self.write(prefix, ones + u32::from(!last));
                self.write(z, DECIMAL_BUCKETS[k]);
            }
            self.last_bits = m as u64;
            self.last_ts = ts;
            self.w.meta.count += 1;
            return;
        }
        let bits = v.to_bits();
        let x = bits ^ self.last_bits;
        if x == 0 {
            self.write(0, 1);
        } else {
            let l = x.leading_zeros().min(31);
            let t = x.trailing_zeros();
            if self.w.meta.lead != u8::MAX
                && l >= u32::from(self.w.meta.lead)
                && t >= u32::from(self.w.meta.trail)
            {
                let (lead, trail) = (u32::from(self.w.meta.lead), u32::from(self.w.meta.trail));
                self.write(0b10, 2);
                self.write(x >> trail, 64 - lead - trail);
            } else {
                let sig = 64 - l - t;
                self.write(0b11, 2);
                self.write(u64::from(l), 5);
                self.write(u64::from(sig - 1), 6);
                self.write(x >> t, sig);
                self.w.meta.lead = l as u8;
                self.w.meta.trail = t as u8;
            }
        }
        self.last_bits = bits;
        self.last_ts = ts;
        self.w.meta.count += 1;
    }

    /// Appends the samples to `out`, in time order.
    pub fn decode_into(&self, out: &mut Vec<(i64, f64)>) {
        if self.w.meta.count == 0 {
            return;
        }
        let mut bytes = Vec::with_capacity(self.w.len() + 16);
        bytes.extend_from_slice(self.w.words());
        bytes.extend_from_slice(&self.w.acc.to_be_bytes());
        bytes.extend_from_slice(&[0u8; 8]);
        let mut r = BitReader {
            buf: &bytes,
            pos: 0,
        };
        out.reserve(self.w.meta.count as usize);
        let decimal = self.w.meta.exp != GORILLA;
        let p = POW10[(self.w.meta.exp as usize).min(POW10.len() - 1)];
        let mut t = r.read(64) as i64;
        let mut bits = if decimal {
            unzigzag(r.read_var()) as u64
        } else {
            r.read(64)
        };
        let value = |bits: u64| {
            if decimal {
                bits as i64 as f64 / p
            } else {
                f64::from_bits(bits)
            }
        };
        out.push((t, value(bits)));
        let (mut d, mut lead, mut trail) = (0i64, 0u32, 0u32);
        let mut last_delta = 0i64;
        for i in 1..self.w.meta.count {
            if i == 1 {
                d = unzigzag(r.read_var());
            } else {
                let n = if !r.bit() {
                    0
                } else if !r.bit() {
                    14
                } else if !r.bit() {
                    17
                } else if !r.bit() {
                    20
                } else {
                    64
                };
                if n > 0 {
                    let raw = r.read(n);
                    // Sign-extend the n-bit two's complement value.
                    let dod = ((raw << (64 - n)) as i64) >> (64 - n);
                    d = d.wrapping_add(dod);
                }
            }
            t = t.wrapping_add(d);
            if decimal {
                let mut n = 0;
                if r.bit() {
                    // One more one bit per bucket; the last bucket has no closing zero.
                    for (k, &w) in DECIMAL_BUCKETS.iter().enumerate() {
                        if k + 1 == DECIMAL_BUCKETS.len() || !r.bit() {
                            n = w;
                            break;
                        }
                    }
                }
                let shift = u32::from(self.w.meta.trail.min(NO_SHIFT - 1));
                let mut d = unzigzag(r.read(n));
                if self.w.meta.lead == 1 {
                    d = d.wrapping_add(last_delta);
                }
                last_delta = d;
                bits = (bits as i64).wrapping_add(d.checked_shl(shift).unwrap_or(0)) as u64;
            } else if r.bit() {
                if r.bit() {
                    lead = r.read(5) as u32;
                    let sig = r.read(6) as u32 + 1;
                    trail = 64u32.saturating_sub(lead + sig);
                }
                bits ^= r.read(64 - lead - trail).checked_shl(trail).unwrap_or(0);
            }
            out.push((t, value(bits)));
        }
    }

    /// The samples, decoded.
    pub fn samples(&self) -> Vec<(i64, f64)> {
        let mut v = Vec::with_capacity(self.w.meta.count as usize);
        self.decode_into(&mut v);
        v
    }

    /// An appender holding `samples` (sorted, distinct times).
    pub fn from_samples(samples: &[(i64, f64)]) -> Appender {
        let mut a = Appender::default();
        for &(t, v) in samples {
            a.push(t, v);
        }
        a
    }
}

/// Checkpoint layout (see [`super::snap`]).
impl Chunk {
    pub fn snap(&self, e: &mut Enc<'_>) {
        e.i64(self.min_ts);
        e.i64(self.max_ts);
        e.u16(self.count);
        e.u8(self.codec as u8);
        // Version 4: where the bytes are.
        match &self.body {
            Body::Mem(b) => {
                e.u8(0);
                e.bytes(b);
            }
            Body::Disk(r) => {
                e.u8(1);
                e.u32(r.seg);
                e.u32(r.off);
                e.u32(r.len);
            }
        }
    }

    pub fn unsnap(d: &mut Dec<'_>) -> Result<Chunk, DecError> {
        let (min_ts, max_ts) = (d.i64("chunk min_ts")?, d.i64("chunk max_ts")?);
        let count = d.u16("chunk count")?;
        let codec = match d.u8("chunk codec")? {
            0 => ValueCodec::Gorilla,
            1 => ValueCodec::DecimalDelta,
            2 => ValueCodec::DecimalDod,
            _ => return Err(d.fail("chunk codec", "unknown codec")),
        };
        let on_disk = d.version() >= 4 && d.u8("chunk place")? == 1;
        let body = if on_disk {
            let r = DiskRef {
                seg: d.u32("chunk segment")?,
                off: d.u32("chunk offset")?,
                len: d.u32("chunk length")?,
            };
            if r.len == 0 {
                return Err(d.fail("chunk length", "zero"));
            }
            Body::Disk(r)
        } else {
            let bytes = d.bytes("chunk bytes")?;
            if bytes.len() < 8 {
                return Err(d.fail("chunk", "inconsistent header"));
            }
            Body::Mem(bytes.into())
        };
        if count == 0 || min_ts > max_ts {
            return Err(d.fail("chunk", "inconsistent header"));
        }
        Ok(Chunk {
            min_ts,
            max_ts,
            count,
            codec,
            body,
        })
    }
}

impl Appender {
    /// Reads the fields an append reads first and both ends of the buffer, which a read
    /// decodes (see `warm_up`).
    pub(crate) fn touch(&self) -> i64 {
        let (first, last) = (self.w.buf.first(), self.w.buf.last());
        self.last_ts ^ i64::from(*first.unwrap_or(&0) ^ *last.unwrap_or(&0))
    }

    pub fn snap(&self, e: &mut Enc<'_>) {
        e.u16(u16::from(self.w.meta.count));
        if self.w.meta.count == 0 {
            return;
        }
        e.bytes(self.w.words());
        e.u64(self.w.acc);
        e.u32(self.w.nbits());
        e.u8(self.w.meta.lead);
        e.u8(self.w.meta.trail);
        e.u8(self.w.meta.exp);
        e.i64(self.first_ts());
        e.i64(self.last_ts);
        e.i64(self.delta);
        e.u64(self.last_bits);
        e.i64(self.last_delta);
    }

    pub fn unsnap(d: &mut Dec<'_>) -> Result<Appender, DecError> {
        let count = d.u16("head count")?;
        if count == 0 {
            return Ok(Appender::default());
        }
        let buf: Box<[u8]> = d.bytes("head bytes")?.into();
        let len = match u32::try_from(buf.len()) {
            Ok(n) if n % 8 == 0 => n,
            _ => return Err(d.fail("head bytes", "not whole 64-bit words")),
        };
        let (acc, nbits) = (d.u64("head bits")?, d.u32("head bit count")?);
        if nbits >= 64 {
            return Err(d.fail("head bit count", "64 or more (a full word is in the bytes)"));
        }
        let count = u8::try_from(count)
            .map_err(|_| d.fail("head count", "more than 255 samples in an open head"))?;
        if buf.len() < 8 {
            return Err(d.fail("head bytes", "shorter than the first sample's time"));
        }
        let meta = HeadMeta {
            count,
            lead: d.u8("head lead")?,
            trail: d.u8("head trail")?,
            // Version 2 and older heads are all Gorilla.
            exp: if d.version() >= 3 {
                match d.u8("head exponent")? {
                    e if e == GORILLA || (e as usize) < POW10.len() => e,
                    _ => return Err(d.fail("head exponent", "out of range")),
                }
            } else {
                GORILLA
            },
        };
        let Some(bits) = len.checked_mul(8).and_then(|b| b.checked_add(nbits)) else {
            return Err(d.fail("head bytes", "longer than a head can be"));
        };
        let a = Appender {
            w: BitWriter {
                buf,
                acc,
                bits,
                meta,
            },
            last_ts: 0,
            delta: 0,
            last_bits: 0,
            last_delta: 0,
        };
        if d.i64("head first_ts")? != a.first_ts() {
            return Err(d.fail("head first_ts", "not the time the head's bytes start with"));
        }
        Ok(Appender {
            last_ts: d.i64("head last_ts")?,
            delta: d.i64("head delta")?,
            last_bits: d.u64("head last value")?,
            last_delta: if d.version() >= 3 {
                d.i64("head last mantissa delta")?
            } else {
                0
            },
            ..a
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The width search as first written (every width against every length): the oracle.
    fn best_width_by_trial(values: &[u64]) -> (u32, usize) {
        let mut best = (64u32, usize::MAX);
        for w in 0..=64u32 {
            let cost: usize = values
                .iter()
                .map(|&v| {
                    let len = bit_len(v);
                    if len <= w {
                        1 + w as usize
                    } else {
                        7 + len as usize
                    }
                })
                .sum();
            if cost < best.1 {
                best = (w, cost);
            }
        }
        best
    }

    #[test]
    fn the_width_search_picks_what_trying_every_width_picks() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for case in 0..2_000 {
            let n = 1 + (next() % 200) as usize;
            let values: Vec<u64> = (0..n)
                .map(|_| match case % 4 {
                    0 => next() >> (next() % 64),
                    1 => next() % 16,
                    2 => [0, 1, u64::MAX][(next() % 3) as usize],
                    _ => (next() % 1_000) << (next() % 20),
                })
                .collect();
            assert_eq!(
                best_width(&values),
                best_width_by_trial(&values),
                "{values:?}"
            );
        }
        assert_eq!(best_width(&[]), best_width_by_trial(&[]));
    }

    fn round_trip(samples: &[(i64, f64)]) -> Chunk {
        let c = Chunk::encode(samples);
        let mut out = Vec::new();
        c.decode_into(&mut out);
        assert_eq!(out.len(), samples.len());
        for (a, b) in out.iter().zip(samples) {
            assert_eq!(a.0, b.0);
            assert_eq!(
                a.1.to_bits(),
                b.1.to_bits(),
                "{:?} vs {:?} codec {:?}",
                a,
                b,
                c.codec
            );
        }
        c
    }

    /// The smallest codec written straight into a writer, with the same bits before it.
    fn written_directly(values: &[f64], lead: u32) -> (Vec<u8>, ValueCodec) {
        let exp = values
            .iter()
            .try_fold(0u32, |e, &v| decimal_exponent(v).map(|x| x.max(e)));
        let codecs: &[ValueCodec] = match exp {
            None => &[ValueCodec::Gorilla],
            Some(_) => &[
                ValueCodec::Gorilla,
                ValueCodec::DecimalDelta,
                ValueCodec::DecimalDod,
            ],
        };
        let mut best: Option<(Vec<u8>, usize, ValueCodec)> = None;
        for &c in codecs {
            let mut w = BitWriter::default();
            w.write(0b101, lead);
            write_values(&mut w, c, values, exp.unwrap_or(0));
            if best.as_ref().is_none_or(|b| w.bit_len() < b.1) {
                best = Some((w.to_bytes(), w.bit_len(), c));
            }
        }
        let (bytes, _, c) = best.unwrap();
        (bytes, c)
    }

    #[test]
    fn the_best_codec_from_reused_trial_writers_writes_the_same_bits() {
        let columns: Vec<Vec<f64>> = vec![
            (0..120).map(|i| f64::from(i % 7) * 0.25 + 10.0).collect(), // decimals
            (0..720).map(|i| f64::from(i) * 1_000.0).collect(),         // a counter
            (0..90).map(|i| (f64::from(i) * 0.37).sin()).collect(),     // not decimals
            vec![1.5],
            vec![3.0, 3.0],
            (0..64)
                .map(|i| if i == 40 { f64::NAN } else { 2.0 })
                .collect(),
            (0..300).map(|i| f64::from(i * i) / 8.0).collect(),
        ];
        // Twice over, so that the second pass reuses trial buffers grown by every column.
        for _ in 0..2 {
            for values in &columns {
                for lead in [0, 3, 61] {
                    let mut w = BitWriter::default();
                    w.write(0b101, lead);
                    let c = write_best_values(&mut w, values, None);
                    let (want, want_codec) = written_directly(values, lead);
                    assert_eq!(c, want_codec, "{} values", values.len());
                    assert_eq!(
                        w.to_bytes(),
                        want,
                        "{} values after {lead} bits",
                        values.len()
                    );
                }
            }
        }
    }

    #[test]
    fn codecs_round_trip() {
        round_trip(&[(5, 1.0)]);
        round_trip(&[(5, 1.0), (6, -2.5)]);
        let cpu: Vec<(i64, f64)> = (0..120)
            .map(|i| {
                (
                    1_700_000_000_000 + i * 10_000,
                    ((i * 37 % 1000) as f64) / 1000.0,
                )
            })
            .collect();
        let c = round_trip(&cpu);
        assert_ne!(c.codec, ValueCodec::Gorilla);
        let counter: Vec<(i64, f64)> = (0..120)
            .map(|i| (i * 10_000 + (i % 3), (i * 1000 + i % 7) as f64))
            .collect();
        round_trip(&counter);
        let mem: Vec<(i64, f64)> = (0..120)
            .map(|i| (i * 10_000, (8_000_000_000i64 + (i * i % 13) * 4096) as f64))
            .collect();
        let c = round_trip(&mem);
        // 119 deltas of at most 12 pages: 6 bits each after the gcd (4096), plus 1-bit timestamps.
        assert!(c.size() <= 130, "mem chunk {} bytes", c.size());
        assert_ne!(c.codec, ValueCodec::Gorilla);
        let weird = vec![
            (0, f64::NAN),
            (1, f64::INFINITY),
            (2, -0.0),
            (3, 1e300),
            (4, f64::from_bits(0x7ff0000000000002)),
            (5, 0.1 + 0.2),
        ];
        let c = round_trip(&weird);
        assert_eq!(c.codec, ValueCodec::Gorilla);
        round_trip(&[(i64::MIN, 1.0), (i64::MAX, 2.0), (0, 3.0)]);
        let big: Vec<(i64, f64)> = (0..120)
            .map(|i| (i, if i == 50 { 1e15 } else { i as f64 }))
            .collect();
        round_trip(&big);
    }

    #[test]
    fn appender_round_trips_any_timestamps_and_values() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for case in 0..200 {
            // An open head holds at most 255 samples (the hot index seals at 120).
            let n = 1 + (next() % 255) as usize;
            let mut t = (next() % 1_000_000_000_000) as i64 - 500_000_000_000;
            let mut pts = Vec::new();
            for i in 0..n {
                // Regular steps, jitter, and jumps that need every dod bucket.
                t += match next() % 10 {
                    0 => 1 + (next() % (1 << 40)) as i64,
                    1 => 1 + (next() % 100_000) as i64,
                    2 => 1,
                    _ => 10_000 + (next() % 3) as i64,
                };
                let v = match (case + i) % 7 {
                    0 => f64::from_bits(crate::model::STALE_NAN_BITS),
                    1 => f64::NAN,
                    2 => -0.0,
                    3 => f64::from_bits(next()),
                    _ => (next() % 1000) as f64 / 8.0,
                };
                pts.push((t, v));
            }
            let a = Appender::from_samples(&pts);
            let got = a.samples();
            assert_eq!(got.len(), pts.len(), "case {case}");
            for (g, w) in got.iter().zip(&pts) {
                assert_eq!((g.0, g.1.to_bits()), (w.0, w.1.to_bits()), "case {case}");
            }
            assert_eq!((a.first_ts(), a.last_ts()), (pts[0].0, pts[n - 1].0));
        }
    }

    #[test]
    fn decimal_heads_code_every_value_bucket() {
        // The sizes the one table gives, and the prefix the writer and reader agree on.
        let widths: Vec<u32> = [0u64, 1, 127, 128, 8_191, 8_192, 1 << 20, 1 << 32, u64::MAX]
            .iter()
            .map(|&z| code_bits(z))
            .collect();
        assert_eq!(widths, vec![1, 9, 9, 16, 16, 24, 37, 69, 69]);
        // Integer values whose deltas need every bucket, in both the delta and the
        // delta-of-delta mode.
        let steps = [
            0i64,
            1,
            2_000,
            500_000,
            1 << 30,
            1 << 40,
            -(1 << 45),
            3,
            100,
        ];
        for start in [0usize, 4] {
            let mut v = 0i64;
            let pts: Vec<(i64, f64)> = steps
                .iter()
                .cycle()
                .skip(start)
                .take(90)
                .enumerate()
                .map(|(i, &d)| {
                    v += d;
                    (1_700_000_000_000 + i as i64 * 10_000, v as f64)
                })
                .collect();
            let a = Appender::from_samples(&pts);
            assert_eq!(a.w.meta.exp, 0);
            let got = a.samples();
            assert_eq!(got, pts);
        }
    }

    #[test]
    fn heads_of_decimals_take_the_decimal_mode_and_switch_when_a_value_needs_it() {
        let ts = |i: i64| 1_700_000_000_000 + i * 10_000;
        let check = |a: &Appender, pts: &[(i64, f64)]| {
            let got = a.samples();
            assert_eq!(got.len(), pts.len());
            for (g, w) in got.iter().zip(pts) {
                assert_eq!((g.0, g.1.to_bits()), (w.0, w.1.to_bits()));
            }
        };
        // The fleet's CPU (3 decimals), memory bytes and a counter: about 1-2.5 bytes a sample.
        for f in [
            |i: i64| ((1000 + (i * 37) % 50) as f64) / 1000.0,
            |i: i64| (8_000_000_000i64 + (i * 7919 % 4096) * 1024) as f64,
            |i: i64| (i * 4_321 + i % 7) as f64,
        ] {
            let pts: Vec<(i64, f64)> = (0..120).map(|i| (ts(i), f(i))).collect();
            let a = Appender::from_samples(&pts);
            assert_ne!(a.w.meta.exp, GORILLA);
            assert!(
                a.size() <= 120 * 5 / 2,
                "{} bytes for 120 samples",
                a.size()
            );
            check(&a, &pts);
        }
        // 2.0 (exponent 0), then 2.5 and 2.125: the head is re-encoded at exponent 3.
        let mut pts = vec![(ts(0), 2.0), (ts(1), 2.5), (ts(2), 2.125)];
        let a = Appender::from_samples(&pts);
        assert_eq!(a.w.meta.exp, 3);
        check(&a, &pts);
        // A staleness marker: Gorilla from then on, every value kept.
        pts.push((ts(3), f64::from_bits(crate::model::STALE_NAN_BITS)));
        pts.push((ts(4), 7.0));
        let a = Appender::from_samples(&pts);
        assert_eq!(a.w.meta.exp, GORILLA);
        check(&a, &pts);
        // A version 2 checkpoint's head (no mode byte) is read as Gorilla.
        let g: Vec<(i64, f64)> = (0..10)
            .map(|i| (ts(i), f64::from_bits(0x4000_0000_0000_0001 + i as u64)))
            .collect();
        let a = Appender::from_samples(&g);
        assert_eq!(a.w.meta.exp, GORILLA);
        // This build's layout without the mode byte and the last mantissa delta.
        let mut buf = Vec::new();
        a.snap(&mut Enc(&mut buf));
        let mode_at = 2 + 4 + a.w.len() + 8 + 4 + 2;
        assert_eq!(buf.remove(mode_at), GORILLA);
        buf.truncate(buf.len() - 8);
        let b = Appender::unsnap(&mut Dec::with_version(&buf, 2)).unwrap();
        check(&b, &g);
        // And this build's layout round-trips a decimal head.
        let d = Appender::from_samples(&pts[..3]);
        let mut buf = Vec::new();
        d.snap(&mut Enc(&mut buf));
        check(&Appender::unsnap(&mut Dec::new(&buf)).unwrap(), &pts[..3]);
    }

    #[test]
    fn a_damaged_head_snapshot_is_an_error_that_names_the_field() {
        let pts: Vec<(i64, f64)> = (0..40).map(|i| (i * 10_000, i as f64 * 0.5)).collect();
        let a = Appender::from_samples(&pts);
        let mut buf = Vec::new();
        a.snap(&mut Enc(&mut buf));
        let words = a.w.len();
        assert!(words >= 8 && words.is_multiple_of(8));
        // The head's bytes one short of whole 64-bit words: length prefix and data.
        let mut short = buf.clone();
        short[2..6].copy_from_slice(&(words as u32 - 1).to_le_bytes());
        short.remove(6);
        let Err(e) = Appender::unsnap(&mut Dec::new(&short)) else {
            panic!("a head of 7-byte words read back");
        };
        assert_eq!((e.what, e.why), ("head bytes", "not whole 64-bit words"));
        // A bit count past the accumulator's 64 bits.
        let mut bits = buf.clone();
        let at = 2 + 4 + words + 8;
        bits[at..at + 4].copy_from_slice(&65u32.to_le_bytes());
        let Err(e) = Appender::unsnap(&mut Dec::new(&bits)) else {
            panic!("a head of 65 pending bits read back");
        };
        assert_eq!(e.what, "head bit count");
        // More samples than an open head holds.
        let mut many = buf.clone();
        many[0..2].copy_from_slice(&256u16.to_le_bytes());
        let Err(e) = Appender::unsnap(&mut Dec::new(&many)) else {
            panic!("a head of 256 samples read back");
        };
        assert_eq!(e.what, "head count");
        // A first time that is not where the bytes start (it is read from them, not kept).
        let mut first = buf.clone();
        let at = 2 + 4 + words + 8 + 4 + 3;
        first[at..at + 8].copy_from_slice(&1i64.to_le_bytes());
        let Err(e) = Appender::unsnap(&mut Dec::new(&first)) else {
            panic!("a head with another first time read back");
        };
        assert_eq!(e.what, "head first_ts");
        // The intact one reads back.
        let Ok(back) = Appender::unsnap(&mut Dec::new(&buf)) else {
            panic!("the intact head did not read back");
        };
        assert_eq!(back.samples(), pts);
    }
}

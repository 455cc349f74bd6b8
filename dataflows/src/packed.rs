//! A byte-level codec for short runs of samples and rollups held for corrections (emitted
//! windows, the hot index's rollup tails): zigzag varints for times and counts, and floats as
//! the XOR with the previous value of the same field, written as one byte of leading and
//! trailing zero-byte counts and the bytes between them (Gorilla's idea at byte granularity:
//! no bit stream, so a run of a few values costs no encoder state). A damaged buffer decodes
//! to garbage or stops early, never panics.
//!
//! [`put_num`] writes a value that is a short decimal (a load average, a byte count, a counter)
//! as the difference of its mantissa from the previous value's at the same exponent, a varint
//! of a byte or two where the XOR takes six or seven; other values as [`put_xor`] does. The
//! tags of the two never overlap, so [`get_num`] also reads what [`put_xor`] wrote.
//!
//! ```
//! use tidemark_dataflows::packed::{get_var, get_xor, put_var, put_xor, Reader};
//! let mut out = Vec::new();
//! let mut prev = 0u64;
//! put_var(&mut out, 300);
//! for v in [1.5, 1.5, 2.25] {
//!     put_xor(&mut out, &mut prev, v);
//! }
//! let mut r = Reader::new(&out);
//! let mut prev = 0u64;
//! assert_eq!(get_var(&mut r), Some(300));
//! let vs: Vec<f64> = (0..3).map(|_| get_xor(&mut r, &mut prev).unwrap()).collect();
//! assert_eq!(vs, vec![1.5, 1.5, 2.25]);
//! assert!(r.is_empty());
//! ```

/// A position in a packed buffer.
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }
    /// True when everything was read.
    pub fn is_empty(&self) -> bool {
        self.at >= self.buf.len()
    }
    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.at)
    }
    /// The next `n` bytes (`None`: fewer are left).
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len())?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Some(s)
    }
}

/// Zigzag: small magnitudes of either sign to small unsigned values.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag`].
pub fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// An unsigned LEB128 varint.
pub fn put_var(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a [`put_var`] value (`None` at the end of the buffer).
pub fn get_var(r: &mut Reader<'_>) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let &x = r.buf.get(r.at)?;
        r.at += 1;
        v |= u64::from(x & 0x7f) << shift;
        if x < 0x80 {
            break;
        }
    }
    Some(v)
}

/// A float as its XOR with `prev` (then `prev` becomes it).
pub fn put_xor(out: &mut Vec<u8>, prev: &mut u64, v: f64) {
    let x = v.to_bits() ^ *prev;
    *prev = v.to_bits();
    let (lead, trail) = if x == 0 {
        (8, 0)
    } else {
        (x.leading_zeros() / 8, x.trailing_zeros() / 8)
    };
    out.push((lead as u8) << 4 | trail as u8);
    let n = (8 - lead - trail) as usize;
    out.extend_from_slice(&(x >> (trail * 8)).to_le_bytes()[..n]);
}

/// Reads a [`put_xor`] value (`None` at the end of the buffer).
pub fn get_xor(r: &mut Reader<'_>, prev: &mut u64) -> Option<f64> {
    let &h = r.buf.get(r.at)?;
    r.at += 1;
    let (lead, trail) = (u32::from(h >> 4).min(8), u32::from(h & 15).min(8));
    let n = 8usize.saturating_sub((lead + trail) as usize);
    let mid = r.buf.get(r.at..r.at + n)?;
    r.at += n;
    let mut x = [0u8; 8];
    x[..n].copy_from_slice(mid);
    *prev ^= u64::from_le_bytes(x).checked_shl(trail * 8).unwrap_or(0);
    Some(f64::from_bits(*prev))
}

/// The tag of a [`put_num`] decimal: `DECIMAL | exponent` (an XOR header is at most 0x88).
const DECIMAL: u8 = 0xA0;
/// Exponents [`put_num`] tries.
const MAX_EXP: u32 = 9;
const POW10: [f64; MAX_EXP as usize + 1] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// `v` as `m / 10^e` with the smallest `e` for which this gives `v` back exactly, `|m| < 2^53`.
fn decimal(v: f64) -> Option<(u32, i64)> {
    if !v.is_finite() {
        return None;
    }
    (0..=MAX_EXP).find_map(|e| {
        let m = (v * POW10[e as usize]).round();
        if m.abs() >= 9_007_199_254_740_992.0 {
            return None;
        }
        // Exactly what the reader computes (so -0.0, which it cannot give back, is not one).
        let m = m as i64;
        ((m as f64 / POW10[e as usize]).to_bits() == v.to_bits()).then_some((e, m))
    })
}

/// The previous value's mantissa at exponent `e` (0 when it has none there).
fn base(prev: u64, e: u32) -> i64 {
    let m = (f64::from_bits(prev) * POW10[e as usize]).round();
    if m.is_finite() && m.abs() < 9_007_199_254_740_992.0 {
        m as i64
    } else {
        0
    }
}

/// A float as a decimal mantissa delta from `prev` when it is a short decimal, else as
/// [`put_xor`]; then `prev` becomes it.
///
/// ```
/// use tidemark_dataflows::packed::{get_num, put_num, put_xor, Reader};
/// // A load average, then kB-granular bytes: short decimals.
/// let vs = [1.234, 1.301, 0.995, 1.02, 8_123_456_000.0, 8_123_460_096.0, 8_123_460_096.0];
/// let (mut out, mut xor) = (Vec::new(), Vec::new());
/// let (mut prev, mut px) = (0u64, 0u64);
/// for v in vs {
///     put_num(&mut out, &mut prev, v);
///     put_xor(&mut xor, &mut px, v);
/// }
/// assert_eq!((out.len(), xor.len()), (22, 45));
/// // Anything else round-trips bit for bit, through the XOR.
/// let vs = [f64::NAN, 0.1 + 0.2, -0.0, 1e300, f64::INFINITY, 5.0, -3.25];
/// let mut out = Vec::new();
/// for v in vs { put_num(&mut out, &mut prev, v); }
/// let (mut r, mut prev) = (Reader::new(&out), 8_123_460_096f64.to_bits());
/// let back: Vec<u64> = vs.iter().map(|_| get_num(&mut r, &mut prev).unwrap().to_bits()).collect();
/// assert_eq!(back, vs.map(f64::to_bits));
/// ```
pub fn put_num(out: &mut Vec<u8>, prev: &mut u64, v: f64) {
    if let Some((e, m)) = decimal(v) {
        if let Some(d) = m.checked_sub(base(*prev, e)) {
            out.push(DECIMAL | e as u8);
            put_var(out, zigzag(d));
            *prev = v.to_bits();
            return;
        }
    }
    put_xor(out, prev, v);
}

/// Reads a [`put_num`] (or [`put_xor`]) value (`None` at the end of the buffer).
pub fn get_num(r: &mut Reader<'_>, prev: &mut u64) -> Option<f64> {
    let &h = r.buf.get(r.at)?;
    if h & 0xF0 != DECIMAL {
        return get_xor(r, prev);
    }
    r.at += 1;
    let e = u32::from(h & 0x0F).min(MAX_EXP);
    let d = unzigzag(get_var(r)?);
    let m = base(*prev, e).wrapping_add(d);
    let v = m as f64 / POW10[e as usize];
    *prev = v.to_bits();
    Some(v)
}

/// Time-sorted samples as bytes, appended at the end: per sample the change of the time's
/// delta (one byte at a steady interval) and the value as [`put_num`] writes it. For windows
/// of samples held per series (the incremental rules' ranges): about 4 bytes a sample on the
/// fleet workload instead of 16, read back whole.
///
/// ```
/// use tidemark_dataflows::packed::SampleRun;
/// let mut r = SampleRun::default();
/// for i in 0..30 { r.push(1_700_000_000_000 + i * 10_000, 1_000.0 + (i * 37) as f64); }
/// assert_eq!((r.len(), r.last_ts()), (30, Some(1_700_000_290_000)));
/// assert!(r.heap_bytes() <= 30 * 5, "{} bytes", r.heap_bytes()); // 16 a sample in a Vec
/// let mut out = Vec::new();
/// r.decode_into(&mut out);
/// assert_eq!(out[29], (1_700_000_290_000, 2_073.0));
/// let tail = SampleRun::from_sorted(&out[20..]);
/// let mut again = Vec::new();
/// tail.decode_into(&mut again);
/// assert_eq!(again, out[20..]);
/// ```
#[derive(Default, Clone)]
pub struct SampleRun {
    bytes: Vec<u8>,
    len: u32,
    last_t: i64,
    last_d: i64,
    last_v: u64,
}

impl SampleRun {
    /// A run of `samples` (sorted by time).
    pub fn from_sorted(samples: &[(i64, f64)]) -> Self {
        let mut r = SampleRun {
            bytes: Vec::with_capacity(samples.len() * 4 + 4),
            ..SampleRun::default()
        };
        for &(t, v) in samples {
            r.push(t, v);
        }
        r
    }

    /// A run continuing from bytes a run wrote ([`SampleRun::into_bytes`]): the state of its
    /// last sample is read back (a damaged buffer resumes after its last whole sample).
    pub fn resume(bytes: Vec<u8>) -> Self {
        let mut r = Reader::new(&bytes);
        let (mut t, mut d, mut pv, mut len, mut end) = (0i64, 0i64, 0u64, 0u32, 0usize);
        while let Some(z) = get_var(&mut r) {
            let dd = d.wrapping_add(unzigzag(z));
            let mut v = pv;
            if get_num(&mut r, &mut v).is_none() {
                break;
            }
            (d, t, pv) = (dd, t.wrapping_add(dd), v);
            len += 1;
            end = r.at;
        }
        let mut bytes = bytes;
        bytes.truncate(end);
        SampleRun {
            bytes,
            len,
            last_t: t,
            last_d: d,
            last_v: pv,
        }
    }

    /// Appends a sample (after the last one: the caller keeps the order).
    pub fn push(&mut self, t: i64, v: f64) {
        if self.bytes.capacity() - self.bytes.len() < 20 {
            // By 32 bytes, not by doubling: runs are held per series.
            self.bytes.reserve_exact(32);
        }
        let d = t.wrapping_sub(self.last_t);
        put_var(&mut self.bytes, zigzag(d.wrapping_sub(self.last_d)));
        (self.last_t, self.last_d) = (t, d);
        put_num(&mut self.bytes, &mut self.last_v, v);
        self.len += 1;
    }

    /// Drops the oldest `n` samples in place. Only the first kept sample is written again
    /// (against the empty state), and the time delta of the one after it; the bytes after
    /// those stay as they are, since each sample is coded against the one before it. A
    /// window sliding by a sample or two no longer re-encodes every sample it keeps (the
    /// incremental rules did that per series and tick: 2.4 % of the job's CPU at 1 M series).
    ///
    /// ```
    /// use tidemark_dataflows::packed::SampleRun;
    /// let pts: Vec<(i64, f64)> = (0..6).map(|i| (1_000 + i * 10_000, 0.5 * i as f64)).collect();
    /// let mut r = SampleRun::from_sorted(&pts);
    /// r.drop_front(2);
    /// r.push(61_000, 7.25);
    /// let mut out = Vec::new();
    /// r.decode_into(&mut out);
    /// assert_eq!(out[..4], pts[2..]);
    /// assert_eq!(out[4], (61_000, 7.25));
    /// ```
    pub fn drop_front(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if n >= self.len as usize {
            self.bytes.clear();
            (self.len, self.last_t, self.last_d, self.last_v) = (0, 0, 0, 0);
            return;
        }
        let mut r = Reader::new(&self.bytes);
        let (mut t, mut d, mut pv) = (0i64, 0i64, 0u64);
        for _ in 0..=n {
            let Some(z) = get_var(&mut r) else {
                return self.rebuild_without(n);
            };
            d = d.wrapping_add(unzigzag(z));
            t = t.wrapping_add(d);
            if get_num(&mut r, &mut pv).is_none() {
                return self.rebuild_without(n);
            }
        }
        // Sample `n` against the empty state: the decoder's delta after it is its time.
        let mut head = Vec::with_capacity(24);
        put_var(&mut head, zigzag(t));
        let mut zero = 0u64;
        put_num(&mut head, &mut zero, f64::from_bits(pv));
        let mut cut = r.at;
        if n + 1 < self.len as usize {
            // The next sample's delta of delta, now against `t` instead of `d`.
            let Some(z) = get_var(&mut r) else {
                return self.rebuild_without(n);
            };
            let next_d = d.wrapping_add(unzigzag(z));
            put_var(&mut head, zigzag(next_d.wrapping_sub(t)));
            cut = r.at;
        } else {
            self.last_d = t;
        }
        self.bytes.splice(..cut, head);
        self.len -= n as u32;
    }

    /// [`SampleRun::drop_front`] for a run whose bytes do not decode as far as its count
    /// says (never written so): what decodes, without its first `n`, packed again.
    #[cold]
    fn rebuild_without(&mut self, n: usize) {
        let mut all = Vec::new();
        decode_samples(&self.bytes, &mut all);
        *self = SampleRun::from_sorted(all.get(n..).unwrap_or_default());
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The newest sample's time.
    pub fn last_ts(&self) -> Option<i64> {
        (self.len > 0).then_some(self.last_t)
    }

    /// Appends the samples to `out`.
    pub fn decode_into(&self, out: &mut Vec<(i64, f64)>) {
        out.reserve(self.len as usize);
        decode_samples(&self.bytes, out);
    }

    /// The bytes alone (read back with [`decode_samples`]).
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
    }
}

/// Appends the samples of a [`SampleRun`]'s bytes to `out` (a damaged buffer stops early).
pub fn decode_samples(bytes: &[u8], out: &mut Vec<(i64, f64)>) {
    let mut r = Reader::new(bytes);
    let (mut t, mut d, mut pv) = (0i64, 0i64, 0u64);
    while let Some(z) = get_var(&mut r) {
        d = d.wrapping_add(unzigzag(z));
        t = t.wrapping_add(d);
        let Some(v) = get_num(&mut r, &mut pv) else {
            break;
        };
        out.push((t, v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic xorshift generator for the randomized tests.
    fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    #[test]
    fn a_resumed_run_appends_as_the_run_would_and_drops_a_cut_sample() {
        let pts: Vec<(i64, f64)> = (0..10)
            .map(|i| {
                (
                    1_700_000_000_000 + i * 10_000 + i % 3,
                    1.5 + (i * i) as f64 * 0.125,
                )
            })
            .collect();
        let whole = SampleRun::from_sorted(&pts).into_bytes();
        let mut r = SampleRun::resume(SampleRun::from_sorted(&pts[..6]).into_bytes());
        assert_eq!((r.len(), r.last_ts()), (6, Some(pts[5].0)));
        for &(t, v) in &pts[6..] {
            r.push(t, v);
        }
        assert_eq!(r.into_bytes(), whole);
        // A buffer cut inside its last sample resumes after the sample before it.
        let mut cut = SampleRun::from_sorted(&pts[..4]).into_bytes();
        cut.pop();
        let r = SampleRun::resume(cut);
        assert_eq!((r.len(), r.last_ts()), (3, Some(pts[2].0)));
        let mut back = Vec::new();
        r.decode_into(&mut back);
        assert_eq!(back, pts[..3]);
        assert_eq!(SampleRun::resume(Vec::new()).last_ts(), None);
    }

    #[test]
    fn dropping_the_oldest_samples_in_place_decodes_and_appends_as_a_new_run_would() {
        let mut next = xorshift(0x2545_F491_4F6C_DD1Du64);
        for case in 0..300 {
            let len = 1 + (next() % 40) as usize;
            let mut t = 1_700_000_000_000i64 + (next() % 1_000) as i64;
            let pts: Vec<(i64, f64)> = (0..len)
                .map(|_| {
                    // Steady, jittered and jumping intervals; decimals, XOR-coded values,
                    // NaN (a staleness marker's kind too) and negative zero.
                    t += match next() % 5 {
                        0 => 1 + (next() % 3_000_000) as i64,
                        1 => 9_990 + (next() % 20) as i64,
                        _ => 10_000,
                    };
                    let v = match next() % 7 {
                        0 => f64::from_bits(next()),
                        1 => f64::from_bits(0x7ff0_0000_0000_0002),
                        2 => -0.0,
                        3 => (next() % 100_000) as f64 / 1_000.0,
                        _ => (next() % (1 << 40)) as f64,
                    };
                    (t, v)
                })
                .collect();
            let more = [(t + 10_000, 1.25), (t + 20_001, f64::from_bits(next()))];
            for n in 0..=len + 1 {
                let mut r = SampleRun::from_sorted(&pts);
                r.drop_front(n);
                let kept = &pts[n.min(len)..];
                assert_eq!(r.len(), kept.len(), "case {case}, n {n}");
                assert_eq!(r.last_ts(), kept.last().map(|p| p.0), "case {case}, n {n}");
                for &(t, v) in &more {
                    r.push(t, v);
                }
                let mut got = Vec::new();
                r.decode_into(&mut got);
                let want: Vec<(i64, u64)> = kept
                    .iter()
                    .chain(&more)
                    .map(|&(t, v)| (t, v.to_bits()))
                    .collect();
                let got: Vec<(i64, u64)> = got.iter().map(|&(t, v)| (t, v.to_bits())).collect();
                assert_eq!(got, want, "case {case}, n {n}");
                // Dropping again from the result, as a window slides tick after tick.
                r.drop_front(1);
                let mut again = Vec::new();
                r.decode_into(&mut again);
                assert_eq!(again.len(), want.len() - 1);
                assert!(again
                    .iter()
                    .zip(&want[1..])
                    .all(|(a, b)| a.0 == b.0 && a.1.to_bits() == b.1));
            }
        }
    }

    #[test]
    fn numbers_round_trip_bit_for_bit_and_damage_never_panics() {
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15u64);
        let mut vs = vec![
            f64::NAN,
            f64::INFINITY,
            -f64::INFINITY,
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
        ];
        vs.push(f64::from_bits(0x7ff0_0000_0000_0002)); // a staleness marker's kind of NaN
        for _ in 0..3_000 {
            let r = next();
            vs.push(match r % 4 {
                0 => f64::from_bits(next()),
                1 => (next() % 2_000_000) as f64 / 10f64.powi((r >> 8) as i32 % 10) - 1e5,
                2 => (next() % (1 << 53)) as f64,
                _ => vs.last().copied().unwrap_or(0.0) + (next() % 100) as f64 * 0.001,
            });
        }
        let mut out = Vec::new();
        let mut prev = 0u64;
        for &v in &vs {
            put_num(&mut out, &mut prev, v);
        }
        let (mut r, mut prev) = (Reader::new(&out), 0u64);
        for &v in &vs {
            assert_eq!(
                get_num(&mut r, &mut prev).map(f64::to_bits),
                Some(v.to_bits())
            );
        }
        assert!(r.is_empty());
        // Damaged: every byte flipped in turn, and cut short; decoding stops or gives garbage.
        for i in (0..out.len()).step_by(7) {
            let mut bad = out.clone();
            bad[i] ^= 0xA5;
            bad.truncate(bad.len() - i % 5);
            let (mut r, mut prev) = (Reader::new(&bad), 0u64);
            while get_num(&mut r, &mut prev).is_some() {}
        }
    }
}

//! A byte-level codec for short runs of samples and rollups held for corrections (emitted
//! windows, the hot index's rollup tails): zigzag varints for times and counts, and floats as
//! the XOR with the previous value of the same field, written as one byte of leading and
//! trailing zero-byte counts and the bytes between them (Gorilla's idea at byte granularity:
//! no bit stream, so a run of a few values costs no encoder state). A damaged buffer decodes
//! to garbage or stops early, never panics.
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

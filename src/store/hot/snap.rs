//! The byte layout of the hot index's parts inside a checkpoint (see [`super::checkpoint`]):
//! little-endian integers, length-prefixed byte strings, nothing else. Each part writes itself
//! with an [`Enc`] and reads itself back with a [`Dec`], which checks every length against
//! what is left, so a damaged record is an error, not a panic or a huge allocation.

/// Appends values to a buffer.
pub struct Enc<'a>(pub &'a mut Vec<u8>);

impl Enc<'_> {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }
    /// A length (u32) and the bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.0.extend_from_slice(b);
    }
    pub fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("a checkpoint part holds fewer than 2^32 items"));
    }
}

/// Why a part could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{what} at byte {at}: {why}")]
pub struct DecError {
    pub what: &'static str,
    pub at: usize,
    pub why: &'static str,
}

/// The layout version [`Enc`] writes (the checkpoint header's version).
pub const VERSION: u32 = 5;

/// Reads values from a buffer.
pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
    version: u32,
}

impl<'a> Dec<'a> {
    /// Reads the layout this build writes.
    pub fn new(buf: &'a [u8]) -> Self {
        Self::with_version(buf, VERSION)
    }
    /// Reads the layout of an older version (1: rollup blocks as nine chunks; 1 and 2: heads
    /// without a value mode, all Gorilla; 1 to 3: every chunk's bytes inline, none on disk;
    /// 1 to 4: every rollup block's bytes inline).
    pub fn with_version(buf: &'a [u8], version: u32) -> Self {
        Dec {
            buf,
            pos: 0,
            version,
        }
    }
    /// The layout version being read.
    pub fn version(&self) -> u32 {
        self.version
    }
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecError> {
        if self.buf.len() - self.pos < n {
            return Err(DecError {
                what,
                at: self.pos,
                why: "truncated",
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecError> {
        Ok(self.take(1, what)?[0])
    }
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecError> {
        Ok(u16::from_le_bytes(
            self.take(2, what)?.try_into().expect("2"),
        ))
    }
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecError> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4"),
        ))
    }
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8"),
        ))
    }
    pub fn i64(&mut self, what: &'static str) -> Result<i64, DecError> {
        Ok(self.u64(what)? as i64)
    }
    pub fn f64(&mut self, what: &'static str) -> Result<f64, DecError> {
        Ok(f64::from_bits(self.u64(what)?))
    }
    /// A count of items of at least `min_item` bytes each (checked against what is left).
    pub fn len(&mut self, min_item: usize, what: &'static str) -> Result<usize, DecError> {
        let at = self.pos;
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_item.max(1)) > self.buf.len() - self.pos {
            return Err(DecError {
                what,
                at,
                why: "count larger than the record",
            });
        }
        Ok(n)
    }
    pub fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecError> {
        let n = self.len(1, what)?;
        self.take(n, what)
    }
    pub fn fail(&self, what: &'static str, why: &'static str) -> DecError {
        DecError {
            what,
            at: self.pos,
            why,
        }
    }
}

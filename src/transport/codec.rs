//! The binary record format of a pushed batch, as stored in the log.
//!
//! ```text
//! u8 version = 1
//! u32 n_series, then per series: u64 id, u32 len, canonical label bytes
//! u32 n_samples, then per sample: u32 series index, i64 ts ms, f64 value (all little endian)
//! ```
//! A reader can skip the label bytes of series it already knows, so decoding allocates only for
//! new series.
//!
//! Records are written as version 2: the byte `2`, then a zstd frame (level [`ZSTD_LEVEL`])
//! holding the whole version-1 record. Most of a record is label text and repeated
//! timestamps, so the log shrinks several times over (see `benches/README.md`); readers take
//! both versions, so logs written before compression still replay.

use crate::ingest::WriteBatch;

/// Why a stored record could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("corrupt batch record: {0}")]
pub struct CodecError(&'static str);

/// zstd level of stored records: level 1 compresses a 10,000-sample batch in about a
/// millisecond.
pub const ZSTD_LEVEL: i32 = 1;

/// Encodes a batch compressed (version 2), appending to `out` (a caller may have written a
/// header first).
pub fn encode(batch: &WriteBatch, out: &mut Vec<u8>) {
    let mut plain = Vec::new();
    encode_plain(batch, &mut plain);
    out.push(2);
    let compressed = zstd::bulk::compress(&plain, ZSTD_LEVEL).expect("zstd compresses in memory");
    out.extend_from_slice(&compressed);
}

/// Encodes a batch uncompressed (version 1), appending to `out`.
pub fn encode_plain(batch: &WriteBatch, out: &mut Vec<u8>) {
    out.reserve(9 + batch.arena.len() + batch.series.len() * 12 + batch.samples.len() * 20);
    out.push(1);
    out.extend_from_slice(&(batch.series.len() as u32).to_le_bytes());
    for (i, (id, _)) in batch.series.iter().enumerate() {
        let c = batch.canonical(i);
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&(c.len() as u32).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&(batch.samples.len() as u32).to_le_bytes());
    for s in &batch.samples {
        out.extend_from_slice(&s.series.to_le_bytes());
        out.extend_from_slice(&s.ts.to_le_bytes());
        out.extend_from_slice(&s.value.to_bits().to_le_bytes());
    }
}

struct Cursor<'a>(&'a [u8]);
impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.0.len() < n {
            return Err(CodecError("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

/// Decodes a record: `on_series` is called once with every series of the record, in order, as
/// `(id, canonical bytes)` (so that a catalog can check them a lock at a time, not one each),
/// then `on_sample(series_id, ts, value)` for each sample.
pub fn decode(
    payload: &[u8],
    ids: &mut Vec<u64>,
    on_series: impl FnOnce(&[(u64, &[u8])]),
    mut on_sample: impl FnMut(u64, i64, f64),
) -> Result<(), CodecError> {
    let plain;
    let payload = match payload.first() {
        Some(2) => {
            plain = zstd::stream::decode_all(&payload[1..])
                .map_err(|_| CodecError("zstd frame does not decompress"))?;
            if plain.first() == Some(&2) {
                return Err(CodecError("nested compressed record"));
            }
            &plain[..]
        }
        _ => payload,
    };
    let mut c = Cursor(payload);
    if c.take(1)? != [1] {
        return Err(CodecError("unknown version"));
    }
    let n = c.u32()? as usize;
    ids.clear();
    let mut series = Vec::with_capacity(n.min(payload.len() / 12));
    for _ in 0..n {
        let id = c.u64()?;
        let len = c.u32()? as usize;
        series.push((id, c.take(len)?));
        ids.push(id);
    }
    on_series(&series);
    drop(series);
    let m = c.u32()? as usize;
    let body = c.take(
        m.checked_mul(20)
            .ok_or(CodecError("sample count overflow"))?,
    )?;
    for s in body.chunks_exact(20) {
        let idx = u32::from_le_bytes(s[0..4].try_into().expect("4")) as usize;
        let ts = i64::from_le_bytes(s[4..12].try_into().expect("8"));
        let v = f64::from_bits(u64::from_le_bytes(s[12..20].try_into().expect("8")));
        let id = *ids
            .get(idx)
            .ok_or(CodecError("sample refers to a missing series"))?;
        on_sample(id, ts, v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{BatchBuilder, SeriesBuf};
    use crate::model::Limits;

    #[test]
    fn round_trip() {
        let limits = Limits::default();
        let mut b = BatchBuilder::new(&limits);
        let mut buf = SeriesBuf::default();
        buf.push("__name__".into(), "up".into());
        buf.push("job".into(), "x".into());
        b.add(&mut buf, 5, 1.5, 1);
        b.add(&mut buf, 6, f64::NAN, 2);
        let (batch, _, _) = b.finish();
        let mut bytes = Vec::new();
        encode(&batch, &mut bytes);
        let mut got = Vec::new();
        let mut series = Vec::new();
        decode(
            &bytes,
            &mut Vec::new(),
            |b| {
                series.extend(
                    b.iter()
                        .map(|&(id, c)| (id, crate::ingest::decode_canonical(c))),
                )
            },
            |id, t, v| got.push((id, t, v.to_bits())),
        )
        .unwrap();
        assert_eq!(series, vec![(batch.series[0].0, batch.labels(0))]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].2, f64::NAN.to_bits());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], &mut Vec::new(), |_| {}, |_, _, _| {}).is_err());
        }
        // Records written before compression (version 1) still decode, to the same samples.
        let mut plain = Vec::new();
        encode_plain(&batch, &mut plain);
        assert!(bytes[0] == 2 && plain[0] == 1);
        let mut again = Vec::new();
        decode(
            &plain,
            &mut Vec::new(),
            |_| {},
            |id, t, v| again.push((id, t, v.to_bits())),
        )
        .unwrap();
        assert_eq!(again, got);
    }
}

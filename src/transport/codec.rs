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
//! Version 2 is the byte `2`, then a zstd frame (level [`ZSTD_LEVEL`]) holding a whole
//! version-1 record.
//!
//! Records are written as version 3: the byte `3`, then a zstd frame holding
//!
//! ```text
//! varint n_series, then per series, sorted by canonical bytes: varint length of the prefix
//!   shared with the previous series' canonical bytes, varint length of the rest, the rest
//! varint n_samples, then three columns over the samples, sorted (stably) by series:
//!   series index deltas (zigzag varints), time deltas from the previous sample (zigzag
//!   varints, the first from 0), values (packed::put_num: short decimals as mantissa deltas
//!   from the previous sample's value, anything else as an XOR)
//! ```
//!
//! Series ids are not stored: an id is the xxh3 of the canonical bytes, computed again on
//! read. Of a version-2 fleet record's 19 bytes a sample, 8 were the random id bytes zstd
//! cannot shrink; the sorted labels share their prefixes and the columns repeat their
//! timestamps and near values, so version 3 takes about a third of that (see
//! `benches/README.md`). A series' samples keep their order, so a later write of the same
//! time still wins. Readers take every version, so older logs still replay.

use tidemark_dataflows::packed::{get_num, get_var, put_num, put_var, unzigzag, zigzag, Reader};

use crate::model::WriteBatch;

/// Why a stored record could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("corrupt batch record: {0}")]
pub struct CodecError(&'static str);

/// zstd level of stored records: level 1 compresses a 10,000-sample batch in about a
/// millisecond.
pub const ZSTD_LEVEL: i32 = 1;

/// Encodes a batch (version 3), appending to `out` (a caller may have written a header
/// first).
pub fn encode(batch: &WriteBatch, out: &mut Vec<u8>) {
    let mut plain = Vec::new();
    encode_columns(batch, &mut plain);
    out.push(3);
    let compressed = zstd::bulk::compress(&plain, ZSTD_LEVEL).expect("zstd compresses in memory");
    out.extend_from_slice(&compressed);
}

/// Encodes a batch as version 2 (version 1, compressed), appending to `out`. For tests and
/// benchmarks: [`encode`] writes version 3.
pub fn encode_v2(batch: &WriteBatch, out: &mut Vec<u8>) {
    let mut plain = Vec::new();
    encode_plain(batch, &mut plain);
    out.push(2);
    let compressed = zstd::bulk::compress(&plain, ZSTD_LEVEL).expect("zstd compresses in memory");
    out.extend_from_slice(&compressed);
}

/// The body of a version-3 record (uncompressed; see the module documentation).
fn encode_columns(batch: &WriteBatch, out: &mut Vec<u8>) {
    let n = batch.series.len();
    let mut order: Vec<u32> = (0..n as u32).collect();
    sort_by_bytes(&mut order, |i| batch.canonical(i as usize));
    let mut rank = vec![0u32; n];
    for (r, &i) in order.iter().enumerate() {
        rank[i as usize] = r as u32;
    }
    out.reserve(8 + batch.arena.len() / 4 + batch.samples.len() * 6);
    put_var(out, n as u64);
    let mut prev: &[u8] = &[];
    for &i in &order {
        let c = batch.canonical(i as usize);
        let shared = prev.iter().zip(c).take_while(|(a, b)| a == b).count();
        put_var(out, shared as u64);
        put_var(out, (c.len() - shared) as u64);
        out.extend_from_slice(&c[shared..]);
        prev = c;
    }
    let mut samples: Vec<u32> = (0..batch.samples.len() as u32).collect();
    samples.sort_by_key(|&k| rank[batch.samples[k as usize].series as usize]);
    put_var(out, samples.len() as u64);
    let mut last = 0i64;
    for &k in &samples {
        let r = i64::from(rank[batch.samples[k as usize].series as usize]);
        put_var(out, zigzag(r - last));
        last = r;
    }
    let mut last = 0i64;
    for &k in &samples {
        let ts = batch.samples[k as usize].ts;
        put_var(out, zigzag(ts.wrapping_sub(last)));
        last = ts;
    }
    let mut prev = 0u64;
    for &k in &samples {
        put_num(out, &mut prev, batch.samples[k as usize].value);
    }
}

/// Sorts `order` by the bytes `bytes` gives each entry, in the order of
/// `sort_by(|a, b| bytes(a).cmp(bytes(b)))`, eight bytes at a time: entries are sorted by the
/// big-endian word of their next eight bytes (zero-padded) and how many bytes they have left
/// (at most 9), and each run of entries equal on both with more than eight bytes left is sorted
/// again on the eight bytes after. A batch's series share long prefixes (`__name__`, the metric
/// name, the host label), which a comparison sort's `memcmp` walked again at every comparison:
/// 5 - 7 % of the server's CPU at 1 M series (benches/README.md, Footprint).
fn sort_by_bytes<'a>(order: &mut [u32], bytes: impl Fn(u32) -> &'a [u8]) {
    let mut keyed: Vec<(u64, u8, u32)> = Vec::with_capacity(order.len());
    // (start, end, depth): a range of `order` whose entries share their first `depth` bytes.
    let mut ranges = vec![(0, order.len(), 0)];
    while let Some((lo, hi, depth)) = ranges.pop() {
        if hi - lo < 2 {
            continue;
        }
        keyed.clear();
        keyed.extend(order[lo..hi].iter().map(|&i| {
            let rest = bytes(i).get(depth..).unwrap_or_default();
            let mut word = [0u8; 8];
            let n = rest.len().min(8);
            word[..n].copy_from_slice(&rest[..n]);
            (u64::from_be_bytes(word), rest.len().min(9) as u8, i)
        }));
        keyed.sort_unstable();
        for (o, k) in order[lo..hi].iter_mut().zip(&keyed) {
            *o = k.2;
        }
        let mut s = 0;
        while s < keyed.len() {
            let same = |k: &(u64, u8, u32)| k.0 == keyed[s].0 && k.1 == keyed[s].1;
            let e = s + keyed[s..].iter().take_while(|k| same(k)).count();
            if e - s > 1 && keyed[s].1 == 9 {
                ranges.push((lo + s, lo + e, depth + 8));
            }
            s = e;
        }
    }
}

/// Decodes the body of a version-3 record.
fn decode_columns(
    body: &[u8],
    ids: &mut Vec<u64>,
    on_series: impl FnOnce(&[(u64, &[u8])]),
    mut on_sample: impl FnMut(u64, i64, f64),
) -> Result<(), CodecError> {
    let mut r = Reader::new(body);
    let var = |r: &mut Reader<'_>, what: &'static str| get_var(r).ok_or(CodecError(what));
    let n = var(&mut r, "truncated series count")? as usize;
    // Each series takes at least 2 bytes.
    if n > body.len() / 2 {
        return Err(CodecError("series count larger than the record"));
    }
    let mut canon: Vec<u8> = Vec::with_capacity(body.len());
    let mut spans: Vec<(usize, usize)> = Vec::with_capacity(n);
    let mut prev = (0usize, 0usize);
    for _ in 0..n {
        let shared = var(&mut r, "truncated label prefix")? as usize;
        let rest = var(&mut r, "truncated label length")? as usize;
        if shared > prev.1 - prev.0 {
            return Err(CodecError("label prefix longer than the previous series"));
        }
        let suffix = r.take(rest).ok_or(CodecError("truncated label bytes"))?;
        let start = canon.len();
        canon.extend_from_within(prev.0..prev.0 + shared);
        canon.extend_from_slice(suffix);
        prev = (start, canon.len());
        spans.push(prev);
    }
    ids.clear();
    ids.extend(
        spans
            .iter()
            .map(|&(a, b)| xxhash_rust::xxh3::xxh3_64(&canon[a..b])),
    );
    let series: Vec<(u64, &[u8])> = spans
        .iter()
        .zip(ids.iter())
        .map(|(&(a, b), &id)| (id, &canon[a..b]))
        .collect();
    on_series(&series);
    drop(series);
    let m = var(&mut r, "truncated sample count")? as usize;
    // Each sample takes at least 3 bytes (a byte in each column).
    if m > body.len() / 3 {
        return Err(CodecError("sample count larger than the record"));
    }
    let mut which = Vec::with_capacity(m);
    let mut last = 0i64;
    for _ in 0..m {
        last = last.wrapping_add(unzigzag(var(&mut r, "truncated series column")?));
        let id = usize::try_from(last)
            .ok()
            .and_then(|i| ids.get(i))
            .ok_or(CodecError("sample refers to a missing series"))?;
        which.push(*id);
    }
    let mut times = Vec::with_capacity(m);
    let mut last = 0i64;
    for _ in 0..m {
        last = last.wrapping_add(unzigzag(var(&mut r, "truncated time column")?));
        times.push(last);
    }
    let mut prev = 0u64;
    for (&id, &ts) in which.iter().zip(&times) {
        let v = get_num(&mut r, &mut prev).ok_or(CodecError("truncated value column"))?;
        on_sample(id, ts, v);
    }
    if !r.is_empty() {
        return Err(CodecError("bytes after the value column"));
    }
    Ok(())
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
            if plain.first() != Some(&1) {
                return Err(CodecError("a version-2 frame holds no version-1 record"));
            }
            &plain[..]
        }
        Some(3) => {
            let body = zstd::stream::decode_all(&payload[1..])
                .map_err(|_| CodecError("zstd frame does not decompress"))?;
            return decode_columns(&body, ids, on_series, on_sample);
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
    fn bytes_sort_in_the_order_of_a_comparison_sort() {
        // Strings that share long prefixes, hold zero bytes, and are prefixes of each other.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let prefixes: [&[u8]; 4] = [
            b"",
            b"__name__\xffcpu_usage_percent\xff",
            b"ab\0\0cd\0",
            b"__name__\xffcpu",
        ];
        for round in 0..200 {
            let n = 1 + (next() % 300) as usize;
            let strings: Vec<Vec<u8>> = (0..n)
                .map(|_| {
                    let mut s = prefixes[(next() % 4) as usize].to_vec();
                    let len = (next() % 24) as usize;
                    s.extend((0..len).map(|_| [0u8, 1, b'a', b'b', 0xff][(next() % 5) as usize]));
                    s
                })
                .collect();
            let mut got: Vec<u32> = (0..n as u32).collect();
            sort_by_bytes(&mut got, |i| &strings[i as usize]);
            let mut want: Vec<u32> = (0..n as u32).collect();
            want.sort_by(|&a, &b| strings[a as usize].cmp(&strings[b as usize]));
            let as_bytes = |o: &[u32]| {
                o.iter()
                    .map(|&i| strings[i as usize].clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!(as_bytes(&got), as_bytes(&want), "round {round}");
        }
    }

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
                        .map(|&(id, c)| (id, crate::model::decode_canonical(c))),
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
        assert!(bytes[0] == 3 && plain[0] == 1);
        // And so do compressed version-1 records (version 2).
        let mut v2 = Vec::new();
        encode_v2(&batch, &mut v2);
        let mut from_v2 = Vec::new();
        decode(
            &v2,
            &mut Vec::new(),
            |_| {},
            |id, t, v| from_v2.push((id, t, v.to_bits())),
        )
        .unwrap();
        assert_eq!(from_v2, got);
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

    /// A fleet-like batch: hosts with four metrics each, two timestamps, a re-sent sample.
    fn fleet_batch(hosts: usize) -> WriteBatch {
        let limits = Limits::default();
        let mut b = BatchBuilder::new(&limits);
        for t in 0..2i64 {
            for h in 0..hosts {
                for (m, v) in [
                    ("cpu_load", (h % 97) as f64 / 100.0 + t as f64 * 0.013),
                    ("mem_used_bytes", (8_000_000 + h * 4096) as f64 * 1024.0),
                    ("http_requests_total", (h * 1000 + t as usize * 37) as f64),
                    ("odd", if h % 5 == 0 { f64::NAN } else { -0.0 }),
                ] {
                    let mut buf = SeriesBuf::default();
                    buf.push("__name__".into(), m.into());
                    buf.push("host".into(), format!("host-{h:05}").into());
                    buf.push("region".into(), format!("r{}", h % 4).into());
                    b.add(&mut buf, 1_700_000_000_000 + t * 10_000, v, 1);
                }
            }
        }
        // A later write of the same series and time: it must stay after the first.
        let mut buf = SeriesBuf::default();
        buf.push("__name__".into(), "cpu_load".into());
        buf.push("host".into(), "host-00003".into());
        buf.push("region".into(), "r3".into());
        b.add(&mut buf, 1_700_000_000_000, 42.5, 1);
        b.finish().0
    }

    /// Series `(id, canonical bytes)` and samples `(id, ts, value bits)` of a record.
    type Decoded = (Vec<(u64, Vec<u8>)>, Vec<(u64, i64, u64)>);

    fn decoded(bytes: &[u8]) -> Decoded {
        let (mut series, mut samples) = (Vec::new(), Vec::new());
        decode(
            bytes,
            &mut Vec::new(),
            |b| series.extend(b.iter().map(|&(id, c)| (id, c.to_vec()))),
            |id, t, v| samples.push((id, t, v.to_bits())),
        )
        .unwrap();
        (series, samples)
    }

    #[test]
    fn version_3_reads_back_what_version_1_holds_in_a_third_of_version_2() {
        let batch = fleet_batch(2_500);
        // The oracle: the uncompressed version-1 record, read by its own path.
        let mut plain = Vec::new();
        encode_plain(&batch, &mut plain);
        let (mut want_series, want) = decoded(&plain);
        let (mut v3, mut v2) = (Vec::new(), Vec::new());
        encode(&batch, &mut v3);
        encode_v2(&batch, &mut v2);
        assert_eq!(v3[0], 3);
        let (mut series, got) = decoded(&v3);
        // Ids computed on read are the ids ingest gave.
        for (id, c) in &series {
            assert_eq!(*id, xxhash_rust::xxh3::xxh3_64(c));
        }
        want_series.sort();
        series.sort();
        assert_eq!(series, want_series);
        // Samples are grouped by series; each series keeps its order.
        let by_series = |v: &[(u64, i64, u64)]| {
            let mut m: std::collections::BTreeMap<u64, Vec<(i64, u64)>> = Default::default();
            for &(id, t, x) in v {
                m.entry(id).or_default().push((t, x));
            }
            m
        };
        assert_eq!(got.len(), want.len());
        assert_eq!(by_series(&got), by_series(&want));
        let per_sample = |b: &[u8]| b.len() as f64 / batch.samples.len() as f64;
        tracing::info!(
            "fleet batch: v3 {:.2} B/sample, v2 {:.2}",
            per_sample(&v3),
            per_sample(&v2)
        );
        assert!(
            per_sample(&v3) * 2.5 < per_sample(&v2),
            "v3 {:.2} B/sample, v2 {:.2}",
            per_sample(&v3),
            per_sample(&v2)
        );
    }

    #[test]
    fn damaged_version_3_records_are_errors_never_panics() {
        let batch = fleet_batch(50);
        let mut body = Vec::new();
        encode_columns(&batch, &mut body);
        let wrap = |b: &[u8]| {
            let mut out = vec![3u8];
            out.extend_from_slice(&zstd::bulk::compress(b, 1).unwrap());
            out
        };
        assert!(decode(&wrap(&body), &mut Vec::new(), |_| {}, |_, _, _| {}).is_ok());
        for cut in 0..body.len() {
            assert!(
                decode(&wrap(&body[..cut]), &mut Vec::new(), |_| {}, |_, _, _| {}).is_err(),
                "cut at {cut}"
            );
        }
        // Flipped bytes: decoded or refused, never a panic.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut b = body.clone();
            let i = (x as usize) % b.len();
            b[i] ^= (x >> 32) as u8 | 1;
            let _ = decode(&wrap(&b), &mut Vec::new(), |_| {}, |_, _, _| {});
        }
    }
}

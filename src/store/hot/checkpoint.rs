//! Checkpoints of the hot index: the durable state of `tidemark up` is the newest valid
//! checkpoint plus the log after it (DESIGN.md section 11).
//!
//! A checkpoint is one file, `<data_dir>/checkpoints/ckpt-<offset>.tdc`, written as
//! `ckpt-<offset>.tdc.tmp`, fsynced, renamed and the directory fsynced, so a crash leaves
//! either the whole file or a `.tmp` that the next start deletes. Layout:
//!
//! ```text
//! header  64 bytes: "TDMCKPT1", version u32, 0u32, offset, watermark, replay_offset,
//!                   replay_watermark (u64), newest, created_ms (i64)
//! body    one zstd frame: records (u32 length, then a series: id, canonical labels, chunks
//!         as they are in memory, compressed head, out-of-order buffer, 1m and 1h rollups),
//!         ended by a zero length; version 3 adds each head's value mode (decimal exponent
//!         and delta shape), version 2 stores a rollup block as one buffer (window starts
//!         once, nine value columns), version 1 as nine chunks; all three are read
//! trailer 24 bytes: series count u64, CRC-32 of header and body u32, 0u32, "TDMCKEND"
//! ```
//!
//! Everything the job needs to go on is in the index itself: open windows are rebuilt from
//! the raw samples and 1-minute rollups it holds, incremental rules from its recent samples,
//! and the cold writers' open partitions from its series (see [`crate::job`]). A checkpoint
//! is verified (trailer, CRC) before it is loaded; a damaged one is reported and the previous
//! one is used with the log after it, which the log keeps (it is truncated behind the oldest
//! checkpoint kept).

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::HotIndex;

const MAGIC: &[u8; 8] = b"TDMCKPT1";
const END_MAGIC: &[u8; 8] = b"TDMCKEND";
/// The layout written; version 1 (rollup blocks as nine chunks) is still read.
const VERSION: u32 = super::snap::VERSION;
const HEADER_LEN: u64 = 64;
const TRAILER_LEN: u64 = 24;

/// Where a checkpoint stands in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointMeta {
    /// The log offset of the cut: the index holds every record before it.
    pub offset: u64,
    /// The sources' watermark after the cut.
    pub watermark: u64,
    /// Where a restart reads the log from, and the watermark its sources start at: the cut,
    /// or an earlier record when a cold writer still buffers corrections sent after it.
    pub replay_offset: u64,
    pub replay_watermark: u64,
    /// The newest sample time the index had seen (its retention window).
    pub newest: i64,
    /// Wall-clock time of the cut (ms).
    pub created_ms: i64,
}

/// A checkpoint written or loaded.
#[derive(Clone, Debug)]
pub struct CheckpointInfo {
    pub meta: CheckpointMeta,
    pub path: PathBuf,
    pub series: u64,
    pub bytes: u64,
    pub took: Duration,
}

/// Why a checkpoint could not be written or used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(path: &Path, why: impl Into<String>) -> CheckpointError {
    CheckpointError::Invalid {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// Fault injection for the fault tests, read from the environment once: a pause in the middle
/// of writing (`TIDEMARK_TEST_CHECKPOINT_PAUSE_MS`, so a test can kill the process inside a
/// write) and a disk that fills up after some bytes (`TIDEMARK_TEST_CHECKPOINT_FAIL_AFTER`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    pub pause: Option<Duration>,
    pub fail_after: Option<u64>,
}

impl Faults {
    pub fn from_env() -> Faults {
        let num = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
        Faults {
            pause: num("TIDEMARK_TEST_CHECKPOINT_PAUSE_MS").map(Duration::from_millis),
            fail_after: num("TIDEMARK_TEST_CHECKPOINT_FAIL_AFTER"),
        }
    }
}

/// A writer that checksums and counts what passes through it.
struct Counted<W> {
    inner: W,
    crc: crc32fast::Hasher,
    bytes: u64,
    fail_after: Option<u64>,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self
            .fail_after
            .is_some_and(|n| self.bytes + buf.len() as u64 > n)
        {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device (injected by TIDEMARK_TEST_CHECKPOINT_FAIL_AFTER)",
            ));
        }
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The file name of the checkpoint cut at `offset`.
pub fn file_name(offset: u64) -> String {
    format!("ckpt-{offset:020}.tdc")
}

fn header(meta: &CheckpointMeta) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN as usize);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    for v in [
        meta.offset,
        meta.watermark,
        meta.replay_offset,
        meta.replay_watermark,
    ] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(&meta.newest.to_le_bytes());
    h.extend_from_slice(&meta.created_ms.to_le_bytes());
    debug_assert_eq!(h.len() as u64, HEADER_LEN);
    h
}

fn parse_header(path: &Path, h: &[u8]) -> Result<CheckpointMeta, CheckpointError> {
    if h.len() < HEADER_LEN as usize || &h[..8] != MAGIC {
        return Err(invalid(path, "not a Tidemark checkpoint (bad magic)"));
    }
    let u = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8"));
    let version = u32::from_le_bytes(h[8..12].try_into().expect("4"));
    if !(1..=VERSION).contains(&version) {
        return Err(invalid(
            path,
            format!("checkpoint version {version}, this build reads {VERSION}"),
        ));
    }
    Ok(CheckpointMeta {
        offset: u(16),
        watermark: u(24),
        replay_offset: u(32),
        replay_watermark: u(40),
        newest: u(48) as i64,
        created_ms: u(56) as i64,
    })
}

fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Writes a checkpoint of `hot` into `dir` atomically (see the module documentation). The
/// index may change while it is written: each shard is copied under its read lock, so the
/// file holds everything before the cut and possibly some records after it, which the log
/// replay after the cut applies again (appends and rollup upserts are idempotent).
/// `kept`: how many checkpoints the caller keeps (chunk segments an older kept checkpoint may
/// reference stay: [`HotIndex::checkpoint_durable`]).
pub fn write(
    dir: &Path,
    meta: &CheckpointMeta,
    hot: &HotIndex,
    kept: usize,
    faults: Faults,
) -> Result<CheckpointInfo, CheckpointError> {
    let started = Instant::now();
    let epoch = hot.checkpoint_begins();
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(file_name(meta.offset));
    let tmp = dir.join(format!("{}.tmp", file_name(meta.offset)));
    // The chunks on disk it references are made durable before it can be found.
    let res = write_tmp(&tmp, meta, hot, faults).and_then(|v| {
        hot.sync_chunk_files()
            .map_err(io_err(hot.chunk_files().map_or(dir, |f| f.dir())))?;
        Ok(v)
    });
    let (series, bytes) = match res {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)?;
    hot.checkpoint_durable(epoch, kept);
    Ok(CheckpointInfo {
        meta: *meta,
        path,
        series,
        bytes,
        took: started.elapsed(),
    })
}

fn write_tmp(
    tmp: &Path,
    meta: &CheckpointMeta,
    hot: &HotIndex,
    faults: Faults,
) -> Result<(u64, u64), CheckpointError> {
    let file = File::create(tmp).map_err(io_err(tmp))?;
    let mut out = Counted {
        inner: BufWriter::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
        bytes: 0,
        fail_after: faults.fail_after,
    };
    out.write_all(&header(meta)).map_err(io_err(tmp))?;
    let mut z = zstd::stream::write::Encoder::new(out, 1).map_err(io_err(tmp))?;
    let mut buf = Vec::with_capacity(1 << 20);
    let mut series = 0u64;
    for i in 0..HotIndex::SHARDS {
        buf.clear();
        series += hot.snap_shard(i, &mut buf) as u64;
        z.write_all(&buf).map_err(io_err(tmp))?;
        if i == HotIndex::SHARDS / 2 {
            if let Some(p) = faults.pause {
                tracing::warn!(
                    "checkpoint {}: pausing {} ms half way (TIDEMARK_TEST_CHECKPOINT_PAUSE_MS)",
                    tmp.display(),
                    p.as_millis()
                );
                std::thread::sleep(p);
            }
        }
    }
    z.write_all(&0u32.to_le_bytes()).map_err(io_err(tmp))?;
    let mut out = z.finish().map_err(io_err(tmp))?;
    let crc = out.crc.clone().finalize();
    out.write_all(&series.to_le_bytes()).map_err(io_err(tmp))?;
    out.write_all(&crc.to_le_bytes()).map_err(io_err(tmp))?;
    out.write_all(&0u32.to_le_bytes()).map_err(io_err(tmp))?;
    out.write_all(END_MAGIC).map_err(io_err(tmp))?;
    let bytes = out.bytes;
    let file = out
        .inner
        .into_inner()
        .map_err(|e| io_err(tmp)(e.into_error()))?;
    file.sync_all().map_err(io_err(tmp))?;
    Ok((series, bytes))
}

/// Reads a checkpoint's header and checks its trailer and CRC (reading the whole file).
pub fn verify(path: &Path) -> Result<(CheckpointMeta, u64), CheckpointError> {
    verify_versioned(path).map(|(meta, series, _)| (meta, series))
}

/// [`verify`], also returning the layout version.
fn verify_versioned(path: &Path) -> Result<(CheckpointMeta, u64, u32), CheckpointError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let len = f.metadata().map_err(io_err(path))?.len();
    if len < HEADER_LEN + TRAILER_LEN {
        return Err(invalid(path, format!("truncated ({len} bytes)")));
    }
    let mut h = vec![0u8; HEADER_LEN as usize];
    f.read_exact(&mut h).map_err(io_err(path))?;
    let meta = parse_header(path, &h)?;
    let version = u32::from_le_bytes(h[8..12].try_into().expect("4"));
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h);
    let mut left = len - HEADER_LEN - TRAILER_LEN;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = (buf.len() as u64).min(left) as usize;
        f.read_exact(&mut buf[..n]).map_err(io_err(path))?;
        crc.update(&buf[..n]);
        left -= n as u64;
    }
    let mut t = [0u8; TRAILER_LEN as usize];
    f.read_exact(&mut t).map_err(io_err(path))?;
    if &t[16..24] != END_MAGIC {
        return Err(invalid(path, "truncated (no trailer)"));
    }
    let series = u64::from_le_bytes(t[0..8].try_into().expect("8"));
    let want = u32::from_le_bytes(t[8..12].try_into().expect("4"));
    let got = crc.finalize();
    if want != got {
        return Err(invalid(
            path,
            format!("checksum mismatch (file says {want:08x}, contents give {got:08x})"),
        ));
    }
    Ok((meta, series, version))
}

/// Loads a verified checkpoint into `hot` (an empty index).
pub fn load(path: &Path, hot: &HotIndex) -> Result<CheckpointInfo, CheckpointError> {
    let started = Instant::now();
    let (meta, series, version) = verify_versioned(path)?;
    let f = File::open(path).map_err(io_err(path))?;
    let len = f.metadata().map_err(io_err(path))?.len();
    let mut r = BufReader::with_capacity(1 << 20, f);
    io::copy(&mut (&mut r).take(HEADER_LEN), &mut io::sink()).map_err(io_err(path))?;
    let body = r.take(len - HEADER_LEN - TRAILER_LEN);
    let mut z = zstd::stream::read::Decoder::new(body).map_err(io_err(path))?;
    let mut rec = Vec::new();
    let mut n = 0u64;
    loop {
        let mut l = [0u8; 4];
        z.read_exact(&mut l).map_err(io_err(path))?;
        let l = u32::from_le_bytes(l) as usize;
        if l == 0 {
            break;
        }
        rec.resize(l, 0);
        z.read_exact(&mut rec).map_err(io_err(path))?;
        hot.unsnap_series(&rec, version)
            .map_err(|e| invalid(path, format!("series record {n}: {e}")))?;
        n += 1;
    }
    if n != series {
        return Err(invalid(
            path,
            format!("{n} series records, the trailer says {series}"),
        ));
    }
    hot.observe_newest(meta.newest);
    Ok(CheckpointInfo {
        meta,
        path: path.to_path_buf(),
        series,
        bytes: len,
        took: started.elapsed(),
    })
}

/// The checkpoints in `dir`, newest (highest offset) first.
pub fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<(u64, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let off = name.strip_prefix("ckpt-")?.strip_suffix(".tdc")?;
            Some((off.parse().ok()?, e.path()))
        })
        .collect();
    v.sort_by_key(|x| std::cmp::Reverse(x.0));
    v
}

/// Deletes the `.tmp` files a crash during a write left; returns their names.
pub fn remove_partial(dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            (name.starts_with("ckpt-")
                && name.ends_with(".tmp")
                && fs::remove_file(e.path()).is_ok())
            .then_some(name)
        })
        .collect()
}

/// Keeps the newest `keep` checkpoints (at least one), deletes the rest; returns the
/// replay offset of the oldest one kept (what the log must still hold), if any.
pub fn prune(dir: &Path, keep: usize) -> Result<Option<u64>, CheckpointError> {
    let all = list(dir);
    for (_, p) in all.iter().skip(keep.max(1)) {
        fs::remove_file(p).map_err(io_err(p))?;
    }
    let mut oldest = None;
    for (_, p) in all.iter().take(keep.max(1)) {
        let mut h = vec![0u8; HEADER_LEN as usize];
        let meta = File::open(p)
            .and_then(|mut f| f.read_exact(&mut h))
            .map_err(io_err(p))
            .and_then(|_| parse_header(p, &h));
        match meta {
            Ok(m) => oldest = Some(oldest.map_or(m.replay_offset, |o: u64| o.min(m.replay_offset))),
            // An unreadable checkpoint cannot be fallen back on: it does not hold the log.
            Err(_) => continue,
        }
    }
    Ok(oldest)
}

/// What [`load_newest`] found.
pub struct Loaded {
    pub hot: HotIndex,
    pub info: CheckpointInfo,
}

/// Loads the newest checkpoint that verifies into a fresh index from `fresh`; each one that
/// does not is reported on `report` (with the reason) and the previous one is tried.
pub fn load_newest(
    dir: &Path,
    fresh: impl Fn() -> HotIndex,
    mut report: impl FnMut(&CheckpointError),
) -> Option<Loaded> {
    for (_, path) in list(dir) {
        let hot = fresh();
        match load(&path, &hot) {
            Ok(info) => return Some(Loaded { hot, info }),
            Err(e) => report(&e),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Labels;
    use crate::store::hot::Resolution;
    use tidemark_dataflows::{Rollup, Sample};

    fn filled() -> HotIndex {
        let hot = HotIndex::new(i64::MAX / 4);
        for s in 0..50u64 {
            let labels = Labels::from_pairs([("__name__", "m"), ("i", &*s.to_string())]);
            let id = labels.series_id();
            hot.catalog.register(id, labels);
            let mut samples: Vec<Sample> = (0..300)
                .map(|i| Sample {
                    series: id,
                    ts: i * 10_000 + s as i64,
                    value: (i as f64) * 0.5 + s as f64,
                })
                .collect();
            samples.swap(250, 260); // out of order: something in the buffer
            hot.append_samples(&samples);
            let rollups: Vec<Rollup> = (0..40)
                .map(|m| {
                    Rollup::from_sorted(id, m * 60_000, 60_000, &[(m * 60_000 + 1, m as f64)])
                        .expect("rollup")
                })
                .collect();
            hot.upsert(&rollups);
        }
        hot
    }

    fn meta() -> CheckpointMeta {
        CheckpointMeta {
            offset: 1234,
            watermark: 99,
            replay_offset: 1000,
            replay_watermark: 90,
            newest: 3_000_000,
            created_ms: 5,
        }
    }

    fn same(a: &HotIndex, b: &HotIndex) {
        assert_eq!(a.catalog.len(), b.catalog.len());
        assert_eq!(a.sample_count(), b.sample_count());
        assert_eq!(a.bytes(), b.bytes());
        for i in 0..HotIndex::SHARDS {
            for id in a.shard_ids(i) {
                let (mut x, mut y) = (Vec::new(), Vec::new());
                a.samples(id, i64::MIN, i64::MAX, &mut x);
                b.samples(id, i64::MIN, i64::MAX, &mut y);
                assert_eq!(x, y);
                assert_eq!(
                    a.rollups(id, Resolution::OneMinute, i64::MIN, i64::MAX),
                    b.rollups(id, Resolution::OneMinute, i64::MIN, i64::MAX)
                );
                assert_eq!(a.catalog.labels(id), b.catalog.labels(id));
            }
        }
    }

    #[test]
    fn round_trip_keeps_every_sample_rollup_and_label() {
        let dir = tempfile::tempdir().unwrap();
        let hot = filled();
        let w = write(dir.path(), &meta(), &hot, 2, Faults::default()).unwrap();
        assert_eq!(w.series, 50);
        let back = HotIndex::new(i64::MAX / 4);
        let l = load(&w.path, &back).unwrap();
        assert_eq!(l.meta, meta());
        same(&hot, &back);
        // The loaded index goes on taking appends (the head was restored mid-stream).
        let id = back.shard_ids(
            (0..HotIndex::SHARDS)
                .find(|&i| !back.shard_ids(i).is_empty())
                .unwrap(),
        )[0];
        back.append_samples(&[Sample {
            series: id,
            ts: 10_000_000,
            value: 1.0,
        }]);
        let mut out = Vec::new();
        back.samples(id, 9_000_000, i64::MAX, &mut out);
        assert_eq!(out, vec![(10_000_000, 1.0)]);
    }

    #[test]
    fn a_damaged_checkpoint_is_reported_and_the_previous_one_used() {
        let dir = tempfile::tempdir().unwrap();
        let hot = filled();
        let old = write(dir.path(), &meta(), &hot, 2, Faults::default()).unwrap();
        let newer = CheckpointMeta {
            offset: 2000,
            ..meta()
        };
        let new = write(dir.path(), &newer, &hot, 2, Faults::default()).unwrap();
        // One flipped byte in the body.
        let mut b = fs::read(&new.path).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x40;
        fs::write(&new.path, &b).unwrap();
        let mut reports = Vec::new();
        let got = load_newest(
            dir.path(),
            || HotIndex::new(i64::MAX / 4),
            |e| reports.push(e.to_string()),
        )
        .unwrap();
        assert_eq!(got.info.path, old.path);
        assert_eq!(reports.len(), 1);
        assert!(reports[0].contains("checksum mismatch"), "{reports:?}");
        same(&hot, &got.hot);
        // Truncated: the trailer is gone.
        fs::write(&new.path, &b[..b.len() - 10]).unwrap();
        let e = verify(&new.path).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }

    #[test]
    fn a_full_disk_leaves_no_partial_file_and_the_previous_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let hot = filled();
        let old = write(dir.path(), &meta(), &hot, 2, Faults::default()).unwrap();
        let faults = Faults {
            fail_after: Some(old.bytes / 2),
            ..Faults::default()
        };
        let e = write(
            dir.path(),
            &CheckpointMeta {
                offset: 5000,
                ..meta()
            },
            &hot,
            2,
            faults,
        )
        .unwrap_err();
        assert!(e.to_string().contains("no space left"), "{e}");
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![file_name(1234)]);
        assert!(verify(&old.path).is_ok());
    }

    #[test]
    fn prune_keeps_the_newest_and_reports_what_the_log_must_hold() {
        let dir = tempfile::tempdir().unwrap();
        let hot = HotIndex::new(1000);
        for (off, replay) in [(10, 5), (20, 15), (30, 30)] {
            let m = CheckpointMeta {
                offset: off,
                replay_offset: replay,
                ..meta()
            };
            write(dir.path(), &m, &hot, 2, Faults::default()).unwrap();
        }
        fs::write(
            dir.path().join("ckpt-00000000000000000040.tdc.tmp"),
            b"partial",
        )
        .unwrap();
        assert_eq!(remove_partial(dir.path()).len(), 1);
        assert_eq!(prune(dir.path(), 2).unwrap(), Some(15));
        let left: Vec<u64> = list(dir.path()).into_iter().map(|x| x.0).collect();
        assert_eq!(left, vec![30, 20]);
    }
}

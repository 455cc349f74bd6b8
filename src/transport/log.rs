//! The embedded log: a durable, offset-addressed, append-only record log under
//! `<data_dir>/log/`, standing in for the Kafka `metrics` topic in `tidemark up`.
//!
//! Records live in segment files named by their first offset (`00000000000000000000.seg`).
//! A record is framed as `u32 payload_len | u32 crc32 | i64 min_ts | i64 max_ts | u8 kind | payload`,
//! the CRC covering everything after itself. The time range in the frame lets every reader keep
//! the same watermark from the frames alone, whichever records it decodes. An append returns
//! only once the record is written and, under the `always` policy, fsynced (concurrent appends
//! share one fsync). On open, a torn or corrupt tail is truncated: it was never acknowledged.

use crate::config::FsyncPolicy;
use crate::time::now_ms;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Bytes of a frame header.
pub const HEADER_LEN: usize = 25;
const SEGMENT_BYTES: u64 = 256 << 20;

/// The size at which a segment rolls: 256 MiB, or `TIDEMARK_TEST_LOG_SEGMENT_BYTES` (the fault
/// tests use small segments so that truncation behind a checkpoint happens in seconds).
fn segment_bytes() -> u64 {
    static SIZE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        std::env::var("TIDEMARK_TEST_LOG_SEGMENT_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n: &u64| n > 0)
            .unwrap_or(SEGMENT_BYTES)
    })
}

/// A pause after the first segment a truncation deletes, when it deletes more than one:
/// `TIDEMARK_TEST_LOG_TRUNCATE_PAUSE_MS` (the fault tests kill the process inside it).
fn truncate_pause() -> Option<std::time::Duration> {
    static PAUSE: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    PAUSE
        .get_or_init(|| {
            std::env::var("TIDEMARK_TEST_LOG_TRUNCATE_PAUSE_MS")
                .ok()
                .and_then(|v| v.parse().ok())
        })
        .map(std::time::Duration::from_millis)
}

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// A [`crate::transport::codec`] batch.
    Batch = 1,
    /// No data: event time advanced to `max_ts` while the log was idle (see the idle timeout).
    Tick = 2,
}

/// A record as read back.
#[derive(Clone, Debug)]
pub struct Record {
    pub offset: u64,
    pub min_ts: i64,
    pub max_ts: i64,
    pub kind: RecordKind,
    /// Empty when the reader skipped the payload.
    pub payload: Vec<u8>,
}

/// Log errors.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log I/O at {path}: {source} (check free space and permissions of the data dir)")]
    Io { path: PathBuf, source: io::Error },
    #[error("log offset {offset} is no longer retained (first retained offset is {first})")]
    Truncated { offset: u64, first: u64 },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Clone, Debug)]
struct Segment {
    base: u64,
    path: PathBuf,
}

struct Writer {
    file: File,
    path: PathBuf,
    pos: u64,
    next: u64,
    frame: Vec<u8>,
}

struct Shared {
    dir: PathBuf,
    policy: FsyncPolicy,
    writer: Mutex<Writer>,
    sync: Mutex<u64>,
    segments: RwLock<Vec<Segment>>,
    end: AtomicU64,
    max_ts: AtomicI64,
    last_append_ms: AtomicI64,
    appended_bytes: AtomicU64,
}

/// A handle to the log; cheap to clone.
#[derive(Clone)]
pub struct Log {
    shared: Arc<Shared>,
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

/// Reads one frame header; `Ok(None)` at a clean end or a torn/corrupt frame.
fn read_frame(
    r: &mut impl Read,
    with_payload: bool,
    buf: &mut Vec<u8>,
) -> io::Result<Option<(i64, i64, u8, u32)>> {
    let mut h = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut h[got..])?;
        if n == 0 {
            return Ok(None);
        }
        got += n;
    }
    let len = u32::from_le_bytes(h[0..4].try_into().expect("4"));
    let crc = u32::from_le_bytes(h[4..8].try_into().expect("4"));
    let min_ts = i64::from_le_bytes(h[8..16].try_into().expect("8"));
    let max_ts = i64::from_le_bytes(h[16..24].try_into().expect("8"));
    let kind = h[24];
    if !(1..=2).contains(&kind) || u64::from(len) > SEGMENT_BYTES * 4 {
        return Ok(None);
    }
    if with_payload {
        buf.resize(len as usize, 0);
        if r.read_exact(buf).is_err() {
            return Ok(None);
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&h[8..]);
        hasher.update(buf);
        if hasher.finalize() != crc {
            return Ok(None);
        }
    }
    Ok(Some((min_ts, max_ts, kind, len)))
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering from a torn tail.
    pub fn open(dir: &Path, policy: FsyncPolicy) -> Result<Log, LogError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut bases: Vec<u64> = fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".seg"))
                    .and_then(|n| n.parse().ok())
            })
            .collect();
        bases.sort_unstable();
        if bases.is_empty() {
            bases.push(0);
            File::create(segment_path(dir, 0)).map_err(io_err(dir))?;
        }
        let mut segments = Vec::new();
        let mut max_ts = i64::MIN;
        let mut next = bases[0];
        let mut last_pos = 0;
        for (i, &base) in bases.iter().enumerate() {
            let path = segment_path(dir, base);
            if base != next && i > 0 {
                // A gap means a lost segment; continue from what is there.
                tracing::warn!(
                    expected = next,
                    found = base,
                    "log segment gap: the records between are lost; reading on from the next segment"
                );
            }
            next = base;
            let file = File::open(&path).map_err(io_err(&path))?;
            let mut r = BufReader::with_capacity(1 << 20, file);
            let mut pos = 0u64;
            let mut buf = Vec::new();
            while let Some((_, hi, kind, len)) =
                read_frame(&mut r, true, &mut buf).map_err(io_err(&path))?
            {
                let _ = kind;
                max_ts = max_ts.max(hi);
                pos += HEADER_LEN as u64 + u64::from(len);
                next += 1;
            }
            let size = fs::metadata(&path).map_err(io_err(&path))?.len();
            if size != pos {
                tracing::warn!(
                    segment = %path.display(),
                    at = pos,
                    size,
                    "truncating a torn tail (a write the process did not finish; it was never acknowledged)"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(pos).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
            }
            last_pos = pos;
            segments.push(Segment { base, path });
        }
        let active = segments.last().expect("at least one segment").path.clone();
        let file = OpenOptions::new()
            .append(true)
            .open(&active)
            .map_err(io_err(&active))?;
        let shared = Shared {
            dir: dir.to_path_buf(),
            policy,
            writer: Mutex::new(Writer {
                file,
                path: active,
                pos: last_pos,
                next,
                frame: Vec::new(),
            }),
            sync: Mutex::new(next),
            segments: RwLock::new(segments),
            end: AtomicU64::new(next),
            max_ts: AtomicI64::new(max_ts),
            last_append_ms: AtomicI64::new(now_ms()),
            appended_bytes: AtomicU64::new(0),
        };
        Ok(Log {
            shared: Arc::new(shared),
        })
    }

    /// Appends a record and returns its offset once it is durable under the fsync policy.
    /// Blocking: call from a blocking context.
    pub fn append(
        &self,
        kind: RecordKind,
        min_ts: i64,
        max_ts: i64,
        payload: &[u8],
    ) -> Result<u64, LogError> {
        let offset = {
            let mut w = self.shared.writer.lock().unwrap_or_else(|e| e.into_inner());
            if w.pos >= segment_bytes() {
                self.roll(&mut w)?;
            }
            let Writer {
                frame,
                file,
                path,
                pos,
                ..
            } = &mut *w;
            frame.clear();
            frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            frame.extend_from_slice(&[0; 4]);
            frame.extend_from_slice(&min_ts.to_le_bytes());
            frame.extend_from_slice(&max_ts.to_le_bytes());
            frame.push(kind as u8);
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&frame[8..]);
            hasher.update(payload);
            let crc = hasher.finalize();
            frame[4..8].copy_from_slice(&crc.to_le_bytes());
            frame.extend_from_slice(payload);
            if let Err(e) = file.write_all(frame) {
                // Undo a partial write so the next record starts on a frame boundary.
                let _ = file.set_len(*pos);
                return Err(LogError::Io {
                    path: path.clone(),
                    source: e,
                });
            }
            w.pos += w.frame.len() as u64;
            let offset = w.next;
            w.next += 1;
            self.shared.max_ts.fetch_max(max_ts, Ordering::Relaxed);
            self.shared
                .last_append_ms
                .store(now_ms(), Ordering::Relaxed);
            self.shared
                .appended_bytes
                .fetch_add(w.frame.len() as u64, Ordering::Relaxed);
            if self.shared.policy != FsyncPolicy::Always {
                self.shared.end.store(w.next, Ordering::Release);
            }
            offset
        };
        if self.shared.policy == FsyncPolicy::Always {
            self.sync_through(offset)?;
        }
        Ok(offset)
    }

    /// Forces every record up to `offset` to disk; concurrent callers share one fsync.
    pub fn sync_through(&self, offset: u64) -> Result<(), LogError> {
        let mut synced = self.shared.sync.lock().unwrap_or_else(|e| e.into_inner());
        if *synced > offset {
            return Ok(());
        }
        let (file, path, target) = {
            let w = self.shared.writer.lock().unwrap_or_else(|e| e.into_inner());
            (
                w.file.try_clone().map_err(io_err(&w.path))?,
                w.path.clone(),
                w.next,
            )
        };
        file.sync_data().map_err(io_err(&path))?;
        *synced = target;
        self.shared.end.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }

    /// fsyncs everything appended so far (shutdown, and the `interval` policy's timer).
    pub fn sync(&self) -> Result<(), LogError> {
        let next = self
            .shared
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next;
        if next == 0 {
            return Ok(());
        }
        self.sync_through(next - 1)
    }

    fn roll(&self, w: &mut Writer) -> Result<(), LogError> {
        w.file.sync_data().map_err(io_err(&w.path))?;
        let path = segment_path(&self.shared.dir, w.next);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        if let Ok(d) = File::open(&self.shared.dir) {
            let _ = d.sync_all();
        }
        self.shared
            .segments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Segment {
                base: w.next,
                path: path.clone(),
            });
        w.file = file;
        w.path = path;
        w.pos = 0;
        Ok(())
    }

    /// One past the last readable offset.
    pub fn end_offset(&self) -> u64 {
        self.shared.end.load(Ordering::Acquire)
    }

    /// The first retained offset.
    pub fn start_offset(&self) -> u64 {
        self.shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())[0]
            .base
    }

    /// Largest event time of any record appended so far (`i64::MIN` when empty).
    pub fn max_event_ts(&self) -> i64 {
        self.shared.max_ts.load(Ordering::Relaxed)
    }

    /// Wall-clock ms of the last append (or of opening).
    pub fn last_append_ms(&self) -> i64 {
        self.shared.last_append_ms.load(Ordering::Relaxed)
    }

    /// The segments on disk and their bytes (a `stat` per segment; one missing is counted as
    /// empty).
    pub fn disk_usage(&self) -> (usize, u64) {
        let segs = self
            .shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let bytes = segs
            .iter()
            .map(|s| fs::metadata(&s.path).map_or(0, |m| m.len()))
            .sum();
        (segs.len(), bytes)
    }

    /// Bytes appended since open.
    pub fn appended_bytes(&self) -> u64 {
        self.shared.appended_bytes.load(Ordering::Relaxed)
    }

    /// Deletes whole segments (never the active one) last written longer than `age` ago.
    /// Returns how many were deleted.
    pub fn delete_older_than(&self, age: Duration) -> Result<usize, LogError> {
        self.delete_older_than_if(age, |_| true)
    }

    /// Like [`Log::delete_older_than`], deleting an old segment only when `may(newest event
    /// time of its batch records)` allows it (the cold tiers must have sealed its data); the
    /// first segment kept stops the deletion, so offsets stay contiguous.
    pub fn delete_older_than_if(
        &self,
        age: Duration,
        may: impl Fn(i64) -> bool,
    ) -> Result<usize, LogError> {
        let candidates: Vec<(u64, u64)> = {
            let segs = self
                .shared
                .segments
                .read()
                .unwrap_or_else(|e| e.into_inner());
            segs.windows(2).map(|w| (w[0].base, w[1].base)).collect()
        };
        let mut allowed = 0usize;
        for (base, next) in candidates {
            let mut r = self.reader(base)?;
            let mut newest = i64::MIN;
            while r.position() < next {
                match r.next_record(|_| false)? {
                    Some(rec) if rec.kind == RecordKind::Batch => newest = newest.max(rec.max_ts),
                    Some(_) => {}
                    None => break,
                }
            }
            if !may(newest) {
                break;
            }
            allowed += 1;
        }
        self.delete_oldest(age, allowed)
    }

    /// Deletes the whole segments that lie before `offset` (a checkpoint no longer needs
    /// them); the segment holding `offset` and the active one stay. Returns how many went.
    pub fn delete_before(&self, offset: u64) -> Result<usize, LogError> {
        // Oldest first, one segment per lock hold: a crash in between leaves a log that
        // starts later, which a restart opens as it is (what it still needs is after it).
        let mut n = 0;
        loop {
            let mut segs = self
                .shared
                .segments
                .write()
                .unwrap_or_else(|e| e.into_inner());
            if !(segs.len() > 1 && segs[1].base <= offset) {
                return Ok(n);
            }
            fs::remove_file(&segs[0].path).map_err(io_err(&segs[0].path))?;
            segs.remove(0);
            n += 1;
            let left = segs.iter().skip(1).take_while(|s| s.base <= offset).count();
            drop(segs);
            if let (1, Some(p)) = (n, truncate_pause()) {
                if left > 0 {
                    tracing::warn!(
                        "log truncation before offset {offset}: 1 segment deleted, {left} to go; pausing {} ms (TIDEMARK_TEST_LOG_TRUNCATE_PAUSE_MS)",
                        p.as_millis()
                    );
                    std::thread::sleep(p);
                }
            }
        }
    }

    fn delete_oldest(&self, age: Duration, limit: usize) -> Result<usize, LogError> {
        let mut segs = self
            .shared
            .segments
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        while segs.len() > 1 && n < limit {
            let meta = fs::metadata(&segs[0].path).map_err(io_err(&segs[0].path))?;
            let old = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|e| e > age);
            if !old {
                break;
            }
            fs::remove_file(&segs[0].path).map_err(io_err(&segs[0].path))?;
            segs.remove(0);
            n += 1;
        }
        Ok(n)
    }

    /// A reader positioned at `offset` (clamped up to the first retained offset).
    pub fn reader(&self, offset: u64) -> Result<LogReader, LogError> {
        let mut r = LogReader {
            log: self.clone(),
            seg: None,
            file: None,
            next: 0,
            buf: Vec::new(),
        };
        r.seek(offset)?;
        Ok(r)
    }
}

/// A sequential reader. Payloads are read only for records the caller wants.
pub struct LogReader {
    log: Log,
    /// The segment being read: its first offset and path. Segments are known by base, not by
    /// position in the list: truncation removes segments from its front while a reader reads.
    seg: Option<(u64, PathBuf)>,
    file: Option<BufReader<File>>,
    next: u64,
    buf: Vec<u8>,
}

impl LogReader {
    /// The offset of the next record.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Repositions to `offset` (clamped to the first retained offset).
    pub fn seek(&mut self, offset: u64) -> Result<(), LogError> {
        let segs = self
            .log
            .shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let offset = offset.max(segs[0].base);
        let i = segs.iter().rposition(|s| s.base <= offset).unwrap_or(0);
        self.open_segment(&segs[i])?;
        while self.next < offset {
            if self.next_record(|_| false)?.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn open_segment(&mut self, seg: &Segment) -> Result<(), LogError> {
        let f = File::open(&seg.path).map_err(io_err(&seg.path))?;
        self.file = Some(BufReader::with_capacity(1 << 20, f));
        self.seg = Some((seg.base, seg.path.clone()));
        self.next = seg.base;
        Ok(())
    }

    /// Reads the next record if one is readable; `want(offset)` decides whether its payload is
    /// loaded. Returns `None` at the current end of the log.
    pub fn next_record(
        &mut self,
        want: impl FnOnce(u64) -> bool,
    ) -> Result<Option<Record>, LogError> {
        self.next_record_if(|offset, _, _| want(offset))
    }

    /// [`LogReader::next_record`], with `want(offset, min_ts, max_ts)` given the record's time
    /// range from its header, read before the payload.
    pub fn next_record_if(
        &mut self,
        want: impl FnOnce(u64, i64, i64) -> bool,
    ) -> Result<Option<Record>, LogError> {
        if self.next >= self.log.end_offset() {
            return Ok(None);
        }
        // Move to the next segment when this one is exhausted: the segment holding `next` is
        // the last one starting at or before it; it is opened when it starts exactly there.
        // (The one being read may have been deleted by a truncation meanwhile: its open file
        // is read to its end.)
        let next_seg = {
            let segs = self
                .log
                .shared
                .segments
                .read()
                .unwrap_or_else(|e| e.into_inner());
            segs.iter()
                .rev()
                .find(|s| s.base <= self.next)
                .filter(|s| s.base == self.next && self.seg.as_ref().map(|c| c.0) != Some(s.base))
                .cloned()
        };
        if let Some(seg) = next_seg {
            self.open_segment(&seg)?;
        }
        let path = self.seg.as_ref().map(|c| c.1.clone()).unwrap_or_default();
        let offset = self.next;
        let file = self.file.as_mut().expect("open segment");
        // Read the header first; then either the payload or a skip.
        let mut h = [0u8; HEADER_LEN];
        file.read_exact(&mut h).map_err(io_err(&path))?;
        let len = u32::from_le_bytes(h[0..4].try_into().expect("4")) as usize;
        let crc = u32::from_le_bytes(h[4..8].try_into().expect("4"));
        let min_ts = i64::from_le_bytes(h[8..16].try_into().expect("8"));
        let max_ts = i64::from_le_bytes(h[16..24].try_into().expect("8"));
        let kind = if h[24] == 2 {
            RecordKind::Tick
        } else {
            RecordKind::Batch
        };
        let payload = if want(offset, min_ts, max_ts) {
            self.buf.resize(len, 0);
            file.read_exact(&mut self.buf).map_err(io_err(&path))?;
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&h[8..]);
            hasher.update(&self.buf);
            if hasher.finalize() != crc {
                return Err(LogError::Io {
                    path,
                    source: io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("CRC mismatch in record {offset}"),
                    ),
                });
            }
            std::mem::take(&mut self.buf)
        } else {
            file.seek_relative(len as i64).map_err(io_err(&path))?;
            Vec::new()
        };
        self.next += 1;
        Ok(Some(Record {
            offset,
            min_ts,
            max_ts,
            kind,
            payload,
        }))
    }

    /// Gives a payload buffer back for reuse.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if buf.capacity() > self.buf.capacity() {
            self.buf = buf;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_reopen_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), FsyncPolicy::Always).unwrap();
        for i in 0..10i64 {
            assert_eq!(
                log.append(RecordKind::Batch, i, i + 1, format!("rec{i}").as_bytes())
                    .unwrap(),
                i as u64
            );
        }
        let mut r = log.reader(3).unwrap();
        let rec = r.next_record(|_| true).unwrap().unwrap();
        assert_eq!((rec.offset, rec.payload.as_slice()), (3, &b"rec3"[..]));
        let skipped = r.next_record(|_| false).unwrap().unwrap();
        assert_eq!(
            (skipped.offset, skipped.max_ts, skipped.payload.len()),
            (4, 5, 0)
        );
        drop(log);
        // Tear the tail: append half a frame.
        let seg = segment_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let log = Log::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert_eq!(log.end_offset(), 10);
        assert_eq!(log.max_event_ts(), 10);
        assert_eq!(log.append(RecordKind::Tick, 0, 20, b"").unwrap(), 10);
        let mut r = log.reader(0).unwrap();
        let mut n = 0;
        while let Some(rec) = r.next_record(|_| true).unwrap() {
            assert_eq!(rec.offset, n);
            n += 1;
        }
        assert_eq!(n, 11);
    }

    #[test]
    fn segments_roll_are_read_across_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), FsyncPolicy::Interval).unwrap();
        let big = vec![7u8; 1 << 20];
        // 300 MiB crosses one segment boundary (segments are 256 MiB).
        for i in 0..300i64 {
            log.append(RecordKind::Batch, i, i, &big).unwrap();
        }
        log.sync().unwrap();
        let segs = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(segs, 2);
        let mut r = log.reader(250).unwrap();
        let mut n = 250;
        while let Some(rec) = r.next_record(|o| o % 50 == 0).unwrap() {
            assert_eq!(rec.offset, n);
            assert_eq!(rec.payload.len(), if n % 50 == 0 { big.len() } else { 0 });
            n += 1;
        }
        assert_eq!(n, 300);
        // Truncation behind a checkpoint deletes only segments wholly before its offset.
        assert_eq!(log.delete_before(200).unwrap(), 0);
        assert_eq!(log.start_offset(), 0);
        // Expiry keeps the active segment and moves the start offset; a segment whose data
        // is not allowed to go (not yet in the cold tiers) stays.
        assert_eq!(
            log.delete_older_than_if(Duration::ZERO, |_| false).unwrap(),
            0
        );
        assert_eq!(log.start_offset(), 0);
        assert_eq!(log.delete_older_than(Duration::ZERO).unwrap(), 1);
        assert!(log.start_offset() > 200);
        let r = log.reader(0).unwrap();
        assert_eq!(r.position(), log.start_offset());
        drop(log);
        let log = Log::open(dir.path(), FsyncPolicy::Never).unwrap();
        assert_eq!(log.end_offset(), 300);
        for i in 300..600i64 {
            log.append(RecordKind::Batch, i, i, &big).unwrap();
        }
        let start = log.start_offset();
        assert_eq!(log.delete_before(550).unwrap(), 1);
        assert!(log.start_offset() > start && log.start_offset() <= 550);
        assert_eq!(
            log.delete_before(u64::MAX).unwrap(),
            0,
            "the active segment stays"
        );
    }

    /// A truncation that deletes segments before the one a reader is in must not lose the
    /// reader's place: it read on into the next segment (it used to track its segment by
    /// position in the list, and stalled for good at the next boundary, a job reading
    /// nothing more: seen at 1 M series).
    #[test]
    fn a_reader_crosses_segments_while_earlier_ones_are_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), FsyncPolicy::Never).unwrap();
        let big = vec![7u8; 1 << 20];
        // Three segments of 256 records (256 MiB) and a fourth.
        for i in 0..800i64 {
            log.append(RecordKind::Batch, i, i, &big).unwrap();
        }
        let mut r = log.reader(300).unwrap();
        // Inside the second segment, then the first is deleted.
        for _ in 0..100 {
            r.next_record(|_| false).unwrap().unwrap();
        }
        assert_eq!(log.delete_before(400).unwrap(), 1);
        let mut n = 400;
        while let Some(rec) = r.next_record(|o| o % 97 == 0).unwrap() {
            assert_eq!(rec.offset, n);
            if n % 97 == 0 {
                assert_eq!(rec.payload, big);
            }
            n += 1;
            // And one more deleted while the reader is in the third.
            if n == 600 {
                assert_eq!(log.delete_before(600).unwrap(), 1);
            }
        }
        assert_eq!(n, 800);
    }
}

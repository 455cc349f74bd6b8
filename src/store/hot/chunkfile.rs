//! Sealed chunks on local disk (`<data_dir>/chunks/`), as Prometheus keeps its head chunks in
//! `chunks_head/`: the index keeps a reference per sealed chunk instead of its bytes (about
//! 14 bytes, packed with the chunk's times and count: `sealed`), and reads it back with one positioned read (the page cache holds what is read often; it is
//! not the process's memory).
//!
//! Chunks are appended to numbered segment files (`00000001.chunks`, ...) of at most
//! [`SEGMENT_BYTES`], a batch at a time by [`super::HotIndex::spill`]; a segment is never
//! written again after the process that wrote it stops (a start opens a new one). A segment is
//! deleted when every chunk in it is older than what the index keeps ([`ChunkFiles::remove_before`]),
//! or at start when the loaded checkpoint references nothing in it (what the previous process
//! wrote after its last checkpoint: the log replay writes it again), or once nothing references
//! it any more: the index releases a chunk's reference when it merges the chunk into a larger
//! one (compaction, two hours after the chunk's samples), rewrites it with late samples, or
//! drops it by retention ([`ChunkFiles::release`]), and a closed segment whose bytes are all
//! released is deleted when every checkpoint kept on disk began after that
//! ([`ChunkFiles::checkpoint_durable`]), so that no checkpoint a restart may load points into
//! it. Released bytes of a segment that still holds live chunks stay until it goes.
//!
//! Durability: a checkpoint that references chunks fsyncs their segments first
//! ([`ChunkFiles::sync`]), so a checkpoint never points at bytes a crash could lose.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// A segment is closed and a new one started once it would grow past this ...
pub const SEGMENT_BYTES: u64 = 256 << 20;
/// ... or once a batch's newest sample is this far past the newest sample of the segment's
/// first batch (an hour of sample time). Where less than a segment is written an hour (fewer
/// than about 200,000 series), a segment open for the whole run holds every fresh chunk,
/// long merged away, and cannot be deleted: a 30-hour run of 10,000 series had one open
/// segment of 106 MB and a full one of 268 MB beside 122 MB referenced.
pub const SEGMENT_SPAN_MS: i64 = 3_600_000;

/// Where a chunk's bytes are: segment number, offset and length (without the decoder's
/// padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DiskRef {
    pub seg: u32,
    pub off: u32,
    pub len: u32,
}

/// [`ChunkFiles::read_many`] reads chunks this close together (bytes between them) in one run
/// ...
pub const PREFETCH_GAP: u64 = 4 << 10;
/// ... of at most this many bytes.
pub const PREFETCH_RUN: u64 = 4 << 20;

/// Chunk bytes read ahead by [`ChunkFiles::read_many`].
#[derive(Default)]
pub struct Prefetched {
    /// Each chunk read and where its bytes start in `buf`, sorted by reference.
    at: Vec<(DiskRef, usize)>,
    buf: Vec<u8>,
}

impl Prefetched {
    /// The bytes of the chunk at `r`, if they were read.
    pub fn get(&self, r: DiskRef) -> Option<&[u8]> {
        let i = self.at.binary_search_by(|(x, _)| x.cmp(&r)).ok()?;
        let at = self.at[i].1;
        self.buf.get(at..at + r.len as usize)
    }

    /// Chunks read.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

/// Why a chunk could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ChunkFileError {
    #[error("chunk segment {path} is missing (deleted by retention, or by hand)")]
    Missing { path: PathBuf },
    #[error("reading {len} bytes at offset {off} of {path}: {source}")]
    Read {
        path: PathBuf,
        off: u32,
        len: u32,
        source: io::Error,
    },
    #[error("the chunk at offset {off} of {path} does not decode to its sample count (the file is damaged)")]
    Corrupt { path: PathBuf, off: u32 },
    #[error("chunk in the index but no chunk directory (the index was loaded without one)")]
    NoFiles,
}

struct Segment {
    file: Arc<File>,
    /// Newest sample time of a chunk in it (`i64::MIN`: none known).
    max_ts: i64,
    /// Referenced by this process (written by it, or by a loaded checkpoint).
    used: bool,
    /// Bytes of it the index still references: added when written or noted by a loaded
    /// checkpoint, taken back by [`ChunkFiles::release`].
    live: i64,
    /// The checkpoint epoch ([`ChunkFiles::checkpoint_begins`]) in which `live` reached zero.
    dead_at: Option<u64>,
}

/// Checkpoints begun and made durable, for deleting segments nothing references any more
/// ([`ChunkFiles::checkpoint_durable`]).
#[derive(Default)]
struct Epochs {
    /// Checkpoints begun.
    begun: u64,
    /// The begin epochs of the checkpoints made durable, newest last (the last `kept`).
    durable: Vec<u64>,
}

/// Streams of segments written side by side ([`ChunkFiles::append_to`]): chunks that leave
/// the index at different ages go to different segments, so that a segment empties when its
/// chunks go rather than when the longest-lived chunk beside them does.
pub const STREAMS: usize = 2;

#[derive(Default)]
struct Active {
    /// Per stream: the open segment, its length and its first batch's newest sample time.
    open: [Option<(u32, u64, i64)>; STREAMS],
    /// Segments written since the last [`ChunkFiles::sync`].
    dirty: BTreeSet<u32>,
}

/// The chunk directory of one hot index.
pub struct ChunkFiles {
    dir: PathBuf,
    segments: RwLock<BTreeMap<u32, Segment>>,
    active: Mutex<Active>,
    next: AtomicU64,
    /// A segment is closed once it would grow past this ([`SEGMENT_BYTES`]).
    segment_bytes: u64,
    /// Bytes of all segment files.
    pub file_bytes: AtomicU64,
    /// Positioned reads that failed (see [`ChunkFileError`]).
    pub read_errors: AtomicU64,
    epochs: Mutex<Epochs>,
    /// Checkpoints kept on disk: a dead segment goes once this many began after it died.
    kept: AtomicU64,
    /// Segments deleted because nothing referenced them any more (their chunks compacted).
    pub dead_removed: AtomicU64,
}

fn seg_name(seg: u32) -> String {
    format!("{seg:08}.chunks")
}

impl ChunkFiles {
    /// Opens (creating) `dir`; existing segments are registered, to be kept while a loaded
    /// checkpoint references them ([`ChunkFiles::note`], then
    /// [`ChunkFiles::remove_unreferenced`]).
    pub fn open(dir: &Path) -> io::Result<ChunkFiles> {
        fs::create_dir_all(dir)?;
        let mut segments = BTreeMap::new();
        let mut bytes = 0;
        for e in fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name();
            let Some(seg) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".chunks"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let file = File::open(e.path())?;
            bytes += file.metadata()?.len();
            segments.insert(
                seg,
                Segment {
                    file: Arc::new(file),
                    max_ts: i64::MIN,
                    used: false,
                    live: 0,
                    dead_at: None,
                },
            );
        }
        let next = segments.keys().next_back().map_or(1, |&s| u64::from(s) + 1);
        Ok(ChunkFiles {
            dir: dir.to_path_buf(),
            segments: RwLock::new(segments),
            active: Mutex::new(Active::default()),
            next: AtomicU64::new(next),
            segment_bytes: SEGMENT_BYTES,
            file_bytes: AtomicU64::new(bytes),
            read_errors: AtomicU64::new(0),
            epochs: Mutex::new(Epochs::default()),
            kept: AtomicU64::new(2),
            dead_removed: AtomicU64::new(0),
        })
    }

    /// Segments of at most `n` bytes (tests: a segment per batch).
    pub fn with_segment_bytes(mut self, n: u64) -> Self {
        self.segment_bytes = n;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, seg: u32) -> PathBuf {
        self.dir.join(seg_name(seg))
    }

    /// Appends `batch` (chunks back to back) whose newest sample is at `max_ts` to stream 0;
    /// returns the segment and the offset the batch starts at.
    pub fn append(&self, batch: &[u8], max_ts: i64) -> io::Result<(u32, u32)> {
        self.append_to(0, batch, max_ts)
    }

    /// [`ChunkFiles::append`] to stream `stream` (< [`STREAMS`]): each stream has its own open
    /// segment.
    pub fn append_to(&self, stream: usize, batch: &[u8], max_ts: i64) -> io::Result<(u32, u32)> {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let need = batch.len() as u64;
        let roll = match active.open[stream] {
            None => true,
            Some((_, len, first)) => {
                len > 0
                    && (len + need > self.segment_bytes
                        || max_ts.saturating_sub(first) > SEGMENT_SPAN_MS)
            }
        };
        if roll {
            let seg = u32::try_from(self.next.fetch_add(1, Ordering::Relaxed))
                .map_err(|_| io::Error::other("chunk segment numbers exhausted"))?;
            let path = self.path(seg);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            self.segments
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    seg,
                    Segment {
                        file: Arc::new(file),
                        max_ts: i64::MIN,
                        used: true,
                        live: 0,
                        dead_at: None,
                    },
                );
            active.open[stream] = Some((seg, 0, max_ts));
        }
        let (seg, len, first) = active.open[stream].expect("opened above");
        if len + need > u64::from(u32::MAX) {
            return Err(io::Error::other("chunk batch larger than a segment"));
        }
        let file = {
            let mut segs = self.segments.write().unwrap_or_else(|e| e.into_inner());
            let s = segs
                .get_mut(&seg)
                .expect("the active segment is registered");
            s.max_ts = s.max_ts.max(max_ts);
            s.live += need as i64;
            s.dead_at = None;
            Arc::clone(&s.file)
        };
        file.write_all_at(batch, len)?;
        active.open[stream] = Some((seg, len + need, first));
        active.dirty.insert(seg);
        self.file_bytes.fetch_add(need, Ordering::Relaxed);
        Ok((seg, len as u32))
    }

    /// Segment `seg`'s file, if it is there.
    fn file(&self, seg: u32) -> Option<Arc<File>> {
        self.segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&seg)
            .map(|s| Arc::clone(&s.file))
    }

    /// Reads a chunk's bytes into `out` (replacing its contents).
    pub fn read(&self, r: DiskRef, out: &mut Vec<u8>) -> Result<(), ChunkFileError> {
        let res = match self.file(r.seg) {
            None => Err(ChunkFileError::Missing {
                path: self.path(r.seg),
            }),
            Some(f) => {
                out.clear();
                // Room for the decoder's padding too, which the caller appends.
                out.reserve(r.len as usize + 8);
                out.resize(r.len as usize, 0);
                f.read_exact_at(out, u64::from(r.off))
                    .map_err(|source| ChunkFileError::Read {
                        path: self.path(r.seg),
                        off: r.off,
                        len: r.len,
                        source,
                    })
            }
        };
        if res.is_err() {
            self.read_errors.fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    /// Reads the chunks at `refs` (sorted and deduplicated here) with one positioned read per
    /// run of chunks at most [`PREFETCH_GAP`] bytes apart in a segment, rather than one per
    /// chunk: a query over 2,500 series and an hour reads 7,500 chunks, and a read is a system
    /// call of about 1.5 us (12 % of that query's CPU). A run that cannot be read is left out:
    /// [`Prefetched::get`] misses, and the caller's [`ChunkFiles::read`] reports why.
    /// `pre` is cleared first and keeps its buffer (reused, it costs no page faults).
    pub fn read_many(&self, refs: &mut Vec<DiskRef>, pre: &mut Prefetched) {
        refs.sort_unstable();
        refs.dedup();
        pre.at.clear();
        pre.buf.clear();
        let mut i = 0;
        while i < refs.len() {
            let first = refs[i];
            let mut end = u64::from(first.off) + u64::from(first.len);
            let mut j = i + 1;
            while j < refs.len()
                && refs[j].seg == first.seg
                && u64::from(refs[j].off) <= end + PREFETCH_GAP
                && u64::from(refs[j].off) + u64::from(refs[j].len) - u64::from(first.off)
                    <= PREFETCH_RUN
            {
                end = end.max(u64::from(refs[j].off) + u64::from(refs[j].len));
                j += 1;
            }
            if let Some(f) = self.file(first.seg) {
                let base = pre.buf.len();
                pre.buf
                    .resize(base + (end - u64::from(first.off)) as usize, 0);
                if f.read_exact_at(&mut pre.buf[base..], u64::from(first.off))
                    .is_ok()
                {
                    pre.at.extend(
                        refs[i..j]
                            .iter()
                            .map(|r| (*r, base + (r.off - first.off) as usize)),
                    );
                } else {
                    pre.buf.truncate(base);
                }
            }
            i = j;
        }
    }

    /// Makes every chunk appended so far durable (before a checkpoint that references them).
    pub fn sync(&self) -> io::Result<()> {
        let dirty =
            std::mem::take(&mut self.active.lock().unwrap_or_else(|e| e.into_inner()).dirty);
        if dirty.is_empty() {
            return Ok(());
        }
        let files: Vec<Arc<File>> = {
            let segs = self.segments.read().unwrap_or_else(|e| e.into_inner());
            dirty
                .iter()
                .filter_map(|s| segs.get(s).map(|s| Arc::clone(&s.file)))
                .collect()
        };
        let res = files
            .iter()
            .try_for_each(|f| f.sync_data())
            .and_then(|()| File::open(&self.dir)?.sync_all());
        if res.is_err() {
            // Not durable yet: the next sync (the next checkpoint) tries them again.
            self.active
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .dirty
                .extend(dirty);
        }
        res
    }

    /// Records that a loaded checkpoint references `r` (a block up to sample time `max_ts`);
    /// false when its segment is missing.
    pub fn note(&self, r: DiskRef, max_ts: i64) -> bool {
        let mut segs = self.segments.write().unwrap_or_else(|e| e.into_inner());
        match segs.get_mut(&r.seg) {
            Some(s) => {
                s.used = true;
                s.max_ts = s.max_ts.max(max_ts);
                s.live += i64::from(r.len);
                true
            }
            None => false,
        }
    }

    /// The index no longer references `r` (its block was merged into another, or rewritten):
    /// once nothing in a closed segment is referenced, the segment is deleted after the
    /// checkpoints that may still reference it are gone ([`ChunkFiles::checkpoint_durable`]).
    /// Called once per reference dropped; a reference never released only keeps its segment
    /// until retention deletes it ([`ChunkFiles::remove_before`]).
    pub fn release(&self, r: DiskRef) {
        let epoch = self.epochs.lock().unwrap_or_else(|e| e.into_inner()).begun;
        let mut segs = self.segments.write().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = segs.get_mut(&r.seg) {
            s.live -= i64::from(r.len);
            if s.live <= 0 && s.dead_at.is_none() {
                s.dead_at = Some(epoch);
            }
        }
    }

    /// How many checkpoints the caller keeps on disk (at least 1; 2 until set): a segment
    /// whose references were all released is deleted once that many checkpoints written
    /// after the release are durable, so that a fallback to an older checkpoint finds its
    /// chunks.
    pub fn set_checkpoints_kept(&self, n: usize) {
        self.kept.store(n.max(1) as u64, Ordering::Relaxed);
    }

    /// A checkpoint of the index begins (before its first shard is copied); returns its epoch
    /// for [`ChunkFiles::checkpoint_durable`].
    pub fn checkpoint_begins(&self) -> u64 {
        let mut e = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
        e.begun += 1;
        e.begun
    }

    /// The checkpoint begun at `epoch` is durable: deletes the closed segments nothing has
    /// referenced since before the oldest kept checkpoint began; returns how many.
    pub fn checkpoint_durable(&self, epoch: u64) -> usize {
        let oldest_kept = {
            let mut e = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
            e.durable.push(epoch);
            e.durable.sort_unstable();
            let kept = self.kept.load(Ordering::Relaxed) as usize;
            let n = e.durable.len();
            if n > kept {
                e.durable.drain(..n - kept);
            }
            if e.durable.len() < kept {
                return 0;
            }
            e.durable[0]
        };
        // Dead at epoch d: released after checkpoint d began, so every checkpoint begun after
        // d (epoch > d) was copied without it.
        let n = self.remove_where(|_, s| s.live <= 0 && s.dead_at.is_some_and(|d| d < oldest_kept));
        self.dead_removed.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Bytes referenced in each segment, by this accounting (for tests of the index).
    pub fn live_bytes(&self) -> BTreeMap<u32, i64> {
        self.segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(&n, s)| (n, s.live))
            .collect()
    }

    /// Deletes the segments nothing loaded references (after a checkpoint was loaded, or
    /// without one: all of them); returns how many.
    pub fn remove_unreferenced(&self) -> usize {
        self.remove_where(|_, s| !s.used)
    }

    /// Deletes closed segments whose chunks all end before `cutoff`; returns how many.
    pub fn remove_before(&self, cutoff: i64) -> usize {
        self.remove_where(|_, s| s.used && s.max_ts < cutoff)
    }

    fn remove_where(&self, pick: impl Fn(u32, &Segment) -> bool) -> usize {
        let active = self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open
            .map(|o| o.map(|(seg, _, _)| seg));
        let gone: Vec<u32> = {
            let mut segs = self.segments.write().unwrap_or_else(|e| e.into_inner());
            let gone: Vec<u32> = segs
                .iter()
                .filter(|&(&n, s)| !active.contains(&Some(n)) && pick(n, s))
                .map(|(&n, _)| n)
                .collect();
            for n in &gone {
                segs.remove(n);
            }
            gone
        };
        for &n in &gone {
            let path = self.path(n);
            let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            match fs::remove_file(&path) {
                Ok(()) => {
                    self.file_bytes.fetch_sub(len, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("deleting chunk segment {}: {e}", path.display()),
            }
        }
        gone.len()
    }

    /// Segment files on disk.
    pub fn segment_count(&self) -> usize {
        self.segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_read_ahead_equal_chunks_read_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let f = ChunkFiles::open(dir.path()).unwrap();
        // Segment 1: 64 chunks of 100 bytes back to back, then one 10 KB past a gap (its own
        // run); segment 2 (stream 1): 4 chunks.
        let mut refs = Vec::new();
        for i in 0..64u8 {
            let (seg, off) = f.append(&[i; 100], 1).unwrap();
            refs.push(DiskRef { seg, off, len: 100 });
        }
        f.append(&vec![0xEE; 10_000], 1).unwrap();
        let (seg, off) = f.append(b"far away", 1).unwrap();
        refs.push(DiskRef { seg, off, len: 8 });
        for i in 0..4u8 {
            let (seg, off) = f.append_to(1, &[100 + i; 7], 1).unwrap();
            refs.push(DiskRef { seg, off, len: 7 });
        }
        let missing = DiskRef {
            seg: 99,
            off: 0,
            len: 3,
        };
        // Every other chunk, in reverse, with duplicates and a segment that does not exist.
        let mut ask: Vec<DiskRef> = refs.iter().rev().step_by(2).copied().collect();
        ask.extend(refs.iter().rev().step_by(4).copied());
        ask.push(missing);
        let mut pre = Prefetched::default();
        pre.buf.extend_from_slice(b"left from a previous group");
        f.read_many(&mut ask, &mut pre);
        let mut one = Vec::new();
        for (i, r) in refs.iter().enumerate() {
            let asked = (refs.len() - 1 - i) % 2 == 0;
            assert_eq!(pre.get(*r).is_some(), asked, "chunk {i}");
            if asked {
                f.read(*r, &mut one).unwrap();
                assert_eq!(pre.get(*r).unwrap(), &one[..], "chunk {i}");
            }
        }
        assert!(pre.get(missing).is_none());
        assert_eq!(pre.len(), refs.len().div_ceil(2));
        // Three runs: segment 1's back-to-back chunks, the far one, segment 2's: the gap of
        // 10 KB is not read.
        assert!(
            pre.buf.len() < 64 * 100 + 8 + 4 * 7,
            "{} bytes read",
            pre.buf.len()
        );
    }

    #[test]
    fn appends_read_back_and_segments_go_by_age_and_reference() {
        let dir = tempfile::tempdir().unwrap();
        let f = ChunkFiles::open(dir.path()).unwrap();
        let (s1, o1) = f.append(b"hello", 100).unwrap();
        let (s2, o2) = f.append(b"world!", 200).unwrap();
        assert_eq!((s1, o1, s2, o2), (1, 0, 1, 5));
        let mut buf = Vec::new();
        f.read(
            DiskRef {
                seg: 1,
                off: 5,
                len: 6,
            },
            &mut buf,
        )
        .unwrap();
        assert_eq!(buf, b"world!");
        // Past the end: an error, counted, no panic.
        let bad = DiskRef {
            seg: 1,
            off: 10,
            len: 6,
        };
        assert!(matches!(
            f.read(bad, &mut buf),
            Err(ChunkFileError::Read { .. })
        ));
        assert_eq!(f.read_errors.load(Ordering::Relaxed), 1);
        f.sync().unwrap();
        // The active segment is never deleted.
        assert_eq!(f.remove_before(i64::MAX), 0);
        drop(f);

        // A restart opens a new segment; the old one stays while a checkpoint references it.
        let f = ChunkFiles::open(dir.path()).unwrap();
        assert_eq!(f.append(b"x", 300).unwrap(), (2, 0));
        let r1 = DiskRef {
            seg: 1,
            off: 0,
            len: 11,
        };
        assert!(f.note(r1, 200));
        assert!(!f.note(DiskRef { seg: 7, ..r1 }, 200));
        assert_eq!(f.remove_unreferenced(), 0);
        assert_eq!(f.remove_before(200), 0, "a chunk ends at 200");
        assert_eq!(f.remove_before(201), 1);
        assert!(matches!(
            f.read(
                DiskRef {
                    seg: 1,
                    off: 0,
                    len: 5
                },
                &mut buf
            ),
            Err(ChunkFileError::Missing { .. })
        ));

        // Released references: a closed segment nothing references goes once the kept
        // checkpoints (2 here) all began after its last reference was released.
        let r2 = DiskRef {
            seg: 2,
            off: 0,
            len: 1,
        };
        assert_eq!(f.append(b"yz", 400).unwrap(), (2, 1));
        let f = f.with_segment_bytes(3);
        assert_eq!(f.append(b"abc", 500).unwrap(), (3, 0), "segment 2 closed");
        f.release(r2);
        assert_eq!(
            f.live_bytes()[&2],
            2,
            "two of its three bytes still referenced"
        );
        f.release(DiskRef {
            off: 1,
            len: 2,
            ..r2
        });
        let e1 = f.checkpoint_begins();
        // Segment 3 (active) is released after checkpoint 1 began: it may be in it.
        f.release(DiskRef {
            seg: 3,
            off: 0,
            len: 3,
        });
        assert_eq!(
            f.checkpoint_durable(e1),
            0,
            "one checkpoint: an older one may be used"
        );
        let e2 = f.checkpoint_begins();
        assert_eq!(f.append(b"d", 600).unwrap(), (4, 0), "segment 3 closed");
        assert_eq!(
            f.checkpoint_durable(e2),
            1,
            "segment 2, not 3 (dead in checkpoint 1)"
        );
        assert!(f.read(r2, &mut buf).is_err());
        let e3 = f.checkpoint_begins();
        assert_eq!(
            f.checkpoint_durable(e3),
            1,
            "checkpoints 2 and 3 began after segment 3 died"
        );
        assert_eq!(f.dead_removed.load(Ordering::Relaxed), 2);
        assert_eq!(f.live_bytes().keys().copied().collect::<Vec<_>>(), vec![4]);
        drop(f);

        // Without a checkpoint referencing them, a start deletes what is there.
        let f = ChunkFiles::open(dir.path()).unwrap();
        assert_eq!(f.segment_count(), 1);
        assert_eq!(f.remove_unreferenced(), 1);
        assert_eq!(f.segment_count(), 0);
        assert_eq!(f.file_bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_segment_closes_after_an_hour_of_sample_time_per_stream() {
        let dir = tempfile::tempdir().unwrap();
        let f = ChunkFiles::open(dir.path()).unwrap();
        let h = SEGMENT_SPAN_MS;
        assert_eq!(f.append_to(0, b"a", 10 * h).unwrap(), (1, 0));
        assert_eq!(f.append_to(1, b"b", 10 * h).unwrap(), (2, 0));
        // Within the hour (and a late batch older than the first): the same segment.
        assert_eq!(f.append_to(0, b"cc", 11 * h).unwrap(), (1, 1));
        assert_eq!(f.append_to(0, b"d", 9 * h).unwrap(), (1, 3));
        // Past it: a new segment in that stream only.
        assert_eq!(f.append_to(0, b"e", 11 * h + 1).unwrap(), (3, 0));
        assert_eq!(f.append_to(1, b"f", 11 * h).unwrap(), (2, 1));
        assert_eq!(f.append_to(0, b"g", 12 * h).unwrap(), (3, 1));
        assert_eq!(f.segment_count(), 3);
    }
}

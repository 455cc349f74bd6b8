//! Checkpoints of `tidemark up`: a cut of the running job ([`super::cut`]), the hot index
//! written at it ([`crate::store::hot::checkpoint`]), old checkpoints pruned and the log
//! truncated behind the oldest one kept; and the restart that loads the newest valid one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{JobProgress, StartAt};
use crate::config::CheckpointConfig;
use crate::ops::TextWriter;
use crate::store::hot::checkpoint::{self as file, CheckpointInfo, CheckpointMeta, Faults};
use crate::store::hot::HotIndex;
use crate::transport::log::Log;

/// Counters for `/metrics`.
#[derive(Default)]
pub struct CheckpointStats {
    pub written: AtomicU64,
    pub failed: AtomicU64,
    pub last_offset: AtomicU64,
    pub last_bytes: AtomicU64,
    pub last_series: AtomicU64,
    pub last_write_us: AtomicU64,
    pub last_cut_us: AtomicU64,
    pub last_unix_ms: AtomicU64,
    pub log_segments_deleted: AtomicU64,
    /// At start: the checkpoint loaded (series, microseconds) and damaged ones skipped.
    pub loaded_series: AtomicU64,
    pub load_us: AtomicU64,
    pub skipped_damaged: AtomicU64,
}

/// The directory checkpoints live in.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("checkpoints")
}

/// What a start found on disk.
pub struct Restored {
    pub hot: HotIndex,
    /// Where the job starts: after the checkpoint, or the log's start without one.
    pub at: Option<StartAt>,
    pub info: Option<CheckpointInfo>,
}

/// The directory sealed chunks are spilled to ([`crate::store::hot::chunkfile`]).
pub fn chunk_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("chunks")
}

/// Loads the newest valid checkpoint (reporting damaged ones and partial writes), or an
/// empty index, whose sealed chunks go to [`chunk_dir`]; chunk segments the loaded checkpoint
/// does not reference are deleted (what was spilled after it is spilled again by the log
/// replay). A checkpoint whose replay point the log no longer holds is still used, with
/// the records between lost; that is reported, it cannot happen unless log segments were
/// deleted by hand. Errors: the chunk directory cannot be opened.
pub fn restore(
    data_dir: &Path,
    retention_ms: i64,
    minute_rollup_ms: i64,
    log: &Log,
    stats: &CheckpointStats,
) -> std::io::Result<Restored> {
    let chunks = chunk_dir(data_dir);
    let files = || crate::store::hot::chunkfile::ChunkFiles::open(&chunks);
    // Opened once up front, so that an error is reported rather than met inside the loader.
    drop(files()?);
    let new_index = || {
        crate::store::hot::with_chunk_files_or_memory(
            HotIndex::new(retention_ms).with_minute_rollup_retention(minute_rollup_ms),
            &chunks,
        )
    };
    let restored = restore_into(data_dir, log, stats, new_index);
    {
        let n = restored.hot.remove_unreferenced_chunks();
        if n > 0 {
            tracing::warn!(
                "deleted {n} chunk segments in {} that the loaded checkpoint does not reference (written after it; the log replay writes their chunks again)",
                chunks.display()
            );
        }
    }
    let missing = restored.hot.stats.chunks_missing.load(Ordering::Relaxed);
    if missing > 0 {
        tracing::warn!(
            "{missing} chunks the checkpoint references were in segments already deleted by retention; they were older than the index keeps and are left out"
        );
    }
    Ok(restored)
}

fn restore_into(
    data_dir: &Path,
    log: &Log,
    stats: &CheckpointStats,
    new_index: impl Fn() -> HotIndex,
) -> Restored {
    let d = dir(data_dir);
    for name in file::remove_partial(&d) {
        tracing::warn!(
            "deleted {name}: a checkpoint write that did not finish (the process stopped during it)"
        );
    }
    let loaded = file::load_newest(&d, &new_index, |e| {
        stats.skipped_damaged.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
                "checkpoint not usable, trying the previous one (the log still holds what it needs): {e}"
            );
    });
    let Some(l) = loaded else {
        if log.start_offset() > 0 {
            tracing::error!(
                "no usable checkpoint in {} and the log starts at offset {}: what the records before it held is lost (restore a checkpoint file from a backup to get it back)",
                d.display(),
                log.start_offset()
            );
        }
        return Restored {
            hot: new_index(),
            at: None,
            info: None,
        };
    };
    let m = l.info.meta;
    stats.loaded_series.store(l.info.series, Ordering::Relaxed);
    stats
        .load_us
        .store(l.info.took.as_micros() as u64, Ordering::Relaxed);
    let start = log.start_offset();
    if start > m.replay_offset {
        tracing::error!(
            "the log starts at offset {start}, after checkpoint {}'s replay point {}: the records between are lost",
            l.info.path.display(),
            m.replay_offset
        );
    }
    tracing::info!(
        path = %l.info.path.display(),
        series = l.info.series,
        bytes = l.info.bytes,
        offset = m.offset,
        seconds = l.info.took.as_secs_f64(),
        "loaded checkpoint {} ({} series, {} bytes, cut at log offset {}) in {:.2}s; replaying the log from offset {}",
        l.info.path.display(),
        l.info.series,
        l.info.bytes,
        m.offset,
        l.info.took.as_secs_f64(),
        m.replay_offset.max(start).min(m.offset)
    );
    Restored {
        hot: l.hot,
        at: Some(StartAt::checkpoint(&m, start)),
        info: Some(l.info),
    }
}

/// Takes checkpoints of a running job.
pub struct Checkpointer {
    pub dir: PathBuf,
    pub cfg: CheckpointConfig,
    pub hot: Arc<HotIndex>,
    pub progress: Arc<JobProgress>,
    pub log: Log,
    pub faults: Faults,
    pub stats: Arc<CheckpointStats>,
}

impl Checkpointer {
    /// One checkpoint: cut, write, prune, truncate the log. Blocking.
    pub fn run_once(&self) -> Result<CheckpointInfo, String> {
        let res = self.run();
        if let Ok(i) = &res {
            tracing::info!(
                path = %i.path.display(),
                series = i.series,
                bytes = i.bytes,
                offset = i.meta.offset,
                seconds = i.took.as_secs_f64(),
                "checkpoint {} written: {} series, {} bytes, cut at log offset {} (cut reached in {:.3}s, written in {:.2}s; the job's sources were held for both)",
                i.path.display(),
                i.series,
                i.bytes,
                i.meta.offset,
                self.stats.last_cut_us.load(Ordering::Relaxed) as f64 / 1e6,
                i.took.as_secs_f64()
            );
        }
        if let Err(e) = &res {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("checkpoint failed (the previous one and the log stay in use; retried at the next interval): {e}");
        }
        res
    }

    fn run(&self) -> Result<CheckpointInfo, String> {
        let started = Instant::now();
        let timeout = Duration::from_millis(self.cfg.timeout.0.max(1) as u64);
        let (cut, held) = self
            .progress
            .cut
            .cut(&self.progress.watermarks, timeout)
            .map_err(|e| format!("cut: {e}"))?;
        let cut_took = started.elapsed();
        let meta = CheckpointMeta {
            offset: cut.offset,
            watermark: cut.watermark,
            replay_offset: cut.replay_offset,
            replay_watermark: cut.replay_watermark,
            newest: self.hot.newest().unwrap_or(i64::MIN),
            created_ms: crate::time::now_ms(),
        };
        let written = file::write(&self.dir, &meta, &self.hot, self.cfg.keep, self.faults);
        drop(held);
        let info = written.map_err(|e| e.to_string())?;
        let s = &self.stats;
        s.written.fetch_add(1, Ordering::Relaxed);
        s.last_offset.store(meta.offset, Ordering::Relaxed);
        s.last_bytes.store(info.bytes, Ordering::Relaxed);
        s.last_series.store(info.series, Ordering::Relaxed);
        s.last_write_us
            .store(info.took.as_micros() as u64, Ordering::Relaxed);
        s.last_cut_us
            .store(cut_took.as_micros() as u64, Ordering::Relaxed);
        s.last_unix_ms
            .store(meta.created_ms.max(0) as u64, Ordering::Relaxed);
        let keep_from = file::prune(&self.dir, self.cfg.keep).map_err(|e| e.to_string())?;
        if let Some(off) = keep_from {
            let n = self
                .log
                .delete_before(off)
                .map_err(|e| format!("truncating the log before offset {off}: {e}"))?;
            s.log_segments_deleted
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(info)
    }

    /// `/metrics` families.
    pub fn render(&self, w: &mut TextWriter) {
        render(&self.stats, w);
    }
}

/// `/metrics` families of the checkpoint counters.
pub fn render(s: &CheckpointStats, w: &mut TextWriter) {
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    w.family(
        "tidemark_checkpoints_total",
        "counter",
        "Checkpoints of the hot index, by result.",
        &[
            ("result=\"written\"", g(&s.written)),
            ("result=\"failed\"", g(&s.failed)),
        ],
    );
    w.family(
        "tidemark_checkpoint_last_bytes",
        "gauge",
        "Size of the newest checkpoint written by this process.",
        &[("", g(&s.last_bytes))],
    );
    w.family(
        "tidemark_checkpoint_last_series",
        "gauge",
        "Series in the newest checkpoint written by this process.",
        &[("", g(&s.last_series))],
    );
    w.family(
        "tidemark_checkpoint_last_log_offset",
        "gauge",
        "Log offset of the newest checkpoint's cut.",
        &[("", g(&s.last_offset))],
    );
    w.family(
        "tidemark_checkpoint_last_duration_seconds",
        "gauge",
        "Time of the newest checkpoint, by phase (cut: until every source stopped at the cut and the sinks drained; write: the file; the job's sources are held for both).",
        &[
            ("phase=\"cut\"", g(&s.last_cut_us) / 1e6),
            ("phase=\"write\"", g(&s.last_write_us) / 1e6),
        ],
    );
    w.family(
        "tidemark_checkpoint_last_timestamp_seconds",
        "gauge",
        "Wall-clock time of the newest checkpoint's cut.",
        &[("", g(&s.last_unix_ms) / 1e3)],
    );
    w.family(
        "tidemark_checkpoint_log_segments_deleted_total",
        "counter",
        "Log segments deleted behind the oldest checkpoint kept.",
        &[("", g(&s.log_segments_deleted))],
    );
    w.family(
        "tidemark_checkpoint_restore_series",
        "gauge",
        "Series loaded from a checkpoint at start (0: none).",
        &[("", g(&s.loaded_series))],
    );
    w.family(
        "tidemark_checkpoint_restore_duration_seconds",
        "gauge",
        "Time to verify and load the checkpoint at start.",
        &[("", g(&s.load_us) / 1e6)],
    );
    w.family(
        "tidemark_checkpoint_damaged_skipped_total",
        "counter",
        "Checkpoints found damaged (checksum, truncation) at start and skipped for an older one.",
        &[("", g(&s.skipped_damaged))],
    );
}

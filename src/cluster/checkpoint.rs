//! Checkpoints of a worker process: its hot index written to `<data_dir>/checkpoints` every
//! `[checkpoint] interval`, so that each job's WALs hold minutes, not the hot retention.
//!
//! A worker process's hot index holds the series its worker threads own, whose samples any
//! source of the cluster may have read (samples are exchanged by series). So a WAL record can
//! go only once *every* process's index holds it. The protocol needs no pause:
//!
//! 1. **Frontier.** Each local worker's job sinks report their frontier (and each cold writer
//!    the time of the oldest correction it buffers). Before copying the index the
//!    checkpointer reads, per job, `F` = the minimum over them: every sample any source sent
//!    at a time before `F` is in the copy. The copy may hold some later ones too.
//! 2. **Agreement.** Each process serves, per job, the `F` of the oldest checkpoint it keeps
//!    (`/internal/v1/checkpoint`). After writing one, a process asks its peers; the job's
//!    *safe time* `G` is the minimum over every process. A process without a checkpoint of
//!    the job blocks it: no `G`.
//! 3. **Truncation.** Each source keeps marks `(WAL offset, time its samples were sent at)`.
//!    Given `G`, it records the newest mark sent before `G` as its replay point
//!    (`<wal>/replay-from`, written atomically) and then deletes the WAL segments before it.
//!    Kafka offsets are committed only for records the WAL holds (see [`super::source`]), so
//!    what the WAL dropped is in every process's checkpoints.
//! 4. **Restart.** A process loads its newest valid checkpoint (its `F` is at least `G`,
//!    since `G` came from the oldest one kept); each source replays its WAL from its replay
//!    point, starting its watermark at the mark's time, and the job's operator state is
//!    seeded from the index at `F` ([`crate::job::seed`]): open windows, open hours, the
//!    rules' ranges, cold writers' open partitions. Records sent between the replay point and
//!    `F` are applied twice; every sink overwrites (same series and timestamp, same window).
//!
//! The checkpoint file is `tidemark up`'s ([`crate::store::hot::checkpoint`]); the worker's
//! part of the state (cluster shape, per-job frontiers) is a JSON file beside it, written
//! before it. A checkpoint taken with another cluster shape (processes, worker threads) holds
//! other series than this process now owns: it is not loaded, and the start says so.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::CheckpointConfig;
use crate::job::checkpoint::CheckpointStats;
use crate::job::cut::LateCorrections;
use crate::store::hot::checkpoint::{self as file, CheckpointInfo, CheckpointMeta, Faults};
use crate::store::hot::HotIndex;

/// One job's progress in this process, shared by its sources, sinks and cold writers.
pub struct JobFrontier {
    /// The job's epoch in this run (a replay starts a new one, whose times start over).
    pub epoch: u64,
    /// Per local worker: the frontier of the job's sinks (0 until it reports).
    pub done: Vec<AtomicU64>,
    /// Cold writers' oldest buffered correction.
    late: LateCorrections,
    /// The cluster's safe time for this epoch: every process's oldest kept checkpoint holds
    /// everything sent before it (0: not known yet).
    pub safe: AtomicU64,
    /// WAL segments the job's sources in this process deleted behind their replay points.
    pub wal_segments_deleted: AtomicU64,
}

impl JobFrontier {
    pub fn new(epoch: u64, local_workers: usize) -> Self {
        JobFrontier {
            epoch,
            done: (0..local_workers.max(1))
                .map(|_| AtomicU64::new(0))
                .collect(),
            late: LateCorrections::default(),
            safe: AtomicU64::new(0),
            wal_segments_deleted: AtomicU64::new(0),
        }
    }

    /// Registers a cold writer's oldest buffered correction time (see
    /// [`crate::store::cold::writer::TierWriter::late_since`]).
    pub fn late_since(&self) -> Arc<AtomicU64> {
        self.late.register()
    }

    /// Everything sent before this time is applied in this process (0: not every worker has
    /// reported yet).
    pub fn frontier(&self) -> u64 {
        let done = self
            .done
            .iter()
            .map(|d| d.load(Ordering::Acquire))
            .min()
            .unwrap_or(0);
        done.min(self.late.oldest())
    }
}

/// A job's entry in a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMark {
    /// The process run that wrote it (its start time, ms): times of another run are not
    /// comparable (a restart's sources re-send what they replay at their replay points' times).
    #[serde(default)]
    pub run: u64,
    pub epoch: u64,
    /// Everything sent before this time is in the checkpoint.
    pub frontier: u64,
}

/// The worker's part of a checkpoint (`ckpt-<n>.json` beside `ckpt-<n>.tdc`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerMeta {
    pub processes: usize,
    pub process: usize,
    pub workers: usize,
    pub jobs: BTreeMap<String, JobMark>,
}

/// What [`WorkerCheckpoints::restore`] found.
pub struct Restored {
    pub hot: HotIndex,
    pub meta: WorkerMeta,
    pub info: CheckpointInfo,
}

fn sidecar(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("ckpt-{n:020}.json"))
}

fn read_sidecar(path: &Path) -> Result<WorkerMeta, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(d) = path.parent() {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(())
}

/// A WAL's replay point: the first record a restart reads, and the time its samples were sent
/// at (the source's first watermark); with the Kafka positions `(topic index, partition, next
/// offset)` the WAL had reached when it was recorded (a partition whose records all lie before
/// the point resumes there, not at its committed offset, which the cold tiers may hold back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayPoint {
    pub offset: u64,
    pub watermark: u64,
    pub positions: Vec<(usize, i32, i64)>,
}

const REPLAY_FILE: &str = "replay-from";

impl ReplayPoint {
    /// The replay point recorded in `wal_dir`, if any. A damaged file is reported and read as
    /// none (the whole WAL is replayed).
    pub fn read(wal_dir: &Path) -> Option<ReplayPoint> {
        let path = wal_dir.join(REPLAY_FILE);
        let text = std::fs::read_to_string(&path).ok()?;
        let parsed = Self::parse(&text);
        if let Err(e) = &parsed {
            tracing::info!("{}: {e}; replaying the whole WAL", path.display());
        }
        parsed.ok()
    }

    fn parse(text: &str) -> Result<ReplayPoint, String> {
        let mut lines = text.lines();
        let head: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
        let [offset, watermark] = head[..] else {
            return Err("line 1: expected `<offset> <watermark>`".into());
        };
        let num = |s: &str, line: usize| {
            s.parse::<i64>()
                .map_err(|e| format!("line {line}: {s:?}: {e}"))
        };
        let mut p = ReplayPoint {
            offset: num(offset, 1)? as u64,
            watermark: num(watermark, 1)? as u64,
            positions: Vec::new(),
        };
        for (i, l) in lines.enumerate() {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [t, part, next] = f[..] else {
                return Err(format!(
                    "line {}: expected `<topic index> <partition> <next offset>`",
                    i + 2
                ));
            };
            p.positions.push((
                num(t, i + 2)? as usize,
                num(part, i + 2)? as i32,
                num(next, i + 2)?,
            ));
        }
        Ok(p)
    }

    /// Records this point in `wal_dir` (atomically, durably).
    pub fn write(&self, wal_dir: &Path) -> std::io::Result<()> {
        let mut text = format!("{} {}\n", self.offset, self.watermark);
        for (t, p, next) in &self.positions {
            text.push_str(&format!("{t} {p} {next}\n"));
        }
        write_atomic(&wal_dir.join(REPLAY_FILE), text.as_bytes())
    }
}

/// Marks `(WAL offset, send time)` of a source's records, one per second of send time: the
/// first record sent in each second, so a mark never claims a record sent later than it.
#[derive(Default)]
pub struct Marks {
    marks: std::collections::VecDeque<(u64, u64)>,
}

impl Marks {
    /// Marks kept, at most: about a day at one per second.
    const MAX: usize = 100_000;

    /// Notes that the record at `offset` was sent at `time`.
    pub fn note(&mut self, offset: u64, time: u64) {
        if self
            .marks
            .back()
            .is_some_and(|&(o, t)| offset <= o || time / 1000 == t / 1000)
        {
            return;
        }
        self.marks.push_back((offset, time));
        if self.marks.len() > Self::MAX {
            self.marks.pop_front();
        }
    }

    /// The replay point for safe time `g`: the newest mark sent before `g` (every record
    /// before it was sent before it too). Marks before it are forgotten.
    pub fn replay_point(&mut self, g: u64) -> Option<ReplayPoint> {
        let i = self.marks.partition_point(|&(_, t)| t < g).checked_sub(1)?;
        self.marks.drain(..i);
        let (offset, watermark) = self.marks[0];
        Some(ReplayPoint {
            offset,
            watermark,
            positions: Vec::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.marks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }
}

/// The checkpointer of a worker process.
pub struct WorkerCheckpoints {
    pub dir: PathBuf,
    pub cfg: CheckpointConfig,
    pub hot: Arc<HotIndex>,
    pub shape: (usize, usize, usize),
    /// Other processes' HTTP base URLs.
    pub peers: Vec<String>,
    pub faults: Faults,
    pub stats: Arc<CheckpointStats>,
    /// This process run (its start time, ms).
    pub run: u64,
    jobs: Mutex<BTreeMap<String, Arc<JobFrontier>>>,
}

impl WorkerCheckpoints {
    /// `shape` is `(processes, process, local workers)`; `stats` has what
    /// [`WorkerCheckpoints::restore`] counted.
    pub fn new(
        data_dir: &Path,
        cfg: CheckpointConfig,
        hot: Arc<HotIndex>,
        shape: (usize, usize, usize),
        peers: Vec<String>,
        stats: Arc<CheckpointStats>,
    ) -> Self {
        WorkerCheckpoints {
            dir: crate::job::checkpoint::dir(data_dir),
            cfg,
            hot,
            shape,
            peers,
            faults: Faults::from_env(),
            stats,
            run: crate::time::now_ms().max(0) as u64,
            jobs: Mutex::new(BTreeMap::new()),
        }
    }

    /// The shared progress of a job's epoch: every local worker gets the same; a new epoch
    /// replaces the previous one's.
    pub fn register(&self, job: &str, epoch: u64) -> Arc<JobFrontier> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        match jobs.get(job) {
            Some(f) if f.epoch == epoch => Arc::clone(f),
            old => {
                let f = JobFrontier::new(epoch, self.shape.2);
                if let Some(o) = old {
                    let n = o.wal_segments_deleted.load(Ordering::Relaxed);
                    f.wal_segments_deleted.store(n, Ordering::Relaxed);
                }
                let f = Arc::new(f);
                jobs.insert(job.to_string(), Arc::clone(&f));
                f
            }
        }
    }

    /// Forgets a cancelled job.
    pub fn forget(&self, job: &str) {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(job);
    }

    /// Loads the newest checkpoint in `data_dir` that verifies and was taken with this
    /// cluster `shape` into an index from `fresh`; damaged ones are reported and skipped.
    pub fn restore(
        data_dir: &Path,
        shape: (usize, usize, usize),
        stats: &CheckpointStats,
        fresh: impl Fn() -> HotIndex,
    ) -> Option<Restored> {
        let dir = crate::job::checkpoint::dir(data_dir);
        for name in file::remove_partial(&dir) {
            tracing::warn!(
                "deleted {name}: a checkpoint write that did not finish (the process stopped during it)"
            );
        }
        let (processes, process, workers) = shape;
        for (n, path) in file::list(&dir) {
            let meta = match read_sidecar(&sidecar(&dir, n)) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(
                        "checkpoint {} has no usable worker state, trying the previous one: {e}",
                        path.display()
                    );
                    continue;
                }
            };
            if (meta.processes, meta.process, meta.workers) != (processes, process, workers) {
                tracing::info!(
                    "checkpoint {} was taken as process {} of {} with {} worker threads, not process {process} of {processes} with {workers}: its series are not this process's now, so it is not loaded. The hot index is rebuilt from what the WALs still hold (since the checkpoints); older data stays in the cold tiers. To rebuild the hot index, start the cluster with its previous shape or replay the jobs from Kafka (`tidemark replay --from-time`)",
                    path.display(),
                    meta.process,
                    meta.processes,
                    meta.workers
                );
                return None;
            }
            let hot = fresh();
            match file::load(&path, &hot) {
                Ok(info) => {
                    stats.loaded_series.store(info.series, Ordering::Relaxed);
                    stats
                        .load_us
                        .store(info.took.as_micros() as u64, Ordering::Relaxed);
                    tracing::info!(
                        "loaded checkpoint {} ({} series, {} bytes) in {:.2}s (RSS {} MiB, peak {} MiB); jobs {:?}",
                        path.display(),
                        info.series,
                        info.bytes,
                        info.took.as_secs_f64(),
                        crate::ops::rss_bytes() as u64 >> 20,
                        crate::ops::peak_rss_bytes() as u64 >> 20,
                        meta.jobs
                    );
                    return Some(Restored { hot, meta, info });
                }
                Err(e) => {
                    stats.skipped_damaged.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("checkpoint not usable, trying the previous one (the WALs still hold what it needs): {e}");
                }
            }
        }
        None
    }

    /// One checkpoint: frontiers, the index, pruning. Blocking.
    pub fn run_once(&self) -> Result<CheckpointInfo, String> {
        let res = self.run();
        match &res {
            Ok(i) => tracing::info!(
                "checkpoint {} written: {} series, {} bytes in {:.2}s",
                i.path.display(),
                i.series,
                i.bytes,
                i.took.as_secs_f64()
            ),
            Err(e) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("checkpoint failed (the previous one and the WALs stay in use; retried at the next interval): {e}");
            }
        }
        res
    }

    fn run(&self) -> Result<CheckpointInfo, String> {
        let jobs: BTreeMap<String, JobMark> = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, f)| {
                let m = JobMark {
                    run: self.run,
                    epoch: f.epoch,
                    frontier: f.frontier(),
                };
                (name.clone(), m)
            })
            .collect();
        let (processes, process, workers) = self.shape;
        let wmeta = WorkerMeta {
            processes,
            process,
            workers,
            jobs,
        };
        let created_ms = crate::time::now_ms();
        // Numbered by wall time, and after every checkpoint there is.
        let n =
            (created_ms.max(0) as u64).max(file::list(&self.dir).first().map_or(0, |x| x.0 + 1));
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let side = sidecar(&self.dir, n);
        let json = serde_json::to_vec_pretty(&wmeta).map_err(|e| e.to_string())?;
        write_atomic(&side, &json).map_err(|e| format!("{}: {e}", side.display()))?;
        let min_frontier = wmeta.jobs.values().map(|m| m.frontier).min().unwrap_or(0);
        let meta = CheckpointMeta {
            offset: n,
            watermark: min_frontier,
            replay_offset: n,
            replay_watermark: min_frontier,
            newest: self.hot.newest().unwrap_or(i64::MIN),
            created_ms,
        };
        let info = match file::write(&self.dir, &meta, &self.hot, self.cfg.keep, self.faults) {
            Ok(i) => i,
            Err(e) => {
                let _ = std::fs::remove_file(&side);
                return Err(e.to_string());
            }
        };
        let s = &self.stats;
        s.written.fetch_add(1, Ordering::Relaxed);
        s.last_offset.store(n, Ordering::Relaxed);
        s.last_bytes.store(info.bytes, Ordering::Relaxed);
        s.last_series.store(info.series, Ordering::Relaxed);
        s.last_write_us
            .store(info.took.as_micros() as u64, Ordering::Relaxed);
        s.last_unix_ms
            .store(created_ms.max(0) as u64, Ordering::Relaxed);
        file::prune(&self.dir, self.cfg.keep).map_err(|e| e.to_string())?;
        // Sidecars of checkpoints pruned (or never finished).
        let kept: Vec<u64> = file::list(&self.dir).iter().map(|x| x.0).collect();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let n = name
                    .strip_prefix("ckpt-")
                    .and_then(|r| r.strip_suffix(".json"))
                    .and_then(|r| r.parse::<u64>().ok());
                if n.is_some_and(|n| !kept.contains(&n)) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(info)
    }

    /// Per job, the frontier of the oldest checkpoint kept (what a restart may fall back on):
    /// what this process answers its peers. A job missing from any kept checkpoint, or
    /// written there by an earlier run or epoch, is left out.
    pub fn kept(&self) -> BTreeMap<String, JobMark> {
        let mut out: Option<BTreeMap<String, JobMark>> = None;
        for (n, _) in file::list(&self.dir).iter().take(self.cfg.keep.max(1)) {
            let mut jobs = read_sidecar(&sidecar(&self.dir, *n))
                .map(|m| m.jobs)
                .unwrap_or_default();
            jobs.retain(|_, m| m.run == self.run);
            out = Some(match out {
                None => jobs,
                Some(prev) => prev
                    .into_iter()
                    .filter_map(|(k, a)| {
                        let b = jobs.get(&k)?;
                        (a.epoch == b.epoch).then(|| {
                            let frontier = a.frontier.min(b.frontier);
                            (k, JobMark { frontier, ..a })
                        })
                    })
                    .collect(),
            });
        }
        out.unwrap_or_default()
    }

    /// Sets each running job's safe time from this process's and its peers' kept checkpoints
    /// (`answers`: one map per peer; a peer that did not answer blocks every job).
    pub fn agree(&self, answers: &[Option<BTreeMap<String, JobMark>>]) {
        let own = self.kept();
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        for (name, f) in jobs.iter() {
            let mut g = match own.get(name) {
                Some(m) if m.epoch == f.epoch => m.frontier,
                _ => continue,
            };
            // Peers' marks are of their own runs; each left out those of earlier ones.
            let mut all = true;
            for a in answers {
                match a.as_ref().and_then(|a| a.get(name)) {
                    Some(m) if m.epoch == f.epoch => g = g.min(m.frontier),
                    _ => all = false,
                }
            }
            if all && g > 0 {
                f.safe.fetch_max(g, Ordering::AcqRel);
            }
        }
    }

    /// Asks every peer for its kept checkpoints (`/internal/v1/checkpoint`).
    pub fn ask_peers(&self) -> Vec<Option<BTreeMap<String, JobMark>>> {
        self.peers
            .iter()
            .map(|p| {
                let url = format!("{p}/internal/v1/checkpoint");
                let r = crate::query::fanout::to_peer(ureq::get(&url))
                    .config()
                    .timeout_global(Some(Duration::from_secs(10)))
                    .build()
                    .call();
                match r {
                    Ok(mut r) => r
                        .body_mut()
                        .read_to_vec()
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok()),
                    Err(e) => {
                        tracing::warn!(
                            "{url}: {e}; WALs are not truncated until every process answers"
                        );
                        None
                    }
                }
            })
            .collect()
    }

    /// `/metrics` families: the checkpoint counters and, per job, the safe time and the WAL
    /// segments deleted behind it.
    pub fn render(&self, w: &mut crate::ops::TextWriter) {
        crate::job::checkpoint::render(&self.stats, w);
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let label = |name: &str| crate::ops::labels(&[("job", name)]);
        let safe: Vec<(String, f64)> = jobs
            .iter()
            .map(|(n, f)| (label(n), f.safe.load(Ordering::Acquire) as f64 / 1e3))
            .collect();
        let deleted: Vec<(String, f64)> = jobs
            .iter()
            .map(|(n, f)| {
                (
                    label(n),
                    f.wal_segments_deleted.load(Ordering::Relaxed) as f64,
                )
            })
            .collect();
        fn refs(v: &[(String, f64)]) -> Vec<(&str, f64)> {
            v.iter().map(|(l, x)| (l.as_str(), *x)).collect()
        }
        w.family(
            "tidemark_worker_checkpoint_safe_time_seconds",
            "gauge",
            "Per job: every process's kept checkpoints hold what its sources sent before this time (0: not yet); the WALs keep only what was sent after it.",
            &refs(&safe),
        );
        w.family(
            "tidemark_worker_wal_segments_deleted_total",
            "counter",
            "Per job: WAL segments this process's sources deleted behind their replay points.",
            &refs(&deleted),
        );
    }

    /// Runs checkpoints every interval until the process exits.
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<()> {
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("tidemark-checkpoint".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(me.cfg.interval.0.max(100) as u64));
                let _ = me.run_once();
                let answers = me.ask_peers();
                me.agree(&answers);
            })
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_point_is_the_newest_mark_sent_before_the_safe_time() {
        let mut m = Marks::default();
        m.note(0, 0);
        m.note(5, 500); // the same second as the mark before: not kept
        m.note(10, 1_000);
        m.note(20, 2_000);
        m.note(30, 3_500);
        assert_eq!(m.replay_point(0), None);
        // Records 10..20 were sent in [1000, 2000]: the safe time 1500 lies among them.
        assert_eq!(
            m.replay_point(1_500),
            Some(ReplayPoint {
                offset: 10,
                watermark: 1_000,
                positions: vec![]
            })
        );
        assert_eq!(m.len(), 3, "marks before the point are forgotten");
        assert_eq!(
            m.replay_point(10_000),
            Some(ReplayPoint {
                offset: 30,
                watermark: 3_500,
                positions: vec![]
            })
        );
    }

    #[test]
    fn replay_point_file_round_trips_and_a_damaged_one_reads_as_none() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(ReplayPoint::read(d.path()), None);
        let p = ReplayPoint {
            offset: 42,
            watermark: 7_000,
            positions: vec![(0, 3, 1_000), (1, 0, 7)],
        };
        p.write(d.path()).unwrap();
        assert_eq!(ReplayPoint::read(d.path()), Some(p));
        std::fs::write(d.path().join(REPLAY_FILE), "42\n").unwrap();
        assert_eq!(ReplayPoint::read(d.path()), None);
        assert_eq!(
            ReplayPoint::parse("42 7000\n0 3 x\n").unwrap_err(),
            "line 2: \"x\": invalid digit found in string"
        );
    }

    fn checkpoints(dir: &Path, shape: (usize, usize, usize)) -> WorkerCheckpoints {
        let cfg = CheckpointConfig {
            keep: 2,
            ..CheckpointConfig::default()
        };
        WorkerCheckpoints::new(
            dir,
            cfg,
            Arc::new(HotIndex::new(i64::MAX / 4)),
            shape,
            Vec::new(),
            Arc::default(),
        )
    }

    #[test]
    fn the_safe_time_is_the_minimum_over_every_process_and_kept_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let c = checkpoints(d.path(), (2, 0, 2));
        let f = c.register("fleet", 1);
        // One worker has not reported: the frontier is 0.
        f.done[0].store(5_000, Ordering::Release);
        assert_eq!(f.frontier(), 0);
        f.done[1].store(7_000, Ordering::Release);
        let late = f.late_since();
        late.store(6_000, Ordering::Release);
        assert_eq!(f.frontier(), 5_000);
        c.run_once().unwrap();
        f.done[0].store(9_000, Ordering::Release);
        f.done[1].store(9_000, Ordering::Release);
        late.store(u64::MAX, Ordering::Release);
        c.run_once().unwrap();
        // The oldest kept checkpoint holds the job up to 5 s.
        assert_eq!(c.kept()["fleet"].frontier, 5_000);
        let peer = |t| {
            Some(BTreeMap::from([(
                "fleet".to_string(),
                JobMark {
                    run: 77,
                    epoch: 1,
                    frontier: t,
                },
            )]))
        };
        // A peer that did not answer, or has no checkpoint of the job: no safe time.
        c.agree(&[None]);
        assert_eq!(f.safe.load(Ordering::Acquire), 0);
        c.agree(&[Some(BTreeMap::new())]);
        assert_eq!(f.safe.load(Ordering::Acquire), 0);
        c.agree(&[peer(3_000)]);
        assert_eq!(f.safe.load(Ordering::Acquire), 3_000);
        // A third checkpoint prunes the first: the oldest kept is at 9 s.
        c.run_once().unwrap();
        assert_eq!(c.kept()["fleet"].frontier, 9_000);
        assert_eq!(file::list(&c.dir).len(), 2);
        let sidecars = std::fs::read_dir(&c.dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .count();
        assert_eq!(sidecars, 2, "a pruned checkpoint's sidecar goes with it");
        c.agree(&[peer(20_000)]);
        assert_eq!(f.safe.load(Ordering::Acquire), 9_000);
        // Another epoch (a replay) starts without a safe time.
        let f2 = c.register("fleet", 2);
        c.agree(&[peer(20_000)]);
        assert_eq!(f2.safe.load(Ordering::Acquire), 0);
        // A restarted process: the checkpoints of the run before give no safe time until
        // every checkpoint kept is its own.
        let mut again = checkpoints(d.path(), (2, 0, 2));
        again.run = c.run + 1;
        let f3 = again.register("fleet", 1);
        for d in &f3.done {
            d.store(12_000, Ordering::Release);
        }
        assert!(again.kept().is_empty());
        again.run_once().unwrap();
        assert!(
            again.kept().is_empty(),
            "one kept checkpoint is the earlier run's"
        );
        again.run_once().unwrap();
        assert_eq!(again.kept()["fleet"].frontier, 12_000);
        again.agree(&[peer(20_000)]);
        assert_eq!(f3.safe.load(Ordering::Acquire), 12_000);
    }

    #[test]
    fn restore_loads_the_newest_checkpoint_of_the_same_shape_only() {
        let d = tempfile::tempdir().unwrap();
        let c = checkpoints(d.path(), (2, 1, 1));
        let f = c.register("fleet", 1);
        f.done[0].store(4_000, Ordering::Release);
        c.run_once().unwrap();
        let fresh = || HotIndex::new(i64::MAX / 4);
        let stats = CheckpointStats::default();
        let restore = |shape| WorkerCheckpoints::restore(d.path(), shape, &stats, fresh);
        let r = restore((2, 1, 1)).expect("loaded");
        assert_eq!(r.meta.jobs["fleet"].frontier, 4_000);
        assert_eq!(
            stats.loaded_series.load(Ordering::Relaxed),
            0,
            "an empty index"
        );
        // Another shape: not loaded.
        assert!(restore((3, 1, 1)).is_none());
        assert!(restore((2, 1, 2)).is_none());
        // A damaged newest checkpoint: the one before is loaded.
        f.done[0].store(6_000, Ordering::Release);
        c.run_once().unwrap();
        let newest = file::list(&c.dir)[0].1.clone();
        let mut bytes = std::fs::read(&newest).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&newest, bytes).unwrap();
        let r = restore((2, 1, 1)).expect("the previous one");
        assert_eq!(r.meta.jobs["fleet"].frontier, 4_000);
        assert_eq!(stats.skipped_damaged.load(Ordering::Relaxed), 1);
        // A checkpoint without its sidecar (the process stopped between them) is skipped.
        let older = file::list(&c.dir)[1].0;
        std::fs::remove_file(sidecar(&c.dir, older)).unwrap();
        assert!(restore((2, 1, 1)).is_none());
    }
}

//! The timely job of `tidemark up`: worker threads reading the embedded log by offset into the
//! dataflow of `tidemark-dataflows` (exchange by series; raw samples to the hot index; 1-minute
//! rollups, 1-hour rollups from them; lateness counts).
//!
//! Replay (`tidemark replay --from-offset N | --from-time T --to URL` against `up`) stops the
//! job and starts it again reading the log from an earlier offset: the hot index takes the
//! re-read samples idempotently, and rollup windows from `rollups_from` on are rebuilt from
//! scratch (the windows before it are left alone, since part of their data lies before the
//! offset). [`replay_point`] turns a request into an offset and that time from the log's own
//! record headers (each record carries its event-time range), so no broker is involved.

pub mod checkpoint;
pub mod cut;
pub mod seed;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::empty;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, Exchange};
use timely::WorkerConfig;

use tidemark_dataflows::incremental::{leaf_values, rule_results, sink_results, Lookup};
use tidemark_dataflows::sink::{sink_rollups, sink_samples, HotSink};
use tidemark_dataflows::source::{watermark_source, BatchSource, Poll, WatermarkConfig};
use tidemark_dataflows::stored::{
    rollups_from_store, sample_rollups_stored, RollupStore, SampleStore, StoredRollups,
};
use tidemark_dataflows::tier::sink_tier;
use tidemark_dataflows::window::tumbling_rollups_seeded;
use tidemark_dataflows::{Rollup, Sample};
use timely::dataflow::operators::core::Filter;
use timely::dataflow::Stream;

use tidemark_dataflows::rules::{evaluate_at_ticks, TickConfig};

use crate::alert::eval::{AlertSink, LogWriter, RuleEvaluator, Rules};
use crate::config::JobConfig;
use crate::ops::Metrics;
use crate::store::cold::writer::{hot_rollups, hot_samples, LabelLookup, TierWriter};
use crate::store::cold::{ColdStore, Tier};
use crate::store::hot::{HotIndex, PinKind};
use crate::transport::codec;
use crate::transport::log::{Log, LogReader, RecordKind};

/// The hot index's 1-minute rollups as the store of the 1-hour windows.
pub fn minutes_of(hot: &Arc<HotIndex>) -> RollupStore {
    let hot = Arc::clone(hot);
    Arc::new(move |id, start, end, out| {
        out.extend(hot.rollups(id, crate::store::hot::Resolution::OneMinute, start, end - 1))
    })
}

/// The hot index's raw samples as the store of the 1-minute windows
/// ([`sample_rollups_stored`]), which write them there themselves. Whatever a window can still
/// take is in the index: the cold raw writer pins its open partitions, each of which outlives
/// the windows in it; without cold tiers, a sample beyond the hot retention would be a rollup
/// beyond the 1-minute rollups' retention too.
pub fn samples_of(hot: &Arc<HotIndex>) -> SampleStore {
    let hot = Arc::clone(hot);
    Arc::new(move |id, from, to, out| hot.samples(id, from, to, out))
}

/// The 1-minute windows and the raw sink. Normally raw samples go into the hot index inside
/// the windows' operator, which reads them back when a window closes
/// ([`sample_rollups_stored`]; the third stream is its sink's frontier): that needs the
/// operator to be the only writer of its series' samples since the index was empty or
/// checkpointed. With `rereads` (a replay, or a job started again in a process whose index
/// its earlier run filled) the index already holds samples this run sends again, those dropped
/// from the rollups as too late the first time included, and what they were written over is
/// gone: the windows hold their samples instead ([`tumbling_rollups_seeded`] beside a separate
/// sink, 300-340 bytes a series at 1 M series against about 30), until the next start.
/// (Not covered: two jobs of one worker process over the same series. The first job's
/// windows read back what the second wrote, which is the same samples unless the two judge
/// lateness differently.)
/// Windows `(start, start + width]` from `rollups_from` on hold the samples after it: one
/// exactly on the boundary ends the window before.
pub fn minute_windows<'s, S: HotSink + 'static>(
    samples: Stream<'s, u64, Vec<Sample>>,
    seed: Stream<'s, u64, Vec<Sample>>,
    lateness: i64,
    rollups_from: i64,
    rereads: bool,
    sink: S,
    hot: &Arc<HotIndex>,
) -> StoredRollups<'s> {
    if !rereads {
        return sample_rollups_stored(
            samples,
            seed,
            MINUTE_MS,
            lateness,
            rollups_from,
            sink,
            samples_of(hot),
        );
    }
    let applied = sink_samples(samples.clone(), sink);
    let windowed = samples.filter(move |s: &Sample| s.ts > rollups_from);
    let (minutes, late) = tumbling_rollups_seeded(windowed, seed, MINUTE_MS, lateness);
    (minutes, late, applied)
}

/// One-minute and one-hour window widths.
pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;

/// Samples the log sources may have sent that the hot index has not applied yet, summed over
/// the workers (about 24 bytes each in every queue they wait in).
const MAX_IN_FLIGHT: u64 = 100_000;

/// Log records a worker's source may read ahead of the slowest one. The workers decode records
/// in parallel (record `o` by worker `o % workers`) and apply them to the hot index as they go,
/// so a worker running ahead applies a series' next sample before another worker applied the
/// one before it: unbounded, at 200,000 series 18 % of the samples reached the hot index out
/// of order, each costing a trip through its series' out-of-order buffer and a re-encode.
const MAX_DRIFT_RECORDS: u64 = 8;

/// Progress shared between the workers and the server (readiness, `/metrics`).
pub struct JobProgress {
    /// Per worker: the next log offset its source will read.
    pub positions: Vec<AtomicU64>,
    /// Per worker: its source's watermark (the capability it holds).
    pub watermarks: Vec<AtomicU64>,
    /// Samples the sources sent into the dataflow, and samples the hot sink applied.
    pub sent: AtomicU64,
    pub applied: AtomicU64,
    /// Records that failed to decode (skipped, counted).
    pub corrupt_records: AtomicU64,
    /// Checkpoint cuts (see [`cut`]).
    pub cut: cut::CutControl,
    /// Workers still sending the seed of a restart from a checkpoint (see [`seed`]).
    pub seeding: AtomicUsize,
}

impl JobProgress {
    pub fn new(workers: usize) -> Self {
        JobProgress {
            positions: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            watermarks: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            sent: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            corrupt_records: AtomicU64::new(0),
            cut: cut::CutControl::new(workers),
            seeding: AtomicUsize::new(0),
        }
    }

    /// The lowest read position over all workers.
    pub fn min_position(&self) -> u64 {
        self.positions
            .iter()
            .map(|p| p.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    }

    /// The job's watermark: the minimum over the sources' capabilities.
    pub fn watermark(&self) -> u64 {
        self.watermarks
            .iter()
            .map(|p| p.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    }

    /// True when every source has read up to `offset` and the hot index applied all it sent.
    pub fn caught_up(&self, offset: u64) -> bool {
        self.min_position() >= offset
            && self.seeding.load(Ordering::Acquire) == 0
            && self.applied.load(Ordering::Acquire) == self.sent.load(Ordering::Acquire)
    }
}

/// Reads the log from `offset`; decodes the records this worker owns (`offset % peers ==
/// index`) and registers their new series in the catalog; every record's time range advances
/// the watermark on every worker, so all workers keep the same watermark.
struct LogSource {
    reader: LogReader,
    index: usize,
    peers: usize,
    hot: Arc<HotIndex>,
    progress: Arc<JobProgress>,
    stop: Arc<AtomicBool>,
    ids: Vec<u64>,
    /// A cut was returned and the operator has not reported the moved capability yet.
    cutting: bool,
    /// The job's main source (takes part in cuts, reports progress), or the cold replay of a
    /// restart (see [`StartAt::cold_replay`]), which stops at `until`.
    main: bool,
    until: u64,
    /// Records are decoded only when their earliest sample is before this (the cold replay:
    /// the end of the raw tier's sealed partitions; a record after it holds no correction to
    /// re-send, only rows of open partitions, which the seed marks). Others are skipped by
    /// their header, which still advances the watermark.
    load_before: i64,
    /// Records decoded and records skipped by [`LogSource::load_before`] (said at the end of
    /// a cold replay).
    counts: (u64, u64),
}

impl LogSource {
    fn new(
        reader: LogReader,
        index: usize,
        peers: usize,
        (hot, progress, stop): (Arc<HotIndex>, Arc<JobProgress>, Arc<AtomicBool>),
        main: bool,
        until: u64,
    ) -> Self {
        LogSource {
            reader,
            index,
            peers,
            hot,
            progress,
            stop,
            ids: Vec::new(),
            cutting: false,
            main,
            until,
            load_before: i64::MAX,
            counts: (0, 0),
        }
    }

    /// Decodes only records whose earliest sample is before `t` (see
    /// [`LogSource::load_before`]).
    fn load_before(self, t: i64) -> Self {
        LogSource {
            load_before: t,
            ..self
        }
    }
}

impl BatchSource for LogSource {
    fn poll(&mut self) -> Poll {
        if self.stop.load(Ordering::Acquire) {
            return Poll::Done;
        }
        if !self.main {
            if self.reader.position() >= self.until {
                if self.counts != (0, 0) {
                    tracing::info!(
                        "worker {}: cold replay done: {} records decoded, {} skipped (all their samples after the sealed raw partitions)",
                        self.index, self.counts.0, self.counts.1
                    );
                    self.counts = (0, 0);
                }
                return Poll::Done;
            }
        } else {
            if self.progress.seeding.load(Ordering::Acquire) > 0 {
                // The seed reads the hot index: nothing read after the checkpoint may be in it.
                return Poll::Pending(Duration::from_millis(1));
            }
            match self.progress.cut.step(self.index, self.reader.position()) {
                cut::Step::Read => {
                    // Flow control: timely has no backpressure, so a catch-up (a restart, or a
                    // job behind ingest) would put the whole backlog in the operators' queues.
                    let sent = self.progress.sent.load(Ordering::Acquire);
                    let applied = self.progress.applied.load(Ordering::Acquire);
                    if sent.saturating_sub(applied) > MAX_IN_FLIGHT {
                        return Poll::Pending(Duration::from_millis(1));
                    }
                    // No further ahead of the slowest worker than MAX_DRIFT_RECORDS. The own
                    // position is published first: a seek may have moved every reader past
                    // the positions the workers started with.
                    let me = self.reader.position();
                    self.progress.positions[self.index].store(me, Ordering::Release);
                    if me
                        > self
                            .progress
                            .min_position()
                            .saturating_add(MAX_DRIFT_RECORDS)
                    {
                        return Poll::Pending(Duration::from_millis(1));
                    }
                }
                cut::Step::Wait => return Poll::Pending(Duration::from_millis(2)),
                cut::Step::Cut => {
                    self.cutting = true;
                    return Poll::Cut(Duration::from_millis(2));
                }
            }
        }
        let (index, peers) = (self.index as u64, self.peers as u64);
        let before = self.load_before;
        let want = |off: u64, min_ts: i64, _| off % peers == index && min_ts < before;
        match self.reader.next_record_if(want) {
            Ok(Some(rec)) => {
                if !self.main && rec.offset % peers == index {
                    if rec.payload.is_empty() && rec.kind == RecordKind::Batch {
                        self.counts.1 += 1;
                    } else {
                        self.counts.0 += 1;
                    }
                }
                let mut samples = Vec::new();
                if rec.kind == RecordKind::Batch && !rec.payload.is_empty() {
                    let hot = &self.hot;
                    let res = codec::decode(
                        &rec.payload,
                        &mut self.ids,
                        |series| {
                            hot.catalog.register_canonical_batch(series);
                        },
                        |series, ts, value| samples.push(Sample { series, ts, value }),
                    );
                    if let Err(e) = res {
                        if self.main {
                            self.progress
                                .corrupt_records
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        tracing::warn!("skipping log record {}: {e}", rec.offset);
                        samples.clear();
                    }
                    self.reader.recycle(rec.payload);
                }
                if self.main {
                    self.progress
                        .sent
                        .fetch_add(samples.len() as u64, Ordering::AcqRel);
                    self.progress.positions[self.index]
                        .store(self.reader.position(), Ordering::Release);
                }
                Poll::Ready {
                    max_ts: rec.max_ts,
                    samples,
                }
            }
            Ok(None) => {
                if self.main {
                    self.progress.positions[self.index]
                        .store(self.reader.position(), Ordering::Release);
                }
                Poll::Pending(Duration::from_millis(5))
            }
            Err(e) => {
                tracing::warn!("log read failed (retrying in 1s): {e}; the job is stalled until it works (check the data dir's disk)");
                Poll::Pending(Duration::from_secs(1))
            }
        }
    }

    fn progressed(&mut self, watermark: u64) {
        if !self.main {
            return;
        }
        self.progress.watermarks[self.index].store(watermark, Ordering::Release);
        if self.cutting {
            self.cutting = false;
            self.progress.cut.moved(self.index);
        }
        if self.index == 0 {
            self.progress.cut.mark(self.reader.position(), watermark);
        }
    }
}

/// Applies to the hot index and counts what it applied (for readiness).
struct CountingSink {
    hot: Arc<HotIndex>,
    progress: Arc<JobProgress>,
}

impl HotSink for CountingSink {
    fn append(&self, samples: &[Sample]) {
        self.hot.append_samples(samples);
        self.progress
            .applied
            .fetch_add(samples.len() as u64, Ordering::AcqRel);
    }
    fn append_reporting(&self, samples: &[Sample], before: &mut Vec<Option<(i64, f64)>>) {
        self.hot.append_reporting(samples, before);
        self.progress
            .applied
            .fetch_add(samples.len() as u64, Ordering::AcqRel);
    }
    fn upsert_rollups(&self, rollups: &[Rollup]) {
        self.hot.upsert(rollups);
    }
    fn warm(&self, series: &[u64]) {
        self.hot.warm(series);
    }
}

/// Where a (re)started job reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartAt {
    /// First log offset read.
    pub offset: u64,
    /// Windows starting at or after this event time are built from what is read; older
    /// samples only go to the hot index. `i64::MIN` (the normal start): every window.
    pub rollups_from: i64,
    /// The sources' first watermark (a checkpoint's replay watermark; 0 otherwise).
    pub watermark: u64,
    /// Restore window, rule and cold-writer state from the hot index first (a restart from a
    /// checkpoint, see [`seed`]).
    pub seed: bool,
    /// Records before `offset` read again for the cold raw tier only, from this offset at this
    /// watermark: the corrections a writer buffered when the checkpoint was cut (they are
    /// written when the 5-minute correction window they were sent in ends, and are not in the hot index as such).
    pub cold_replay: Option<(u64, u64)>,
    /// The hot index already holds what this start reads (a replay): the 1-minute windows hold
    /// their samples rather than read them back from the index (see [`minute_windows`]).
    pub rereads: bool,
}

impl StartAt {
    /// Reads from `offset`, rebuilding every window from what it reads.
    pub fn offset(offset: u64) -> Self {
        StartAt {
            offset,
            rollups_from: i64::MIN,
            watermark: 0,
            seed: false,
            cold_replay: None,
            rereads: false,
        }
    }

    /// Resumes after a checkpoint, with a log that starts at `log_start`.
    pub fn checkpoint(m: &crate::store::hot::checkpoint::CheckpointMeta, log_start: u64) -> Self {
        let from = m.replay_offset.max(log_start);
        StartAt {
            offset: m.offset.max(log_start),
            rollups_from: i64::MIN,
            watermark: m.watermark,
            seed: true,
            cold_replay: (from < m.offset).then_some((from, m.replay_watermark)),
            rereads: false,
        }
    }
}

/// What a replay asks for.
#[derive(Clone, Copy, Debug)]
pub enum ReplayRequest {
    /// A log offset.
    Offset(u64),
    /// An event time (ms): the replay starts at the whole hour of it.
    Time(i64),
}

/// Why a replay point cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("offset {offset} is no longer retained: the log starts at {start} (use an offset from {start} to {end})")]
    Truncated { offset: u64, start: u64, end: u64 },
    #[error(
        "offset {offset} is past the end of the log ({end}); use an offset from {start} to {end}"
    )]
    PastEnd { offset: u64, start: u64, end: u64 },
    #[error("reading the log: {0}")]
    Log(#[from] crate::transport::log::LogError),
}

/// Turns a replay request into the offset to read from and the time windows are rebuilt from.
///
/// * From a time T: whole hours, so every rebuilt 1 m and 1 h window sees all its data. With
///   `H` the hour of T, the replay starts at the first batch record whose newest sample is at
///   or after `H`: every record before it holds only samples before `H`, out of order or not.
/// * From an offset N: windows are rebuilt from the hour after the newest sample before N.
pub fn replay_point(log: &Log, req: ReplayRequest) -> Result<StartAt, ReplayError> {
    let (start, end) = (log.start_offset(), log.end_offset());
    let mut reader = log.reader(start)?;
    match req {
        ReplayRequest::Offset(offset) => {
            if offset < start {
                return Err(ReplayError::Truncated { offset, start, end });
            }
            if offset > end {
                return Err(ReplayError::PastEnd { offset, start, end });
            }
            let mut newest = i64::MIN;
            while reader.position() < offset {
                let Some(rec) = reader.next_record(|_| false)? else {
                    break;
                };
                if rec.kind == RecordKind::Batch {
                    newest = newest.max(rec.max_ts);
                }
            }
            let rollups_from = if newest == i64::MIN {
                i64::MIN
            } else {
                (newest.div_euclid(HOUR_MS) + 1) * HOUR_MS
            };
            Ok(StartAt {
                rollups_from,
                rereads: true,
                ..StartAt::offset(offset)
            })
        }
        ReplayRequest::Time(t) => {
            let hour = t.div_euclid(HOUR_MS) * HOUR_MS;
            let mut offset = end;
            while let Some(rec) = reader.next_record(|_| false)? {
                if rec.kind == RecordKind::Batch && rec.max_ts >= hour {
                    offset = rec.offset;
                    break;
                }
            }
            Ok(StartAt {
                rollups_from: hour,
                rereads: true,
                ..StartAt::offset(offset)
            })
        }
    }
}

/// What the job writes into.
#[derive(Clone)]
pub struct JobEnv {
    pub hot: Arc<HotIndex>,
    pub metrics: Arc<Metrics>,
    /// The cold tiers; `None` keeps everything in the hot index only.
    pub cold: Option<Arc<ColdStore>>,
    /// Alerting and recording rules, evaluated on worker 0; `None`: no rules.
    pub rules: Option<RulesEnv>,
}

/// What rule evaluation needs.
#[derive(Clone)]
pub struct RulesEnv {
    pub rules: Arc<Rules>,
    /// Where alert events go (the notifier).
    pub sink: Arc<dyn AlertSink>,
    pub ticks: TickConfig,
    /// Maintain the rules that fit incrementally (see [`crate::alert::incremental`]).
    pub incremental: bool,
}

/// The name `tidemark up`'s job writes its cold files under.
pub const UP_JOB: &str = "up";

/// The running job; dropping it does not stop it, call [`Job::shutdown`].
pub struct Job {
    stop: Arc<AtomicBool>,
    guards: Option<timely::communication::WorkerGuards<()>>,
    pub progress: Arc<JobProgress>,
}

impl Job {
    /// Starts `workers` timely worker threads reading `log` from `at` (its start when
    /// `None`); `progress` has one slot per worker and may be the previous run's.
    pub fn start(
        log: Log,
        env: JobEnv,
        cfg: &JobConfig,
        workers: usize,
        progress: Arc<JobProgress>,
        at: Option<StartAt>,
    ) -> Result<Job, String> {
        let JobEnv {
            hot,
            metrics,
            cold,
            rules,
        } = env;
        let stop = Arc::new(AtomicBool::new(false));
        let at = at.unwrap_or(StartAt::offset(log.start_offset()));
        if progress.positions.len() != workers {
            return Err(format!(
                "job progress has {} worker slots, not {workers}",
                progress.positions.len()
            ));
        }
        for (p, w) in progress.positions.iter().zip(&progress.watermarks) {
            p.store(at.offset, Ordering::Release);
            w.store(at.watermark, Ordering::Release);
        }
        progress.cut.reset_marks(at.offset, at.watermark);
        progress
            .seeding
            .store(if at.seed { workers } else { 0 }, Ordering::Release);
        let (start_offset, rollups_from, cold_replay, rereads) =
            (at.offset, at.rollups_from, at.cold_replay, at.rereads);
        let wm = WatermarkConfig {
            out_of_orderness_ms: cfg.out_of_orderness.0.max(0) as u64,
            records_per_activation: 16,
            start: at.watermark,
        };
        let lateness = cfg.allowed_lateness.0;
        let config = timely::Config {
            communication: timely::CommunicationConfig::Process(workers),
            worker: WorkerConfig::default(),
        };
        // The incremental plans, built once for every worker; worker 0 gathers the results.
        let inc = rules.as_ref().filter(|r| r.incremental).map(|r| {
            let (plans, store) = r.rules.incremental(workers);
            (plans, store, r.rules.last_tick())
        });
        let seed_plan = at.seed.then(|| seed::SeedPlan {
            at: at.watermark,
            lateness,
            rules: inc.as_ref().map(|(plans, _, _)| seed::rules_of(plans)),
            cold: cold.is_some(),
        });
        // The cold replay re-sends the raw tier's buffered corrections: rows of partitions
        // its writers had sealed. Records whose samples all come after those need no decoding.
        let replay_before = match (&cold_replay, &cold) {
            (Some(_), Some(store)) => {
                crate::store::cold::writer::sealed_through_tier(store, UP_JOB, Tier::Raw)
                    .unwrap_or(i64::MAX)
            }
            _ => i64::MAX,
        };
        let (s, p) = (Arc::clone(&stop), Arc::clone(&progress));
        let guards = timely::execute(config, move |worker| {
            let (stop, progress, hot, metrics, log, cold, rules) = (
                Arc::clone(&s),
                Arc::clone(&p),
                Arc::clone(&hot),
                Arc::clone(&metrics),
                log.clone(),
                cold.clone(),
                rules.clone(),
            );
            let (index, peers) = (worker.index(), worker.peers());
            worker.dataflow::<u64, _, _>(|scope| {
                let (st, pr, h) = (Arc::clone(&stop), Arc::clone(&progress), Arc::clone(&hot));
                let source_log = log.clone();
                let samples = watermark_source(scope, "LogSource", wm, move |index, peers| {
                    let reader = source_log
                        .reader(start_offset)
                        .expect("open the log for reading");
                    LogSource::new(reader, index, peers, (h, pr, st), true, u64::MAX)
                });
                let samples = samples.exchange(|s: &Sample| s.series);
                // The seed of a restart from a checkpoint, split by what it restores.
                let seeds = seed_plan.clone().map(|plan| {
                    let p = Arc::clone(&progress);
                    seed::seed_source(
                        scope,
                        Arc::clone(&hot),
                        Some(plan),
                        (index, workers),
                        move || {
                            p.seeding.fetch_sub(1, Ordering::AcqRel);
                        },
                    )
                });
                let seeded = |flag: u8| match &seeds {
                    Some(s) => s.clone().flat_map(move |r| match r {
                        seed::SeedRec::Sample(s, f) if f & flag != 0 => Some(s),
                        _ => None,
                    }),
                    None => empty(scope),
                };
                let seeded_rollups = |pick: fn(seed::SeedRec) -> Option<Rollup>| match &seeds {
                    Some(s) => s.clone().flat_map(pick),
                    None => empty(scope),
                };
                let window_seed = seeded(seed::FOR_WINDOWS);
                let hour_seed = seeded_rollups(|r| match r {
                    seed::SeedRec::Minute(m) => Some(m),
                    _ => None,
                });
                let by_series = |s: &Sample| s.series;
                let by_rollup = |r: &Rollup| r.series;
                let mut samples_for_cold = samples
                    .clone()
                    .concat(seeded(seed::FOR_COLD).exchange(by_series));
                if let (Some((from, wm0)), Some(_)) = (cold_replay, &cold) {
                    let (st, pr, h) = (Arc::clone(&stop), Arc::clone(&progress), Arc::clone(&hot));
                    let replay_log = log.clone();
                    let cfg = WatermarkConfig { start: wm0, ..wm };
                    let replayed =
                        watermark_source(scope, "LogColdReplay", cfg, move |index, peers| {
                            let reader = replay_log.reader(from).expect("open the log for reading");
                            LogSource::new(reader, index, peers, (h, pr, st), false, start_offset)
                                .load_before(replay_before)
                        });
                    samples_for_cold = samples_for_cold.concat(replayed.exchange(by_series));
                }
                let inc_done = match (&inc, &rules) {
                    (Some((plans, store, resume)), Some(r)) => {
                        let h = Arc::clone(&hot);
                        let lookup: Lookup =
                            Arc::new(move |id| h.catalog.labels(id).map(|l| l.shared()));
                        let leaves = leaf_values(
                            samples
                                .clone()
                                .concat(seeded(seed::FOR_RULES).exchange(by_series)),
                            Arc::clone(plans),
                            Arc::clone(&lookup),
                            r.ticks,
                            *resume,
                        );
                        let results = rule_results(leaves, Arc::clone(plans), lookup);
                        Some(sink_results(
                            results,
                            (index == 0).then(|| Arc::clone(store)),
                        ))
                    }
                    _ => None,
                };
                let (minutes, late_m, applied) = minute_windows(
                    samples.clone(),
                    window_seed,
                    lateness,
                    rollups_from,
                    rereads,
                    CountingSink {
                        hot: Arc::clone(&hot),
                        progress: Arc::clone(&progress),
                    },
                    &hot,
                );
                let m_done = sink_rollups(minutes.clone(), Arc::clone(&hot));
                // 1-hour windows read their minutes back from the hot index when they close.
                let (hours, _late_h) = rollups_from_store(
                    minutes.clone(),
                    m_done.clone(),
                    hour_seed,
                    HOUR_MS,
                    lateness,
                    minutes_of(&hot),
                );
                let h_done = sink_rollups(hours.clone(), Arc::clone(&hot));
                // The frontier a checkpoint cut waits for: everything sent before it applied.
                let p = Arc::clone(&progress);
                applied
                    .clone()
                    .concat(m_done.clone())
                    .concat(h_done.clone())
                    .sink(Pipeline, "CutProbe", move |(input, frontier)| {
                        input.for_each(|_, _| {});
                        let f = frontier
                            .frontier()
                            .iter()
                            .min()
                            .copied()
                            .unwrap_or(u64::MAX);
                        p.cut.done[index].store(f, Ordering::Release);
                    });
                let minutes_for_cold = minutes.clone().concat(
                    seeded_rollups(|r| match r {
                        seed::SeedRec::ColdMinute(m) => Some(m),
                        _ => None,
                    })
                    .exchange(by_rollup),
                );
                let hours_for_cold = hours.clone().concat(
                    seeded_rollups(|r| match r {
                        seed::SeedRec::ColdHour(m) => Some(m),
                        _ => None,
                    })
                    .exchange(by_rollup),
                );
                if let Some(store) = &cold {
                    let h = Arc::clone(&hot);
                    let labels: LabelLookup = Arc::new(move |id| h.catalog.labels(id));
                    let new = |tier| {
                        let (s, l) = (Arc::clone(store), Arc::clone(&labels));
                        // The index holds this job only: a writer lists its series there.
                        let rows = hot_rollups(&hot, tier, Some((index, peers)));
                        let kind = match tier {
                            Tier::Hour => PinKind::Hour,
                            _ => PinKind::Minute,
                        };
                        TierWriter::<Rollup>::new(tier, UP_JOB, index, lateness, s, l, rows)
                            .map(|w| w.pin(hot.pin(kind)).late_since(progress.cut.late_since()))
                    };
                    let raw = TierWriter::<Sample>::new(
                        Tier::Raw,
                        UP_JOB,
                        index,
                        lateness,
                        Arc::clone(store),
                        Arc::clone(&labels),
                        hot_samples(&hot, Some((index, peers))),
                    )
                    .map(|w| {
                        w.pin(hot.pin(PinKind::Raw))
                            .late_since(progress.cut.late_since())
                    });
                    match (raw, new(Tier::Minute), new(Tier::Hour)) {
                        (Ok(raw), Ok(minute), Ok(hour)) => {
                            // The writers read sealed partitions from the hot index, so each
                            // seals only what its hot sink has applied. The log source
                            // registers series before it sends their samples.
                            sink_tier(samples_for_cold, Some(applied.clone()), "ColdRaw", raw);
                            sink_tier(minutes_for_cold, Some(m_done.clone()), "Cold1m", minute);
                            sink_tier(hours_for_cold, Some(h_done.clone()), "Cold1h", hour);
                        }
                        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                            tracing::warn!("worker {index}: cold tiers disabled for this run: {e}")
                        }
                    }
                }
                if let Some(r) = &rules {
                    // A tick is evaluated once every sample and rollup up to it is applied.
                    let mut done = applied.concat(m_done).concat(h_done);
                    if let Some(d) = inc_done {
                        done = done.concat(d);
                    }
                    let evaluator = (index == 0).then(|| RuleEvaluator {
                        rules: Arc::clone(&r.rules),
                        storage: Arc::clone(&hot) as Arc<dyn crate::query::Storage>,
                        writer: Box::new(LogWriter(log.clone())),
                        sink: Arc::clone(&r.sink),
                    });
                    evaluate_at_ticks(done, r.ticks, evaluator).sink(
                        Pipeline,
                        "AlertEvents",
                        |(input, _)| input.for_each(|_, _| {}),
                    );
                }
                let m = Arc::clone(&metrics);
                late_m.sink(Pipeline, "LateCounts", move |(input, _)| {
                    input.for_each(|_, data| {
                        for s in data.iter() {
                            m.late_accepted.fetch_add(s.accepted, Ordering::Relaxed);
                            m.late_dropped.fetch_add(s.dropped, Ordering::Relaxed);
                        }
                    });
                });
            });
            while !stop.load(Ordering::Acquire) {
                worker.step_or_park(Some(Duration::from_millis(20)));
            }
            // The sources return Done and drop their capabilities; drain what is in flight.
            while worker.step_or_park(Some(Duration::from_millis(1))) {}
        })?;
        Ok(Job {
            stop,
            guards: Some(guards),
            progress,
        })
    }

    /// Stops the sources, drains the dataflow and joins the workers.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(g) = self.guards.take() {
            for r in g.join() {
                if let Err(e) = r {
                    tracing::error!("worker failed: {e}; the job is stopped (restart tidemark up; the log keeps what was acknowledged)");
                }
            }
        }
    }
}

//! A job's Kafka source on one worker: WAL replay at start, then the partitions this worker
//! owns; decoding, the local WAL, offset commits after the sinks applied the data, bindings.
//!
//! Messages are parsed on a decoder thread beside the timely worker (one per source, in
//! order, at most `DECODE_AHEAD` messages ahead), so parsing and WAL encoding overlap with
//! the worker's hot-index appends instead of taking turns with them.

use crate::time::now_ms;
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::dataflow::operators::probe::Handle as ProbeHandle;

use tidemark_dataflows::partitioned::{PartPoll, PartitionedSource, SeriesDef};
use tidemark_dataflows::Sample;

use super::checkpoint::{JobFrontier, Marks, ReplayPoint};
use super::spec::{JobSpec, StartAt};
use super::{Binding, Command, PartitionStatus, Registry};
use crate::config::FsyncPolicy;
use crate::config::KafkaFormat;
use crate::ingest::{describe_errors, influx, remote_write, BatchBuilder};
use crate::model::WriteBatch;
use crate::model::{IdSet, Limits};
use crate::transport::codec;
use crate::transport::consumer::{part_id, Msg, PartKey, PartitionConsumer, Start};
use crate::transport::log::{Log, LogReader, RecordKind};

/// Everything a source needs from its worker.
pub struct SourceCtx {
    /// The job's epoch this source belongs to; it reports into the job's status only while
    /// that is the current epoch.
    pub epoch: u64,
    pub spec: Arc<JobSpec>,
    pub brokers: String,
    pub index: usize,
    pub peers: usize,
    /// This worker's WAL directory, and the WAL directories it replays at start.
    pub wal_dir: PathBuf,
    pub replay_dirs: Vec<PathBuf>,
    pub limits: Limits,
    pub registry: Arc<Registry>,
    /// Commands for the sequencer (bindings), drained by the worker loop.
    pub outbox: Rc<RefCell<Vec<Command>>>,
    pub probe: ProbeHandle<u64>,
    pub stop: Arc<AtomicBool>,
    /// Replay: start offsets (they win over the WAL and the committed offsets).
    pub overrides: BTreeMap<PartKey, i64>,
    /// WAL segments older than this are deleted (the hot retention).
    pub wal_retention: Duration,
    /// The job's progress in this process, with the cluster's safe time: WAL records sent
    /// before it are in every process's checkpoints (see [`super::checkpoint`]).
    pub frontier: Option<Arc<JobFrontier>>,
    /// Where this worker's own WAL is replayed from (a checkpoint was loaded), and the
    /// watermark its source starts at; `None`: the whole WAL, from watermark 0.
    pub replay_from: Option<ReplayPoint>,
}

/// Messages handed to the decoder thread and not yet taken back.
const DECODE_AHEAD: usize = 32;

/// A Kafka message parsed by the decoder thread.
struct Decoded {
    part: PartKey,
    offset: i64,
    batch: WriteBatch,
    /// The WAL record (header + codec batch); empty when the message had no valid sample.
    wal: Vec<u8>,
    wal_range: (i64, i64),
    /// Why (some of) the message was malformed.
    malformed: Option<String>,
}

/// The decoder thread: messages in, parsed batches and their WAL records out, in order.
struct Decoder {
    tx: mpsc::SyncSender<Msg>,
    rx: mpsc::Receiver<Decoded>,
    ahead: usize,
}

impl Decoder {
    fn spawn(job: &str, format: KafkaFormat, limits: Limits) -> std::io::Result<Decoder> {
        let (tx, in_rx) = mpsc::sync_channel::<Msg>(DECODE_AHEAD);
        let (out_tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("decode-{job}"))
            .spawn(move || {
                for m in in_rx {
                    if out_tx.send(decode(format, &limits, m)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Decoder { tx, rx, ahead: 0 })
    }
}

/// Parses a Kafka message; a bad message (or bad lines in it) keeps whatever valid samples
/// it has, and says why.
fn decode(format: KafkaFormat, limits: &Limits, m: Msg) -> Decoded {
    let mut b = BatchBuilder::new(limits);
    let mut fatal = None;
    match format {
        KafkaFormat::LineProtocol => {
            influx::parse(&m.payload, influx::Precision::Ns, now_ms(), &mut b);
        }
        KafkaFormat::RemoteWrite => {
            if let Err(e) = remote_write::parse(&m.payload, usize::MAX, &mut b) {
                fatal = Some(e.to_string());
            }
        }
    }
    let (batch, errors, total) = b.finish();
    let malformed = fatal.or_else(|| (total > 0).then(|| describe_errors(&errors, total)));
    let mut wal = Vec::new();
    let mut wal_range = (0, 0);
    if let Some(range) = batch.time_range() {
        wal_range = range;
        wal.extend_from_slice(&(m.part.0 as u32).to_le_bytes());
        wal.extend_from_slice(&m.part.1.to_le_bytes());
        wal.extend_from_slice(&m.offset.to_le_bytes());
        codec::encode(&batch, &mut wal);
    }
    Decoded {
        part: m.part,
        offset: m.offset,
        batch,
        wal,
        wal_range,
        malformed,
    }
}

enum Phase {
    /// WAL readers, the last one first; `true`: this worker's own WAL.
    Wal(Vec<(LogReader, bool)>),
    Kafka,
}

pub struct KafkaJobSource {
    ctx: SourceCtx,
    phase: Phase,
    wal: Option<Log>,
    consumer: Option<PartitionConsumer>,
    decoder: Option<Decoder>,
    /// Next offset per partition known from the WAL.
    wal_next: BTreeMap<PartKey, i64>,
    seen: IdSet,
    /// `(time sent at, partition, next offset, newest event time)` not yet committed.
    inflight: VecDeque<(u64, PartKey, i64, i64)>,
    max_ts: BTreeMap<PartKey, i64>,
    cur_time: u64,
    last_commit: Instant,
    last_report: Instant,
    last_retention: Instant,
    status: BTreeMap<PartKey, PartitionStatus>,
    ids: Vec<u64>,
    retry_at: Option<Instant>,
    /// Where this worker's own WAL records were sent, for its replay point.
    marks: Marks,
    /// The safe time the WAL was last truncated for.
    truncated_for: u64,
}

/// WAL record payload: `u32 topic index, i32 partition, i64 offset`, then a codec batch.
const WAL_HEADER: usize = 16;

impl KafkaJobSource {
    pub fn new(ctx: SourceCtx) -> Self {
        let mut readers = Vec::new();
        if ctx.overrides.is_empty() {
            for d in &ctx.replay_dirs {
                let own = *d == ctx.wal_dir;
                let from = |l: &Log| match ctx.replay_from.as_ref().filter(|_| own) {
                    Some(p) => p.offset.max(l.start_offset()),
                    None => l.start_offset(),
                };
                match Log::open(d, FsyncPolicy::Never).and_then(|l| l.reader(from(&l))) {
                    Ok(r) => readers.push((r, own)),
                    Err(e) => tracing::warn!(
                        "job {}: cannot replay WAL {}: {e}",
                        ctx.spec.name,
                        d.display()
                    ),
                }
            }
        }
        let wal = match Log::open(&ctx.wal_dir, FsyncPolicy::Never) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(
                    "job {}: cannot open WAL {} (data will not survive a restart): {e}",
                    ctx.spec.name,
                    ctx.wal_dir.display()
                );
                None
            }
        };
        let start = ctx.replay_from.as_ref().map_or(0, |p| p.watermark);
        // Partitions whose records all lie before the replay point resume where the WAL had
        // reached then; those after it, where the replay leaves them.
        let wal_next: BTreeMap<PartKey, i64> = ctx
            .replay_from
            .iter()
            .flat_map(|p| &p.positions)
            .map(|&(t, p, next)| ((t, p), next))
            .collect();
        KafkaJobSource {
            ctx,
            phase: Phase::Wal(readers),
            wal,
            consumer: None,
            decoder: None,
            wal_next,
            seen: IdSet::default(),
            inflight: VecDeque::new(),
            max_ts: BTreeMap::new(),
            cur_time: start,
            last_commit: Instant::now(),
            last_report: Instant::now(),
            last_retention: Instant::now(),
            status: BTreeMap::new(),
            ids: Vec::new(),
            retry_at: None,
            marks: Marks::default(),
            truncated_for: 0,
        }
    }

    fn name(&self) -> &str {
        &self.ctx.spec.name
    }

    /// The operator's record for `samples` of partition `part`, with the definitions of
    /// series this source has not sent before.
    fn emit(&mut self, part: PartKey, series: Vec<SeriesDef>, samples: Vec<Sample>) -> PartPoll {
        if let Some(max) = samples.iter().map(|s| s.ts).max() {
            let m = self.max_ts.entry(part).or_insert(max);
            *m = (*m).max(max);
        }
        self.ctx
            .registry
            .with_epoch(&self.ctx.spec.name, self.ctx.epoch, |j| {
                j.samples += samples.len() as u64
            });
        PartPoll::Record {
            partition: part_id(part),
            max_ts: self.max_ts.get(&part).copied().unwrap_or(0),
            samples,
            series,
        }
    }

    fn emit_batch(&mut self, part: PartKey, batch: &WriteBatch) -> PartPoll {
        let mut series: Vec<SeriesDef> = Vec::new();
        for (i, (id, _)) in batch.series.iter().enumerate() {
            if self.seen.insert(*id) {
                series.push((*id, batch.canonical(i).to_vec()));
            }
        }
        let samples: Vec<Sample> = batch
            .samples
            .iter()
            .map(|s| Sample {
                series: batch.series[s.series as usize].0,
                ts: s.ts,
                value: s.value,
            })
            .collect();
        self.emit(part, series, samples)
    }

    fn poll_wal(&mut self) -> Option<PartPoll> {
        let Phase::Wal(readers) = &mut self.phase else {
            return None;
        };
        while let Some((r, own)) = readers.last_mut() {
            match r.next_record(|_| true) {
                Ok(Some(rec))
                    if rec.kind == RecordKind::Batch && rec.payload.len() >= WAL_HEADER =>
                {
                    let p = &rec.payload;
                    let ti = u32::from_le_bytes(p[0..4].try_into().expect("4")) as usize;
                    let part = i32::from_le_bytes(p[4..8].try_into().expect("4"));
                    let off = i64::from_le_bytes(p[8..16].try_into().expect("8"));
                    let k = (ti, part);
                    if *own {
                        self.marks.note(rec.offset, self.cur_time);
                    }
                    let e = self.wal_next.entry(k).or_insert(off + 1);
                    *e = (*e).max(off + 1);
                    let (mut series, mut samples) = (Vec::new(), Vec::new());
                    let seen = &mut self.seen;
                    let res = codec::decode(
                        &p[WAL_HEADER..],
                        &mut self.ids,
                        |batch| {
                            for &(id, c) in batch {
                                if seen.insert(id) {
                                    series.push((id, c.to_vec()));
                                }
                            }
                        },
                        |series, ts, value| samples.push(Sample { series, ts, value }),
                    );
                    self.ctx
                        .registry
                        .with_epoch(&self.ctx.spec.name, self.ctx.epoch, |j| {
                            j.wal_records_replayed += 1
                        });
                    match res {
                        Ok(()) => return Some(self.emit(k, series, samples)),
                        Err(e) => tracing::warn!(
                            "job {}: skipping corrupt WAL record {}: {e}",
                            self.ctx.spec.name,
                            rec.offset
                        ),
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    readers.pop();
                }
            }
        }
        self.phase = Phase::Kafka;
        tracing::info!(
            "job {} worker {}: WAL replayed (RSS {} MiB, peak {} MiB)",
            self.ctx.spec.name,
            self.ctx.index,
            crate::ops::rss_bytes() as u64 >> 20,
            crate::ops::peak_rss_bytes() as u64 >> 20,
        );
        None
    }

    fn connect(&mut self) -> Result<(), String> {
        let spec = &self.ctx.spec;
        let mut overrides = self.wal_next.clone();
        overrides.extend(self.ctx.overrides.iter().map(|(k, v)| (*k, *v)));
        let brokers = if spec.source.brokers.is_empty() {
            self.ctx.brokers.clone()
        } else {
            spec.source.brokers.clone()
        };
        let c = PartitionConsumer::new(
            &brokers,
            &spec.source.topics,
            &spec.group(),
            self.ctx.index,
            self.ctx.peers,
            match spec.source.start {
                StartAt::Earliest => Start::Earliest,
                StartAt::Latest => Start::Latest,
            },
            overrides,
            Duration::from_millis(spec.source.fetch_wait.0.max(1) as u64),
        )
        .map_err(|e| e.to_string())?;
        self.consumer = Some(c);
        // The WAL is replayed (that phase comes first) and the partitions are assigned.
        let index = self.ctx.index;
        self.ctx
            .registry
            .with_epoch(&self.ctx.spec.name, self.ctx.epoch, |j| {
                j.ready_workers.insert(index);
            });
        if self.decoder.is_none() {
            let d = Decoder::spawn(&spec.name, spec.source.format, self.ctx.limits.clone())
                .map_err(|e| format!("cannot start the decoder thread: {e}"))?;
            self.decoder = Some(d);
        }
        Ok(())
    }

    /// Reports a malformed message (counted with its partition and offset) and appends the
    /// valid part to the WAL.
    fn accept(&mut self, d: &Decoded) {
        if let Some(reason) = &d.malformed {
            let topic = self.ctx.spec.source.topics[d.part.0].clone();
            tracing::warn!(
                "job {}: malformed message at {topic}/{}@{} (skipped what is bad, kept {} valid samples): {reason}",
                self.name(),
                d.part.1,
                d.offset,
                d.batch.samples.len()
            );
            let st = self.status.entry(d.part).or_default();
            st.malformed += 1;
            st.last_malformed = Some((d.offset, reason.clone()));
        }
        let Some(wal) = &self.wal else { return };
        if d.wal.is_empty() {
            return;
        }
        match wal.append(RecordKind::Batch, d.wal_range.0, d.wal_range.1, &d.wal) {
            Ok(offset) => {
                self.marks.note(offset, self.cur_time);
                let e = self.wal_next.entry(d.part).or_insert(d.offset + 1);
                *e = (*e).max(d.offset + 1);
            }
            Err(e) => tracing::warn!("job {}: WAL append failed: {e}", self.ctx.spec.name),
        }
    }

    /// Once the cluster's safe time moved on: records this worker's replay point for it and
    /// deletes the WAL segments before that point (every process's checkpoints hold them).
    fn truncate(&mut self) {
        let Some(f) = &self.ctx.frontier else { return };
        let g = f.safe.load(Ordering::Acquire);
        if g <= self.truncated_for || matches!(self.phase, Phase::Wal(_)) {
            return;
        }
        let (Some(wal), Some(mut point)) = (&self.wal, self.marks.replay_point(g)) else {
            return;
        };
        point.positions = self
            .wal_next
            .iter()
            .map(|(&(t, p), &next)| (t, p, next))
            .collect();
        self.truncated_for = g;
        if let Err(e) = point.write(&self.ctx.wal_dir) {
            tracing::warn!(
                "job {}: cannot record the WAL's replay point in {} (the WAL is kept whole): {e}",
                self.ctx.spec.name,
                self.ctx.wal_dir.display()
            );
            return;
        }
        match wal.delete_before(point.offset) {
            Ok(n) => {
                f.wal_segments_deleted
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(
                "job {}: WAL truncation before offset {} failed (retried at the next checkpoint): {e}",
                self.ctx.spec.name, point.offset
            ),
        }
    }

    /// Commits what every sink has applied, once the WAL holding it is synced.
    fn commit(&mut self) {
        let mut next: BTreeMap<PartKey, (i64, i64)> = BTreeMap::new();
        while let Some(&(t, k, off, mts)) = self.inflight.front() {
            if self.ctx.probe.less_equal(&t) {
                break;
            }
            next.insert(k, (off, mts));
            self.inflight.pop_front();
        }
        if next.is_empty() {
            return;
        }
        if let Some(wal) = &self.wal {
            if let Err(e) = wal.sync() {
                tracing::warn!(
                    "job {}: WAL fsync failed, not committing offsets until it works: {e} (check the worker data dir's disk)",
                    self.ctx.spec.name
                );
                return;
            }
        }
        let Some(c) = &self.consumer else { return };
        let offsets: BTreeMap<PartKey, i64> = next.iter().map(|(k, v)| (*k, v.0)).collect();
        if let Err(e) = c.commit(&offsets) {
            tracing::warn!(
                "job {}: offset commit failed (will retry): {e}",
                self.ctx.spec.name
            );
        }
        let at = now_ms();
        let entries = next
            .iter()
            .map(|(k, (off, mts))| Binding {
                topic: k.0,
                partition: k.1,
                offset: *off,
                max_ts: *mts,
                at_ms: at,
            })
            .collect();
        for (k, (off, _)) in &next {
            self.status.entry(*k).or_default().committed = *off;
        }
        self.ctx.outbox.borrow_mut().push(Command::Bindings {
            job: self.ctx.spec.name.clone(),
            entries,
        });
    }

    fn report(&mut self) {
        self.truncate();
        if self.last_retention.elapsed() >= Duration::from_secs(60) {
            self.last_retention = Instant::now();
            if let Some(wal) = &self.wal {
                if let Err(e) = wal.delete_older_than(self.ctx.wal_retention) {
                    tracing::warn!("job {}: WAL retention failed: {e}", self.ctx.spec.name);
                }
            }
        }
        let Some(c) = &self.consumer else { return };
        for (k, pos, high) in c.lag() {
            let st = self.status.entry(k).or_default();
            st.topic = c.topic(k).to_string();
            st.partition = k.1;
            st.worker = self.ctx.index;
            st.position = pos;
            st.high = high;
            st.max_ts = self.max_ts.get(&k).copied().unwrap_or(0);
        }
        let wm = self.cur_time;
        let idx = self.ctx.index;
        let status = self.status.clone();
        let caught_up = status.values().all(|s| s.high >= 0 && s.position >= s.high);
        let epoch = self.ctx.epoch;
        self.ctx
            .registry
            .with_epoch(&self.ctx.spec.name, epoch, |j| {
                j.watermarks.insert(idx, wm);
                if j.state == "replaying" && caught_up {
                    j.state = "running".into();
                }
                for (k, st) in status {
                    j.partitions.insert(format!("{}/{}", st.topic, k.1), st);
                }
            });
    }
}

impl PartitionedSource for KafkaJobSource {
    fn poll(&mut self) -> PartPoll {
        if self.ctx.stop.load(Ordering::Acquire) {
            return PartPoll::Done;
        }
        if let Some(r) = self.poll_wal() {
            return r;
        }
        if self.last_report.elapsed() >= Duration::from_millis(500) {
            self.last_report = Instant::now();
            self.report();
        }
        if self.last_commit.elapsed() >= Duration::from_secs(1) {
            self.last_commit = Instant::now();
            self.commit();
        }
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return PartPoll::Pending(Duration::from_millis(100));
        }
        if self.consumer.is_none() {
            if let Err(e) = self.connect() {
                tracing::warn!("job {}: {e}; retrying in 2s", self.name());
                self.retry_at = Some(Instant::now() + Duration::from_secs(2));
                return PartPoll::Pending(Duration::from_secs(2));
            }
        }
        let c = self.consumer.as_mut().expect("connected");
        match c.discover() {
            Ok(found) if !found.is_empty() => {
                let names: Vec<String> = found
                    .iter()
                    .map(|k| format!("{}/{}", c.topic(*k), k.1))
                    .collect();
                tracing::info!(
                    "job {} worker {}: assigned {}",
                    self.ctx.spec.name,
                    self.ctx.index,
                    names.join(", ")
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("job {}: {e}; retrying in 2s", self.ctx.spec.name);
                self.retry_at = Some(Instant::now() + Duration::from_secs(2));
                return PartPoll::Pending(Duration::from_secs(2));
            }
        }
        let d = self.decoder.as_mut().expect("started with the consumer");
        let mut wait = Duration::from_millis(5);
        while d.ahead < DECODE_AHEAD {
            match c.poll(Duration::ZERO) {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!("job {}: Kafka: {e}", self.ctx.spec.name);
                    wait = Duration::from_millis(200);
                    break;
                }
                Some(Ok(m)) => {
                    if d.tx.send(m).is_err() {
                        break;
                    }
                    d.ahead += 1;
                }
            }
        }
        // Block briefly on the decoder only when it has work, so the worker keeps stepping.
        let got = if d.ahead == 0 {
            None
        } else {
            d.rx.recv_timeout(Duration::from_millis(1)).ok()
        };
        let Some(dec) = got else {
            if d.ahead > 0 {
                wait = Duration::ZERO;
            }
            return PartPoll::Pending(wait);
        };
        d.ahead -= 1;
        self.accept(&dec);
        let rec = self.emit_batch(dec.part, &dec.batch);
        let mts = self.max_ts.get(&dec.part).copied().unwrap_or(i64::MIN);
        self.inflight
            .push_back((self.cur_time, dec.part, dec.offset + 1, mts));
        rec
    }

    fn partitions(&self) -> Vec<u32> {
        self.consumer
            .as_ref()
            .map(|c| c.partitions().into_iter().map(part_id).collect())
            .unwrap_or_default()
    }

    fn now_ms(&self) -> i64 {
        now_ms()
    }

    fn progressed(&mut self, watermark: u64) {
        self.cur_time = watermark;
    }

    fn hold(&self) -> bool {
        matches!(self.phase, Phase::Wal(_))
    }

    fn start_time(&self) -> u64 {
        self.ctx.replay_from.as_ref().map_or(0, |p| p.watermark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_message_keeps_valid_lines_and_its_wal_record_reads_back() {
        let m = Msg {
            part: (0, 3),
            offset: 42,
            payload: b"cpu,host=a value=0.5 1000000000\nnot line protocol\ncpu,host=b value=2 2000000000\n"
                .to_vec(),
        };
        let d = decode(KafkaFormat::LineProtocol, &Limits::default(), m);
        assert_eq!((d.part, d.offset), ((0, 3), 42));
        assert_eq!(d.batch.samples.len(), 2);
        assert!(
            d.malformed.as_deref().is_some_and(|r| r.contains("line 2")),
            "{:?}",
            d.malformed
        );
        assert_eq!(d.wal_range, (1000, 2000));
        // The WAL record: topic index, partition, offset, then the codec batch.
        assert_eq!(&d.wal[0..4], &0u32.to_le_bytes());
        assert_eq!(&d.wal[4..8], &3i32.to_le_bytes());
        assert_eq!(&d.wal[8..16], &42i64.to_le_bytes());
        let mut got = Vec::new();
        codec::decode(
            &d.wal[WAL_HEADER..],
            &mut Vec::new(),
            |_| {},
            |_, ts, v| got.push((ts, v)),
        )
        .expect("the WAL record decodes");
        got.sort_by_key(|s| s.0);
        assert_eq!(got, vec![(1000, 0.5), (2000, 2.0)]);
    }

    #[test]
    fn a_message_without_valid_samples_writes_no_wal_record() {
        let m = Msg {
            part: (0, 0),
            offset: 7,
            payload: b"garbage\n".to_vec(),
        };
        let d = decode(KafkaFormat::LineProtocol, &Limits::default(), m);
        assert!(d.batch.samples.is_empty());
        assert!(d.wal.is_empty());
        assert!(d.malformed.is_some());
        let rw = decode(
            KafkaFormat::RemoteWrite,
            &Limits::default(),
            Msg {
                part: (0, 0),
                offset: 8,
                payload: b"\xff\xfenot snappy".to_vec(),
            },
        );
        assert!(rw.malformed.is_some() && rw.batch.samples.is_empty());
    }
}

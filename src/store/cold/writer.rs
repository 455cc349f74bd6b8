//! A tier writer: the [`TierSink`] behind each cold tier of a timely job.
//!
//! A writer does not buffer the rows of a partition. The hot index applies every row the job
//! sends (the sink operator seals only what the hot sinks' frontier has passed), so for an
//! open partition the writer keeps only the earliest time its rows were sent at; when the
//! frontier passes the partition's end plus the allowed lateness, it lists the series it owns
//! with rows in the partition in the hot index (those timely's exchange by series id sends to
//! its worker, [`worker_of`]) and writes the file from the index ([`RowSource`]) series by
//! series, in file order, a record batch at a time. Memory is one batch and, while a file is
//! written, its series list (16 bytes per series): independent of the ingest rate, the
//! partition's length and, between seals, of the series count. Where several jobs share the
//! index (a cluster process) the index cannot say which series are the writer's job's, so
//! the writer remembers the series it was sent per open partition (about 18 bytes per series
//! and tier: 55 bytes per series at 1 M series in `tidemark up` before it listed them).
//!
//! A row sent (at timely time `t`) after its partition is sealed (`t >= partition end +
//! allowed lateness`) is a late correction: such rows are buffered as rows, collected by the
//! [`CORRECTION_WINDOW_MS`] window of `t` they were sent in, and written to their own file when
//! the frontier passes that window's end (a checkpoint's restart re-reads the log from the
//! oldest buffered one, so the window bounds how much log the cold tiers hold). A window's
//! buffer is bounded: every [`LATE_PART_BYTES`] of rows are written at once as a part of their
//! own (`c<window + part>`, so a later part wins a collision as a later row would), and the
//! rest when the window ends. A backlog replayed after an outage, or data pushed behind a
//! watermark another source moved on, is all late; unbounded, 100 M such rows held 4 GB in
//! the buffer and 17 GB while their one file was written. Parts are cut after exactly as
//! many rows, so a replay of the window (which gets all of its rows again) writes the same
//! names, every one of them again, with the same rows between them; which part holds which
//! row follows the arrival order, which upstream workers can interleave differently. Every
//! decision depends on the row and `t` only, never on when it was processed, so re-running the
//! job over the same input writes the same files under the same names: a crash between a file
//! and the checkpoint rewrites that file, it never adds a copy.
//!
//! The checkpoint (`_tidemark/checkpoints/<job>-w<worker>-<tier>.json`, written after the files)
//! records `sealed_through`: every partition sealed and every correction window ended before it is
//! in files. After a restart, rows that belong there are dropped (they are already stored) and
//! the rest is rebuilt from the replayed log or Kafka offsets.

use std::collections::BTreeMap;
use std::sync::Arc;

use tidemark_dataflows::memory::{hash_slot, Component, Reported};
use tidemark_dataflows::tier::{worker_of, TierSink};
use tidemark_dataflows::{Rollup, Sample};

use super::layout::{FileKind, Partition, Tier};
use super::parquet_io::{self, sort_dedup, ColdRow, SeriesOrder};
use super::store::{ColdError, ColdStore};
use crate::model::{IdMap, IdSet, Labels};
use crate::store::hot::{HotIndex, PinKind, Resolution};

/// Label lookup for series ids (the hot index's catalog).
pub type LabelLookup = Arc<dyn Fn(u64) -> Option<Labels> + Send + Sync>;

/// Where a writer reads a partition from when it seals it: each series' rows in `[start,
/// end)`, sorted by time, one per time (the hot index's samples or rollups of the tier's
/// resolution), appended to the vector; and, when the index holds only the writer's job, the
/// series the writer owns with rows there (otherwise the writer remembers the series it was
/// sent, as a set per open partition: see the module documentation).
pub struct RowSource<R> {
    series: Option<SeriesList>,
    rows: RowsOf<R>,
}

/// A series' rows in `[start, end)`, appended to the vector.
type RowsOf<R> = Arc<dyn Fn(u64, i64, i64, &mut Vec<R>) + Send + Sync>;

/// The series a writer owns with rows in `[start, end)`, any order.
type SeriesList = Arc<dyn Fn(i64, i64) -> Vec<u64> + Send + Sync>;

/// The series of the hot index that worker `index` of `peers` owns (timely's exchange by
/// series id sends their rows there, [`worker_of`]) with rows of `kind` in a range.
fn owned(hot: &Arc<HotIndex>, kind: PinKind, owner: Option<(usize, usize)>) -> Option<SeriesList> {
    let (index, peers) = owner?;
    let hot = Arc::clone(hot);
    Some(Arc::new(move |start, end| {
        hot.series_in(kind, start, end, &|id| worker_of(id, peers) == index)
    }))
}

/// The hot index's raw samples as a writer's row source. `owner`: the writer's worker index
/// and the number of workers, when the index holds only the writer's job (`tidemark up`);
/// `None` where several jobs share it (a cluster process).
pub fn hot_samples(hot: &Arc<HotIndex>, owner: Option<(usize, usize)>) -> RowSource<Sample> {
    let h = Arc::clone(hot);
    RowSource {
        series: owned(hot, PinKind::Raw, owner),
        rows: Arc::new(move |id, start, end, out| {
            let mut pts = Vec::new();
            h.samples(id, start, end - 1, &mut pts);
            out.extend(pts.into_iter().map(|(ts, value)| Sample {
                series: id,
                ts,
                value,
            }));
        }),
    }
}

/// The hot index's rollups of a rollup tier's resolution as a writer's row source (`owner`:
/// as for [`hot_samples`]).
pub fn hot_rollups(
    hot: &Arc<HotIndex>,
    tier: Tier,
    owner: Option<(usize, usize)>,
) -> RowSource<Rollup> {
    let h = Arc::clone(hot);
    let (res, kind) = match tier {
        Tier::Hour => (Resolution::OneHour, PinKind::Hour),
        Tier::Minute | Tier::Raw => (Resolution::OneMinute, PinKind::Minute),
    };
    RowSource {
        series: owned(hot, kind, owner),
        rows: Arc::new(move |id, start, end, out| out.extend(h.rollups(id, res, start, end - 1))),
    }
}

/// Late corrections are collected by this window of their send time and written when it ends:
/// at most one correction file per partition and window (compaction merges them), and a
/// restart re-reads at most this much event time of log before its checkpoint's cut for them.
pub const CORRECTION_WINDOW_MS: i64 = 5 * 60_000;

/// Rows per record batch when a partition is written from the hot index.
const BATCH_ROWS: usize = 64 * 1024;

/// A correction window's buffer is written as a part of its own each time it holds this many
/// bytes of rows (see the module documentation).
pub const LATE_PART_BYTES: usize = 32 << 20;

/// An open partition: the earliest time rows came at, and the series they were of when the
/// row source cannot list them (empty otherwise).
struct Open {
    since: u64,
    series: IdSet,
}

/// Path of a writer's checkpoint.
pub fn checkpoint_path(job: &str, worker: usize, tier: Tier) -> String {
    format!("_tidemark/checkpoints/{job}-w{worker}-{}.json", tier.name())
}

/// The `sealed_through` marks of a job's writer checkpoints whose file name ends with
/// `suffix` (`None` for one that cannot be read); `None` when the store cannot be listed.
fn sealed_marks(store: &ColdStore, job: &str, suffix: &str) -> Option<Vec<Option<i64>>> {
    let list = store.list("_tidemark/checkpoints").ok()?;
    let prefix = format!("{job}-w");
    let marks = list
        .into_iter()
        .map(|meta| meta.location.to_string())
        .filter(|path| {
            let name = path.rsplit('/').next().unwrap_or_default();
            name.starts_with(&prefix) && name.ends_with(suffix)
        })
        .map(|path| {
            store
                .get_bytes(&path)
                .ok()
                .flatten()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["sealed_through"].as_i64())
        })
        .collect();
    Some(marks)
}

/// The lowest `sealed_through` over a job's writer checkpoints (`i64::MIN` when there is none
/// or the store cannot be read): log data older than this is in files.
pub fn sealed_through_all(store: &ColdStore, job: &str) -> i64 {
    sealed_marks(store, job, ".json")
        .and_then(|m| m.into_iter().map(|v| v.unwrap_or(i64::MIN)).min())
        .unwrap_or(i64::MIN)
}

/// The lowest `sealed_through` over the checkpoints of a job's writers of one tier; `None` when
/// there is none or one cannot be read (a caller must then assume nothing is sealed).
pub fn sealed_through_tier(store: &ColdStore, job: &str, tier: Tier) -> Option<i64> {
    let marks = sealed_marks(store, job, &format!("-{}.json", tier.name()))?;
    marks
        .into_iter()
        .collect::<Option<Vec<i64>>>()?
        .into_iter()
        .min()
}

struct Buffer<R> {
    rows: Vec<R>,
    /// The earliest time rows were accepted at: what the sink's capability must hold.
    since: u64,
    /// Parts of this buffer already written (see [`LATE_PART_BYTES`]).
    parts: i64,
    /// Labels of the buffered series, taken when their rows arrived (the hot index may have
    /// dropped a series by the time its partition is sealed). A series whose definition has
    /// not reached the catalog yet (it travels on another stream) is looked up again when the
    /// partition is written.
    names: IdMap<Labels>,
}

impl<R: ColdRow> Buffer<R> {
    fn new(t: u64) -> Self {
        Buffer {
            rows: Vec::new(),
            since: t,
            parts: 0,
            names: IdMap::default(),
        }
    }

    /// Adds rows, with the labels of their series where the catalog has them already.
    fn extend(&mut self, run: &[R], labels: &LabelLookup) {
        self.rows.extend_from_slice(run);
        for r in run {
            if let std::collections::hash_map::Entry::Vacant(e) = self.names.entry(r.series()) {
                if let Some(l) = labels(r.series()) {
                    e.insert(l);
                }
            }
        }
    }

    /// `rows` (taken from this buffer) and their labels: series still unknown are looked up
    /// once more, and rows of series the catalog never learned are left out; returns how many.
    fn resolved(&self, mut rows: Vec<R>, labels: &LabelLookup) -> (Vec<R>, IdMap<Labels>, u64) {
        let mut names: IdMap<Labels> = IdMap::default();
        let mut unknown = IdSet::default();
        for r in &rows {
            let id = r.series();
            if !names.contains_key(&id) && !unknown.contains(&id) {
                match self.names.get(&id).cloned().or_else(|| labels(id)) {
                    Some(l) => {
                        names.insert(id, l);
                    }
                    None => {
                        unknown.insert(id);
                    }
                }
            }
        }
        let before = rows.len();
        if !unknown.is_empty() {
            rows.retain(|r| !unknown.contains(&r.series()));
        }
        let dropped = (before - rows.len()) as u64;
        (rows, names, dropped)
    }
}

/// Writes one tier of one worker; see the module documentation.
pub struct TierWriter<R: ColdRow> {
    tier: Tier,
    job: String,
    worker: usize,
    lateness: i64,
    store: Arc<ColdStore>,
    labels: LabelLookup,
    source: RowSource<R>,
    /// Holds in the row source what is not in files yet (see [`TierWriter::pin`]).
    pin: Option<Arc<std::sync::atomic::AtomicI64>>,
    /// Where the oldest send time of a buffered correction is published (see
    /// [`TierWriter::late_since`]).
    late_since: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// Open partitions by start.
    open: BTreeMap<i64, Open>,
    /// Corrections by (window of send time, partition start).
    late: BTreeMap<(i64, i64), Buffer<R>>,
    /// Rows per correction part ([`LATE_PART_BYTES`]).
    part_rows: usize,
    sealed_through: i64,
    /// Rows dropped because the checkpoint says they are stored already.
    pub skipped: u64,
    /// Rows dropped because the catalog never learned their series (reported, never expected:
    /// a definition reaches the catalog before the frontier passes its first sample).
    pub unlabelled: u64,
    /// What `tidemark_memory_bytes{component="cold_writers"}` has of this writer.
    reported: Reported,
}

impl<R: ColdRow> TierWriter<R> {
    /// A writer resuming from its checkpoint in `store`, writing sealed partitions from
    /// `source`.
    pub fn new(
        tier: Tier,
        job: &str,
        worker: usize,
        lateness: i64,
        store: Arc<ColdStore>,
        labels: LabelLookup,
        source: RowSource<R>,
    ) -> Result<Self, ColdError> {
        let path = checkpoint_path(job, worker, tier);
        let sealed_through = store
            .retrying(&format!("reading checkpoint {path}"), || {
                store.get_bytes(&path)
            })?
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["sealed_through"].as_i64())
            .unwrap_or(i64::MIN);
        // What a killed predecessor was writing is written again (its partition is after
        // `sealed_through`): its unfinished upload goes.
        store.remove_unfinished(
            &format!("tier={}", tier.name()),
            &format!("part-{job}-w{worker}-"),
        );
        Ok(TierWriter {
            tier,
            job: job.into(),
            worker,
            lateness: lateness.max(0),
            store,
            labels,
            source,
            pin: None,
            late_since: None,
            open: BTreeMap::new(),
            late: BTreeMap::new(),
            part_rows: (LATE_PART_BYTES / std::mem::size_of::<R>().max(1)).max(1),
            sealed_through,
            skipped: 0,
            unlabelled: 0,
            reported: Reported::new(Component::ColdWriters),
        })
    }

    /// Keeps the rows this writer has not written in the row source: `pin` is set to the
    /// start of the oldest partition that may still be open (from `sealed_through`).
    pub fn pin(mut self, pin: Arc<std::sync::atomic::AtomicI64>) -> Self {
        self.pin = Some(pin);
        self.update_pin();
        self
    }

    /// Publishes the oldest send time of the corrections it buffers (`u64::MAX`: none): a
    /// checkpoint cut must replay the records they came from, since corrections are written
    /// only when the correction window they were sent in ends (see [`crate::job::cut`]).
    pub fn late_since(mut self, at: Arc<std::sync::atomic::AtomicU64>) -> Self {
        self.late_since = Some(at);
        self.account();
        self
    }

    fn update_pin(&self) {
        if let Some(p) = &self.pin {
            let v = self
                .sealed_through
                .saturating_sub(self.lateness)
                .saturating_sub(self.tier.partition_width());
            p.store(v, std::sync::atomic::Ordering::Release);
        }
    }

    /// Reports the bytes the open series sets and late buffers hold.
    fn account(&mut self) {
        let row = std::mem::size_of::<R>() as i64;
        let now: i64 = self
            .open
            .values()
            .map(|o| o.series.capacity() as i64 * hash_slot(8))
            .chain(self.late.values().map(|b| {
                b.rows.capacity() as i64 * row + b.names.capacity() as i64 * hash_slot(16)
            }))
            .sum();
        self.reported.set(now);
        if let Some(l) = &self.late_since {
            let since = self
                .late
                .values()
                .map(|b| b.since)
                .min()
                .unwrap_or(u64::MAX);
            l.store(since, std::sync::atomic::Ordering::Release);
        }
    }

    /// Writes the full parts of the correction buffer `key` (window, partition start): each
    /// exactly [`TierWriter::part_rows`] rows, in arrival order. A part that cannot be written
    /// stays in the buffer (written with the rest when the window ends, or retried with the
    /// next part).
    fn write_parts(&mut self, key: (i64, i64)) {
        let p = self.tier.partition(key.1);
        while let Some(mut buf) = self.late.remove(&key) {
            if buf.rows.len() < self.part_rows || buf.parts + 1 >= CORRECTION_WINDOW_MS {
                self.late.insert(key, buf);
                return;
            }
            let rest = buf.rows.split_off(self.part_rows);
            let part = std::mem::replace(&mut buf.rows, rest);
            let kind = FileKind::Correction(key.0 + buf.parts);
            match self.write(p, kind, &buf, part.clone()) {
                Ok(()) => buf.parts += 1,
                Err(e) => {
                    tracing::info!(
                        "cold tier {} (job {}, worker {}): {e}; the part is kept and written later",
                        self.tier,
                        self.job,
                        self.worker
                    );
                    let rest = std::mem::replace(&mut buf.rows, part);
                    buf.rows.extend(rest);
                    self.late.insert(key, buf);
                    return;
                }
            }
            self.late.insert(key, buf);
        }
    }

    /// Sets how many rows a correction part holds (tests; the default is
    /// [`LATE_PART_BYTES`] of rows).
    pub fn late_part_rows(mut self, rows: usize) -> Self {
        self.part_rows = rows.max(1);
        self
    }

    /// Time through which everything is in files (from the checkpoint and this run).
    pub fn sealed_through(&self) -> i64 {
        self.sealed_through
    }

    fn seal_of(&self, p: &Partition) -> i64 {
        p.end().saturating_add(self.lateness)
    }

    /// Writes `rows` of a correction buffer as the file of `kind`.
    fn write(
        &mut self,
        p: Partition,
        kind: FileKind,
        buf: &Buffer<R>,
        rows: Vec<R>,
    ) -> Result<(), ColdError> {
        let path = p.file(&self.job, self.worker, kind);
        let (mut rows, known, dropped) = buf.resolved(rows, &self.labels);
        if dropped > 0 {
            self.unlabelled += dropped;
            tracing::warn!(
                "cold tier {} (job {}): {dropped} rows of series the catalog never learned were not written to {path} ({} so far)",
                self.tier, self.job, self.unlabelled
            );
        }
        if rows.is_empty() {
            return Ok(());
        }
        let names = sort_dedup(&mut rows, &|id| known.get(&id).cloned()).map_err(|source| {
            ColdError::Parquet {
                path: path.clone(),
                source,
            }
        })?;
        let rows = R::into_rows(rows);
        self.store.retrying(&format!("writing {path}"), || {
            self.store.write_file(&path, self.tier, &rows, &names)
        })?;
        Ok(())
    }

    /// Writes an open partition's file from the row source: series in file order (metric,
    /// id), a record batch of about [`BATCH_ROWS`] rows at a time.
    fn write_open(&mut self, p: Partition, open: &Open) -> Result<(), ColdError> {
        let path = p.file(&self.job, self.worker, FileKind::Main);
        let series = match &self.source.series {
            Some(list) => list(p.start, p.end()),
            None => open.series.iter().copied().collect(),
        };
        let mut order: SeriesOrder = Vec::with_capacity(series.len());
        let mut unknown = 0u64;
        for id in series {
            match (self.labels)(id) {
                Some(l) => order.push((id, l)),
                None => unknown += 1,
            }
        }
        if unknown > 0 {
            self.unlabelled += unknown;
            tracing::warn!(
                "cold tier {} (job {}): {unknown} series the catalog never learned were not written to {path} ({} so far)",
                self.tier, self.job, self.unlabelled
            );
        }
        order.sort_by(|a, b| {
            let (ma, mb) = (
                a.1.metric_name().unwrap_or(""),
                b.1.metric_name().unwrap_or(""),
            );
            ma.cmp(mb).then(a.0.cmp(&b.0))
        });
        let (tier, source) = (self.tier, Arc::clone(&self.source.rows));
        let (start, end) = (p.start, p.end());
        self.store.retrying(&format!("writing {path}"), || {
            let mut next_series = 0usize;
            let mut rows: Vec<R> = Vec::new();
            let mut next = || -> Result<_, parquet_io::ParquetError> {
                rows.clear();
                let first = next_series;
                while next_series < order.len() && rows.len() < BATCH_ROWS {
                    source(order[next_series].0, start, end, &mut rows);
                    next_series += 1;
                }
                if rows.is_empty() {
                    return Ok(None);
                }
                let names = &order[first..next_series];
                let batch = parquet_io::to_batch(tier, &R::to_rows(&rows), names)?;
                Ok(Some(batch))
            };
            self.store.write_file_batches(&path, tier, &mut next)
        })?;
        Ok(())
    }

    /// Writes everything the frontier `f` completes; returns the number of files written.
    pub fn flush(&mut self, f: i64) -> Result<usize, ColdError> {
        let mut files = 0;
        let ready: Vec<i64> = self
            .open
            .keys()
            .copied()
            .filter(|&s| self.seal_of(&self.tier.partition(s)) <= f)
            .collect();
        for s in ready {
            let p = self.tier.partition(s);
            let open = self.open.remove(&s).expect("listed");
            if let Err(e) = self.write_open(p, &open) {
                self.open.insert(s, open);
                return Err(e);
            }
            files += 1;
        }
        let ready: Vec<(i64, i64)> = self
            .late
            .keys()
            .copied()
            .filter(|&(w, _)| w + CORRECTION_WINDOW_MS <= f)
            .collect();
        for k in ready {
            let p = self.tier.partition(k.1);
            let mut buf = self.late.remove(&k).expect("listed");
            let rows = std::mem::take(&mut buf.rows);
            let kind = FileKind::Correction(k.0 + buf.parts);
            if let Err(e) = self.write(p, kind, &buf, rows.clone()) {
                buf.rows = rows;
                self.late.insert(k, buf);
                return Err(e);
            }
            files += 1;
        }
        if f > self.sealed_through {
            // Nothing before `f` is still buffered: record it (after the files).
            let min_open = self
                .open
                .keys()
                .map(|&s| self.seal_of(&self.tier.partition(s)))
                .chain(self.late.keys().map(|&(w, _)| w + CORRECTION_WINDOW_MS))
                .min()
                .unwrap_or(i64::MAX);
            let through = f.min(min_open);
            if through > self.sealed_through && (files > 0 || self.sealed_through == i64::MIN) {
                let path = checkpoint_path(&self.job, self.worker, self.tier);
                let body = serde_json::to_vec(&serde_json::json!({
                    "job": self.job,
                    "worker": self.worker,
                    "tier": self.tier.name(),
                    "sealed_through": through,
                }))
                .expect("json");
                self.store.retrying(&format!("writing {path}"), || {
                    self.store.put_bytes(&path, body.clone())
                })?;
                self.sealed_through = through;
                self.update_pin();
            }
        }
        Ok(files)
    }
}

impl<R: ColdRow> TierSink<R> for TierWriter<R> {
    fn accept(&mut self, time: u64, data: &[R]) {
        let t = time.min(i64::MAX as u64) as i64;
        // Rows of a batch mostly share a partition: decide and find the buffer once per run.
        let mut i = 0;
        while i < data.len() {
            let p = self.tier.partition(data[i].time());
            let mut j = i + 1;
            while j < data.len() && self.tier.partition(data[j].time()) == p {
                j += 1;
            }
            let run = &data[i..j];
            i = j;
            let seal = self.seal_of(&p);
            let buf = if t < seal {
                if seal <= self.sealed_through {
                    self.skipped += run.len() as u64;
                    continue;
                }
                let open = self.open.entry(p.start).or_insert_with(|| Open {
                    since: time,
                    series: IdSet::default(),
                });
                // Batches can arrive out of time order (from several upstream workers).
                open.since = open.since.min(time);
                if self.source.series.is_none() {
                    open.series.extend(run.iter().map(|r| r.series()));
                }
                continue;
            } else {
                let window = t.div_euclid(CORRECTION_WINDOW_MS) * CORRECTION_WINDOW_MS;
                if window + CORRECTION_WINDOW_MS <= self.sealed_through {
                    self.skipped += run.len() as u64;
                    continue;
                }
                self.late
                    .entry((window, p.start))
                    .or_insert_with(|| Buffer::new(time))
            };
            // Batches can arrive out of time order (from several upstream workers).
            buf.since = buf.since.min(time);
            buf.extend(run, &self.labels);
            if buf.rows.len() >= self.part_rows {
                let key = (
                    t.div_euclid(CORRECTION_WINDOW_MS) * CORRECTION_WINDOW_MS,
                    p.start,
                );
                self.write_parts(key);
            }
        }
        self.account();
    }

    fn advance(&mut self, frontier: u64) {
        let f = frontier.min(i64::MAX as u64) as i64;
        let res = self.flush(f);
        self.account();
        if let Err(e) = res {
            // Only a stop (shutdown) ends the retries: the buffers stay, the log or Kafka
            // offsets still hold the data, and the next run writes it.
            tracing::info!(
                "cold tier {} (job {}, worker {}): {e}",
                self.tier,
                self.job,
                self.worker
            );
        }
    }

    fn pending_since(&self) -> Option<u64> {
        self.open
            .values()
            .map(|o| o.since)
            .chain(self.late.values().map(|b| b.since))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::cold::parquet_io::{Decoded, RowFilter};
    use tidemark_dataflows::Sample;

    fn labels() -> LabelLookup {
        Arc::new(|id| {
            Some(Labels::from_pairs([
                (
                    "__name__",
                    if id % 2 == 0 { "cpu" } else { "mem" }.to_string(),
                ),
                ("host", format!("h{id}")),
            ]))
        })
    }

    fn read_all(store: &ColdStore, tier: Tier) -> Vec<(String, Vec<Sample>)> {
        let mut out = Vec::new();
        let mut metas = store.list(&format!("tier={}", tier.name())).unwrap();
        metas.sort_by(|a, b| a.location.cmp(&b.location));
        for m in metas {
            let mut d = Decoded::default();
            store
                .read_file(&m, tier, &RowFilter::all(), &mut d)
                .unwrap();
            out.push((m.location.to_string(), d.samples));
        }
        out
    }

    /// A writer whose rows come from `hot`, and a way to send rows to both, as the job does
    /// (the hot sink applies what the writer is told about). The writer lists its series in
    /// `hot` as worker 0 of 1 (as in `tidemark up`).
    fn writer(
        store: &Arc<ColdStore>,
        hot: &Arc<HotIndex>,
        lateness: i64,
        labels: LabelLookup,
    ) -> TierWriter<Sample> {
        writer_of(store, hot, lateness, labels, Some((0, 1)))
    }

    /// As [`writer`], for worker `owner` (`None`: one that remembers the series it is sent).
    fn writer_of(
        store: &Arc<ColdStore>,
        hot: &Arc<HotIndex>,
        lateness: i64,
        labels: LabelLookup,
        owner: Option<(usize, usize)>,
    ) -> TierWriter<Sample> {
        let worker = owner.map_or(0, |o| o.0);
        TierWriter::<Sample>::new(
            Tier::Raw,
            "j",
            worker,
            lateness,
            Arc::clone(store),
            labels,
            hot_samples(hot, owner),
        )
        .unwrap()
    }

    fn send(w: &mut TierWriter<Sample>, hot: &HotIndex, t: i64, rows: &[Sample]) {
        hot.append_samples(rows);
        w.accept(t as u64, rows);
    }

    fn new_hot() -> Arc<HotIndex> {
        Arc::new(HotIndex::new(i64::MAX / 4))
    }

    const H: i64 = crate::store::cold::layout::HOUR_MS;
    const BASE: i64 = 1_795_305_600_000; // 2026-11-22T00:00Z

    #[test]
    fn seals_on_the_frontier_corrects_late_rows_and_resumes_without_copies() {
        // A writer listing its series in the index, and one remembering those it was sent.
        for owner in [Some((0, 1)), None] {
            seals_on_the_frontier(owner);
        }
    }

    fn seals_on_the_frontier(owner: Option<(usize, usize)>) {
        let store = Arc::new(ColdStore::open("memory://").unwrap());
        let hot = new_hot();
        let mk = |store: &Arc<ColdStore>| writer_of(store, &hot, 60_000, labels(), owner);
        let s = |series, ts, value| Sample { series, ts, value };
        let mut w = mk(&store);
        send(
            &mut w,
            &hot,
            BASE,
            &[s(1, BASE + 10, 1.0), s(2, BASE + 20, 2.0)],
        );
        send(
            &mut w,
            &hot,
            BASE + 5,
            &[s(1, BASE + 10, 1.5), s(2, BASE + H + 1, 3.0)],
        );
        w.advance((BASE + H) as u64);
        assert!(
            read_all(&store, Tier::Raw).is_empty(),
            "not sealed before lateness"
        );
        assert_eq!(w.pending_since(), Some(BASE as u64));
        w.advance((BASE + H + 60_000) as u64);
        let files = read_all(&store, Tier::Raw);
        assert_eq!(files.len(), 1);
        assert_eq!(
            files[0].0,
            "tier=raw/date=2026-11-22/hour=00/part-j-w0-m.parquet"
        );
        // Sorted by metric (cpu < mem), then series, then time; the later write of (1, 10) wins.
        assert_eq!(files[0].1, vec![s(2, BASE + 20, 2.0), s(1, BASE + 10, 1.5)]);
        // A late row for the sealed hour, sent during hour 2: its own file once the correction
        // window it was sent in ends, not before.
        send(&mut w, &hot, BASE + 2 * H + 5, &[s(1, BASE + 30, 9.0)]);
        w.advance((BASE + 2 * H + CORRECTION_WINDOW_MS - 1) as u64);
        assert_eq!(read_all(&store, Tier::Raw).len(), 2);
        w.advance((BASE + 3 * H) as u64);
        let files = read_all(&store, Tier::Raw);
        assert_eq!(files.len(), 3, "{files:?}");
        assert!(files[0]
            .0
            .ends_with(&format!("part-j-w0-c{}.parquet", BASE + 2 * H)));
        assert_eq!(files[0].1, vec![s(1, BASE + 30, 9.0)]);
        let sealed = w.sealed_through();
        assert_eq!(sealed, BASE + 3 * H);

        // A restart replays the same input: stored rows are skipped, nothing is rewritten
        // twice, and new rows still get written.
        let before = store.list("").unwrap().len();
        let mut w = mk(&store);
        assert_eq!(w.sealed_through(), sealed);
        w.accept(BASE as u64, &[s(1, BASE + 10, 1.0), s(2, BASE + 20, 2.0)]);
        w.accept((BASE + 2 * H + 5) as u64, &[s(1, BASE + 30, 9.0)]);
        send(&mut w, &hot, BASE + 3 * H, &[s(3, BASE + 3 * H + 7, 4.0)]);
        assert_eq!(w.skipped, 3);
        w.advance((BASE + 4 * H + 60_000) as u64);
        assert_eq!(store.list("").unwrap().len(), before + 1);
        assert_eq!(w.pending_since(), None);
    }

    /// Workers sharing one index (`tidemark up`'s job) each write the series timely's exchange
    /// sends them, listed in the index: every series once, in its owner's file, and the series
    /// the index has only from another worker never in this one's.
    #[test]
    fn workers_listing_their_series_in_a_shared_index_write_each_series_once() {
        let store = Arc::new(ColdStore::open("memory://").unwrap());
        let hot = new_hot();
        let peers = 3;
        let mut ws: Vec<_> = (0..peers)
            .map(|i| writer_of(&store, &hot, 0, labels(), Some((i, peers))))
            .collect();
        let rows: Vec<Sample> = (1..=20u64)
            .map(|id| Sample {
                series: id * 1_000_003,
                ts: BASE + id as i64,
                value: id as f64,
            })
            .collect();
        hot.append_samples(&rows);
        // Each worker is sent its own rows only, as the exchange does.
        for (i, w) in ws.iter_mut().enumerate() {
            let mine: Vec<Sample> = rows
                .iter()
                .copied()
                .filter(|r| worker_of(r.series, peers) == i)
                .collect();
            w.accept(BASE as u64, &mine);
        }
        for w in &mut ws {
            w.advance((BASE + H) as u64);
        }
        let files = read_all(&store, Tier::Raw);
        assert_eq!(files.len(), peers);
        let mut all = Vec::new();
        for (path, samples) in &files {
            let i: usize = path.rsplit("-w").next().unwrap()[..1].parse().unwrap();
            assert!(
                samples.iter().all(|r| worker_of(r.series, peers) == i),
                "{path}"
            );
            all.extend(samples.iter().copied());
        }
        all.sort_by_key(|r| r.series);
        assert_eq!(all, rows);
    }

    /// A flood of late rows (a backlog replayed behind the watermark) is written in parts of a
    /// fixed row count as it comes, not held until its correction window ends; a replay of the
    /// window after a crash writes the same parts again, with no extra file.
    #[test]
    fn a_flood_of_late_rows_is_written_in_parts_and_replays_to_the_same_files() {
        let store = Arc::new(ColdStore::open("memory://").unwrap());
        let hot = new_hot();
        let mk = |store: &Arc<ColdStore>| writer(store, &hot, 0, labels()).late_part_rows(10);
        let s = |series, ts, value| Sample { series, ts, value };
        let mut w = mk(&store);
        send(&mut w, &hot, BASE, &[s(1, BASE + 1, 1.0)]);
        w.advance((BASE + H) as u64);
        assert_eq!(read_all(&store, Tier::Raw).len(), 1);
        // 35 late rows for hour 0, sent in hour 2 in batches of 7.
        let late: Vec<Sample> = (0..35)
            .map(|i| s(1 + i % 5, BASE + 100 + i as i64, i as f64))
            .collect();
        let t = BASE + 2 * H + 5;
        for batch in late.chunks(7) {
            send(&mut w, &hot, t, batch);
            // Never more than a part's rows held.
            assert!(w.late.values().all(|b| b.rows.len() < 10));
        }
        let files = read_all(&store, Tier::Raw);
        assert_eq!(files.len(), 4, "three full parts before the window ends");
        // Killed before the window ends: the checkpoint does not cover it, so a new writer
        // gets the window's rows again, in another order.
        drop(w);
        let mut w = mk(&store);
        for batch in late.chunks(7).rev() {
            w.accept(t as u64, batch);
        }
        w.advance((BASE + 2 * H + CORRECTION_WINDOW_MS) as u64);
        let files = read_all(&store, Tier::Raw);
        let names: Vec<String> = files
            .iter()
            .map(|f| f.0.rsplit('/').next().unwrap().to_string())
            .collect();
        let w0 = BASE + 2 * H;
        assert_eq!(
            names,
            vec![
                format!("part-j-w0-c{w0}.parquet"),
                format!("part-j-w0-c{}.parquet", w0 + 1),
                format!("part-j-w0-c{}.parquet", w0 + 2),
                format!("part-j-w0-c{}.parquet", w0 + 3),
                "part-j-w0-m.parquet".to_string(),
            ]
        );
        let mut got: Vec<Sample> = files[..4].iter().flat_map(|f| f.1.clone()).collect();
        assert_eq!(files[..3].iter().map(|f| f.1.len()).sum::<usize>(), 30);
        got.sort_by_key(|a| (a.series, a.ts));
        let mut want = late.clone();
        want.sort_by_key(|a| (a.series, a.ts));
        assert_eq!(got, want);
        assert_eq!(w.pending_since(), None);
    }

    /// In the cluster a series' definition travels apart from its samples: a row whose labels
    /// the catalog learns after the row arrived is written with them; a row whose series the
    /// catalog never learns is counted and left out, and the rest of the file is written.
    #[test]
    fn labels_learned_after_the_rows_arrived_are_used_when_the_partition_is_written() {
        let store = Arc::new(ColdStore::open("memory://").unwrap());
        let known = Arc::new(std::sync::Mutex::new(vec![1u64]));
        let k = Arc::clone(&known);
        let all = labels();
        let lookup: LabelLookup =
            Arc::new(move |id| k.lock().unwrap().contains(&id).then(|| all(id)).flatten());
        let hot = new_hot();
        let mut w = writer(&store, &hot, 0, lookup);
        let s = |series, ts, value| Sample { series, ts, value };
        send(
            &mut w,
            &hot,
            BASE,
            &[
                s(1, BASE + 1, 1.0),
                s(3, BASE + 2, 3.0),
                s(5, BASE + 3, 5.0),
            ],
        );
        known.lock().unwrap().push(3);
        w.advance((BASE + H) as u64);
        let files = read_all(&store, Tier::Raw);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].1, vec![s(1, BASE + 1, 1.0), s(3, BASE + 2, 3.0)]);
        assert_eq!(w.unlabelled, 1);
        assert_eq!(w.pending_since(), None);
    }

    #[test]
    fn pending_since_is_the_earliest_time_rows_came_at() {
        // Batches from several upstream workers reach a sink out of time order: the sink must
        // hold the earliest (the Kafka commit path waits on it), not the first it saw.
        let store = Arc::new(ColdStore::open("memory://").unwrap());
        let mut w = writer(&store, &new_hot(), 60_000, labels());
        let s = |ts| Sample {
            series: 1,
            ts,
            value: 1.0,
        };
        w.accept((BASE + 50) as u64, &[s(BASE + 60)]);
        w.accept((BASE + 10) as u64, &[s(BASE + 20)]);
        assert_eq!(w.pending_since(), Some((BASE + 10) as u64));
    }
}

//! The worker cluster: `tidemark worker` processes form one timely cluster (timely's own
//! `Config::Cluster`); jobs are submitted to worker 0's control API and sequenced to every
//! worker through a command dataflow (timely's `Sequencer`), so all workers build the same
//! dataflows in the same order.
//!
//! | module | owns |
//! |---|---|
//! | [`spec`] | job specs (`jobs/*.toml`) and their validation against `schemas/job.schema.json` |
//! | [`crate::jsonschema`] | the JSON Schema subset validator |
//! | [`source`] | the Kafka source of a job: consumer, local WAL, offset commits, bindings |
//! | [`checkpoint`] | checkpoints of a process's hot index, the cluster's safe time, WAL truncation |
//! | [`crate::process::worker`] | one process of the cluster: timely workers, commands, job dataflows |
//! | [`control`] | the HTTP side: control API, query fan-out over the processes |
//! | [`client`] | `tidemark submit / jobs / cancel / replay` |
//!
//! ## Durability and replay
//! A job's source writes every message it takes from Kafka to a local write-ahead log
//! (`<data_dir>/jobs/<job>/wal/w<worker>`) before sending it into the dataflow. Every second it
//! fsyncs the WAL and commits to the consumer group the offsets whose samples every sink has
//! applied (a probe on the sinks' outputs has passed the time they were sent at). On restart,
//! each source replays its WAL into the hot index (the newest checkpoint's, or empty) and
//! resumes Kafka where the WAL ends (never before the committed offset). Sinks are idempotent
//! (same series and timestamp, or same series and window, overwrite), so re-read messages are
//! not duplicates. Checkpoints ([`checkpoint`]) let each WAL drop what every process's
//! checkpoints hold: it keeps minutes, not the hot retention.
//!
//! At each commit the source also records a *binding* `(partition, next offset, newest event
//! time before it)`; bindings go through the command sequencer to every process, which keeps
//! them in `<data_dir>/jobs/<job>/bindings.jsonl`. `replay --from-time T` turns T into, per
//! partition, the last binding whose newest event time is before T (so every message with
//! event time >= T is at or after it), without the broker's `offsets_for_times`.
//!
//! A timely cluster is static: when a process dies, the others stop (a worker process exits on
//! the first panic of any of its threads); restart all of them and they resume as above.

pub mod checkpoint;
pub mod client;
pub mod control;
pub mod source;
pub mod spec;

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Commands every worker sees in the same order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    /// Start (or restart) a job from its spec (TOML text, already validated), with the text of
    /// its rule files as process 0 read them (`(path, text)`), so every worker compiles the
    /// same incremental rule plans.
    Submit {
        spec: String,
        #[serde(default)]
        rules: Vec<(String, String)>,
    },
    /// Stop a job and forget it.
    Cancel { name: String },
    /// Restart a job's dataflow from these offsets `(topic index, partition, offset)`;
    /// partitions not listed start from their committed offsets. Rollups are rebuilt for
    /// windows starting at or after `rollups_from` (ms).
    Replay {
        name: String,
        offsets: Vec<(usize, i32, i64)>,
        rollups_from: i64,
    },
    /// Offsets a source made durable, with the newest event time before each.
    Bindings { job: String, entries: Vec<Binding> },
}

/// `(topic index, partition, next offset, newest event time before it, wall ms when made)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub topic: usize,
    pub partition: i32,
    pub offset: i64,
    pub max_ts: i64,
    pub at_ms: i64,
}

/// What one partition's owner reports.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    pub worker: usize,
    /// Next offset to read.
    pub position: i64,
    /// The broker's high watermark (-1 until known).
    pub high: i64,
    /// Last committed offset.
    pub committed: i64,
    /// Newest event time seen (ms).
    pub max_ts: i64,
    pub malformed: u64,
    /// Offset and reason of the last malformed message.
    pub last_malformed: Option<(i64, String)>,
}

/// One job as this process sees it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JobStatus {
    pub name: String,
    /// `running`, `replaying` (catching up after a replay) or `cancelled`.
    pub state: String,
    /// Dataflow incarnation: 1 at submit, +1 per replay or restart.
    pub epoch: u64,
    pub spec: String,
    /// Per local worker: the capability its source holds (ms).
    pub watermarks: BTreeMap<usize, u64>,
    pub partitions: BTreeMap<String, PartitionStatus>,
    pub samples: u64,
    pub late_accepted: u64,
    pub late_dropped: u64,
    pub wal_records_replayed: u64,
    pub replay_target: BTreeMap<String, i64>,
    /// What this run cannot do, e.g. a cold store a worker could not open.
    #[serde(default)]
    pub problems: Vec<String>,
    /// Local workers whose source has replayed its WAL and is assigned its Kafka partitions
    /// (the process's readiness waits for all of them).
    #[serde(default)]
    pub ready_workers: std::collections::BTreeSet<usize>,
}

impl JobStatus {
    /// The job's watermark: the least over its sources' capabilities.
    pub fn watermark(&self) -> u64 {
        self.watermarks.values().copied().min().unwrap_or(0)
    }

    /// Messages behind the brokers' high watermarks, summed over partitions.
    pub fn lag(&self) -> i64 {
        self.partitions
            .values()
            .filter(|p| p.high >= 0 && p.position >= 0)
            .map(|p| (p.high - p.position).max(0))
            .sum()
    }
}

/// Status of all jobs in this process.
#[derive(Default)]
pub struct Registry {
    pub jobs: Mutex<BTreeMap<String, JobStatus>>,
}

impl Registry {
    pub fn with<R>(&self, job: &str, f: impl FnOnce(&mut JobStatus) -> R) -> Option<R> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.get_mut(job).map(f)
    }

    /// Like [`Registry::with`], only while `epoch` is the job's current epoch (a stopped
    /// dataflow's source must not overwrite its successor's status).
    pub fn with_epoch<R>(
        &self,
        job: &str,
        epoch: u64,
        f: impl FnOnce(&mut JobStatus) -> R,
    ) -> Option<R> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.get_mut(job).filter(|j| j.epoch == epoch).map(f)
    }
}

//! `tidemark worker`: one process of a timely cluster.
//!
//! Every worker thread runs the same loop: feed commands into timely's `Sequencer` (worker 0
//! feeds what its control API received; every source feeds its bindings), apply the sequenced
//! commands in order (build, stop or rebuild job dataflows), step the dataflows. Because every
//! worker applies the same commands in the same order, all build the same dataflows in the
//! same order, as timely requires.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, Concatenate, Exchange, Probe};
use timely::synchronization::Sequencer;
use timely::WorkerConfig;

use tidemark_dataflows::incremental::{leaf_values, rule_results, sink_results, Lookup};
use tidemark_dataflows::partitioned::{partitioned_source, PartitionWatermarks};
use tidemark_dataflows::sink::{sink_rollups, sink_samples, sink_series, SeriesSink};
use tidemark_dataflows::stored::rollups_from_store;
use tidemark_dataflows::tier::sink_tier;
use tidemark_dataflows::{Rollup, Sample};
use timely::dataflow::operators::generic::operator::empty;

use crate::alert::eval::{RuleConfig, RuleEvaluator, Rules};
use crate::alert::kafka::{KafkaAlertSink, KafkaSeriesWriter};
use crate::cluster::checkpoint::{ReplayPoint, WorkerCheckpoints};
use crate::cluster::control::{router, ControlState, JobRules};
use crate::cluster::source::{KafkaJobSource, SourceCtx};
use crate::cluster::spec::JobSpec;
use crate::cluster::{Binding, Command, JobStatus, Registry};
use crate::config::KafkaConfig;
use crate::config::Role;
use crate::job::checkpoint::CheckpointStats;
use crate::job::seed::{self, SeedPlan, SeedRec};
use crate::job::HOUR_MS;
use crate::model::Limits;
use crate::ops::Metrics;
use crate::query::fanout::{ClusterStorage, PEER_TOKEN};
use crate::store::cold::writer::{hot_rollups, hot_samples, LabelLookup, TierWriter};
use crate::store::cold::{ColdError, ColdStore, Tier};
use crate::store::hot::{HotIndex, PinKind};
use tidemark_dataflows::rules::{evaluate_at_ticks, TickConfig};

/// One line of the hosts file: `TIMELY_HOST:PORT HTTP_HOST:PORT` (`#` starts a comment).
#[derive(Clone, Debug)]
pub struct Host {
    pub timely: String,
    pub http: SocketAddr,
}

/// Parses a hosts file; errors name the line.
pub fn parse_hosts(text: &str, origin: &str) -> Result<Vec<Host>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut it = line.split_whitespace();
        let timely = it.next().unwrap_or_default().to_string();
        let http = it.next().ok_or_else(|| {
            format!("{origin} line {}: expected `TIMELY_ADDR HTTP_ADDR` (e.g. `127.0.0.1:2101 127.0.0.1:9471`), got {line:?}", i + 1)
        })?;
        let http: SocketAddr = http
            .parse()
            .map_err(|e| format!("{origin} line {}: HTTP address {http:?}: {e}", i + 1))?;
        if timely.parse::<SocketAddr>().is_err() {
            return Err(format!(
                "{origin} line {}: timely address {timely:?} is not HOST:PORT",
                i + 1
            ));
        }
        out.push(Host { timely, http });
    }
    if out.is_empty() {
        return Err(format!("{origin}: no hosts"));
    }
    Ok(out)
}

/// Options of one worker process.
#[derive(Clone, Debug)]
pub struct WorkerOpts {
    pub process: usize,
    pub hosts: Vec<Host>,
    pub workers: usize,
    pub data_dir: PathBuf,
    pub brokers: String,
    pub limits: Limits,
    pub hot_retention_ms: i64,
    pub auth: crate::config::AuthConfig,
    /// `[checkpoint]`: the hot index checkpointed so that the WALs hold minutes, not the hot
    /// retention (see [`crate::cluster::checkpoint`]).
    pub checkpoint: crate::config::CheckpointConfig,
    /// `[query]`: the limits of this process's query API (its result cache stays off: a
    /// worker's queries fan out to peers whose appends it does not see).
    pub query: crate::config::QueryConfig,
    /// `[ui]`: the dashboards directory the UI lists besides the built-in ones.
    pub ui: crate::config::UiConfig,
    /// The configuration and flags in effect (`/api/v1/status/config`, `flags`).
    pub status: Arc<crate::web::status::ProcessStatus>,
}

/// Process-wide state shared by the worker threads and the HTTP side.
struct Shared {
    opts: WorkerOpts,
    hot: Arc<HotIndex>,
    registry: Arc<Registry>,
    bindings: Arc<Mutex<BTreeMap<String, Vec<Binding>>>>,
    commands: Mutex<Option<mpsc::Receiver<Command>>>,
    /// Cold stores opened by jobs' `[tiers] url`, one per URL in the process.
    cold: Mutex<BTreeMap<String, Arc<ColdStore>>>,
    /// What the query API reads for data older than the hot index: the first store opened.
    query_cold: crate::query::api::ColdSlot,
    /// Jobs' rules (worker 0 evaluates them; kept across a job's restarts and replays).
    rules: Arc<JobRules>,
    /// Checkpoints (`None`: `[checkpoint] interval = "0s"`).
    checkpoints: Option<Arc<WorkerCheckpoints>>,
    /// Per job, the frontier of the checkpoint loaded at start: the job's first run seeds its
    /// state from the index at that time and replays its WALs from their replay points.
    restored: BTreeMap<String, u64>,
    /// A checkpoint was loaded: the index holds an earlier run's data.
    loaded: bool,
}

impl Shared {
    /// The cold store at `url`, opened once per process.
    fn cold_store(&self, url: &str) -> Result<Arc<ColdStore>, ColdError> {
        let mut m = self.cold.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = m.get(url) {
            return Ok(Arc::clone(s));
        }
        let s = Arc::new(ColdStore::open(url)?);
        m.insert(url.to_string(), Arc::clone(&s));
        let _ = self
            .query_cold
            .set(Arc::new(crate::store::cold::query::ColdReader::new(
                Arc::clone(&s),
            )));
        Ok(s)
    }
}

struct Catalog(Arc<HotIndex>);
impl SeriesSink for Catalog {
    fn register(&self, id: u64, canonical: &[u8]) {
        self.0.catalog.register_canonical(id, canonical);
    }
}

fn job_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("jobs").join(name)
}

fn load_bindings(data_dir: &Path) -> BTreeMap<String, Vec<Binding>> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(data_dir.join("jobs")) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(text) = std::fs::read_to_string(e.path().join("bindings.jsonl")) else {
            continue;
        };
        // A torn last line (crash mid-write) is skipped.
        let v: Vec<Binding> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        out.insert(name, v);
    }
    out
}

fn persisted_specs(data_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(data_dir.join("jobs")) else {
        return out;
    };
    let mut dirs: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    dirs.sort();
    for d in dirs {
        if let Ok(text) = std::fs::read_to_string(d.join("spec.toml")) {
            out.push(text);
        }
    }
    out
}

/// A submitted job's command with its rule files' text, read here on process 0 (the rule
/// evaluator's process): every worker compiles its incremental plans from the same text. A
/// file that cannot be read is left out (the evaluator reports it).
fn with_rule_texts(cmd: Command) -> Command {
    let Command::Submit { spec, .. } = cmd else {
        return cmd;
    };
    let rules = JobSpec::parse(&spec, "submitted spec")
        .map(|s| {
            s.rules
                .files
                .iter()
                .filter_map(|p| Some((p.clone(), std::fs::read_to_string(p).ok()?)))
                .collect()
        })
        .unwrap_or_default();
    Command::Submit { spec, rules }
}

/// A running job dataflow on this worker.
struct Running {
    stop: Arc<AtomicBool>,
}

/// One worker thread's own state: its job dataflows, the commands its sources want
/// sequenced, and whether it is its process's first worker (which writes the process's files).
struct Local {
    running: HashMap<String, Running>,
    outbox: Rc<RefCell<Vec<Command>>>,
    first: bool,
    /// Dataflows built per job name: the job's epoch. Every worker applies the same sequenced
    /// commands, so every worker counts the same epochs.
    epochs: HashMap<String, u64>,
    /// Per job, its rule files' text from its last `Submit`.
    rule_texts: HashMap<String, Vec<(String, String)>>,
    /// Job dataflows this worker built: after the first, the hot index holds what an earlier
    /// run wrote (see [`crate::job::minute_windows`]). The same on every worker.
    started: u64,
}

/// Runs a worker process until a worker thread stops (a peer process died) or the process is
/// signalled.
pub fn run(opts: WorkerOpts) -> anyhow::Result<()> {
    // A timely cluster is static: a lost peer makes the communication threads panic. Exit at
    // once so a supervisor restarts every process (they resume from their WALs and offsets).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        tracing::error!("a thread panicked (a peer process is probably gone); exiting so the cluster can be restarted");
        std::process::exit(70);
    }));
    let processes = opts.hosts.len();
    anyhow::ensure!(
        opts.process < processes,
        "--process {} is out of range: the hosts file lists {processes} processes (0..{})",
        opts.process,
        processes - 1
    );
    if let Some(t) = opts.auth.tokens.iter().find(|t| t.role == Role::Admin) {
        let _ = PEER_TOKEN.set(t.token.clone());
    } else if !opts.auth.tokens.is_empty() {
        anyhow::bail!("[auth] tokens has no admin token: worker processes call each other with the first admin token (queries fan out, rules and reloads go to process 0); add one");
    }
    std::fs::create_dir_all(opts.data_dir.join("jobs"))
        .with_context(|| format!("creating {}", opts.data_dir.display()))?;
    // Sealed chunks go to `<data_dir>/chunks`. The index is the newest checkpoint's plus the
    // jobs' WALs after it (the whole WALs without one), so what an earlier run spilled after
    // the checkpoint is not referenced: the replay spills it again.
    let chunks = opts.data_dir.join("chunks");
    drop(
        crate::store::hot::chunkfile::ChunkFiles::open(&chunks)
            .with_context(|| format!("opening the chunk directory {}", chunks.display()))?,
    );
    let fresh = || {
        crate::store::hot::with_chunk_files_or_memory(HotIndex::new(opts.hot_retention_ms), &chunks)
    };
    let url = |h: &Host| format!("http://{}", h.http);
    let peer_urls: Vec<String> = opts
        .hosts
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != opts.process)
        .map(|(_, h)| url(h))
        .collect();
    let ckpt_shape = (opts.hosts.len(), opts.process, opts.workers.max(1));
    let ckpt_stats: Arc<CheckpointStats> = Arc::default();
    let restored = opts
        .checkpoint
        .enabled()
        .then(|| WorkerCheckpoints::restore(&opts.data_dir, ckpt_shape, &ckpt_stats, fresh))
        .flatten();
    let (hot, restored_jobs, loaded) = match restored {
        Some(r) => (
            Arc::new(r.hot),
            r.meta
                .jobs
                .iter()
                .map(|(k, m)| (k.clone(), m.frontier))
                .filter(|(_, f)| *f > 0)
                .collect(),
            true,
        ),
        None => (Arc::new(fresh()), BTreeMap::new(), false),
    };
    hot.remove_unreferenced_chunks();
    let checkpoints = opts.checkpoint.enabled().then(|| {
        Arc::new(WorkerCheckpoints::new(
            &opts.data_dir,
            opts.checkpoint.clone(),
            Arc::clone(&hot),
            ckpt_shape,
            peer_urls.clone(),
            ckpt_stats,
        ))
    });
    {
        // Spill every 2 s; retention every minute.
        let hot = Arc::clone(&hot);
        std::thread::Builder::new()
            .name("tidemark-hot-maintenance".into())
            .spawn(move || {
                for round in 1u64.. {
                    std::thread::sleep(Duration::from_secs(2));
                    hot.spill();
                    if round % 30 == 0 {
                        hot.gc();
                    }
                }
            })
            .context("starting the hot index maintenance thread")?;
    }
    let registry = Arc::new(Registry::default());
    let metrics = Arc::new(Metrics::default());
    let bindings = Arc::new(Mutex::new(load_bindings(&opts.data_dir)));
    let rules: Arc<JobRules> = Arc::default();
    let (tx, rx) = mpsc::channel();
    let shared = Arc::new(Shared {
        opts: opts.clone(),
        hot: Arc::clone(&hot),
        registry: Arc::clone(&registry),
        bindings: Arc::clone(&bindings),
        commands: Mutex::new(Some(rx)),
        cold: Mutex::new(BTreeMap::new()),
        query_cold: Default::default(),
        rules: Arc::clone(&rules),
        checkpoints: checkpoints.clone(),
        restored: restored_jobs,
        loaded,
    });
    if let Some(c) = &checkpoints {
        c.spawn().context("starting the checkpoint thread")?;
    }
    let control = Arc::new(ControlState {
        process: opts.process,
        hot,
        metrics,
        registry,
        peers: peer_urls,
        leader: url(&opts.hosts[0]),
        checkpoints,
        commands: (opts.process == 0).then(|| Mutex::new(tx)),
        bindings,
        brokers: opts.brokers.clone(),
        rules,
        auth: Arc::new(opts.auth.clone()),
        expected_jobs: persisted_specs(&opts.data_dir)
            .iter()
            .filter_map(|text| Some(JobSpec::parse(text, "kept spec").ok()?.name))
            .collect(),
        local_workers: opts.workers.max(1),
        query: opts.query.clone(),
        cold: Arc::clone(&shared.query_cold),
        dashboards: opts.ui.dashboards.clone(),
        status: Arc::clone(&opts.status),
    });
    let listen = opts.hosts[opts.process].http;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(listen))
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(
        "process {} of {processes}, {} workers each; HTTP on http://{listen}; data dir {}",
        opts.process,
        opts.workers,
        opts.data_dir.display()
    );
    rt.spawn(async move {
        if let Err(e) = axum::serve(listener, router(control)).await {
            tracing::error!("HTTP server failed: {e}; this process no longer answers queries or the cluster's calls (restart it)");
            std::process::exit(1);
        }
    });
    let config = timely::Config {
        communication: timely::CommunicationConfig::Cluster {
            threads: opts.workers.max(1),
            process: opts.process,
            addresses: opts.hosts.iter().map(|h| h.timely.clone()).collect(),
            report: false,
            zerocopy: false,
        },
        worker: WorkerConfig::default(),
    };
    let guards = timely::execute(config, move |worker| worker_loop(worker, &shared))
        .map_err(|e| anyhow::anyhow!("starting the timely cluster: {e}"))?;
    for r in guards.join() {
        r.map_err(|e| anyhow::anyhow!("worker failed: {e}"))?;
    }
    Ok(())
}

fn worker_loop(worker: &mut timely::worker::Worker, shared: &Arc<Shared>) {
    let index = worker.index();
    let local_workers = shared.opts.workers.max(1);
    let local_index = index % local_workers;
    let mut seq: Sequencer<Command> = Sequencer::new(worker, Instant::now());
    let rx = if index == 0 {
        shared
            .commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    } else {
        None
    };
    if index == 0 {
        for spec in persisted_specs(&shared.opts.data_dir) {
            seq.push(with_rule_texts(Command::Submit {
                spec,
                rules: Vec::new(),
            }));
        }
    }
    let mut local = Local {
        running: HashMap::new(),
        outbox: Rc::new(RefCell::new(Vec::new())),
        first: local_index == 0,
        epochs: HashMap::new(),
        rule_texts: HashMap::new(),
        started: 0,
    };
    loop {
        if let Some(rx) = &rx {
            while let Ok(c) = rx.try_recv() {
                seq.push(with_rule_texts(c));
            }
        }
        for c in local.outbox.borrow_mut().drain(..) {
            seq.push(c);
        }
        for cmd in seq.by_ref() {
            apply(worker, shared, &mut local, cmd);
        }
        worker.step_or_park(Some(Duration::from_millis(10)));
    }
}

fn apply(
    worker: &mut timely::worker::Worker,
    shared: &Arc<Shared>,
    local: &mut Local,
    cmd: Command,
) {
    let first_local = local.first;
    let data_dir = &shared.opts.data_dir;
    match cmd {
        Command::Submit { spec: text, rules } => {
            let spec = match JobSpec::parse(&text, "submitted spec") {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("ignoring job: {e}");
                    return;
                }
            };
            local.rule_texts.insert(spec.name.clone(), rules);
            if first_local {
                let dir = job_dir(data_dir, &spec.name);
                let _ = std::fs::create_dir_all(&dir);
                if let Err(e) = write_atomic(&dir.join("spec.toml"), text.as_bytes()) {
                    tracing::warn!("cannot persist job {}: {e}", spec.name);
                }
            }
            start_job(worker, shared, local, spec, text, BTreeMap::new(), i64::MIN);
        }
        Command::Cancel { name } => {
            if let Some(r) = local.running.remove(&name) {
                r.stop.store(true, Ordering::Release);
            }
            shared
                .registry
                .with(&name, |j| j.state = "cancelled".into());
            if let Some(c) = &shared.checkpoints {
                c.forget(&name);
            }
            if first_local {
                let _ = std::fs::remove_file(job_dir(data_dir, &name).join("spec.toml"));
            }
        }
        Command::Replay {
            name,
            offsets,
            rollups_from,
        } => {
            let Some(text) = shared.registry.with(&name, |j| j.spec.clone()) else {
                return;
            };
            let Ok(spec) = JobSpec::parse(&text, "stored spec") else {
                return;
            };
            let overrides: BTreeMap<(usize, i32), i64> =
                offsets.iter().map(|(t, p, o)| ((*t, *p), *o)).collect();
            let target = offsets
                .iter()
                .map(|(t, p, o)| (format!("{}/{p}", spec.source.topics[*t]), *o))
                .collect();
            start_job(worker, shared, local, spec, text, overrides, rollups_from);
            shared.registry.with(&name, |j| {
                j.state = "replaying".into();
                j.replay_target = target;
            });
        }
        Command::Bindings { job, entries } => {
            if !first_local {
                return;
            }
            let path = job_dir(data_dir, &job).join("bindings.jsonl");
            let mut text = String::new();
            for b in &entries {
                text.push_str(&serde_json::to_string(b).unwrap_or_default());
                text.push('\n');
            }
            let appended = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(text.as_bytes()));
            if let Err(e) = appended {
                tracing::warn!("cannot record bindings in {}: {e}", path.display());
            }
            shared
                .bindings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(job)
                .or_default()
                .extend(entries);
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Worker 0's rule evaluator for a job with `[rules]`: the whole cluster's hot data (local
/// shard plus the peers'), alert events to the Kafka topic, recorded samples to the job's
/// first topic. `None` on other workers, without rules, or when the producers cannot be made
/// (said in the job's problems).
fn rule_evaluator(
    shared: &Arc<Shared>,
    spec: &JobSpec,
    index: usize,
    registry: &Registry,
) -> Option<RuleEvaluator> {
    if index != 0 || spec.rules.files.is_empty() {
        return None;
    }
    let name = &spec.name;
    let brokers = if spec.source.brokers.is_empty() {
        shared.opts.brokers.clone()
    } else {
        spec.source.brokers.clone()
    };
    let problem = |msg: String| {
        tracing::info!("job {name}: {msg}");
        registry.with(name, |j| j.problems.push(msg));
    };
    let rules = {
        let mut m = shared.rules.lock().unwrap_or_else(|e| e.into_inner());
        match m.get(name) {
            Some((files, r)) if *files == spec.rules.files => Arc::clone(r),
            _ => {
                let external_url = if spec.rules.external_url.is_empty() {
                    format!("http://{}", shared.opts.hosts[0].http)
                } else {
                    spec.rules.external_url.clone()
                };
                let (r, errors) = Rules::open(RuleConfig {
                    files: spec.rules.files.iter().map(PathBuf::from).collect(),
                    state_dir: Some(job_dir(&shared.opts.data_dir, name).join("alerts")),
                    external_labels: BTreeMap::new(),
                    external_url,
                    resolution_ms: spec.rules.resolution.0.max(1) as u64,
                });
                for e in errors {
                    problem(format!("rule file error (its group is left out): {e}"));
                }
                m.insert(name.clone(), (spec.rules.files.clone(), Arc::clone(&r)));
                r
            }
        }
    };
    let sink = match KafkaAlertSink::new(&brokers, &spec.rules.topic, Duration::from_secs(30)) {
        Ok(s) => s,
        Err(e) => {
            problem(format!("rules not evaluated: {e}"));
            return None;
        }
    };
    let writer = KafkaSeriesWriter::new(&KafkaConfig {
        brokers,
        topic: spec.source.topics[0].clone(),
        format: spec.source.format,
        ..KafkaConfig::default()
    });
    let writer = match writer {
        Ok(w) => w,
        Err(e) => {
            problem(format!("rules not evaluated: {e}"));
            return None;
        }
    };
    let hosts = &shared.opts.hosts;
    Some(RuleEvaluator {
        rules,
        storage: Arc::new(ClusterStorage {
            hot: Arc::clone(&shared.hot),
            peers: hosts
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != shared.opts.process)
                .map(|(_, h)| format!("http://{}", h.http))
                .collect(),
            errors: Mutex::new(Vec::new()),
        }),
        writer: Box::new(writer),
        sink: Arc::new(sink),
    })
}

fn start_job(
    worker: &mut timely::worker::Worker,
    shared: &Arc<Shared>,
    local: &mut Local,
    spec: JobSpec,
    text: String,
    overrides: BTreeMap<(usize, i32), i64>,
    rollups_from: i64,
) {
    if let Some(old) = local.running.remove(&spec.name) {
        old.stop.store(true, Ordering::Release);
    }
    let name = spec.name.clone();
    let epoch = {
        let n = local.epochs.entry(name.clone()).or_insert(0);
        *n += 1;
        *n
    };
    {
        let mut jobs = shared
            .registry
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let e = jobs.entry(name.clone()).or_insert_with(|| JobStatus {
            name: name.clone(),
            ..Default::default()
        });
        // The first local worker to build this epoch resets the status; the old epoch's
        // sources stop writing to it (they check the epoch).
        if e.epoch < epoch {
            e.epoch = epoch;
            e.state = "running".into();
            e.spec = text;
            e.watermarks.clear();
            e.partitions.clear();
            e.replay_target.clear();
            e.problems.clear();
            e.samples = 0;
        }
    }
    let index = worker.index();
    let local_workers = shared.opts.workers.max(1);
    let local_index = index % local_workers;
    if index == 0 {
        tracing::info!(
            "job {name} starting (topics {:?}, group {}){}",
            spec.source.topics,
            spec.group(),
            if overrides.is_empty() {
                String::new()
            } else {
                format!(", replaying from {overrides:?}, rollups rebuilt from {rollups_from}")
            }
        );
    }
    let wal_root = job_dir(&shared.opts.data_dir, &name).join("wal");
    let own = wal_root.join(format!("w{index}"));
    // This worker replays its own WAL, plus WALs of workers that no longer run here.
    let local_own: Vec<PathBuf> = (0..local_workers)
        .map(|l| wal_root.join(format!("w{}", index - local_index + l)))
        .collect();
    let mut others: Vec<PathBuf> = std::fs::read_dir(&wal_root)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    others.retain(|p| !local_own.contains(p));
    others.sort();
    let mut replay_dirs = vec![own.clone()];
    replay_dirs.extend(
        others
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % local_workers == local_index)
            .map(|(_, p)| p),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let probe = ProbeHandle::new();
    let wm = PartitionWatermarks {
        out_of_orderness_ms: spec.watermark.out_of_orderness.0.max(0) as u64,
        idle_timeout_ms: spec.watermark.idle_timeout.0.max(1),
        records_per_activation: 16,
    };
    let lateness = spec.watermark.allowed_lateness.0;
    // The job's first run after a checkpoint of it was loaded: its state is seeded from the
    // index at the checkpoint's frontier, and its WAL replayed from the replay point.
    let seed_at = (epoch == 1 && overrides.is_empty() && rollups_from == i64::MIN)
        .then(|| shared.restored.get(&name).copied())
        .flatten();
    // A replay, or a job started again in this process, or started on a loaded checkpoint
    // without being in it: the index holds an earlier run's data.
    let rereads = !overrides.is_empty()
        || rollups_from != i64::MIN
        || (seed_at.is_none() && (local.started > 0 || shared.loaded));
    local.started += 1;
    let frontier = shared
        .checkpoints
        .as_ref()
        .map(|c| c.register(&name, epoch));
    let replay_from = seed_at.and_then(|_| ReplayPoint::read(&own));
    let (minutes_on, hours_on) = (spec.minute_rollups(), spec.hour_rollups());
    let hot = Arc::clone(&shared.hot);
    let registry = Arc::clone(&shared.registry);
    // Cold tiers, when the spec names a store: raw, and each rollup the job builds.
    let tiers_on = spec.tiers.url.is_some();
    let tiers = spec.tiers.url.as_deref().and_then(|url| {
        let store = match shared.cold_store(url) {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("worker {index}: cold tiers disabled for this run: {e}");
                tracing::info!("job {name}: {msg}");
                registry.with(&name, |j| j.problems.push(msg));
                return None;
            }
        };
        let h = Arc::clone(&hot);
        let labels: LabelLookup = Arc::new(move |id| h.catalog.labels(id));
        let writers = (
            TierWriter::<Sample>::new(
                Tier::Raw,
                &name,
                index,
                lateness,
                Arc::clone(&store),
                Arc::clone(&labels),
                // Jobs share the process's index: writers remember their series.
                hot_samples(&hot, None),
            ),
            TierWriter::<Rollup>::new(
                Tier::Minute,
                &name,
                index,
                lateness,
                Arc::clone(&store),
                Arc::clone(&labels),
                hot_rollups(&hot, Tier::Minute, None),
            ),
            TierWriter::<Rollup>::new(
                Tier::Hour,
                &name,
                index,
                lateness,
                store,
                labels,
                hot_rollups(&hot, Tier::Hour, None),
            ),
        );
        match writers {
            (Ok(r), Ok(m), Ok(h)) => {
                // A checkpoint holds the writers' open partitions as the index's rows (the
                // seed names them at a restart), not the corrections they buffer: those hold
                // the checkpoint's frontier back instead.
                let (r, m, h) = (
                    r.pin(hot.pin(PinKind::Raw)),
                    m.pin(hot.pin(PinKind::Minute)),
                    h.pin(hot.pin(PinKind::Hour)),
                );
                Some(match &frontier {
                    Some(f) => (
                        r.late_since(f.late_since()),
                        m.late_since(f.late_since()),
                        h.late_since(f.late_since()),
                    ),
                    None => (r, m, h),
                })
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                let msg = format!("worker {index}: cold tiers disabled for this run: {e}");
                tracing::info!("job {name}: {msg}");
                registry.with(&name, |j| j.problems.push(msg));
                None
            }
        }
    });
    let evaluator = rule_evaluator(shared, &spec, index, &registry);
    let rules_on = !spec.rules.files.is_empty();
    let ticks = TickConfig {
        resolution: spec.rules.resolution.0.max(1) as u64,
        ..TickConfig::default()
    };
    // Every worker compiles the same plans from the rule text process 0 sent; the evaluator
    // (global worker 0) reads their results for the rules it has identical.
    let inc = (rules_on && spec.rules.incremental).then(|| {
        let mut groups = Vec::new();
        for (path, text) in local.rule_texts.get(&name).into_iter().flatten() {
            groups.extend(crate::alert::rules::parse_rule_file(Path::new(path), text).0);
        }
        let compiled = crate::alert::incremental::compile(&groups, ticks.resolution);
        let store = evaluator.as_ref().map(|e| {
            let store = e
                .rules
                .attach_incremental(&groups, &compiled, worker.peers());
            (store, e.rules.last_tick())
        });
        (Arc::new(compiled.plans), store)
    });
    let checkpoints_on = shared.checkpoints.is_some();
    let seed_plan = seed_at.map(|at| SeedPlan {
        at,
        lateness,
        rules: inc.as_ref().map(|(plans, _)| seed::rules_of(plans)),
        cold: tiers_on,
    });
    let ctx = SourceCtx {
        epoch,
        spec: Arc::new(spec),
        brokers: shared.opts.brokers.clone(),
        index,
        peers: worker.peers(),
        wal_dir: own,
        replay_dirs,
        limits: shared.opts.limits.clone(),
        registry: Arc::clone(&registry),
        outbox: Rc::clone(&local.outbox),
        probe: probe.clone(),
        stop: Arc::clone(&stop),
        overrides,
        wal_retention: Duration::from_millis(shared.opts.hot_retention_ms.max(0) as u64),
        frontier: frontier.clone(),
        replay_from: replay_from.clone(),
    };
    if local_index == 0 {
        if let Some(at) = seed_at {
            tracing::info!(
                "job {name}: resuming from the checkpoint (state seeded at {at} ms); worker {index} replays its WAL from {}",
                replay_from.as_ref().map_or("its start".to_string(), |p| format!("offset {} (sent at {} ms)", p.offset, p.watermark))
            );
        }
    }
    worker.dataflow::<u64, _, _>(|scope| {
        let (samples, defs) =
            partitioned_source(scope, &format!("Kafka:{name}"), wm, move |_, _| {
                KafkaJobSource::new(ctx)
            });
        let samples = samples.exchange(|s: &Sample| s.series);
        let defs = defs.exchange(|d: &(u64, Vec<u8>)| d.0);
        // The seed of a restart from a checkpoint (see `super::checkpoint`): built on every
        // worker whenever checkpoints are on, so that every worker has the same graph.
        let seeds = checkpoints_on.then(|| {
            crate::job::seed::seed_source(
                scope,
                Arc::clone(&hot),
                seed_plan.clone(),
                (local_index, local_workers),
                || {},
            )
        });
        let seeded = |flag: u8| match &seeds {
            Some(s) => s.clone().flat_map(move |r| match r {
                SeedRec::Sample(s, f) if f & flag != 0 => Some(s),
                _ => None,
            }),
            None => empty(scope),
        };
        let seeded_rollups = |pick: fn(SeedRec) -> Option<Rollup>| match &seeds {
            Some(s) => s.clone().flat_map(pick),
            None => empty(scope),
        };
        let by_series = |s: &Sample| s.series;
        let by_rollup = |r: &Rollup| r.series;
        let inc_done = inc.map(|(plans, store)| {
            let h = Arc::clone(&hot);
            let lookup: Lookup = Arc::new(move |id| h.catalog.labels(id).map(|l| l.shared()));
            // The evaluator's worker resumes after its last tick; the others start where
            // their frontier is (the store knows from which tick all of them are complete).
            let resume = store.as_ref().and_then(|(_, r)| *r);
            let leaves = leaf_values(
                samples
                    .clone()
                    .concat(seeded(seed::FOR_RULES).exchange(by_series)),
                Arc::clone(&plans),
                Arc::clone(&lookup),
                ticks,
                resume,
            );
            let results = rule_results(leaves, plans, lookup);
            sink_results(results, store.map(|(s, _)| s))
        });
        let registered = sink_series(defs, Catalog(Arc::clone(&hot)));
        // With 1-minute rollups, raw samples go into the hot index inside their windows'
        // operator, which reads them back when a window closes.
        let (applied, minute_streams) = if minutes_on {
            let (minutes, late, applied) = crate::job::minute_windows(
                samples.clone(),
                seeded(seed::FOR_WINDOWS),
                lateness,
                rollups_from,
                rereads,
                Arc::clone(&hot),
                &hot,
            );
            (applied, Some((minutes, late)))
        } else {
            (sink_samples(samples.clone(), Arc::clone(&hot)), None)
        };
        let mut done = vec![registered.clone(), applied.clone()];
        // What a checkpoint holds: the catalog, raw samples, rollups (not the cold tiers,
        // whose open partitions are rebuilt from the index, nor the rules' results).
        let mut hot_done = done.clone();
        // The tier sinks hold the probe (and so the Kafka commits) until their files are
        // durable. They write sealed partitions from the hot index, so a partition is sealed
        // only once the hot sink applied its rows and the catalog has every series sent before
        // it (definitions are exchanged apart from samples and may arrive after them).
        // The sinks exist whenever the spec names a store, so every worker builds the same
        // graph; a worker that could not open the store drops its tier data (said above).
        let (raw_w, minute_w, hour_w) = match tiers {
            Some((r, m, h)) => (Some(Some(r)), Some(Some(m)), Some(Some(h))),
            None if tiers_on => (Some(None), Some(None), Some(None)),
            None => (None, None, None),
        };
        let gate = |d| Some(registered.clone().concat(d));
        if let Some(w) = raw_w {
            done.push(sink_tier(
                samples
                    .clone()
                    .concat(seeded(seed::FOR_COLD).exchange(by_series)),
                gate(applied.clone()),
                "ColdRaw",
                w,
            ));
        }
        if let Some((minutes, late)) = minute_streams {
            let m_done = sink_rollups(minutes.clone(), Arc::clone(&hot));
            if hours_on {
                // 1-hour windows read their minutes back from the hot index when they close.
                let (hours, _) = rollups_from_store(
                    minutes.clone(),
                    m_done.clone(),
                    seeded_rollups(|r| match r {
                        SeedRec::Minute(m) => Some(m),
                        _ => None,
                    }),
                    HOUR_MS,
                    lateness,
                    crate::job::minutes_of(&hot),
                );
                let h_done = sink_rollups(hours.clone(), Arc::clone(&hot));
                hot_done.push(h_done.clone());
                if let Some(w) = hour_w {
                    let hours = hours.concat(
                        seeded_rollups(|r| match r {
                            SeedRec::ColdHour(m) => Some(m),
                            _ => None,
                        })
                        .exchange(by_rollup),
                    );
                    done.push(sink_tier(hours, gate(h_done.clone()), "Cold1h", w));
                }
                done.push(h_done);
            }
            if let Some(w) = minute_w {
                let minutes = minutes.concat(
                    seeded_rollups(|r| match r {
                        SeedRec::ColdMinute(m) => Some(m),
                        _ => None,
                    })
                    .exchange(by_rollup),
                );
                done.push(sink_tier(minutes, gate(m_done.clone()), "Cold1m", w));
            }
            hot_done.push(m_done.clone());
            done.push(m_done);
            let (reg, job) = (Arc::clone(&registry), name.clone());
            late.sink(Pipeline, "LateCounts", move |(input, _)| {
                input.for_each(|_, data| {
                    for s in data.iter() {
                        reg.with(&job, |j| {
                            j.late_accepted += s.accepted;
                            j.late_dropped += s.dropped;
                        });
                    }
                });
            });
        }
        done.extend(inc_done);
        let done = scope.concatenate(done);
        if rules_on {
            // A tick is evaluated once every worker's sinks applied the data up to it.
            evaluate_at_ticks(done.clone(), ticks, evaluator).sink(
                Pipeline,
                "AlertEvents",
                |(input, _)| input.for_each(|_, _| {}),
            );
        }
        if let Some(f) = frontier {
            // What a checkpoint of this process holds of the job: everything sent before the
            // minimum over its workers of this frontier.
            scope
                .concatenate(hot_done)
                .sink(Pipeline, "CheckpointProbe", move |(input, fr)| {
                    input.for_each(|_, _| {});
                    let t = fr.frontier().iter().min().copied().unwrap_or(u64::MAX);
                    f.done[local_index].store(t, Ordering::Release);
                });
        }
        done.probe_with(&probe);
    });
    local.running.insert(name, Running { stop });
}

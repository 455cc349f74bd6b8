//! The scrape manager: discovers each job's target groups (static, file SD, HTTP SD), turns
//! them into targets, runs one scrape loop per target at a stable offset in its interval, and
//! sends every scrape through the same path as a push ([`IngestState`]: the hot retention
//! check, the catalog, the sink). Targets appear and disappear without a restart; a target
//! that goes away gets staleness markers. Its state is what `/api/v1/targets` shows.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::config::{ScrapeConfig, ScrapeJob};
use super::ring::Membership;
use super::scrape::{self, Body, Cache, Pairs, Target, TargetGroup};
use crate::ingest::http::IngestState;
use crate::time::now_ms;

/// How often file SD files are read again (changes show within this).
const FILE_SD_POLL: Duration = Duration::from_secs(2);
/// Prometheus's default HTTP SD refresh.
const HTTP_SD_DEFAULT_MS: i64 = 60_000;
/// Largest scrape body accepted.
const MAX_BODY: u64 = 256 << 20;

/// A target's state for the API.
#[derive(Clone, Debug)]
pub struct TargetState {
    pub target: Target,
    pub health: &'static str,
    pub last_error: String,
    pub last_scrape: i64,
    pub last_duration_s: f64,
    pub last_samples: u64,
    /// The metric metadata of its last successful scrape.
    pub metadata: Arc<Vec<(String, crate::model::metadata::Metadata)>>,
}

struct Running {
    stop: Arc<Stop>,
    state: Arc<Mutex<TargetState>>,
}

/// A scrape loop's stop signal: a flag, and a wake-up for the loop sleeping until its slot.
#[derive(Default)]
struct Stop {
    flag: AtomicBool,
    wake: tokio::sync::Notify,
}

impl Stop {
    fn set(&self) {
        self.flag.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn load(&self, o: Ordering) -> bool {
        self.flag.load(o)
    }
}

/// Discovered groups by job and source (a file, an URL, `static`).
type Groups = BTreeMap<String, BTreeMap<String, Vec<TargetGroup>>>;

/// The collector of one process.
pub struct Collector {
    jobs: Vec<ScrapeJob>,
    ingest: Arc<IngestState>,
    agent: ureq::Agent,
    groups: Mutex<Groups>,
    running: Mutex<HashMap<u64, Running>>,
    dropped: Mutex<BTreeMap<String, Vec<Pairs>>>,
    stop: Arc<AtomicBool>,
    ring: Arc<Membership>,
    /// Each job's TLS settings (`tls_config`), read once at the start.
    tls: Vec<Option<ureq::tls::TlsConfig>>,
    /// Bumped when discovery changes a group; `sync` works only when it moved.
    groups_gen: std::sync::atomic::AtomicU64,
    synced_gen: std::sync::atomic::AtomicU64,
}

impl Collector {
    /// Starts discovery and scraping on the current tokio runtime.
    /// Targets of sharded jobs are scraped only in the slots `ring` says this collector owns.
    pub fn start(
        cfg: ScrapeConfig,
        ingest: Arc<IngestState>,
        ring: Arc<Membership>,
    ) -> Arc<Collector> {
        let tls = cfg
            .jobs
            .iter()
            .map(|j| {
                j.tls_config.as_ref().and_then(|t| match tls_of(t) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::warn!(target: "tidemark::collect", job = j.name.as_str(), "tls_config: {e}; its targets are scraped with the default roots");
                        None
                    }
                })
            })
            .collect();
        let c = Arc::new(Collector {
            tls,
            groups_gen: std::sync::atomic::AtomicU64::new(1),
            synced_gen: std::sync::atomic::AtomicU64::new(0),
            jobs: cfg.jobs,
            ingest,
            agent: http_agent(Duration::from_secs(15)),
            groups: Mutex::new(BTreeMap::new()),
            running: Mutex::new(HashMap::new()),
            dropped: Mutex::new(BTreeMap::new()),
            stop: Arc::new(AtomicBool::new(false)),
            ring,
        });
        // The sources every job reports from; the ring is joined once each has reported
        // (or after 10 s), so that a joining collector's loops run before it owns targets.
        let sources: usize = c
            .jobs
            .iter()
            .map(|j| {
                1 + j.file_sd_configs.len() + j.http_sd_configs.len() + j.etcd_sd_configs.len()
            })
            .sum();
        for job in &c.jobs {
            let groups = job.static_configs.iter().map(|s| TargetGroup {
                targets: s.targets.clone(),
                labels: s.labels.clone(),
            });
            c.set_groups(&job.name, "static", groups.collect());
            for (i, sd) in job.file_sd_configs.iter().enumerate() {
                let (c2, name, files) = (Arc::clone(&c), job.name.clone(), sd.files.clone());
                tokio::spawn(async move { c2.file_sd(name, i, files).await });
            }
            for sd in &job.http_sd_configs {
                let (c2, name, url) = (Arc::clone(&c), job.name.clone(), sd.url.clone());
                let every = sd.refresh_interval.map_or(HTTP_SD_DEFAULT_MS, |d| d.0);
                tokio::spawn(async move { c2.http_sd(name, url, every).await });
            }
            for (i, sd) in job.etcd_sd_configs.iter().enumerate() {
                let (c2, name, sd) = (Arc::clone(&c), job.name.clone(), sd.clone());
                std::thread::Builder::new()
                    .name(format!("etcd-sd-{i}"))
                    .spawn(move || c2.etcd_sd(name, i, sd))
                    .ok();
            }
        }
        let c2 = Arc::clone(&c);
        tokio::spawn(async move {
            let (started, mut joined) = (Instant::now(), false);
            while !c2.stop.load(Ordering::Acquire) {
                let reported: usize = {
                    let g = c2.groups.lock().unwrap_or_else(|e| e.into_inner());
                    g.values().map(BTreeMap::len).sum()
                };
                c2.sync();
                if !joined && (reported >= sources || started.elapsed() > Duration::from_secs(10)) {
                    c2.ring.start();
                    joined = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        c
    }

    /// Stops every loop (without staleness markers: the series go on after a restart or on
    /// another collector) and leaves the ring. Blocks for at most a few seconds (the etcd lease revoke).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        self.ring.leave();
        for r in self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            r.stop.set();
        }
    }

    fn set_groups(&self, job: &str, source: &str, groups: Vec<TargetGroup>) {
        let mut g = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let by_source = g.entry(job.to_string()).or_default();
        if by_source.get(source) != Some(&groups) {
            by_source.insert(source.to_string(), groups);
            self.groups_gen.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Starts loops for new targets and stops those of targets gone (only when some source
    /// reported a change since the last time).
    fn sync(self: &Arc<Self>) {
        let gen = self.groups_gen.load(Ordering::Acquire);
        if self.synced_gen.swap(gen, Ordering::AcqRel) == gen {
            return;
        }
        let groups = self
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut want: HashMap<u64, (Target, usize)> = HashMap::new();
        let mut dropped = BTreeMap::new();
        for (ji, job) in self.jobs.iter().enumerate() {
            let all: Vec<TargetGroup> = groups
                .get(&job.name)
                .map(|g| g.values().flatten().cloned().collect())
                .unwrap_or_default();
            let (mut active, gone) = scrape::targets_of(job, &all);
            if job.target_limit > 0 && active.len() as u64 > job.target_limit {
                tracing::warn!(target: "tidemark::collect", job = job.name.as_str(), targets = active.len(), limit = job.target_limit, "target_limit exceeded: no target of this job is scraped until it is within the limit (target_limit in the scrape file)");
                active.clear();
            }
            dropped.insert(job.name.clone(), gone);
            for t in active {
                want.insert(t.key, (t, ji));
            }
        }
        *self.dropped.lock().unwrap_or_else(|e| e.into_inner()) = dropped;
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|k, r| {
            let keep = want.contains_key(k);
            if !keep {
                r.stop.set();
            }
            keep
        });
        for (k, (t, ji)) in want {
            if running.contains_key(&k) {
                continue;
            }
            let stop = Arc::new(Stop::default());
            let state = Arc::new(Mutex::new(TargetState {
                target: t.clone(),
                health: "unknown",
                last_error: String::new(),
                last_scrape: 0,
                last_duration_s: 0.0,
                last_samples: 0,
                metadata: Arc::default(),
            }));
            let (c, s, st) = (Arc::clone(self), Arc::clone(&stop), Arc::clone(&state));
            tokio::spawn(async move { c.scrape_loop(ji, t, s, st).await });
            running.insert(k, Running { stop, state });
        }
    }

    async fn scrape_loop(
        self: Arc<Self>,
        job: usize,
        target: Target,
        stop: Arc<Stop>,
        state: Arc<Mutex<TargetState>>,
    ) {
        let mut cache = Cache::default();
        // The target's own connection, kept between scrapes: a client shared by every target
        // keeps few idle connections (and ureq's pool walks all of them on each return), so
        // a fleet's scrapes would each open a new one.
        let agent = http_agent(Duration::from_millis(
            (2 * target.interval_ms.max(target.timeout_ms)).max(30_000) as u64,
        ));
        let mut owned = false;
        let mut meta_recorded = i64::MIN / 2;
        let interval = target.interval_ms.max(1);
        loop {
            // The next time in the interval at this target's offset.
            let now = now_ms();
            let mut next = now - now.rem_euclid(interval) + target.offset_ms();
            if next <= now {
                next += interval;
            }
            // One timer per slot (not a poll): the stop signal wakes the loop early.
            while now_ms() < next && !stop.load(Ordering::Acquire) {
                let left = Duration::from_millis((next - now_ms()).max(1) as u64);
                tokio::select! {
                    _ = tokio::time::sleep(left) => {}
                    _ = stop.wake.notified() => {}
                }
            }
            let limits = &self.ingest.limits;
            let local = self.jobs[job].local;
            if stop.load(Ordering::Acquire) {
                if self.stop.load(Ordering::Acquire)
                    || (!local && !self.ring.owns(target.key, now_ms()))
                {
                    // Shutting down (a restart or another collector carries the series on),
                    // or another collector owns it and writes the markers.
                    return;
                }
                let mut b = crate::ingest::BatchBuilder::new(limits);
                scrape::target_gone(&target, now_ms(), &mut cache, &mut b);
                let v = self.ingest.admit(b);
                let _ = self.ingest.store(v.batch).await;
                return;
            }
            if !local && !self.ring.owns(target.key, next) {
                // Another collector scrapes this slot. The series go on there: no staleness
                // markers, and the next scrape here starts afresh.
                if owned {
                    cache = Cache::default();
                    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                    s.health = "unknown";
                    s.last_error = format!(
                        "scraped by collector {}",
                        self.ring.owner(target.key, next).unwrap_or_default()
                    );
                }
                owned = false;
                continue;
            }
            owned = true;
            let ts = now_ms();
            let started = Instant::now();
            let (agent, url, timeout) =
                (agent.clone(), target.scrape_url.clone(), target.timeout_ms);
            let auth = auth_header(&self.jobs[job]);
            let tls = self.tls[job].clone();
            let fetched =
                tokio::task::spawn_blocking(move || fetch(&agent, &url, timeout, auth, tls))
                    .await
                    .unwrap_or_else(|e| Err(format!("scrape task failed: {e}")));
            let duration = started.elapsed().as_secs_f64();
            let mut b = self.ingest.builder();
            let rep = scrape::scrape_samples(
                &self.jobs[job],
                &target,
                fetched
                    .as_ref()
                    .map(|(bytes, om)| Body {
                        bytes,
                        openmetrics: *om,
                    })
                    .map_err(Clone::clone),
                ts,
                duration,
                &mut cache,
                &mut b,
            );
            let v = self.ingest.admit(b);
            if let Err(e) = self.ingest.store(v.batch).await {
                tracing::warn!(target: "tidemark::collect", url = target.scrape_url.as_str(), "scraped samples not stored (the sink refused them; the next scrape tries again): {e}");
            }
            // Metadata goes to the store when it changed, and each minute (it is kept with
            // when it was last seen).
            if rep.up && (cache.metadata_changed || ts - meta_recorded >= 60_000) {
                self.ingest.metadata.record_all(cache.metadata.iter(), ts);
                meta_recorded = ts;
            }
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            if rep.up {
                s.metadata = Arc::clone(&cache.metadata);
            }
            s.health = if rep.up { "up" } else { "down" };
            s.last_error = rep.error.unwrap_or_default();
            s.last_scrape = ts;
            s.last_duration_s = duration;
            s.last_samples = rep.post_relabel;
        }
    }

    /// File SD: the files matching `patterns` (a `*` glob in the file name), read every
    /// [`FILE_SD_POLL`]; a file that cannot be read or parsed keeps its previous groups.
    async fn file_sd(self: Arc<Self>, job: String, index: usize, patterns: Vec<String>) {
        let mut last: BTreeMap<PathBuf, (std::time::SystemTime, Vec<TargetGroup>)> =
            BTreeMap::new();
        while !self.stop.load(Ordering::Acquire) {
            let mut now: BTreeMap<PathBuf, (std::time::SystemTime, Vec<TargetGroup>)> =
                BTreeMap::new();
            for p in patterns.iter().flat_map(|p| glob(p)) {
                let Ok(mtime) = std::fs::metadata(&p).and_then(|m| m.modified()) else {
                    continue;
                };
                if let Some((t, g)) = last.get(&p).filter(|(t, _)| *t == mtime) {
                    now.insert(p, (*t, g.clone()));
                    continue;
                }
                match read_groups(&p) {
                    Ok(mut g) => {
                        for grp in &mut g {
                            grp.labels
                                .insert("__meta_filepath".into(), p.display().to_string());
                        }
                        now.insert(p, (mtime, g));
                    }
                    Err(e) => {
                        tracing::warn!(target: "tidemark::collect", job = job.as_str(), file = %p.display(), "file SD: {e}; keeping its previous targets");
                        if let Some(prev) = last.get(&p) {
                            now.insert(p, prev.clone());
                        }
                    }
                }
            }
            let groups: Vec<TargetGroup> = now.values().flat_map(|(_, g)| g.clone()).collect();
            self.set_groups(&job, &format!("file/{index}"), groups);
            last = now;
            tokio::time::sleep(FILE_SD_POLL).await;
        }
    }

    /// HTTP SD: Prometheus's JSON list of groups from `url`, every `every_ms`; a failed
    /// refresh keeps the previous groups.
    async fn http_sd(self: Arc<Self>, job: String, url: String, every_ms: i64) {
        while !self.stop.load(Ordering::Acquire) {
            let (agent, u) = (self.agent.clone(), url.clone());
            let got = tokio::task::spawn_blocking(move || -> Result<Vec<TargetGroup>, String> {
                let mut r = agent
                    .get(&u)
                    .config()
                    .timeout_global(Some(Duration::from_secs(30)))
                    .build()
                    .call()
                    .map_err(|e| e.to_string())?;
                if r.status() != 200 {
                    return Err(format!("HTTP {}", r.status().as_u16()));
                }
                let body = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
                serde_json::from_str(&body)
                    .map_err(|e| format!("not a JSON list of target groups: {e}"))
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            match got {
                Ok(mut g) => {
                    for grp in &mut g {
                        grp.labels.insert("__meta_url".into(), url.clone());
                    }
                    self.set_groups(&job, &format!("http/{url}"), g);
                }
                Err(e) => {
                    tracing::warn!(target: "tidemark::collect", job = job.as_str(), url = url.as_str(), "HTTP SD: {e}; keeping the previous targets")
                }
            }
            let until = Instant::now() + Duration::from_millis(every_ms.max(1000) as u64);
            while Instant::now() < until && !self.stop.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// The state of every target this collector scrapes now.
    fn states_here(&self) -> Vec<TargetState> {
        let now = now_ms();
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|r| r.state.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .filter(|s| self.scraped_here(&s.target, now))
            .collect()
    }

    /// `/api/v1/targets` (`state=active|dropped|any`), in Prometheus's shape.
    pub fn targets_json(&self, which: &str) -> Value {
        let mut active = self.states_here();
        active.sort_by(|a, b| {
            (a.target.job.as_str(), a.target.scrape_url.as_str())
                .cmp(&(b.target.job.as_str(), b.target.scrape_url.as_str()))
        });
        let obj = |l: &Pairs| -> Value {
            Value::Object(l.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
        };
        let secs = |ms: i64| {
            if ms % 1000 == 0 {
                format!("{}s", ms / 1000)
            } else {
                format!("{ms}ms")
            }
        };
        let active_json: Vec<Value> = active
            .iter()
            .map(|s| {
                json!({
                    "discoveredLabels": obj(&s.target.discovered),
                    "labels": obj(&s.target.labels),
                    "scrapePool": s.target.job,
                    "scrapeUrl": s.target.scrape_url,
                    "globalUrl": s.target.scrape_url,
                    "lastError": s.last_error,
                    "lastScrape": if s.last_scrape > 0 { crate::time::rfc3339_ms(s.last_scrape) } else { "0001-01-01T00:00:00Z".into() },
                    "lastScrapeDuration": s.last_duration_s,
                    "lastSamples": s.last_samples,
                    "health": s.health,
                    "scrapeInterval": secs(s.target.interval_ms),
                    "scrapeTimeout": secs(s.target.timeout_ms),
                })
            })
            .collect();
        let dropped: Vec<Value> = self
            .dropped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flatten()
            .map(|l| json!({"discoveredLabels": obj(l)}))
            .collect();
        match which {
            "active" => json!({"activeTargets": active_json, "droppedTargets": []}),
            "dropped" => json!({"activeTargets": [], "droppedTargets": dropped}),
            _ => json!({"activeTargets": active_json, "droppedTargets": dropped}),
        }
    }
}

/// A collector, once started.
pub type CollectorCell = Arc<std::sync::OnceLock<Arc<Collector>>>;

/// The collection API: `GET /api/v1/targets?state=active|dropped|any` and
/// `GET /api/v1/targets/metadata` (Prometheus's shapes), and `GET /api/v1/status/ring` (the pool's members and each target's owner). Before the
/// collector starts (or in a process without one) both answer with nothing to show.
pub fn routes(cell: CollectorCell) -> axum::Router {
    use axum::extract::{Query, State};
    use axum::http::header;
    use axum::response::IntoResponse;
    use axum::routing::get;
    type Q = Query<HashMap<String, String>>;
    let json = |data: Value| {
        (
            [(header::CONTENT_TYPE, "application/json")],
            json!({"status": "success", "data": data}).to_string(),
        )
            .into_response()
    };
    axum::Router::new()
        .route(
            "/api/v1/targets",
            get(
                move |State(c): State<CollectorCell>, Query(q): Q| async move {
                    let which = q.get("state").map_or("any", String::as_str);
                    json(match c.get() {
                        Some(c) => c.targets_json(which),
                        None => json!({"activeTargets": [], "droppedTargets": []}),
                    })
                },
            ),
        )
        .route(
            "/api/v1/targets/metadata",
            get(
                move |State(c): State<CollectorCell>, Query(q): Q| async move {
                    let limit = match q.get("limit").map(|l| l.trim()).filter(|l| !l.is_empty()) {
                        None => Ok(0),
                        Some(l) => l.parse::<i64>().map(|n| n.max(0) as usize).map_err(|_| {
                            format!("invalid parameter \"limit\": {l:?} is not an integer")
                        }),
                    };
                    let got = limit.and_then(|limit| match c.get() {
                        Some(c) => c.targets_metadata_json(
                            q.get("match_target")
                                .map(String::as_str)
                                .filter(|m| !m.is_empty()),
                            q.get("metric")
                                .map(String::as_str)
                                .filter(|m| !m.is_empty()),
                            limit,
                        ),
                        None => Ok(json!([])),
                    });
                    match got {
                        Ok(v) => json(v),
                        Err(e) => (
                            axum::http::StatusCode::BAD_REQUEST,
                            [(header::CONTENT_TYPE, "application/json")],
                            json!({"status": "error", "errorType": "bad_data", "error": e})
                                .to_string(),
                        )
                            .into_response(),
                    }
                },
            ),
        )
        .route(
            "/api/v1/status/ring",
            get(move |State(c): State<CollectorCell>| async move {
                json(match c.get() {
                    Some(c) => c.ring_json(),
                    None => Membership::alone().status_json(&[]),
                })
            }),
        )
        .with_state(cell)
}

impl Collector {
    /// Whether this collector scrapes `t` now (the ring's other targets are other collectors').
    fn scraped_here(&self, t: &Target, now: i64) -> bool {
        self.jobs
            .iter()
            .find(|j| j.name == t.job)
            .is_some_and(|j| j.local)
            || self.ring.owns(t.key, now)
    }

    /// `/api/v1/targets/metadata`: the metadata of the targets scraped here, one entry per
    /// target and metric family, in Prometheus's shape; `match_target` is a label selector on
    /// the targets' labels (`{job="node"}`), `metric` one family, `limit` the most entries.
    pub fn targets_metadata_json(
        &self,
        match_target: Option<&str>,
        metric: Option<&str>,
        limit: usize,
    ) -> Result<Value, String> {
        let sets = match match_target {
            None => vec![Vec::new()],
            Some(sel) => {
                let bad = |r: String| {
                    format!("invalid parameter \"match_target\": {r}; give a label selector such as {{job=\"node\"}}")
                };
                match promql_parser::parser::parse(sel).map_err(bad)? {
                    promql_parser::parser::Expr::VectorSelector(vs) => {
                        crate::query::engine::selector_matchers(&vs)
                    }
                    _ => return Err(bad("not a label selector".into())),
                }
            }
        };
        let mut states = self.states_here();
        states.sort_by(|a, b| a.target.labels.cmp(&b.target.labels));
        let mut out = Vec::new();
        for s in &states {
            let label = |n: &str| {
                s.target
                    .labels
                    .iter()
                    .find(|(k, _)| k == n)
                    .map_or("", |(_, v)| v.as_str())
            };
            if !sets
                .iter()
                .any(|ms| ms.iter().all(|m| m.matches(label(&m.name))))
            {
                continue;
            }
            let target: serde_json::Map<String, Value> = s
                .target
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            for (name, m) in s.metadata.iter() {
                if metric.is_some_and(|want| want != name) {
                    continue;
                }
                if limit > 0 && out.len() >= limit {
                    return Ok(Value::Array(out));
                }
                out.push(json!({
                    "target": target,
                    "metric": name,
                    "type": m.kind,
                    "help": m.help,
                    "unit": m.unit,
                }));
            }
        }
        Ok(Value::Array(out))
    }

    /// `/api/v1/status/ring`: the members and the owner of every sharded target.
    pub fn ring_json(&self) -> Value {
        let mut targets: Vec<(String, String, u64)> = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|r| {
                let s = r.state.lock().unwrap_or_else(|e| e.into_inner());
                (
                    s.target.job.clone(),
                    s.target.scrape_url.clone(),
                    s.target.key,
                )
            })
            .filter(|(job, _, _)| !self.jobs.iter().any(|j| j.name == *job && j.local))
            .collect();
        targets.sort();
        self.ring.status_json(&targets)
    }

    /// etcd SD: follows the keys under the prefix; each value is one target group
    /// (`{"targets": [...], "labels": {...}}`) or a list of them, labelled `__meta_etcd_key`.
    /// A key whose lease expires is deleted by etcd, and its targets go.
    fn etcd_sd(self: Arc<Self>, job: String, index: usize, sd: super::config::EtcdSdConfig) {
        let etcd = super::etcd::Etcd::new(&sd.endpoints);
        let mut bad: std::collections::HashSet<String> = Default::default();
        super::etcd::follow_prefix(
            &etcd,
            &sd.prefix,
            &self.stop,
            |keys| {
                let mut groups = Vec::new();
                for (k, v) in keys {
                    let parsed = serde_json::from_slice::<TargetGroup>(v)
                        .map(|g| vec![g])
                        .or_else(|_| serde_json::from_slice::<Vec<TargetGroup>>(v));
                    match parsed {
                        Ok(gs) => {
                            bad.remove(k);
                            for mut g in gs {
                                g.labels.insert("__meta_etcd_key".into(), k.clone());
                                groups.push(g);
                            }
                        }
                        Err(e) => {
                            if bad.insert(k.clone()) {
                                tracing::warn!(target: "tidemark::collect", job = job.as_str(), key = k.as_str(), "etcd SD: value is not a target group ({{\"targets\": [...], \"labels\": {{...}}}}): {e}; skipped");
                            }
                        }
                    }
                }
                self.set_groups(&job, &format!("etcd/{index}"), groups);
            },
            |e| tracing::warn!(target: "tidemark::collect", job = job.as_str(), "etcd SD: {e}; keeping the previous targets and retrying"),
        );
    }
}

/// A secret given inline or in a file (read at each scrape, so a rotated file is picked up);
/// an unreadable file is logged with the job and sent as empty (the target answers 401).
fn secret(job: &ScrapeJob, value: &Option<String>, file: &Option<PathBuf>, what: &str) -> String {
    match (value, file) {
        (Some(v), _) => v.clone(),
        (None, Some(f)) => match std::fs::read_to_string(f) {
            Ok(t) => t.trim().to_string(),
            Err(e) => {
                tracing::warn!(target: "tidemark::collect", job = job.name.as_str(), file = %f.display(), "cannot read the {what} file: {e}; scraping without it");
                String::new()
            }
        },
        _ => String::new(),
    }
}

/// The `Authorization` header a job's scrapes send, if any.
fn auth_header(job: &ScrapeJob) -> Option<String> {
    if let Some(b) = &job.basic_auth {
        let pw = secret(job, &b.password, &b.password_file, "basic_auth password");
        let user_pw = format!("{}:{pw}", b.username);
        return Some(format!("Basic {}", base64_lite::encode(user_pw.as_bytes())));
    }
    let a = job.authorization.as_ref()?;
    let cred = secret(
        job,
        &a.credentials,
        &a.credentials_file,
        "authorization credentials",
    );
    Some(format!("{} {cred}", a.kind.as_deref().unwrap_or("Bearer")))
}

/// Standard base64 (for basic auth), without another dependency.
mod base64_lite {
    pub fn encode(b: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
        for c in b.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

/// A job's `tls_config` as the HTTP client's (errors name the file).
fn tls_of(t: &super::config::TlsConfig) -> Result<ureq::tls::TlsConfig, String> {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts};
    let read =
        |what: &str, p: &Path| std::fs::read(p).map_err(|e| format!("{what} {}: {e}", p.display()));
    let mut b = ureq::tls::TlsConfig::builder().disable_verification(t.insecure_skip_verify);
    if let Some(ca) = &t.ca_file {
        let pem = read("ca_file", ca)?;
        let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|i| match i {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(format!(
                "ca_file {}: no PEM certificate in it",
                ca.display()
            ));
        }
        b = b.root_certs(RootCerts::new_with_certs(&certs));
    }
    match (&t.cert_file, &t.key_file) {
        (Some(c), Some(k)) => {
            let pem = read("cert_file", c)?;
            let chain: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            let key = PrivateKey::from_pem(&read("key_file", k)?)
                .map_err(|e| format!("key_file {}: {e}", k.display()))?;
            b = b.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        (None, None) => {}
        _ => return Err("cert_file and key_file go together".into()),
    }
    Ok(b.build())
}

/// The HTTP client of scrapes and HTTP SD: statuses are answers (not errors), idle
/// connections kept for `idle`.
fn http_agent(idle: Duration) -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(format!("Tidemark/{}", env!("CARGO_PKG_VERSION")))
            .max_idle_age(idle)
            .build(),
    )
}

/// Prometheus's `Accept` header: OpenMetrics preferred, then the text format.
const ACCEPT: &str = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

/// GETs a target (gzip is negotiated and decoded by the client); the body and whether it is
/// OpenMetrics. Errors are worded as Prometheus words them.
fn fetch(
    agent: &ureq::Agent,
    url: &str,
    timeout_ms: i64,
    auth: Option<String>,
    tls: Option<ureq::tls::TlsConfig>,
) -> Result<(Vec<u8>, bool), String> {
    let mut cfg = agent
        .get(url)
        .header("Accept", ACCEPT)
        .header(
            "X-Prometheus-Scrape-Timeout-Seconds",
            format!("{}", timeout_ms as f64 / 1000.0),
        )
        .config()
        .timeout_global(Some(Duration::from_millis(timeout_ms.max(1) as u64)));
    if let Some(t) = tls {
        cfg = cfg.tls_config(t);
    }
    let mut req = cfg.build();
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let mut r = req.call().map_err(|e| match e {
        ureq::Error::Timeout(_) => "context deadline exceeded".to_string(),
        e => e.to_string(),
    })?;
    let status = r.status();
    if status != 200 {
        return Err(format!(
            "server returned HTTP status {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ));
    }
    let om = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/openmetrics-text"));
    let body = r
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::Timeout(_) => "context deadline exceeded".to_string(),
            e => format!("reading the body: {e}"),
        })?;
    Ok((body, om))
}

/// Paths matching `pattern` (`*` and `?` in the file name only, as Prometheus's file SD).
fn glob(pattern: &str) -> Vec<PathBuf> {
    let p = Path::new(pattern);
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if !name.contains(['*', '?']) {
        return vec![p.to_path_buf()];
    }
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let re = regex::Regex::new(&format!(
        "^{}$",
        regex::escape(name).replace("\\*", ".*").replace("\\?", ".")
    ));
    let Ok(re) = re else { return Vec::new() };
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| re.is_match(n))
        })
        .collect();
    out.sort();
    out
}

/// A file SD file: JSON (`.json`) or YAML, a list of target groups.
fn read_groups(p: &Path) -> Result<Vec<TargetGroup>, String> {
    let text = std::fs::read_to_string(p).map_err(|e| e.to_string())?;
    let json = p.extension().is_some_and(|e| e == "json");
    if json {
        serde_json::from_str(&text).map_err(|e| format!("line {}: {e}", e.line()))
    } else {
        yaml_serde::from_str(&text).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_rfc4648() {
        assert_eq!(base64_lite::encode(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64_lite::encode(b"a"), "YQ==");
        assert_eq!(base64_lite::encode(b"ab"), "YWI=");
    }

    #[test]
    fn auth_headers_from_values_and_files() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("token");
        std::fs::write(&f, "s3cret\n").unwrap();
        let job = |extra: &str| {
            let text = format!("scrape_configs:\n  - job_name: a\n{extra}");
            crate::collect::config::ScrapeConfig::parse(Path::new("s.yml"), &text)
                .unwrap()
                .jobs
                .remove(0)
        };
        let basic = job("    basic_auth:\n      username: user\n      password: pass\n");
        assert_eq!(auth_header(&basic).unwrap(), "Basic dXNlcjpwYXNz");
        let bearer = job(&format!(
            "    authorization:\n      credentials_file: {:?}\n",
            f.display().to_string()
        ));
        assert_eq!(auth_header(&bearer).unwrap(), "Bearer s3cret");
        let missing = job("    authorization:\n      credentials_file: /nonexistent/token\n");
        assert_eq!(auth_header(&missing).unwrap(), "Bearer ");
        assert_eq!(auth_header(&job("")), None);
    }

    #[test]
    fn globs_in_the_file_name() {
        let d = tempfile::tempdir().unwrap();
        for n in ["a.json", "b.json", "c.yml"] {
            std::fs::write(d.path().join(n), "[]").unwrap();
        }
        let got = glob(&format!("{}/*.json", d.path().display()));
        assert_eq!(got.len(), 2);
        assert_eq!(read_groups(&got[0]).unwrap(), vec![]);
        std::fs::write(d.path().join("bad.json"), "[{\"targets\": 3}]").unwrap();
        assert!(read_groups(&d.path().join("bad.json"))
            .unwrap_err()
            .starts_with("line 1"));
    }
}

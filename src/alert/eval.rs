//! Rule evaluation at event-time ticks (the I/O side of
//! [`tidemark_dataflows::rules::evaluate_at_ticks`]).
//!
//! [`Rules`] holds the loaded groups and every alerting rule's [`AlertMachine`]; the job's
//! [`RuleEvaluator`] calls [`Rules::evaluate`] with the ticks the watermark has passed. Each
//! group's rules are evaluated in order by the PromQL engine, step-vectorised over all the
//! group's ticks of the batch (a catch-up of 600 ticks selects each series once). Recording
//! rules and the `ALERTS`/`ALERTS_FOR_STATE` series go back into the log as samples (so they
//! are stored, rolled up and tiered like any other series) and into an overlay the later rules
//! of the same batch read, so a group sees its own recordings at once, as in Prometheus.
//!
//! Alert state is durable: `<state_dir>/rules-state.json` holds the last evaluated tick and
//! every pending and firing alert with its `activeAt`, written (atomically) after the batch's
//! alert events reached the notifier. A restart resumes after that tick: a pending alert keeps
//! its start, a firing one is not announced again as new.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use tidemark_dataflows::incremental::{Plans, ResultStore};
use tidemark_dataflows::rules::{Active, AlertMachine, AlertStatus, TickEvaluator, Transition};

use super::rules::{load_rule_files, Group, Rule, RuleError, RuleKind};
use super::template::TemplateData;
use crate::ingest::{BatchBuilder, SeriesBuf};
use crate::model::WriteBatch;
use crate::model::{is_stale_nan, stale_nan, Labels, Limits, METRIC_NAME};
use crate::query::engine::{Engine, Value};
use crate::query::{Series, Storage};
use crate::store::hot::index::Matcher;

/// An alert as the notifier gets it (Alertmanager's alert: labels, annotations, start and end).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Event time (ms) the alert became active.
    #[serde(rename = "startsAt")]
    pub starts_at: i64,
    /// Event time (ms) it resolved; 0 while firing.
    #[serde(rename = "endsAt")]
    pub ends_at: i64,
    /// The tick that produced this event.
    pub tick: u64,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

impl AlertEvent {
    pub fn is_resolved(&self) -> bool {
        self.ends_at > 0
    }
}

/// Where recorded samples go (the embedded log in `tidemark up`).
pub trait SeriesWriter: Send {
    fn write(&mut self, batch: WriteBatch) -> Result<(), String>;
}

/// Where alert events go (the notifier). `send` returns once they are durable there.
pub trait AlertSink: Send + Sync {
    fn send(&self, events: &[AlertEvent]) -> Result<(), String>;
}

/// How rules are found and evaluated.
#[derive(Clone, Debug, Default)]
pub struct RuleConfig {
    pub files: Vec<PathBuf>,
    /// Where `rules-state.json` lives; `None`: state is not kept across restarts.
    pub state_dir: Option<PathBuf>,
    pub external_labels: BTreeMap<String, String>,
    /// Base of the alerts' `generatorURL` (`<url>/graph?g0.expr=...`).
    pub external_url: String,
    /// Tick resolution (ms), so group intervals fall on ticks.
    pub resolution_ms: u64,
}

#[derive(Clone, Debug, Default)]
pub(super) struct RuleHealth {
    pub(super) last_error: String,
    pub(super) last_eval: u64,
    pub(super) eval_seconds: f64,
    pub(super) evaluated: bool,
}

pub(super) struct GroupState {
    pub(super) group: Group,
    pub(super) health: Vec<RuleHealth>,
    /// Per rule: the output series written at its last tick (to mark vanished ones stale).
    pub(super) written: Vec<HashSet<Labels>>,
    /// Per rule: its incremental plan's id, when the job maintains it incrementally.
    pub(super) inc: Vec<Option<u32>>,
    pub(super) last_eval: u64,
    pub(super) eval_seconds: f64,
}

/// A rule's identity across reloads: its state moves to an identical rule.
pub(super) fn rule_key(g: &Group, r: &Rule) -> String {
    let labels: Vec<String> = r
        .labels
        .iter()
        .map(|(k, v, _)| format!("{k}={v}"))
        .collect();
    format!(
        "{}\u{0}{}\u{0}{}\u{0}{}",
        g.key(),
        r.name,
        r.expr_text,
        labels.join(",")
    )
}

#[derive(Serialize, Deserialize, Default)]
struct StateFile {
    last_tick: Option<u64>,
    rules: Vec<SavedRule>,
}

#[derive(Serialize, Deserialize)]
struct SavedRule {
    key: String,
    machine: AlertMachine,
}

pub(super) struct Inner {
    pub(super) groups: Vec<GroupState>,
    pub(super) load_errors: Vec<RuleError>,
    /// Alerting rules' states by [`rule_key`].
    pub(super) machines: HashMap<String, AlertMachine>,
    pub(super) last_tick: Option<u64>,
    /// Samples recorded by rules and not yet seen in the store, by series.
    overlay: OverlayData,
    pub(super) last_saved: Option<Instant>,
    pub(super) dirty: bool,
    /// Events the sink did not take; they go first in the next batch.
    pub(super) unsent: Vec<AlertEvent>,
    /// The job's incremental plans, once it built them.
    inc: Option<IncState>,
}

/// The incremental results and which rules they cover: plan ids by the rule's key and the
/// text the plan was compiled from, so a reloaded rule that changed (or whose recording rules
/// changed) goes back to the engine.
struct IncState {
    store: Arc<Mutex<ResultStore>>,
    ids: HashMap<String, u32>,
}

/// Sets every rule's incremental plan id.
fn assign_inc(inner: &mut Inner, resolution: u64) {
    let groups: Vec<Group> = inner.groups.iter().map(|g| g.group.clone()).collect();
    let texts = super::incremental::inlined(&groups, resolution);
    for (gs, row) in inner.groups.iter_mut().zip(texts) {
        gs.inc = gs
            .group
            .rules
            .iter()
            .zip(row)
            .map(|(r, e)| {
                let inc = inner.inc.as_ref()?;
                let key = format!("{}\u{0}{}", rule_key(&gs.group, r), e?);
                inc.ids.get(&key).copied()
            })
            .collect();
    }
}

/// The loaded rules and their state, shared by the job and the HTTP API.
pub struct Rules {
    pub(super) cfg: RuleConfig,
    inner: Mutex<Inner>,
    /// Evaluation failures and state-file failures, for `/metrics`.
    pub eval_failures: std::sync::atomic::AtomicU64,
    /// Rule x tick evaluations the query engine made (ticks the incremental plans did not
    /// cover, and rules without a plan).
    pub evaluations: std::sync::atomic::AtomicU64,
    /// Rule x tick evaluations read from the incremental plans' results.
    pub evaluations_incremental: std::sync::atomic::AtomicU64,
}

/// How long recorded samples stay in the overlay: the log is read back much faster.
const OVERLAY_KEEP_MS: i64 = 300_000;

impl Rules {
    /// Loads the rule files and the saved state. Files with errors are left out (the errors
    /// are returned and shown on `/api/v1/rules`); the others run.
    pub fn open(cfg: RuleConfig) -> (Arc<Rules>, Vec<RuleError>) {
        let (groups, errors) = load_rule_files(&cfg.files);
        let saved = cfg
            .state_dir
            .as_ref()
            .and_then(|d| std::fs::read(d.join("rules-state.json")).ok())
            .and_then(|b| match serde_json::from_slice::<StateFile>(&b) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("ignoring unreadable rules-state.json: {e}");
                    None
                }
            })
            .unwrap_or_default();
        let machines: HashMap<String, AlertMachine> = saved
            .rules
            .into_iter()
            .map(|r| (r.key, r.machine))
            .collect();
        let mut inner = Inner {
            groups: Vec::new(),
            load_errors: errors.clone(),
            machines,
            last_tick: saved.last_tick,
            overlay: OverlayData::default(),
            last_saved: None,
            dirty: false,
            unsent: Vec::new(),
            inc: None,
        };
        install(&mut inner, groups);
        (
            Arc::new(Rules {
                cfg,
                inner: Mutex::new(inner),
                eval_failures: Default::default(),
                evaluations: Default::default(),
                evaluations_incremental: Default::default(),
            }),
            errors,
        )
    }

    /// Reads the rule files again and swaps them in, keeping the state of every alerting rule
    /// that is unchanged. File by file: a file with any error keeps the groups it had running
    /// (the errors are returned and shown on `/api/v1/rules`); the others are swapped.
    pub fn reload(&self) -> Result<usize, Vec<RuleError>> {
        let loaded: Vec<_> = self
            .cfg
            .files
            .iter()
            .map(|p| (p.clone(), load_rule_files(std::slice::from_ref(p))))
            .collect();
        let mut inner = self.lock();
        let mut groups = Vec::new();
        let mut errors = Vec::new();
        for (path, (g, e)) in loaded {
            if e.is_empty() {
                groups.extend(g);
            } else {
                errors.extend(e);
                groups.extend(
                    inner
                        .groups
                        .iter()
                        .filter(|gs| gs.group.file == path)
                        .map(|gs| gs.group.clone()),
                );
            }
        }
        let n = groups.iter().map(|g| g.rules.len()).sum();
        install(&mut inner, groups);
        assign_inc(&mut inner, self.cfg.resolution_ms);
        inner.load_errors = errors.clone();
        inner.dirty = true;
        if errors.is_empty() {
            Ok(n)
        } else {
            Err(errors)
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Compiles the rules that fit into incremental plans for a job to build, and from now on
    /// reads their results from the returned store instead of evaluating them with the engine.
    /// Rules added or changed by a later reload are evaluated by the engine until the job
    /// builds its plans again (its next start).
    /// `workers`: how many workers feed the store (each reports its first tick; ticks before
    /// the latest first tick are evaluated by the engine).
    pub fn incremental(&self, workers: usize) -> (Arc<Plans>, Arc<Mutex<ResultStore>>) {
        let groups: Vec<Group> = self.lock().groups.iter().map(|g| g.group.clone()).collect();
        let compiled = super::incremental::compile(&groups, self.cfg.resolution_ms);
        let store = self.attach_incremental(&groups, &compiled, workers);
        (Arc::new(compiled.plans), store)
    }

    /// Reads the results of the plans `compiled` from `groups` (the rule files as the job's
    /// workers compiled them) from the returned store: each rule identical to one of them
    /// (same group, name, labels and expression with its recording rules inlined) uses its
    /// plan, the others stay with the engine.
    pub fn attach_incremental(
        &self,
        groups: &[Group],
        compiled: &super::incremental::Compiled,
        workers: usize,
    ) -> Arc<Mutex<ResultStore>> {
        let store = Arc::new(Mutex::new(ResultStore::new(&compiled.plans, workers)));
        let mut ids = HashMap::new();
        for (g, row) in groups.iter().zip(&compiled.rules) {
            for (r, c) in g.rules.iter().zip(row) {
                if let Some((id, text)) = c {
                    ids.insert(format!("{}\u{0}{text}", rule_key(g, r)), *id);
                }
            }
        }
        let mut inner = self.lock();
        inner.inc = Some(IncState {
            store: Arc::clone(&store),
            ids,
        });
        assign_inc(&mut inner, self.cfg.resolution_ms);
        store
    }

    /// How many rules are maintained incrementally.
    pub fn incremental_count(&self) -> usize {
        self.lock()
            .groups
            .iter()
            .flat_map(|g| g.inc.iter())
            .filter(|i| i.is_some())
            .count()
    }

    /// The last tick evaluated (restored from the state file at start).
    pub fn last_tick(&self) -> Option<u64> {
        self.lock().last_tick
    }

    /// Number of rules loaded.
    pub fn rule_count(&self) -> usize {
        self.lock().groups.iter().map(|g| g.group.rules.len()).sum()
    }

    /// Evaluates every group at the `ticks` (ascending) against `storage`, writes recorded and
    /// `ALERTS` samples to `writer`, sends the alert events to `sink`, then saves the state.
    /// Returns the events with their ticks.
    pub fn evaluate(
        &self,
        storage: &dyn Storage,
        ticks: &[u64],
        writer: &mut dyn SeriesWriter,
        sink: &dyn AlertSink,
    ) -> Vec<(u64, AlertEvent)> {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(&newest) = ticks.last() else {
            return Vec::new();
        };
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut events = Vec::new();
        let limits = Limits::default();
        let mut builder = BatchBuilder::new(&limits);
        let mut buf = SeriesBuf::default();
        let res = self.cfg.resolution_ms.max(1);
        let group_ticks = |gs: &GroupState| -> Vec<u64> {
            let interval = gs.group.interval_ms.map_or(res, |i| i.div_ceil(res) * res);
            ticks
                .iter()
                .copied()
                .filter(|t| t.is_multiple_of(interval))
                .collect()
        };
        // The incremental rules' vectors at their ticks, read once for the batch.
        let mut covered_from = None;
        let mut snaps = match &inner.inc {
            Some(inc) => {
                let want: Vec<(u32, Vec<u64>)> = inner
                    .groups
                    .iter()
                    .flat_map(|gs| {
                        let t = group_ticks(gs);
                        gs.inc.iter().flatten().map(move |&id| (id, t.clone()))
                    })
                    .collect();
                let mut store = inc.store.lock().unwrap_or_else(|e| e.into_inner());
                covered_from = store.covered_from();
                store.snapshots(&want)
            }
            None => HashMap::new(),
        };
        for gs in inner.groups.iter_mut() {
            let interval = gs.group.interval_ms.map_or(res, |i| i.div_ceil(res) * res);
            let gticks = group_ticks(gs);
            let (Some(&first), Some(&last)) = (gticks.first(), gticks.last()) else {
                continue;
            };
            let started = Instant::now();
            for (ri, rule) in gs.group.rules.iter().enumerate() {
                let t0 = Instant::now();
                // Ticks before the incremental results are complete go to the engine.
                let inc = gs.inc[ri]
                    .and_then(|id| snaps.remove(&id))
                    .filter(|at| at.len() == gticks.len());
                let counter = match inc {
                    Some(_) => &self.evaluations_incremental,
                    None => &self.evaluations,
                };
                if inc.is_none() && gs.inc[ri].is_some() {
                    tracing::debug!(
                        rule = %rule.name,
                        first,
                        last,
                        ?covered_from,
                        "an incremental rule's ticks go to the engine (its results are not complete for them)"
                    );
                }
                counter.fetch_add(gticks.len() as u64, Relaxed);
                let result = match inc {
                    Some(at) => at
                        .into_iter()
                        .map(|(_, r)| {
                            r.map(|v| {
                                v.into_iter()
                                    .map(|(l, x)| (Labels::from_pairs(l), x))
                                    .collect::<Vec<_>>()
                            })
                        })
                        .collect::<Result<Vec<_>, String>>()
                        .map_err(crate::query::QueryError::Execution),
                    None => {
                        let overlay = Overlay {
                            base: storage,
                            extra: &inner.overlay,
                        };
                        Engine::new(&overlay, first as i64, last as i64, interval as i64)
                            .and_then(|e| e.eval(&rule.expr))
                            .and_then(|v| match overlay.take_failure() {
                                // A partial answer would resolve alerts that still fire.
                                Some(f) => Err(crate::query::QueryError::Execution(format!(
                                    "incomplete data, ticks skipped: {f}"
                                ))),
                                None => Ok(v),
                            })
                            .map(|v| steps_of(v, gticks.len()))
                    }
                };
                let health = &mut gs.health[ri];
                health.evaluated = true;
                health.last_eval = last;
                let steps = match result {
                    Ok(v) => v,
                    Err(e) => {
                        self.eval_failures.fetch_add(1, Relaxed);
                        health.last_error = e.to_string();
                        health.eval_seconds = t0.elapsed().as_secs_f64();
                        continue;
                    }
                };
                let mut err = None;
                let mut out: Vec<(Labels, i64, f64)> = Vec::new();
                for (i, at) in steps.into_iter().enumerate() {
                    let t = gticks[i];
                    if gs.group.limit > 0 && at.len() > gs.group.limit {
                        err = Some(format!(
                            "exceeded limit of {} with {} series",
                            gs.group.limit,
                            at.len()
                        ));
                        continue;
                    }
                    let now: Vec<(Labels, f64)> = match &rule.kind {
                        RuleKind::Record => match record(rule, at) {
                            Ok(v) => v,
                            Err(e) => {
                                err = Some(e);
                                continue;
                            }
                        },
                        RuleKind::Alert {
                            for_ms,
                            keep_firing_for_ms,
                            annotations,
                        } => {
                            let key = rule_key(&gs.group, rule);
                            let machine = inner
                                .machines
                                .entry(key)
                                .or_insert_with(|| AlertMachine::new(*for_ms, *keep_firing_for_ms));
                            let mut actives = Vec::with_capacity(at.len());
                            let mut seen = HashSet::new();
                            // A template's `query` runs at this tick over what the rules see.
                            let overlay = Overlay {
                                base: storage,
                                extra: &inner.overlay,
                            };
                            let query = |q: &str| template_query(&overlay, q, t as i64);
                            for (labels, value) in at {
                                let data = TemplateData {
                                    labels: labels
                                        .iter()
                                        .filter(|(k, _)| *k != METRIC_NAME)
                                        .map(|(k, v)| (k.to_string(), v.to_string()))
                                        .collect(),
                                    external_labels: self.cfg.external_labels.clone(),
                                    external_url: self.cfg.external_url.clone(),
                                    value,
                                };
                                let mut l = labels.without_name();
                                for (k, _, tmpl) in &rule.labels {
                                    let v =
                                        tmpl.expand_with(&data, Some(&query)).unwrap_or_else(|e| {
                                            format!("<error expanding template: {e}>")
                                        });
                                    l.set(k, &v);
                                }
                                l.set("alertname", &rule.name);
                                if !seen.insert(l.clone()) {
                                    err = Some("vector contains metrics with the same labelset after applying alert labels".into());
                                    continue;
                                }
                                let ann = annotations
                                    .iter()
                                    .map(|(k, _, tmpl)| {
                                        let v =
                                            tmpl.expand_with(&data, Some(&query)).unwrap_or_else(
                                                |e| format!("<error expanding template: {e}>"),
                                            );
                                        (k.clone(), v)
                                    })
                                    .collect();
                                actives.push(Active {
                                    labels: l.into_pairs(),
                                    annotations: ann,
                                    value,
                                });
                            }
                            let transitions = machine.observe(t, actives);
                            if !transitions.is_empty() {
                                inner.dirty = true;
                            }
                            for tr in transitions {
                                let (a, resolved) = match tr {
                                    Transition::Pending(_) => continue,
                                    Transition::Firing(a) => (a, false),
                                    Transition::Resolved(a) => (a, true),
                                };
                                events.push((t, self.event(&a, resolved, &rule.expr_text, t)));
                            }
                            alerts_series(&rule.name, machine)
                        }
                    };
                    // Series written at the previous tick and absent now get a staleness marker.
                    let current: HashSet<Labels> = now.iter().map(|(l, _)| l.clone()).collect();
                    for gone in gs.written[ri].difference(&current) {
                        out.push((gone.clone(), t as i64, stale_nan()));
                    }
                    gs.written[ri] = current;
                    out.extend(now.into_iter().map(|(l, v)| (l, t as i64, v)));
                }
                health.last_error = err.unwrap_or_default();
                for (labels, t, v) in out {
                    buf.clear();
                    for (k, val) in labels.iter() {
                        buf.push(k.to_string().into(), val.to_string().into());
                    }
                    builder.add(&mut buf, t, v, 0);
                    let name = labels.metric_name().unwrap_or_default().to_string();
                    inner
                        .overlay
                        .by_name
                        .entry(name)
                        .or_default()
                        .entry(labels)
                        .or_default()
                        .push((t, v));
                }
                health.eval_seconds = t0.elapsed().as_secs_f64();
            }
            gs.last_eval = last;
            gs.eval_seconds = started.elapsed().as_secs_f64();
        }
        let (batch, errs, _) = builder.finish();
        if let Some(e) = errs.first() {
            tracing::warn!("rules produced an invalid series: {}", e.reason);
        }
        if !batch.samples.is_empty() {
            if let Err(e) = writer.write(batch) {
                self.eval_failures.fetch_add(1, Relaxed);
                tracing::warn!("cannot write recorded rule samples: {e}");
            }
        }
        let cutoff = newest as i64 - OVERLAY_KEEP_MS;
        inner.overlay.by_name.retain(|_, series| {
            series.retain(|_, s| {
                s.retain(|(t, _)| *t > cutoff);
                !s.is_empty()
            });
            !series.is_empty()
        });
        let mut list = std::mem::take(&mut inner.unsent);
        list.extend(events.iter().map(|(_, e)| e.clone()));
        let sent = list.is_empty()
            || {
                match sink.send(&list) {
                    Ok(()) => true,
                    Err(e) => {
                        self.eval_failures.fetch_add(1, Relaxed);
                        tracing::warn!(
                        "cannot hand {} alert events to the notifier (kept, sent with the next batch): {e}",
                        list.len()
                    );
                        inner.unsent = list;
                        false
                    }
                }
            };
        inner.last_tick = Some(newest);
        // The state moves on only once the notifier has the events: a crash before that
        // evaluates these ticks again.
        if sent && (inner.dirty || inner.last_saved.is_none_or(|s| s.elapsed().as_secs() >= 10)) {
            if let Err(e) = self.save(inner) {
                self.eval_failures.fetch_add(1, Relaxed);
                tracing::warn!("cannot save the alert state: {e}; after a restart, alerts would start over as pending (check that the data dir is writable)");
            }
        }
        events
    }

    fn event(
        &self,
        a: &tidemark_dataflows::rules::Alert,
        resolved: bool,
        expr: &str,
        t: u64,
    ) -> AlertEvent {
        let mut labels: BTreeMap<String, String> = self.cfg.external_labels.clone();
        labels.extend(a.labels.iter().cloned());
        AlertEvent {
            labels,
            annotations: a.annotations.iter().cloned().collect(),
            starts_at: a.active_at as i64,
            ends_at: if resolved { a.resolved_at as i64 } else { 0 },
            tick: t,
            generator_url: format!(
                "{}/graph?g0.expr={}&g0.tab=1",
                self.cfg.external_url.trim_end_matches('/'),
                serde_urlencoded::to_string([("", expr)])
                    .unwrap_or_default()
                    .trim_start_matches('=')
            ),
        }
    }

    fn save(&self, inner: &mut Inner) -> std::io::Result<()> {
        let Some(dir) = &self.cfg.state_dir else {
            return Ok(());
        };
        std::fs::create_dir_all(dir)?;
        let state = StateFile {
            last_tick: inner.last_tick,
            rules: inner
                .machines
                .iter()
                .filter(|(_, m)| !m.alerts.is_empty())
                .map(|(k, m)| SavedRule {
                    key: k.clone(),
                    machine: m.clone(),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&state).map_err(std::io::Error::other)?;
        let tmp = dir.join("rules-state.json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, dir.join("rules-state.json"))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        inner.dirty = false;
        inner.last_saved = Some(Instant::now());
        Ok(())
    }
}

fn install(inner: &mut Inner, groups: Vec<Group>) {
    let keep: HashSet<String> = groups
        .iter()
        .flat_map(|g| {
            g.rules
                .iter()
                .filter(|r| r.is_alert())
                .map(move |r| rule_key(g, r))
        })
        .collect();
    inner.machines.retain(|k, _| keep.contains(k));
    // A rule whose `for` changed keeps its alerts but counts with the new duration.
    for g in &groups {
        for r in &g.rules {
            if let RuleKind::Alert {
                for_ms,
                keep_firing_for_ms,
                ..
            } = r.kind
            {
                if let Some(m) = inner.machines.get_mut(&rule_key(g, r)) {
                    m.for_ms = for_ms;
                    m.keep_firing_for_ms = keep_firing_for_ms;
                }
            }
        }
    }
    inner.groups = groups
        .into_iter()
        .map(|group| {
            let n = group.rules.len();
            GroupState {
                group,
                health: vec![RuleHealth::default(); n],
                written: vec![HashSet::new(); n],
                inc: vec![None; n],
                last_eval: 0,
                eval_seconds: 0.0,
            }
        })
        .collect();
}

/// Per step, the `(labels, value)` the expression returned.
/// A rule template's `query "expr"`: the instant vector (or scalar) at `t`.
fn template_query(storage: &dyn Storage, q: &str, t: i64) -> super::template::QueryResult {
    let expr = promql_parser::parser::parse(q)?;
    let v = Engine::new(storage, t, t, 1)
        .and_then(|e| e.eval(&expr))
        .map_err(|e| e.to_string())?;
    Ok(steps_of(v, 1)
        .pop()
        .unwrap_or_default()
        .into_iter()
        .map(|(l, x)| {
            (
                l.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                x,
            )
        })
        .collect())
}

fn steps_of(v: Value, n: usize) -> Vec<Vec<(Labels, f64)>> {
    let mut steps: Vec<Vec<(Labels, f64)>> = vec![Vec::new(); n];
    match v {
        Value::Scalar(s) => {
            for (i, x) in s.into_iter().enumerate().take(n) {
                steps[i].push((Labels::empty(), x));
            }
        }
        Value::Vector(vs) => {
            for s in vs {
                for (i, x) in s.values.iter().enumerate().take(n) {
                    if let Some(x) = x {
                        steps[i].push((s.labels.clone(), *x));
                    }
                }
            }
        }
        Value::Matrix(_) | Value::String(_) => {}
    }
    steps
}

/// A recording rule's output at one step.
fn record(rule: &Rule, at: Vec<(Labels, f64)>) -> Result<Vec<(Labels, f64)>, String> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(at.len());
    for (mut l, v) in at {
        l.set(METRIC_NAME, &rule.name);
        for (k, v, _) in &rule.labels {
            l.set(k, v);
        }
        if !seen.insert(l.clone()) {
            return Err(
                "vector contains metrics with the same labelset after applying rule labels".into(),
            );
        }
        out.push((l, v));
    }
    Ok(out)
}

/// `ALERTS` and `ALERTS_FOR_STATE` samples of a rule's active alerts.
fn alerts_series(name: &str, m: &AlertMachine) -> Vec<(Labels, f64)> {
    let mut out = Vec::new();
    for a in m.active() {
        let mut l = Labels::from_pairs(a.labels.iter().cloned());
        l.set("alertname", name);
        let mut alerts = l.clone();
        alerts.set(METRIC_NAME, "ALERTS");
        alerts.set(
            "alertstate",
            if a.status == AlertStatus::Firing {
                "firing"
            } else {
                "pending"
            },
        );
        out.push((alerts, 1.0));
        let mut for_state = l;
        for_state.set(METRIC_NAME, "ALERTS_FOR_STATE");
        out.push((for_state, (a.active_at / 1000) as f64));
    }
    out
}

/// Recorded samples by metric name and series.
#[derive(Default)]
struct OverlayData {
    by_name: HashMap<String, HashMap<Labels, Vec<(i64, f64)>>>,
}

/// The store plus what rules recorded and the store has not read back yet.
struct Overlay<'a> {
    base: &'a dyn Storage,
    extra: &'a OverlayData,
}

impl Storage for Overlay<'_> {
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<Series> {
        let mut out = self.base.select(matchers, start, end);
        if self.extra.by_name.is_empty() {
            return out;
        }
        // A selector names its metric nearly always: look only at that name's series.
        let named = matchers.iter().find_map(|m| match &m.op {
            crate::store::hot::index::MatchOp::Eq(v) if m.name == METRIC_NAME => Some(v),
            _ => None,
        });
        let candidates: Vec<(&Labels, &Vec<(i64, f64)>)> = match named {
            Some(n) => self
                .extra
                .by_name
                .get(n)
                .map(|m| m.iter().collect())
                .unwrap_or_default(),
            None => self.extra.by_name.values().flat_map(|m| m.iter()).collect(),
        };
        let mut index: HashMap<Labels, usize> = HashMap::new();
        for (labels, samples) in candidates {
            if !matchers
                .iter()
                .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
            {
                continue;
            }
            let mine: Vec<(i64, f64)> = samples
                .iter()
                .copied()
                .filter(|(t, _)| (start..=end).contains(t))
                .collect();
            if mine.is_empty() {
                continue;
            }
            if index.is_empty() {
                index = out
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.labels.clone(), i))
                    .collect();
            }
            match index.get(labels) {
                Some(&i) => {
                    let s = &mut out[i].samples;
                    let mut merged: BTreeMap<i64, f64> = s.iter().copied().collect();
                    merged.extend(mine);
                    *s = merged.into_iter().collect();
                }
                None => {
                    index.insert(labels.clone(), out.len());
                    out.push(Series {
                        labels: labels.clone(),
                        samples: mine,
                    });
                }
            }
        }
        // A series whose every sample in range is a staleness marker is not there.
        out.retain(|s| !s.samples.iter().all(|(_, v)| is_stale_nan(*v)));
        out
    }

    fn take_failure(&self) -> Option<String> {
        self.base.take_failure()
    }
}

/// The job's evaluator: [`Rules::evaluate`] against the hot index.
pub struct RuleEvaluator {
    pub rules: Arc<Rules>,
    pub storage: Arc<dyn Storage>,
    pub writer: Box<dyn SeriesWriter>,
    pub sink: Arc<dyn AlertSink>,
}

/// Series x ticks an engine evaluation of the rules covers at most (about 16 bytes each).
const EVAL_CELLS: usize = 4_000_000;

impl TickEvaluator for RuleEvaluator {
    type Output = AlertEvent;

    fn resume_after(&self) -> Option<u64> {
        self.rules.last_tick()
    }

    fn start_at(&self) -> Option<u64> {
        self.storage
            .oldest_sample()
            .and_then(|t| u64::try_from(t).ok())
    }

    fn evaluate(&mut self, ticks: &[u64], out: &mut Vec<(u64, AlertEvent)>) {
        // The engine holds a value per series and tick of a batch: a catch-up (restart,
        // backfill) over many ticks goes in slices of at most `EVAL_CELLS` series x ticks.
        let per = (EVAL_CELLS / self.storage.series_hint().max(1)).clamp(1, ticks.len().max(1));
        for slice in ticks.chunks(per) {
            out.extend(
                self.rules
                    .evaluate(&*self.storage, slice, &mut *self.writer, &*self.sink),
            );
        }
    }
}

/// Appends recorded samples to the embedded log.
pub struct LogWriter(pub crate::transport::log::Log);

impl SeriesWriter for LogWriter {
    fn write(&mut self, batch: WriteBatch) -> Result<(), String> {
        let Some((lo, hi)) = batch.time_range() else {
            return Ok(());
        };
        let mut payload = Vec::new();
        crate::transport::codec::encode(&batch, &mut payload);
        self.0
            .append(crate::transport::log::RecordKind::Batch, lo, hi, &payload)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Keeps the events in memory (tests, and `up` without a notifier).
#[derive(Default)]
pub struct MemorySink(pub Mutex<Vec<AlertEvent>>);

impl AlertSink for MemorySink {
    fn send(&self, events: &[AlertEvent]) -> Result<(), String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(events);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::promqltest::MemStorage;

    struct Collect(Vec<WriteBatch>);
    impl SeriesWriter for Collect {
        fn write(&mut self, batch: WriteBatch) -> Result<(), String> {
            self.0.push(batch);
            Ok(())
        }
    }

    fn rules_from(text: &str, dir: Option<PathBuf>) -> Arc<Rules> {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        let (_file, path) = f.keep().unwrap();
        let (r, errs) = Rules::open(RuleConfig {
            files: vec![path],
            state_dir: dir,
            resolution_ms: 1000,
            external_url: "http://tm".into(),
            ..Default::default()
        });
        assert!(errs.is_empty(), "{errs:?}");
        r
    }

    fn store(points: &[(&str, &str, i64, f64)]) -> MemStorage {
        let mut s = MemStorage::default();
        for (name, host, t, v) in points {
            s.add(
                Labels::from_pairs([("__name__", *name), ("host", *host)]),
                [(*t, *v)],
            );
        }
        s
    }

    fn ticks(a: u64, b: u64) -> Vec<u64> {
        (a..=b).step_by(1000).collect()
    }

    #[test]
    fn pending_firing_resolved_on_event_time() {
        let rules = rules_from(
            "groups:\n- name: g\n  rules:\n  - alert: High\n    expr: cpu > 90\n    for: 3s\n    annotations: {summary: '{{ $labels.host }} at {{ $value }}'}\n",
            None,
        );
        // cpu of host a: 95 from 1 s to 6 s, then 10.
        let mut pts = Vec::new();
        for t in 1..=10 {
            pts.push(("cpu", "a", t * 1000, if t <= 6 { 95.0 } else { 10.0 }));
        }
        let s = store(&pts);
        let sink = MemorySink::default();
        let mut w = Collect(Vec::new());
        let ev = rules.evaluate(&s, &ticks(1000, 10_000), &mut w, &sink);
        let got: Vec<(u64, bool)> = ev.iter().map(|(t, e)| (*t, e.is_resolved())).collect();
        assert_eq!(got, vec![(4000, false), (7000, true)]);
        let fire = &ev[0].1;
        assert_eq!(fire.starts_at, 1000);
        assert_eq!(fire.labels["alertname"], "High");
        assert_eq!(fire.annotations["summary"], "a at 95");
        assert!(fire
            .generator_url
            .starts_with("http://tm/graph?g0.expr=cpu+%3E+90"));
        assert_eq!(ev[1].1.ends_at, 7000);
        // ALERTS: pending at 1-3 s, firing 4-6 s, stale at 7 s.
        let b = &w.0[0];
        let alerts: Vec<(i64, String)> = b
            .samples
            .iter()
            .filter_map(|s| {
                let l = b.labels(s.series as usize);
                (l.metric_name() == Some("ALERTS")).then(|| {
                    let st = if is_stale_nan(s.value) {
                        "stale"
                    } else {
                        l.get("alertstate").unwrap_or("")
                    };
                    (s.ts, st.to_string())
                })
            })
            .collect();
        assert_eq!(alerts.iter().filter(|(_, s)| s == "pending").count(), 3);
        assert_eq!(alerts.iter().filter(|(_, s)| s == "firing").count(), 3);
        assert!(
            alerts.contains(&(4000, "stale".into())),
            "pending series ends when firing starts: {alerts:?}"
        );
        assert!(alerts.contains(&(7000, "stale".into())), "{alerts:?}");
    }

    #[test]
    fn template_queries_run_at_the_alerts_tick() {
        let rules = rules_from(
            "groups:\n- name: g\n  rules:\n  - alert: High\n    expr: cpu > 90\n    annotations:\n      low: '{{ range query \"cpu < 50\" }}{{ .Labels.host }} {{ end }}'\n      max: '{{ query \"max(cpu)\" | first | value }}'\n      bad: '{{ query \"max(\" }}'\n",
            None,
        );
        // a: 95 throughout; b: 10 at 1 s, 99 from 2 s.
        let mut pts = Vec::new();
        for t in 1..=3 {
            pts.push(("cpu", "a", t * 1000, 95.0));
            pts.push(("cpu", "b", t * 1000, if t == 1 { 10.0 } else { 99.0 }));
        }
        let s = store(&pts);
        let mut w = Collect(Vec::new());
        let ev = rules.evaluate(&s, &ticks(1000, 3000), &mut w, &MemorySink::default());
        let a = &ev[0].1;
        assert_eq!((ev[0].0, a.labels["host"].as_str()), (1000, "a"));
        assert_eq!(
            a.annotations["low"], "b ",
            "as of 1 s, not of the newest tick"
        );
        assert_eq!(a.annotations["max"], "95");
        assert!(
            a.annotations["bad"].starts_with("<error expanding template: query:"),
            "{:?}",
            a.annotations["bad"]
        );
        let b = ev.iter().find(|(_, e)| e.labels["host"] == "b").unwrap();
        assert_eq!((b.0, b.1.annotations["max"].as_str()), (2000, "99"));
    }

    /// A sink that refuses while `down`.
    struct Flaky {
        down: std::sync::atomic::AtomicBool,
        got: Mutex<Vec<AlertEvent>>,
    }
    impl AlertSink for Flaky {
        fn send(&self, events: &[AlertEvent]) -> Result<(), String> {
            if self.down.load(std::sync::atomic::Ordering::Relaxed) {
                return Err("brokers down".into());
            }
            self.got.lock().unwrap().extend_from_slice(events);
            Ok(())
        }
    }

    /// A store whose remote part did not answer.
    struct Partial(MemStorage);
    impl Storage for Partial {
        fn select(&self, m: &[Matcher], start: i64, end: i64) -> Vec<Series> {
            self.0.select(m, start, end)
        }
        fn take_failure(&self) -> Option<String> {
            Some("peer 1 refused".into())
        }
    }

    #[test]
    fn refused_events_are_kept_and_partial_answers_skip_the_tick() {
        let rules = rules_from(
            "groups:\n- name: g\n  rules:\n  - alert: High\n    expr: cpu > 90\n",
            None,
        );
        let s = store(&[("cpu", "a", 1000, 95.0), ("cpu", "a", 2000, 10.0)]);
        let sink = Flaky {
            down: true.into(),
            got: Mutex::new(Vec::new()),
        };
        let mut w = Collect(Vec::new());
        assert_eq!(rules.evaluate(&s, &[1000], &mut w, &sink).len(), 1);
        assert!(sink.got.lock().unwrap().is_empty());
        sink.down.store(false, std::sync::atomic::Ordering::Relaxed);
        // The resolve at 2 s goes out after the firing event kept from 1 s.
        rules.evaluate(&s, &[2000], &mut w, &sink);
        let got: Vec<bool> = sink
            .got
            .lock()
            .unwrap()
            .iter()
            .map(AlertEvent::is_resolved)
            .collect();
        assert_eq!(got, vec![false, true]);
        // A partial answer neither fires nor resolves; the rule shows the error.
        let s = store(&[("cpu", "a", 3000, 95.0)]);
        let ev = rules.evaluate(&Partial(s), &[3000], &mut w, &sink);
        assert!(ev.is_empty());
        let data = rules.api_rules("", &[], &[]);
        let err = data["groups"][0]["rules"][0]["lastError"].as_str().unwrap();
        assert!(
            err.contains("incomplete data") && err.contains("peer 1 refused"),
            "{err}"
        );
    }

    #[test]
    fn later_rules_see_earlier_recordings_at_the_same_tick() {
        let rules = rules_from(
            "groups:\n- name: g\n  rules:\n  - record: total:cpu\n    expr: sum(cpu)\n  - alert: TotalHigh\n    expr: total:cpu > 150\n",
            None,
        );
        let s = store(&[("cpu", "a", 1000, 80.0), ("cpu", "b", 1000, 80.0)]);
        let sink = MemorySink::default();
        let ev = rules.evaluate(&s, &[1000], &mut Collect(Vec::new()), &sink);
        assert_eq!(ev.len(), 1, "fires at the first tick (for: 0)");
        let data = rules.api_rules("", &[], &[]);
        let r = &data["groups"][0]["rules"];
        assert_eq!(r[0]["type"], "recording");
        assert_eq!(r[0]["health"], "ok");
        assert_eq!(r[1]["state"], "firing");
        assert_eq!(r[1]["alerts"][0]["value"], "1.6e+02");
    }

    #[test]
    fn state_survives_a_restart_and_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let text =
            "groups:\n- name: g\n  rules:\n  - alert: Down\n    expr: up == 0\n    for: 5s\n";
        let f = dir.path().join("r.yml");
        std::fs::write(&f, text).unwrap();
        let open = || {
            Rules::open(RuleConfig {
                files: vec![f.clone()],
                state_dir: Some(dir.path().join("state")),
                resolution_ms: 1000,
                ..Default::default()
            })
            .0
        };
        let pts: Vec<_> = (1..=10).map(|t| ("up", "a", t * 1000, 0.0)).collect();
        let s = store(&pts);
        let sink = MemorySink::default();
        let r = open();
        assert!(r
            .evaluate(&s, &ticks(1000, 3000), &mut Collect(vec![]), &sink)
            .is_empty());
        drop(r);
        // Restarted: pending since 1 s, so it fires at 6 s, not 5 s after the restart.
        let r = open();
        assert_eq!(r.last_tick(), Some(3000));
        let ev = r.evaluate(&s, &ticks(4000, 8000), &mut Collect(vec![]), &sink);
        assert_eq!(ev.len(), 1);
        assert_eq!((ev[0].0, ev[0].1.starts_at), (6000, 1000));
        // A reload with the same rule keeps the firing alert: no new event.
        std::fs::write(&f, format!("{text}  - record: x\n    expr: up\n")).unwrap();
        assert_eq!(r.reload().unwrap(), 2);
        assert!(r
            .evaluate(&s, &[9000], &mut Collect(vec![]), &sink)
            .is_empty());
        // A broken file is refused and its running rules stay.
        std::fs::write(&f, "groups: [").unwrap();
        let errs = r.reload().unwrap_err();
        assert!(errs[0].to_string().contains("r.yml"), "{errs:?}");
        assert_eq!(r.rule_count(), 2);
        assert!(
            r.evaluate(&s, &[10_000], &mut Collect(vec![]), &sink)
                .is_empty(),
            "still firing, no new event"
        );
    }

    #[test]
    fn evaluation_errors_are_reported_per_rule() {
        let rules = rules_from(
            "groups:\n- name: g\n  rules:\n  - record: dup\n    expr: label_replace(cpu, 'host', 'x', '', '')\n  - record: fine\n    expr: cpu\n",
            None,
        );
        let s = store(&[("cpu", "a", 1000, 1.0), ("cpu", "b", 1000, 2.0)]);
        rules.evaluate(&s, &[1000], &mut Collect(vec![]), &MemorySink::default());
        let d = rules.api_rules("record", &[], &[]);
        assert_eq!(d["groups"][0]["rules"][0]["health"], "err", "{d}");
        assert_eq!(d["groups"][0]["rules"][1]["health"], "ok");
    }
}

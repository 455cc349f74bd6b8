//! The alert manager: takes alert events (from the rules, or `POST /api/v2/alerts`), routes
//! them through the route tree into aggregation groups, and on each group's timers
//! (`group_wait`, `group_interval`, `repeat_interval`, wall clock as in Alertmanager) decides
//! with the notification log whether the receivers must hear about it. Silenced and inhibited
//! alerts are left out. Notifications go into a durable outbox, one entry per receiver
//! integration, delivered with retries (exponential backoff with jitter, a give-up age).
//!
//! Everything (alerts, groups, notification log, outbox, silences) is one state file,
//! `<state_dir>/notifier-state.json`, written atomically before [`Notifier::ingest`] returns
//! and after every flush and delivery: a restart loses no queued notification, and the log
//! keeps it from sending again what it already sent. Delivery is at least once: a crash
//! between a receiver's answer and the state write sends that notification again.

pub mod config;
pub mod receivers;
pub mod silences;
pub mod templates;

use crate::time::now_ms;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use self::config::NotifyConfig;
use self::receivers::{integrations, DeliveryError, Integration, Notification, NotifiedAlert};
use self::silences::Silence;
use super::eval::{AlertEvent, AlertSink};
use crate::time::rfc3339;

/// Alertmanager's fingerprint of a label set (16 hex digits).
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut buf = Vec::new();
    crate::model::canonical_encode(
        labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &mut buf,
    );
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&buf))
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredAlert {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    starts_at: i64,
    ends_at: i64,
    generator_url: String,
    /// Wall time of the last update.
    updated: i64,
}

impl StoredAlert {
    fn resolved(&self) -> bool {
        self.ends_at > 0
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct AggGroup {
    route_key: String,
    receiver: String,
    group_labels: BTreeMap<String, String>,
    alerts: BTreeSet<String>,
    /// Wall time of the next flush.
    next_flush: i64,
    flushed: bool,
    group_wait: i64,
    group_interval: i64,
    repeat_interval: i64,
    /// The oldest ingest sequence number among the events the group took since its last
    /// flush: they are not delivered yet.
    #[serde(default)]
    hold: Option<u64>,
}

/// What was last sent (queued) to one integration for one group.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct LogEntry {
    firing: BTreeSet<String>,
    resolved: BTreeSet<String>,
    at: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct OutboxEntry {
    id: u64,
    integration: Integration,
    notification: Notification,
    queued: i64,
    attempts: u32,
    next_attempt: i64,
    last_error: String,
    #[serde(default)]
    in_flight: bool,
    /// The oldest ingest sequence number this notification carries (see [`Notifier::ingest`]).
    #[serde(default)]
    hold: Option<u64>,
}

#[derive(Default, Serialize, Deserialize)]
struct State {
    alerts: BTreeMap<String, StoredAlert>,
    /// By group key (`route key` + `:` + group labels) and receiver.
    groups: BTreeMap<String, AggGroup>,
    /// By `receiver/integration/group key`.
    nlog: BTreeMap<String, LogEntry>,
    outbox: Vec<OutboxEntry>,
    silences: BTreeMap<String, Silence>,
    next_id: u64,
    /// Delivered notifications (the last 1,000), newest last: `(wall ms, receiver, integration, group key, status)`.
    delivered: std::collections::VecDeque<(i64, String, String, String, String)>,
    /// The sequence number the next [`Notifier::ingest`] gets.
    #[serde(default)]
    next_seq: u64,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct NotifyMetrics {
    /// `(receiver, integration kind)` -> sent.
    pub sent: Mutex<BTreeMap<(String, String), u64>>,
    /// `(receiver, integration kind, reason)` -> failed attempts.
    pub failed: Mutex<BTreeMap<(String, String, String), u64>>,
    /// `(receiver, integration kind)` -> notifications dropped after the give-up age or a
    /// permanent error.
    pub dropped: Mutex<BTreeMap<(String, String), u64>>,
    pub alerts_received: AtomicU64,
    pub state_write_failures: AtomicU64,
}

/// The alert manager.
pub struct Notifier {
    cfg: RwLock<Arc<NotifyConfig>>,
    state: Mutex<State>,
    path: Option<PathBuf>,
    external_url: String,
    wake: tokio::sync::Notify,
    pub metrics: NotifyMetrics,
    started: i64,
}

fn group_key(route_key: &str, labels: &BTreeMap<String, String>) -> String {
    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{route_key}:{{{}}}", l.join(", "))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Notifier {
    /// A notifier with `cfg`, keeping its state under `state_dir` (none: in memory only).
    pub fn open(
        cfg: NotifyConfig,
        state_dir: Option<PathBuf>,
        external_url: String,
    ) -> std::io::Result<Arc<Notifier>> {
        let path = state_dir.map(|d| d.join("notifier-state.json"));
        let mut state = State::default();
        if let Some(p) = &path {
            match std::fs::read(p) {
                Ok(b) => match serde_json::from_slice::<State>(&b) {
                    Ok(s) => state = s,
                    Err(e) => tracing::warn!("ignoring unreadable {}: {e}", p.display()),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            for o in &mut state.outbox {
                o.in_flight = false;
            }
        }
        Ok(Arc::new(Notifier {
            cfg: RwLock::new(Arc::new(cfg)),
            state: Mutex::new(state),
            path,
            external_url,
            wake: tokio::sync::Notify::new(),
            metrics: NotifyMetrics::default(),
            started: now_ms(),
        }))
    }

    pub fn config(&self) -> Arc<NotifyConfig> {
        Arc::clone(&self.cfg.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Swaps the configuration; groups are kept (their timers follow the new routes from the
    /// next alert on).
    pub fn set_config(&self, cfg: NotifyConfig) {
        *self.cfg.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(cfg);
        self.wake.notify_one();
    }

    fn save(&self, st: &State) -> Result<(), String> {
        let Some(p) = &self.path else { return Ok(()) };
        let res = (|| -> std::io::Result<()> {
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d)?;
            }
            let tmp = p.with_extension("json.tmp");
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&serde_json::to_vec(st).map_err(std::io::Error::other)?)?;
                f.sync_data()?;
            }
            std::fs::rename(&tmp, p)?;
            if let Some(d) = p.parent() {
                if let Ok(d) = std::fs::File::open(d) {
                    let _ = d.sync_all();
                }
            }
            Ok(())
        })();
        res.map_err(|e| {
            self.metrics
                .state_write_failures
                .fetch_add(1, Ordering::Relaxed);
            format!("writing {}: {e}", p.display())
        })
    }

    /// Takes alert events: stores them, puts them into their groups, and saves the state
    /// before returning. Returns the call's sequence number: once [`Notifier::delivered_below`]
    /// is above it, every notification these events caused has been delivered (or given up
    /// after the delivery policy's give-up age), or was not needed (deduplicated, silenced,
    /// inhibited). `tidemark notify` commits Kafka offsets by it.
    pub fn ingest(&self, events: &[AlertEvent]) -> Result<u64, String> {
        let now = now_ms();
        let cfg = self.config();
        let mut st = lock(&self.state);
        let seq = st.next_seq;
        st.next_seq += 1;
        for e in events {
            self.metrics.alerts_received.fetch_add(1, Ordering::Relaxed);
            let fp = fingerprint(&e.labels);
            let alert = StoredAlert {
                labels: e.labels.clone(),
                annotations: e.annotations.clone(),
                starts_at: e.starts_at,
                ends_at: e.ends_at,
                generator_url: e.generator_url.clone(),
                updated: now,
            };
            // An alert resolved and then firing again keeps one fingerprint: the newer wins.
            st.alerts.insert(fp.clone(), alert);
            let mut routes = Vec::new();
            cfg.route.matching(&e.labels, &mut routes);
            for r in routes {
                let gl: BTreeMap<String, String> = match &r.group_by {
                    None => e.labels.clone(),
                    Some(by) => by
                        .iter()
                        .filter_map(|k| e.labels.get(k).map(|v| (k.clone(), v.clone())))
                        .collect(),
                };
                let key = group_key(&r.key, &gl);
                let g = st.groups.entry(key).or_insert_with(|| AggGroup {
                    route_key: r.key.clone(),
                    receiver: r.receiver.clone(),
                    group_labels: gl,
                    alerts: BTreeSet::new(),
                    next_flush: now + r.group_wait as i64,
                    flushed: false,
                    group_wait: r.group_wait as i64,
                    group_interval: r.group_interval as i64,
                    repeat_interval: r.repeat_interval as i64,
                    hold: None,
                });
                g.alerts.insert(fp.clone());
                g.hold.get_or_insert(seq);
            }
        }
        let res = self.save(&st);
        drop(st);
        self.wake.notify_one();
        res.map(|()| seq)
    }

    /// Every [`Notifier::ingest`] with a sequence number below this is done: its groups have
    /// flushed since and the notifications they queued have left the outbox.
    pub fn delivered_below(&self) -> u64 {
        let st = lock(&self.state);
        let groups = st.groups.values().filter_map(|g| g.hold);
        let outbox = st.outbox.iter().filter_map(|o| o.hold);
        groups.chain(outbox).min().unwrap_or(st.next_seq)
    }

    fn muted(
        &self,
        cfg: &NotifyConfig,
        st: &State,
        a: &StoredAlert,
        fp: &str,
        now: i64,
    ) -> (Vec<String>, Vec<String>) {
        let silenced: Vec<String> = st
            .silences
            .values()
            .filter(|s| s.mutes(&a.labels, now))
            .map(|s| s.id.clone())
            .collect();
        let mut inhibited = Vec::new();
        for rule in &cfg.inhibit_rules {
            if !rule.target_matchers.iter().all(|m| m.matches(&a.labels)) {
                continue;
            }
            for (sfp, s) in &st.alerts {
                if sfp == fp || s.resolved() {
                    continue;
                }
                if rule.source_matchers.iter().all(|m| m.matches(&s.labels))
                    && rule
                        .equal
                        .iter()
                        .all(|l| s.labels.get(l) == a.labels.get(l))
                {
                    inhibited.push(sfp.clone());
                }
            }
        }
        (silenced, inhibited)
    }

    /// Flushes the groups that are due and queues what must be sent; returns the wall time of
    /// the next group timer.
    fn flush_due(&self, now: i64) -> i64 {
        let cfg = self.config();
        let mut st = lock(&self.state);
        let due: Vec<String> = st
            .groups
            .iter()
            .filter(|(_, g)| g.next_flush <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let mut changed = false;
        for key in due {
            changed = true;
            let g = st.groups[&key].clone();
            let mut firing = BTreeSet::new();
            let mut resolved = BTreeSet::new();
            let mut alerts = Vec::new();
            for fp in &g.alerts {
                let Some(a) = st.alerts.get(fp) else { continue };
                let (s, i) = self.muted(&cfg, &st, a, fp, now);
                if (!s.is_empty() || !i.is_empty()) && !a.resolved() {
                    continue;
                }
                if a.resolved() {
                    resolved.insert(fp.clone());
                } else {
                    firing.insert(fp.clone());
                }
                alerts.push(NotifiedAlert {
                    labels: a.labels.clone(),
                    annotations: a.annotations.clone(),
                    starts_at: a.starts_at,
                    ends_at: a.ends_at,
                    generator_url: a.generator_url.clone(),
                    fingerprint: fp.clone(),
                });
            }
            if let Some(r) = cfg.receivers.get(&g.receiver) {
                for (integ, send_resolved) in integrations(r) {
                    let nkey = format!("{}/{}/{}", g.receiver, integ, key);
                    let entry = st.nlog.get(&nkey);
                    if !needs_update(
                        entry,
                        &firing,
                        &resolved,
                        send_resolved,
                        g.repeat_interval,
                        now,
                    ) {
                        continue;
                    }
                    let list: Vec<NotifiedAlert> = alerts
                        .iter()
                        .filter(|a| send_resolved || !a.resolved())
                        .cloned()
                        .collect();
                    st.nlog.insert(
                        nkey,
                        LogEntry {
                            firing: firing.clone(),
                            resolved: resolved.clone(),
                            at: now,
                        },
                    );
                    if list.is_empty() {
                        continue;
                    }
                    let id = st.next_id;
                    st.next_id += 1;
                    st.outbox.push(OutboxEntry {
                        id,
                        integration: integ,
                        notification: Notification {
                            receiver: g.receiver.clone(),
                            group_key: key.clone(),
                            group_labels: g.group_labels.clone(),
                            alerts: list,
                            external_url: self.external_url.clone(),
                            truncated: 0,
                        },
                        queued: now,
                        attempts: 0,
                        next_attempt: now,
                        last_error: String::new(),
                        in_flight: false,
                        hold: g.hold,
                    });
                }
            }
            // Resolved alerts that were in this flush leave the group; an empty group ends.
            let g = st.groups.get_mut(&key).expect("group");
            g.alerts.retain(|fp| !resolved.contains(fp));
            g.flushed = true;
            g.hold = None;
            g.next_flush = now + g.group_interval;
            if g.alerts.is_empty() {
                st.groups.remove(&key);
                let prefix_keys: Vec<String> = st
                    .nlog
                    .keys()
                    .filter(|k| k.ends_with(&format!("/{key}")))
                    .cloned()
                    .collect();
                for k in prefix_keys {
                    st.nlog.remove(&k);
                }
            }
        }
        if changed {
            // Forget resolved alerts no group holds any more.
            let held: BTreeSet<String> = st
                .groups
                .values()
                .flat_map(|g| g.alerts.iter().cloned())
                .collect();
            st.alerts.retain(|fp, a| !a.resolved() || held.contains(fp));
            if let Err(e) = self.save(&st) {
                tracing::info!("{e}");
            }
        }
        st.groups
            .values()
            .map(|g| g.next_flush)
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Outbox entries due now, marked in flight.
    fn take_due(&self, now: i64) -> (Vec<OutboxEntry>, i64) {
        let mut st = lock(&self.state);
        let mut due = Vec::new();
        let mut next = i64::MAX;
        for o in st.outbox.iter_mut() {
            if o.in_flight {
                continue;
            }
            if o.next_attempt <= now {
                o.in_flight = true;
                due.push(o.clone());
            } else {
                next = next.min(o.next_attempt);
            }
        }
        (due, next)
    }

    fn finish(&self, id: u64, result: Result<(), DeliveryError>) {
        let cfg = self.config();
        let now = now_ms();
        let mut st = lock(&self.state);
        let Some(pos) = st.outbox.iter().position(|o| o.id == id) else {
            return;
        };
        let o = &mut st.outbox[pos];
        o.in_flight = false;
        o.attempts += 1;
        let key = (o.notification.receiver.clone(), o.integration.kind.clone());
        match result {
            Ok(()) => {
                *lock(&self.metrics.sent).entry(key).or_default() += 1;
                let o = st.outbox.remove(pos);
                st.delivered.push_back((
                    now,
                    o.notification.receiver.clone(),
                    o.integration.to_string(),
                    o.notification.group_key.clone(),
                    o.notification.status().to_string(),
                ));
                while st.delivered.len() > 1000 {
                    st.delivered.pop_front();
                }
            }
            Err(e) => {
                *lock(&self.metrics.failed)
                    .entry((key.0.clone(), key.1.clone(), e.reason.to_string()))
                    .or_default() += 1;
                let give_up = cfg.delivery.give_up_after.0 as i64;
                if !e.retry || now - o.queued >= give_up {
                    tracing::error!(
                        "giving up on {} {} for {} after {} attempts: {}",
                        key.0,
                        o.integration,
                        o.notification.group_key,
                        o.attempts,
                        e.message
                    );
                    *lock(&self.metrics.dropped).entry(key).or_default() += 1;
                    st.outbox.remove(pos);
                } else {
                    let base = cfg.delivery.initial_backoff.0.max(1) as f64;
                    let max = cfg.delivery.max_backoff.0.max(1) as f64;
                    let backoff = (base * 2f64.powi(o.attempts.min(30) as i32 - 1)).min(max);
                    // Full jitter on half of it: between backoff/2 and backoff.
                    let jitter = jitter_fraction(o.id ^ (o.attempts as u64) << 32 ^ now as u64);
                    o.next_attempt = now + (backoff * (0.5 + 0.5 * jitter)) as i64;
                    o.last_error = e.message.clone();
                    if o.attempts == 1 || o.attempts.is_multiple_of(10) {
                        tracing::warn!(
                            "{} {} failed (attempt {}, retrying): {}",
                            key.0,
                            o.integration,
                            o.attempts,
                            e.message
                        );
                    }
                }
            }
        }
        if let Err(e) = self.save(&st) {
            tracing::info!("{e}");
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Runs the timers and deliveries until the runtime stops.
    pub async fn run(self: Arc<Self>) {
        loop {
            let now = now_ms();
            let next_group = self.flush_due(now);
            let (due, next_retry) = self.take_due(now);
            for o in due {
                let me = Arc::clone(&self);
                tokio::spawn(async move {
                    let cfg = me.config();
                    let timeout = Duration::from_millis(cfg.delivery.timeout.0.max(1));
                    let (n, integ, id) = (o.notification, o.integration, o.id);
                    let res = match cfg.receivers.get(&n.receiver) {
                        Some(r) => {
                            let (r, g) = (r.clone(), cfg.global.clone());
                            let defs = Arc::clone(&cfg.templates);
                            tokio::task::spawn_blocking(move || {
                                receivers::deliver(&r, &g, &defs, &integ, &n, timeout)
                            })
                            .await
                            .unwrap_or_else(|e| {
                                Err(DeliveryError {
                                    reason: "other",
                                    message: format!("delivery task failed: {e}"),
                                    retry: true,
                                })
                            })
                        }
                        None => Err(DeliveryError {
                            reason: "config",
                            message: format!("receiver {:?} is no longer configured", n.receiver),
                            retry: false,
                        }),
                    };
                    me.finish(id, res);
                });
            }
            let next = next_group.min(next_retry);
            let wait = (next - now_ms()).clamp(1, 1000) as u64;
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            }
        }
    }

    /// Adds or replaces a silence; returns its id.
    pub fn put_silence(&self, p: silences::PostableSilence) -> Result<String, String> {
        let now = now_ms();
        let mut st = lock(&self.state);
        let id = match &p.id {
            Some(id) if !id.is_empty() => {
                if !st.silences.contains_key(id) {
                    return Err(format!("silence {id} not found"));
                }
                id.clone()
            }
            _ => {
                st.next_id += 1;
                new_id(st.next_id)
            }
        };
        let s = p.validate(id.clone(), now)?;
        st.silences.insert(id.clone(), s);
        self.save(&st)?;
        drop(st);
        self.wake.notify_one();
        Ok(id)
    }

    /// Expires a silence now.
    pub fn expire_silence(&self, id: &str) -> Result<(), String> {
        let now = now_ms();
        let mut st = lock(&self.state);
        let Some(s) = st.silences.get_mut(id) else {
            return Err(format!("silence {id} not found"));
        };
        if silences::state(s, now) == "expired" {
            return Err(format!("silence {id} already expired"));
        }
        s.ends_at = now;
        s.starts_at = s.starts_at.min(now);
        s.updated_at = now;
        self.save(&st)?;
        Ok(())
    }

    pub fn silence(&self, id: &str) -> Option<Json> {
        let now = now_ms();
        lock(&self.state).silences.get(id).map(|s| s.to_json(now))
    }

    /// Silences whose matchers include every `filter` matcher (`name=value` text).
    pub fn silences(&self, filter: &[config::LabelMatcher]) -> Vec<Json> {
        let now = now_ms();
        let st = lock(&self.state);
        st.silences
            .values()
            .filter(|s| {
                filter.iter().all(|f| {
                    s.matchers.iter().any(|m| {
                        m.name == f.name
                            && m.value == f.value
                            && m.is_regex
                                == matches!(f.op, config::MatchType::Re | config::MatchType::Nre)
                    })
                })
            })
            .map(|s| s.to_json(now))
            .collect()
    }

    /// `GET /api/v2/alerts`: the alerts with their receivers and silence/inhibition state.
    pub fn alerts_json(&self, q: &AlertQuery) -> Vec<Json> {
        let AlertQuery {
            active,
            silenced,
            inhibited,
            ref filter,
        } = *q;
        let now = now_ms();
        let cfg = self.config();
        let st = lock(&self.state);
        let mut out = Vec::new();
        for (fp, a) in &st.alerts {
            if a.resolved() || !filter.iter().all(|m| m.matches(&a.labels)) {
                continue;
            }
            let (s, i) = self.muted(&cfg, &st, a, fp, now);
            let state = if s.is_empty() && i.is_empty() {
                "active"
            } else {
                "suppressed"
            };
            if (state == "active" && !active)
                || (!s.is_empty() && !silenced)
                || (!i.is_empty() && !inhibited)
            {
                continue;
            }
            let mut routes = Vec::new();
            cfg.route.matching(&a.labels, &mut routes);
            let receivers: Vec<Json> = routes.iter().map(|r| json!({"name": r.receiver})).collect();
            out.push(json!({
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": rfc3339(a.starts_at),
                "endsAt": rfc3339(a.starts_at.max(a.updated) + cfg.global.resolve_timeout.0 as i64),
                "updatedAt": rfc3339(a.updated),
                "generatorURL": a.generator_url,
                "fingerprint": fp,
                "receivers": receivers,
                "status": {"state": state, "silencedBy": s, "inhibitedBy": i},
            }));
        }
        out
    }

    /// Alertmanager's `GET /api/v2/alerts/groups`: the alerts of [`Notifier::alerts_json`]
    /// grouped as the routing tree groups them: per route an alert goes to, by that route's
    /// `group_by` labels (all of them for `'...'`); an alert routed twice (`continue`) is in
    /// two groups. Sorted by route, then group labels.
    pub fn groups_json(&self, q: &AlertQuery) -> Vec<Json> {
        let cfg = self.config();
        type Group = (String, Vec<Json>);
        let mut groups: BTreeMap<(String, BTreeMap<String, String>), Group> = BTreeMap::new();
        for a in self.alerts_json(q) {
            let labels: BTreeMap<String, String> =
                serde_json::from_value(a["labels"].clone()).unwrap_or_default();
            let mut routes = Vec::new();
            cfg.route.matching(&labels, &mut routes);
            for r in routes {
                let by: BTreeMap<String, String> = match &r.group_by {
                    None => labels.clone(),
                    Some(names) => names
                        .iter()
                        .filter_map(|n| labels.get(n).map(|v| (n.clone(), v.clone())))
                        .collect(),
                };
                groups
                    .entry((r.key.clone(), by))
                    .or_insert_with(|| (r.receiver.clone(), Vec::new()))
                    .1
                    .push(a.clone());
            }
        }
        groups
            .into_iter()
            .map(|((_, labels), (receiver, alerts))| {
                json!({"labels": labels, "receiver": {"name": receiver}, "alerts": alerts})
            })
            .collect()
    }

    /// Queued notifications and the last deliveries (for the UI and tests).
    pub fn outbox_json(&self) -> Json {
        let st = lock(&self.state);
        let queued: Vec<Json> = st
            .outbox
            .iter()
            .map(|o| {
                json!({
                    "receiver": o.notification.receiver,
                    "integration": o.integration.to_string(),
                    "groupKey": o.notification.group_key,
                    "status": o.notification.status(),
                    "attempts": o.attempts,
                    "queuedAt": rfc3339(o.queued),
                    "lastError": o.last_error,
                })
            })
            .collect();
        let delivered: Vec<Json> = st
            .delivered
            .iter()
            .map(|(t, r, i, g, s)| json!({"at": rfc3339(*t), "receiver": r, "integration": i, "groupKey": g, "status": s}))
            .collect();
        json!({"queued": queued, "delivered": delivered})
    }

    /// Seconds since start (for `/api/v2/status`).
    pub fn uptime(&self) -> String {
        rfc3339(self.started)
    }
}

/// Which alerts `GET /api/v2/alerts` and `/api/v2/alerts/groups` list: Alertmanager's
/// `active`, `silenced`, `inhibited` flags (all true by default) and `filter` matchers.
#[derive(Clone, Debug)]
pub struct AlertQuery {
    pub active: bool,
    pub silenced: bool,
    pub inhibited: bool,
    pub filter: Vec<config::LabelMatcher>,
}

impl Default for AlertQuery {
    fn default() -> Self {
        AlertQuery {
            active: true,
            silenced: true,
            inhibited: true,
            filter: Vec::new(),
        }
    }
}

impl AlertSink for Notifier {
    fn send(&self, events: &[AlertEvent]) -> Result<(), String> {
        self.ingest(events).map(|_| ())
    }
}

/// Alertmanager's `DedupStage.needsUpdate`.
fn needs_update(
    entry: Option<&LogEntry>,
    firing: &BTreeSet<String>,
    resolved: &BTreeSet<String>,
    send_resolved: bool,
    repeat: i64,
    now: i64,
) -> bool {
    let Some(e) = entry else {
        return !firing.is_empty();
    };
    if !firing.is_subset(&e.firing) {
        return true;
    }
    if firing.is_empty() {
        return !e.firing.is_empty();
    }
    if send_resolved && !resolved.is_subset(&e.resolved) {
        return true;
    }
    e.at <= now - repeat
}

/// A silence id shaped like Alertmanager's (a UUID), unique per notifier.
fn new_id(n: u64) -> String {
    let a =
        xxhash_rust::xxh3::xxh3_128(&[&n.to_le_bytes()[..], &now_ms().to_le_bytes()[..]].concat());
    let h = format!("{a:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// A deterministic value in [0, 1) from `seed`.
fn jitter_fraction(seed: u64) -> f64 {
    (xxhash_rust::xxh3::xxh3_64(&seed.to_le_bytes()) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> NotifyConfig {
        config::parse_notify_config(std::path::Path::new("t.yml"), text).unwrap()
    }

    fn ev(name: &str, inst: &str, sev: &str, resolved: bool) -> AlertEvent {
        AlertEvent {
            labels: [("alertname", name), ("instance", inst), ("severity", sev)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: BTreeMap::new(),
            starts_at: 1000,
            ends_at: if resolved { 2000 } else { 0 },
            tick: 0,
            generator_url: String::new(),
        }
    }

    const CFG: &str = "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 10s\n  repeat_interval: 1h\nreceivers:\n- name: hook\n  webhook_configs: [{url: 'http://127.0.0.1:9/'}]\ninhibit_rules:\n- source_matchers: ['severity=\"page\"']\n  target_matchers: ['severity=\"warning\"']\n  equal: [instance]\n";

    fn queued(n: &Notifier) -> Vec<(String, usize)> {
        lock(&n.state)
            .outbox
            .iter()
            .map(|o| {
                (
                    o.notification.status().to_string(),
                    o.notification.alerts.len(),
                )
            })
            .collect()
    }

    #[test]
    fn group_dedupe_repeat_and_resolve() {
        let n = Notifier::open(cfg(CFG), None, "http://tm".into()).unwrap();
        n.ingest(&[
            ev("A", "x", "warning", false),
            ev("A", "y", "warning", false),
        ])
        .unwrap();
        let t = now_ms();
        n.flush_due(t);
        assert_eq!(queued(&n), vec![("firing".into(), 2)]);
        // The same alerts again: nothing new until the repeat interval.
        n.ingest(&[ev("A", "x", "warning", false)]).unwrap();
        n.flush_due(t + 10_000);
        assert_eq!(queued(&n).len(), 1);
        // One resolves: a notification with it resolved.
        n.ingest(&[ev("A", "x", "warning", true)]).unwrap();
        n.flush_due(t + 20_000);
        assert_eq!(queued(&n).len(), 2);
        assert_eq!(
            lock(&n.state).outbox[1]
                .notification
                .alerts
                .iter()
                .filter(|a| a.resolved())
                .count(),
            1
        );
        // Repeat after an hour.
        n.flush_due(t + 3_700_000);
        assert_eq!(queued(&n).len(), 3);
    }

    #[test]
    fn inhibition_and_silences_mute() {
        let n = Notifier::open(cfg(CFG), None, String::new()).unwrap();
        n.ingest(&[
            ev("Down", "x", "page", false),
            ev("Cpu", "x", "warning", false),
            ev("Cpu2", "y", "warning", false),
        ])
        .unwrap();
        let id = n
            .put_silence(
                serde_json::from_value(json!({
                    "matchers": [{"name": "alertname", "value": "Cpu2", "isRegex": false}],
                    "startsAt": rfc3339(now_ms() - 1000), "endsAt": rfc3339(now_ms() + 3_600_000),
                    "createdBy": "t", "comment": "c"
                }))
                .unwrap(),
            )
            .unwrap();
        n.flush_due(now_ms());
        let names: Vec<String> = lock(&n.state)
            .outbox
            .iter()
            .flat_map(|o| {
                o.notification
                    .alerts
                    .iter()
                    .map(|a| a.labels["alertname"].clone())
            })
            .collect();
        assert_eq!(
            names,
            vec!["Down"],
            "Cpu is inhibited by Down on the same instance, Cpu2 silenced"
        );
        let listed = n.alerts_json(&AlertQuery::default());
        let cpu = listed
            .iter()
            .find(|a| a["labels"]["alertname"] == "Cpu")
            .unwrap();
        assert_eq!(cpu["status"]["state"], "suppressed");
        assert_eq!(cpu["status"]["inhibitedBy"].as_array().unwrap().len(), 1);
        n.expire_silence(&id).unwrap();
        assert!(n
            .expire_silence(&id)
            .unwrap_err()
            .contains("already expired"));
    }

    #[test]
    fn state_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let n = Notifier::open(cfg(CFG), Some(dir.path().into()), String::new()).unwrap();
        n.ingest(&[ev("A", "x", "warning", false)]).unwrap();
        n.flush_due(now_ms());
        drop(n);
        let n = Notifier::open(cfg(CFG), Some(dir.path().into()), String::new()).unwrap();
        assert_eq!(queued(&n).len(), 1, "the outbox survives");
        // Re-sent after a restart of the rules: the log knows it was queued.
        n.ingest(&[ev("A", "x", "warning", false)]).unwrap();
        n.flush_due(now_ms() + 20_000);
        assert_eq!(queued(&n).len(), 1);
    }

    #[test]
    fn delivered_below_waits_for_flush_and_delivery() {
        let n = Notifier::open(cfg(CFG), None, String::new()).unwrap();
        assert_eq!(n.delivered_below(), 0, "nothing ingested yet");
        let s0 = n.ingest(&[ev("A", "x", "warning", false)]).unwrap();
        assert_eq!(n.delivered_below(), s0, "the group has not flushed");
        let t = now_ms();
        n.flush_due(t);
        assert_eq!(n.delivered_below(), s0, "queued, not delivered");
        // A repeat of a delivered alert needs no notification: it holds only until the flush.
        let s1 = n.ingest(&[ev("B", "y", "warning", false)]).unwrap();
        let (due, _) = n.take_due(t);
        n.finish(due[0].id, Ok(()));
        assert_eq!(
            n.delivered_below(),
            s1,
            "A delivered; B's group not flushed"
        );
        // B's group began at its ingest (wall time), which can be a millisecond or more after
        // `t` on a loaded machine: flushed at `t` it would not be due yet (a flaky failure
        // of the clean-clone CI).
        let t2 = now_ms();
        n.flush_due(t2);
        let (due, _) = n.take_due(t2);
        assert_eq!(due.len(), 1, "B's notification is due");
        assert_eq!(n.delivered_below(), s1, "B in flight");
        n.finish(
            due[0].id,
            Err(DeliveryError {
                reason: "connect",
                message: "refused".into(),
                retry: true,
            }),
        );
        assert_eq!(n.delivered_below(), s1, "a failed attempt keeps the hold");
        let id = lock(&n.state).outbox[0].id;
        n.finish(id, Ok(()));
        assert_eq!(n.delivered_below(), s1 + 1);
        let s2 = n.ingest(&[ev("A", "x", "warning", false)]).unwrap();
        n.flush_due(t + 20_000);
        assert!(queued(&n).is_empty(), "deduplicated");
        assert_eq!(n.delivered_below(), s2 + 1);
    }

    #[test]
    fn backoff_and_give_up() {
        let n = Notifier::open(
            cfg(&format!(
                "{CFG}delivery:\n  initial_backoff: 1s\n  give_up_after: 0s\n"
            )),
            None,
            String::new(),
        )
        .unwrap();
        n.ingest(&[ev("A", "x", "warning", false)]).unwrap();
        n.flush_due(now_ms());
        let (due, _) = n.take_due(now_ms());
        let err = || DeliveryError {
            reason: "connect",
            message: "refused".into(),
            retry: true,
        };
        n.finish(due[0].id, Err(err()));
        assert!(
            queued(&n).is_empty(),
            "give_up_after 0s drops at the first failure"
        );
        assert_eq!(lock(&n.metrics.dropped).values().sum::<u64>(), 1);
        assert_eq!(
            lock(&n.metrics.failed).get(&("hook".into(), "webhook".into(), "connect".into())),
            Some(&1)
        );
    }
}

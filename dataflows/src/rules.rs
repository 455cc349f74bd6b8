//! Rule evaluation on event time: [`evaluate_at_ticks`] runs an evaluator each time the
//! frontier of the job's sinks passes an evaluation tick, and [`AlertMachine`] keeps
//! Prometheus's alert states (inactive, pending, firing, resolved) with `for` and
//! `keep_firing_for` counted in event time.
//!
//! A tick `t` (a multiple of the resolution, default 1 s) is evaluated once the sinks' frontier
//! is past `t`: every sample with an event time up to `t` has then been applied (a source sends
//! a sample at a time no later than its event time; late samples are the exception the
//! allowed lateness covers). No clock is read: a backfill evaluates its ticks as fast as its
//! data arrives, and a stalled input stalls evaluation instead of producing false `absent`s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use crate::sink::Done;

/// Evaluates rules at ticks. Implementations do the I/O (query the store, persist state).
pub trait TickEvaluator: 'static {
    /// What one tick produces (alert events, recorded samples, ...).
    type Output: Clone + 'static;
    /// The last tick evaluated before this run (restored state): ticks up to it are skipped.
    fn resume_after(&self) -> Option<u64>;
    /// With no tick to resume after: the event time of the oldest data, when known (ticks
    /// before it have nothing to read). Asked at each activation until a tick is evaluated.
    fn start_at(&self) -> Option<u64> {
        None
    }
    /// Evaluates `ticks` (ascending, each past the frontier) and pushes `(tick, output)`.
    fn evaluate(&mut self, ticks: &[u64], out: &mut Vec<(u64, Self::Output)>);
}

/// When ticks fall.
#[derive(Clone, Copy, Debug)]
pub struct TickConfig {
    /// Distance between ticks, ms of event time.
    pub resolution: u64,
    /// At most this much event time is evaluated behind the frontier when it jumps (a restart
    /// after a long stop, a backfill from long ago); older ticks are skipped.
    pub max_catch_up: u64,
    /// Ticks evaluated per activation, so a catch-up does not starve the other operators.
    pub ticks_per_activation: usize,
    /// Changes the incremental rules' leaves send per activation before they yield, within a
    /// tick too ([`crate::incremental::leaf_values`]): a bound on the changes in flight.
    pub updates_per_activation: usize,
}

impl Default for TickConfig {
    fn default() -> Self {
        TickConfig {
            resolution: 1_000,
            max_catch_up: 3_600_000,
            ticks_per_activation: 600,
            updates_per_activation: 50_000,
        }
    }
}

/// The ticks of `cfg` after `last` and before `frontier`, at most `limit` of them; `last` is
/// `None` before the first tick, when the first is the one just below the frontier's
/// catch-up bound.
///
/// ```
/// use tidemark_dataflows::rules::{ticks_between, TickConfig};
/// let cfg = TickConfig { resolution: 10, max_catch_up: 30, ticks_per_activation: 100, ..TickConfig::default() };
/// assert_eq!(ticks_between(&cfg, Some(20), 55, 100), vec![30, 40, 50]);
/// assert_eq!(ticks_between(&cfg, Some(20), 50, 100), vec![30, 40], "50 is not past 50");
/// assert_eq!(ticks_between(&cfg, None, 1_000, 100), vec![970, 980, 990]);
/// assert_eq!(ticks_between(&cfg, Some(0), 1_000, 2), vec![970, 980], "a jump skips ahead");
/// ```
pub fn ticks_between(cfg: &TickConfig, last: Option<u64>, frontier: u64, limit: usize) -> Vec<u64> {
    let r = cfg.resolution.max(1);
    if frontier == 0 {
        return Vec::new();
    }
    let newest = (frontier - 1) / r * r;
    let floor = newest.saturating_sub(cfg.max_catch_up.saturating_sub(r) / r * r);
    let first = match last {
        Some(l) => (l / r + 1) * r,
        None => floor,
    }
    .max(floor);
    (0..limit as u64)
        .map(|k| first + k * r)
        .take_while(|&t| t <= newest)
        .collect()
}

/// Runs `evaluator` at every tick the frontier of `done` passes; the output carries what it
/// produced at the tick's time, and its frontier tells which ticks are evaluated. Only one
/// worker should evaluate: the others pass `None` (every worker still builds the operator).
///
/// # Examples
/// ```
/// use timely::dataflow::operators::{Input, Inspect, Probe};
/// use tidemark_dataflows::rules::{evaluate_at_ticks, TickConfig, TickEvaluator};
/// use std::sync::{Arc, Mutex};
///
/// struct Count(Arc<Mutex<Vec<u64>>>);
/// impl TickEvaluator for Count {
///     type Output = u64;
///     fn resume_after(&self) -> Option<u64> { Some(0) }
///     fn evaluate(&mut self, ticks: &[u64], out: &mut Vec<(u64, u64)>) {
///         self.0.lock().unwrap().extend_from_slice(ticks);
///         out.extend(ticks.iter().map(|&t| (t, t / 1000)));
///     }
/// }
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let s = Arc::clone(&seen);
/// timely::execute_directly(move |worker| {
///     let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
///         let (input, done) = scope.new_input::<Vec<()>>();
///         let out = evaluate_at_ticks(done, TickConfig::default(), Some(Count(s)));
///         (input, out.probe().0)
///     });
///     input.advance_to(3_500);
///     worker.step_while(|| probe.less_than(&3_000));
/// });
/// assert_eq!(*seen.lock().unwrap(), vec![1_000, 2_000, 3_000]);
/// ```
pub fn evaluate_at_ticks<'s, E: TickEvaluator>(
    done: Done<'s>,
    cfg: TickConfig,
    evaluator: Option<E>,
) -> Stream<'s, u64, Vec<E::Output>> {
    let scope = done.scope();
    done.unary_frontier::<CapacityContainerBuilder<Vec<E::Output>>, _, _, _>(
        Pipeline,
        "RuleTicks",
        move |cap, info| {
            let activator = scope.activator_for(info.address.clone());
            let mut held: Option<Capability<u64>> = evaluator.as_ref().map(|_| cap);
            let mut last = evaluator.as_ref().and_then(|e| e.resume_after());
            let mut evaluator = evaluator;
            let mut produced = Vec::new();
            move |(input, frontier), output| {
                input.for_each(|_, _| {});
                let Some(e) = evaluator.as_mut() else { return };
                let Some(cap) = held.as_mut() else { return };
                let f = frontier.frontier().iter().min().copied();
                let Some(f) = f else {
                    // The input closed (shutdown): evaluate nothing more.
                    held = None;
                    return;
                };
                // A first run starts at the oldest data rather than `max_catch_up` before the
                // frontier: the tick at or after it.
                let from = last.or_else(|| e.start_at().map(|s| s.saturating_sub(1)));
                let ticks = ticks_between(&cfg, from, f, cfg.ticks_per_activation);
                if let Some(&newest) = ticks.last() {
                    e.evaluate(&ticks, &mut produced);
                    for (t, x) in produced.drain(..) {
                        // The capability is at or below the first tick.
                        let at = cap.delayed(&t.max(*cap.time()));
                        output.session(&at).give(x);
                    }
                    last = Some(newest);
                    let more = !ticks_between(&cfg, last, f, 1).is_empty();
                    if more {
                        activator.activate();
                    }
                }
                // Everything up to the last evaluated tick is out: hold the next one.
                let next = last.map_or(0, |l| l + 1);
                let next = next.min(f);
                if *cap.time() < next {
                    cap.downgrade(&next);
                }
            }
        },
    )
}

/// Sorted `(name, value)` pairs identifying an alert (rule labels and `alertname` included).
pub type LabelSet = Vec<(String, String)>;

/// Where an alert is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Pending,
    Firing,
    /// Was firing, no longer is; kept a while so the resolution can be shown and re-sent.
    Inactive,
}

/// One alert of one rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub labels: LabelSet,
    pub annotations: LabelSet,
    pub status: AlertStatus,
    /// Event time the expression first returned this label set (ms).
    pub active_at: u64,
    /// Event time it fired; 0 while pending.
    pub fired_at: u64,
    /// Event time it resolved; 0 while active.
    pub resolved_at: u64,
    /// Event time the expression stopped returning it while `keep_firing_for` holds it; 0
    /// otherwise.
    pub keep_firing_since: u64,
    /// The expression's value at the last tick it was returned.
    pub value: f64,
    /// Last tick it was evaluated at.
    pub last_eval: u64,
}

/// A change worth telling the notifier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Transition {
    Pending(Alert),
    Firing(Alert),
    Resolved(Alert),
}

/// What one rule returned for one label set at a tick.
#[derive(Clone, Debug, PartialEq)]
pub struct Active {
    pub labels: LabelSet,
    pub annotations: LabelSet,
    pub value: f64,
}

/// The state of one alerting rule's alerts: feed it every tick's result with
/// [`AlertMachine::observe`]; it follows Prometheus (`rules/alerting.go`): a new label set is
/// pending, fires once it has been active for `for`, and on disappearing is dropped (pending)
/// or resolved (firing) unless `keep_firing_for` holds it firing a while longer. Resolved
/// alerts are kept `resolved_retention` (15 min) and then forgotten.
///
/// ```
/// use tidemark_dataflows::rules::{Active, AlertMachine, Transition};
/// let mut m = AlertMachine::new(60_000, 0);
/// let high = || vec![Active { labels: vec![("host".into(), "a".into())], annotations: vec![], value: 95.0 }];
/// assert!(matches!(m.observe(10_000, high())[..], [Transition::Pending(_)]));
/// assert!(m.observe(69_000, high()).is_empty(), "59 s is not yet `for`");
/// assert!(matches!(m.observe(70_000, high())[..], [Transition::Firing(_)]));
/// assert!(matches!(m.observe(71_000, vec![])[..], [Transition::Resolved(_)]));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertMachine {
    pub for_ms: u64,
    pub keep_firing_for_ms: u64,
    #[serde(with = "alerts_as_list")]
    pub alerts: BTreeMap<LabelSet, Alert>,
}

/// JSON object keys must be strings: the map is stored as the list of its alerts (each carries
/// its labels).
mod alerts_as_list {
    use super::{Alert, LabelSet};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<LabelSet, Alert>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.values())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<LabelSet, Alert>, D::Error> {
        let list = Vec::<Alert>::deserialize(d)?;
        Ok(list.into_iter().map(|a| (a.labels.clone(), a)).collect())
    }
}

/// How long a resolved alert is remembered (Prometheus's `resolvedRetention`).
pub const RESOLVED_RETENTION_MS: u64 = 15 * 60_000;

impl AlertMachine {
    pub fn new(for_ms: u64, keep_firing_for_ms: u64) -> Self {
        AlertMachine {
            for_ms,
            keep_firing_for_ms,
            alerts: BTreeMap::new(),
        }
    }

    /// Applies the rule's result at tick `t`; returns the transitions.
    pub fn observe(&mut self, t: u64, result: Vec<Active>) -> Vec<Transition> {
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for a in result {
            seen.insert(a.labels.clone());
            match self.alerts.get_mut(&a.labels) {
                Some(x) if x.status != AlertStatus::Inactive => {
                    x.value = a.value;
                    x.annotations = a.annotations;
                    x.keep_firing_since = 0;
                    x.last_eval = t;
                }
                _ => {
                    let alert = Alert {
                        labels: a.labels.clone(),
                        annotations: a.annotations,
                        status: AlertStatus::Pending,
                        active_at: t,
                        fired_at: 0,
                        resolved_at: 0,
                        keep_firing_since: 0,
                        value: a.value,
                        last_eval: t,
                    };
                    if self.for_ms > 0 {
                        out.push(Transition::Pending(alert.clone()));
                    }
                    self.alerts.insert(a.labels, alert);
                }
            }
        }
        let keep = self.keep_firing_for_ms;
        let mut gone = Vec::new();
        for (labels, x) in self.alerts.iter_mut() {
            if seen.contains(labels) {
                if x.status == AlertStatus::Pending && t.saturating_sub(x.active_at) >= self.for_ms
                {
                    x.status = AlertStatus::Firing;
                    x.fired_at = t;
                    out.push(Transition::Firing(x.clone()));
                }
                continue;
            }
            match x.status {
                AlertStatus::Pending => gone.push(labels.clone()),
                AlertStatus::Firing => {
                    if keep > 0 {
                        if x.keep_firing_since == 0 {
                            x.keep_firing_since = t;
                        }
                        if t - x.keep_firing_since < keep {
                            x.last_eval = t;
                            continue;
                        }
                    }
                    x.status = AlertStatus::Inactive;
                    x.resolved_at = t;
                    x.last_eval = t;
                    out.push(Transition::Resolved(x.clone()));
                }
                AlertStatus::Inactive => {
                    if t.saturating_sub(x.resolved_at) >= RESOLVED_RETENTION_MS {
                        gone.push(labels.clone());
                    }
                }
            }
        }
        for l in gone {
            self.alerts.remove(&l);
        }
        out
    }

    /// Pending and firing alerts.
    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.alerts
            .values()
            .filter(|a| a.status != AlertStatus::Inactive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use timely::dataflow::operators::{Input, Probe};

    /// Records its ticks; starts at `start` when it has no tick to resume after.
    struct Ticks(Arc<Mutex<Vec<u64>>>, Option<u64>);
    impl TickEvaluator for Ticks {
        type Output = u64;
        fn resume_after(&self) -> Option<u64> {
            None
        }
        fn start_at(&self) -> Option<u64> {
            self.1
        }
        fn evaluate(&mut self, ticks: &[u64], out: &mut Vec<(u64, u64)>) {
            self.0.lock().unwrap().extend_from_slice(ticks);
            out.extend(ticks.iter().map(|&t| (t, t)));
        }
    }

    fn ticks_seen(start: Option<u64>) -> Vec<u64> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        timely::execute_directly(move |worker| {
            let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, done) = scope.new_input::<Vec<()>>();
                let cfg = TickConfig {
                    resolution: 1_000,
                    max_catch_up: 60_000,
                    ticks_per_activation: 600,
                    ..TickConfig::default()
                };
                let out = evaluate_at_ticks(done, cfg, Some(Ticks(s, start)));
                (input, out.probe().0)
            });
            input.advance_to(100_500);
            worker.step_while(|| probe.less_than(&100_000));
        });
        let v = seen.lock().unwrap().clone();
        v
    }

    #[test]
    fn a_first_run_starts_at_the_oldest_data_not_a_catch_up_before_it() {
        // Without a start: `max_catch_up` (a minute) before the frontier.
        assert_eq!(
            ticks_seen(None),
            (41..=100).map(|s| s * 1_000).collect::<Vec<_>>()
        );
        // Data from 95.5 s on: the first tick at or after it.
        assert_eq!(
            ticks_seen(Some(95_500)),
            vec![96_000, 97_000, 98_000, 99_000, 100_000]
        );
        // Exactly on a tick: that tick.
        assert_eq!(ticks_seen(Some(99_000)), vec![99_000, 100_000]);
        // Older than the catch-up: the catch-up still bounds it.
        assert_eq!(ticks_seen(Some(1_000)).len(), 60);
    }

    fn one(v: f64) -> Vec<Active> {
        vec![Active {
            labels: vec![("alertname".into(), "X".into())],
            annotations: vec![],
            value: v,
        }]
    }

    #[test]
    fn for_zero_fires_at_once_and_pending_that_vanishes_is_dropped() {
        let mut m = AlertMachine::new(0, 0);
        assert!(matches!(
            m.observe(1, one(1.0))[..],
            [Transition::Firing(_)]
        ));
        let mut m = AlertMachine::new(10, 0);
        assert!(matches!(
            m.observe(1, one(1.0))[..],
            [Transition::Pending(_)]
        ));
        assert!(m.observe(2, vec![]).is_empty());
        assert!(m.alerts.is_empty());
        // Active again: pending anew, from the new time.
        m.observe(5, one(1.0));
        assert_eq!(m.alerts.values().next().unwrap().active_at, 5);
    }

    #[test]
    fn keep_firing_for_holds_a_firing_alert() {
        let mut m = AlertMachine::new(0, 10);
        m.observe(1, one(1.0));
        assert!(m.observe(2, vec![]).is_empty());
        assert!(m.observe(11, vec![]).is_empty());
        assert!(matches!(
            m.observe(12, vec![])[..],
            [Transition::Resolved(_)]
        ));
        // Back after resolution: a new alert with a new active time.
        let t = m.observe(20, one(1.0));
        assert!(matches!(&t[..], [Transition::Firing(a)] if a.active_at == 20));
        // Resolved alerts are forgotten after the retention.
        m.observe(21, vec![]);
        assert!(matches!(
            m.observe(31, vec![])[..],
            [Transition::Resolved(_)]
        ));
        m.observe(31 + RESOLVED_RETENTION_MS, vec![]);
        assert!(m.alerts.is_empty());
    }

    #[test]
    fn returning_within_keep_firing_resets_it() {
        let mut m = AlertMachine::new(0, 10);
        m.observe(1, one(1.0));
        m.observe(5, vec![]);
        m.observe(8, one(2.0));
        assert!(m.observe(14, vec![]).is_empty(), "held since 14, not 5");
        assert!(matches!(
            m.observe(24, vec![])[..],
            [Transition::Resolved(_)]
        ));
    }

    #[test]
    fn state_survives_a_serde_round_trip() {
        let mut m = AlertMachine::new(60, 0);
        m.observe(1, one(1.0));
        let text = serde_json::to_string(&m).unwrap();
        let mut back: AlertMachine = serde_json::from_str(&text).unwrap();
        assert!(
            matches!(&back.observe(61, one(1.0))[..], [Transition::Firing(a)] if a.active_at == 1)
        );
    }
}

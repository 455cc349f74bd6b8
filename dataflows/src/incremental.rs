//! Rules maintained incrementally: instead of querying the store at every tick, the job keeps
//! each rule's result up to date from the sample stream itself.
//!
//! A rule compiles (in the binary, from PromQL) to a [`RulePlan`] over [`Leaf`]s:
//!
//! 1. [`leaf_values`] (a timely operator on the job's sample stream, after its exchange by
//!    series) keeps, per series a leaf selects, the samples of the leaf's window: the lookback
//!    of an instant selector, or the range of a range function (`rate`, `increase`,
//!    `*_over_time`, ...). At each tick its frontier passes it emits what changed: the retraction
//!    of the series' previous value and its new one, as a differential collection
//!    `(leaf, series, value bits)` at the tick's time. Nothing re-reads the store.
//! 2. [`rule_results`] turns leaf values into rule results with differential dataflow:
//!    per-series scalar arithmetic and comparisons are `flat_map`s, `sum`/`avg`/`min`/`max`/
//!    `count` `by`/`without` are a `reduce` keyed by the group's labels (only groups a change
//!    touched are recomputed), one-to-one vector matching (`on`/`ignoring`) is a `join` keyed
//!    by the matching labels.
//! 3. [`sink_results`] gathers the result changes on worker 0 into a [`ResultStore`], where the
//!    rule evaluator reads each rule's vector at each tick once the frontier passed it.
//!
//! Whatever the plans cannot express is evaluated by the query engine at the same ticks (the
//! binary decides per rule).

use std::collections::{BTreeMap, HashMap};

use crate::memory::{hash_slot, Component, Reported};
use crate::packed::SampleRun;
use std::sync::{Arc, Mutex};

use differential_dataflow::{AsCollection, VecCollection};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::{Operator, OutputBuilderSession};
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use crate::rules::{ticks_between, TickConfig};
use crate::sink::Done;
use crate::types::canonical_pairs;
use crate::types::{IdMap, IdSet, STALE_NAN_BITS};
use crate::Sample;

/// Sorted `(name, value)` label pairs, `__name__` included when the series has one.
pub type LabelPairs = Vec<(String, String)>;
/// A range function on one window of samples (staleness markers removed):
/// `(window, evaluation time, range)`.
pub type WindowFn = fn(&[(i64, f64)], i64, i64) -> Option<f64>;
/// Whether a series' labels match a selector.
pub type Matcher = Arc<dyn Fn(&[(String, String)]) -> bool + Send + Sync>;
/// A series' labels by id (`None`: not known yet, asked again at the next tick).
pub type Lookup = Arc<dyn Fn(u64) -> Option<SharedLabels> + Send + Sync>;

/// A series' label set as the store keeps it (shared, not copied per lookup).
pub use crate::types::SharedLabels;

/// The owned pairs of a shared label set.
fn owned_pairs(labels: &SharedLabels) -> LabelPairs {
    canonical_pairs(labels)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The label of a result record that carries an evaluation error instead of a value.
const ERROR_LABEL: &str = "\u{0}error";

/// Event time behind the frontier (ms) beyond which [`leaf_values`] skips to the newest tick
/// and leaves the ticks before to the engine: a restart after a stop, a backfill of hours.
/// Five minutes: a log read back faster than real time (a replay, a burst of pushes) moves
/// the frontier by a minute or two per activation, and with the old bound of 60 ticks (a
/// minute at 1 s resolution) every such activation skipped ahead, so the engine evaluated
/// nearly every tick of a backfill, one or two at a time, each reading five minutes of every
/// series (97 % of the rule evaluations of a 200,000-series backfill).
pub const CATCH_UP_MS: u64 = 300_000;

/// The leaf id of the record a worker's [`leaf_values`] sends at its first tick:
/// `(STARTED, worker index, tick)`.
pub const STARTED: u32 = u32::MAX;

/// Prometheus's default lookback delta for instant selectors.
pub const LOOKBACK_MS: i64 = 300_000;

/// How often (event time) the leaves operator drops the series that have nothing left.
const SWEEP_MS: u64 = 60_000;

const METRIC_NAME: &str = "__name__";

/// A selector's values per series: an instant selector (the latest sample within the lookback)
/// or a range function over a range selector.
#[derive(Clone)]
pub struct Leaf {
    pub matches: Matcher,
    /// A label pair every matching series has (an equality matcher), to index the leaves by:
    /// a series is only checked against the leaves keyed by one of its pairs, or unkeyed.
    pub key: Option<(String, String)>,
    /// `None`: an instant selector.
    pub window: Option<(WindowFn, i64)>,
    /// Whether the function keeps the metric name (`last_over_time`, `first_over_time`).
    pub keeps_name: bool,
    /// Evaluated at the ticks that are multiples of this (the rule group's interval), ms.
    pub interval: u64,
    /// The window function reads the evaluation time (`rate`, `increase` and `delta`
    /// extrapolate to the window's ends), so its value moves at every tick while the window
    /// holds samples. Other leaves change only when a sample enters or leaves their window.
    pub every_tick: bool,
}

impl Leaf {
    /// How far back a leaf reads: its range, or the lookback of an instant selector.
    pub fn span(&self) -> i64 {
        self.window.map_or(LOOKBACK_MS, |(_, r)| r)
    }
}

/// Arithmetic operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
}

/// A binary operator; comparisons filter, or return 0/1 with `bool`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Arith(ArithOp),
    Cmp(CmpOp, bool),
}

impl BinOp {
    /// `Some(value)` to keep, `None` to drop (a false comparison without `bool`). The value of
    /// a kept comparison is `lhs` (the caller passes the vector's side there).
    fn apply(self, l: f64, r: f64) -> Option<f64> {
        match self {
            BinOp::Arith(op) => Some(match op {
                ArithOp::Add => l + r,
                ArithOp::Sub => l - r,
                ArithOp::Mul => l * r,
                ArithOp::Div => l / r,
                ArithOp::Mod => l % r,
                ArithOp::Pow => l.powf(r),
            }),
            BinOp::Cmp(op, as_bool) => {
                let t = match op {
                    CmpOp::Eq => l == r,
                    CmpOp::Ne => l != r,
                    CmpOp::Gt => l > r,
                    CmpOp::Lt => l < r,
                    CmpOp::Ge => l >= r,
                    CmpOp::Le => l <= r,
                };
                if as_bool {
                    Some(if t { 1.0 } else { 0.0 })
                } else {
                    t.then_some(l)
                }
            }
        }
    }

    /// Arithmetic and `bool` comparisons drop the metric name; filters keep it.
    fn drops_name(self) -> bool {
        !matches!(self, BinOp::Cmp(_, false))
    }
}

/// A vector op a scalar (or a scalar op a vector, `scalar_left`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScalarOp {
    pub op: BinOp,
    pub scalar: f64,
    pub scalar_left: bool,
}

impl ScalarOp {
    /// Prometheus's vector-scalar semantics: a comparison keeps the vector element's value,
    /// whichever side it is on.
    pub fn apply(&self, v: f64) -> Option<f64> {
        match (self.op, self.scalar_left) {
            (BinOp::Arith(_), false) => self.op.apply(v, self.scalar),
            (BinOp::Arith(_), true) => self.op.apply(self.scalar, v),
            (BinOp::Cmp(op, b), false) => BinOp::Cmp(op, b).apply(v, self.scalar),
            (BinOp::Cmp(op, b), true) => {
                let flipped = match op {
                    CmpOp::Gt => CmpOp::Lt,
                    CmpOp::Lt => CmpOp::Gt,
                    CmpOp::Ge => CmpOp::Le,
                    CmpOp::Le => CmpOp::Ge,
                    o => o,
                };
                BinOp::Cmp(flipped, b).apply(v, self.scalar)
            }
        }
    }
}

fn apply_ops(ops: &[ScalarOp], labels: &mut LabelPairs, mut v: f64) -> Option<f64> {
    for op in ops {
        v = op.apply(v)?;
        if op.op.drops_name() {
            labels.retain(|(k, _)| k != METRIC_NAME);
        }
    }
    Some(v)
}

/// Aggregation operators maintained incrementally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
}

/// `op by (labels)` or `op without (labels)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Agg {
    pub op: AggOp,
    pub without: bool,
    pub labels: Vec<String>,
}

impl Agg {
    fn group<'a>(&self, labels: impl Iterator<Item = (&'a str, &'a str)>) -> LabelPairs {
        labels
            .filter(|(k, _)| {
                if self.without {
                    *k != METRIC_NAME && !self.labels.iter().any(|l| l == k)
                } else {
                    self.labels.iter().any(|l| l == k)
                }
            })
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The aggregate of `values` (in label order), as the query engine computes it.
    pub fn apply(&self, values: &[f64]) -> f64 {
        match self.op {
            AggOp::Count => values.len() as f64,
            AggOp::Sum => kahan_sum(values.iter().copied()),
            AggOp::Avg => mean(values.iter().copied()),
            AggOp::Min => {
                values[1..]
                    .iter()
                    .fold(values[0], |m, &v| if m > v || m.is_nan() { v } else { m })
            }
            AggOp::Max => {
                values[1..]
                    .iter()
                    .fold(values[0], |m, &v| if m < v || m.is_nan() { v } else { m })
            }
        }
    }
}

/// Kahan-Neumaier summation step, as Prometheus's `kahanSumInc`.
pub fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Sum with compensation; an infinite sum is returned as is.
pub fn kahan_sum(values: impl Iterator<Item = f64>) -> f64 {
    let (mut s, mut c) = (0.0, 0.0);
    for v in values {
        (s, c) = kahan_inc(v, s, c);
    }
    if s.is_infinite() {
        s
    } else {
        s + c
    }
}

/// Mean as Prometheus computes it: a compensated sum, switching to an incremental mean when the
/// sum would overflow.
pub fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut c, mut count, mut m) = (0.0, 0.0, 0.0, 0.0);
    let mut incremental = false;
    for f in values {
        count += 1.0;
        if !incremental {
            let (ns, nc) = kahan_inc(f, sum, c);
            if count == 1.0 || !ns.is_infinite() {
                sum = ns;
                c = nc;
                continue;
            }
            incremental = true;
            m = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (m, c) = kahan_inc(f / count, q * m, q * c);
    }
    if incremental {
        m + c
    } else {
        sum / count + c / count
    }
}

/// One side of a rule: a leaf, scalar operations per series, an optional aggregation and
/// scalar operations on its groups.
#[derive(Clone, Debug, PartialEq)]
pub struct Branch {
    pub leaf: u32,
    pub pre: Vec<ScalarOp>,
    pub agg: Option<Agg>,
    pub post: Vec<ScalarOp>,
}

/// A rule's expression in the shapes maintained incrementally.
#[derive(Clone, Debug, PartialEq)]
pub enum RulePlan {
    Branch(Branch),
    /// `lhs op on|ignoring(labels) rhs`, one-to-one, then scalar operations.
    Join {
        lhs: Branch,
        rhs: Branch,
        op: BinOp,
        on: bool,
        labels: Vec<String>,
        post: Vec<ScalarOp>,
    },
    /// `absent(selector)`: `labels` (the selector's equality matchers) when the leaf is empty.
    Absent {
        leaf: u32,
        labels: LabelPairs,
    },
}

/// Every leaf and rule plan of a job, indexed by id.
#[derive(Clone, Default)]
pub struct Plans {
    pub leaves: Vec<Leaf>,
    pub rules: Vec<RulePlan>,
}

/// A branch's position: rule id and side (0: the rule's branch or a join's left, 1: right).
type BranchId = (u32, u8);

impl Plans {
    fn branches(&self) -> Vec<(BranchId, &Branch)> {
        let mut out = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            let i = i as u32;
            match r {
                RulePlan::Branch(b) => out.push(((i, 0), b)),
                RulePlan::Join { lhs, rhs, .. } => {
                    out.push(((i, 0), lhs));
                    out.push(((i, 1), rhs));
                }
                RulePlan::Absent { .. } => {}
            }
        }
        out
    }

    fn branch(&self, (rule, side): BranchId) -> Option<&Branch> {
        match (self.rules.get(rule as usize)?, side) {
            (RulePlan::Branch(b), 0) => Some(b),
            (RulePlan::Join { lhs, .. }, 0) => Some(lhs),
            (RulePlan::Join { rhs, .. }, 1) => Some(rhs),
            _ => None,
        }
    }

    /// The leaves whose selector matches `labels`.
    pub fn matching(&self, labels: &[(String, String)]) -> Vec<u32> {
        (0..self.leaves.len() as u32)
            .filter(|&l| (self.leaves[l as usize].matches)(labels))
            .collect()
    }
}

/// The leaves by their key pair, so matching a series costs its label count plus the leaves
/// that could match, not every leaf.
struct LeafIndex {
    keyed: HashMap<(String, String), Vec<u32>>,
    unkeyed: Vec<u32>,
}

impl LeafIndex {
    fn new(plans: &Plans) -> Self {
        let mut keyed: HashMap<(String, String), Vec<u32>> = HashMap::new();
        let mut unkeyed = Vec::new();
        for (i, l) in plans.leaves.iter().enumerate() {
            match &l.key {
                Some(k) => keyed.entry(k.clone()).or_default().push(i as u32),
                None => unkeyed.push(i as u32),
            }
        }
        LeafIndex { keyed, unkeyed }
    }

    fn matching(&self, plans: &Plans, labels: &[(String, String)]) -> Vec<u32> {
        let mut out: Vec<u32> = labels
            .iter()
            .filter_map(|p| self.keyed.get(p))
            .flatten()
            .chain(&self.unkeyed)
            .copied()
            .filter(|&l| (plans.leaves[l as usize].matches)(labels))
            .collect();
        out.sort_unstable();
        out
    }
}

/// One series' samples, sorted by time, and the values it last emitted per leaf. The samples
/// are packed ([`SampleRun`]: about 4 bytes a sample instead of 16 on the fleet workload) and
/// decoded whole where a tick reads them; the methods that read them take that decoded run.
#[derive(Default)]
struct SeriesState {
    /// `None` until the series' labels are known; shared between the series that match the
    /// same leaves (behind a thin pointer, and the values emitted in a boxed slice: the state
    /// is 96 bytes, jemalloc's 96-byte class instead of the 112-byte one, per counter of a
    /// `rate` rule).
    leaves: Option<Arc<Vec<u32>>>,
    samples: SampleRun,
    emitted: Box<[(u32, u64)]>,
    /// The tick this series is next evaluated at (`u64::MAX`: not scheduled).
    wake: u64,
    /// The newest sample time seen (a series with nothing left is dropped once it is idle
    /// for longer than any window).
    newest: i64,
}

impl SeriesState {
    fn insert(&mut self, ts: i64, v: f64) {
        if self.samples.last_ts().is_none_or(|t| t < ts) {
            self.samples.push(ts, v);
            return;
        }
        let mut s = Vec::new();
        self.samples.decode_into(&mut s);
        let i = s.partition_point(|&(t, _)| t < ts);
        if s.get(i).is_some_and(|&(t, _)| t == ts) {
            s[i].1 = v; // the last write wins, as in the store
        } else {
            s.insert(i, (ts, v));
        }
        self.samples = SampleRun::from_sorted(&s);
    }

    /// The first tick after `t` at which a leaf's value can differ from its value at `t`: a
    /// sample entering the window (or the lookback), the oldest one leaving it, the next tick
    /// of a leaf that reads the evaluation time or was not due at `t`. `None`: never, until a
    /// sample arrives.
    fn next_change(&self, plans: &Plans, t: i64, samples: &[(i64, f64)]) -> Option<u64> {
        let mut next = i64::MAX;
        // The first multiple of `iv` after `t` and at or after `at`.
        let tick = |at: i64, iv: u64| {
            let iv = iv.max(1) as i64;
            at.max(t + 1).saturating_add(iv - 1).div_euclid(iv) * iv
        };
        let end = samples.partition_point(|&(ts, _)| ts <= t);
        let newer = samples.get(end).map(|p| p.0);
        for &l in self.leaves.iter().flat_map(|l| l.iter()) {
            let leaf = &plans.leaves[l as usize];
            let iv = leaf.interval.max(1);
            if t.rem_euclid(iv as i64) != 0 {
                next = next.min(tick(t + 1, iv));
                continue;
            }
            if let Some(ts) = newer {
                next = next.min(tick(ts, iv));
            }
            match leaf.window {
                None => {
                    if let Some(&(ts, _)) = end.checked_sub(1).and_then(|i| samples.get(i)) {
                        if ts > t - LOOKBACK_MS {
                            next = next.min(tick(ts + LOOKBACK_MS, iv));
                        }
                    }
                }
                Some((_, range)) => {
                    let start = samples.partition_point(|&(ts, _)| ts <= t - range);
                    if start < end {
                        next = next.min(tick(samples[start].0 + range, iv));
                        if leaf.every_tick {
                            next = next.min(tick(t + 1, iv));
                        }
                    }
                }
            }
        }
        (next != i64::MAX).then(|| u64::try_from(next).unwrap_or(0))
    }

    /// Drops the samples none of the series' leaves can read at `t` or later: those at or
    /// before `t` minus a range, and for an instant selector all but the newest at or before
    /// `t` (a later tick reads that one or a newer one). Unresolved series keep `keep`.
    fn trim(&mut self, plans: &Plans, t: i64, keep: i64, samples: &mut Vec<(i64, f64)>) {
        let cut = match &self.leaves {
            None => t.saturating_sub(keep),
            Some(leaves) => {
                let end = samples.partition_point(|&(ts, _)| ts <= t);
                let newest = end.checked_sub(1).map(|i| samples[i].0);
                leaves
                    .iter()
                    .map(|&l| match plans.leaves[l as usize].window {
                        None => {
                            let lookback = t.saturating_sub(LOOKBACK_MS);
                            newest.map_or(lookback, |ts| (ts - 1).max(lookback))
                        }
                        Some((_, range)) => t.saturating_sub(range),
                    })
                    .min()
                    .unwrap_or(i64::MAX)
            }
        };
        let n = samples.partition_point(|&(ts, _)| ts <= cut);
        if n > 0 {
            samples.drain(..n);
            self.samples.drop_front(n);
        }
    }

    fn value(
        leaf: &Leaf,
        t: i64,
        samples: &[(i64, f64)],
        buf: &mut Vec<(i64, f64)>,
    ) -> Option<f64> {
        let end = samples.partition_point(|&(ts, _)| ts <= t);
        match leaf.window {
            None => {
                let &(ts, v) = samples.get(end.checked_sub(1)?)?;
                (ts > t - LOOKBACK_MS && v.to_bits() != STALE_NAN_BITS).then_some(v)
            }
            Some((f, range)) => {
                let start = samples.partition_point(|&(ts, _)| ts <= t - range);
                buf.clear();
                buf.extend(
                    samples[start..end]
                        .iter()
                        .filter(|(_, v)| v.to_bits() != STALE_NAN_BITS),
                );
                if buf.is_empty() {
                    None
                } else {
                    f(buf, t, range)
                }
            }
        }
    }
}

type LeafUpdate = ((u32, u64, u64), u64, isize);

/// The values of every leaf for the series of this worker, kept from `samples` (exchanged by
/// series) and emitted as changes at each tick the frontier passes: per `(leaf, series)`, the
/// previous value retracted and the new one inserted, only when it changed.
///
/// `resume_after` is the rule evaluator's last evaluated tick; the ticks are the evaluator's
/// (see [`ticks_between`]). Each worker also sends the first tick it evaluated (as leaf
/// [`STARTED`]), so the store knows from which tick the results are complete.
///
/// # Examples
/// ```
/// use std::sync::Arc;
/// use differential_dataflow::AsCollection;
/// use timely::dataflow::operators::{Capture, Input, Probe};
/// use tidemark_dataflows::incremental::{leaf_values, Leaf, Plans, SharedLabels, STARTED};
/// use tidemark_dataflows::rules::TickConfig;
/// use tidemark_dataflows::Sample;
///
/// // `max_over_time(x[10s])`, every second.
/// let max: fn(&[(i64, f64)], i64, i64) -> Option<f64> =
///     |w, _, _| w.iter().map(|p| p.1).reduce(f64::max);
/// let plans = Arc::new(Plans {
///     leaves: vec![Leaf { matches: Arc::new(|_| true), key: None, window: Some((max, 10_000)), keeps_name: false, interval: 1_000, every_tick: false }],
///     rules: vec![],
/// });
/// let cfg = TickConfig { resolution: 1_000, max_catch_up: 60_000, ticks_per_activation: 100, ..TickConfig::default() };
/// let out = timely::execute_directly(move |worker| {
///     let (mut input, probe, out) = worker.dataflow::<u64, _, _>(|scope| {
///         let (input, samples) = scope.new_input::<Vec<Sample>>();
///         let lookup: tidemark_dataflows::incremental::Lookup = Arc::new(|_| {
///             // The label set {__name__="x"} in the canonical encoding.
///             Some(SharedLabels::from(&b"__name__\xffx\xfe"[..]))
///         });
///         let values = leaf_values(samples, Arc::clone(&plans), lookup, cfg, Some(0));
///         let (probe, values) = values.inner.probe();
///         (input, probe, values.capture())
///     });
///     input.send(Sample { series: 7, ts: 500, value: 3.0 });
///     input.send(Sample { series: 7, ts: 2_500, value: 1.0 });
///     input.advance_to(13_000);
///     worker.step_while(|| probe.less_than(&12_000));
///     out
/// });
/// let mut changes: Vec<(u64, f64, isize)> = out.try_iter()
///     .filter_map(|e| match e { timely::dataflow::operators::capture::Event::Messages(_, d) => Some(d), _ => None })
///     .flatten()
///     .filter(|((leaf, _, _), _, _)| *leaf != STARTED) // the worker's "started at 1 s"
///     .map(|((_, _, bits), t, d)| (t, f64::from_bits(bits), d))
///     .collect();
/// changes.sort_by(|a, b| a.partial_cmp(b).unwrap());
/// // 3 from 1 s; at 11 s the sample of 0.5 s left the window: 1 until 12 s.
/// assert_eq!(changes, vec![(1_000, 3.0, 1), (11_000, 1.0, 1), (11_000, 3.0, -1)]);
/// ```
pub fn leaf_values<'s>(
    samples: Stream<'s, u64, Vec<Sample>>,
    plans: Arc<Plans>,
    lookup: Lookup,
    cfg: TickConfig,
    resume_after: Option<u64>,
) -> VecCollection<'s, u64, (u32, u64, u64)> {
    let scope = samples.scope();
    let me = scope.index() as u64;
    let keep = plans
        .leaves
        .iter()
        .map(Leaf::span)
        .max()
        .unwrap_or(LOOKBACK_MS);
    samples
        .unary_frontier::<CapacityContainerBuilder<Vec<LeafUpdate>>, _, _, _>(
            Pipeline,
            "RuleLeaves",
            move |cap, info| {
                let activator = scope.activator_for(info.address.clone());
                let mut held: Option<Capability<u64>> = (!plans.leaves.is_empty()).then_some(cap);
                let mut last = resume_after;
                // Boxed: a slot is 16 bytes instead of 128, and the table's power-of-two slack
                // (a load between 44 % and 87 %) costs that per empty slot (27 MB at 250,000
                // counters).
                let mut series: IdMap<Box<SeriesState>> = IdMap::default();
                // Series no leaf reads (a series id is its labels' hash, so the answer does
                // not change): remembered, 8 bytes each, so a series is matched once, not per
                // sample. Forgotten all at once every `IGNORED_FOR` of event time, so series
                // that stopped do not stay; the others are matched once more.
                let mut ignored: IdSet = IdSet::default();
                let mut ignored_since = i64::MIN;
                // The leaf sets series match, shared (a fleet's series match a handful).
                let mut leaf_sets: HashMap<Vec<u32>, Arc<Vec<u32>>> = HashMap::new();
                let mut unresolved: IdSet = IdSet::default();
                // Which series to evaluate at which tick: only those whose values can have
                // changed, so a tick costs the changes, not the series count.
                let mut due: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
                let mut swept = 0u64;
                let mut reported = Reported::new(Component::Rules);
                let mut buf = Vec::new();
                // A series' samples, decoded for the tick that reads them.
                let mut run = Vec::new();
                let index = LeafIndex::new(&plans);
                let mut announced = false;
                // The oldest sample this worker's leaves took: ticks before it have no values
                // (the frontier passed them), so they are never a catch-up to skip.
                let mut oldest_seen = i64::MAX;
                let res = cfg.resolution.max(1);
                let schedule =
                    |due: &mut BTreeMap<u64, Vec<u64>>, id: u64, st: &mut SeriesState, at: u64| {
                        if at < st.wake {
                            st.wake = at;
                            due.entry(at).or_default().push(id);
                        }
                    };
                move |(input, frontier), output| {
                    // The tick a change can first show at: the next one to evaluate.
                    let next_tick = last.map_or(0, |l| l + res);
                    input.for_each(|_, data| {
                        if held.is_none() {
                            return;
                        }
                        for s in data.drain(..) {
                            if ignored.contains(&s.series) {
                                continue;
                            }
                            let st = match series.entry(s.series) {
                                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                                std::collections::hash_map::Entry::Vacant(e) => {
                                    // Matched once, when first seen (a series no leaf reads
                                    // never gets a state: at 1 M series the table held every
                                    // one of them until the next activation, and kept that
                                    // capacity).
                                    let leaves = lookup(s.series).map(|labels| {
                                        index.matching(&plans, &owned_pairs(&labels))
                                    });
                                    if leaves.as_ref().is_some_and(Vec::is_empty) {
                                        ignored.insert(s.series);
                                        continue;
                                    }
                                    let leaves = leaves.map(|l| shared(&mut leaf_sets, l));
                                    if leaves.is_none() {
                                        unresolved.insert(s.series);
                                    }
                                    e.insert(Box::new(SeriesState {
                                        newest: i64::MIN,
                                        wake: u64::MAX,
                                        leaves,
                                        ..SeriesState::default()
                                    }))
                                }
                            };
                            st.newest = st.newest.max(s.ts);
                            oldest_seen = oldest_seen.min(s.ts);
                            match &st.leaves {
                                Some(l) if l.is_empty() => {}
                                leaves => {
                                    let resolved = leaves.is_some();
                                    st.insert(s.ts, s.value);
                                    if resolved {
                                        let ts = u64::try_from(s.ts).unwrap_or(0);
                                        let at = ts.div_ceil(res) * res;
                                        schedule(&mut due, s.series, st, at.max(next_tick));
                                    }
                                }
                            }
                        }
                    });
                    let Some(cap) = held.as_mut() else { return };
                    let Some(f) = frontier.frontier().iter().min().copied() else {
                        held = None;
                        return;
                    };
                    unresolved.retain(|id| match lookup(*id) {
                        Some(labels) => {
                            let leaves = index.matching(&plans, &owned_pairs(&labels));
                            if leaves.is_empty() {
                                if series.remove(id).is_some() {
                                    ignored.insert(*id);
                                }
                            } else if let Some(st) = series.get_mut(id) {
                                schedule(&mut due, *id, st, next_tick);
                                st.leaves = Some(shared(&mut leaf_sets, leaves));
                            }
                            false
                        }
                        None => series.contains_key(id),
                    });
                    let mut ticks = ticks_between(&cfg, last, f, cfg.ticks_per_activation);
                    // Far behind the frontier (a backfill, a restart): evaluate only the newest
                    // tick and leave the ones before to the engine, whose step-vectorised range
                    // evaluation is cheaper than a change per series per tick. Ticks before the
                    // oldest sample cost nothing and do not count: a first run starts
                    // `max_catch_up` before the frontier, and a batch of ticks that ends a few
                    // minutes into the data must not hand those minutes to the engine (at 1 M
                    // series that was 1,200 engine evaluations, each over every counter).
                    let with_data = ticks
                        .iter()
                        .copied()
                        .find(|&t| i64::try_from(t).is_ok_and(|t| t >= oldest_seen));
                    let complete_from = match (with_data, ticks.last()) {
                        (Some(first), Some(&newest)) if newest - first > CATCH_UP_MS => {
                            Some(newest)
                        }
                        _ if !announced => ticks.first().copied(),
                        _ => None,
                    };
                    if let Some(from) = complete_from {
                        announced = true;
                        // Tell the store, at the batch's first tick, from which tick this
                        // worker's values are complete.
                        let t = ticks[0];
                        let at = cap.delayed(&t.max(*cap.time()));
                        output.session(&at).give(((STARTED, me, from), t, 1));
                        ticks.retain(|&t| t >= from);
                    }
                    // Ticks fully evaluated in this activation. It yields once it sent
                    // `updates_per_activation` changes, within a tick too (the rest of the tick's
                    // series stay due, and its capability held), so that neither a catch-up nor
                    // one tick over many series puts more than that many changes in flight
                    // (the rest follows when re-activated).
                    let mut done_through = None;
                    let mut sent = 0usize;
                    let mut partial = false;
                    let budget = cfg.updates_per_activation.max(1);
                    for &t in &ticks {
                        let at = cap.delayed(&t.max(*cap.time()));
                        let mut session = output.session(&at);
                        let ti = i64::try_from(t).unwrap_or(i64::MAX);
                        let cutoff = ti.saturating_sub(keep);
                        // Every series due by now (ticks a catch-up skipped included).
                        while let Some(entry) = due.first_entry() {
                            if *entry.key() > t {
                                break;
                            }
                            if sent >= budget {
                                partial = true;
                                break;
                            }
                            let (key, mut ids) = entry.remove_entry();
                            let mut taken = 0;
                            for &id in &ids {
                                if sent >= budget {
                                    break;
                                }
                                taken += 1;
                                let Some(st) = series.get_mut(&id) else {
                                    continue;
                                };
                                if st.wake > t {
                                    continue; // evaluated already, and due later
                                }
                                st.wake = u64::MAX;
                                run.clear();
                                st.samples.decode_into(&mut run);
                                evaluate_series(id, st, &plans, t, &run, &mut buf, &mut |u| {
                                    sent += 1;
                                    session.give(u)
                                });
                                // Samples no window can reach again go.
                                st.trim(&plans, ti, keep, &mut run);
                                if let Some(at) = st.next_change(&plans, ti, &run) {
                                    schedule(&mut due, id, st, at);
                                }
                            }
                            if taken < ids.len() {
                                // Out of budget: the rest stay due at their tick, first.
                                ids.drain(..taken);
                                let later = due.entry(key).or_default();
                                ids.append(later);
                                *later = ids;
                                partial = true;
                                break;
                            }
                        }
                        if partial {
                            break;
                        }
                        done_through = Some(t);
                        // Now and then, series with nothing left go.
                        if t >= swept.saturating_add(SWEEP_MS) {
                            swept = t;
                            if ti.saturating_sub(ignored_since) >= IGNORED_FOR {
                                ignored_since = ti;
                                ignored = IdSet::default();
                            }
                            series.retain(|id, st| {
                                run.clear();
                                st.samples.decode_into(&mut run);
                                st.trim(&plans, ti, keep, &mut run);
                                let live = !st.samples.is_empty()
                                    || !st.emitted.is_empty()
                                    || st.newest > cutoff;
                                if !live {
                                    unresolved.remove(id);
                                }
                                live
                            });
                            shrink(&mut series);
                            let slot = hash_slot(16);
                            let heap: usize = series
                                .values()
                                .map(|st| {
                                    std::mem::size_of::<SeriesState>()
                                        + st.samples.heap_bytes()
                                        + st.emitted.len() * 16
                                })
                                .sum();
                            reported.set(
                                series.capacity() as i64 * slot
                                    + ignored.capacity() as i64 * hash_slot(8)
                                    + heap as i64,
                            );
                        }
                    }
                    if let Some(newest) = done_through {
                        last = Some(newest);
                        if !ticks_between(&cfg, last, f, 1).is_empty() {
                            activator.activate();
                        }
                    }
                    if partial {
                        activator.activate();
                    }
                    let next = last.map_or(0, |l| l + 1).min(f);
                    if *cap.time() < next {
                        cap.downgrade(&next);
                    }
                }
            },
        )
        .as_collection()
}

/// Evaluates the series' due leaves at tick `t` from its decoded `samples` (`buf` is scratch).
fn evaluate_series(
    id: u64,
    st: &mut SeriesState,
    plans: &Plans,
    t: u64,
    samples: &[(i64, f64)],
    buf: &mut Vec<(i64, f64)>,
    give: &mut dyn FnMut(LeafUpdate),
) {
    let ti = i64::try_from(t).unwrap_or(i64::MAX);
    let Some(leaves) = &st.leaves else { return };
    for &l in leaves.iter() {
        let leaf = &plans.leaves[l as usize];
        if !t.is_multiple_of(leaf.interval.max(1)) {
            continue;
        }
        let now = SeriesState::value(leaf, ti, samples, buf).map(f64::to_bits);
        let before = st.emitted.iter().position(|(x, _)| *x == l);
        let old = before.map(|i| st.emitted[i].1);
        if old == now {
            continue;
        }
        if let Some(old) = old {
            give(((l, id, old), t, -1));
        }
        match (now, before) {
            (Some(v), Some(i)) => st.emitted[i].1 = v,
            (Some(v), None) => {
                // Exactly: a growing vector would take room for 4 (64 bytes a series).
                let mut e = std::mem::take(&mut st.emitted).into_vec();
                e.reserve_exact(1);
                e.push((l, v));
                st.emitted = e.into_boxed_slice();
            }
            (None, Some(i)) => {
                let mut e = std::mem::take(&mut st.emitted).into_vec();
                e.swap_remove(i);
                st.emitted = e.into_boxed_slice();
            }
            (None, None) => {}
        }
        if let Some(v) = now {
            give(((l, id, v), t, 1));
        }
    }
}

/// An aggregation's branch and group labels.
type GroupKey = (BranchId, LabelPairs);

/// The shared copy of a leaf set.
fn shared(sets: &mut HashMap<Vec<u32>, Arc<Vec<u32>>>, leaves: Vec<u32>) -> Arc<Vec<u32>> {
    if let Some(s) = sets.get(&leaves) {
        return Arc::clone(s);
    }
    let s = Arc::new(leaves.clone());
    sets.insert(leaves, Arc::clone(&s));
    s
}

/// How long of event time the series no leaf reads are remembered before they are all
/// forgotten (and matched again at their next sample).
const IGNORED_FOR: i64 = 3_600_000;

/// Gives a table's memory back once it holds less than a quarter of its capacity (a
/// catch-up or the first seconds of a run can leave it much larger than it stays).
fn shrink<V>(m: &mut IdMap<V>) {
    if m.capacity() > 4 * m.len().max(64) {
        m.shrink_to_fit();
    }
}

/// One aggregation group: its members' current values by series, the aggregate last sent, and
/// how many member updates waiting for their time name it (it is not dropped while any do).
struct GroupState {
    key: GroupKey,
    members: IdMap<u64>,
    out: Option<u64>,
    waiting: u32,
    /// The time it was last touched at (listed once per time).
    touched: u64,
}

/// A member update waiting for its time: the group's id, the series, its value bits and the
/// change (+1 the series has this value, -1 it no longer has it). 24 bytes instead of a group
/// key's copy per update: a tick of `sum by (pool) (rate(...))` over 250,000 counters is
/// 500,000 of them.
#[derive(Clone, Copy)]
struct MemberUpdate {
    group: u32,
    diff: i32,
    series: u64,
    bits: u64,
}

/// `sum`/`avg`/`min`/`max`/`count` per `(branch, group)`, as a differential collection: at each
/// time the frontier passes, the groups whose members changed are recomputed from their current
/// members (in series order, as the engine sums them) and the change of the aggregate is sent.
///
/// Differential's `reduce` would do the same, but with members that all change at every tick
/// (a `rate` under `sum by (pool)`: every counter's rate moves as the window slides) it keeps a
/// history per key and re-reads it for every time; at 50,000 counters in one group that was
/// 1.7 GB and a quarter of the ingest rate. This keeps one entry per member (a series and its
/// value: 16 bytes and the table's slack). A series has one value per leaf and time, so a
/// retraction removes the member only if it still has the retracted value: the retraction and
/// the insertion of a change at the same time may come in either order.
fn group_aggregate<'s>(
    input: VecCollection<'s, u64, (GroupKey, (u64, u64))>,
    plans: Arc<Plans>,
) -> VecCollection<'s, u64, (GroupKey, u64)> {
    type Key = GroupKey;
    type In = ((Key, (u64, u64)), u64, isize);
    type Pending = BTreeMap<u64, (Capability<u64>, Vec<MemberUpdate>)>;
    let route = |((k, _), _, _): &In| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        k.hash(&mut h);
        h.finish()
    };
    input
        .inner
        .unary_frontier::<CapacityContainerBuilder<Vec<((Key, u64), u64, isize)>>, _, _, _>(
            Exchange::new(route),
            "GroupAggregate",
            move |_cap, _info| {
                let mut pending: Pending = BTreeMap::new();
                // Groups by id, the ids by key, and ids free for reuse.
                let mut groups: Vec<Option<GroupState>> = Vec::new();
                let mut ids: HashMap<Key, u32> = HashMap::new();
                let mut free: Vec<u32> = Vec::new();
                let mut values = Vec::new();
                let mut reported = Reported::new(Component::Rules);
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        let Some(&least) = cap.least() else { return };
                        for ((k, (series, bits)), t, d) in data.drain(..) {
                            let at = t.max(least);
                            let group = match ids.get(&k) {
                                Some(&g) => g,
                                None => {
                                    let g = free.pop().unwrap_or(groups.len() as u32);
                                    let state = GroupState {
                                        key: k.clone(),
                                        members: IdMap::default(),
                                        out: None,
                                        waiting: 0,
                                        touched: u64::MAX,
                                    };
                                    match groups.get_mut(g as usize) {
                                        Some(slot) => *slot = Some(state),
                                        None => groups.push(Some(state)),
                                    }
                                    ids.insert(k, g);
                                    g
                                }
                            };
                            if let Some(g) = groups[group as usize].as_mut() {
                                g.waiting += 1;
                            }
                            let diff = d.clamp(i32::MIN as isize, i32::MAX as isize) as i32;
                            pending
                                .entry(at)
                                .or_insert_with(|| (cap.delayed(&at, 0), Vec::new()))
                                .1
                                .push(MemberUpdate {
                                    group,
                                    diff,
                                    series,
                                    bits,
                                });
                        }
                    });
                    let mut applied = false;
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        applied = true;
                        let (t, (cap, updates)) = entry.remove_entry();
                        let mut touched: Vec<u32> = Vec::new();
                        for u in updates {
                            let Some(g) = groups[u.group as usize].as_mut() else {
                                continue;
                            };
                            g.waiting -= 1;
                            if u.diff > 0 {
                                g.members.insert(u.series, u.bits);
                            } else if u.diff < 0 && g.members.get(&u.series) == Some(&u.bits) {
                                g.members.remove(&u.series);
                            }
                            if g.touched != t {
                                g.touched = t;
                                touched.push(u.group);
                            }
                        }
                        touched.sort_by(|a, b| {
                            let key = |i: &u32| groups[*i as usize].as_ref().map(|g| &g.key);
                            key(a).cmp(&key(b))
                        });
                        let mut session = output.session(&cap);
                        for id in touched {
                            let Some(g) = groups[id as usize].as_mut() else {
                                continue;
                            };
                            let agg = plans.branch(g.key.0).and_then(|b| b.agg.as_ref());
                            let new = agg.and_then(|agg| {
                                values.clear();
                                values.extend(g.members.iter().map(|(&s, &b)| (s, b)));
                                values.sort_unstable();
                                let vals: Vec<f64> =
                                    values.iter().map(|&(_, b)| f64::from_bits(b)).collect();
                                (!vals.is_empty()).then(|| agg.apply(&vals).to_bits())
                            });
                            if new != g.out {
                                if let Some(o) = g.out {
                                    session.give(((g.key.clone(), o), t, -1));
                                }
                                if let Some(n) = new {
                                    session.give(((g.key.clone(), n), t, 1));
                                }
                                g.out = new;
                            }
                            if g.members.is_empty() && g.out.is_none() && g.waiting == 0 {
                                // Shrunk tables give their memory back as groups empty.
                                ids.remove(&g.key);
                                groups[id as usize] = None;
                                free.push(id);
                            } else if g.members.capacity() > 4 * g.members.len().max(4) {
                                g.members.shrink_to_fit();
                            }
                        }
                    }
                    if applied {
                        let slot = hash_slot(16);
                        let members: i64 = groups
                            .iter()
                            .flatten()
                            .map(|g| g.members.capacity() as i64 * slot)
                            .sum();
                        let waiting: usize = pending.values().map(|(_, u)| u.capacity()).sum();
                        reported.set(
                            members
                                + (waiting * std::mem::size_of::<MemberUpdate>()) as i64
                                + (groups.capacity() * std::mem::size_of::<Option<GroupState>>())
                                    as i64,
                        );
                    }
                }
            },
        )
        .as_collection()
}

/// The rules' results from the leaves' values: `(rule, labels, value bits)`.
pub fn rule_results<'s>(
    leaves: VecCollection<'s, u64, (u32, u64, u64)>,
    plans: Arc<Plans>,
    lookup: Lookup,
) -> VecCollection<'s, u64, (u32, LabelPairs, u64)> {
    // Which branches each leaf feeds.
    let mut feeds: HashMap<u32, Vec<BranchId>> = HashMap::new();
    let mut grouped_feeds: HashMap<u32, Vec<BranchId>> = HashMap::new();
    for (id, b) in plans.branches() {
        feeds.entry(b.leaf).or_default().push(id);
        if b.agg.is_some() {
            grouped_feeds.entry(b.leaf).or_default().push(id);
        }
    }
    let absent: HashMap<u32, u32> = plans
        .rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            RulePlan::Absent { leaf, .. } => Some((*leaf, i as u32)),
            _ => None,
        })
        .collect();
    let started = leaves.clone().flat_map(|(leaf, w, t)| {
        (leaf == STARTED).then(|| (STARTED, vec![(String::new(), w.to_string())], t))
    });
    let p = Arc::clone(&plans);
    let look = Arc::clone(&lookup);
    let absent_leaves = absent.clone();
    // Per series, after the branch's scalar operations, for the branches that are not
    // aggregated (and `absent`): (branch, labels, value).
    let plain = leaves.clone().flat_map(move |(leaf, series, bits)| {
        let mut out = Vec::new();
        if leaf == STARTED {
            return out;
        }
        let plain: Vec<BranchId> = feeds
            .get(&leaf)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&bid| p.branch(bid).is_some_and(|b| b.agg.is_none()))
            .collect();
        let absent = absent_leaves.get(&leaf);
        if plain.is_empty() && absent.is_none() {
            return out;
        }
        let Some(labels) = look(series) else {
            return out;
        };
        let v = f64::from_bits(bits);
        if let Some(&rule) = absent {
            out.push(((rule, 2u8), LabelPairs::new(), bits));
        }
        for bid in plain {
            let Some(b) = p.branch(bid) else { continue };
            let mut l: LabelPairs = owned_pairs(&labels);
            if p.leaves[leaf as usize].window.is_some() && !p.leaves[leaf as usize].keeps_name {
                l.retain(|(k, _)| k != METRIC_NAME);
            }
            if let Some(v) = apply_ops(&b.pre, &mut l, v) {
                out.push((bid, l, v.to_bits()));
            }
        }
        out
    });
    let p = Arc::clone(&plans);
    // The aggregated branches: ((branch, group), (series, value)), without copying the series'
    // labels (a group is a few of them).
    // The groups of the last (leaf, series) seen: a series' value change comes as the
    // retraction of its old value and its new one, one after the other, and both need its
    // groups (a label lookup, and the group's labels built: 4 % of the CPU at 1 M series).
    let mut last: Option<((u32, u64), Vec<GroupKey>)> = None;
    let grouped = leaves.flat_map(move |(leaf, series, bits)| {
        let mut out = Vec::new();
        if leaf == STARTED {
            return out;
        }
        let Some(bids) = grouped_feeds.get(&leaf) else {
            return out;
        };
        if last.as_ref().is_none_or(|(k, _)| *k != (leaf, series)) {
            let Some(labels) = lookup(series) else {
                return out;
            };
            let labels: &[u8] = &labels;
            let windowed =
                p.leaves[leaf as usize].window.is_some() && !p.leaves[leaf as usize].keeps_name;
            let groups = bids
                .iter()
                .filter_map(|&bid| {
                    let b = p.branch(bid)?;
                    let agg = b.agg.as_ref()?;
                    let drops_name = windowed || b.pre.iter().any(|op| op.op.drops_name());
                    let mut group = agg.group(canonical_pairs(labels));
                    if drops_name {
                        group.retain(|(k, _)| k != METRIC_NAME);
                    }
                    Some((bid, group))
                })
                .collect();
            last = Some(((leaf, series), groups));
        }
        let Some((_, groups)) = &last else {
            return out;
        };
        for (bid, group) in groups {
            let Some(b) = p.branch(*bid) else { continue };
            let mut v = f64::from_bits(bits);
            let mut kept = true;
            for op in &b.pre {
                match op.apply(v) {
                    Some(x) => v = x,
                    None => {
                        kept = false;
                        break;
                    }
                }
            }
            if kept {
                out.push(((*bid, group.clone()), (series, v.to_bits())));
            }
        }
        out
    });
    let grouped = group_aggregate(grouped, Arc::clone(&plans));
    let p = Arc::clone(&plans);
    let grouped = grouped.flat_map(move |((bid, mut labels), bits)| {
        let b = p.branch(bid)?;
        let v = apply_ops(&b.post, &mut labels, f64::from_bits(bits))?;
        Some((bid, labels, v.to_bits()))
    });
    let branches = plain.concat(grouped);
    let p = Arc::clone(&plans);
    let singles = branches
        .clone()
        .flat_map(move |((rule, side), labels, bits)| {
            let single =
                side == 2 || matches!(p.rules.get(rule as usize), Some(RulePlan::Branch(_)));
            single.then_some((rule, labels, bits))
        });
    let key = {
        let p = Arc::clone(&plans);
        move |want: u8| {
            let p = Arc::clone(&p);
            move |((rule, side), labels, bits): (BranchId, LabelPairs, u64)| {
                if side != want {
                    return None;
                }
                let Some(RulePlan::Join { on, labels: m, .. }) = p.rules.get(rule as usize) else {
                    return None;
                };
                let k: LabelPairs = labels
                    .iter()
                    .filter(|(n, _)| {
                        if *on {
                            m.contains(n)
                        } else {
                            n != METRIC_NAME && !m.contains(n)
                        }
                    })
                    .cloned()
                    .collect();
                Some(((rule, k), (labels, bits)))
            }
        }
    };
    let lhs = branches.clone().flat_map(key(0));
    let rhs = branches.flat_map(key(1));
    // One-to-one matching: a match group twice on the right is an error; twice on the left
    // too, when the right has it (the engine's errors, as a record the store turns into one).
    let rhs_keys = rhs.clone().map(|(k, _)| k);
    let rhs_dups = rhs_keys.clone().count().flat_map(|((rule, k), n)| {
        (n > 1).then(|| {
            let msg = format!("found duplicate series for the match group {k:?} on the right hand-side of the operation; many-to-many matching not allowed: matching labels must be unique on one side");
            (rule, vec![(ERROR_LABEL.to_string(), msg)], 0)
        })
    });
    let lhs_dups = lhs
        .clone()
        .map(|(k, _)| k)
        .count()
        .filter(|(_, n)| *n > 1)
        .map(|(k, _)| (k, ()))
        .semijoin(rhs_keys.distinct())
        .map(|((rule, k), ())| {
            let msg = format!("multiple matches for labels: many-to-one matching must be explicit (group_left/group_right); found for {k:?}");
            (rule, vec![(ERROR_LABEL.to_string(), msg)], 0)
        });
    let p = Arc::clone(&plans);
    let joined = lhs
        .join(rhs)
        .flat_map(move |((rule, k), ((ll, lb), (_, rb)))| {
            let Some(RulePlan::Join {
                op,
                on,
                labels,
                post,
                ..
            }) = p.rules.get(rule as usize)
            else {
                return None;
            };
            let v = op.apply(f64::from_bits(lb), f64::from_bits(rb))?;
            let mut out = if *on { k } else { ll };
            if !*on {
                out.retain(|(n, _)| !labels.contains(n));
            }
            if op.drops_name() {
                out.retain(|(n, _)| n != METRIC_NAME);
            }
            let v = apply_ops(post, &mut out, v)?;
            Some((rule, out, v.to_bits()))
        });
    singles
        .concat(joined)
        .concat(started)
        .concat(rhs_dups)
        .concat(lhs_dups)
}

/// Each rule's current result, kept on worker 0 from the changes [`rule_results`] produces.
#[derive(Default)]
pub struct ResultStore {
    /// Changes not applied yet, by time.
    pending: BTreeMap<u64, Vec<(ResultRecord, isize)>>,
    /// Per rule, per label set, its values with their counts.
    current: HashMap<u32, BTreeMap<LabelPairs, Vec<(u64, isize)>>>,
    /// Rules that are `absent(...)`, with the labels they return.
    absent: HashMap<u32, LabelPairs>,
    /// Per worker, the tick from which its [`leaf_values`] values are complete: results are
    /// complete from the latest of them on.
    first_ticks: Vec<Option<u64>>,
}

/// A rule result: `(rule, labels, value bits)`.
pub type ResultRecord = (u32, LabelPairs, u64);

/// A rule's vector at one tick, or why it has none.
pub type TickResult = Result<Vec<(LabelPairs, f64)>, String>;

impl ResultStore {
    /// An empty store for `plans` fed by `workers` workers.
    pub fn new(plans: &Plans, workers: usize) -> Self {
        let absent = plans
            .rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r {
                RulePlan::Absent { labels, .. } => Some((i as u32, labels.clone())),
                _ => None,
            })
            .collect();
        ResultStore {
            absent,
            first_ticks: vec![None; workers.max(1)],
            ..Default::default()
        }
    }

    /// Records that worker `w`'s values are complete from `tick` on (its first tick, or the
    /// tick it skipped to after falling behind).
    pub fn started(&mut self, w: usize, tick: u64) {
        if let Some(s) = self.first_ticks.get_mut(w) {
            *s = Some(s.map_or(tick, |x| x.max(tick)));
        }
    }

    /// The tick from which every worker's values are complete (`None` until each said): earlier ticks are not
    /// covered, the engine evaluates them.
    pub fn covered_from(&self) -> Option<u64> {
        self.first_ticks
            .iter()
            .try_fold(0, |m, t| t.map(|t| m.max(t)))
    }

    fn push(&mut self, rec: (u32, LabelPairs, u64), t: u64, diff: isize) {
        if rec.0 == STARTED {
            // Sent once, at the worker's first tick: it has arrived before that tick is read.
            if let Some(w) = rec.1.first().and_then(|(_, w)| w.parse().ok()) {
                self.started(w, rec.2);
            }
            return;
        }
        self.pending.entry(t).or_default().push((rec, diff));
    }

    fn apply_through(&mut self, t: u64) {
        let later = self.pending.split_off(&(t + 1));
        for (_, changes) in std::mem::replace(&mut self.pending, later) {
            for ((rule, labels, bits), d) in changes {
                let r = self.current.entry(rule).or_default();
                let vals = r.entry(labels.clone()).or_default();
                match vals.iter().position(|(b, _)| *b == bits) {
                    Some(i) => {
                        vals[i].1 += d;
                        if vals[i].1 == 0 {
                            vals.swap_remove(i);
                        }
                    }
                    None => vals.push((bits, d)),
                }
                if vals.is_empty() {
                    r.remove(&labels);
                }
            }
        }
    }

    fn vector(&self, rule: u32) -> TickResult {
        let empty = BTreeMap::new();
        let cur = self.current.get(&rule).unwrap_or(&empty);
        if let Some(labels) = self.absent.get(&rule) {
            return Ok(if cur.is_empty() {
                vec![(labels.clone(), 1.0)]
            } else {
                Vec::new()
            });
        }
        if let Some((labels, _)) = cur
            .iter()
            .find(|(l, _)| l.first().is_some_and(|(k, _)| k == ERROR_LABEL))
        {
            return Err(labels[0].1.clone());
        }
        let mut out = Vec::with_capacity(cur.len());
        for (labels, vals) in cur {
            match vals.as_slice() {
                [(bits, 1)] => out.push((labels.clone(), f64::from_bits(*bits))),
                _ => {
                    return Err(format!(
                        "vector cannot contain metrics with the same labelset {labels:?}"
                    ))
                }
            }
        }
        Ok(out)
    }

    /// Every rule's vector at each of its ticks (ascending) that is covered (see
    /// [`ResultStore::covered_from`]); changes up to the last tick are applied and dropped.
    pub fn snapshots(&mut self, rules: &[(u32, Vec<u64>)]) -> HashMap<u32, Vec<(u64, TickResult)>> {
        let from = self.covered_from().unwrap_or(u64::MAX);
        let mut ticks: Vec<u64> = rules
            .iter()
            .flat_map(|(_, t)| t.iter().copied())
            .filter(|t| *t >= from)
            .collect();
        ticks.sort_unstable();
        ticks.dedup();
        let mut out: HashMap<u32, Vec<(u64, TickResult)>> = HashMap::new();
        for t in ticks {
            self.apply_through(t);
            for (rule, at) in rules {
                if at.binary_search(&t).is_ok() {
                    out.entry(*rule).or_default().push((t, self.vector(*rule)));
                }
            }
        }
        out
    }
}

/// Gathers the rule results on worker 0 into `store` (the other workers pass `None`); the
/// output's frontier tells which ticks' results are complete.
pub fn sink_results<'s>(
    results: VecCollection<'s, u64, (u32, LabelPairs, u64)>,
    store: Option<Arc<Mutex<ResultStore>>>,
) -> Done<'s> {
    type Update = ((u32, LabelPairs, u64), u64, isize);
    results.inner.unary(
        Exchange::new(|_: &Update| 0u64),
        "RuleResults",
        move |_, _| {
            move |input,
                  _output: &mut OutputBuilderSession<
                '_,
                u64,
                CapacityContainerBuilder<Vec<()>>,
            >| {
                input.for_each(|_, data| {
                    let Some(store) = &store else { return };
                    let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
                    for (rec, t, d) in data.drain(..) {
                        s.push(rec, t, d);
                    }
                });
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_state_fits_jemallocs_96_byte_class() {
        assert!(
            std::mem::size_of::<SeriesState>() <= 96,
            "{}",
            std::mem::size_of::<SeriesState>()
        );
    }

    #[test]
    fn series_samples_take_late_and_repeated_times_in_order() {
        let mut st = SeriesState::default();
        for t in [10, 30, 20, 40, 30, 5] {
            st.insert(t, t as f64 / 4.0);
        }
        st.insert(30, -1.0); // the last write wins
        st.insert(50, 0.1 + 0.2);
        let mut v = Vec::new();
        st.samples.decode_into(&mut v);
        let want = vec![
            (5, 1.25),
            (10, 2.5),
            (20, 5.0),
            (30, -1.0),
            (40, 10.0),
            (50, 0.1 + 0.2),
        ];
        assert_eq!(v, want);
        assert_eq!(st.samples.last_ts(), Some(50));
    }

    fn started(w: usize) -> (u32, LabelPairs, u64) {
        (STARTED, vec![(String::new(), w.to_string())], 0)
    }

    #[test]
    fn ticks_before_every_worker_started_go_to_the_engine() {
        let plans = Plans {
            leaves: Vec::new(),
            rules: vec![RulePlan::Absent {
                leaf: 0,
                labels: vec![("job".into(), "x".into())],
            }],
        };
        let mut s = ResultStore::new(&plans, 2);
        let mut a = started(0);
        a.2 = 5;
        s.push(a, 5, 1);
        assert!(
            s.snapshots(&[(0, vec![5, 6])]).is_empty(),
            "worker 1 not started"
        );
        let mut b = started(1);
        b.2 = 6;
        s.push(b, 6, 1);
        let snap = s.snapshots(&[(0, vec![5, 6, 7])]);
        let ticks: Vec<u64> = snap[&0].iter().map(|(t, _)| *t).collect();
        assert_eq!(ticks, vec![6, 7], "covered from the later first tick");
        // `absent` of an empty leaf is its labels, 1.
        assert_eq!(
            snap[&0][0].1,
            Ok(vec![(vec![("job".to_string(), "x".to_string())], 1.0)])
        );
    }

    #[test]
    fn series_no_leaf_reads_are_matched_once_an_hour_not_per_sample() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use timely::dataflow::operators::{Capture, Input, Probe};
        let last: WindowFn = |w, _, _| w.last().map(|p| p.1);
        let plans = Arc::new(Plans {
            leaves: vec![Leaf {
                matches: Arc::new(|pairs| pairs.iter().any(|(k, v)| k == METRIC_NAME && v == "x")),
                key: None,
                window: Some((last, 60_000)),
                keeps_name: true,
                interval: 10_000,
                every_tick: false,
            }],
            rules: vec![],
        });
        // Series 1 is `x` (read by the leaf), series 2 is `y` (read by none).
        let looked_up = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let seen = Arc::clone(&looked_up);
        let cfg = TickConfig {
            resolution: 10_000,
            max_catch_up: 3_600_000,
            ticks_per_activation: 1_000,
            ..TickConfig::default()
        };
        const END: i64 = 150 * 60_000; // 2.5 hours of a sample a minute
        let out = timely::execute_directly(move |worker| {
            let (mut input, probe, out) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, samples) = scope.new_input::<Vec<Sample>>();
                let lookup: Lookup = Arc::new(move |id| {
                    seen[(id - 1) as usize].fetch_add(1, Ordering::Relaxed);
                    let name: &[u8] = if id == 1 { b"x" } else { b"y" };
                    Some(SharedLabels::from(
                        [&b"__name__\xff"[..], name, b"\xfe"].concat(),
                    ))
                });
                let v = leaf_values(samples, plans, lookup, cfg, Some(0));
                let (probe, v) = v.inner.probe();
                (input, probe, v.capture())
            });
            let mut ts = 0;
            while ts < END {
                for series in [1, 2] {
                    input.send(Sample {
                        series,
                        ts: ts + 1_000,
                        value: ts as f64,
                    });
                }
                ts += 60_000;
                input.advance_to(ts as u64);
                // The leaf holds its capability at its last tick plus one.
                worker.step_while(|| probe.less_than(&((ts - 10_000) as u64)));
            }
            out
        });
        let values: Vec<(u64, u64)> = out
            .try_iter()
            .filter_map(|e| match e {
                timely::dataflow::operators::capture::Event::Messages(_, d) => Some(d),
                _ => None,
            })
            .flatten()
            .filter(|((leaf, _, _), _, d)| *leaf != STARTED && *d > 0)
            .map(|((_, series, _), t, _)| (series, t))
            .collect();
        // Only series 1 has values, through the end.
        assert!(values.iter().all(|&(series, _)| series == 1));
        assert!(values.iter().any(|&(_, t)| t > (END - 120_000) as u64));
        // Series 1 has a state and is looked up once; series 2 once when first seen and once
        // more after each hourly clear, not at each of its 150 samples.
        assert_eq!(looked_up[0].load(Ordering::Relaxed), 1);
        let y = looked_up[1].load(Ordering::Relaxed);
        assert!((3..=5).contains(&y), "series 2 looked up {y} times");
    }

    /// One leaf: the last value over 10 minutes of every series, at a 1 s interval.
    fn last_over_ten_minutes() -> Arc<Plans> {
        let last: WindowFn = |w, _, _| w.last().map(|p| p.1);
        Arc::new(Plans {
            leaves: vec![Leaf {
                matches: Arc::new(|_| true),
                key: None,
                window: Some((last, 600_000)),
                keeps_name: true,
                interval: 1_000,
                every_tick: false,
            }],
            rules: vec![],
        })
    }

    #[test]
    fn far_behind_the_frontier_only_the_newest_tick_is_evaluated() {
        use timely::dataflow::operators::{Capture, Input, Probe};
        let plans = last_over_ten_minutes();
        let out = timely::execute_directly(move |worker| {
            let (mut input, probe, out) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, samples) = scope.new_input::<Vec<Sample>>();
                let lookup: Lookup = Arc::new(|_| Some(SharedLabels::from(Vec::<u8>::new())));
                let v = leaf_values(samples, plans, lookup, TickConfig::default(), Some(0));
                let (probe, v) = v.inner.probe();
                (input, probe, v.capture())
            });
            input.send(Sample {
                series: 1,
                ts: 500,
                value: 1.0,
            });
            input.advance_to(5_500); // 5 ticks behind: each evaluated
            worker.step_while(|| probe.less_than(&5_000));
            input.send(Sample {
                series: 1,
                ts: 6_000,
                value: 2.0,
            });
            input.advance_to(400_500); // 394 s behind: only 400 s
            worker.step_while(|| probe.less_than(&400_000));
            out
        });
        let mut got: Vec<(u64, u32, u64, isize)> = out
            .try_iter()
            .filter_map(|e| match e {
                timely::dataflow::operators::capture::Event::Messages(_, d) => Some(d),
                _ => None,
            })
            .flatten()
            .map(|((leaf, _, bits), t, d)| {
                let v = if leaf == STARTED {
                    bits
                } else {
                    f64::from_bits(bits) as u64
                };
                (t, leaf, v, d)
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (1_000, 0, 1, 1),             // 1 from the first tick,
                (1_000, STARTED, 1_000, 1),   // complete from 1 s;
                (6_000, STARTED, 400_000, 1), // at the first skipped tick: complete from 400 s,
                (400_000, 0, 1, -1),          // and the ticks between were not evaluated
                (400_000, 0, 2, 1),
            ]
        );
    }

    #[test]
    fn a_first_run_evaluates_every_tick_from_the_oldest_sample_on() {
        use timely::dataflow::operators::{Capture, Input, Probe};
        let plans = last_over_ten_minutes();
        // No saved tick: the ticks start an hour (`max_catch_up`) before the frontier, 600 an
        // activation, so one batch of ticks holds the 100 s before the first sample and the
        // 99 s after it.
        const FIRST: i64 = 3_600_500;
        let out = timely::execute_directly(move |worker| {
            let (mut input, probe, out) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, samples) = scope.new_input::<Vec<Sample>>();
                let lookup: Lookup = Arc::new(|_| Some(SharedLabels::from(Vec::<u8>::new())));
                let v = leaf_values(samples, plans, lookup, TickConfig::default(), None);
                let (probe, v) = v.inner.probe();
                (input, probe, v.capture())
            });
            for k in 0..20 {
                input.send(Sample {
                    series: 1,
                    ts: FIRST + k * 10_000,
                    value: k as f64,
                });
            }
            input.advance_to(3_800_500);
            worker.step_while(|| probe.less_than(&3_800_000));
            out
        });
        let got: Vec<(u64, u32, u64, isize)> = out
            .try_iter()
            .filter_map(|e| match e {
                timely::dataflow::operators::capture::Event::Messages(_, d) => Some(d),
                _ => None,
            })
            .flatten()
            .map(|((leaf, _, bits), t, d)| (t, leaf, bits, d))
            .collect();
        let started: Vec<u64> = got.iter().filter(|g| g.1 == STARTED).map(|g| g.2).collect();
        // Complete from the first tick of the run (an hour before the data), never skipped
        // past the data to hand its first minutes to the engine.
        assert_eq!(started.len(), 1, "{got:?}");
        assert!(started[0] < 3_000_000, "{got:?}");
        let mut values: Vec<(u64, f64)> = got
            .iter()
            .filter(|g| g.1 == 0 && g.3 > 0)
            .map(|g| (g.0, f64::from_bits(g.2)))
            .collect();
        values.sort_by_key(|v| v.0);
        let expected: Vec<(u64, f64)> = (0..20)
            .map(|k| {
                (
                    (FIRST as u64).div_ceil(1_000) * 1_000 + k * 10_000,
                    k as f64,
                )
            })
            .collect();
        assert_eq!(values, expected);
    }

    #[test]
    fn changes_apply_by_time_and_duplicate_label_sets_are_an_error() {
        let plans = Plans {
            leaves: Vec::new(),
            rules: vec![RulePlan::Branch(Branch {
                leaf: 0,
                pre: Vec::new(),
                agg: None,
                post: Vec::new(),
            })],
        };
        let mut s = ResultStore::new(&plans, 1);
        s.push(started(0), 0, 1);
        let l = vec![("a".to_string(), "1".to_string())];
        s.push((0, l.clone(), 1.5f64.to_bits()), 10, 1);
        s.push((0, l.clone(), 1.5f64.to_bits()), 20, -1);
        s.push((0, l.clone(), 2.5f64.to_bits()), 20, 1);
        s.push((0, l.clone(), 9.0f64.to_bits()), 30, 1);
        let snap = s.snapshots(&[(0, vec![5, 10, 20, 30])]);
        let got: Vec<_> = snap[&0].iter().map(|(_, r)| r.clone()).collect();
        assert_eq!(got[0], Ok(vec![]));
        assert_eq!(got[1], Ok(vec![(l.clone(), 1.5)]));
        assert_eq!(got[2], Ok(vec![(l.clone(), 2.5)]));
        assert!(got[3].as_ref().unwrap_err().contains("same labelset"));
    }

    #[test]
    fn scalar_operations_keep_the_vector_value_and_drop_the_name_as_prometheus() {
        let gt = |scalar_left| ScalarOp {
            op: BinOp::Cmp(CmpOp::Gt, false),
            scalar: 90.0,
            scalar_left,
        };
        assert_eq!(gt(false).apply(95.0), Some(95.0)); // x > 90
        assert_eq!(gt(true).apply(95.0), None); // 90 > x
        assert_eq!(gt(true).apply(50.0), Some(50.0));
        let sub = ScalarOp {
            op: BinOp::Arith(ArithOp::Sub),
            scalar: 100.0,
            scalar_left: true,
        };
        let mut l = vec![("__name__".to_string(), "x".to_string())];
        assert_eq!(apply_ops(&[sub], &mut l, 30.0), Some(70.0));
        assert!(l.is_empty(), "arithmetic drops the name");
    }
}

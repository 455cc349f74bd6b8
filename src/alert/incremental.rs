//! Which rules the job maintains incrementally, and their plans: PromQL compiled to
//! [`tidemark_dataflows::incremental`] plans.
//!
//! Compiled: instant and range selectors (no `offset`/`@`), the range functions of
//! [`crate::query::functions::window_fn`] (`rate`, `increase`, `delta`, `irate`, `*_over_time`,
//! ...), arithmetic and comparisons (with or without `bool`) between a vector and a number,
//! `sum`/`avg`/`min`/`max`/`count` `by`/`without`, one-to-one vector matching (`on`,
//! `ignoring`) between two such expressions, and `absent(selector)`. A selector of a recording
//! rule's output (`instance:cpu:avg > 90`) is replaced by the recording rule's expression when
//! that rule runs before it at the same interval, which is what the engine would read at the
//! same tick. Everything else (`topk`, `histogram_quantile`, `group_left`, subqueries, ...)
//! stays with the query engine, evaluated at the same ticks.

use std::collections::HashMap;
use std::sync::Arc;

use promql_parser::parser::{
    token, AggregateExpr, BinaryExpr, Call, Expr, LabelModifier, ParenExpr, VectorMatchCardinality,
    VectorSelector,
};
use tidemark_dataflows::incremental::{
    Agg, AggOp, ArithOp, BinOp, Branch, CmpOp, LabelPairs, Leaf, Plans, RulePlan, ScalarOp,
};

use super::rules::{Group, RuleKind};
use crate::model::METRIC_NAME;
use crate::query::engine::selector_matchers;
use crate::query::functions::window_fn;

/// The compiled plans, and per group and rule the plan's id with the text it was compiled from
/// (the rule's expression with the recording rules it reads inlined).
pub struct Compiled {
    pub plans: Plans,
    pub rules: Vec<Vec<Option<(u32, String)>>>,
}

/// Series the evaluator itself writes: never inlined, never read incrementally.
const WRITTEN: [&str; 2] = ["ALERTS", "ALERTS_FOR_STATE"];

/// What each rule of `groups` reads, with recording rules inlined: `None` when it reads a
/// series the rules write in a way inlining cannot replace.
pub fn inlined(groups: &[Group], resolution: u64) -> Vec<Vec<Option<Expr>>> {
    let res = resolution.max(1);
    // Recorded name -> (interval, expression); `None`: recorded several times, not inlinable.
    let mut records: HashMap<String, Option<(u64, Expr)>> = HashMap::new();
    let written: Vec<String> = groups
        .iter()
        .flat_map(|g| g.rules.iter())
        .filter(|r| !r.is_alert())
        .map(|r| r.name.clone())
        .chain(WRITTEN.iter().map(|s| s.to_string()))
        .collect();
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let interval = g.interval_ms.map_or(res, |i| i.div_ceil(res) * res);
        let mut row = Vec::with_capacity(g.rules.len());
        for r in &g.rules {
            let e = inline(&r.expr, &records, &written, interval);
            if matches!(r.kind, RuleKind::Record) {
                let entry = records.entry(r.name.clone()).or_insert(None);
                *entry = match (&e, entry.is_none() && r.labels.is_empty()) {
                    (Some(e), true) => Some((interval, e.clone())),
                    _ => None,
                };
                if entry.is_some() && records_twice(groups, &r.name) {
                    *entry = None;
                }
            }
            row.push(e);
        }
        out.push(row);
    }
    out
}

fn records_twice(groups: &[Group], name: &str) -> bool {
    groups
        .iter()
        .flat_map(|g| g.rules.iter())
        .filter(|r| !r.is_alert() && r.name == name)
        .count()
        > 1
}

/// `e` with selectors of inlinable recorded series replaced by their expressions.
fn inline(
    e: &Expr,
    records: &HashMap<String, Option<(u64, Expr)>>,
    written: &[String],
    interval: u64,
) -> Option<Expr> {
    let reads_written = |vs: &VectorSelector| match &vs.name {
        Some(n) => written.contains(n),
        // A selector without a name could match anything the rules write.
        None => true,
    };
    Some(match e {
        Expr::VectorSelector(vs) if reads_written(vs) => {
            let name = vs.name.as_deref()?;
            let (i, inner) = records.get(name)?.as_ref()?;
            let only_name = vs.matchers.or_matchers.is_empty()
                && vs.matchers.matchers.iter().all(|m| m.name == METRIC_NAME);
            if *i != interval || !only_name || vs.offset.is_some() || vs.at.is_some() {
                return None;
            }
            Expr::Paren(ParenExpr {
                expr: Box::new(inner.clone()),
            })
        }
        Expr::MatrixSelector(ms) if reads_written(&ms.vs) => return None,
        Expr::Paren(p) => Expr::Paren(ParenExpr {
            expr: Box::new(inline(&p.expr, records, written, interval)?),
        }),
        Expr::Binary(b) => Expr::Binary(BinaryExpr {
            op: b.op,
            lhs: Box::new(inline(&b.lhs, records, written, interval)?),
            rhs: Box::new(inline(&b.rhs, records, written, interval)?),
            modifier: b.modifier.clone(),
        }),
        Expr::Aggregate(a) => Expr::Aggregate(AggregateExpr {
            op: a.op,
            expr: Box::new(inline(&a.expr, records, written, interval)?),
            param: a.param.clone(),
            modifier: a.modifier.clone(),
        }),
        Expr::Call(c) => {
            let mut c2: Call = c.clone();
            for arg in c2.args.args.iter_mut() {
                **arg = inline(arg, records, written, interval)?;
            }
            Expr::Call(c2)
        }
        Expr::Unary(_) | Expr::Subquery(_) => {
            // Not compiled anyway; the engine reads the written series from the overlay.
            e.clone()
        }
        other => other.clone(),
    })
}

/// Compiles every rule of `groups` that fits the incremental shapes.
pub fn compile(groups: &[Group], resolution: u64) -> Compiled {
    let res = resolution.max(1);
    let mut c = Compiler::default();
    let mut rules = Vec::with_capacity(groups.len());
    for (g, row) in groups.iter().zip(inlined(groups, res)) {
        let interval = g.interval_ms.map_or(res, |i| i.div_ceil(res) * res);
        c.interval = interval;
        let mut ids = Vec::with_capacity(row.len());
        for e in row {
            let compiled = e.and_then(|e| {
                let mark = c.leaves.len();
                match c.expr(&e) {
                    Some(p) => Some((p, e.to_string())),
                    None => {
                        // Leaves made for a rule that did not compile are not kept.
                        c.leaves.truncate(mark);
                        c.leaf_keys.retain(|_, id| (*id as usize) < mark);
                        None
                    }
                }
            });
            ids.push(compiled.map(|(p, text)| {
                c.rules.push(p);
                ((c.rules.len() - 1) as u32, text)
            }));
        }
        rules.push(ids);
    }
    Compiled {
        plans: Plans {
            leaves: c.leaves,
            rules: c.rules,
        },
        rules,
    }
}

#[derive(Default)]
struct Compiler {
    leaves: Vec<Leaf>,
    leaf_keys: HashMap<String, u32>,
    rules: Vec<RulePlan>,
    interval: u64,
}

fn number(e: &Expr) -> Option<f64> {
    match e {
        Expr::NumberLiteral(n) => Some(n.val),
        Expr::Paren(p) => number(&p.expr),
        Expr::Unary(u) => number(&u.expr).map(|v| -v),
        _ => None,
    }
}

fn bin_op(op: token::TokenId, return_bool: bool) -> Option<BinOp> {
    Some(match op {
        token::T_ADD => BinOp::Arith(ArithOp::Add),
        token::T_SUB => BinOp::Arith(ArithOp::Sub),
        token::T_MUL => BinOp::Arith(ArithOp::Mul),
        token::T_DIV => BinOp::Arith(ArithOp::Div),
        token::T_MOD => BinOp::Arith(ArithOp::Mod),
        token::T_POW => BinOp::Arith(ArithOp::Pow),
        token::T_EQLC => BinOp::Cmp(CmpOp::Eq, return_bool),
        token::T_NEQ => BinOp::Cmp(CmpOp::Ne, return_bool),
        token::T_GTR => BinOp::Cmp(CmpOp::Gt, return_bool),
        token::T_LSS => BinOp::Cmp(CmpOp::Lt, return_bool),
        token::T_GTE => BinOp::Cmp(CmpOp::Ge, return_bool),
        token::T_LTE => BinOp::Cmp(CmpOp::Le, return_bool),
        _ => return None,
    })
}

impl Compiler {
    fn expr(&mut self, e: &Expr) -> Option<RulePlan> {
        match e {
            Expr::Paren(p) => self.expr(&p.expr),
            Expr::VectorSelector(vs) => Some(RulePlan::Branch(self.branch(vs, None)?)),
            Expr::Call(c) => self.call(c),
            Expr::Aggregate(a) => {
                let op = match a.op.id() {
                    token::T_SUM => AggOp::Sum,
                    token::T_AVG => AggOp::Avg,
                    token::T_MIN => AggOp::Min,
                    token::T_MAX => AggOp::Max,
                    token::T_COUNT => AggOp::Count,
                    _ => return None,
                };
                if a.param.is_some() {
                    return None;
                }
                let RulePlan::Branch(mut b) = self.expr(&a.expr)? else {
                    return None;
                };
                if b.agg.is_some() {
                    return None;
                }
                b.agg = Some(match &a.modifier {
                    None => Agg {
                        op,
                        without: false,
                        labels: Vec::new(),
                    },
                    Some(LabelModifier::Include(l)) => Agg {
                        op,
                        without: false,
                        labels: l.labels.clone(),
                    },
                    Some(LabelModifier::Exclude(l)) => Agg {
                        op,
                        without: true,
                        labels: l.labels.clone(),
                    },
                });
                Some(RulePlan::Branch(b))
            }
            Expr::Binary(b) => {
                let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
                let op = bin_op(b.op.id(), return_bool)?;
                if let Some(s) = number(&b.rhs) {
                    let mut p = self.expr(&b.lhs)?;
                    push_scalar(&mut p, op, s, false)?;
                    return Some(p);
                }
                if let Some(s) = number(&b.lhs) {
                    let mut p = self.expr(&b.rhs)?;
                    push_scalar(&mut p, op, s, true)?;
                    return Some(p);
                }
                let m = b.modifier.as_ref();
                if m.is_some_and(|m| !matches!(m.card, VectorMatchCardinality::OneToOne)) {
                    return None;
                }
                let (on, labels) = match m.and_then(|m| m.matching.as_ref()) {
                    None => (false, Vec::new()),
                    Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
                    Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
                };
                let (RulePlan::Branch(lhs), RulePlan::Branch(rhs)) =
                    (self.expr(&b.lhs)?, self.expr(&b.rhs)?)
                else {
                    return None;
                };
                Some(RulePlan::Join {
                    lhs,
                    rhs,
                    op,
                    on,
                    labels,
                    post: Vec::new(),
                })
            }
            _ => None,
        }
    }

    fn call(&mut self, c: &Call) -> Option<RulePlan> {
        let [arg] = c.args.args.as_slice() else {
            return None;
        };
        match (c.func.name, &**arg) {
            ("absent", Expr::VectorSelector(vs)) => {
                let b = self.branch(vs, None)?;
                let mut labels: LabelPairs = Vec::new();
                for m in &vs.matchers.matchers {
                    if m.name != METRIC_NAME
                        && matches!(m.op, promql_parser::label::MatchOp::Equal)
                        && !labels.iter().any(|(k, _)| *k == m.name)
                    {
                        labels.push((m.name.clone(), m.value.clone()));
                    }
                }
                labels.sort();
                Some(RulePlan::Absent {
                    leaf: b.leaf,
                    labels,
                })
            }
            (name, Expr::MatrixSelector(ms)) => {
                let (f, keeps_name) = window_fn(name)?;
                let range = ms.range.as_millis() as i64;
                Some(RulePlan::Branch(
                    self.branch(&ms.vs, Some((f, range, keeps_name, name)))?,
                ))
            }
            _ => None,
        }
    }

    fn branch(
        &mut self,
        vs: &VectorSelector,
        window: Option<(tidemark_dataflows::incremental::WindowFn, i64, bool, &str)>,
    ) -> Option<Branch> {
        if vs.offset.is_some() || vs.at.is_some() {
            return None;
        }
        let key = format!(
            "{vs}\u{0}{}\u{0}{}",
            window.map_or(String::new(), |(_, r, _, n)| format!("{n}[{r}]")),
            self.interval
        );
        let leaf = match self.leaf_keys.get(&key) {
            Some(&l) => l,
            None => {
                let sets = selector_matchers(vs);
                // Index by an equality matcher, a label's over the metric name's.
                let index_key = match sets.as_slice() {
                    [set] => set
                        .iter()
                        .filter_map(|m| match &m.op {
                            crate::store::hot::index::MatchOp::Eq(v) if !v.is_empty() => {
                                Some((m.name != METRIC_NAME, (m.name.clone(), v.clone())))
                            }
                            _ => None,
                        })
                        .max_by_key(|(label, _)| *label)
                        .map(|(_, k)| k),
                    _ => None,
                };
                let matches = Arc::new(move |labels: &[(String, String)]| {
                    sets.iter().any(|set| {
                        set.iter().all(|m| {
                            let v = labels
                                .binary_search_by(|(k, _)| k.as_str().cmp(&m.name))
                                .map(|i| labels[i].1.as_str())
                                .unwrap_or("");
                            m.matches(v)
                        })
                    })
                });
                self.leaves.push(Leaf {
                    matches,
                    key: index_key,
                    window: window.map(|(f, r, _, _)| (f, r)),
                    keeps_name: window.is_some_and(|(_, _, k, _)| k),
                    interval: self.interval,
                    every_tick: window
                        .is_some_and(|(_, _, _, n)| matches!(n, "rate" | "increase" | "delta")),
                });
                let id = (self.leaves.len() - 1) as u32;
                self.leaf_keys.insert(key, id);
                id
            }
        };
        Some(Branch {
            leaf,
            pre: Vec::new(),
            agg: None,
            post: Vec::new(),
        })
    }
}

fn push_scalar(p: &mut RulePlan, op: BinOp, scalar: f64, scalar_left: bool) -> Option<()> {
    let s = ScalarOp {
        op,
        scalar,
        scalar_left,
    };
    match p {
        RulePlan::Branch(b) if b.agg.is_none() => b.pre.push(s),
        RulePlan::Branch(b) => b.post.push(s),
        RulePlan::Join { post, .. } => post.push(s),
        RulePlan::Absent { .. } => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::rules::parse_rule_file;

    fn groups(yaml: &str) -> Vec<Group> {
        let (g, errors) = parse_rule_file(std::path::Path::new("t.yml"), yaml);
        assert!(errors.is_empty(), "{errors:?}");
        g
    }

    #[test]
    fn the_fleet_rules_compile_and_records_are_inlined() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/rules/fleet.yml"),
        )
        .unwrap();
        let gs = groups(&text);
        let c = compile(&gs, 1_000);
        let all: Vec<bool> = c.rules.iter().flatten().map(Option::is_some).collect();
        assert!(all.iter().all(|x| *x), "every fleet rule compiles: {all:?}");
        // HighErrorRate reads two recording rules: inlined, a join of two aggregations.
        let (id, text) = c.rules[1][4].clone().unwrap();
        assert!(text.contains("sum by (pool)"), "{text}");
        assert!(matches!(c.plans.rules[id as usize], RulePlan::Join { .. }));
        // Identical selectors share a leaf: the two requests_total rates are two windows.
        assert!(c.plans.leaves.len() <= 9, "{}", c.plans.leaves.len());
    }

    #[test]
    fn unsupported_shapes_stay_with_the_engine() {
        let gs = groups(
            "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: topk(3, x) > 1\n  - alert: B\n    expr: x offset 5m > 1\n  - alert: C\n    expr: x * on(a) group_left(b) y\n  - alert: D\n    expr: ALERTS > 0\n  - alert: E\n    expr: histogram_quantile(0.9, rate(h[5m])) > 1\n  - alert: F\n    expr: up == 0\n",
        );
        let c = compile(&gs, 1_000);
        let got: Vec<bool> = c.rules[0].iter().map(Option::is_some).collect();
        assert_eq!(got, vec![false, false, false, false, false, true]);
        assert_eq!(c.plans.rules.len(), 1);
        assert_eq!(
            c.plans.leaves.len(),
            1,
            "leaves of rules that failed are dropped"
        );
    }

    /// Deterministic noise in `[0, 1)`.
    fn noise(i: u64) -> f64 {
        let x = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 33) % 10_000) as f64 / 10_000.0
    }

    /// Feeds `samples` (sorted by time) through the incremental operators on `workers` timely
    /// workers, the leaves yielding after `budget` changes, and returns every plan's vector at
    /// `ticks`.
    fn run_incremental(
        plans: Arc<Plans>,
        labels: Arc<Vec<LabelPairs>>,
        samples: Arc<Vec<tidemark_dataflows::Sample>>,
        ticks: Vec<u64>,
        workers: usize,
        budget: usize,
    ) -> HashMap<u32, Vec<(u64, tidemark_dataflows::incremental::TickResult)>> {
        use tidemark_dataflows::incremental::{
            leaf_values, rule_results, sink_results, ResultStore,
        };
        use tidemark_dataflows::rules::TickConfig;
        use timely::dataflow::operators::{Input, Probe};
        let n_rules = plans.rules.len();
        let store = Arc::new(std::sync::Mutex::new(ResultStore::new(&plans, workers)));
        let end = *ticks.last().unwrap() + 1;
        let cfg = TickConfig {
            resolution: 1_000,
            max_catch_up: u64::MAX / 4,
            ticks_per_activation: 50,
            updates_per_activation: budget,
        };
        let first = ticks[0];
        let s = Arc::clone(&store);
        let steps = ticks.clone();
        timely::execute(timely::Config::process(workers), move |worker| {
            use timely::dataflow::operators::Exchange;
            let index = worker.index();
            let (plans, labels) = (Arc::clone(&plans), Arc::clone(&labels));
            let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<tidemark_dataflows::Sample>>();
                let stream = stream.exchange(|s: &tidemark_dataflows::Sample| s.series);
                let lookup: tidemark_dataflows::incremental::Lookup = Arc::new(move |id| {
                    labels
                        .get(id as usize)
                        .map(|l| crate::model::Labels::from_pairs(l.iter().cloned()).shared())
                });
                let leaves = leaf_values(
                    stream,
                    Arc::clone(&plans),
                    Arc::clone(&lookup),
                    cfg,
                    Some(first - 1_000),
                );
                let results = rule_results(leaves, Arc::clone(&plans), lookup);
                let done = sink_results(results, (index == 0).then(|| Arc::clone(&s)));
                (input, done.probe().0)
            });
            if index == 0 {
                // Sent at a watermark 2 s behind the newest time, as a source would.
                for x in samples.iter() {
                    let wm = (x.ts - 2_000).max(0) as u64;
                    if wm > *input.time() {
                        input.advance_to(wm);
                    }
                    input.send(*x);
                    worker.step();
                }
            }
            // Tick by tick to the end (a jump of more than a minute would leave the ticks in
            // between to the engine); the input stays open: a closed input ends evaluation.
            for t in steps.iter().map(|t| t + 1).chain([end + 1]) {
                if t > *input.time() {
                    input.advance_to(t);
                }
                worker.step_while(|| probe.less_than(&(t - 1)));
            }
        })
        .unwrap();
        let want: Vec<(u32, Vec<u64>)> =
            (0..n_rules as u32).map(|id| (id, ticks.clone())).collect();
        let mut st = store.lock().unwrap();
        st.snapshots(&want)
    }

    const RULES: &str = "groups:
- name: g
  rules:
  - alert: Rate
    expr: rate(req_total[1m])
  - record: job:req:rate1m
    expr: sum by (job) (rate(req_total[1m]))
  - alert: ErrRatio
    expr: sum by (job) (rate(req_total{code=\"500\"}[1m])) / job:req:rate1m > 0.1
  - alert: Hot
    expr: temp > 50
  - alert: HotBool
    expr: temp > bool 50
  - alert: Down
    expr: up == 0
  - alert: Missing
    expr: absent(up{job=\"gone\"})
  - alert: MissingNot
    expr: absent(up{job=\"api\"})
  - alert: Avg
    expr: avg without (instance) (temp) < 60
  - alert: Extremes
    expr: max by (job) (max_over_time(temp[2m])) - min by (job) (min_over_time(temp[2m]))
  - alert: Count
    expr: count(up) >= 3
  - alert: Increase
    expr: increase(req_total[2m]) > 5
  - alert: Delta
    expr: 100 - delta(temp[90s])
  - alert: Ignoring
    expr: temp / ignoring(instance) group_left() temp
  - alert: On
    expr: sum by (instance) (temp) * on (instance) sum by (instance) (up)
  - alert: Sums
    expr: sum_over_time(temp[1m]) / count_over_time(temp[1m])
";

    #[test]
    fn incremental_results_equal_the_engine_at_every_tick() {
        use crate::model::Labels;
        use crate::query::engine::{Engine, Value};
        use crate::query::promqltest::MemStorage;
        let gs = groups(RULES);
        let compiled = compile(&gs, 1_000);
        // Every rule but the group_left one compiles.
        let ok: Vec<bool> = compiled.rules[0].iter().map(Option::is_some).collect();
        assert_eq!(ok.iter().filter(|x| !**x).count(), 1, "{ok:?}");
        // Series: counters with resets, gauges, `up` flapping, one series stopping with a
        // staleness marker, one starting late, irregular scrape times.
        let mut labels: Vec<LabelPairs> = Vec::new();
        let mut data: Vec<Vec<(i64, f64)>> = Vec::new();
        let t0: i64 = 1_700_000_000_000;
        let mut k = 0u64;
        for job in ["api", "db"] {
            for inst in ["a", "b", "c"] {
                for (name, code) in [
                    ("req_total", "200"),
                    ("req_total", "500"),
                    ("temp", ""),
                    ("up", ""),
                    ("unread", ""), // no rule selects it
                ] {
                    let mut l = vec![
                        ("__name__".to_string(), name.to_string()),
                        ("instance".to_string(), inst.to_string()),
                        ("job".to_string(), job.to_string()),
                    ];
                    if !code.is_empty() {
                        l.push(("code".to_string(), code.to_string()));
                    }
                    l.sort();
                    // Stopping with a marker, or without one: values expire at the end of the
                    // lookback (instant) or of the window (ranges).
                    let (start, stop, marker) = match (job, inst, name, code) {
                        ("db", "c", "temp", _) => (t0 + 200_000, t0 + 600_000, false),
                        ("api", "b", "up", _) => (t0, t0 + 300_000, true),
                        ("api", "c", "temp", _) => (t0, t0 + 250_000, false),
                        ("db", "a", "req_total", "500") => (t0, t0 + 400_000, false),
                        _ => (t0, t0 + 600_000, false),
                    };
                    let mut samples = Vec::new();
                    let (mut t, mut counter) = (start, 0.0);
                    while t < stop {
                        k += 1;
                        let v = match name {
                            "req_total" => {
                                if noise(k * 7) < 0.03 {
                                    counter = 0.0;
                                }
                                counter += (noise(k) * 10.0).floor();
                                counter
                            }
                            "temp" => 40.0 + noise(k) * 30.0,
                            _ => (noise(k) > 0.2) as u8 as f64,
                        };
                        samples.push((t, v));
                        t += 9_000 + (noise(k * 3) * 3_000.0) as i64;
                    }
                    if marker {
                        samples.push((stop, f64::from_bits(crate::model::STALE_NAN_BITS)));
                    }
                    labels.push(l);
                    data.push(samples);
                }
            }
        }
        let mut mem = MemStorage::default();
        let mut all = Vec::new();
        for (id, (l, s)) in labels.iter().zip(&data).enumerate() {
            mem.add(Labels::from_pairs(l.clone()), s.iter().copied());
            all.extend(s.iter().map(|&(ts, value)| tidemark_dataflows::Sample {
                series: id as u64,
                ts,
                value,
            }));
        }
        all.sort_by_key(|s| s.ts);
        let ticks: Vec<u64> = (1..=130).map(|i| (t0 + i * 5_000) as u64).collect();
        let plans = Arc::new(compiled.plans.clone());
        let (labels, all) = (Arc::new(labels), Arc::new(all));
        // One worker, two, and one yielding after every 3 changes: each tick is cut into many
        // activations, its series left due go on where the last one stopped (a tick here
        // changes 20 to 60 values).
        let [one, two, cut] = [(1, 50_000), (2, 50_000), (1, 3)].map(|(workers, budget)| {
            run_incremental(
                Arc::clone(&plans),
                Arc::clone(&labels),
                Arc::clone(&all),
                ticks.clone(),
                workers,
                budget,
            )
        });
        let (first, last) = (ticks[0] as i64, *ticks.last().unwrap() as i64);
        let mut compared = 0;
        for (ri, c) in compiled.rules[0].iter().enumerate() {
            let Some((id, text)) = c else { continue };
            let expr = promql_parser::parser::parse(text).unwrap();
            let engine = Engine::new(&mem, first, last, 5_000)
                .and_then(|e| e.eval(&expr))
                .unwrap();
            let Value::Vector(v) = engine else {
                panic!("{text}: not a vector")
            };
            let got = &one[id];
            assert_eq!(got.len(), ticks.len());
            for (i, (t, r)) in got.iter().enumerate() {
                let mut want: Vec<(LabelPairs, f64)> = v
                    .iter()
                    .filter_map(|s| Some((s.labels.clone().into_pairs(), s.values[i]?)))
                    .collect();
                want.sort_by(|a, b| a.0.cmp(&b.0));
                let mut have = r.clone().unwrap_or_else(|e| panic!("{text} at {t}: {e}"));
                have.sort_by(|a, b| a.0.cmp(&b.0));
                let same = have.len() == want.len()
                    && have.iter().zip(&want).all(|(h, w)| {
                        h.0 == w.0
                            && (h.1 == w.1
                                || (h.1 - w.1).abs() <= 1e-9 * w.1.abs().max(1.0)
                                || (h.1.is_nan() && w.1.is_nan()))
                    });
                assert!(
                    same,
                    "rule {ri} `{text}` at tick {i} ({t}):\nincremental {have:?}\nengine      {want:?}"
                );
                compared += have.len();
            }
            let a: Vec<_> = one[id]
                .iter()
                .map(|(t, r)| (t, r.clone().unwrap()))
                .collect();
            let b: Vec<_> = two[id]
                .iter()
                .map(|(t, r)| (t, r.clone().unwrap()))
                .collect();
            let norm =
                |v: Vec<(&u64, Vec<(LabelPairs, f64)>)>| -> Vec<(u64, Vec<(LabelPairs, u64)>)> {
                    v.into_iter()
                        .map(|(t, mut r)| {
                            r.sort_by(|x, y| x.0.cmp(&y.0));
                            (*t, r.into_iter().map(|(l, x)| (l, x.to_bits())).collect())
                        })
                        .collect()
                };
            let c: Vec<_> = cut[id]
                .iter()
                .map(|(t, r)| (t, r.clone().unwrap()))
                .collect();
            let a = norm(a);
            assert_eq!(a, norm(b), "`{text}`: 1 worker and 2 workers differ");
            assert_eq!(a, norm(c), "`{text}`: ticks cut into activations differ");
        }
        assert!(compared > 2_000, "only {compared} values compared");
    }

    #[test]
    fn one_to_one_matching_errors_as_the_engine_does() {
        use crate::model::Labels;
        use crate::query::engine::Engine;
        use crate::query::promqltest::MemStorage;
        let gs = groups(
            "groups:\n- name: g\n  rules:\n  - alert: ManyLeft\n    expr: l / ignoring(k) r\n  - alert: ManyRight\n    expr: r2 / ignoring(k) l2\n  - alert: NoMatch\n    expr: l / ignoring(k) r3\n",
        );
        let compiled = compile(&gs, 1_000);
        assert!(compiled.rules[0].iter().all(Option::is_some));
        let series = [
            ("l", "1", "a"),
            ("l", "2", "a"),
            ("r", "1", "a"),
            ("r2", "1", "b"),
            ("r2", "2", "b"),
            ("l2", "1", "b"),
            ("r3", "1", "z"),
        ];
        let t0 = 1_000_000i64;
        let mut mem = MemStorage::default();
        let mut labels = Vec::new();
        let mut all = Vec::new();
        for (id, (name, k, g)) in series.iter().enumerate() {
            let l: LabelPairs = vec![
                ("__name__".into(), name.to_string()),
                ("g".into(), g.to_string()),
                ("k".into(), k.to_string()),
            ];
            mem.add(
                Labels::from_pairs(l.clone()),
                [(t0, 1.0), (t0 + 10_000, 2.0)],
            );
            labels.push(l);
            for ts in [t0, t0 + 10_000] {
                all.push(tidemark_dataflows::Sample {
                    series: id as u64,
                    ts,
                    value: (ts - t0) as f64 / 10_000.0 + 1.0,
                });
            }
        }
        all.sort_by_key(|s| s.ts);
        let ticks = vec![(t0 + 5_000) as u64, (t0 + 15_000) as u64];
        let got = run_incremental(
            Arc::new(compiled.plans.clone()),
            Arc::new(labels),
            Arc::new(all),
            ticks,
            2,
            50_000,
        );
        for (i, c) in compiled.rules[0].iter().enumerate() {
            let (id, text) = c.clone().unwrap();
            let expr = promql_parser::parser::parse(&text).unwrap();
            let engine =
                Engine::new(&mem, t0 + 5_000, t0 + 15_000, 10_000).and_then(|e| e.eval(&expr));
            for (t, r) in &got[&id] {
                match (&engine, r) {
                    (Err(e), Err(inc)) => {
                        let (e, inc) = (e.to_string(), inc.to_string());
                        let same = |s: &str| e.contains(s) && inc.contains(s);
                        assert!(
                            same("many-to-many") || same("many-to-one"),
                            "{text}: {e} / {inc}"
                        );
                    }
                    (Ok(_), Ok(v)) => assert!(v.is_empty() && i == 2, "{text} at {t}: {v:?}"),
                    _ => panic!("{text} at {t}: engine {engine:?}, incremental {r:?}"),
                }
            }
        }
    }

    #[test]
    fn records_are_inlined_only_when_read_at_the_same_interval_after_they_run() {
        let gs = groups(
            "groups:\n- name: a\n  rules:\n  - alert: Early\n    expr: r > 1\n  - record: r\n    expr: sum(x)\n  - alert: Late\n    expr: r > 1\n  - alert: Range\n    expr: rate(r[5m]) > 1\n- name: b\n  interval: 1m\n  rules:\n  - alert: Other\n    expr: r > 1\n",
        );
        let c = compile(&gs, 1_000);
        let got: Vec<bool> = c.rules.iter().flatten().map(Option::is_some).collect();
        assert_eq!(got, vec![false, true, true, false, false]);
    }
}

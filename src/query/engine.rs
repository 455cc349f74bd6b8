//! The evaluator.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{self, AtModifier, Expr, Offset, VectorSelector};

use super::{Annotations, Budget, QueryError, QueryValue, SelectHints, Selected, Series, Storage};
use crate::model::{is_stale_nan, Labels, METRIC_NAME};
use crate::store::hot::index::{MatchOp, Matcher};
use tidemark_dataflows::Rollup;

/// Most steps a subquery may evaluate (its inner grid over the whole query range).
pub const MAX_SUBQUERY_STEPS: i64 = 1_000_000;

/// Prometheus's default lookback delta: 5 minutes.
pub const DEFAULT_LOOKBACK_MS: i64 = 300_000;

/// One series evaluated at every step of the query (`None` where it has no value).
#[derive(Clone, Debug, PartialEq)]
pub struct StepSeries {
    pub labels: Labels,
    pub values: Vec<Option<f64>>,
}

/// An intermediate value.
#[derive(Clone, Debug)]
pub enum Value {
    /// One value per step.
    Scalar(Vec<f64>),
    Vector(Vec<StepSeries>),
    /// A range vector; only as a final instant-query result.
    Matrix(Vec<Series>),
    String(String),
}

/// Samples a range function sees: per series, the non-stale points, with the selection's
/// range and time shift.
pub struct RangeInput {
    pub series: Vec<Series>,
    /// Per series (same index), rollup windows older than its samples, when a rollup tier
    /// answered part of the selection; empty when none did.
    pub rollups: Vec<Vec<Rollup>>,
    pub range: i64,
    /// Evaluation time of each step after `@` and `offset`.
    pub times: Vec<i64>,
}

impl RangeInput {
    /// Calls `f(series_index, step_index, window)` for every window `(t - range, t]`.
    pub fn for_each_window(&self, mut f: impl FnMut(usize, usize, &[(i64, f64)])) {
        let monotonic = self.times.windows(2).all(|w| w[0] <= w[1]);
        for (si, s) in self.series.iter().enumerate() {
            let pts = &s.samples;
            let (mut lo, mut hi) = (0, 0);
            for (i, &t) in self.times.iter().enumerate() {
                if monotonic {
                    // Steps only move forward: slide the window instead of searching.
                    while lo < pts.len() && pts[lo].0 <= t - self.range {
                        lo += 1;
                    }
                    hi = hi.max(lo);
                    while hi < pts.len() && pts[hi].0 <= t {
                        hi += 1;
                    }
                } else {
                    lo = pts.partition_point(|p| p.0 <= t - self.range);
                    hi = pts.partition_point(|p| p.0 <= t).max(lo);
                }
                f(si, i, &pts[lo..hi]);
            }
        }
    }

    /// Calls `f(series_index, step_index, summary)` for every window `(t - range, t]` that
    /// holds data: the rollups lying wholly inside it merged with its samples.
    pub fn for_each_summary(&self, mut f: impl FnMut(usize, usize, &Rollup)) {
        let none: Vec<Rollup> = Vec::new();
        for (si, s) in self.series.iter().enumerate() {
            let pieces = self.rollups.get(si).unwrap_or(&none);
            for (i, &t) in self.times.iter().enumerate() {
                let from = t - self.range;
                let lo = pieces.partition_point(|r| r.start < from);
                let mut acc: Option<Rollup> = None;
                for r in &pieces[lo..] {
                    if r.end() > t {
                        break;
                    }
                    match &mut acc {
                        Some(a) => a.merge(r),
                        None => acc = Some(*r),
                    }
                }
                let plo = s.samples.partition_point(|p| p.0 <= from);
                let phi = s.samples.partition_point(|p| p.0 <= t).max(plo);
                for &(ts, v) in &s.samples[plo..phi] {
                    let p = Rollup::point(0, ts, v);
                    match &mut acc {
                        Some(a) => a.merge(&p),
                        None => acc = Some(p),
                    }
                }
                if let Some(a) = &acc {
                    f(si, i, a);
                }
            }
        }
    }
}

/// A query's evaluation context.
#[derive(Clone, Copy)]
pub struct Engine<'a> {
    pub storage: &'a dyn Storage,
    pub start: i64,
    pub end: i64,
    pub step: i64,
    pub lookback: i64,
    /// Number of steps.
    pub n: usize,
    /// A range query (`step()` and `range()` are 0 in instant queries).
    pub range_query: bool,
    /// Where annotations go (none are kept without it).
    pub notes: Option<&'a Annotations>,
    /// Prometheus 3's delayed `__name__` removal ([`Engine::drop_name`]).
    pub delayed_names: bool,
    /// The query's time and sample limits (none without it).
    pub budget: Option<&'a Budget>,
}

/// Where a series keeps its metric name while delayed name removal has marked it to be
/// dropped: a label no user series can have (`__`-prefixed names are reserved), so series that
/// differ only by their to-be-dropped names stay apart until the end of the evaluation, where
/// it is removed ([`Engine::query`]).
pub const DROPPED_NAME: &str = "__tidemark_dropped_name__";

/// A label's value, where `__name__` is also a name marked to be dropped ([`DROPPED_NAME`]):
/// `label_replace` and `label_join` read the name until it is actually dropped.
pub fn label_value<'l>(labels: &'l Labels, name: &str) -> Option<&'l str> {
    labels.get(name).or_else(|| {
        (name == METRIC_NAME)
            .then(|| labels.get(DROPPED_NAME))
            .flatten()
    })
}

/// The labels with a name marked to be dropped shown as the name again, and whether there was
/// one.
pub fn unhide_name(labels: &Labels) -> (Labels, bool) {
    match labels.get(DROPPED_NAME) {
        Some(n) => {
            let mut l = labels.clone();
            let n = n.to_string();
            l.remove(DROPPED_NAME);
            l.set(METRIC_NAME, &n);
            (l, true)
        }
        None => (labels.clone(), false),
    }
}

fn dur_ms(d: &Duration) -> i64 {
    // Durations beyond the timestamp range behave like the range itself (and cannot overflow).
    (d.as_millis().min(crate::model::MAX_ABS_TS as u128)) as i64
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        Some(Offset::Pos(d)) => dur_ms(d),
        Some(Offset::Neg(d)) => -dur_ms(d),
        None => 0,
    }
}

fn system_time_ms(t: &SystemTime) -> i64 {
    let cap = crate::model::MAX_ABS_TS as u128;
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis().min(cap) as i64,
        Err(e) => -(e.duration().as_millis().min(cap) as i64),
    }
}

/// Converts a parsed selector into store matchers (the metric name included).
pub fn selector_matchers(vs: &VectorSelector) -> Vec<Vec<Matcher>> {
    let convert = |ms: &[promql_parser::label::Matcher]| -> Vec<Matcher> {
        let mut out: Vec<Matcher> = ms
            .iter()
            .map(|m| Matcher {
                name: m.name.clone(),
                op: match &m.op {
                    PMatchOp::Equal => MatchOp::Eq(m.value.clone()),
                    PMatchOp::NotEqual => MatchOp::Ne(m.value.clone()),
                    PMatchOp::Re(r) => MatchOp::Re(r.clone()),
                    PMatchOp::NotRe(r) => MatchOp::Nre(r.clone()),
                },
            })
            .collect();
        if let Some(name) = &vs.name {
            if !out
                .iter()
                .any(|m| m.name == METRIC_NAME && matches!(&m.op, MatchOp::Eq(v) if v == name))
            {
                out.push(Matcher::eq(METRIC_NAME, name));
            }
        }
        out
    };
    if vs.matchers.or_matchers.is_empty() {
        vec![convert(&vs.matchers.matchers)]
    } else {
        vs.matchers
            .or_matchers
            .iter()
            .map(|ms| convert(ms))
            .collect()
    }
}

/// The end of an evaluation: names marked to be dropped are dropped, and series that then share
/// a label set are merged (an error where two have a value at the same step), as Prometheus
/// merges a range query's result by label set (`-a or -b` is one `{}` series).
fn finish(v: Value) -> Result<Value, QueryError> {
    let strip = |l: &mut Labels| {
        if l.get(DROPPED_NAME).is_some() {
            l.remove(DROPPED_NAME);
        }
    };
    Ok(match v {
        Value::Vector(mut vs) => {
            vs.iter_mut().for_each(|s| strip(&mut s.labels));
            // In the order given (`sort`, `topk`), the first of equal label sets taking the
            // others' steps.
            let mut at: HashMap<Labels, usize> = HashMap::with_capacity(vs.len());
            let mut out: Vec<StepSeries> = Vec::with_capacity(vs.len());
            for s in vs {
                match at.get(&s.labels) {
                    Some(&i) => {
                        for (a, b) in out[i].values.iter_mut().zip(s.values) {
                            if b.is_some() {
                                if a.is_some() {
                                    return Err(QueryError::Execution(
                                        "vector cannot contain metrics with the same labelset"
                                            .to_string(),
                                    ));
                                }
                                *a = b;
                            }
                        }
                    }
                    None => {
                        at.insert(s.labels.clone(), out.len());
                        out.push(s);
                    }
                }
            }
            Value::Vector(out)
        }
        Value::Matrix(mut m) => {
            m.iter_mut().for_each(|s| strip(&mut s.labels));
            Value::Matrix(m)
        }
        other => other,
    })
}

/// Where the PromQL string literal opening at `b[at]` (a quote or backtick) closes: the
/// index of its closing quote (or the end of the text); backslashes escape inside quotes.
fn string_end(b: &[u8], at: usize) -> usize {
    let q = b[at];
    let mut i = at + 1;
    while i < b.len() && b[i] != q {
        i += if b[i] == b'\\' && q != b'`' { 2 } else { 1 };
    }
    i
}

/// Parses a query as the API takes it (`start()` and `end()` bound to `start` and `end`): a
/// syntax error says where it is (`1:16: parse error: unclosed left parenthesis`) unless
/// binding rewrote the text, whose positions would then not be the user's.
pub fn parse_query_text(query: &str, start: i64, end: i64) -> Result<parser::Expr, String> {
    match with_query_bounds(query, start, end) {
        std::borrow::Cow::Borrowed(text) => parser::parse_with_position(text),
        std::borrow::Cow::Owned(text) => parser::parse(&text),
    }
}

/// `start()` and `end()` (Prometheus 3.7's query boundaries, in seconds) replaced by their
/// values as number literals: the parser reads `start` and `end` as the `@` modifier's
/// keywords only, and both are constants of the query, the same at every step and inside
/// subqueries. `@ start()` and `@ end()` stay, as do strings. A query without them is returned
/// as it is. (An annotation's position after such a call counts the literal's characters.)
pub fn with_query_bounds(query: &str, start: i64, end: i64) -> std::borrow::Cow<'_, str> {
    if !query.contains("start") && !query.contains("end") {
        return std::borrow::Cow::Borrowed(query);
    }
    let b = query.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut out = String::with_capacity(query.len() + 16);
    let mut i = 0;
    let mut copied = 0;
    let mut changed = false;
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' | b'`' => i = string_end(b, i) + 1,
            c if ident(c) => {
                let from = i;
                while i < b.len() && ident(b[i]) {
                    i += 1;
                }
                let word = &query[from..i];
                if word != "start" && word != "end" {
                    continue;
                }
                let after_at = query[..from].trim_end().ends_with('@');
                let rest = &query[i..];
                let open = rest.len() - rest.trim_start().len();
                let Some(inner) = rest.trim_start().strip_prefix('(') else {
                    continue;
                };
                let close = inner.len() - inner.trim_start().len();
                if after_at || !inner.trim_start().starts_with(')') {
                    continue;
                }
                let ms = if word == "start" { start } else { end };
                out.push_str(&query[copied..from]);
                out.push_str(&format!(
                    "({})",
                    super::aggregate::go_float(ms as f64 / 1000.0)
                ));
                i += open + 1 + close + 1;
                copied = i;
                changed = true;
            }
            _ => i += 1,
        }
    }
    if !changed {
        return std::borrow::Cow::Borrowed(query);
    }
    out.push_str(&query[copied.min(query.len())..]);
    std::borrow::Cow::Owned(out)
}

/// Where the first call of `func` in `query` starts (`arg` `None`), or its `arg`-th argument,
/// as Prometheus prints an annotation's position: `line:column`, both from 1. The parser keeps
/// no positions, so the text is scanned: the name as a whole word followed by `(` (after an
/// aggregation's `by (...)` or `without (...)`), then arguments split at top-level commas
/// outside strings. When the query calls `func` more than once, the first call is named;
/// `1:1` when none is found.
pub fn call_position(query: &str, func: &str, arg: Option<usize>) -> String {
    let b = query.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    // The end of the bracketed group or string starting at `i` (exclusive), or of the argument
    // (at a top-level `,` or the closing `)`) when `until_comma`.
    let scan = |mut i: usize, until_comma: bool| {
        let mut depth = 0i32;
        while i < b.len() {
            match b[i] {
                b'"' | b'\'' | b'`' => i = string_end(b, i),
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => {
                    if depth == 0 {
                        return i;
                    }
                    depth -= 1;
                    if depth == 0 && !until_comma {
                        return i + 1;
                    }
                }
                b',' if depth == 0 && until_comma => return i,
                _ => {}
            }
            i += 1;
        }
        i
    };
    let found = query.match_indices(func).find_map(|(at, _)| {
        let end = at + func.len();
        if (at > 0 && ident(b[at - 1])) || b.get(end).is_some_and(|&c| ident(c)) {
            return None;
        }
        let Some(k) = arg else { return Some(at) };
        let mut i = skip_ws(end);
        for kw in ["by", "without"] {
            if query[i..].starts_with(kw) && !b.get(i + kw.len()).is_some_and(|&c| ident(c)) {
                i = skip_ws(i + kw.len());
                if b.get(i) == Some(&b'(') {
                    i = skip_ws(scan(i, false));
                }
            }
        }
        if b.get(i) != Some(&b'(') {
            return None;
        }
        i += 1;
        for _ in 0..k {
            i = scan(i, true);
            if b.get(i) != Some(&b',') {
                return None;
            }
            i += 1;
        }
        Some(skip_ws(i))
    });
    let at = found.unwrap_or(0);
    let line = query[..at].matches('\n').count() + 1;
    let col = query[..at].rfind('\n').map_or(at, |nl| at - nl - 1) + 1;
    format!("{line}:{col}")
}

/// Merges series with equal labels (from `or`-matchers selecting the same series twice).
fn select_all(
    storage: &dyn Storage,
    vs: &VectorSelector,
    lo: i64,
    hi: i64,
    hints: &SelectHints,
) -> Vec<Selected> {
    let sets = selector_matchers(vs);
    if sets.len() == 1 {
        let mut v = storage.select_hinted(&sets[0], lo, hi, hints);
        v.sort_by(|a, b| a.labels.cmp(&b.labels));
        return v;
    }
    let mut by: HashMap<Labels, Selected> = HashMap::new();
    for ms in sets {
        for s in storage.select_hinted(&ms, lo, hi, hints) {
            by.entry(s.labels.clone()).or_insert(s);
        }
    }
    let mut v: Vec<Selected> = by.into_values().collect();
    v.sort_by(|a, b| a.labels.cmp(&b.labels));
    v
}

/// Checks that no two series of a vector share a label set at the same step, merging those that
/// do not overlap (Prometheus checks per step).
pub fn dedupe(mut series: Vec<StepSeries>) -> Result<Vec<StepSeries>, QueryError> {
    if series.len() < 2 {
        return Ok(series);
    }
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    let mut out: Vec<StepSeries> = Vec::with_capacity(series.len());
    for s in series {
        if let Some(last) = out.last_mut() {
            if last.labels == s.labels {
                for (a, b) in last.values.iter_mut().zip(s.values) {
                    if b.is_some() {
                        if a.is_some() {
                            return Err(QueryError::Execution(
                                "vector cannot contain metrics with the same labelset".to_string(),
                            ));
                        }
                        *a = b;
                    }
                }
                continue;
            }
        }
        out.push(s);
    }
    Ok(out)
}

impl<'a> Engine<'a> {
    /// An engine for an instant query at `t` or a range query `[start, end]` by `step`.
    pub fn new(
        storage: &'a dyn Storage,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Self, QueryError> {
        if end < start {
            return Err(QueryError::BadData(
                "end timestamp must not be before start time".into(),
            ));
        }
        let step = step.max(1);
        let n = ((end - start) / step + 1) as usize;
        if n > 11_000 {
            return Err(QueryError::BadData(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)".into(),
            ));
        }
        Ok(Engine {
            storage,
            start,
            end,
            step,
            lookback: DEFAULT_LOOKBACK_MS,
            n,
            range_query: true,
            notes: None,
            delayed_names: false,
            budget: None,
        })
    }

    /// Prometheus 3's delayed `__name__` removal (its `promql-delayed-name-removal` feature):
    /// operators and functions mark the metric name to be dropped and it is dropped when the
    /// evaluation ends, so `label_replace`, `label_join` and `by (__name__)` still see it and
    /// series are not merged early.
    pub fn with_delayed_name_removal(self, on: bool) -> Self {
        Engine {
            delayed_names: on,
            ..self
        }
    }

    /// The labels of a result whose metric name an operator or function drops: without it, or
    /// with it marked to be dropped ([`DROPPED_NAME`]) under delayed name removal.
    pub fn drop_name(&self, labels: &Labels) -> Labels {
        let mut l = labels.without_name();
        if self.delayed_names {
            if let Some(n) = labels.metric_name() {
                l.set(DROPPED_NAME, n);
            }
        }
        l
    }

    /// Holds the query to `budget`'s time and samples.
    pub fn with_budget(self, budget: &'a Budget) -> Self {
        Engine {
            budget: Some(budget),
            ..self
        }
    }

    /// Charges the samples a selection loaded to the budget.
    fn charge(&self, selected: &[Selected]) -> Result<(), QueryError> {
        match self.budget {
            Some(b) => b.charge(
                selected
                    .iter()
                    .map(|s| s.samples.len() + s.rollups.len())
                    .sum(),
            ),
            None => Ok(()),
        }
    }

    /// Keeps the query's annotations in `notes`.
    pub fn annotated(self, notes: &'a Annotations) -> Self {
        Engine {
            notes: Some(notes),
            ..self
        }
    }

    /// Notes a warning: `PromQL warning: {msg}`.
    pub fn warn(&self, msg: impl std::fmt::Display) {
        if let Some(n) = self.notes {
            n.warn(format!("PromQL warning: {msg}"));
        }
    }

    /// Notes an info: `PromQL info: {msg}`.
    pub fn info(&self, msg: impl std::fmt::Display) {
        if let Some(n) = self.notes {
            n.info(format!("PromQL info: {msg}"));
        }
    }

    /// Notes a warning about the `arg`-th argument of `func`'s call (`None`: the call), with
    /// its position in the query: `PromQL warning: {msg} (line:column)`.
    pub fn warn_at(&self, msg: impl std::fmt::Display, func: &str, arg: Option<usize>) {
        if let Some(n) = self.notes {
            let at = call_position(n.query().unwrap_or(""), func, arg);
            n.warn(format!("PromQL warning: {msg} ({at})"));
        }
    }

    /// As [`Engine::warn_at`], an info.
    pub fn info_at(&self, msg: impl std::fmt::Display, func: &str, arg: Option<usize>) {
        if let Some(n) = self.notes {
            let at = call_position(n.query().unwrap_or(""), func, arg);
            n.info(format!("PromQL info: {msg} ({at})"));
        }
    }

    /// Time of step `i`.
    pub fn ts(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }

    /// The selection hints for evaluation times from [`Engine::times`].
    fn hints(&self, at: &Option<AtModifier>, times: &[i64], range: i64) -> SelectHints {
        SelectHints {
            summarizable: false,
            instant: false,
            first: times.first().copied().unwrap_or(self.start),
            // All times equal (one step, or `@`): a single time.
            step: if at.is_some() || times.len() < 2 {
                0
            } else {
                self.step
            },
            range,
            newest_only: false,
        }
    }

    fn times(&self, at: &Option<AtModifier>, offset: i64) -> Vec<i64> {
        (0..self.n)
            .map(|i| {
                let base = match at {
                    Some(AtModifier::Start) => self.start,
                    Some(AtModifier::End) => self.end,
                    Some(AtModifier::At(t)) => system_time_ms(t),
                    None => self.ts(i),
                };
                base - offset
            })
            .collect()
    }

    /// Parses and evaluates `query`, returning the API's result shape.
    pub fn query(&self, query: &str, range: bool) -> Result<QueryValue, QueryError> {
        let expr = parse_query_text(query, self.start, self.end).map_err(QueryError::BadData)?;
        if let Some(n) = self.notes {
            n.set_query(query);
        }
        let engine = Engine {
            range_query: range,
            ..*self
        };
        let v = finish(engine.eval(&expr)?)?;
        Ok(match (v, range) {
            (Value::Scalar(s), false) => QueryValue::Scalar(self.start, s[0]),
            (Value::String(s), false) => QueryValue::String(self.start, s),
            (Value::Vector(vs), false) => QueryValue::Vector(
                vs.into_iter().filter_map(|s| s.values[0].map(|v| (s.labels, self.start, v))).collect(),
            ),
            (Value::Matrix(m), false) => QueryValue::Matrix(m),
            (Value::Scalar(s), true) => QueryValue::Matrix(vec![Series {
                labels: Labels::empty(),
                samples: s.into_iter().enumerate().map(|(i, v)| (self.ts(i), v)).collect(),
            }]),
            (Value::Vector(vs), true) => QueryValue::Matrix(
                vs.into_iter()
                    .filter_map(|s| {
                        let samples: Vec<(i64, f64)> =
                            s.values.iter().enumerate().filter_map(|(i, v)| v.map(|v| (self.ts(i), v))).collect();
                        (!samples.is_empty()).then_some(Series { labels: s.labels, samples })
                    })
                    .collect(),
            ),
            (Value::Matrix(_), true) => {
                return Err(QueryError::BadData(
                    "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector".into(),
                ))
            }
            (Value::String(_), true) => {
                return Err(QueryError::BadData(
                    "invalid expression type \"string\" for range query, must be Scalar or instant Vector".into(),
                ))
            }
        })
    }

    /// Evaluates an expression at every step.
    pub fn eval(&self, expr: &Expr) -> Result<Value, QueryError> {
        if let Some(b) = self.budget {
            b.check_time()?;
        }
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(vec![n.val; self.n])),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr),
            Expr::Unary(u) => match self.eval(&u.expr)? {
                Value::Scalar(s) => Ok(Value::Scalar(s.into_iter().map(|v| -v).collect())),
                Value::Vector(vs) => Ok(Value::Vector(dedupe(
                    vs.into_iter()
                        .map(|s| StepSeries {
                            labels: self.drop_name(&s.labels),
                            values: s.values.into_iter().map(|v| v.map(|v| -v)).collect(),
                        })
                        .collect(),
                )?)),
                _ => Err(QueryError::BadData(
                    "unary expression only allowed on expressions of type scalar or instant vector"
                        .into(),
                )),
            },
            Expr::VectorSelector(vs) => Ok(Value::Vector(self.eval_selector(vs, false)?)),
            Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                if self.n != 1 {
                    return Err(QueryError::BadData(
                        "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector".into(),
                    ));
                }
                let input = self.range_input(expr, false)?;
                let t = input.times[0];
                let series = input
                    .series
                    .into_iter()
                    .filter_map(|s| {
                        let samples: Vec<(i64, f64)> = s
                            .samples
                            .into_iter()
                            .filter(|p| p.0 > t - input.range && p.0 <= t)
                            .collect();
                        (!samples.is_empty()).then_some(Series {
                            labels: s.labels,
                            samples,
                        })
                    })
                    .collect();
                Ok(Value::Matrix(series))
            }
            Expr::Call(call) => super::functions::call(self, call),
            Expr::Aggregate(agg) => super::aggregate::aggregate(self, agg),
            Expr::Binary(b) => super::binary::binary(self, b),
            Expr::Extension(_) => Err(QueryError::BadData("unsupported expression".into())),
        }
    }

    /// Evaluates to a scalar per step, or fails.
    pub fn eval_scalar(&self, expr: &Expr) -> Result<Vec<f64>, QueryError> {
        match self.eval(expr)? {
            Value::Scalar(s) => Ok(s),
            _ => Err(QueryError::BadData(format!(
                "expected type scalar, got {}",
                kind(expr)
            ))),
        }
    }

    /// Evaluates to an instant vector, or fails.
    pub fn eval_vector(&self, expr: &Expr) -> Result<Vec<StepSeries>, QueryError> {
        match self.eval(expr)? {
            Value::Vector(v) => Ok(v),
            _ => Err(QueryError::BadData(format!(
                "expected type instant vector, got {}",
                kind(expr)
            ))),
        }
    }

    /// An instant vector selector: the latest non-stale sample within the lookback window
    /// `(t - lookback, t]`. With `timestamps`, the value is the sample's time in seconds.
    pub fn eval_selector(
        &self,
        vs: &VectorSelector,
        timestamps: bool,
    ) -> Result<Vec<StepSeries>, QueryError> {
        let offset = offset_ms(&vs.offset);
        let times = self.times(&vs.at, offset);
        let lo = times.iter().min().copied().unwrap_or(self.start) - self.lookback;
        let hi = times.iter().max().copied().unwrap_or(self.end);
        let hints = SelectHints {
            instant: true,
            // One evaluation time: its value is the newest sample in the lookback.
            newest_only: lo + self.lookback == hi,
            ..self.hints(&vs.at, &times, self.lookback)
        };
        let series = select_all(self.storage, vs, lo + 1, hi, &hints);
        self.charge(&series)?;
        let mut out = Vec::with_capacity(series.len());
        for s in series.into_iter().map(Selected::into_points) {
            let mut values = Vec::with_capacity(self.n);
            let mut any = false;
            // Steps ascend (or are all one `@` time): walk the samples once.
            let mut hi = 0;
            for &t in &times {
                if hi > 0 && s.samples[hi - 1].0 > t {
                    hi = s.samples.partition_point(|p| p.0 <= t);
                }
                while hi < s.samples.len() && s.samples[hi].0 <= t {
                    hi += 1;
                }
                let v = match hi.checked_sub(1).map(|i| s.samples[i]) {
                    Some((ts, v)) if ts > t - self.lookback && !is_stale_nan(v) => {
                        any = true;
                        Some(if timestamps { ts as f64 / 1000.0 } else { v })
                    }
                    _ => None,
                };
                values.push(v);
            }
            if any {
                out.push(StepSeries {
                    labels: s.labels,
                    values,
                });
            }
        }
        Ok(out)
    }

    /// The samples behind a range-vector argument (matrix selector or subquery). With
    /// `summarizable` (the function can use [`RangeInput::for_each_summary`]) a tiered store
    /// may answer older parts with rollups.
    pub fn range_input(&self, expr: &Expr, summarizable: bool) -> Result<RangeInput, QueryError> {
        match expr {
            Expr::Paren(p) => self.range_input(&p.expr, summarizable),
            Expr::MatrixSelector(ms) => {
                let range = dur_ms(&ms.range);
                let offset = offset_ms(&ms.vs.offset);
                let times = self.times(&ms.vs.at, offset);
                let lo = times.iter().min().copied().unwrap_or(self.start) - range;
                let hi = times.iter().max().copied().unwrap_or(self.end);
                let hints = SelectHints {
                    summarizable,
                    ..self.hints(&ms.vs.at, &times, range)
                };
                let selected = select_all(self.storage, &ms.vs, lo + 1, hi, &hints);
                self.charge(&selected)?;
                let mut series = Vec::with_capacity(selected.len());
                let mut rollups = Vec::new();
                for mut s in selected {
                    s.samples.retain(|p| !is_stale_nan(p.1));
                    if summarizable {
                        if s.samples.is_empty() && s.rollups.is_empty() {
                            continue;
                        }
                        if !s.rollups.is_empty() && rollups.is_empty() {
                            rollups.resize(series.len(), Vec::new());
                        }
                        if !rollups.is_empty() || !s.rollups.is_empty() {
                            rollups.push(std::mem::take(&mut s.rollups));
                        }
                        series.push(Series {
                            labels: s.labels,
                            samples: s.samples,
                        });
                    } else {
                        let s = s.into_points();
                        if !s.samples.is_empty() {
                            series.push(s);
                        }
                    }
                }
                Ok(RangeInput {
                    series,
                    rollups,
                    range,
                    times,
                })
            }
            Expr::Subquery(sq) => {
                let range = dur_ms(&sq.range);
                let offset = offset_ms(&sq.offset);
                let times = self.times(&sq.at, offset);
                let step = sq
                    .step
                    .as_ref()
                    .map(dur_ms)
                    .filter(|s| *s > 0)
                    .unwrap_or(60_000);
                let lo = times.iter().min().copied().unwrap_or(self.start) - range;
                let hi = times.iter().max().copied().unwrap_or(self.end);
                // Inner steps are aligned to multiples of the subquery step.
                // As Prometheus: the first multiple of the step after lo (Go's truncating division).
                let mut first = (lo / step) * step;
                if first <= lo {
                    first += step;
                }
                if first > hi {
                    return Ok(RangeInput {
                        series: Vec::new(),
                        rollups: Vec::new(),
                        range,
                        times,
                    });
                }
                let steps = (hi - first) / step + 1;
                if steps > MAX_SUBQUERY_STEPS {
                    return Err(QueryError::BadData(format!(
                        "subquery {sq} would evaluate {steps} steps, more than {MAX_SUBQUERY_STEPS}; use a larger subquery step or a shorter range"
                    )));
                }
                let inner = Engine {
                    storage: self.storage,
                    start: first,
                    end: hi,
                    step,
                    lookback: self.lookback,
                    n: ((hi - first) / step + 1) as usize,
                    range_query: true,
                    notes: self.notes,
                    delayed_names: self.delayed_names,
                    budget: self.budget,
                };
                let series = match inner.eval(&sq.expr)? {
                    Value::Vector(vs) => vs
                        .into_iter()
                        .map(|s| Series {
                            labels: s.labels,
                            samples: s
                                .values
                                .iter()
                                .enumerate()
                                .filter_map(|(i, v)| v.map(|v| (inner.ts(i), v)))
                                .collect(),
                        })
                        .filter(|s| !s.samples.is_empty())
                        .collect(),
                    Value::Scalar(v) => vec![Series {
                        labels: Labels::empty(),
                        samples: v
                            .iter()
                            .enumerate()
                            .map(|(i, v)| (inner.ts(i), *v))
                            .collect(),
                    }],
                    _ => {
                        return Err(QueryError::BadData(
                            "subquery is only allowed on instant vector or scalar".into(),
                        ))
                    }
                };
                Ok(RangeInput {
                    series,
                    rollups: Vec::new(),
                    range,
                    times,
                })
            }
            other => Err(QueryError::BadData(format!(
                "expected type range vector, got {}",
                kind(other)
            ))),
        }
    }
}

/// The PromQL type name of an expression, for error messages.
pub fn kind(e: &Expr) -> &'static str {
    match e {
        Expr::NumberLiteral(_) => "scalar",
        Expr::StringLiteral(_) => "string",
        Expr::MatrixSelector(_) | Expr::Subquery(_) => "range vector",
        Expr::Paren(p) => kind(&p.expr),
        _ => "instant vector",
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn syntax_errors_say_where_they_are() {
        for (q, want) in [
            (
                "sum(rate(cpu_load[5m])",
                "1:23: parse error: unclosed left parenthesis",
            ),
            ("rate(x[5m]) +* 2", "1:14: parse error: unexpected \"*\""),
            ("sum(\n  x by)", "2:5: parse error: unexpected \"by\""),
            ("sum(x) by", "1:10: parse error: unexpected end of input"),
            (
                "x{a=\"b}",
                "1:8: parse error: unterminated quoted string \"",
            ),
            ("up $ 1", "1:4: parse error: unexpected character: '$'"),
            (
                "rate(x[5m)",
                "1:10: parse error: unexpected character inside brackets: ')'",
            ),
            (
                "x{é=\"1\"}",
                "1:3: parse error: unexpected character inside braces: 'é'",
            ),
        ] {
            assert_eq!(parse_query_text(q, 0, 0).unwrap_err(), want, "{q}");
        }
        // A query that `start()` rewrote keeps the parser's message without a position.
        assert!(parse_query_text("x @ start() +", 0, 0).is_err());
    }
    use super::*;

    #[test]
    fn positions_name_the_call_or_its_argument_as_prometheus_prints_them() {
        assert_eq!(call_position("sort(series)", "sort", None), "1:1");
        assert_eq!(call_position("sum(sort(series))", "sort", None), "1:5");
        assert_eq!(
            call_position(
                "histogram_quantile(0.8, series)",
                "histogram_quantile",
                Some(1)
            ),
            "1:25"
        );
        assert_eq!(
            call_position(
                r#"histogram_quantiles(series, "q", 0.1)"#,
                "histogram_quantiles",
                Some(0)
            ),
            "1:21"
        );
        // An aggregation's grouping before its arguments; commas inside strings, braces and
        // brackets do not split arguments; lines count.
        assert_eq!(
            call_position("quantile without(point)(NaN, data)", "quantile", Some(0)),
            "1:25"
        );
        assert_eq!(
            call_position("quantile without(point)(NaN, data)", "quantile", Some(1)),
            "1:30"
        );
        assert_eq!(
            call_position("x +\n  rate(m{a=\"1,2\"}[5m], \"a,b\")", "rate", Some(0)),
            "2:8"
        );
        // A longer name containing the function's is not the function.
        assert_eq!(
            call_position("sort_desc(x) + sort(y)", "sort", None),
            "1:16"
        );
        assert_eq!(call_position("nothing", "sort", None), "1:1");
    }

    #[test]
    fn delayed_name_removal_keeps_the_name_for_label_functions_and_drops_it_at_the_end() {
        let mut st = crate::query::promqltest::MemStorage::default();
        for (name, k) in [("a_total", 1.0), ("b_total", 2.0)] {
            st.add(
                Labels::from_pairs([("__name__", name), ("env", "1")]),
                (0..10).map(|i| (i * 60_000, i as f64 * k)),
            );
        }
        let run = |q: &str, delayed: bool| {
            Engine::new(&st, 540_000, 540_000, 1)
                .unwrap()
                .with_delayed_name_removal(delayed)
                .query(q, false)
                .map(|v| match v {
                    QueryValue::Vector(v) => {
                        v.into_iter().map(|s| s.0.to_string()).collect::<Vec<_>>()
                    }
                    other => panic!("{other:?}"),
                })
        };
        let keep =
            r#"label_replace(rate({env="1"}[5m]), "__name__", "rate_$1", "__name__", "(.+)")"#;
        assert_eq!(
            run(keep, true).unwrap(),
            vec![r#"rate_a_total{env="1"}"#, r#"rate_b_total{env="1"}"#]
        );
        // Off (the default), rate drops both names at once: the two series collide.
        assert!(run(keep, false).is_err());
        // Dropped at the end: two series left with one label set is the same error.
        assert!(run(r#"sum by (__name__) (rate({env="1"}[5m]))"#, true).is_err());
        assert_eq!(
            run(r#"sum by (env) (rate({env="1"}[5m]))"#, true).unwrap(),
            vec![r#"{env="1"}"#]
        );
        // No internal label ever leaves the engine.
        assert_eq!(run(r#"-a_total"#, true).unwrap(), vec![r#"{env="1"}"#]);
    }

    #[test]
    fn start_and_end_calls_become_the_query_bounds_elsewhere_nothing_changes() {
        let q = |s| with_query_bounds(s, 100_000, 130_500).into_owned();
        assert_eq!(q("start()"), "(100)");
        assert_eq!(q("end ( ) - start()"), "(130.5) - (100)");
        // The @ modifier's keywords, strings, other names and a query without them stay.
        assert_eq!(q("m @ start() + m @end()"), "m @ start() + m @end()");
        assert_eq!(
            q(r#"label_replace(m, "a", "start()", "b", "end()")"#),
            r#"label_replace(m, "a", "start()", "b", "end()")"#
        );
        assert_eq!(
            q("start_time + vector(end())"),
            "start_time + vector((130.5))"
        );
        assert!(matches!(
            with_query_bounds("rate(m[5m])", 0, 0),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}

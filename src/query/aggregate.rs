//! Aggregation operators and `histogram_quantile` over classic buckets.

use std::collections::HashMap;

use promql_parser::parser::token;
use promql_parser::parser::{AggregateExpr, Call, Expr, LabelModifier};

use super::engine::{unhide_name, Engine, StepSeries, Value, DROPPED_NAME};
use super::functions::{cmp_nan_last, kahan_sum, mean, quantile, variance};
use super::QueryError;
use crate::model::{Labels, METRIC_NAME};

/// The grouping key of a series under `by`/`without` (None: everything in one group).
pub fn group_labels(labels: &Labels, modifier: &Option<LabelModifier>) -> Labels {
    match modifier {
        None => Labels::empty(),
        Some(LabelModifier::Include(ls)) => {
            let mut l = labels.clone();
            l.retain(|k| ls.labels.iter().any(|x| x == k));
            l
        }
        Some(LabelModifier::Exclude(ls)) => {
            let mut l = labels.clone();
            l.retain(|k| {
                k != METRIC_NAME && k != DROPPED_NAME && !ls.labels.iter().any(|x| x == k)
            });
            l
        }
    }
}

/// Formats a float as Go's `strconv.FormatFloat(f, 'f', -1, 64)`.
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        let s = format!("{v}");
        s
    }
}

/// Formats a float as Go's `%g` (annotations print numbers so): shortest digits, an exponent
/// below 1e-4 and from 1e21.
pub fn go_g(v: f64) -> String {
    if !v.is_finite() || v == 0.0 || (1e-4..1e21).contains(&v.abs()) {
        return go_float(v);
    }
    let e = format!("{v:e}");
    let (m, x) = e.split_once('e').unwrap_or((&e, "0"));
    let x: i32 = x.parse().unwrap_or(0);
    format!("{m}e{}{:02}", if x < 0 { '-' } else { '+' }, x.abs())
}

/// The warning for a quantile outside `[0, 1]`.
pub fn bad_quantile(q: f64) -> Option<String> {
    (q.is_nan() || !(0.0..=1.0).contains(&q))
        .then(|| format!("quantile value should be between 0 and 1, got {}", go_g(q)))
}

fn min_nan(a: f64, b: f64) -> f64 {
    if a > b || a.is_nan() {
        b
    } else {
        a
    }
}

fn max_nan(a: f64, b: f64) -> f64 {
    if a < b || a.is_nan() {
        b
    } else {
        a
    }
}

/// Evaluates an aggregation.
pub fn aggregate(e: &Engine<'_>, agg: &AggregateExpr) -> Result<Value, QueryError> {
    let op = agg.op.id();
    let param_scalar = |what: &str| -> Result<Vec<f64>, QueryError> {
        let p = agg
            .param
            .as_ref()
            .ok_or_else(|| QueryError::BadData(format!("{what} needs a parameter")))?;
        e.eval_scalar(p)
    };
    let input = e.eval_vector(&agg.expr)?;
    let n = e.n;
    // Groups are independent of the step.
    let mut groups: Vec<(Labels, Vec<usize>)> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    // Under delayed name removal `by (__name__)` groups by a name marked to be dropped too,
    // and a group's name is dropped at the end when any member's was marked.
    let mut hide: Vec<bool> = Vec::new();
    for (i, s) in input.iter().enumerate() {
        let (l, dropped) = unhide_name(&s.labels);
        let g = group_labels(&l, &agg.modifier);
        let gi = *index.entry(g.clone()).or_insert_with(|| {
            groups.push((g, Vec::new()));
            hide.push(false);
            groups.len() - 1
        });
        groups[gi].1.push(i);
        hide[gi] |= dropped;
    }
    for (g, h) in groups.iter_mut().zip(&hide) {
        if let (true, Some(n)) = (*h, g.0.metric_name().map(str::to_string)) {
            g.0.remove(METRIC_NAME);
            g.0.set(DROPPED_NAME, &n);
        }
    }
    let values_at = |members: &[usize], i: usize| -> Vec<f64> {
        members.iter().filter_map(|&m| input[m].values[i]).collect()
    };

    if op == token::T_LIMIT_RATIO {
        // Prometheus's hash sampler: a series is kept when its label hash, as a fraction of
        // the hash space, is below the ratio (or, for a negative ratio, at or above 1 + it),
        // so limit_ratio(r) and limit_ratio(r - 1) split the series between them and the same
        // series are kept at every step.
        let r = param_scalar("limit_ratio")?;
        let mut out: Vec<StepSeries> = input
            .iter()
            .map(|s| StepSeries {
                labels: s.labels.clone(),
                values: vec![None; n],
            })
            .collect();
        for (i, &ratio) in r.iter().enumerate() {
            if ratio.is_nan() {
                return Err(QueryError::Execution("Ratio value is NaN".into()));
            }
            let capped = ratio.clamp(-1.0, 1.0);
            if capped != ratio {
                e.warn_at(
                    format!(
                        "ratio value should be between -1 and 1, got {}, capping to {}",
                        go_g(ratio),
                        go_g(capped)
                    ),
                    "limit_ratio",
                    Some(0),
                );
            }
            for (s, o) in input.iter().zip(out.iter_mut()) {
                let offset = s.labels.series_id() as f64 / u64::MAX as f64;
                let keep =
                    (capped >= 0.0 && offset < capped) || (capped < 0.0 && offset >= 1.0 + capped);
                if keep {
                    o.values[i] = s.values[i];
                }
            }
        }
        out.retain(|s| s.values.iter().any(|v| v.is_some()));
        return Ok(Value::Vector(out));
    }

    if op == token::T_TOPK || op == token::T_BOTTOMK || op == token::T_LIMITK {
        let k = param_scalar("topk/bottomk")?;
        if k.iter().any(|k| k.is_nan()) {
            return Err(QueryError::Execution("Parameter value is NaN".into()));
        }
        let mut out: Vec<StepSeries> = input
            .iter()
            .map(|s| StepSeries {
                labels: s.labels.clone(),
                values: vec![None; n],
            })
            .collect();
        for (_, members) in &groups {
            for (i, &kk) in k.iter().enumerate() {
                if kk.is_nan() {
                    return Err(QueryError::Execution("Parameter value is NaN".into()));
                }
                if kk < 1.0 {
                    continue;
                }
                let kk = if kk >= members.len() as f64 {
                    members.len()
                } else {
                    kk as usize
                };
                let mut present: Vec<(usize, f64)> = members
                    .iter()
                    .filter_map(|&m| input[m].values[i].map(|v| (m, v)))
                    .collect();
                if op != token::T_LIMITK {
                    let top = op == token::T_TOPK;
                    present.sort_by(|a, b| cmp_nan_last(a.1, b.1, top));
                }
                for &(m, v) in present.iter().take(kk) {
                    out[m].values[i] = Some(v);
                }
            }
        }
        out.retain(|s| s.values.iter().any(|v| v.is_some()));
        if n == 1 && op != token::T_LIMITK {
            let top = op == token::T_TOPK;
            out.sort_by(|a, b| {
                let (x, y) = (
                    a.values[0].unwrap_or(f64::NAN),
                    b.values[0].unwrap_or(f64::NAN),
                );
                if top {
                    y.partial_cmp(&x)
                } else {
                    x.partial_cmp(&y)
                }
                .unwrap_or(std::cmp::Ordering::Equal)
            });
        }
        return Ok(Value::Vector(out));
    }

    if op == token::T_COUNT_VALUES {
        let label = match agg.param.as_deref() {
            Some(Expr::StringLiteral(s)) => s.val.clone(),
            _ => {
                return Err(QueryError::BadData(
                    "count_values needs a label name string".into(),
                ))
            }
        };
        if !crate::model::is_valid_label_name(&label) {
            return Err(QueryError::Execution(format!(
                "invalid label name \"{label}\""
            )));
        }
        let mut out: HashMap<Labels, Vec<Option<f64>>> = HashMap::new();
        for (g, members) in &groups {
            for i in 0..n {
                for v in values_at(members, i) {
                    let mut l = g.clone();
                    l.set(&label, &go_float(v));
                    let e = out.entry(l).or_insert_with(|| vec![None; n]);
                    e[i] = Some(e[i].unwrap_or(0.0) + 1.0);
                }
            }
        }
        let mut v: Vec<StepSeries> = out
            .into_iter()
            .map(|(labels, values)| StepSeries { labels, values })
            .collect();
        v.sort_by(|a, b| a.labels.cmp(&b.labels));
        return Ok(Value::Vector(v));
    }

    let q = if op == token::T_QUANTILE {
        Some(param_scalar("quantile")?)
    } else {
        None
    };
    let mut out = Vec::with_capacity(groups.len());
    for (g, members) in groups {
        let mut values = vec![None; n];
        for (i, slot) in values.iter_mut().enumerate() {
            let vs = values_at(&members, i);
            if vs.is_empty() {
                continue;
            }
            if let Some(msg) = q.as_ref().and_then(|q| bad_quantile(q[i])) {
                e.warn_at(msg, "quantile", Some(0));
            }
            *slot = Some(match op {
                token::T_SUM => kahan_sum(vs.iter().copied()),
                token::T_AVG => mean(vs.iter().copied()),
                token::T_COUNT => vs.len() as f64,
                token::T_MIN => vs.iter().copied().fold(vs[0], min_nan),
                token::T_MAX => vs.iter().copied().fold(vs[0], max_nan),
                token::T_GROUP => 1.0,
                token::T_STDDEV => variance(vs.iter().copied()).sqrt(),
                token::T_STDVAR => variance(vs.iter().copied()),
                token::T_QUANTILE => {
                    let mut vs = vs;
                    quantile(q.as_ref().expect("quantile param")[i], &mut vs)
                }
                _ => {
                    return Err(QueryError::BadData(format!(
                        "aggregation {} is not supported",
                        agg.op
                    )))
                }
            });
        }
        if values.iter().any(|v| v.is_some()) {
            out.push(StepSeries { labels: g, values });
        }
    }
    Ok(Value::Vector(out))
}

/// Classic-histogram buckets grouped by their labels without `le` and `__name__`.
/// A series whose `le` is missing or not a number is left out, with Prometheus's warning at
/// argument `arg` of `func`.
fn bucket_groups(
    e: &Engine<'_>,
    v: &[StepSeries],
    func: &str,
    arg: usize,
) -> Result<HashMap<Labels, Vec<(f64, usize)>>, QueryError> {
    let mut groups: HashMap<Labels, Vec<(f64, usize)>> = HashMap::new();
    for (i, s) in v.iter().enumerate() {
        let raw = s.labels.get("le").unwrap_or("");
        let Some(le) = crate::ingest::parse_f64(raw.as_bytes()) else {
            let name = s.labels.metric_name().unwrap_or("");
            let mut msg =
                format!("bucket label \"le\" is missing or has a malformed value of {raw:?}");
            if !name.is_empty() {
                msg.push_str(&format!(" for metric name {name:?}"));
            }
            e.warn_at(msg, func, Some(arg));
            continue;
        };
        let mut l = s.labels.without_name();
        l.remove("le");
        l.remove(DROPPED_NAME);
        let g = groups.entry(l).or_default();
        // Two series that differ only in their name collide once the name is dropped.
        if g.iter()
            .any(|&(b, j)| b == le && v[j].labels.metric_name() != s.labels.metric_name())
        {
            return Err(QueryError::Execution(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
        g.push((le, i));
    }
    Ok(groups)
}

/// `histogram_quantiles(v, "label", φ1, φ2, ...)`: one output series per φ, labelled with it.
pub fn histogram_quantiles(e: &Engine<'_>, call: &Call) -> Result<Value, QueryError> {
    let args = &call.args.args;
    if args.len() < 3 {
        return Err(QueryError::BadData(
            "histogram_quantiles needs a vector, a label name and at least one quantile".into(),
        ));
    }
    let v = e.eval_vector(&args[0])?;
    let label = match &*args[1] {
        Expr::StringLiteral(s) => s.val.clone(),
        _ => {
            return Err(QueryError::BadData(
                "histogram_quantiles: the second argument must be a label name".into(),
            ))
        }
    };
    if v.iter().any(|s| s.labels.get(&label).is_some()) {
        return Err(QueryError::Execution(format!(
            "histogram_quantiles: label {label:?} already exists on the input"
        )));
    }
    let groups = bucket_groups(e, &v, "histogram_quantiles", 0)?;
    let n = e.n;
    let mut out = Vec::new();
    for (k, qe) in args[2..].iter().enumerate() {
        let q = e.eval_scalar(qe)?;
        if let Some(msg) = q.iter().find_map(|&q| bad_quantile(q)) {
            e.warn_at(msg, "histogram_quantiles", Some(k + 2));
        }
        let qs = {
            let s = go_float(q[0]);
            if s.contains('.') || s.contains("Inf") || s.contains("NaN") {
                s
            } else {
                format!("{s}.0")
            }
        };
        for (labels, members) in &groups {
            let fixed = |forced| {
                if forced {
                    e.info_at(MONOTONICITY, "histogram_quantiles", Some(0));
                }
            };
            if let Some(mut series) = quantile_series(&q, labels.clone(), members, &v, n, fixed) {
                series.labels.set(&label, &qs);
                out.push(series);
            }
        }
    }
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(Value::Vector(out))
}

/// `histogram_quantile(φ, v)` over classic `le` buckets, as Prometheus's `bucketQuantile`.
pub fn histogram_quantile(e: &Engine<'_>, call: &Call) -> Result<Value, QueryError> {
    let arg = |k: usize| {
        call.args
            .args
            .get(k)
            .ok_or_else(|| QueryError::BadData("histogram_quantile needs 2 arguments".into()))
    };
    let q = e.eval_scalar(arg(0)?)?;
    if let Some(msg) = q.iter().find_map(|&q| bad_quantile(q)) {
        e.warn_at(msg, "histogram_quantile", Some(0));
    }
    let v = e.eval_vector(arg(1)?)?;
    let groups = bucket_groups(e, &v, "histogram_quantile", 1)?;
    let fixed = |forced| {
        if forced {
            e.info_at(MONOTONICITY, "histogram_quantile", Some(1));
        }
    };
    let mut out: Vec<StepSeries> = groups
        .iter()
        .filter_map(|(labels, members)| {
            quantile_series(&q, labels.clone(), members, &v, e.n, fixed)
        })
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(Value::Vector(out))
}

/// Prometheus's info when bucket counts had to be made monotonic.
const MONOTONICITY: &str = "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile)";

/// `histogram_fraction(lower, upper, v)` over classic `le` buckets: the estimated fraction of
/// observations between `lower` and `upper`, as Prometheus's `BucketFraction` (linear
/// interpolation inside a bucket; the first bucket starts at 0 when its bound is positive).
pub fn histogram_fraction(e: &Engine<'_>, call: &Call) -> Result<Value, QueryError> {
    let arg = |k: usize| {
        call.args
            .args
            .get(k)
            .ok_or_else(|| QueryError::BadData("histogram_fraction needs 3 arguments".into()))
    };
    let lower = e.eval_scalar(arg(0)?)?;
    let upper = e.eval_scalar(arg(1)?)?;
    let v = e.eval_vector(arg(2)?)?;
    let groups = bucket_groups(e, &v, "histogram_fraction", 2)?;
    let mut out: Vec<StepSeries> = Vec::new();
    for (labels, members) in groups {
        let mut values = vec![None; e.n];
        for (i, slot) in values.iter_mut().enumerate() {
            let mut buckets: Vec<(f64, f64)> = members
                .iter()
                .filter_map(|&(le, m)| v[m].values[i].map(|c| (le, c)))
                .collect();
            if !buckets.is_empty() {
                *slot = Some(bucket_fraction(lower[i], upper[i], &mut buckets));
            }
        }
        if values.iter().any(|x| x.is_some()) {
            out.push(StepSeries { labels, values });
        }
    }
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(Value::Vector(out))
}

/// Buckets `(upper bound, cumulative count)` sorted by bound, equal bounds summed; `None`
/// without a `+Inf` bucket (Prometheus's answer is then NaN).
fn coalesced(buckets: &mut [(f64, f64)]) -> Option<Vec<(f64, f64)>> {
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return None;
    }
    let mut c: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(le, n) in buckets.iter() {
        match c.last_mut() {
            Some(last) if last.0 == le => last.1 += n,
            _ => c.push((le, n)),
        }
    }
    Some(c)
}

/// Prometheus's `BucketFraction`: `buckets` are `(upper bound, cumulative count)`.
fn bucket_fraction(lower: f64, upper: f64, buckets: &mut [(f64, f64)]) -> f64 {
    let Some(c) = coalesced(buckets) else {
        return f64::NAN;
    };
    let count = c[c.len() - 1].1;
    if count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    let mut lower_bound = if c[0].0 <= 0.0 {
        f64::NEG_INFINITY
    } else {
        0.0
    };
    for (i, &(upper_bound, n)) in c.iter().enumerate() {
        if i > 0 {
            lower_bound = c[i - 1].0;
        }
        let interpolate = |x: f64| {
            if lower_bound == f64::NEG_INFINITY {
                n
            } else {
                rank + (n - rank) * (x - lower_bound) / (upper_bound - lower_bound)
            }
        };
        if !lower_set && lower_bound >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && lower_bound >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && lower_bound < lower && upper_bound > lower {
            lower_rank = interpolate(lower);
            lower_set = true;
        }
        if !upper_set && lower_bound < upper && upper_bound > upper {
            upper_rank = interpolate(upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank = n;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    (upper_rank - lower_rank) / count
}

/// One group's quantile at every step (`None` when the group has no buckets at all);
/// `fixed(true)` when a step's counts had to be made monotonic.
fn quantile_series(
    q: &[f64],
    labels: Labels,
    members: &[(f64, usize)],
    v: &[StepSeries],
    n: usize,
    fixed: impl Fn(bool),
) -> Option<StepSeries> {
    let mut values = vec![None; n];
    for (i, slot) in values.iter_mut().enumerate() {
        let mut buckets: Vec<(f64, f64)> = members
            .iter()
            .filter_map(|&(le, m)| v[m].values[i].map(|c| (le, c)))
            .collect();
        if !buckets.is_empty() {
            let (x, forced) = bucket_quantile(q[i], &mut buckets);
            fixed(forced);
            *slot = Some(x);
        }
    }
    values
        .iter()
        .any(|x| x.is_some())
        .then_some(StepSeries { labels, values })
}

/// Prometheus's `BucketQuantile` over classic buckets, and whether counts had to be forced
/// monotonic (a count lower than the one before it).
fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> (f64, bool) {
    let mut forced = false;
    let x = bucket_quantile_inner(q, buckets, &mut forced);
    (x, forced)
}

fn bucket_quantile_inner(q: f64, buckets: &mut [(f64, f64)], forced: &mut bool) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let Some(mut c) = coalesced(buckets) else {
        return f64::NAN;
    };
    // Ensure monotonic counts, ignoring tiny deltas.
    let mut prev = c[0].1;
    for b in c.iter_mut().skip(1) {
        let cur = b.1;
        if cur == prev {
            continue;
        }
        if ((cur - prev) / prev.abs().max(cur.abs())).abs() <= 1e-12 {
            b.1 = prev;
            continue;
        }
        if cur < prev {
            b.1 = prev;
            *forced = true;
            continue;
        }
        prev = cur;
    }
    if c.len() < 2 {
        return f64::NAN;
    }
    let observations = c[c.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = c[..c.len() - 1].partition_point(|x| x.1 < rank);
    if b == c.len() - 1 {
        return c[c.len() - 2].0;
    }
    if b == 0 && c[0].0 <= 0.0 {
        return c[0].0;
    }
    let mut start = 0.0;
    let end = c[b].0;
    let mut count = c[b].1;
    if b > 0 {
        start = c[b - 1].0;
        count -= c[b - 1].1;
        rank -= c[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

//! Aggregation operators and `histogram_quantile` over classic buckets.

use std::collections::HashMap;

use promql_parser::parser::token;
use promql_parser::parser::{AggregateExpr, Call, Expr, LabelModifier};

use super::engine::{Engine, StepSeries, Value};
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
            l.retain(|k| k != METRIC_NAME && !ls.labels.iter().any(|x| x == k));
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
    for (i, s) in input.iter().enumerate() {
        let g = group_labels(&s.labels, &agg.modifier);
        let gi = *index.entry(g.clone()).or_insert_with(|| {
            groups.push((g, Vec::new()));
            groups.len() - 1
        });
        groups[gi].1.push(i);
    }
    let values_at = |members: &[usize], i: usize| -> Vec<f64> {
        members.iter().filter_map(|&m| input[m].values[i]).collect()
    };

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
fn bucket_groups(v: &[StepSeries]) -> Result<HashMap<Labels, Vec<(f64, usize)>>, QueryError> {
    let mut groups: HashMap<Labels, Vec<(f64, usize)>> = HashMap::new();
    for (i, s) in v.iter().enumerate() {
        let Some(le) = s
            .labels
            .get("le")
            .and_then(|x| crate::ingest::parse_f64(x.as_bytes()))
        else {
            continue;
        };
        let mut l = s.labels.without_name();
        l.remove("le");
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
    let groups = bucket_groups(&v)?;
    let n = e.n;
    let mut out = Vec::new();
    for qe in &args[2..] {
        let q = e.eval_scalar(qe)?;
        let qs = {
            let s = go_float(q[0]);
            if s.contains('.') || s.contains("Inf") || s.contains("NaN") {
                s
            } else {
                format!("{s}.0")
            }
        };
        for (labels, members) in &groups {
            if let Some(mut series) = quantile_series(&q, labels.clone(), members, &v, n) {
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
    let v = e.eval_vector(arg(1)?)?;
    let groups = bucket_groups(&v)?;
    let mut out: Vec<StepSeries> = groups
        .iter()
        .filter_map(|(labels, members)| quantile_series(&q, labels.clone(), members, &v, e.n))
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(Value::Vector(out))
}

/// One group's quantile at every step (`None` when the group has no buckets at all).
fn quantile_series(
    q: &[f64],
    labels: Labels,
    members: &[(f64, usize)],
    v: &[StepSeries],
    n: usize,
) -> Option<StepSeries> {
    let mut values = vec![None; n];
    for (i, slot) in values.iter_mut().enumerate() {
        let mut buckets: Vec<(f64, f64)> = members
            .iter()
            .filter_map(|&(le, m)| v[m].values[i].map(|c| (le, c)))
            .collect();
        if !buckets.is_empty() {
            *slot = Some(bucket_quantile(q[i], &mut buckets));
        }
    }
    values
        .iter()
        .any(|x| x.is_some())
        .then_some(StepSeries { labels, values })
}

fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Coalesce equal bounds.
    let mut c: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(le, n) in buckets.iter() {
        match c.last_mut() {
            Some(last) if last.0 == le => last.1 += n,
            _ => c.push((le, n)),
        }
    }
    // Ensure monotonic counts, ignoring tiny deltas.
    let mut prev = c[0].1;
    for b in c.iter_mut().skip(1) {
        let cur = b.1;
        if cur == prev {
            continue;
        }
        if ((cur - prev) / prev.abs().max(cur.abs())).abs() <= 1e-12 || cur < prev {
            b.1 = prev;
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

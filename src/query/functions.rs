//! PromQL functions.

use promql_parser::parser::{Call, Expr};

use super::engine::{dedupe, label_value, Engine, StepSeries, Value, DROPPED_NAME};
use super::QueryError;
use crate::model::{Labels, METRIC_NAME};
use tidemark_dataflows::Rollup;

// The compensated sums are shared with the incremental rule evaluator.
pub use tidemark_dataflows::incremental::{kahan_inc, kahan_sum, mean};

/// Population variance (Welford with compensation).
pub fn variance(values: impl Iterator<Item = f64>) -> f64 {
    let (mut count, mut m, mut cm, mut aux, mut caux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for f in values {
        count += 1.0;
        let delta = f - (m + cm);
        (m, cm) = kahan_inc(delta / count, m, cm);
        (aux, caux) = kahan_inc(delta * (f - (m + cm)), aux, caux);
    }
    (aux + caux) / count
}

/// The φ-quantile with linear interpolation, as Prometheus's `quantile`.
pub fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| {
        a.partial_cmp(b)
            .unwrap_or_else(|| a.is_nan().cmp(&b.is_nan()).reverse())
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Slope and intercept (at `intercept_t`) of the least-squares line through the points.
pub fn linear_regression(points: &[(i64, f64)], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init = points[0].1;
    let mut const_y = true;
    for (i, &(t, v)) in points.iter().enumerate() {
        if const_y && i > 0 && v != init {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_t) as f64 / 1e3;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(v, sy, cy);
        (sxy, cxy) = kahan_inc(x * v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

/// Prometheus's `extrapolatedRate` for `rate`, `increase` and `delta`.
fn extrapolated(w: &[(i64, f64)], t: i64, range: i64, counter: bool, rate: bool) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let (first_t, first) = w[0];
    let (last_t, last) = w[w.len() - 1];
    let mut result = last - first;
    if counter {
        let mut prev = first;
        for &(_, v) in &w[1..] {
            if v < prev {
                result += prev;
            }
            prev = v;
        }
    }
    extrapolate(
        first_t,
        first,
        last_t,
        w.len(),
        result,
        t,
        range,
        counter,
        rate,
    )
}

/// [`extrapolated`] from a window's summary: the same inputs, kept by every rollup.
fn extrapolated_summary(r: &Rollup, t: i64, range: i64, counter: bool, rate: bool) -> Option<f64> {
    if r.count < 2 {
        return None;
    }
    let result = if counter {
        r.increase
    } else {
        r.last - r.first
    };
    let n = r.count as usize;
    extrapolate(
        r.first_ts, r.first, r.last_ts, n, result, t, range, counter, rate,
    )
}

/// A function of a window's summary: `(summary, eval time, range)`.
pub type SummaryFn = fn(&Rollup, i64, i64) -> Option<f64>;

/// The range functions whose answer over whole rollup windows equals their answer over the
/// windows' samples (count, sum, min, max, first and last with their times, and the
/// reset-corrected increase are all a rollup keeps), with how to compute them.
pub fn from_rollups(name: &str) -> Option<SummaryFn> {
    Some(match name {
        "rate" => |r, t, range| extrapolated_summary(r, t, range, true, true),
        "increase" => |r, t, range| extrapolated_summary(r, t, range, true, false),
        "delta" => |r, t, range| extrapolated_summary(r, t, range, false, false),
        "avg_over_time" => |r, _, _| Some(r.sum / r.count as f64),
        "sum_over_time" => |r, _, _| Some(r.sum),
        "count_over_time" => |r, _, _| Some(r.count as f64),
        "min_over_time" => |r, _, _| Some(r.min),
        "max_over_time" => |r, _, _| Some(r.max),
        "last_over_time" => |r, _, _| Some(r.last),
        "first_over_time" => |r, _, _| Some(r.first),
        "present_over_time" | "absent_over_time" => |_, _, _| Some(1.0),
        "ts_of_last_over_time" => |r, _, _| Some(r.last_ts as f64 / 1000.0),
        "ts_of_first_over_time" => |r, _, _| Some(r.first_ts as f64 / 1000.0),
        _ => return None,
    })
}

#[allow(clippy::too_many_arguments)]
fn extrapolate(
    first_t: i64,
    first: f64,
    last_t: i64,
    count: usize,
    result: f64,
    t: i64,
    range: i64,
    counter: bool,
    rate: bool,
) -> Option<f64> {
    let range_start = t - range;
    let mut to_start = (first_t - range_start) as f64 / 1000.0;
    let mut to_end = (t - last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let avg = sampled / (count - 1) as f64;
    let threshold = avg * 1.1;
    if to_start >= threshold {
        to_start = avg / 2.0;
    }
    if counter && result > 0.0 && first >= 0.0 {
        let to_zero = sampled * (first / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if rate {
        factor /= range as f64 / 1000.0;
    }
    Some(result * factor)
}

fn instant_delta(w: &[(i64, f64)], rate: bool) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let (pt, pv) = w[w.len() - 2];
    let (lt, lv) = w[w.len() - 1];
    let mut d = if rate && lv < pv { lv } else { lv - pv };
    let dt = lt - pt;
    if dt == 0 {
        return None;
    }
    if rate {
        d /= dt as f64 / 1000.0;
    }
    Some(d)
}

/// A range function of one window of samples: `(window, eval time, range)`.
pub type RawWindowFn = fn(&[(i64, f64)], i64, i64) -> Option<f64>;

/// The range functions that depend on nothing but their window (no scalar argument), with
/// whether they keep the metric name. The engine and the incremental rule evaluator both
/// compute them with these.
pub fn window_fn(name: &str) -> Option<(RawWindowFn, bool)> {
    let f: RawWindowFn = match name {
        "rate" => |w, t, r| extrapolated(w, t, r, true, true),
        "increase" => |w, t, r| extrapolated(w, t, r, true, false),
        "delta" => |w, t, r| extrapolated(w, t, r, false, false),
        "irate" => |w, _, _| instant_delta(w, true),
        "idelta" => |w, _, _| instant_delta(w, false),
        "avg_over_time" => |w, _, _| Some(mean(w.iter().map(|p| p.1))),
        "sum_over_time" => |w, _, _| Some(kahan_sum(w.iter().map(|p| p.1))),
        "count_over_time" => |w, _, _| Some(w.len() as f64),
        "min_over_time" => |w, _, _| {
            Some(
                w.iter()
                    .fold(w[0].1, |m, p| if p.1 < m || m.is_nan() { p.1 } else { m }),
            )
        },
        "max_over_time" => |w, _, _| {
            Some(
                w.iter()
                    .fold(w[0].1, |m, p| if p.1 > m || m.is_nan() { p.1 } else { m }),
            )
        },
        "last_over_time" => |w, _, _| w.last().map(|p| p.1),
        "first_over_time" => |w, _, _| w.first().map(|p| p.1),
        "present_over_time" => |_, _, _| Some(1.0),
        "stddev_over_time" => |w, _, _| Some(variance(w.iter().map(|p| p.1)).sqrt()),
        "stdvar_over_time" => |w, _, _| Some(variance(w.iter().map(|p| p.1))),
        "resets" => |w, _, _| Some(w.windows(2).filter(|p| p[1].1 < p[0].1).count() as f64),
        "changes" => |w, _, _| {
            Some(
                w.windows(2)
                    .filter(|p| !(p[1].1 == p[0].1 || (p[1].1.is_nan() && p[0].1.is_nan())))
                    .count() as f64,
            )
        },
        "deriv" => |w, _, _| (w.len() >= 2).then(|| linear_regression(w, w[0].0).0),
        _ => return None,
    };
    Some((f, matches!(name, "last_over_time" | "first_over_time")))
}

/// Orders values ascending (or descending) with NaN last either way, as Prometheus's sorts do.
pub fn cmp_nan_last(x: f64, y: f64, desc: bool) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Equal,
        (true, false) => Greater,
        (false, true) => Less,
        _ if desc => y.partial_cmp(&x).unwrap_or(Equal),
        _ => x.partial_cmp(&y).unwrap_or(Equal),
    }
}

/// A function of one window: `(samples, eval time, range, step index)`.
type WindowFn<'a> = &'a dyn Fn(&[(i64, f64)], i64, i64, usize) -> Option<f64>;

fn arg(call: &Call, i: usize) -> Result<&Expr, QueryError> {
    call.args.args.get(i).map(|b| &**b).ok_or_else(|| {
        QueryError::BadData(format!(
            "expected at least {} argument(s) in call to \"{}\"",
            i + 1,
            call.func.name
        ))
    })
}

/// Applies a per-element function to an instant vector, dropping the metric name.
fn map_vector(
    e: &Engine<'_>,
    v: Vec<StepSeries>,
    keep_name: bool,
    f: impl Fn(usize, f64) -> Option<f64>,
) -> Result<Value, QueryError> {
    let out = v
        .into_iter()
        .map(|s| StepSeries {
            labels: if keep_name {
                s.labels
            } else {
                e.drop_name(&s.labels)
            },
            values: s
                .values
                .iter()
                .enumerate()
                .map(|(i, v)| v.and_then(|v| f(i, v)))
                .collect(),
        })
        .collect();
    Ok(Value::Vector(dedupe(out)?))
}

fn round_to(v: f64, to: f64) -> f64 {
    // Prometheus: math.Floor(f*toNearestInverse+0.5) / toNearestInverse
    let inv = 1.0 / to;
    (v * inv + 0.5).floor() / inv
}

/// Sets a label (an empty value removes it); setting `__name__` keeps the name, so a name
/// marked to be dropped ([`DROPPED_NAME`]) goes.
fn set_label(labels: &mut Labels, name: &str, value: &str) {
    labels.set(name, value);
    if name == METRIC_NAME && labels.get(DROPPED_NAME).is_some() {
        labels.remove(DROPPED_NAME);
    }
}

/// Evaluates a function call.
pub fn call(e: &Engine<'_>, call: &Call) -> Result<Value, QueryError> {
    let name = call.func.name;
    let n = e.n;
    // Range-vector functions.
    let over_time = |f: WindowFn<'_>, keep_name: bool| -> Result<Value, QueryError> {
        let summary = from_rollups(name);
        let input = e.range_input(arg(call, 0)?, summary.is_some())?;
        let mut out: Vec<StepSeries> = input
            .series
            .iter()
            .map(|s| StepSeries {
                labels: if keep_name {
                    s.labels.clone()
                } else {
                    e.drop_name(&s.labels)
                },
                values: vec![None; n],
            })
            .collect();
        match summary {
            Some(g) if !input.rollups.is_empty() => input.for_each_summary(|si, i, r| {
                out[si].values[i] = g(r, input.times[i], input.range);
            }),
            _ => input.for_each_window(|si, i, w| {
                if !w.is_empty() {
                    out[si].values[i] = f(w, input.times[i], input.range, i);
                }
            }),
        }
        if name == "rate" || name == "increase" {
            // Prometheus's info for a float series whose name is not a counter's.
            for (s, o) in input.series.iter().zip(&out) {
                let metric = s.labels.metric_name().unwrap_or("");
                let counter = ["_total", "_sum", "_count", "_bucket"]
                    .iter()
                    .any(|x| metric.ends_with(x));
                if !metric.is_empty() && !counter && o.values.iter().any(|v| v.is_some()) {
                    e.info_at(
                        format!("metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {metric:?}"),
                        name,
                        Some(0),
                    );
                }
            }
        }
        out.retain(|s| s.values.iter().any(|v| v.is_some()));
        Ok(Value::Vector(dedupe(out)?))
    };
    if let Some((f, keep_name)) = window_fn(name) {
        return over_time(&|w, t, r, _| f(w, t, r), keep_name);
    }
    match name {
        "mad_over_time" => over_time(
            &|w, _, _, _| {
                // A NaN sample makes the deviation NaN (Prometheus 3), not a value sorted in.
                if w.iter().any(|p| p.1.is_nan()) {
                    return Some(f64::NAN);
                }
                let mut v: Vec<f64> = w.iter().map(|p| p.1).collect();
                let med = quantile(0.5, &mut v);
                let mut d: Vec<f64> = w.iter().map(|p| (p.1 - med).abs()).collect();
                Some(quantile(0.5, &mut d))
            },
            false,
        ),
        "ts_of_min_over_time"
        | "ts_of_max_over_time"
        | "ts_of_last_over_time"
        | "ts_of_first_over_time" => {
            let which = name;
            over_time(
                &move |w, _, _, _| {
                    let p = match which {
                        "ts_of_last_over_time" => w.last(),
                        "ts_of_first_over_time" => w.first(),
                        "ts_of_min_over_time" => {
                            w.iter().rev().fold(None::<&(i64, f64)>, |m, p| match m {
                                Some(m) if !(p.1 <= m.1 || m.1.is_nan()) => Some(m),
                                _ => Some(p),
                            })
                        }
                        _ => w.iter().rev().fold(None::<&(i64, f64)>, |m, p| match m {
                            Some(m) if !(p.1 >= m.1 || m.1.is_nan()) => Some(m),
                            _ => Some(p),
                        }),
                    };
                    p.map(|p| p.0 as f64 / 1000.0)
                },
                false,
            )
        }
        "predict_linear" => {
            let by = e.eval_scalar(arg(call, 1)?)?;
            over_time(
                &|w, _, _, i| {
                    // The intercept is at the evaluation step, also under `@`.
                    (w.len() >= 2).then(|| {
                        let (slope, intercept) = linear_regression(w, e.ts(i));
                        slope * by[i] + intercept
                    })
                },
                false,
            )
        }
        "quantile_over_time" => {
            let q = e.eval_scalar(arg(call, 0)?)?;
            let input = e.range_input(arg(call, 1)?, false)?;
            let mut out: Vec<StepSeries> = input
                .series
                .iter()
                .map(|s| StepSeries {
                    labels: e.drop_name(&s.labels),
                    values: vec![None; n],
                })
                .collect();
            input.for_each_window(|si, i, w| {
                if !w.is_empty() {
                    if let Some(msg) = super::aggregate::bad_quantile(q[i]) {
                        e.warn_at(msg, name, Some(0));
                    }
                    let mut v: Vec<f64> = w.iter().map(|p| p.1).collect();
                    out[si].values[i] = Some(quantile(q[i], &mut v));
                }
            });
            out.retain(|s| s.values.iter().any(|v| v.is_some()));
            Ok(Value::Vector(dedupe(out)?))
        }
        "absent_over_time" => {
            let a = arg(call, 0)?;
            let input = e.range_input(a, true)?;
            let mut present = vec![false; n];
            if input.rollups.is_empty() {
                input.for_each_window(|_, i, w| present[i] |= !w.is_empty());
            } else {
                input.for_each_summary(|_, i, _| present[i] = true);
            }
            let labels = absent_labels(a);
            let values: Vec<Option<f64>> = present.iter().map(|p| (!p).then_some(1.0)).collect();
            Ok(Value::Vector(if values.iter().any(|v| v.is_some()) {
                vec![StepSeries { labels, values }]
            } else {
                vec![]
            }))
        }
        "absent" => {
            let a = arg(call, 0)?;
            let v = e.eval_vector(a)?;
            let values: Vec<Option<f64>> = (0..n)
                .map(|i| (!v.iter().any(|s| s.values[i].is_some())).then_some(1.0))
                .collect();
            let labels = absent_labels(a);
            Ok(Value::Vector(if values.iter().any(|v| v.is_some()) {
                vec![StepSeries { labels, values }]
            } else {
                vec![]
            }))
        }
        "ema_over_time" => {
            // Tidemark's extension: the exponential moving average of the window's samples in
            // time order, s = v0, then s = alpha * v + (1 - alpha) * s for each later sample
            // (per sample, not per unit of time: at a steady scrape interval the same thing).
            let alpha = e.eval_scalar(arg(call, 1)?)?;
            if let Some(a) = alpha.iter().find(|a| !(**a > 0.0 && **a <= 1.0)) {
                return Err(QueryError::Execution(format!(
                    "invalid smoothing factor for ema_over_time. Expected: 0 < alpha <= 1, got: {}",
                    super::aggregate::go_g(*a)
                )));
            }
            over_time(
                &|w, _, _, i| {
                    let a = alpha[i];
                    let (first, rest) = w.split_first()?;
                    Some(rest.iter().fold(first.1, |s, p| a * p.1 + (1.0 - a) * s))
                },
                false,
            )
        }
        "double_exponential_smoothing" | "holt_winters" => {
            let sf = e.eval_scalar(arg(call, 1)?)?;
            let tf = e.eval_scalar(arg(call, 2)?)?;
            for i in 0..n {
                if !(sf[i] > 0.0 && sf[i] < 1.0) {
                    return Err(QueryError::Execution(format!(
                        "invalid smoothing factor. Expected: 0 < sf < 1, got: {}",
                        sf[i]
                    )));
                }
                if !(tf[i] > 0.0 && tf[i] < 1.0) {
                    return Err(QueryError::Execution(format!(
                        "invalid trend factor. Expected: 0 < tf < 1, got: {}",
                        tf[i]
                    )));
                }
            }
            over_time(
                &|w, _, _, i| {
                    if w.len() < 2 {
                        return None;
                    }
                    let (sf, tf) = (sf[i], tf[i]);
                    let (mut s0, mut s1, mut b) = (0.0, w[0].1, w[1].1 - w[0].1);
                    for (k, p) in w.iter().enumerate().skip(1) {
                        let x = sf * p.1;
                        if k > 1 {
                            b = tf * (s1 - s0) + (1.0 - tf) * b;
                        }
                        let y = (1.0 - sf) * (s1 + b);
                        s0 = s1;
                        s1 = x + y;
                    }
                    Some(s1)
                },
                false,
            )
        }
        "step" => Ok(Value::Scalar(vec![
            if e.range_query {
                e.step as f64 / 1000.0
            } else {
                0.0
            };
            n
        ])),
        "range" => Ok(Value::Scalar(vec![
            if e.range_query {
                (e.end - e.start) as f64 / 1000.0
            } else {
                0.0
            };
            n
        ])),
        "min_of" | "max_of" => {
            let a = e.eval_scalar(arg(call, 0)?)?;
            let b = e.eval_scalar(arg(call, 1)?)?;
            let min = name == "min_of";
            Ok(Value::Scalar(
                a.iter()
                    .zip(&b)
                    .map(|(x, y)| {
                        if x.is_nan() || y.is_nan() {
                            f64::NAN
                        } else if min {
                            x.min(*y)
                        } else {
                            x.max(*y)
                        }
                    })
                    .collect(),
            ))
        }
        "histogram_quantiles" => super::aggregate::histogram_quantiles(e, call),
        "time" => Ok(Value::Scalar(
            (0..n).map(|i| e.ts(i) as f64 / 1000.0).collect(),
        )),
        "pi" => Ok(Value::Scalar(vec![std::f64::consts::PI; n])),
        "vector" => {
            let s = e.eval_scalar(arg(call, 0)?)?;
            Ok(Value::Vector(vec![StepSeries {
                labels: Labels::empty(),
                values: s.into_iter().map(Some).collect(),
            }]))
        }
        "scalar" => {
            let v = e.eval_vector(arg(call, 0)?)?;
            Ok(Value::Scalar(
                (0..n)
                    .map(|i| {
                        let mut it = v.iter().filter_map(|s| s.values[i]);
                        match (it.next(), it.next()) {
                            (Some(x), None) => x,
                            _ => f64::NAN,
                        }
                    })
                    .collect(),
            ))
        }
        "timestamp" => {
            let a = arg(call, 0)?;
            let inner = strip_parens(a);
            if let Expr::VectorSelector(vs) = inner {
                let v = e.eval_selector(vs, true)?;
                return map_vector(e, v, false, |_, x| Some(x));
            }
            let v = e.eval_vector(a)?;
            map_vector(e, v, false, |i, _| Some(e.ts(i) as f64 / 1000.0))
        }
        "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc" => {
            // Ordering matters only for instant queries; the API layer keeps the order given.
            if e.range_query && e.start != e.end {
                e.warn_at(
                    "sort is ineffective for range queries since results are always ordered by labels",
                    name,
                    None,
                );
            }
            let mut v = e.eval_vector(arg(call, 0)?)?;
            match name {
                "sort" | "sort_desc" => {
                    let desc = name == "sort_desc";
                    v.sort_by(|a, b| {
                        cmp_nan_last(
                            a.values[0].unwrap_or(f64::NAN),
                            b.values[0].unwrap_or(f64::NAN),
                            desc,
                        )
                    });
                }
                _ => {
                    let mut names = Vec::new();
                    for i in 1..call.args.args.len() {
                        match strip_parens(arg(call, i)?) {
                            Expr::StringLiteral(s) => names.push(s.val.clone()),
                            _ => {
                                return Err(QueryError::BadData(
                                    "sort_by_label expects label names".into(),
                                ))
                            }
                        }
                    }
                    let desc = name.ends_with("_desc");
                    v.sort_by(|a, b| {
                        let mut o = std::cmp::Ordering::Equal;
                        for l in &names {
                            o = natural_cmp(
                                a.labels.get(l).unwrap_or(""),
                                b.labels.get(l).unwrap_or(""),
                            );
                            if o.is_ne() {
                                break;
                            }
                        }
                        if o.is_eq() {
                            o = a.labels.cmp(&b.labels);
                        }
                        if desc {
                            o.reverse()
                        } else {
                            o
                        }
                    });
                }
            }
            Ok(Value::Vector(v))
        }
        "label_replace" => {
            let v = e.eval_vector(arg(call, 0)?)?;
            let s = |i: usize| -> Result<String, QueryError> {
                match strip_parens(arg(call, i)?) {
                    Expr::StringLiteral(s) => Ok(s.val.clone()),
                    _ => Err(QueryError::BadData(format!(
                        "label_replace argument {} must be a string",
                        i + 1
                    ))),
                }
            };
            let (dst, repl, src, re) = (s(1)?, s(2)?, s(3)?, s(4)?);
            let re = regex::Regex::new(&format!("^(?s:{re})$")).map_err(|err| {
                QueryError::BadData(format!(
                    "invalid regular expression in label_replace(): {re}: {err}"
                ))
            })?;
            if !crate::model::is_valid_label_name(&dst) && dst != METRIC_NAME {
                return Err(QueryError::BadData(format!(
                    "invalid destination label name in label_replace(): {dst}"
                )));
            }
            let out = v
                .into_iter()
                .map(|mut s| {
                    let val = label_value(&s.labels, &src).unwrap_or("").to_string();
                    if let Some(caps) = re.captures(&val) {
                        let mut res = String::new();
                        caps.expand(&go_template(&repl), &mut res);
                        set_label(&mut s.labels, &dst, &res);
                    }
                    s
                })
                .collect();
            Ok(Value::Vector(dedupe(out)?))
        }
        "label_join" => {
            let v = e.eval_vector(arg(call, 0)?)?;
            let mut strs = Vec::new();
            for i in 1..call.args.args.len() {
                match strip_parens(arg(call, i)?) {
                    Expr::StringLiteral(s) => strs.push(s.val.clone()),
                    _ => {
                        return Err(QueryError::BadData(
                            "label_join arguments must be strings".into(),
                        ))
                    }
                }
            }
            if strs.len() < 2 {
                return Err(QueryError::BadData(
                    "label_join needs a destination label and a separator".into(),
                ));
            }
            let dst = strs[0].clone();
            let sep = strs[1].clone();
            if !crate::model::is_valid_label_name(&dst) && dst != METRIC_NAME {
                return Err(QueryError::BadData(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            let out = v
                .into_iter()
                .map(|mut s| {
                    let joined: Vec<String> = strs[2..]
                        .iter()
                        .map(|l| label_value(&s.labels, l).unwrap_or("").to_string())
                        .collect();
                    set_label(&mut s.labels, &dst, &joined.join(&sep));
                    s
                })
                .collect();
            Ok(Value::Vector(dedupe(out)?))
        }
        "clamp" | "clamp_min" | "clamp_max" => {
            let v = e.eval_vector(arg(call, 0)?)?;
            let a = e.eval_scalar(arg(call, 1)?)?;
            let b = if name == "clamp" {
                e.eval_scalar(arg(call, 2)?)?
            } else {
                vec![f64::NAN; n]
            };
            if name == "clamp" {
                // An empty result where min > max.
                return map_vector(e, v, false, |i, x| {
                    (a[i] <= b[i] || a[i].is_nan() || b[i].is_nan())
                        .then(|| x.max(a[i]).min(b[i]))
                        .map(|r| {
                            if a[i].is_nan() || b[i].is_nan() {
                                f64::NAN
                            } else {
                                r
                            }
                        })
                });
            }
            let min = name == "clamp_min";
            map_vector(e, v, false, |i, x| {
                Some(if a[i].is_nan() {
                    f64::NAN
                } else if min {
                    x.max(a[i])
                } else {
                    x.min(a[i])
                })
            })
        }
        "round" => {
            let v = e.eval_vector(arg(call, 0)?)?;
            let to = if call.args.args.len() > 1 {
                e.eval_scalar(arg(call, 1)?)?
            } else {
                vec![1.0; n]
            };
            map_vector(e, v, false, |i, x| Some(round_to(x, to[i])))
        }
        "histogram_quantile" => super::aggregate::histogram_quantile(e, call),
        "histogram_fraction" => super::aggregate::histogram_fraction(e, call),
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute"
        | "month" | "year" => {
            let f = |secs: f64| -> f64 {
                let ms = (secs.floor() as i64).saturating_mul(1000);
                let c = crate::time::civil(ms);
                match name {
                    "day_of_month" => c.day as f64,
                    "day_of_week" => c.weekday as f64,
                    "day_of_year" => crate::time::day_of_year(ms) as f64,
                    "days_in_month" => crate::time::days_in_month(ms) as f64,
                    "hour" => c.hour as f64,
                    "minute" => c.minute as f64,
                    "month" => c.month as f64,
                    _ => c.year as f64,
                }
            };
            if call.args.args.is_empty() {
                return Ok(Value::Vector(vec![StepSeries {
                    labels: Labels::empty(),
                    values: (0..n).map(|i| Some(f(e.ts(i) as f64 / 1000.0))).collect(),
                }]));
            }
            let v = e.eval_vector(arg(call, 0)?)?;
            map_vector(e, v, false, |_, x| {
                if x.is_finite() {
                    Some(f(x))
                } else {
                    Some(f64::NAN)
                }
            })
        }
        _ => {
            let f: fn(f64) -> f64 = match name {
                "abs" => f64::abs,
                "ceil" => f64::ceil,
                "floor" => f64::floor,
                "exp" => f64::exp,
                "sqrt" => f64::sqrt,
                "ln" => f64::ln,
                "log2" => f64::log2,
                "log10" => f64::log10,
                "sgn" => |x: f64| {
                    if x > 0.0 {
                        1.0
                    } else if x < 0.0 {
                        -1.0
                    } else {
                        x
                    }
                },
                "acos" => f64::acos,
                "acosh" => f64::acosh,
                "asin" => f64::asin,
                "asinh" => f64::asinh,
                "atan" => f64::atan,
                "atanh" => f64::atanh,
                "cos" => f64::cos,
                "cosh" => f64::cosh,
                "sin" => f64::sin,
                "sinh" => f64::sinh,
                "tan" => f64::tan,
                "tanh" => f64::tanh,
                "deg" => f64::to_degrees,
                "rad" => f64::to_radians,
                other => {
                    return Err(QueryError::BadData(format!(
                        "function \"{other}\" is not supported"
                    )))
                }
            };
            let v = e.eval_vector(arg(call, 0)?)?;
            map_vector(e, v, false, |_, x| Some(f(x)))
        }
    }
}

/// Natural order: digit runs compare as numbers ("4m5" < "4m1000"), as Prometheus's
/// `sort_by_label` does.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, _) => return std::cmp::Ordering::Less,
            (_, None) => return std::cmp::Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let i = x
                    .iter()
                    .position(|c| !c.is_ascii_digit())
                    .unwrap_or(x.len());
                let j = y
                    .iter()
                    .position(|c| !c.is_ascii_digit())
                    .unwrap_or(y.len());
                let (n, m) = (trim_zeros(&x[..i]), trim_zeros(&y[..j]));
                let o = n.len().cmp(&m.len()).then_with(|| n.cmp(m));
                if o.is_ne() {
                    return o;
                }
                x = &x[i..];
                y = &y[j..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let k = s.iter().position(|&c| c != b'0').unwrap_or(s.len());
    &s[k..]
}

/// `$1` / `${1}` / `$name` in Go's regexp template syntax, for Rust's `expand`.
fn go_template(t: &str) -> String {
    // Rust's syntax is the same, except that `$1x` means group "1x" in both; keep as is.
    t.to_string()
}

fn strip_parens(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => strip_parens(&p.expr),
        other => other,
    }
}

/// The labels `absent()` reports: the equality matchers of a plain selector.
fn absent_labels(e: &Expr) -> Labels {
    let vs = match strip_parens(e) {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::empty(),
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut dup = std::collections::HashSet::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        if let promql_parser::label::MatchOp::Equal = m.op {
            if !dup.insert(m.name.clone()) {
                pairs.retain(|p| p.0 != m.name);
                continue;
            }
            pairs.push((m.name.clone(), m.value.clone()));
        }
    }
    pairs.retain(|p| {
        vs.matchers
            .matchers
            .iter()
            .filter(|m| m.name == p.0)
            .count()
            == 1
    });
    Labels::from_pairs(pairs)
}

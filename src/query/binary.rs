//! Binary operators: arithmetic, comparison (with `bool`), set operators, and vector matching
//! (`on`, `ignoring`, `group_left`, `group_right`).

use std::collections::{HashMap, HashSet};

use promql_parser::parser::token;
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::engine::{dedupe, Engine, StepSeries, Value, DROPPED_NAME};
use super::QueryError;
use crate::model::{Labels, METRIC_NAME};

fn is_comparison(op: u16) -> bool {
    matches!(
        op,
        token::T_EQLC | token::T_NEQ | token::T_GTR | token::T_LSS | token::T_GTE | token::T_LTE
    )
}

/// Applies an arithmetic or comparison operator: `(value, keep)`.
fn elem(op: u16, l: f64, r: f64) -> Result<(f64, bool), QueryError> {
    Ok(match op {
        token::T_ADD => (l + r, true),
        token::T_SUB => (l - r, true),
        token::T_MUL => (l * r, true),
        token::T_DIV => (l / r, true),
        token::T_MOD => (l % r, true),
        token::T_POW => (l.powf(r), true),
        token::T_ATAN2 => (l.atan2(r), true),
        token::T_EQLC => (l, l == r),
        token::T_NEQ => (l, l != r),
        token::T_GTR => (l, l > r),
        token::T_LSS => (l, l < r),
        token::T_GTE => (l, l >= r),
        token::T_LTE => (l, l <= r),
        _ => {
            return Err(QueryError::BadData(format!(
                "operator {} not allowed here",
                token::TokenType::new(op)
            )))
        }
    })
}

fn signature(labels: &Labels, matching: &Option<LabelModifier>) -> Labels {
    let mut l = labels.clone();
    match matching {
        Some(LabelModifier::Include(on)) => l.retain(|k| on.labels.iter().any(|x| x == k)),
        Some(LabelModifier::Exclude(ign)) => l.retain(|k| {
            k != METRIC_NAME && k != DROPPED_NAME && !ign.labels.iter().any(|x| x == k)
        }),
        None => l.retain(|k| k != METRIC_NAME && k != DROPPED_NAME),
    }
    l
}

/// Evaluates a binary expression.
pub fn binary(e: &Engine<'_>, b: &BinaryExpr) -> Result<Value, QueryError> {
    let op = b.op.id();
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = e.eval(&b.lhs)?;
    let rhs = e.eval(&b.rhs)?;
    let cmp = is_comparison(op);
    let drop_name = !cmp || return_bool;
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => {
            let mut out = Vec::with_capacity(e.n);
            for (a, b) in l.into_iter().zip(r) {
                let (v, keep) = elem(op, a, b)?;
                out.push(if cmp {
                    if keep {
                        1.0
                    } else {
                        0.0
                    }
                } else {
                    v
                });
            }
            Ok(Value::Scalar(out))
        }
        (Value::Vector(v), Value::Scalar(s)) | (Value::Scalar(s), Value::Vector(v)) => {
            let scalar_left = matches!(e.eval(&b.lhs), Ok(Value::Scalar(_)));
            if matches!(op, token::T_LAND | token::T_LOR | token::T_LUNLESS) {
                return Err(QueryError::BadData(
                    "set operator not allowed in binary scalar expression".into(),
                ));
            }
            let mut out = Vec::with_capacity(v.len());
            for series in v {
                let mut values = Vec::with_capacity(e.n);
                for (i, x) in series.values.iter().enumerate() {
                    values.push(match x {
                        None => None,
                        Some(x) => {
                            let (l, r) = if scalar_left { (s[i], *x) } else { (*x, s[i]) };
                            let (mut v, keep) = elem(op, l, r)?;
                            if cmp && scalar_left {
                                v = *x;
                            }
                            if return_bool {
                                Some(if keep { 1.0 } else { 0.0 })
                            } else if keep {
                                Some(v)
                            } else {
                                None
                            }
                        }
                    });
                }
                let labels = if drop_name {
                    e.drop_name(&series.labels)
                } else {
                    series.labels
                };
                out.push(StepSeries { labels, values });
            }
            out.retain(|s| s.values.iter().any(|v| v.is_some()));
            Ok(Value::Vector(dedupe(out)?))
        }
        (Value::Vector(l), Value::Vector(r)) => {
            let matching = b.modifier.as_ref().and_then(|m| m.matching.clone());
            let card = b
                .modifier
                .as_ref()
                .map(|m| m.card.clone())
                .unwrap_or(VectorMatchCardinality::OneToOne);
            match op {
                token::T_LAND | token::T_LOR | token::T_LUNLESS => {
                    Ok(Value::Vector(set_op(e.n, op, l, r, &matching)))
                }
                _ => Ok(Value::Vector(vector_op(
                    e,
                    op,
                    l,
                    r,
                    &matching,
                    &card,
                    return_bool,
                    drop_name,
                )?)),
            }
        }
        _ => Err(QueryError::BadData(
            "binary operators are only allowed between scalars and instant vectors".into(),
        )),
    }
}

fn set_op(
    n: usize,
    op: u16,
    l: Vec<StepSeries>,
    r: Vec<StepSeries>,
    matching: &Option<LabelModifier>,
) -> Vec<StepSeries> {
    let lsig: Vec<Labels> = l.iter().map(|s| signature(&s.labels, matching)).collect();
    let rsig: Vec<Labels> = r.iter().map(|s| signature(&s.labels, matching)).collect();
    let mut out_l: Vec<StepSeries> = l
        .iter()
        .map(|s| StepSeries {
            labels: s.labels.clone(),
            values: vec![None; n],
        })
        .collect();
    let mut out_r: Vec<StepSeries> = r
        .iter()
        .map(|s| StepSeries {
            labels: s.labels.clone(),
            values: vec![None; n],
        })
        .collect();
    for i in 0..n {
        let rset: HashSet<&Labels> = r
            .iter()
            .zip(&rsig)
            .filter(|(s, _)| s.values[i].is_some())
            .map(|(_, g)| g)
            .collect();
        match op {
            token::T_LAND | token::T_LUNLESS => {
                let want = op == token::T_LAND;
                for (j, s) in l.iter().enumerate() {
                    if let Some(v) = s.values[i] {
                        if rset.contains(&lsig[j]) == want {
                            out_l[j].values[i] = Some(v);
                        }
                    }
                }
            }
            _ => {
                let mut lset: HashSet<&Labels> = HashSet::new();
                for (j, s) in l.iter().enumerate() {
                    if let Some(v) = s.values[i] {
                        out_l[j].values[i] = Some(v);
                        lset.insert(&lsig[j]);
                    }
                }
                for (j, s) in r.iter().enumerate() {
                    if let Some(v) = s.values[i] {
                        if !lset.contains(&rsig[j]) {
                            out_r[j].values[i] = Some(v);
                        }
                    }
                }
            }
        }
    }
    out_l.extend(out_r);
    out_l.retain(|s| s.values.iter().any(|v| v.is_some()));
    out_l
}

#[allow(clippy::too_many_arguments)]
fn vector_op(
    e: &Engine<'_>,
    op: u16,
    l: Vec<StepSeries>,
    r: Vec<StepSeries>,
    matching: &Option<LabelModifier>,
    card: &VectorMatchCardinality,
    return_bool: bool,
    drop_name: bool,
) -> Result<Vec<StepSeries>, QueryError> {
    let n = e.n;
    // The "one" side is the right one unless group_right swaps them.
    let swap = matches!(card, VectorMatchCardinality::OneToMany(_));
    let (many, one) = if swap { (&r, &l) } else { (&l, &r) };
    let many_sig: Vec<Labels> = many
        .iter()
        .map(|s| signature(&s.labels, matching))
        .collect();
    let one_sig: Vec<Labels> = one.iter().map(|s| signature(&s.labels, matching)).collect();
    let include: Vec<String> = match card {
        VectorMatchCardinality::ManyToOne(ls) | VectorMatchCardinality::OneToMany(ls) => {
            ls.labels.clone()
        }
        _ => Vec::new(),
    };
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let mut out: HashMap<Labels, Vec<Option<f64>>> = HashMap::new();
    let mut result_labels: HashMap<(usize, usize), Labels> = HashMap::new();
    for i in 0..n {
        let mut one_at: HashMap<&Labels, usize> = HashMap::new();
        for (j, s) in one.iter().enumerate() {
            if s.values[i].is_some() {
                if let Some(prev) = one_at.insert(&one_sig[j], j) {
                    let side = if swap { "left" } else { "right" };
                    return Err(QueryError::Execution(format!(
                        "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                        one_sig[j], one[prev].labels, s.labels
                    )));
                }
            }
        }
        let mut matched_one: HashSet<usize> = HashSet::new();
        for (j, s) in many.iter().enumerate() {
            let Some(mv) = s.values[i] else { continue };
            let Some(&k) = one_at.get(&many_sig[j]) else {
                continue;
            };
            let ov = one[k].values[i].expect("present at step");
            if one_to_one && !matched_one.insert(k) {
                return Err(QueryError::Execution(format!(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right); found for {}",
                    many_sig[j]
                )));
            }
            let (lv, rv) = if swap { (ov, mv) } else { (mv, ov) };
            let (v, keep) = elem(op, lv, rv)?;
            let value = if return_bool {
                Some(if keep { 1.0 } else { 0.0 })
            } else if keep {
                Some(v)
            } else {
                None
            };
            let Some(value) = value else { continue };
            let labels = result_labels
                .entry((j, k))
                .or_insert_with(|| {
                    let mut m = if drop_name {
                        e.drop_name(&s.labels)
                    } else {
                        s.labels.clone()
                    };
                    if one_to_one {
                        match matching {
                            Some(LabelModifier::Include(on)) => {
                                m.retain(|k| on.labels.iter().any(|x| x == k))
                            }
                            Some(LabelModifier::Exclude(ign)) => {
                                m.retain(|k| !ign.labels.iter().any(|x| x == k))
                            }
                            None => {}
                        }
                    }
                    for ln in &include {
                        match one[k].labels.get(ln) {
                            Some(v) => m.set(ln, v),
                            None => m.remove(ln),
                        }
                    }
                    m
                })
                .clone();
            let slot = out.entry(labels).or_insert_with(|| vec![None; n]);
            if slot[i].is_some() {
                return Err(QueryError::Execution(
                    "multiple matches for labels: grouping labels must ensure unique matches"
                        .into(),
                ));
            }
            slot[i] = Some(value);
        }
    }
    let mut v: Vec<StepSeries> = out
        .into_iter()
        .map(|(labels, values)| StepSeries { labels, values })
        .collect();
    v.sort_by(|a, b| a.labels.cmp(&b.labels));
    dedupe(v)
}

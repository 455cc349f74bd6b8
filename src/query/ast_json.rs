//! A parsed query as Prometheus's `/api/v1/parse_query` returns it (its `translateAST`: the
//! tree the Prometheus UI's explain view and editors read): one object per node with a `type`
//! (`aggregation`, `binaryExpr`, `call`, `matrixSelector`, `subquery`, `numberLiteral`,
//! `parenExpr`, `stringLiteral`, `unaryExpr`, `vectorSelector`), durations in milliseconds,
//! and a selector's metric name among its matchers.

use promql_parser::parser::{
    AtModifier, Expr, LabelModifier, Offset, VectorMatchCardinality, VectorSelector,
};
use serde_json::{json, Value as Json};

use super::aggregate::go_float;

fn ms(d: &std::time::Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        Some(Offset::Pos(d)) => ms(d),
        Some(Offset::Neg(d)) => -ms(d),
        None => 0,
    }
}

/// `timestamp` (ms, for `@ <time>`) and `startOrEnd` (`@ start()` / `@ end()`).
fn at_fields(at: &Option<AtModifier>) -> (Json, Json) {
    match at {
        Some(AtModifier::At(t)) => {
            let t = match t.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => ms(&d),
                Err(e) => -ms(&e.duration()),
            };
            (json!(t), Json::Null)
        }
        Some(AtModifier::Start) => (Json::Null, json!("start")),
        Some(AtModifier::End) => (Json::Null, json!("end")),
        None => (Json::Null, Json::Null),
    }
}

/// The selector's matchers, its name first as Prometheus's parser adds it.
fn matchers(vs: &VectorSelector) -> Json {
    let mut out = Vec::new();
    let named = vs.matchers.matchers.iter().any(|m| m.name == "__name__");
    if let (Some(name), false) = (&vs.name, named) {
        out.push(json!({"name": "__name__", "value": name, "type": "="}));
    }
    let sets = std::iter::once(&vs.matchers.matchers).chain(vs.matchers.or_matchers.iter());
    for m in sets.flatten() {
        out.push(json!({"name": m.name, "value": m.value, "type": m.op.to_string()}));
    }
    json!(out)
}

/// The JSON tree of `expr`.
pub fn translate(expr: &Expr) -> Json {
    match expr {
        Expr::Aggregate(a) => {
            let (grouping, without) = match &a.modifier {
                Some(LabelModifier::Include(l)) => (l.labels.clone(), false),
                Some(LabelModifier::Exclude(l)) => (l.labels.clone(), true),
                None => (Vec::new(), false),
            };
            json!({
                "type": "aggregation",
                "op": a.op.to_string(),
                "expr": translate(&a.expr),
                "param": a.param.as_ref().map_or(Json::Null, |p| translate(p)),
                "grouping": grouping,
                "without": without,
            })
        }
        Expr::Binary(b) => {
            let matching = b.modifier.as_ref().map_or(Json::Null, |m| {
                let (labels, on) = match &m.matching {
                    Some(LabelModifier::Include(l)) => (l.labels.clone(), true),
                    Some(LabelModifier::Exclude(l)) => (l.labels.clone(), false),
                    None => (Vec::new(), false),
                };
                let (card, include) = match &m.card {
                    VectorMatchCardinality::OneToOne => ("one-to-one", Vec::new()),
                    VectorMatchCardinality::ManyToOne(l) => ("many-to-one", l.labels.clone()),
                    VectorMatchCardinality::OneToMany(l) => ("one-to-many", l.labels.clone()),
                    VectorMatchCardinality::ManyToMany => ("many-to-many", Vec::new()),
                };
                json!({"card": card, "labels": labels, "on": on, "include": include})
            });
            json!({
                "type": "binaryExpr",
                "op": b.op.to_string(),
                "lhs": translate(&b.lhs),
                "rhs": translate(&b.rhs),
                "matching": matching,
                "bool": b.modifier.as_ref().is_some_and(|m| m.return_bool),
            })
        }
        Expr::Call(c) => json!({
            "type": "call",
            "func": {
                "name": c.func.name,
                "argTypes": c.func.arg_types.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                "variadic": c.func.variadic,
                "returnType": c.func.return_type.to_string(),
            },
            "args": c.args.args.iter().map(|a| translate(a)).collect::<Vec<_>>(),
        }),
        Expr::MatrixSelector(m) => {
            let (timestamp, start_or_end) = at_fields(&m.vs.at);
            json!({
                "type": "matrixSelector",
                "name": m.vs.name.clone().unwrap_or_default(),
                "range": ms(&m.range),
                "offset": offset_ms(&m.vs.offset),
                "matchers": matchers(&m.vs),
                "timestamp": timestamp,
                "startOrEnd": start_or_end,
            })
        }
        Expr::Subquery(q) => {
            let (timestamp, start_or_end) = at_fields(&q.at);
            json!({
                "type": "subquery",
                "expr": translate(&q.expr),
                "range": ms(&q.range),
                "offset": offset_ms(&q.offset),
                "step": q.step.as_ref().map_or(0, ms),
                "timestamp": timestamp,
                "startOrEnd": start_or_end,
            })
        }
        Expr::NumberLiteral(n) => json!({"type": "numberLiteral", "val": go_float(n.val)}),
        Expr::Paren(p) => json!({"type": "parenExpr", "expr": translate(&p.expr)}),
        Expr::StringLiteral(s) => json!({"type": "stringLiteral", "val": s.val}),
        Expr::Unary(u) => json!({"type": "unaryExpr", "op": "-", "expr": translate(&u.expr)}),
        Expr::VectorSelector(vs) => {
            let (timestamp, start_or_end) = at_fields(&vs.at);
            json!({
                "type": "vectorSelector",
                "name": vs.name.clone().unwrap_or_default(),
                "offset": offset_ms(&vs.offset),
                "matchers": matchers(vs),
                "timestamp": timestamp,
                "startOrEnd": start_or_end,
            })
        }
        Expr::Extension(_) => json!({"type": "extension"}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_have_prometheus_shape() {
        let t = |q: &str| translate(&promql_parser::parser::parse(q).unwrap());
        assert_eq!(
            t(r#"sum by (job) (rate(http_requests_total{code=~"5.."}[5m] offset 1m))"#),
            json!({
                "type": "aggregation", "op": "sum", "param": null, "grouping": ["job"], "without": false,
                "expr": {
                    "type": "call",
                    "func": {"name": "rate", "argTypes": ["matrix"], "variadic": 0, "returnType": "vector"},
                    "args": [{
                        "type": "matrixSelector", "name": "http_requests_total", "range": 300000,
                        "offset": 60000, "timestamp": null, "startOrEnd": null,
                        "matchers": [
                            {"name": "__name__", "value": "http_requests_total", "type": "="},
                            {"name": "code", "value": "5..", "type": "=~"}
                        ]
                    }]
                }
            })
        );
        assert_eq!(
            t("a / on(x) group_left(y) -b @ end()"),
            json!({
                "type": "binaryExpr", "op": "/", "bool": false,
                "matching": {"card": "many-to-one", "labels": ["x"], "on": true, "include": ["y"]},
                "lhs": {"type": "vectorSelector", "name": "a", "offset": 0, "timestamp": null, "startOrEnd": null,
                        "matchers": [{"name": "__name__", "value": "a", "type": "="}]},
                "rhs": {"type": "unaryExpr", "op": "-", "expr": {
                    "type": "vectorSelector", "name": "b", "offset": 0, "timestamp": null, "startOrEnd": "end",
                    "matchers": [{"name": "__name__", "value": "b", "type": "="}]}}
            })
        );
        assert_eq!(t("1.5")["val"], "1.5");
        assert_eq!(t("max_over_time(x[10m:1m])")["args"][0]["step"], 60000);
    }
}

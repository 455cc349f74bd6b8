//! A JSON Schema validator for the subset our schemas in `schemas/` use: `type`, `properties`,
//! `required`, `additionalProperties` (`false` or a schema), `enum`, `pattern`, `minLength`, `minItems`,
//! `items`, `minimum`. Every violation names the key path and how to fix it.

use serde_json::Value;

/// One violation: the dotted key path (`source.topics[0]`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub message: String,
}

/// Validates `v` against `schema`; returns every violation (empty when valid).
pub fn validate(schema: &Value, v: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    check(schema, v, "", &mut out);
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

fn has_type(v: &Value, t: &str) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "null" => v.is_null(),
        _ => true,
    }
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn check(schema: &Value, v: &Value, path: &str, out: &mut Vec<Violation>) {
    let mut err = |message: String| {
        out.push(Violation {
            path: if path.is_empty() {
                "(top level)".into()
            } else {
                path.to_string()
            },
            message,
        })
    };
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        if !has_type(v, t) {
            let want = match t {
                "object" => "a table",
                "array" => "an array",
                "string" => "a string",
                "integer" => "an integer",
                "number" => "a number",
                "boolean" => "true or false",
                other => other,
            };
            err(format!("must be {want}, not {}", type_name(v)));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
            err(format!(
                "{v} is not allowed: use one of {}",
                list.join(", ")
            ));
            return;
        }
    }
    if let (Some(p), Some(s)) = (schema.get("pattern").and_then(Value::as_str), v.as_str()) {
        match regex::Regex::new(p) {
            Ok(re) if !re.is_match(s) => {
                let hint = schema
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                err(format!("{s:?} does not match {p} {hint}").trim_end().into());
            }
            _ => {}
        }
    }
    if let (Some(n), Some(s)) = (schema.get("minLength").and_then(Value::as_u64), v.as_str()) {
        if (s.chars().count() as u64) < n {
            err(format!("must have at least {n} characters"));
        }
    }
    if let (Some(m), Some(x)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if x < m {
            err(format!("{x} is below the minimum {m}"));
        }
    }
    if let Some(items) = v.as_array() {
        if let Some(n) = schema.get("minItems").and_then(Value::as_u64) {
            if (items.len() as u64) < n {
                err(format!("needs at least {n} item(s)"));
            }
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                check(item_schema, item, &format!("{path}[{i}]"), out);
            }
        }
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            for r in req.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    let what = props
                        .and_then(|p| p.get(r))
                        .and_then(|p| p.get("description"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    out.push(Violation {
                        path: join(path, r),
                        message: format!("is required but missing: add it. {what}")
                            .trim_end()
                            .into(),
                    });
                }
            }
        }
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(s, val, &join(path, k), out),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    let known: Vec<&str> = props
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    let close = known
                        .iter()
                        .map(|c| (distance(k, c), *c))
                        .filter(|(d, _)| *d <= 2)
                        .min();
                    let fix = match close {
                        Some((_, c)) => format!("did you mean `{c}`?"),
                        None => format!("remove it; allowed keys here: {}", known.join(", ")),
                    };
                    out.push(Violation {
                        path: join(path, k),
                        message: format!("unknown key: {fix}"),
                    });
                }
                None => {
                    if let Some(s) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                        check(s, val, &join(path, k), out);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_key_and_the_fix() {
        let schema = json!({
            "type": "object", "additionalProperties": false, "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z]+$"},
                "source": {"type": "object", "additionalProperties": false,
                           "properties": {"topics": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                                          "format": {"enum": ["a", "b"]}}}
            }
        });
        let v = json!({"nme": 1, "source": {"topcs": [], "format": "c"}});
        let errs = validate(&schema, &v);
        let text: Vec<String> = errs
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect();
        assert!(
            text.contains(&"name: is required but missing: add it.".to_string()),
            "{text:?}"
        );
        assert!(
            text.contains(&"nme: unknown key: did you mean `name`?".to_string()),
            "{text:?}"
        );
        assert!(
            text.contains(&"source.topcs: unknown key: did you mean `topics`?".to_string()),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("source.format: \"c\" is not allowed")),
            "{text:?}"
        );
        assert!(validate(&schema, &json!({"name": "ok", "source": {"topics": ["m"]}})).is_empty());
        let e = validate(&schema, &json!({"name": "Bad!"}));
        assert_eq!(e[0].path, "name");
    }
}

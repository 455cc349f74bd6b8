//! The template functions (`humanize`, `printf`, `reReplaceAll`, comparisons...).

use super::*;

pub(super) fn call_func(f: &str, v: &[Val]) -> Result<Val, TemplateError> {
    use std::cmp::Ordering::*;
    Ok(match f {
        "humanize" | "humanize1024" | "humanizePercentage" | "humanizeDuration"
        | "humanizeTimestamp" | "toTime" => {
            want(f, v, 1)?;
            let x = v[0].to_f64(f)?;
            Val::Str(match f {
                "humanize" => humanize(x),
                "humanize1024" => humanize1024(x),
                "humanizePercentage" => format!("{}%", go_g(x * 100.0, 4)),
                "humanizeDuration" => humanize_duration(x),
                _ => humanize_timestamp(x),
            })
        }
        "toUpper" | "toLower" | "title" | "stripPort" | "stripDomain" | "urlquery" | "safeHtml" => {
            want(f, v, 1)?;
            let s = v[0].to_str();
            Val::Str(match f {
                "toUpper" => s.to_uppercase(),
                "toLower" => s.to_lowercase(),
                "title" => title(&s),
                "stripPort" => strip_port(&s),
                "stripDomain" => strip_domain(&s),
                "urlquery" => serde_urlencoded::to_string([("", s.as_str())]).unwrap_or_default()
                    [1..]
                    .to_string(),
                _ => s,
            })
        }
        "parseDuration" => {
            want(f, v, 1)?;
            let s = v[0].to_str();
            match crate::time::parse_duration_ms(&s) {
                Some(ms) => Val::Num(ms as f64 / 1000.0),
                None => return err(format!("parseDuration: invalid duration {s:?}")),
            }
        }
        "printf" => {
            let Some((Val::Str(fmt), rest)) = v.split_first() else {
                return err("printf: the first argument must be a format string");
            };
            Val::Str(sprintf(fmt, rest)?)
        }
        "print" => {
            let mut s = String::new();
            for (i, x) in v.iter().enumerate() {
                // Go's Sprint adds spaces between operands when neither is a string.
                if i > 0 && !matches!(x, Val::Str(_)) && !matches!(v[i - 1], Val::Str(_)) {
                    s.push(' ');
                }
                x.print(&mut s);
            }
            Val::Str(s)
        }
        "reReplaceAll" => {
            want(f, v, 3)?;
            let re =
                regex::Regex::new(&v[0].to_str()).or_else(|e| err(format!("reReplaceAll: {e}")))?;
            // Go's `$1`/`${1}` expansion is the regex crate's.
            Val::Str(
                re.replace_all(&v[2].to_str(), v[1].to_str().as_str())
                    .into_owned(),
            )
        }
        "match" => {
            want(f, v, 2)?;
            let re = regex::Regex::new(&v[0].to_str()).or_else(|e| err(format!("match: {e}")))?;
            Val::Bool(re.is_match(&v[1].to_str()))
        }
        "index" => {
            want(f, v, 2)?;
            match &v[0] {
                Val::Map(m) => Val::Str(m.get(&v[1].to_str()).cloned().unwrap_or_default()),
                Val::List(l) => {
                    let i = v[1].to_f64(f)?;
                    match l.get(i as usize) {
                        Some(x) if i >= 0.0 && i.fract() == 0.0 => x.clone(),
                        _ => {
                            return err(format!(
                                "index out of range: {} (the list has {})",
                                v[1].to_str(),
                                l.len()
                            ))
                        }
                    }
                }
                other => return err(format!("index of type {}", type_name(other))),
            }
        }
        "len" => {
            want(f, v, 1)?;
            match &v[0] {
                Val::Map(m) => Val::Int(m.len() as i64),
                Val::List(l) => Val::Int(l.len() as i64),
                Val::Str(s) => Val::Int(s.len() as i64),
                other => return err(format!("len of type {}", type_name(other))),
            }
        }
        "eq" => {
            if v.len() < 2 {
                return err("eq: missing argument for comparison");
            }
            let mut any = false;
            for b in &v[1..] {
                any |= compare(f, &v[0], b)? == Equal;
            }
            Val::Bool(any)
        }
        "ne" | "lt" | "le" | "gt" | "ge" => {
            want(f, v, 2)?;
            let o = compare(f, &v[0], &v[1])?;
            Val::Bool(match f {
                "ne" => o != Equal,
                "lt" => o == Less,
                "le" => o != Greater,
                "gt" => o == Greater,
                _ => o != Less,
            })
        }
        "and" | "or" => {
            if v.is_empty() {
                return err(format!(
                    "wrong number of args for {f}: want at least 1 got 0"
                ));
            }
            let pick = v
                .iter()
                .find(|x| if f == "and" { !x.truthy() } else { x.truthy() })
                .unwrap_or(&v[v.len() - 1]);
            pick.clone()
        }
        "not" => {
            want(f, v, 1)?;
            Val::Bool(!v[0].truthy())
        }
        // Prometheus's helpers for `query` results.
        "first" => {
            want(f, v, 1)?;
            match &v[0] {
                Val::List(l) => match l.first() {
                    Some(x) => x.clone(),
                    None => return err("first() called on vector with no elements"),
                },
                other => return err(format!("first of type {}", type_name(other))),
            }
        }
        "label" | "value" | "strvalue" => {
            let sample = v.last().cloned().unwrap_or(Val::Nil);
            want(f, v, if f == "label" { 2 } else { 1 })?;
            match (f, sample) {
                ("value", Val::Obj("sample", m)) => m.get("Value").cloned().unwrap_or(Val::Nil),
                ("label", Val::Obj("sample", m)) => {
                    field(m.get("Labels").cloned().unwrap_or(Val::Nil), &v[0].to_str())?
                }
                ("strvalue", Val::Obj("sample", m)) => {
                    field(m.get("Labels").cloned().unwrap_or(Val::Nil), "__value__")?
                }
                (_, other) => {
                    return err(format!(
                        "{f}: want a sample of a query, got {}",
                        type_name(&other)
                    ))
                }
            }
        }
        "sortByLabel" => {
            want(f, v, 2)?;
            let Val::List(mut l) = v[1].clone() else {
                return err(format!(
                    "sortByLabel: want query results, got {}",
                    type_name(&v[1])
                ));
            };
            let name = v[0].to_str();
            let key = |x: &Val| match x {
                Val::Obj(_, m) => match m.get("Labels") {
                    Some(Val::Map(l)) => l.get(&name).cloned().unwrap_or_default(),
                    _ => String::new(),
                },
                _ => String::new(),
            };
            l.sort_by_key(key);
            Val::List(l)
        }
        // Alertmanager's: `{{ .Values | join ", " }}` (the separator first).
        "join" => {
            want(f, v, 2)?;
            let Val::List(items) = &v[1] else {
                return err(format!(
                    "join: want a list to join, got {}",
                    type_name(&v[1])
                ));
            };
            let parts: Vec<String> = items.iter().map(Val::to_str).collect();
            Val::Str(parts.join(&v[0].to_str()))
        }
        "trimSpace" | "safeUrl" => {
            want(f, v, 1)?;
            let s = v[0].to_str();
            Val::Str(if f == "trimSpace" {
                s.trim().to_string()
            } else {
                s
            })
        }
        "stringSlice" => Val::List(v.iter().map(|x| Val::Str(x.to_str())).collect()),
        other => return err(format!("function {other:?} not defined")),
    })
}

pub(super) fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric() && c != '\'' && c != '_';
    }
    out
}

pub(super) fn strip_port(s: &str) -> String {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            return rest[..end].to_string();
        }
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
        _ => s.to_string(),
    }
}

pub(super) fn strip_domain(s: &str) -> String {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (s, None),
    };
    if host.parse::<std::net::IpAddr>().is_ok() {
        return s.to_string();
    }
    let short = host.split('.').next().unwrap_or(host);
    match port {
        Some(p) => format!("{short}:{p}"),
        None => short.to_string(),
    }
}

/// Prometheus's `humanize`: SI prefixes, 4 significant digits.
pub fn humanize(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return go_g(v, 4);
    }
    let mut v = v;
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", go_g(v, 4))
}

/// Prometheus's `humanize1024`: binary prefixes.
pub fn humanize1024(v: f64) -> String {
    if v.abs() <= 1.0 || !v.is_finite() {
        return go_g(v, 4);
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", go_g(v, 4))
}

/// Prometheus's `humanizeDuration` (seconds in): `1d 2h 3m 4s`, `1.5s`, `250ms`.
pub fn humanize_duration(v: f64) -> String {
    if !v.is_finite() {
        return go_g(v, 4);
    }
    if v == 0.0 {
        return "0s".into();
    }
    if v.abs() < 1.0 {
        let mut v = v;
        let mut prefix = "";
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
        return format!("{}{prefix}s", go_g(v, 4));
    }
    let sign = if v < 0.0 { "-" } else { "" };
    let v = v.abs();
    let secs = v.trunc() as u64;
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let ms = (v - v.trunc()) * 1000.0;
    if d != 0 {
        return format!("{sign}{d}d {h}h {m}m {s}s");
    }
    if h != 0 {
        return format!("{sign}{h}h {m}m {s}s");
    }
    if m != 0 {
        return format!("{sign}{m}m {s}s");
    }
    format!("{sign}{}s", go_g(s as f64 + ms.trunc() / 1000.0, 4))
}

/// Prometheus's `humanizeTimestamp`: seconds since the epoch as UTC `YYYY-MM-DD HH:MM:SS.fff +0000 UTC`.
pub fn humanize_timestamp(v: f64) -> String {
    if !v.is_finite() {
        return go_g(v, 4);
    }
    let t = crate::time::rfc3339((v * 1000.0).round() as i64);
    // `2023-11-14T22:13:20Z` -> `2023-11-14 22:13:20 +0000 UTC` (Go's time.Time String).
    format!(
        "{} +0000 UTC",
        t.replacen('T', " ", 1).trim_end_matches('Z')
    )
}

//! The conformance runner for Prometheus's `.test` script language (see
//! `shared/conformance/README.md`): `load`, `clear`, `eval instant`, `eval range`, the
//! `eval_fail` / `eval_ordered` / `eval_warn` / `eval_info` variants and `expect` lines.
//!
//! Every `eval` is one case: passed, failed, or unsupported (native histograms, which Tidemark
//! does not store). Annotations (`warn`/`info`) are not produced by Tidemark; such cases are
//! judged on their values alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::engine::Engine;
use super::{QueryValue, Series, Storage};
use crate::model::{stale_nan, Labels};
use crate::store::hot::index::Matcher;

/// An in-memory [`Storage`] for scripts and unit tests.
#[derive(Default)]
pub struct MemStorage {
    series: BTreeMap<Labels, Vec<(i64, f64)>>,
}

impl MemStorage {
    /// Adds samples to a series (kept sorted; a later sample at the same time replaces).
    pub fn add(&mut self, labels: Labels, samples: impl IntoIterator<Item = (i64, f64)>) {
        let s = self.series.entry(labels).or_default();
        for (t, v) in samples {
            match s.binary_search_by_key(&t, |p| p.0) {
                Ok(i) => s[i].1 = v,
                Err(i) => s.insert(i, (t, v)),
            }
        }
    }
    /// Removes everything.
    pub fn clear(&mut self) {
        self.series.clear();
    }
}

impl Storage for MemStorage {
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<Series> {
        self.series
            .iter()
            .filter(|(l, _)| {
                matchers
                    .iter()
                    .all(|m| m.matches(l.get(&m.name).unwrap_or("")))
            })
            .map(|(l, s)| {
                let lo = s.partition_point(|p| p.0 < start);
                let hi = s.partition_point(|p| p.0 <= end);
                Series {
                    labels: l.clone(),
                    samples: s[lo..hi.max(lo)].to_vec(),
                }
            })
            .filter(|s| !s.samples.is_empty())
            .collect()
    }
}

/// Outcome counts of one script.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub passed: usize,
    pub failed: usize,
    pub unsupported: usize,
    /// `line N: query: what differed`, for each failure.
    pub failures: Vec<String>,
}

pub use crate::time::parse_duration_ms;

fn parse_number(s: &str) -> Option<f64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i64::from_str_radix(hex, 16).ok()? as f64
    } else {
        match body.to_ascii_lowercase().as_str() {
            "inf" | "infinity" => f64::INFINITY,
            "nan" => f64::NAN,
            _ => body.parse().ok()?,
        }
    };
    Some(if neg { -v } else { v })
}

/// One point of a series description: a value, a stale marker, a gap, or a native histogram
/// (which Tidemark does not store: only where it is matters).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Point {
    Value(f64),
    Gap,
    Histogram,
}

/// The tokens of a points text: a native histogram `{{...}}` (with its `xN` or `+{{...}}xN`)
/// is one token though it holds spaces.
fn point_tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0i64;
    for tok in text.split_whitespace() {
        if depth > 0 || tok.starts_with("{{") {
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(tok);
            depth += tok.matches("{{").count() as i64 - tok.matches("}}").count() as i64;
            if depth <= 0 {
                out.push(std::mem::take(&mut cur));
                depth = 0;
            }
        } else {
            out.push(tok.to_string());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Expands `1 2+3x4 _ _x2 stale 5x3`. `Err(true)` means a native histogram (unsupported).
pub(crate) fn parse_points(text: &str) -> Result<Vec<Point>, bool> {
    let points = parse_points_mixed(text).map_err(|_| false)?;
    if points.contains(&Point::Histogram) {
        return Err(true);
    }
    Ok(points)
}

/// As [`parse_points`], keeping where native histograms are ([`Point::Histogram`]) instead of
/// refusing the line.
pub(crate) fn parse_points_mixed(text: &str) -> Result<Vec<Point>, ()> {
    let mut out = Vec::new();
    for tok in point_tokens(text) {
        let tok = tok.as_str();
        if tok.starts_with("{{") {
            // `{{...}}`, `{{...}}xN`, `{{...}}+{{...}}xN`: one histogram or N + 1.
            let tail = &tok[tok.rfind("}}").map_or(tok.len(), |p| p + 2)..];
            let n = tail
                .strip_prefix('x')
                .and_then(|n| n.parse::<usize>().ok())
                .map_or(1, |n| n + 1);
            out.extend(std::iter::repeat_n(Point::Histogram, n));
            continue;
        }
        if tok == "_" {
            out.push(Point::Gap);
            continue;
        }
        if tok == "stale" {
            out.push(Point::Value(stale_nan()));
            continue;
        }
        // a+bxN, a-bxN, axN, _xN; in series descriptions `x` always means repetition, so
        // `0x59` is 0 sixty times, not hex.
        let rep = tok
            .rfind('x')
            .filter(|&p| p + 1 < tok.len() && tok[p + 1..].bytes().all(|c| c.is_ascii_digit()));
        let Some(xpos) = rep else {
            out.push(Point::Value(parse_number(tok).ok_or(())?));
            continue;
        };
        let times: usize = tok[xpos + 1..].parse().map_err(|_| ())?;
        let head = &tok[..xpos];
        if head == "_" {
            out.extend(std::iter::repeat_n(Point::Gap, times));
            continue;
        }
        if head == "stale" {
            out.extend(std::iter::repeat_n(Point::Value(stale_nan()), times + 1));
            continue;
        }
        // Split at the last + or - that is not a leading sign nor an exponent sign.
        let bytes = head.as_bytes();
        let split = (1..bytes.len()).rev().find(|&i| {
            (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E')
        });
        match split {
            Some(i) => {
                let start = parse_number(&head[..i]).ok_or(())?;
                let inc = parse_number(&head[i..]).ok_or(())?;
                for k in 0..=times {
                    out.push(Point::Value(start + inc * k as f64));
                }
            }
            None => {
                let v = parse_number(head).ok_or(())?;
                out.extend(std::iter::repeat_n(Point::Value(v), times + 1));
            }
        }
    }
    Ok(out)
}

/// Parses `name{a="b", c="d"}` (either part optional) into labels.
pub(crate) fn parse_series_desc(desc: &str) -> Result<Labels, String> {
    let desc = desc.trim();
    let name_end = desc.find('{').unwrap_or(desc.len());
    let mut pairs: Vec<(String, String)> = Vec::new();
    let name = desc[..name_end].trim();
    if !name.is_empty() {
        pairs.push(("__name__".into(), name.to_string()));
    }
    if name_end < desc.len() {
        let body = desc[name_end + 1..]
            .trim_end()
            .strip_suffix('}')
            .ok_or_else(|| format!("missing '}}' in {desc}"))?;
        let mut chars = body.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
                chars.next();
            }
            if chars.peek().is_none() {
                break;
            }
            let mut key = String::new();
            while let Some(&c) = chars.peek() {
                if c == '=' || c.is_whitespace() {
                    break;
                }
                key.push(c);
                chars.next();
            }
            while chars.peek().is_some_and(|c| c.is_whitespace() || *c == '=') {
                chars.next();
            }
            let quote = chars
                .next()
                .ok_or_else(|| format!("missing value for {key} in {desc}"))?;
            if quote != '"' && quote != '\'' && quote != '`' {
                return Err(format!("label value for {key} must be quoted in {desc}"));
            }
            let mut val = String::new();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated value in {desc}")),
                    Some('\\') if quote != '`' => match chars.next() {
                        Some('n') => val.push('\n'),
                        Some('t') => val.push('\t'),
                        Some(c) => val.push(c),
                        None => return Err(format!("unterminated value in {desc}")),
                    },
                    Some(c) if c == quote => break,
                    Some(c) => val.push(c),
                }
            }
            pairs.push((key.trim().trim_matches('"').to_string(), val));
        }
    }
    Ok(Labels::from_pairs(pairs))
}

/// Splits `<series> <rest>` where the series may contain spaces inside braces or quotes.
fn split_series(line: &str) -> (&str, &str) {
    let mut depth = 0;
    let mut in_str = false;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '"' if prev != '\\' => in_str = !in_str,
            '{' if !in_str => depth += 1,
            '}' if !in_str => {
                depth -= 1;
                if depth == 0 {
                    return (&line[..=i], line[i + 1..].trim());
                }
            }
            c if c.is_whitespace() && depth == 0 && !in_str => {
                return (&line[..i], line[i..].trim())
            }
            _ => {}
        }
        prev = c;
    }
    (line, "")
}

/// Prometheus's `almost.Equal` with epsilon 1e-6; NaN equals NaN.
pub fn almost_equal(a: f64, b: f64) -> bool {
    const EPS: f64 = 1e-6;
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < EPS * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < EPS
}

/// How an `expect` line's message must match: exactly (`msg:`) or a regular expression found
/// in it (`regex:`, as Go's `MatchString`); `None` in [`Eval`]: any message.
enum Match {
    Msg(String),
    Regex(regex::Regex),
}

impl Match {
    fn matches(&self, text: &str) -> bool {
        match self {
            Match::Msg(m) => m == text,
            Match::Regex(r) => r.is_match(text),
        }
    }

    fn describe(&self) -> String {
        match self {
            Match::Msg(m) => format!("{m:?}"),
            Match::Regex(r) => format!("/{r}/"),
        }
    }

    /// `msg: text` or `regex: text` (quotes around the whole text are dropped); `Ok(None)`
    /// for nothing.
    fn parse(rest: &str) -> Result<Option<Match>, String> {
        let rest = rest.trim();
        if rest.is_empty() {
            return Ok(None);
        }
        let unquote = |t: &str| {
            let t = t.trim();
            match t.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
                Some(inner) => inner.to_string(),
                None => t.to_string(),
            }
        };
        if let Some(m) = rest.strip_prefix("msg:") {
            return Ok(Some(Match::Msg(unquote(m))));
        }
        if let Some(r) = rest.strip_prefix("regex:") {
            return regex::Regex::new(&unquote(r))
                .map(|r| Some(Match::Regex(r)))
                .map_err(|e| format!("bad regex in expect line: {e}"));
        }
        Err(format!("unknown expect matcher {rest:?} (msg: or regex:)"))
    }
}

struct Eval {
    line: usize,
    query: String,
    range: Option<(i64, i64, i64)>,
    at: i64,
    /// `expect fail` (`eval_fail`), with the message it must have.
    fail: Option<Option<Match>>,
    ordered: bool,
    expect_string: Option<String>,
    /// `expect range vector from <start> to <end> step <step>`: the times an instant query's
    /// range-vector result has its points at.
    range_vector: Option<(i64, i64, i64)>,
    /// `expect warn` / `expect info` lines (`None`: any message); `expect no_warn`/`no_info`.
    warn: Vec<Option<Match>>,
    info: Vec<Option<Match>>,
    no_warn: bool,
    no_info: bool,
    expected: Vec<(usize, String)>,
}

impl Eval {
    /// Reads one `expect` line (without `expect `).
    fn expect(&mut self, x: &str) -> Result<(), String> {
        let (kind, rest) = x.split_once(char::is_whitespace).unwrap_or((x, ""));
        match kind {
            "ordered" => self.ordered = true,
            "fail" => self.fail = Some(Match::parse(rest)?),
            "warn" => self.warn.push(Match::parse(rest)?),
            "info" => self.info.push(Match::parse(rest)?),
            "no_warn" => self.no_warn = true,
            "no_info" => self.no_info = true,
            "string" => {
                self.expect_string =
                    Some(rest.trim().trim_matches('"').trim_matches('`').to_string())
            }
            "range" => {
                let r = rest
                    .trim()
                    .strip_prefix("vector from ")
                    .and_then(|r| {
                        let (start, r) = r.split_once(" to ")?;
                        let (end, step) = r.trim().split_once(" step ")?;
                        Some((
                            parse_duration_ms(start.trim())?,
                            parse_duration_ms(end.trim())?,
                            parse_duration_ms(step.trim())?,
                        ))
                    })
                    .ok_or_else(|| format!("bad expect range vector line: {x}"))?;
                self.range_vector = Some(r);
            }
            _ => return Err(format!("unknown expect line: expect {x}")),
        }
        Ok(())
    }
}

/// Every vector selector of an expression.
fn selectors(
    e: &promql_parser::parser::Expr,
    out: &mut Vec<promql_parser::parser::VectorSelector>,
) {
    use promql_parser::parser::Expr;
    match e {
        Expr::Aggregate(a) => {
            selectors(&a.expr, out);
            if let Some(p) = &a.param {
                selectors(p, out);
            }
        }
        Expr::Unary(u) => selectors(&u.expr, out),
        Expr::Binary(b) => {
            selectors(&b.lhs, out);
            selectors(&b.rhs, out);
        }
        Expr::Paren(p) => selectors(&p.expr, out),
        Expr::Subquery(q) => selectors(&q.expr, out),
        Expr::VectorSelector(v) => out.push(v.clone()),
        Expr::MatrixSelector(m) => out.push(m.vs.clone()),
        Expr::Call(c) => c.args.args.iter().for_each(|a| selectors(a, out)),
        _ => {}
    }
}

/// How far before and after its evaluation times an expression may read samples (lookback,
/// ranges, subquery ranges, offsets), or `None` when an `@` pins it to another time.
fn reach(e: &promql_parser::parser::Expr) -> Option<(i64, i64)> {
    use promql_parser::parser::{Expr, Offset};
    let off = |o: &Option<Offset>| match o {
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
        None => 0,
    };
    let shift = |(b, f): (i64, i64), o: i64| (b + o.max(0), f + (-o).max(0));
    let max = |a: Option<(i64, i64)>, b: Option<(i64, i64)>| Some((a?.0.max(b?.0), a?.1.max(b?.1)));
    match e {
        Expr::VectorSelector(v) => {
            if v.at.is_some() {
                return None;
            }
            Some(shift(
                (super::engine::DEFAULT_LOOKBACK_MS, 0),
                off(&v.offset),
            ))
        }
        Expr::MatrixSelector(m) => {
            if m.vs.at.is_some() {
                return None;
            }
            Some(shift((m.range.as_millis() as i64, 0), off(&m.vs.offset)))
        }
        Expr::Subquery(q) => {
            if q.at.is_some() {
                return None;
            }
            let (b, f) = reach(&q.expr)?;
            Some(shift((b + q.range.as_millis() as i64, f), off(&q.offset)))
        }
        Expr::Aggregate(a) => match &a.param {
            Some(p) => max(reach(&a.expr), reach(p)),
            None => reach(&a.expr),
        },
        Expr::Unary(u) => reach(&u.expr),
        Expr::Binary(b) => max(reach(&b.lhs), reach(&b.rhs)),
        Expr::Paren(p) => reach(&p.expr),
        Expr::Call(c) => c
            .args
            .args
            .iter()
            .map(|a| reach(a))
            .try_fold((0, 0), |acc, r| max(Some(acc), r)),
        _ => Some((0, 0)),
    }
}

/// Series with native-histogram samples (which Tidemark does not store), and their times.
#[derive(Default)]
struct Histograms(Vec<(Labels, Vec<i64>)>);

impl Histograms {
    fn add(&mut self, labels: Labels, times: impl IntoIterator<Item = i64>) {
        match self.0.iter_mut().find(|(l, _)| *l == labels) {
            Some((_, t)) => t.extend(times),
            None => self.0.push((labels, times.into_iter().collect())),
        }
    }

    /// True when the query, evaluated over `[start, end]`, selects a series while it holds
    /// native-histogram samples: the case needs them (matchers and time decide, not the metric
    /// name alone).
    fn needed_by(&self, query: &str, start: i64, end: i64) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let Ok(expr) = promql_parser::parser::parse(query) else {
            return false;
        };
        let (lo, hi) = match reach(&expr) {
            Some((back, fwd)) => (start - back, end + fwd),
            None => (i64::MIN, i64::MAX),
        };
        let mut sels = Vec::new();
        selectors(&expr, &mut sels);
        sels.iter().any(|vs| {
            super::engine::selector_matchers(vs).iter().any(|ms| {
                self.0.iter().any(|(l, times)| {
                    ms.iter().all(|m| m.matches(l.get(&m.name).unwrap_or("")))
                        && times.iter().any(|&t| t > lo && t <= hi)
                })
            })
        })
    }
}

/// Runs one script; `name` is used in messages.
pub fn run_script(text: &str) -> Outcome {
    let mut out = Outcome::default();
    let mut store = MemStorage::default();
    let mut histograms = Histograms::default();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let raw = lines[i];
        let line = raw.trim();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Gather the indented block that follows (`expect` lines may also start at column 0).
        let mut block: Vec<(usize, String)> = Vec::new();
        while i < lines.len() {
            let l = lines[i];
            let indented = l.starts_with(' ') || l.starts_with('\t');
            let expect = line.starts_with("eval") && l.starts_with("expect ");
            if l.trim().is_empty() || !(indented || expect) {
                if l.trim().is_empty()
                    && i + 1 < lines.len()
                    && (lines[i + 1].starts_with(' ') || lines[i + 1].starts_with('\t'))
                    && !line.starts_with("eval")
                {
                    i += 1;
                    continue;
                }
                break;
            }
            if !l.trim().starts_with('#') {
                block.push((i + 1, l.trim().to_string()));
            }
            i += 1;
        }
        let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        match cmd {
            "clear" => {
                store.clear();
                histograms = Histograms::default();
            }
            "load" | "load_with_nhcb" => {
                let step = parse_duration_ms(rest.trim()).unwrap_or(60_000);
                for (ln, l) in &block {
                    let (desc, pts) = split_series(l);
                    let labels = match parse_series_desc(desc) {
                        Ok(l) => l,
                        Err(e) => {
                            out.failures
                                .push(format!("line {ln}: bad series {desc:?}: {e} (not loaded)"));
                            continue;
                        }
                    };
                    let points = match parse_points_mixed(pts) {
                        Ok(p) => p,
                        Err(()) => {
                            out.failures
                                .push(format!("line {ln}: bad points {pts:?} (not loaded)"));
                            continue;
                        }
                    };
                    let at = |k: usize| k as i64 * step;
                    let hist: Vec<i64> = (0..points.len())
                        .filter(|&k| points[k] == Point::Histogram)
                        .map(at)
                        .collect();
                    // load_with_nhcb also makes a native histogram (custom buckets) of every
                    // classic one: `x` beside `x_bucket{le=...}`.
                    if cmd == "load_with_nhcb" {
                        if let Some(base) =
                            labels.metric_name().and_then(|n| n.strip_suffix("_bucket"))
                        {
                            let mut b = labels.clone();
                            b.remove("le");
                            b.set(crate::model::METRIC_NAME, base);
                            let times: Vec<i64> = (0..points.len())
                                .filter(|&k| matches!(points[k], Point::Value(_)))
                                .map(at)
                                .collect();
                            histograms.add(b, times);
                        }
                    }
                    if !hist.is_empty() {
                        histograms.add(labels.clone(), hist);
                    }
                    store.add(
                        labels,
                        points.iter().enumerate().filter_map(|(k, p)| match p {
                            Point::Value(v) => Some((at(k), *v)),
                            Point::Gap | Point::Histogram => None,
                        }),
                    );
                }
            }
            c if c.starts_with("eval") => {
                let mut ev = Eval {
                    line: i,
                    query: String::new(),
                    range: None,
                    at: 0,
                    fail: (c == "eval_fail").then_some(None),
                    ordered: c == "eval_ordered",
                    expect_string: None,
                    range_vector: None,
                    warn: if c == "eval_warn" { vec![None] } else { vec![] },
                    info: if c == "eval_info" { vec![None] } else { vec![] },
                    no_warn: false,
                    no_info: false,
                    expected: Vec::new(),
                };
                let rest = rest.trim();
                let parsed = if let Some(r) = rest.strip_prefix("instant at ") {
                    r.split_once(char::is_whitespace).and_then(|(t, q)| {
                        ev.at = parse_duration_ms(t)?;
                        ev.query = q.trim().to_string();
                        Some(())
                    })
                } else if let Some(r) = rest.strip_prefix("range from ") {
                    (|| {
                        let (start, r) = r.split_once(" to ")?;
                        let (end, r) = r.trim().split_once(" step ")?;
                        let (step, q) = r.trim().split_once(char::is_whitespace)?;
                        ev.range = Some((
                            parse_duration_ms(start.trim())?,
                            parse_duration_ms(end.trim())?,
                            parse_duration_ms(step)?,
                        ));
                        ev.query = q.trim().to_string();
                        Some(())
                    })()
                } else {
                    None
                };
                let mut bad_expect = None;
                for (ln, l) in &block {
                    if let Some(x) = l.strip_prefix("expect ") {
                        if let Err(e) = ev.expect(x.trim()) {
                            bad_expect = Some(format!("line {ln}: {e}"));
                        }
                        continue;
                    }
                    ev.expected.push((*ln, l.clone()));
                }
                if parsed.is_none() || bad_expect.is_some() {
                    out.failed += 1;
                    out.failures.push(bad_expect.unwrap_or_else(|| {
                        format!("line {}: cannot parse eval command: {line}", ev.line)
                    }));
                    continue;
                }
                let (start, end) = ev.range.map_or((ev.at, ev.at), |r| (r.0, r.1));
                if histograms.needed_by(&ev.query, start, end)
                    || ev.expected.iter().any(|(_, l)| l.contains("{{"))
                {
                    out.unsupported += 1;
                    continue;
                }
                match check(&store, &ev) {
                    Ok(()) => out.passed += 1,
                    Err(msg) => {
                        out.failed += 1;
                        out.failures
                            .push(format!("line {}: {}: {}", ev.line, ev.query, msg));
                    }
                }
            }
            _ => {
                out.failures
                    .push(format!("line {}: unknown command {cmd:?} (ignored)", i));
            }
        }
    }
    out
}

fn fmt_points(p: &[(i64, f64)]) -> String {
    p.iter()
        .map(|(t, v)| format!("{v}@{}", *t as f64 / 1000.0))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks the annotations of one kind (`what`: "warn" or "info") against the case's `expect`
/// lines: each line matches a noted message, and when there is any line every message
/// matches one; `no_...` wants none.
fn check_notes(
    what: &str,
    expects: &[Option<Match>],
    none: bool,
    got: &[String],
) -> Result<(), String> {
    if none && !got.is_empty() {
        return Err(format!("expected no {what} annotations, got {got:?}"));
    }
    for e in expects {
        let hit = match e {
            None => !got.is_empty(),
            Some(m) => got.iter().any(|g| m.matches(g)),
        };
        if !hit {
            return Err(match e {
                None => format!("expected a {what} annotation, got none"),
                Some(m) => format!("expected a {what} annotation {}, got {got:?}", m.describe()),
            });
        }
    }
    if !expects.is_empty() {
        if let Some(g) = got.iter().find(|g| {
            !expects
                .iter()
                .any(|e| e.as_ref().is_none_or(|m| m.matches(g)))
        }) {
            return Err(format!("unexpected {what} annotation {g:?}"));
        }
    }
    Ok(())
}

fn check(store: &MemStorage, ev: &Eval) -> Result<(), String> {
    let (start, end, step, range) = match ev.range {
        Some((s, e, st)) => (s, e, st, true),
        None => (ev.at, ev.at, 1, false),
    };
    let notes = super::Annotations::default();
    // Prometheus runs its scripts with delayed name removal on (`name_label_dropping.test`
    // depends on it; the other scripts agree either way).
    let result = Engine::new(store, start, end, step).and_then(|e| {
        e.annotated(&notes)
            .with_delayed_name_removal(true)
            .query(&ev.query, range)
    });
    if let Some(want) = &ev.fail {
        return match result {
            Err(e) => match want {
                Some(m) if !m.matches(&e.to_string()) => Err(format!(
                    "expected error {}, got {:?}",
                    m.describe(),
                    e.to_string()
                )),
                _ => Ok(()),
            },
            Ok(_) => Err("expected an error, got a result".into()),
        };
    }
    let result = result.map_err(|e| format!("unexpected error: {e}"))?;
    let (warnings, infos) = notes.take();
    check_notes("warn", &ev.warn, ev.no_warn, &warnings)?;
    check_notes("info", &ev.info, ev.no_info, &infos)?;
    if let Some(s) = &ev.expect_string {
        return match result {
            QueryValue::String(_, got) if &got == s => Ok(()),
            other => Err(format!("expected string {s:?}, got {other:?}")),
        };
    }
    // Expected series -> points.
    let mut expected: Vec<(Option<Labels>, Vec<Point>)> = Vec::new();
    for (ln, l) in &ev.expected {
        if let Some(v) = parse_number(l) {
            expected.push((None, vec![Point::Value(v)]));
            continue;
        }
        let (desc, pts) = split_series(l);
        let labels =
            parse_series_desc(desc).map_err(|e| format!("line {ln}: bad expected series: {e}"))?;
        let pts = parse_points(pts).map_err(|_| format!("line {ln}: bad expected points"))?;
        expected.push((Some(labels), pts));
    }
    match result {
        QueryValue::Scalar(_, v) => match expected.as_slice() {
            [(None, p)] if matches!(p.as_slice(), [Point::Value(x)] if almost_equal(*x, v)) => {
                Ok(())
            }
            _ => Err(format!("expected {:?}, got scalar {v}", ev.expected)),
        },
        QueryValue::String(_, s) => Err(format!("got string {s:?}, expected {:?}", ev.expected)),
        QueryValue::Vector(got) => {
            if ev.range_vector.is_some() {
                return Err("expected a range vector, got an instant vector".into());
            }
            if got.len() != expected.len() {
                return Err(format!(
                    "expected {} samples, got {}: {}",
                    expected.len(),
                    got.len(),
                    got.iter()
                        .map(|(l, _, v)| format!("{l} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            for (k, (labels, _, v)) in got.iter().enumerate() {
                let found = if ev.ordered {
                    let (el, ep) = &expected[k];
                    el.as_ref() == Some(labels)
                        && matches!(ep.as_slice(), [Point::Value(x)] if almost_equal(*x, *v))
                } else {
                    expected.iter().any(|(el, ep)| {
                        el.as_ref() == Some(labels)
                            && matches!(ep.as_slice(), [Point::Value(x)] if almost_equal(*x, *v))
                    })
                };
                if !found {
                    let want = expected.iter().find(|(el, _)| el.as_ref() == Some(labels));
                    return Err(match want {
                        Some((_, p)) => format!("{labels}: expected {p:?}, got {v}"),
                        None => format!("unexpected series {labels} {v}"),
                    });
                }
            }
            Ok(())
        }
        QueryValue::Matrix(got) => {
            if got.len() != expected.len() {
                return Err(format!(
                    "expected {} series, got {}: {}",
                    expected.len(),
                    got.len(),
                    got.iter()
                        .map(|s| format!("{} [{}]", s.labels, fmt_points(&s.samples)))
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
            for s in &got {
                let Some((_, pts)) = expected
                    .iter()
                    .find(|(el, _)| el.as_ref() == Some(&s.labels))
                else {
                    return Err(format!(
                        "unexpected series {} [{}]",
                        s.labels,
                        fmt_points(&s.samples)
                    ));
                };
                // Range queries: expected points are per step; an instant query's range
                // vector: per step of its `expect range vector` line.
                let grid = match (range, ev.range_vector) {
                    (true, _) => (start, step),
                    (false, Some((from, _, by))) => (from, by),
                    (false, None) => {
                        return Err(
                            "an instant query's range vector needs an `expect range vector from <start> to <end> step <step>` line"
                                .into(),
                        )
                    }
                };
                let want: Vec<(i64, f64)> = pts
                    .iter()
                    .enumerate()
                    .filter_map(|(k, p)| match p {
                        Point::Value(v) => Some((grid.0 + k as i64 * grid.1, *v)),
                        Point::Gap | Point::Histogram => None,
                    })
                    .collect();
                let ok = want.len() == s.samples.len()
                    && want
                        .iter()
                        .zip(&s.samples)
                        .all(|(a, b)| a.0 == b.0 && almost_equal(a.1, b.1));
                if !ok {
                    return Err(format!(
                        "{}: expected [{}], got [{}]",
                        s.labels,
                        fmt_points(&want),
                        fmt_points(&s.samples)
                    ));
                }
            }
            Ok(())
        }
    }
}

/// Runs files and renders the report: per file and overall `N passed, N failed`.
pub fn run_files(
    paths: &[std::path::PathBuf],
    verbose: bool,
) -> std::io::Result<(String, Outcome)> {
    let mut report = String::new();
    let mut total = Outcome::default();
    for p in paths {
        let text = std::fs::read_to_string(p)?;
        let o = run_script(&text);
        let _ = writeln!(
            report,
            "{}: {} passed, {} failed, {} unsupported",
            p.display(),
            o.passed,
            o.failed,
            o.unsupported
        );
        if verbose {
            for f in &o.failures {
                let _ = writeln!(report, "  FAIL {f}");
            }
        }
        total.passed += o.passed;
        total.failed += o.failed;
        total.unsupported += o.unsupported;
    }
    let pct = if total.passed + total.failed > 0 {
        100.0 * total.passed as f64 / (total.passed + total.failed) as f64
    } else {
        0.0
    };
    let _ = writeln!(
        report,
        "total: {} passed, {} failed, {} unsupported ({pct:.1}% of float cases)",
        total.passed, total.failed, total.unsupported
    );
    Ok((report, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_points() {
        assert_eq!(
            parse_points("1 2+3x2 _ 5x1 -1-1x1 _x2 0x1").unwrap(),
            vec![
                Point::Value(1.0),
                Point::Value(2.0),
                Point::Value(5.0),
                Point::Value(8.0),
                Point::Gap,
                Point::Value(5.0),
                Point::Value(5.0),
                Point::Value(-1.0),
                Point::Value(-2.0),
                Point::Gap,
                Point::Gap,
                Point::Value(0.0),
                Point::Value(0.0)
            ]
        );
        assert_eq!(parse_duration_ms("1h30m"), Some(5_400_000));
    }

    #[test]
    fn extreme_times_and_durations_do_not_panic() {
        let mut store = MemStorage::default();
        store.add(
            Labels::from_pairs([("__name__", "m")]),
            [(0, 1.0), (1000, 2.0)],
        );
        let max = crate::model::MAX_ABS_TS;
        for q in [
            "rate(m[100000y] offset -100000y)",
            "m @ 1e300",
            "max_over_time(m[5m:1ms] offset 1000000y)",
            "sum_over_time(m[100000y:100000y])",
            "predict_linear(m[100000y], 1e308)",
            "topk(1e300, m)",
            "m offset 100000y + m offset -100000y",
        ] {
            for (s, e, step) in [
                (0, 0, 1),
                (-max, max, max / 5),
                (max, max, 1),
                (-max, -max, 1),
            ] {
                let _ = Engine::new(&store, s, e, step).and_then(|en| en.query(q, s != e));
            }
        }
    }

    /// The runner is strict: each check below must fail a case that breaks it.
    #[test]
    fn strict_checks_fail_cases_that_break_them() {
        let load = "load 1m\n  m{a=\"1\"} 1 2 3\n  m{a=\"h\"} {{schema:0 sum:1 count:1}}x2\n  n{a=\"1\"} 1 {{schema:0 sum:1 count:1}} 3\n\n";
        let run = |case: &str| {
            let o = run_script(&format!("{load}{case}\n"));
            (o.passed, o.failed, o.unsupported)
        };
        // Only a case that selects histogram samples is unsupported, not every case of the name.
        assert_eq!(
            run("eval instant at 2m m{a=\"1\"}\n  m{a=\"1\"} 3"),
            (1, 0, 0)
        );
        assert_eq!(run("eval instant at 2m m\n  m{a=\"1\"} 3"), (0, 0, 1));
        // ... and only while it reads them: n's histogram is at 1m, out of the lookback
        // window (1m, 6m] of 6m.
        assert_eq!(run("eval instant at 6m n\n  n{a=\"1\"} 3"), (1, 0, 0));
        assert_eq!(run("eval instant at 2m n\n  n{a=\"1\"} 3"), (0, 0, 1));
        // Annotations: an expected warning that is not there fails; no_warn holds.
        assert_eq!(
            run("eval instant at 2m m{a=\"1\"}\n  expect warn\n  m{a=\"1\"} 3"),
            (0, 1, 0)
        );
        assert_eq!(
            run(
                "eval instant at 2m m{a=\"1\"}\n  expect no_warn\n  expect no_info\n  m{a=\"1\"} 3"
            ),
            (1, 0, 0)
        );
        // An instant range vector's times are compared (the second has the wrong step).
        assert_eq!(run("eval instant at 2m m{a=\"1\"}[2m]\n  expect range vector from 1m to 2m step 1m\n  m{a=\"1\"} 2 3"), (1, 0, 0));
        assert_eq!(run("eval instant at 2m m{a=\"1\"}[2m]\n  expect range vector from 1m to 2m step 30s\n  m{a=\"1\"} 2 3"), (0, 1, 0));
        assert_eq!(
            run("eval instant at 2m m{a=\"1\"}[2m]\n  m{a=\"1\"} 2 3"),
            (0, 1, 0)
        );
        // Error messages: exact, or a regex found in it.
        let fail = "eval instant at 2m ceil(m{a=\"1\"})";
        assert_eq!(
            run(&format!("{fail}\n  expect fail")),
            (0, 1, 0),
            "no error at all"
        );
        let dup = "eval instant at 0m ceil({__name__=~\"m|n\", a=\"1\"})";
        assert_eq!(
            run(&format!(
                "{dup}\n  expect fail msg: vector cannot contain metrics with the same labelset"
            )),
            (1, 0, 0)
        );
        assert_eq!(
            run(&format!("{dup}\n  expect fail msg: something else")),
            (0, 1, 0)
        );
        assert_eq!(
            run(&format!("{dup}\n  expect fail regex: same label(set|s)")),
            (1, 0, 0)
        );
    }

    #[test]
    fn small_script() {
        let script = "load 5m\n\thttp{job=\"a\"} 0+10x10\n\thttp{job=\"b\"} 0+20x10\n\neval instant at 50m sum(http)\n\t{} 300\n\neval instant at 50m rate(http[10m])\n\t{job=\"a\"} 0.03333333333\n\t{job=\"b\"} 0.06666666666\n\neval range from 0 to 10m step 5m http{job=\"a\"}\n\thttp{job=\"a\"} 0 10 20\n\neval_fail instant at 0m sum(\n";
        let o = run_script(script);
        assert_eq!((o.passed, o.failed), (4, 0), "{:?}", o.failures);
    }
}

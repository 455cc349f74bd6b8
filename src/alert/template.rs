//! The Go `text/template` subset Prometheus rule annotations and labels use:
//! `{{ $labels.instance }}`, `{{ $value | humanize }}`, `{{ printf "%.1f" $value }}`,
//! `{{ if gt $value 90.0 }}...{{ else }}...{{ end }}`, `{{ with }}`, `{{ range $k, $v := $labels }}`,
//! variables, pipelines, trim markers (`{{-`, `-}}`) and comments; `{{ define }}`,
//! `{{ template }}` and `{{ block }}` for named templates; structured data (lists, records,
//! times with `.Format`) for Alertmanager-style notification templates
//! ([`crate::alert::notify::templates`]).
//!
//! As in Prometheus, every template starts with
//! `{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}`,
//! a missing label is the empty string (`missingkey=zero`), and `{{ $value }}` prints like
//! Go's `%v` (`95.5`, `1e+06`). Functions: `humanize`, `humanize1024`, `humanizeDuration`,
//! `humanizePercentage`, `humanizeTimestamp`, `toUpper`, `toLower`, `title`, `printf`,
//! `print`, `reReplaceAll`, `match`, `stripPort`, `stripDomain`, `index`, `len`, `eq`, `ne`,
//! `lt`, `le`, `gt`, `ge`, `and`, `or`, `not`, `urlquery`, `safeHtml`, `toTime`,
//! `parseDuration`, and `query` (an instant PromQL query at the alert's evaluation time; its
//! samples have `.Labels` and `.Value`) with `first`, `label`, `value`, `strvalue` and
//! `sortByLabel`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// A template that failed to parse or expand.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError(msg.into()))
}

/// What a template sees.
#[derive(Clone, Debug, Default)]
pub struct TemplateData {
    pub labels: BTreeMap<String, String>,
    pub external_labels: BTreeMap<String, String>,
    pub external_url: String,
    pub value: f64,
}

#[derive(Clone, Debug, PartialEq)]
enum Val {
    Nil,
    Bool(bool),
    Num(f64),
    Int(i64),
    Str(String),
    Map(BTreeMap<String, String>),
    /// A slice (`.Alerts`, `.Labels.SortedPairs`, `.Names`).
    List(Vec<Val>),
    /// A struct: its Go type name and fields (the notification data, an alert, a pair).
    Obj(&'static str, BTreeMap<&'static str, Val>),
    /// A `time.Time` in UTC, ms since the epoch ([`ZERO_TIME_MS`] is Go's zero time).
    Time(i64),
}

/// Go's zero `time.Time`, `0001-01-01 00:00:00 +0000 UTC`, in ms since the epoch (the
/// `EndsAt` of a firing alert).
pub const ZERO_TIME_MS: i64 = -62_135_596_800_000;

impl Val {
    fn truthy(&self) -> bool {
        match self {
            Val::Nil => false,
            Val::Bool(b) => *b,
            Val::Num(f) => *f != 0.0,
            Val::Int(i) => *i != 0,
            Val::Str(s) => !s.is_empty(),
            Val::Map(m) => !m.is_empty(),
            Val::List(l) => !l.is_empty(),
            Val::Obj(..) | Val::Time(_) => true,
        }
    }

    /// Go's `%v`.
    fn print(&self, out: &mut String) {
        match self {
            Val::Nil => out.push_str("<no value>"),
            Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Val::Num(f) => out.push_str(&go_float(*f)),
            Val::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Val::Str(s) => out.push_str(s),
            Val::Map(m) => {
                out.push_str("map[");
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    let _ = write!(out, "{k}:{v}");
                }
                out.push(']');
            }
            Val::List(l) => {
                out.push('[');
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    v.print(out);
                }
                out.push(']');
            }
            Val::Time(ms) => out.push_str(&go_time(*ms, GO_TIME_STRING)),
            Val::Obj(_, m) => {
                out.push('{');
                for (i, v) in m.values().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    v.print(out);
                }
                out.push('}');
            }
        }
    }

    fn to_f64(&self, f: &str) -> Result<f64, TemplateError> {
        match self {
            Val::Num(x) => Ok(*x),
            Val::Int(i) => Ok(*i as f64),
            Val::Str(s) => s
                .trim()
                .parse::<f64>()
                .or_else(|_| err(format!("{f}: cannot convert {s:?} to a number"))),
            Val::Time(ms) => Ok(*ms as f64 / 1000.0),
            Val::Bool(_) | Val::Nil | Val::Map(_) | Val::List(_) | Val::Obj(..) => {
                err(format!("{f}: expected a number"))
            }
        }
    }

    fn to_str(&self) -> String {
        let mut s = String::new();
        self.print(&mut s);
        s
    }
}

/// Shortest decimal digits and exponent of a finite, non-zero `|v|`: `(digits, exp)` with
/// `v = 0.d1d2... * 10^(exp+1)`.
fn shortest_digits(v: f64) -> (String, i32) {
    let s = format!("{:e}", v.abs());
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    (digits, exp.parse().unwrap_or(0))
}

fn exp_suffix(exp: i32) -> String {
    format!("e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
}

/// Go's `strconv.FormatFloat(v, 'g', -1, 64)`, which `%v` uses: the shortest digits that
/// round-trip, in exponent form below 1e-4 and from 1e6 up (Go decides with precision 6 when
/// the precision is the shortest).
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let (digits, exp) = shortest_digits(v);
    let sign = if v < 0.0 { "-" } else { "" };
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        return format!("{sign}{first}{dot}{rest}{}", exp_suffix(exp));
    }
    format!("{sign}{}", plain(&digits, exp))
}

/// Digits `d1d2...` with the decimal point after `exp + 1` of them.
fn plain(digits: &str, exp: i32) -> String {
    let point = exp + 1;
    if point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}", "0".repeat(point as usize - digits.len()))
    } else {
        format!(
            "{}.{}",
            &digits[..point as usize],
            &digits[point as usize..]
        )
    }
}

/// Go's `%.<prec>g` (precision 0 counts as 1): exponent form when the exponent is below -4
/// or at least the precision; trailing zeros removed.
pub fn go_g(v: f64, prec: usize) -> String {
    if !v.is_finite() {
        return go_float(v);
    }
    let prec = prec.max(1);
    if v == 0.0 {
        return "0".into();
    }
    let s = format!("{:.*e}", prec - 1, v.abs());
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    let sign = if v < 0.0 { "-" } else { "" };
    if exp < -4 || exp >= prec as i32 {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        return format!("{sign}{first}{dot}{rest}{}", exp_suffix(exp));
    }
    format!("{sign}{}", plain(&digits, exp))
}

/// Go's `%.<prec>e`.
fn go_e(v: f64, prec: usize) -> String {
    if !v.is_finite() {
        return go_float(v);
    }
    let s = format!("{:.*e}", prec, v);
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    format!("{mant}{}", exp_suffix(exp.parse().unwrap_or(0)))
}

#[derive(Clone, Debug)]
enum Arg {
    Nil,
    Bool(bool),
    Num(f64),
    Int(i64),
    Str(String),
    /// `$name.field...` (`$` alone is the root data).
    Var(String, Vec<String>),
    /// `.Field.field...`; empty is the dot itself.
    Field(Vec<String>),
    Func(String),
    Pipe(Box<Pipeline>),
    /// `(pipeline).field...`.
    Chain(Box<Arg>, Vec<String>),
}

#[derive(Clone, Debug)]
struct Pipeline {
    /// `$x := ...` / `$k, $v := ...`.
    decl: Vec<String>,
    assign: bool,
    cmds: Vec<Vec<Arg>>,
}

#[derive(Clone, Debug)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Vec<(Pipeline, Vec<Node>)>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    /// `{{ template "name" pipeline }}` (and the call half of `{{ block }}`).
    Call(String, Option<Pipeline>),
}

/// Named templates (`{{ define "name" }}...{{ end }}`), shared by the templates that call them.
#[derive(Clone, Debug, Default)]
pub struct Defs {
    map: BTreeMap<String, Arc<Vec<Node>>>,
}

impl Defs {
    /// Adds `other`'s templates; on a name in both, `other`'s wins.
    pub fn merge(&mut self, other: Defs) {
        self.map.extend(other.map);
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }
}

/// A parsed template.
#[derive(Clone, Debug)]
pub struct Template {
    nodes: Vec<Node>,
    defs: Arc<Defs>,
}

const FUNCS: &[&str] = &[
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "toUpper",
    "toLower",
    "title",
    "printf",
    "print",
    "reReplaceAll",
    "match",
    "stripPort",
    "stripDomain",
    "index",
    "len",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "and",
    "or",
    "not",
    "urlquery",
    "safeHtml",
    "toTime",
    "parseDuration",
    "query",
    "first",
    "label",
    "value",
    "strvalue",
    "sortByLabel",
    "join",
    "trimSpace",
    "stringSlice",
    "safeUrl",
];

/// Tokens inside `{{ }}`.
#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Var(String, Vec<String>),
    Field(Vec<String>),
    /// `.a.b` right after `)`: fields of the parenthesized value.
    Chain(Vec<String>),
    Str(String),
    Num(String),
    Pipe,
    Open,
    Close,
    Declare,
    Assign,
    Comma,
}

fn lex_action(src: &str) -> Result<Vec<Tok>, TemplateError> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let fields = |i: &mut usize| -> Vec<String> {
        let mut f = Vec::new();
        while *i < b.len() && b[*i] == b'.' {
            let s = *i + 1;
            let mut e = s;
            while e < b.len() && (b[e].is_ascii_alphanumeric() || b[e] == b'_') {
                e += 1;
            }
            if e == s {
                break;
            }
            f.push(src[s..e].to_string());
            *i = e;
        }
        f
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'|' | b'(' | b')' | b',' | b'=' => {
                out.push(match c {
                    b'|' => Tok::Pipe,
                    b'(' => Tok::Open,
                    b')' => Tok::Close,
                    b',' => Tok::Comma,
                    _ => Tok::Assign,
                });
                i += 1
            }
            b':' if b.get(i + 1) == Some(&b'=') => {
                out.push(Tok::Declare);
                i += 2
            }
            b'"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    let Some(&c) = b.get(i) else {
                        return err("unterminated quoted string");
                    };
                    match c {
                        b'"' => {
                            i += 1;
                            break;
                        }
                        b'\\' => {
                            let Some(&n) = b.get(i + 1) else {
                                return err("unterminated quoted string");
                            };
                            s.push(match n {
                                b'n' => '\n',
                                b't' => '\t',
                                b'r' => '\r',
                                b'\\' => '\\',
                                b'"' => '"',
                                _ => return err(format!("unknown escape \\{}", n as char)),
                            });
                            i += 2;
                        }
                        _ => {
                            let ch = src[i..].chars().next().unwrap_or('?');
                            s.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                out.push(Tok::Str(s));
            }
            b'`' => {
                let Some(end) = src[i + 1..].find('`') else {
                    return err("unterminated raw string");
                };
                out.push(Tok::Str(src[i + 1..i + 1 + end].to_string()));
                i += end + 2;
            }
            b'$' => {
                let s = i + 1;
                let mut e = s;
                while e < b.len() && (b[e].is_ascii_alphanumeric() || b[e] == b'_') {
                    e += 1;
                }
                let name = src[s..e].to_string();
                i = e;
                let f = fields(&mut i);
                out.push(Tok::Var(name, f));
            }
            b'.' => {
                if b.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
                    let s = i;
                    i += 1;
                    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                        i += 1;
                    }
                    out.push(Tok::Num(src[s..i].to_string()));
                    continue;
                }
                let chained = i > 0 && b[i - 1] == b')';
                let f = fields(&mut i);
                if f.is_empty() {
                    i += 1;
                }
                out.push(if chained && !f.is_empty() {
                    Tok::Chain(f)
                } else {
                    Tok::Field(f)
                });
            }
            b'-' | b'+' | b'0'..=b'9' => {
                let s = i;
                i += 1;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'.'
                        || ((b[i] == b'-' || b[i] == b'+') && matches!(b[i - 1], b'e' | b'E')))
                {
                    i += 1;
                }
                out.push(Tok::Num(src[s..i].to_string()));
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let s = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push(Tok::Ident(src[s..i].to_string()));
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return err(format!("unexpected {ch:?} in action"));
            }
        }
    }
    Ok(out)
}

struct PipeParser<'t> {
    toks: &'t [Tok],
    pos: usize,
}

impl PipeParser<'_> {
    fn pipeline(&mut self, allow_decl: bool) -> Result<Pipeline, TemplateError> {
        let mut decl = Vec::new();
        let mut assign = false;
        if allow_decl {
            // `$x :=`, `$x =`, `$k, $v :=`
            let mut j = self.pos;
            let mut names = Vec::new();
            while let Some(Tok::Var(n, f)) = self.toks.get(j) {
                if !f.is_empty() {
                    break;
                }
                names.push(n.clone());
                j += 1;
                if self.toks.get(j) == Some(&Tok::Comma) {
                    j += 1;
                } else {
                    break;
                }
            }
            match self.toks.get(j) {
                Some(Tok::Declare) if !names.is_empty() => {
                    decl = names;
                    self.pos = j + 1;
                }
                Some(Tok::Assign) if names.len() == 1 => {
                    decl = names;
                    assign = true;
                    self.pos = j + 1;
                }
                _ => {}
            }
        }
        let mut cmds = Vec::new();
        loop {
            let mut args = Vec::new();
            while let Some(t) = self.toks.get(self.pos) {
                let a = match t {
                    Tok::Pipe | Tok::Close => break,
                    Tok::Open => {
                        self.pos += 1;
                        let p = self.pipeline(false)?;
                        if self.toks.get(self.pos) != Some(&Tok::Close) {
                            return err("unclosed left paren");
                        }
                        if let Some(Tok::Chain(f)) = self.toks.get(self.pos + 1) {
                            self.pos += 1;
                            Arg::Chain(Box::new(Arg::Pipe(Box::new(p))), f.clone())
                        } else {
                            Arg::Pipe(Box::new(p))
                        }
                    }
                    Tok::Ident(n) => match n.as_str() {
                        "true" => Arg::Bool(true),
                        "false" => Arg::Bool(false),
                        "nil" => Arg::Nil,
                        f if FUNCS.contains(&f) => Arg::Func(f.to_string()),
                        f => return err(format!("function {f:?} not defined")),
                    },
                    Tok::Var(n, f) => Arg::Var(n.clone(), f.clone()),
                    Tok::Field(f) => Arg::Field(f.clone()),
                    Tok::Str(s) => Arg::Str(s.clone()),
                    Tok::Num(s) => parse_num(s)?,
                    Tok::Chain(f) => {
                        return err(format!(
                            "unexpected .{} (fields follow a value in parentheses)",
                            f.join(".")
                        ))
                    }
                    Tok::Declare | Tok::Assign | Tok::Comma => {
                        return err("unexpected declaration in the middle of a command")
                    }
                };
                args.push(a);
                self.pos += 1;
            }
            if args.is_empty() {
                return err("missing value for command");
            }
            cmds.push(args);
            if self.toks.get(self.pos) == Some(&Tok::Pipe) {
                self.pos += 1;
                continue;
            }
            break;
        }
        Ok(Pipeline { decl, assign, cmds })
    }
}

fn parse_num(s: &str) -> Result<Arg, TemplateError> {
    if let Ok(i) = s.parse::<i64>() {
        return Ok(Arg::Int(i));
    }
    s.parse::<f64>()
        .map(Arg::Num)
        .or_else(|_| err(format!("bad number syntax: {s:?}")))
}

fn parse_pipeline(src: &str) -> Result<Pipeline, TemplateError> {
    let toks = lex_action(src)?;
    let mut p = PipeParser {
        toks: &toks,
        pos: 0,
    };
    let pipe = p.pipeline(true)?;
    if p.pos != toks.len() {
        return err(format!("unexpected {:?} in command", toks[p.pos]));
    }
    Ok(pipe)
}

/// One `{{ }}` (with its line) or run of text.
enum Piece {
    Text(String),
    Action(String, usize),
}

fn split(src: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = src;
    let mut line = 1;
    while let Some(open) = rest.find("{{") {
        let mut text = rest[..open].to_string();
        let mut inner = &rest[open + 2..];
        if inner.starts_with("- ") || inner.starts_with("-\t") || inner.starts_with("-\n") {
            text.truncate(text.trim_end().len());
            inner = &inner[1..];
        }
        line += rest[..open].matches('\n').count();
        let close = if inner.trim_start().starts_with("/*") {
            inner
                .find("*/")
                .and_then(|c| inner[c..].find("}}").map(|d| c + d))
        } else {
            find_close(inner)
        };
        let Some(close) = close else {
            return err(format!("line {line}: unclosed action"));
        };
        let mut body = &inner[..close];
        let mut after = &inner[close + 2..];
        if body.ends_with(" -") || body.ends_with("\t-") || body.ends_with("\n-") {
            body = &body[..body.len() - 1];
            after = after.trim_start();
        }
        if !text.is_empty() {
            out.push(Piece::Text(text));
        }
        let body = body.trim();
        if !(body.starts_with("/*") && body.ends_with("*/")) {
            out.push(Piece::Action(body.to_string(), line));
        }
        line += inner[..close].matches('\n').count();
        rest = after;
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_string()));
    }
    Ok(out)
}

/// The `}}` closing an action, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b[i + 1] == b'}' => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn keyword(action: &str) -> (&str, &str) {
    let word_end = action
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(action.len());
    let (w, rest) = action.split_at(word_end);
    match w {
        "if" | "else" | "end" | "with" | "range" | "define" | "template" | "block" | "break"
        | "continue" => (w, rest.trim()),
        _ => ("", action),
    }
}

/// The name of `{{ define "x" }}`, `{{ template "x" ... }}`, `{{ block "x" ... }}` and what
/// follows it.
fn template_name<'a>(kw: &str, rest: &'a str) -> Result<(String, &'a str), TemplateError> {
    let toks = lex_action(rest)?;
    let Some(Tok::Str(name)) = toks.first() else {
        return err(format!("{{{{{kw}}}}} needs a quoted template name"));
    };
    // The name is the first token: find where it ends in `rest`.
    let q = rest.trim_start();
    let close = q[1..]
        .find(if q.starts_with('`') { '`' } else { '"' })
        .map_or(q.len(), |i| i + 2);
    Ok((name.clone(), q[close..].trim()))
}

fn unclosed(kw: &str) -> TemplateError {
    TemplateError(format!("unexpected EOF: {{{{{kw}}}}} has no {{{{end}}}}"))
}

struct NodeParser {
    pieces: std::iter::Peekable<std::vec::IntoIter<Piece>>,
    defs: Defs,
}

impl NodeParser {
    /// Nodes up to the `{{end}}`/`{{else}}` closing `depth` (returned with its line), or to
    /// the end of the input at depth 0.
    fn nodes(&mut self, depth: usize) -> Result<(Vec<Node>, Option<String>), TemplateError> {
        let mut nodes = Vec::new();
        while let Some(p) = self.pieces.next() {
            match p {
                Piece::Text(t) => nodes.push(Node::Text(t)),
                Piece::Action(a, line) => {
                    let at = |e: TemplateError| TemplateError(format!("line {line}: {}", e.0));
                    let (kw, rest) = keyword(&a);
                    match kw {
                        "" => nodes.push(Node::Action(parse_pipeline(rest).map_err(at)?)),
                        "end" | "else" => {
                            if depth == 0 {
                                return Err(at(TemplateError(format!("unexpected {{{{{kw}}}}}"))));
                            }
                            return Ok((nodes, Some(a)));
                        }
                        "if" => {
                            let mut arms = vec![];
                            let mut cond = parse_pipeline(rest).map_err(at)?;
                            let mut otherwise = Vec::new();
                            loop {
                                let (body, stop) = self.nodes(depth + 1)?;
                                arms.push((cond, body));
                                let Some(stop) = stop else {
                                    return Err(at(unclosed(kw)));
                                };
                                let (k, r) = keyword(&stop);
                                if k == "end" {
                                    break;
                                }
                                if k == "else" && r.starts_with("if") {
                                    cond = parse_pipeline(&r[2..]).map_err(at)?;
                                    continue;
                                }
                                let (body, stop) = self.nodes(depth + 1)?;
                                let Some(stop) = stop else {
                                    return Err(at(unclosed(kw)));
                                };
                                if keyword(&stop).0 != "end" {
                                    return Err(at(TemplateError(
                                        "expected {{end}} after {{else}}".into(),
                                    )));
                                }
                                otherwise = body;
                                break;
                            }
                            nodes.push(Node::If(arms, otherwise));
                        }
                        "with" | "range" => {
                            let pipe = parse_pipeline(rest).map_err(at)?;
                            let (body, stop) = self.nodes(depth + 1)?;
                            let Some(stop) = stop else {
                                return Err(at(unclosed(kw)));
                            };
                            let mut otherwise = Vec::new();
                            if keyword(&stop).0 == "else" {
                                let (b, s) = self.nodes(depth + 1)?;
                                let Some(s) = s else {
                                    return Err(at(unclosed(kw)));
                                };
                                if keyword(&s).0 != "end" {
                                    return Err(at(TemplateError(format!(
                                        "expected {{{{end}}}} after {{{{{kw}}}}}"
                                    ))));
                                }
                                otherwise = b;
                            } else if keyword(&stop).0 != "end" {
                                return Err(at(TemplateError(format!("unclosed {{{{{kw}}}}}"))));
                            }
                            nodes.push(if kw == "with" {
                                Node::With(pipe, body, otherwise)
                            } else {
                                Node::Range(pipe, body, otherwise)
                            });
                        }
                        "define" | "block" => {
                            if kw == "define" && depth > 0 {
                                return Err(at(TemplateError(
                                    "{{define}} is only allowed at the top level".into(),
                                )));
                            }
                            let (name, rest) = template_name(kw, rest).map_err(at)?;
                            let pipe = if kw == "block" {
                                Some(parse_pipeline(rest).map_err(at)?)
                            } else if !rest.is_empty() {
                                return Err(at(TemplateError(format!(
                                    "unexpected {rest:?} after the name in {{{{define}}}}"
                                ))));
                            } else {
                                None
                            };
                            let (body, stop) = self.nodes(depth + 1)?;
                            if keyword(stop.as_deref().unwrap_or("")).0 != "end" {
                                return Err(at(TemplateError(format!(
                                    "{{{{{kw} {name:?}}}}} has no {{{{end}}}}"
                                ))));
                            }
                            self.defs.map.insert(name.clone(), Arc::new(body));
                            if kw == "block" {
                                nodes.push(Node::Call(name, pipe));
                            }
                        }
                        "template" => {
                            let (name, rest) = template_name(kw, rest).map_err(at)?;
                            let pipe = if rest.is_empty() {
                                None
                            } else {
                                Some(parse_pipeline(rest).map_err(at)?)
                            };
                            nodes.push(Node::Call(name, pipe));
                        }
                        k => {
                            return Err(at(TemplateError(format!("{{{{{k}}}}} is not supported"))))
                        }
                    }
                }
            }
        }
        // At depth > 0 the caller reports the unclosed action with its line.
        Ok((nodes, None))
    }
}

impl Template {
    /// Parses `src`; the error says what is wrong where.
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        Template::parse_with(src, &Defs::default())
    }

    /// Parses `src` with the named templates of `base` in scope (its own `define`s win).
    pub fn parse_with(src: &str, base: &Defs) -> Result<Template, TemplateError> {
        let (nodes, own) = parse_all(src)?;
        let defs = if own.is_empty() {
            base.clone()
        } else {
            let mut d = base.clone();
            d.merge(own);
            d
        };
        Ok(Template {
            nodes,
            defs: Arc::new(defs),
        })
    }

    /// True when the template is plain text.
    pub fn is_static(&self) -> bool {
        self.nodes.iter().all(|n| matches!(n, Node::Text(_)))
    }

    /// Expands the template for one alert (without `query`).
    pub fn expand(&self, data: &TemplateData) -> Result<String, TemplateError> {
        self.expand_with(data, None)
    }

    /// Expands the template for one alert; `query` answers the template's `query` calls.
    pub fn expand_with(
        &self,
        data: &TemplateData,
        query: Option<QueryFn<'_>>,
    ) -> Result<String, TemplateError> {
        let root = Val::Obj(
            "alert data",
            [
                ("Labels", Val::Map(data.labels.clone())),
                ("ExternalLabels", Val::Map(data.external_labels.clone())),
                ("ExternalURL", Val::Str(data.external_url.clone())),
                ("Value", Val::Num(data.value)),
            ]
            .into(),
        );
        let vars = vec![
            ("labels".into(), Val::Map(data.labels.clone())),
            (
                "externalLabels".into(),
                Val::Map(data.external_labels.clone()),
            ),
            ("externalURL".into(), Val::Str(data.external_url.clone())),
            ("value".into(), Val::Num(data.value)),
        ];
        self.run(root, vars, query)
    }

    /// Expands the template with `data` as the dot (notification templates).
    pub fn expand_value(&self, data: &Value) -> Result<String, TemplateError> {
        self.run(data.0.clone(), Vec::new(), None)
    }

    fn run(
        &self,
        root: Val,
        vars: Vec<(String, Val)>,
        query: Option<QueryFn<'_>>,
    ) -> Result<String, TemplateError> {
        let mut ctx = Ctx {
            root: root.clone(),
            defs: &self.defs,
            vars,
            steps: 0,
            depth: 0,
            query,
        };
        let mut out = String::new();
        ctx.run(&self.nodes, &root, &mut out)?;
        Ok(out)
    }
}

/// Parses a template file of `{{ define }}`s (Alertmanager's `templates:`); text outside the
/// definitions is ignored, as Alertmanager does.
pub fn parse_defs(src: &str) -> Result<Defs, TemplateError> {
    Ok(parse_all(src)?.1)
}

fn parse_all(src: &str) -> Result<(Vec<Node>, Defs), TemplateError> {
    let pieces = split(src)?;
    let mut p = NodeParser {
        pieces: pieces.into_iter().peekable(),
        defs: Defs::default(),
    };
    let (nodes, _) = p.nodes(0)?;
    Ok((nodes, p.defs))
}

/// Expands `src` once (parse and expand).
pub fn expand(src: &str, data: &TemplateData) -> Result<String, TemplateError> {
    Template::parse(src)?.expand(data)
}

/// Structured data a notification template sees as its dot.
#[derive(Clone, Debug)]
pub struct Value(Val);

impl Value {
    pub fn str(s: impl Into<String>) -> Value {
        Value(Val::Str(s.into()))
    }

    pub fn int(i: i64) -> Value {
        Value(Val::Int(i))
    }

    /// A `map[string]string` (labels, annotations): fields are keys, with the methods
    /// `SortedPairs`, `Names`, `Values` and `Remove`.
    pub fn map(m: BTreeMap<String, String>) -> Value {
        Value(Val::Map(m))
    }

    /// A `time.Time` (ms since the epoch; [`ZERO_TIME_MS`] for Go's zero time).
    pub fn time(ms: i64) -> Value {
        Value(Val::Time(ms))
    }

    pub fn list(items: Vec<Value>) -> Value {
        Value(Val::List(items.into_iter().map(|v| v.0).collect()))
    }

    /// A struct named `type_name` with `fields`.
    pub fn record(type_name: &'static str, fields: Vec<(&'static str, Value)>) -> Value {
        Value(Val::Obj(
            type_name,
            fields.into_iter().map(|(k, v)| (k, v.0)).collect(),
        ))
    }
}

const MAX_TEMPLATE_DEPTH: usize = 64;

/// A `query` answer: the instant vector's samples (labels, value).
pub type QueryResult = Result<Vec<(BTreeMap<String, String>, f64)>, String>;

/// Answers a template's `query "expr"`.
pub type QueryFn<'a> = &'a dyn Fn(&str) -> QueryResult;

struct Ctx<'d> {
    /// `$` at the top of the running template.
    root: Val,
    defs: &'d Defs,
    vars: Vec<(String, Val)>,
    steps: usize,
    depth: usize,
    query: Option<QueryFn<'d>>,
}

/// `.name` of `v`: a struct's field, a map's key (or one of its methods), a list's method.
fn field(v: Val, name: &str) -> Result<Val, TemplateError> {
    Ok(match v {
        Val::Obj(t, mut m) => match m.remove(name) {
            Some(x) => x,
            None => return err(format!("can't evaluate field {name} in type {t}")),
        },
        Val::Map(m) => match name {
            "SortedPairs" => Val::List(
                m.into_iter()
                    .map(|(k, v)| {
                        Val::Obj(
                            "Pair",
                            [("Name", Val::Str(k)), ("Value", Val::Str(v))].into(),
                        )
                    })
                    .collect(),
            ),
            "Names" => Val::List(m.into_keys().map(Val::Str).collect()),
            "Values" => Val::List(m.into_values().map(Val::Str).collect()),
            "Remove" => return err("Remove needs an argument: a list of label names"),
            _ => Val::Str(m.get(name).cloned().unwrap_or_default()),
        },
        // Alertmanager's `Pairs` (from `.SortedPairs`): `.Names`, `.Values`.
        Val::List(l) if name == "Names" || name == "Values" => {
            let key = if name == "Names" { "Name" } else { "Value" };
            let mut out = Vec::with_capacity(l.len());
            for p in l {
                match p {
                    Val::Obj("Pair", mut m) => out.push(m.remove(key).unwrap_or(Val::Nil)),
                    other => {
                        return err(format!(
                            "can't evaluate field {name} in a list of {}",
                            type_name(&other)
                        ))
                    }
                }
            }
            Val::List(out)
        }
        Val::List(l) if name == "Firing" || name == "Resolved" => {
            let want = if name == "Firing" {
                "firing"
            } else {
                "resolved"
            };
            Val::List(
                l.into_iter()
                    .filter(|a| match a {
                        Val::Obj(_, m) => m.get("Status") == Some(&Val::Str(want.into())),
                        _ => false,
                    })
                    .collect(),
            )
        }
        Val::Time(ms) => match name {
            "Unix" => Val::Int(ms.div_euclid(1000)),
            "UnixMilli" => Val::Int(ms),
            "IsZero" => Val::Bool(ms == ZERO_TIME_MS),
            "UTC" | "Local" => Val::Time(ms),
            "Format" => return err("Format needs an argument: a Go time layout"),
            _ => return err(format!("can't evaluate field {name} in type time.Time")),
        },
        Val::Nil => return err(format!("nil pointer evaluating .{name}")),
        other => {
            return err(format!(
                "can't evaluate field {name} in type {}",
                type_name(&other)
            ))
        }
    })
}

/// A method with arguments: `.CommonLabels.Remove .GroupLabels.Names`.
fn method(recv: Val, name: &str, args: Vec<Val>) -> Result<Val, TemplateError> {
    match (recv, name) {
        (Val::Map(mut m), "Remove") => {
            want("Remove", &args, 1)?;
            match &args[0] {
                Val::List(names) => {
                    for n in names {
                        m.remove(&n.to_str());
                    }
                }
                other => {
                    return err(format!(
                        "Remove: want a list of label names, got {}",
                        type_name(other)
                    ))
                }
            }
            Ok(Val::Map(m))
        }
        (Val::Time(ms), "Format") => {
            want("Format", &args, 1)?;
            Ok(Val::Str(go_time(ms, &args[0].to_str())))
        }
        (other, _) => err(format!(
            "can't give arguments to .{name} of type {}",
            type_name(&other)
        )),
    }
}

impl Ctx<'_> {
    fn fields(&self, mut v: Val, fields: &[String]) -> Result<Val, TemplateError> {
        for f in fields {
            v = field(v, f)?;
        }
        Ok(v)
    }

    /// The value a `$x.a.b` or `.a.b` starts from.
    fn base(&mut self, a: &Arg, dot: &Val) -> Result<Val, TemplateError> {
        match a {
            Arg::Var(name, _) if name.is_empty() => Ok(self.root.clone()),
            Arg::Var(name, _) => match self.vars.iter().rev().find(|(n, _)| n == name) {
                Some((_, v)) => Ok(v.clone()),
                None => err(format!("undefined variable \"${name}\"")),
            },
            Arg::Chain(inner, _) => self.arg(inner, dot),
            _ => Ok(dot.clone()),
        }
    }

    fn arg(&mut self, a: &Arg, dot: &Val) -> Result<Val, TemplateError> {
        Ok(match a {
            Arg::Nil => Val::Nil,
            Arg::Bool(b) => Val::Bool(*b),
            Arg::Num(f) => Val::Num(*f),
            Arg::Int(i) => Val::Int(*i),
            Arg::Str(s) => Val::Str(s.clone()),
            Arg::Var(_, fields) | Arg::Field(fields) | Arg::Chain(_, fields) => {
                let v = self.base(a, dot)?;
                self.fields(v, fields)?
            }
            Arg::Func(f) => self.call(f, &[], dot, None)?,
            Arg::Pipe(p) => self.pipeline(p, dot)?,
        })
    }

    fn pipeline(&mut self, p: &Pipeline, dot: &Val) -> Result<Val, TemplateError> {
        let mut prev: Option<Val> = None;
        for cmd in &p.cmds {
            let v = match &cmd[0] {
                Arg::Func(f) => {
                    let args = &cmd[1..];
                    self.call(f, args, dot, prev.take())?
                }
                a @ (Arg::Var(_, fields) | Arg::Field(fields) | Arg::Chain(_, fields))
                    if (cmd.len() > 1 || prev.is_some()) && !fields.is_empty() =>
                {
                    let (name, path) = fields.split_last().expect("not empty");
                    let recv = self.base(a, dot)?;
                    let recv = self.fields(recv, path)?;
                    let mut args = Vec::with_capacity(cmd.len());
                    for x in &cmd[1..] {
                        args.push(self.arg(x, dot)?);
                    }
                    args.extend(prev.take());
                    method(recv, name, args)?
                }
                a => {
                    if cmd.len() > 1 || prev.is_some() {
                        return err(format!(
                            "can't give argument to non-function {}",
                            describe(a)
                        ));
                    }
                    self.arg(a, dot)?
                }
            };
            prev = Some(v);
        }
        let v = prev.unwrap_or(Val::Nil);
        if let Some(name) = p.decl.first() {
            if p.assign {
                match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                    Some(slot) => slot.1 = v.clone(),
                    None => return err(format!("undefined variable \"${name}\"")),
                }
            } else {
                self.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    fn call(
        &mut self,
        f: &str,
        args: &[Arg],
        dot: &Val,
        piped: Option<Val>,
    ) -> Result<Val, TemplateError> {
        let mut vals = Vec::with_capacity(args.len() + 1);
        for a in args {
            vals.push(self.arg(a, dot)?);
        }
        if let Some(p) = piped {
            vals.push(p);
        }
        if f == "query" {
            want(f, &vals, 1)?;
            let Some(q) = self.query else {
                return err("query: PromQL queries are only available in rule templates");
            };
            let samples = q(&vals[0].to_str()).or_else(|e| err(format!("query: {e}")))?;
            return Ok(Val::List(
                samples
                    .into_iter()
                    .map(|(l, v)| {
                        Val::Obj(
                            "sample",
                            [("Labels", Val::Map(l)), ("Value", Val::Num(v))].into(),
                        )
                    })
                    .collect(),
            ));
        }
        call_func(f, &vals)
    }

    fn run(&mut self, nodes: &[Node], dot: &Val, out: &mut String) -> Result<(), TemplateError> {
        for n in nodes {
            self.steps += 1;
            if self.steps > 100_000 {
                return err("template too expensive (over 100,000 steps)");
            }
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Action(p) => {
                    let v = self.pipeline(p, dot)?;
                    if p.decl.is_empty() {
                        v.print(out);
                    }
                }
                Node::If(arms, otherwise) => {
                    let scope = self.vars.len();
                    let mut done = false;
                    for (cond, body) in arms {
                        if self.pipeline(cond, dot)?.truthy() {
                            self.run(body, dot, out)?;
                            done = true;
                            break;
                        }
                    }
                    if !done {
                        self.run(otherwise, dot, out)?;
                    }
                    self.vars.truncate(scope);
                }
                Node::With(p, body, otherwise) => {
                    let scope = self.vars.len();
                    let v = self.pipeline(p, dot)?;
                    if v.truthy() {
                        self.run(body, &v, out)?;
                    } else {
                        self.run(otherwise, dot, out)?;
                    }
                    self.vars.truncate(scope);
                }
                Node::Range(p, body, otherwise) => {
                    let scope = self.vars.len();
                    let inner = Pipeline {
                        decl: Vec::new(),
                        assign: false,
                        cmds: p.cmds.clone(),
                    };
                    let items: Vec<(Val, Val)> = match self.pipeline(&inner, dot)? {
                        Val::Map(m) => m
                            .into_iter()
                            .map(|(k, v)| (Val::Str(k), Val::Str(v)))
                            .collect(),
                        Val::List(l) => l
                            .into_iter()
                            .enumerate()
                            .map(|(i, v)| (Val::Int(i as i64), v))
                            .collect(),
                        Val::Nil => Vec::new(),
                        v => return err(format!("range can't iterate over {}", type_name(&v))),
                    };
                    if items.is_empty() {
                        self.run(otherwise, dot, out)?;
                    }
                    for (k, val) in items {
                        let s = self.vars.len();
                        match p.decl.as_slice() {
                            [v] => self.vars.push((v.clone(), val.clone())),
                            [k_name, v_name] => {
                                self.vars.push((k_name.clone(), k));
                                self.vars.push((v_name.clone(), val.clone()));
                            }
                            _ => {}
                        }
                        self.run(body, &val, out)?;
                        self.vars.truncate(s);
                    }
                    self.vars.truncate(scope);
                }
                Node::Call(name, p) => {
                    let Some(body) = self.defs.map.get(name).cloned() else {
                        return err(format!("no such template {name:?}"));
                    };
                    if self.depth >= MAX_TEMPLATE_DEPTH {
                        return err(format!(
                            "template {name:?}: calls nested deeper than {MAX_TEMPLATE_DEPTH}"
                        ));
                    }
                    let arg = match p {
                        Some(p) => self.pipeline(p, dot)?,
                        None => Val::Nil,
                    };
                    // A called template starts with no variables and `$` = its argument.
                    let vars = std::mem::take(&mut self.vars);
                    let root = std::mem::replace(&mut self.root, arg.clone());
                    self.depth += 1;
                    let r = self.run(&body, &arg, out);
                    self.depth -= 1;
                    self.root = root;
                    self.vars = vars;
                    r.map_err(|e| TemplateError(format!("template {name:?}: {}", e.0)))?;
                }
            }
        }
        Ok(())
    }
}

fn describe(a: &Arg) -> String {
    match a {
        Arg::Var(n, f) => format!(
            "${n}{}",
            f.iter().map(|f| format!(".{f}")).collect::<String>()
        ),
        Arg::Field(f) => f.iter().map(|f| format!(".{f}")).collect(),
        Arg::Str(s) => format!("{s:?}"),
        other => format!("{other:?}"),
    }
}

fn type_name(v: &Val) -> &'static str {
    match v {
        Val::Nil => "nil",
        Val::Bool(_) => "bool",
        Val::Num(_) => "float64",
        Val::Int(_) => "int",
        Val::Str(_) => "string",
        Val::Map(_) => "map[string]string",
        Val::List(_) => "slice",
        Val::Obj(name, _) => name,
        Val::Time(_) => "time.Time",
    }
}

fn want(f: &str, vals: &[Val], n: usize) -> Result<(), TemplateError> {
    if vals.len() != n {
        return err(format!(
            "wrong number of args for {f}: want {n} got {}",
            vals.len()
        ));
    }
    Ok(())
}

fn compare(f: &str, a: &Val, b: &Val) -> Result<std::cmp::Ordering, TemplateError> {
    use std::cmp::Ordering;
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => Ok(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) if f == "eq" || f == "ne" => Ok(x.cmp(y)),
        (Val::Num(_) | Val::Int(_), Val::Num(_) | Val::Int(_)) => {
            let (x, y) = (a.to_f64(f)?, b.to_f64(f)?);
            Ok(x.partial_cmp(&y).unwrap_or(Ordering::Less))
        }
        _ => err(format!(
            "{f}: incompatible types for comparison ({} and {})",
            type_name(a),
            type_name(b)
        )),
    }
}

fn call_func(f: &str, v: &[Val]) -> Result<Val, TemplateError> {
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

fn title(s: &str) -> String {
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

fn strip_port(s: &str) -> String {
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

fn strip_domain(s: &str) -> String {
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

/// Go's `time.Time.String()` layout.
const GO_TIME_STRING: &str = "2006-01-02 15:04:05.999999999 -0700 MST";

/// Formats a UTC time (ms since the epoch) with a Go reference-time layout (`2006-01-02
/// 15:04:05`, `Jan _2`, `Monday`, `3:04PM`, `MST`, `-07:00`, `Z07:00`, `.000`, `.999`...).
pub fn go_time(ms: i64, layout: &str) -> String {
    use crate::time::civil;
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    let c = civil(ms);
    let (y, mo, d, h, mi, s, milli, wd) = (
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.milli, c.weekday,
    );
    let month = MONTHS[(mo - 1) as usize];
    let h12 = if h % 12 == 0 { 12 } else { h % 12 };
    let mut out = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        // Fractions: `.000` (fixed) or `.999` (trailing zeros trimmed), any length.
        if let Some(f) = rest.strip_prefix(['.', ',']) {
            let n = f.chars().take_while(|&c| c == '0').count();
            let m = f.chars().take_while(|&c| c == '9').count();
            let len = n.max(m);
            if len > 0 && !f[len..].starts_with(|c: char| c.is_ascii_digit()) {
                let digits = format!("{milli:03}{}", "0".repeat(len.saturating_sub(3)));
                let digits = &digits[..len.min(digits.len())];
                if n > 0 {
                    let _ = write!(out, "{}{digits}", &rest[..1]);
                } else {
                    let t = digits.trim_end_matches('0');
                    if !t.is_empty() {
                        let _ = write!(out, "{}{t}", &rest[..1]);
                    }
                }
                rest = &f[len..];
                continue;
            }
        }
        for (tok, val) in [
            ("January", month.to_string()),
            ("Jan", month[..3].to_string()),
            ("Monday", DAYS[wd].to_string()),
            ("Mon", DAYS[wd][..3].to_string()),
            ("MST", "UTC".to_string()),
            ("2006", format!("{y:04}")),
            ("-07:00:00", "+00:00:00".to_string()),
            ("-0700", "+0000".to_string()),
            ("-07:00", "+00:00".to_string()),
            ("-07", "+00".to_string()),
            ("Z07:00", "Z".to_string()),
            ("Z0700", "Z".to_string()),
            ("Z07", "Z".to_string()),
            ("002", format!("{:03}", day_of_year(y, mo, d))),
            ("01", format!("{mo:02}")),
            ("02", format!("{d:02}")),
            ("_2", format!("{d:>2}")),
            ("03", format!("{h12:02}")),
            ("04", format!("{mi:02}")),
            ("05", format!("{s:02}")),
            ("06", format!("{:02}", y % 100)),
            ("15", format!("{h:02}")),
            ("PM", if h >= 12 { "PM" } else { "AM" }.to_string()),
            ("pm", if h >= 12 { "pm" } else { "am" }.to_string()),
            ("1", mo.to_string()),
            ("2", d.to_string()),
            ("3", h12.to_string()),
            ("4", mi.to_string()),
            ("5", s.to_string()),
        ] {
            if let Some(r) = rest.strip_prefix(tok) {
                out.push_str(&val);
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn day_of_year(y: i64, mo: i64, d: i64) -> i64 {
    const CUM: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    CUM[(mo - 1) as usize] + d + i64::from(leap && mo > 2)
}

/// Go's `Sprintf` for the verbs templates use: `%s %v %d %f %g %e %x %q %%`, with flags
/// (`-`, `+`, `0`, space), width and precision.
fn sprintf(fmt: &str, args: &[Val]) -> Result<String, TemplateError> {
    let mut out = String::new();
    let mut it = fmt.chars().peekable();
    let mut n = 0;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut flags = String::new();
        while let Some(&f) = it.peek() {
            if "-+ 0#".contains(f) {
                flags.push(f);
                it.next();
            } else {
                break;
            }
        }
        let mut width = String::new();
        while let Some(&d) = it.peek().filter(|d| d.is_ascii_digit()) {
            width.push(d);
            it.next();
        }
        let mut prec: Option<usize> = None;
        if it.peek() == Some(&'.') {
            it.next();
            let mut p = String::new();
            while let Some(&d) = it.peek().filter(|d| d.is_ascii_digit()) {
                p.push(d);
                it.next();
            }
            prec = Some(p.parse().unwrap_or(0));
        }
        let Some(verb) = it.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(n) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        n += 1;
        let body = match (verb, arg) {
            ('d', Val::Int(i)) => i.to_string(),
            ('d', Val::Num(f)) if f.fract() == 0.0 => format!("{}", *f as i64),
            ('d', other) => format!("%!d({})", other.to_str()),
            ('f' | 'F', x) => match x.to_f64("printf") {
                Ok(f) if f.is_finite() => format!("{:.*}", prec.unwrap_or(6), f),
                Ok(f) => go_float(f),
                Err(_) => format!("%!f({})", x.to_str()),
            },
            ('g', x) => match x.to_f64("printf") {
                Ok(f) => match prec {
                    Some(p) => go_g(f, p),
                    None => go_float(f),
                },
                Err(_) => format!("%!g({})", x.to_str()),
            },
            ('e', x) => match x.to_f64("printf") {
                Ok(f) => go_e(f, prec.unwrap_or(6)),
                Err(_) => format!("%!e({})", x.to_str()),
            },
            ('x', Val::Int(i)) => format!("{i:x}"),
            ('x', x) => x.to_str().bytes().map(|b| format!("{b:02x}")).collect(),
            ('q', x) => format!("{:?}", x.to_str()),
            ('s' | 'v', x) => {
                let s = x.to_str();
                match prec {
                    Some(p) if verb == 's' => s.chars().take(p).collect(),
                    _ => s,
                }
            }
            ('t', Val::Bool(b)) => b.to_string(),
            (v, x) => format!("%!{v}({})", x.to_str()),
        };
        let body = if flags.contains('+')
            && !body.starts_with('-')
            && matches!(verb, 'd' | 'f' | 'g' | 'e')
        {
            format!("+{body}")
        } else if flags.contains(' ')
            && !body.starts_with('-')
            && matches!(verb, 'd' | 'f' | 'g' | 'e')
        {
            format!(" {body}")
        } else {
            body
        };
        let width: usize = width.parse().unwrap_or(0);
        let len = body.chars().count();
        if len >= width {
            out.push_str(&body);
        } else if flags.contains('-') {
            out.push_str(&body);
            out.push_str(&" ".repeat(width - len));
        } else if flags.contains('0') && matches!(verb, 'd' | 'f' | 'g' | 'e') {
            let (sign, digits) = match body.strip_prefix(['-', '+', ' ']) {
                Some(d) => (&body[..1], d),
                None => ("", body.as_str()),
            };
            out.push_str(sign);
            out.push_str(&"0".repeat(width - len));
            out.push_str(digits);
        } else {
            out.push_str(&" ".repeat(width - len));
            out.push_str(&body);
        }
    }
    if n < args.len() {
        out.push_str("%!(EXTRA ");
        for (i, a) in args[n..].iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{}={}", type_name(a), a.to_str());
        }
        out.push(')');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(value: f64) -> TemplateData {
        TemplateData {
            labels: [("instance", "web-1:9100"), ("job", "node")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            external_labels: [("dc".to_string(), "eu".to_string())].into(),
            external_url: "http://tidemark:9470".into(),
            value,
        }
    }

    fn x(src: &str, v: f64) -> String {
        expand(src, &data(v)).unwrap_or_else(|e| panic!("{src}: {e}"))
    }

    #[test]
    fn go_value_formatting() {
        for (v, s) in [
            (95.5, "95.5"),
            (1.0, "1"),
            (1e6, "1e+06"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5, "-2.5"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (0.1 + 0.2, "0.30000000000000004"),
        ] {
            assert_eq!(go_float(v), s, "{v}");
        }
        assert_eq!(go_g(1234.5678, 4), "1235");
        assert_eq!(go_g(95.5, 4), "95.5");
        assert_eq!(go_g(12345.0, 4), "1.234e+04");
        assert_eq!(go_g(0.5, 4), "0.5");
    }

    #[test]
    fn labels_value_and_pipelines() {
        assert_eq!(
            x("{{ $labels.instance }} is down ({{ $value }})", 0.0),
            "web-1:9100 is down (0)"
        );
        assert_eq!(x("{{ .Labels.job }}/{{ .Value }}", 2.5), "node/2.5");
        assert_eq!(x("{{ $labels.missing }}|", 1.0), "|");
        assert_eq!(x("{{ $value | humanize }}", 1234567.0), "1.235M");
        assert_eq!(x("{{ humanize $value }}", 0.0012), "1.2m");
        assert_eq!(x("{{ $value | humanizePercentage }}", 0.256), "25.6%");
        assert_eq!(x("{{ humanize1024 1048576.0 }}", 0.0), "1Mi");
        assert_eq!(x("{{ humanizeDuration 90061.0 }}", 0.0), "1d 1h 1m 1s");
        assert_eq!(x("{{ humanizeDuration 1.5 }}", 0.0), "1.5s");
        assert_eq!(x("{{ humanizeDuration 0.25 }}", 0.0), "250ms");
        assert_eq!(
            x("{{ humanizeTimestamp 1700000000.0 }}", 0.0),
            "2023-11-14 22:13:20 +0000 UTC"
        );
        assert_eq!(x(r#"{{ printf "%.1f%%" $value }}"#, 93.25), "93.2%");
        assert_eq!(x(r#"{{ printf "%s=%d" "a" 3 }}"#, 0.0), "a=3");
        assert_eq!(x(r#"{{ printf "%5.1f|" $value }}"#, 3.0), "  3.0|");
        assert_eq!(x("{{ $labels.job | toUpper }}", 0.0), "NODE");
        assert_eq!(x("{{ title \"hello world\" }}", 0.0), "Hello World");
        assert_eq!(x("{{ $labels.instance | stripPort }}", 0.0), "web-1");
        assert_eq!(
            x(
                r##"{{ reReplaceAll "-(\\d+)" "#$1" $labels.instance }}"##,
                0.0
            ),
            "web#1:9100"
        );
        assert_eq!(x("{{ index $labels \"job\" }}", 0.0), "node");
        assert_eq!(
            x("{{ $externalLabels.dc }} {{ $externalURL }}", 0.0),
            "eu http://tidemark:9470"
        );
    }

    #[test]
    fn control_flow_variables_and_trim() {
        let t =
            "{{ if gt $value 90.0 }}critical{{ else if gt $value 80.0 }}high{{ else }}ok{{ end }}";
        assert_eq!(x(t, 95.0), "critical");
        assert_eq!(x(t, 85.0), "high");
        assert_eq!(x(t, 5.0), "ok");
        assert_eq!(
            x("{{ $x := \"a\" }}{{ $x }}{{ $x = \"b\" }}{{ $x }}", 0.0),
            "ab"
        );
        assert_eq!(x("a  {{- \" b \" -}}  c", 0.0), "a b c");
        assert_eq!(x("{{/* note */}}x", 0.0), "x");
        assert_eq!(
            x("{{ with $labels.job }}job={{ . }}{{ end }}", 0.0),
            "job=node"
        );
        assert_eq!(
            x("{{ with $labels.nope }}x{{ else }}none{{ end }}", 0.0),
            "none"
        );
        assert_eq!(
            x(
                "{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}",
                0.0
            ),
            "instance=web-1:9100;job=node;"
        );
        assert_eq!(
            x(
                "{{ if and (eq $labels.job \"node\") (not false) }}y{{ end }}",
                0.0
            ),
            "y"
        );
    }

    #[test]
    fn query_results_and_helpers() {
        let l = |i: &str| -> BTreeMap<String, String> {
            [("__name__", "up"), ("instance", i)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let q = |e: &str| -> QueryResult {
            match e {
                "up" => Ok(vec![(l("b"), 0.0), (l("a"), 1.0)]),
                "none" => Ok(vec![]),
                _ => Err(format!("cannot parse {e:?}")),
            }
        };
        let x = |src: &str| {
            Template::parse(src)
                .unwrap()
                .expand_with(&data(0.0), Some(&q))
        };
        assert_eq!(
            x("{{ range query \"up\" | sortByLabel \"instance\" }}{{ .Labels.instance }}={{ .Value }} {{ end }}{{ with query \"up\" }}{{ . | first | value }} {{ . | first | label \"instance\" }}{{ end }}").unwrap(),
            "a=1 b=0 0 b"
        );
        assert_eq!(
            x("{{ with query \"none\" }}some{{ else }}none{{ end }}").unwrap(),
            "none"
        );
        let e = x("{{ query \"none\" | first }}").unwrap_err().0;
        assert!(
            e.contains("first() called on vector with no elements"),
            "{e}"
        );
        let e = x("{{ query \"bad(\" }}").unwrap_err().0;
        assert!(e.contains("query: cannot parse"), "{e}");
        let e = expand("{{ query \"up\" }}", &data(0.0)).unwrap_err().0;
        assert!(e.contains("only available in rule templates"), "{e}");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (src, want) in [
            ("{{ $labels.instance ", "unclosed action"),
            ("{{ if true }}x", "has no {{end}}"),
            ("{{ end }}", "unexpected {{end}}"),
            ("{{ nosuch 1 }}", "function \"nosuch\" not defined"),
            ("{{ \"abc }}", "unclosed action"),
            ("{{ \"abc\\q\" }}", "unknown escape"),
        ] {
            let e = Template::parse(src).unwrap_err().0;
            assert!(e.contains(want), "{src}: {e}");
        }
        let e = expand("{{ $nope }}", &data(0.0)).unwrap_err().0;
        assert!(e.contains("undefined variable \"$nope\""), "{e}");
        let e = expand("{{ gt $labels.job 1 }}", &data(0.0)).unwrap_err().0;
        assert!(e.contains("incompatible types"), "{e}");
    }
}

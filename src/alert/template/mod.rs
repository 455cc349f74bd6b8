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

mod exec;
mod funcs;
mod goformat;
mod parse;

pub use exec::*;
pub use funcs::*;
pub use goformat::*;
use parse::*;

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

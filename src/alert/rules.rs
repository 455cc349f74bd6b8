//! Prometheus rule files: `groups` of alerting and recording rules, checked as `promtool
//! check rules` checks them. Every error names the file, the line, the group and rule, and the
//! reason; one file's errors do not stop the others from loading.
//!
//! ```yaml
//! groups:
//!   - name: fleet
//!     interval: 10s            # optional; default: every evaluation tick (1 s of event time)
//!     labels: {team: infra}    # optional; added to every rule's output
//!     rules:
//!       - record: pool:cpu_usage_percent:avg
//!         expr: avg by (pool) (cpu_usage_percent)
//!       - alert: HighCpu
//!         expr: pool:cpu_usage_percent:avg > 90
//!         for: 5m
//!         keep_firing_for: 1m
//!         labels: {severity: warning}
//!         annotations: {summary: "CPU of {{ $labels.pool }} at {{ $value }}%"}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use promql_parser::parser::value::ValueType;
use promql_parser::parser::{self, Expr};
use serde::Deserialize;

use super::template::Template;
use crate::model::{is_valid_label_name, is_valid_metric_name};
use crate::time::parse_duration_ms;

/// One problem in a rule file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.render())]
pub struct RuleError {
    pub file: PathBuf,
    /// 1-based; 0 when unknown.
    pub line: usize,
    pub group: Option<String>,
    pub rule: Option<String>,
    pub reason: String,
}

impl RuleError {
    fn render(&self) -> String {
        let mut s = self.file.display().to_string();
        if self.line > 0 {
            s.push_str(&format!(":{}", self.line));
        }
        s.push_str(": ");
        if let Some(g) = &self.group {
            s.push_str(&format!("group {g:?}, "));
        }
        if let Some(r) = &self.rule {
            s.push_str(&format!("rule {r:?}: "));
        }
        s.push_str(&self.reason);
        s
    }
}

/// What a rule is.
#[derive(Clone, Debug)]
pub enum RuleKind {
    Alert {
        for_ms: u64,
        keep_firing_for_ms: u64,
        /// `(name, source, parsed)`, sorted by name.
        annotations: Vec<(String, String, Template)>,
    },
    Record,
}

/// A rule as loaded.
#[derive(Clone, Debug)]
pub struct Rule {
    /// The alert name or the recorded metric name.
    pub name: String,
    pub kind: RuleKind,
    pub expr_text: String,
    pub expr: Expr,
    /// Rule labels (the group's first, the rule's overriding), sorted by name.
    pub labels: Vec<(String, String, Template)>,
    /// Line of the rule's `alert:`/`record:` key (0 if unknown).
    pub line: usize,
}

impl Rule {
    pub fn is_alert(&self) -> bool {
        matches!(self.kind, RuleKind::Alert { .. })
    }
}

/// A group: its rules run in order at each of its ticks; later rules see what earlier ones
/// recorded at the same tick.
#[derive(Clone, Debug)]
pub struct Group {
    pub name: String,
    pub file: PathBuf,
    /// Evaluation interval, ms of event time; `None`: every tick.
    pub interval_ms: Option<u64>,
    /// Most alerts (or recorded series) a rule may produce; 0: no limit.
    pub limit: usize,
    pub rules: Vec<Rule>,
}

impl Group {
    /// `file;name`, Prometheus's group key.
    pub fn key(&self) -> String {
        format!("{};{}", self.file.display(), self.name)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileYaml {
    #[serde(default)]
    groups: Option<Vec<GroupYaml>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupYaml {
    #[serde(default)]
    name: String,
    #[serde(default)]
    interval: Option<Scalar>,
    #[serde(default)]
    query_offset: Option<Scalar>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    labels: Option<BTreeMap<String, Scalar>>,
    #[serde(default)]
    rules: Option<Vec<RuleYaml>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleYaml {
    #[serde(default)]
    record: Option<Scalar>,
    #[serde(default)]
    alert: Option<Scalar>,
    #[serde(default)]
    expr: Option<Scalar>,
    #[serde(default, rename = "for")]
    for_: Option<Scalar>,
    #[serde(default)]
    keep_firing_for: Option<Scalar>,
    #[serde(default)]
    labels: Option<BTreeMap<String, Scalar>>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, Scalar>>,
}

/// A YAML scalar read as text (`priority: 1` is the label value `"1"`, as in Prometheus).
#[derive(Clone, Debug, Default)]
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match yaml_serde::Value::deserialize(d)? {
            yaml_serde::Value::String(s) => Ok(Scalar(s)),
            yaml_serde::Value::Number(n) => Ok(Scalar(n.to_string())),
            yaml_serde::Value::Bool(b) => Ok(Scalar(b.to_string())),
            yaml_serde::Value::Null => Ok(Scalar(String::new())),
            _ => Err(D::Error::custom("expected a string, number or boolean")),
        }
    }
}

/// Lines of the rules' `alert:`/`record:` keys, in file order, and of the groups' `name:`.
fn key_lines(text: &str) -> (Vec<usize>, Vec<(usize, String)>) {
    let mut rules = Vec::new();
    let mut groups = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let t = t.strip_prefix("- ").map(str::trim_start).unwrap_or(t);
        if t.starts_with("alert:") || t.starts_with("record:") {
            rules.push(i + 1);
        } else if let Some(n) = t.strip_prefix("name:") {
            let n = n.trim().trim_matches(['"', '\'']).to_string();
            groups.push((i + 1, n));
        }
    }
    (rules, groups)
}

fn duration(s: &Scalar, field: &str) -> Result<u64, String> {
    let t = s.0.trim();
    parse_duration_ms(t)
        .filter(|d| *d >= 0 && t.starts_with(|c: char| c.is_ascii_digit()))
        .map(|d| d as u64)
        .ok_or_else(|| {
            format!("{field}: invalid duration {t:?} (use e.g. \"30s\", \"5m\", \"1h\")")
        })
}

fn parse_labels(
    m: &BTreeMap<String, Scalar>,
    field: &str,
    errs: &mut Vec<String>,
) -> Vec<(String, String, Template)> {
    let mut out = Vec::new();
    for (k, v) in m {
        if field == "labels" && (!is_valid_label_name(k) || k == "__name__") {
            errs.push(format!("invalid label name: {k:?}"));
            continue;
        }
        if field == "annotations" && !is_valid_label_name(k) {
            errs.push(format!("invalid annotation name: {k:?}"));
            continue;
        }
        match Template::parse(&v.0) {
            Ok(t) => out.push((k.clone(), v.0.clone(), t)),
            Err(e) => errs.push(format!("{field}.{k}: template: {e}")),
        }
    }
    out
}

/// The line of the field a rule error names (`expr: ...`, `for ...`, `annotations.summary:
/// ...`, `labels.severity: ...`) inside the rule whose `alert:`/`record:` key is on
/// `rule_line`; the rule's line when the error names no field or the field is not found.
fn field_line(text: &str, rule_line: usize, err: &str) -> usize {
    if rule_line == 0 {
        return 0;
    }
    let head = err.split([':', ' ']).next().unwrap_or("");
    let (field, key) = match head.split_once('.') {
        Some((f, k)) => (f, Some(k)),
        None => (head, None),
    };
    if !matches!(
        field,
        "expr" | "for" | "keep_firing_for" | "labels" | "annotations"
    ) {
        return rule_line;
    }
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let key_of = |l: &str| {
        let t = l.trim_start().trim_start_matches("- ").trim_start();
        t.split(':')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches(['"', '\''])
            .to_string()
    };
    // The rule's list item: from its `- ` line back from `rule_line` to the next item.
    let mut start = rule_line - 1;
    while start > 0 && !lines[start].trim_start().starts_with("- ") {
        start -= 1;
    }
    let item_indent = indent(lines[start]);
    let mut end = start + 1;
    while end < lines.len() && (lines[end].trim().is_empty() || indent(lines[end]) > item_indent) {
        end += 1;
    }
    let field_at = (start..end).find(|&i| key_of(lines[i]) == field);
    let Some(f) = field_at else {
        return rule_line;
    };
    let Some(k) = key else {
        return f + 1;
    };
    // `annotations: {summary: ...}` on one line, or one key per line below it.
    if lines[f].contains('{') {
        return f + 1;
    }
    let field_indent = indent(lines[f]);
    ((f + 1)..end)
        .take_while(|&i| lines[i].trim().is_empty() || indent(lines[i]) > field_indent)
        .find(|&i| key_of(lines[i]) == k)
        .map_or(f + 1, |i| i + 1)
}

/// Parses one rule file's text; `path` is only used in errors. Returns the valid groups and
/// every problem (a group with a bad rule is left out whole, so its rules do not run half).
pub fn parse_rule_file(path: &Path, text: &str) -> (Vec<Group>, Vec<RuleError>) {
    let mk = |line: usize, group: Option<&str>, rule: Option<&str>, reason: String| RuleError {
        file: path.to_path_buf(),
        line,
        group: group.map(str::to_string),
        rule: rule.map(str::to_string),
        reason,
    };
    let (rule_lines, group_lines) = key_lines(text);
    let file: FileYaml = if text.trim().is_empty() {
        FileYaml { groups: None }
    } else {
        match yaml_serde::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                let line = e.location().map_or(0, |l| l.line());
                // The rule the error is in: the last `alert:`/`record:` line at or before it.
                let rule_line = rule_lines.iter().rev().find(|&&l| l <= line).copied();
                let rule = rule_line.and_then(|l| {
                    text.lines()
                        .nth(l - 1)
                        .and_then(|s| s.split_once(':'))
                        .map(|(_, v)| v.trim().trim_matches(['"', '\'']).to_string())
                });
                let mut msg = e.to_string();
                if let Some(i) = msg.find(" at line ") {
                    msg.truncate(i);
                }
                return (Vec::new(), vec![mk(line, None, rule.as_deref(), msg)]);
            }
        }
    };
    let mut groups = Vec::new();
    let mut errors = Vec::new();
    let mut next_rule_line = rule_lines.into_iter();
    let mut seen_groups = std::collections::HashSet::new();
    for g in file.groups.unwrap_or_default() {
        let gline = group_lines
            .iter()
            .find(|(_, n)| *n == g.name)
            .map_or(0, |(l, _)| *l);
        let gname = Some(g.name.as_str());
        let mut bad = false;
        if g.name.is_empty() {
            errors.push(mk(gline, None, None, "group name must not be empty".into()));
            bad = true;
        } else if !seen_groups.insert(g.name.clone()) {
            errors.push(mk(
                gline,
                gname,
                None,
                "group name is repeated in the same file".into(),
            ));
            bad = true;
        }
        let mut interval_ms = None;
        if let Some(i) = &g.interval {
            match duration(i, "interval") {
                Ok(0) => {
                    errors.push(mk(gline, gname, None, "interval must be positive".into()));
                    bad = true;
                }
                Ok(ms) => interval_ms = Some(ms),
                Err(e) => {
                    errors.push(mk(gline, gname, None, e));
                    bad = true;
                }
            }
        }
        if let Some(q) = &g.query_offset {
            if let Err(e) = duration(q, "query_offset") {
                errors.push(mk(gline, gname, None, e));
                bad = true;
            } else if duration(q, "query_offset") != Ok(0) {
                errors.push(mk(
                    gline,
                    gname,
                    None,
                    "query_offset is not supported: rules are evaluated on event time once the watermark has passed the tick, so no offset is needed".into(),
                ));
                bad = true;
            }
        }
        let mut group_label_errs = Vec::new();
        let group_labels = parse_labels(
            &g.labels.clone().unwrap_or_default(),
            "labels",
            &mut group_label_errs,
        );
        for e in group_label_errs {
            errors.push(mk(gline, gname, None, e));
            bad = true;
        }
        let mut rules = Vec::new();
        for r in g.rules.unwrap_or_default() {
            let line = if r.alert.is_some() || r.record.is_some() {
                next_rule_line.next().unwrap_or(0)
            } else {
                0
            };
            let name = r
                .alert
                .as_ref()
                .or(r.record.as_ref())
                .map(|s| s.0.clone())
                .unwrap_or_default();
            let mut errs = Vec::new();
            match (&r.alert, &r.record) {
                (Some(_), Some(_)) => {
                    errs.push("only one of 'record' and 'alert' must be set".into())
                }
                (None, None) => errs.push("one of 'record' or 'alert' must be set".into()),
                (Some(a), None) if a.0.is_empty() => {
                    errs.push("alert name must not be empty".into())
                }
                (None, Some(rec)) if !is_valid_metric_name(&rec.0) => {
                    errs.push(format!("invalid recording rule name: {:?}", rec.0))
                }
                _ => {}
            }
            let expr_text = r.expr.as_ref().map(|s| s.0.clone()).unwrap_or_default();
            let expr = if expr_text.trim().is_empty() {
                errs.push("field 'expr' must be set in rule".into());
                None
            } else {
                match parser::parse_with_position(&expr_text) {
                    Ok(e) => match e.value_type() {
                        ValueType::Vector | ValueType::Scalar => Some(e),
                        t => {
                            errs.push(format!(
                                "expr: the expression must be an instant vector or a scalar, not a {t}"
                            ));
                            None
                        }
                    },
                    Err(e) => {
                        errs.push(format!("expr: could not parse expression: {e}"));
                        None
                    }
                }
            };
            let mut for_ms = 0;
            let mut keep_ms = 0;
            let mut annotations = Vec::new();
            if r.record.is_some() {
                if r.for_.is_some() {
                    errs.push("invalid field 'for' in recording rule".into());
                }
                if r.keep_firing_for.is_some() {
                    errs.push("invalid field 'keep_firing_for' in recording rule".into());
                }
                if r.annotations.is_some() {
                    errs.push("invalid field 'annotations' in recording rule".into());
                }
            } else {
                if let Some(f) = &r.for_ {
                    match duration(f, "for") {
                        Ok(ms) => for_ms = ms,
                        Err(e) => errs.push(e),
                    }
                }
                if let Some(f) = &r.keep_firing_for {
                    match duration(f, "keep_firing_for") {
                        Ok(ms) => keep_ms = ms,
                        Err(e) => errs.push(e),
                    }
                }
                annotations = parse_labels(
                    &r.annotations.clone().unwrap_or_default(),
                    "annotations",
                    &mut errs,
                );
            }
            let mut labels: BTreeMap<String, (String, Template)> = group_labels
                .iter()
                .map(|(k, s, t)| (k.clone(), (s.clone(), t.clone())))
                .collect();
            for (k, s, t) in
                parse_labels(&r.labels.clone().unwrap_or_default(), "labels", &mut errs)
            {
                labels.insert(k, (s, t));
            }
            if r.record.is_some() {
                for (k, (s, t)) in &labels {
                    if !t.is_static() {
                        errs.push(format!(
                            "labels.{k}: recording rule labels must be plain text, not a template ({s:?})"
                        ));
                    }
                }
            }
            if !errs.is_empty() {
                bad = true;
                for e in errs {
                    let at = field_line(text, line, &e);
                    errors.push(mk(at, gname, (!name.is_empty()).then_some(&name), e));
                }
                continue;
            }
            let Some(expr) = expr else { continue };
            rules.push(Rule {
                name,
                kind: if r.record.is_some() {
                    RuleKind::Record
                } else {
                    RuleKind::Alert {
                        for_ms,
                        keep_firing_for_ms: keep_ms,
                        annotations,
                    }
                },
                expr_text,
                expr,
                labels: labels.into_iter().map(|(k, (s, t))| (k, s, t)).collect(),
                line,
            });
        }
        if !bad {
            groups.push(Group {
                name: g.name,
                file: path.to_path_buf(),
                interval_ms,
                limit: g.limit.unwrap_or(0) as usize,
                rules,
            });
        }
    }
    (groups, errors)
}

/// Loads every file; a file that cannot be read is one error.
pub fn load_rule_files(paths: &[PathBuf]) -> (Vec<Group>, Vec<RuleError>) {
    let mut groups = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        match std::fs::read_to_string(p) {
            Ok(text) => {
                let (g, e) = parse_rule_file(p, &text);
                groups.extend(g);
                errors.extend(e);
            }
            Err(e) => errors.push(RuleError {
                file: p.clone(),
                line: 0,
                group: None,
                rule: None,
                reason: format!("cannot read the rule file: {e}"),
            }),
        }
    }
    (groups, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_point_at_the_field_they_name() {
        let text = "groups:\n- name: a\n  rules:\n  - alert: A\n    expr: up\n    for: 1m\n    labels:\n      severity: page\n    annotations:\n      summary: x\n      description: y\n  - expr: up\n    alert: B\n";
        assert_eq!(field_line(text, 4, "expr: could not parse"), 5);
        assert_eq!(field_line(text, 4, "for: bad duration"), 6);
        assert_eq!(field_line(text, 4, "labels.severity: bad"), 8);
        assert_eq!(field_line(text, 4, "annotations.description: template"), 11);
        assert_eq!(field_line(text, 4, "annotations.missing: template"), 9);
        assert_eq!(field_line(text, 4, "only one of 'record' and 'alert'"), 4);
        // A rule whose `alert:` is not its first key: its `expr:` is above it.
        assert_eq!(field_line(text, 13, "expr: could not parse"), 12);
        assert_eq!(field_line(text, 0, "expr: x"), 0);
    }

    fn parse(text: &str) -> (Vec<Group>, Vec<String>) {
        let (g, e) = parse_rule_file(Path::new("r.yml"), text);
        (g, e.into_iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn loads_the_fleet_rules() {
        let text = std::fs::read_to_string("jobs/rules/fleet.yml").unwrap();
        let (groups, errors) = parse(&text);
        assert!(errors.is_empty(), "{errors:?}");
        let alerts: Vec<&str> = groups
            .iter()
            .flat_map(|g| g.rules.iter())
            .filter(|r| r.is_alert())
            .map(|r| r.name.as_str())
            .collect();
        assert!(alerts.contains(&"InstanceDown"), "{alerts:?}");
    }

    #[test]
    fn a_good_file() {
        let (g, e) = parse(
            "groups:\n- name: a\n  interval: 10s\n  labels: {team: infra}\n  rules:\n  - record: job:up:sum\n    expr: sum by (job) (up)\n  - alert: Down\n    expr: job:up:sum == 0\n    for: 1m\n    keep_firing_for: 30s\n    labels:\n      severity: page\n      priority: 1\n    annotations:\n      summary: '{{ $labels.job }} down'\n",
        );
        assert!(e.is_empty(), "{e:?}");
        let g = &g[0];
        assert_eq!(g.interval_ms, Some(10_000));
        assert_eq!(g.rules.len(), 2);
        let down = &g.rules[1];
        assert_eq!(down.line, 8);
        assert!(matches!(
            down.kind,
            RuleKind::Alert {
                for_ms: 60_000,
                keep_firing_for_ms: 30_000,
                ..
            }
        ));
        let labels: Vec<(&str, &str)> = down
            .labels
            .iter()
            .map(|(k, v, _)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            vec![("priority", "1"), ("severity", "page"), ("team", "infra")]
        );
    }

    #[test]
    fn errors_name_file_line_rule_and_reason() {
        // A syntax error.
        let (_, e) =
            parse("groups:\n- name: a\n  rules:\n  - alert: X\n    expr: up == 0\n   for: 1m\n");
        assert!(e[0].starts_with("r.yml:6"), "{e:?}");
        // An unknown field.
        let (_, e) =
            parse("groups:\n- name: a\n  rules:\n  - alert: X\n    expr: up == 0\n    fore: 1m\n");
        assert!(e[0].starts_with("r.yml:6"), "{e:?}");
        assert!(
            e[0].contains("rule \"X\"") && e[0].contains("unknown field `fore`"),
            "{e:?}"
        );
        // Semantic errors: every one reported, with its field's line (else its rule's); the
        // other group loads.
        let (g, e) = parse(
            "groups:\n- name: a\n  rules:\n  - alert: Bad\n    expr: up ==\n  - record: bad-name\n    expr: up\n  - alert: T\n    expr: up\n    annotations: {s: '{{ $labels.x '}\n- name: b\n  rules:\n  - record: ok\n    expr: up\n",
        );
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].name, "b");
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].starts_with("r.yml:5: group \"a\", rule \"Bad\": expr: could not parse"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with(
                "r.yml:6: group \"a\", rule \"bad-name\": invalid recording rule name"
            ),
            "{e:?}"
        );
        assert!(
            e[2].starts_with("r.yml:10: group \"a\", rule \"T\": annotations.s: template:"),
            "{e:?}"
        );
        // Recording rules take no `for`; durations must parse; groups are unique.
        let (_, e) = parse("groups:\n- name: a\n  rules:\n  - record: r\n    expr: up\n    for: 1m\n  - alert: A\n    expr: up\n    for: soon\n- name: a\n");
        assert!(
            e.iter()
                .any(|e| e.contains("invalid field 'for' in recording rule")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|e| e.contains("for: invalid duration \"soon\"")),
            "{e:?}"
        );
        assert!(e.iter().any(|e| e.contains("repeated")), "{e:?}");
        // Range vectors are not rule results.
        let (_, e) = parse("groups:\n- name: a\n  rules:\n  - record: r\n    expr: up[5m]\n");
        assert!(e[0].contains("instant vector or a scalar"), "{e:?}");
    }

    #[test]
    fn empty_files_are_fine() {
        assert!(parse("").1.is_empty());
        assert!(parse("groups: []\n").1.is_empty());
    }
}

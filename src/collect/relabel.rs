//! Prometheus relabeling (`relabel_configs`, `metric_relabel_configs`): the configuration as
//! Prometheus's scrape YAML writes it, and its application to a label set, step by step as
//! Prometheus's `relabel.Process` does (the same defaults, anchored regexes, `$1`/`${name}`
//! expansion, `hashmod` by MD5).
//!
//! ```
//! use tidemark::collect::relabel::{process, RelabelConfig};
//! let cfg: Vec<RelabelConfig> = yaml_serde::from_str(r#"
//! - source_labels: [__address__]
//!   regex: '([^:]+):\d+'
//!   target_label: host
//! - action: labeldrop
//!   regex: __.*
//! "#).unwrap();
//! let rules = cfg.iter().map(|c| c.compile()).collect::<Result<Vec<_>, _>>().unwrap();
//! let mut labels = vec![("__address__".to_string(), "web-1:9100".to_string())];
//! assert!(process(&rules, &mut labels));
//! assert_eq!(labels, vec![("host".to_string(), "web-1".to_string())]);
//! ```

use regex::Regex;
use serde::Deserialize;

/// What a relabel step does (`action`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Replace,
    Keep,
    Drop,
    #[serde(rename = "keepequal")]
    KeepEqual,
    #[serde(rename = "dropequal")]
    DropEqual,
    #[serde(rename = "hashmod")]
    HashMod,
    #[serde(rename = "labelmap")]
    LabelMap,
    #[serde(rename = "labeldrop")]
    LabelDrop,
    #[serde(rename = "labelkeep")]
    LabelKeep,
    Lowercase,
    Uppercase,
}

/// One relabel step as written in the YAML (unknown keys are errors).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    #[serde(default)]
    pub source_labels: Vec<String>,
    pub separator: Option<String>,
    pub target_label: Option<String>,
    pub regex: Option<String>,
    pub modulus: Option<u64>,
    pub replacement: Option<String>,
    #[serde(default)]
    pub action: Action,
}

/// A step ready to apply.
#[derive(Clone, Debug)]
pub struct Relabel {
    action: Action,
    source_labels: Vec<String>,
    separator: String,
    target_label: String,
    regex: Regex,
    modulus: u64,
    replacement: String,
}

/// Why a step cannot be used (the caller adds file and line).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RelabelError {
    #[error("invalid regex {regex:?}: {reason}")]
    Regex { regex: String, reason: String },
    #[error("relabel configuration for {action} action requires 'target_label' value")]
    NeedsTarget { action: &'static str },
    #[error("relabel configuration for hashmod action requires 'modulus' greater than 0")]
    NeedsModulus,
    #[error("{value:?} is an invalid 'target_label' for {action} action")]
    BadTarget { action: &'static str, value: String },
    #[error("{action} action requires only 'regex', and no other fields ({field} is set)")]
    OnlyRegex {
        action: &'static str,
        field: &'static str,
    },
    #[error("'replacement' can not be set for {action} action")]
    NoReplacement { action: &'static str },
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }
}

/// A label name, or (for `replace`) one with `$1`/`${name}` references in it.
fn valid_target(s: &str, expansions: bool) -> bool {
    let mut chars = s.chars().peekable();
    if s.is_empty() {
        return false;
    }
    let mut first = true;
    while let Some(c) = chars.next() {
        let ok = c == '_' || c.is_ascii_alphabetic() || (!first && c.is_ascii_digit());
        if !ok {
            if expansions && c == '$' {
                match chars.peek() {
                    Some('{') => {
                        chars.next();
                        let mut n = 0;
                        for c in chars.by_ref() {
                            if c == '}' {
                                break;
                            }
                            if !(c == '_' || c.is_ascii_alphanumeric()) {
                                return false;
                            }
                            n += 1;
                        }
                        if n == 0 {
                            return false;
                        }
                    }
                    Some(c) if *c == '_' || c.is_ascii_alphanumeric() => {}
                    _ => return false,
                }
            } else {
                return false;
            }
        }
        first = false;
    }
    true
}

impl RelabelConfig {
    /// Checks the step as Prometheus does and compiles its regex (anchored at both ends).
    pub fn compile(&self) -> Result<Relabel, RelabelError> {
        let a = self.action;
        let pattern = self.regex.clone().unwrap_or_else(|| "(.*)".into());
        let regex = Regex::new(&format!("^(?s:{pattern})$")).map_err(|e| RelabelError::Regex {
            regex: pattern.clone(),
            reason: e.to_string(),
        })?;
        let target = self.target_label.clone().unwrap_or_default();
        let needs_target = matches!(
            a,
            Action::Replace
                | Action::HashMod
                | Action::Lowercase
                | Action::Uppercase
                | Action::KeepEqual
                | Action::DropEqual
        );
        if needs_target && target.is_empty() {
            return Err(RelabelError::NeedsTarget { action: a.name() });
        }
        if needs_target && !valid_target(&target, a == Action::Replace) {
            return Err(RelabelError::BadTarget {
                action: a.name(),
                value: target,
            });
        }
        if a == Action::HashMod && self.modulus.unwrap_or(0) == 0 {
            return Err(RelabelError::NeedsModulus);
        }
        if matches!(a, Action::LabelDrop | Action::LabelKeep) {
            let set = [
                ("source_labels", !self.source_labels.is_empty()),
                ("separator", self.separator.is_some()),
                ("target_label", self.target_label.is_some()),
                ("modulus", self.modulus.is_some()),
                ("replacement", self.replacement.is_some()),
            ];
            if let Some((field, _)) = set.iter().find(|(_, s)| *s) {
                return Err(RelabelError::OnlyRegex {
                    action: a.name(),
                    field,
                });
            }
        }
        if matches!(a, Action::KeepEqual | Action::DropEqual) && self.replacement.is_some() {
            return Err(RelabelError::NoReplacement { action: a.name() });
        }
        Ok(Relabel {
            action: a,
            source_labels: self.source_labels.clone(),
            separator: self.separator.clone().unwrap_or_else(|| ";".into()),
            target_label: target,
            regex,
            modulus: self.modulus.unwrap_or(0),
            replacement: self.replacement.clone().unwrap_or_else(|| "$1".into()),
        })
    }
}

fn get<'a>(labels: &'a [(String, String)], name: &str) -> &'a str {
    labels
        .iter()
        .find(|(n, _)| n == name)
        .map_or("", |(_, v)| v.as_str())
}

fn set(labels: &mut Vec<(String, String)>, name: &str, value: String) {
    if value.is_empty() {
        labels.retain(|(n, _)| n != name);
        return;
    }
    match labels.iter_mut().find(|(n, _)| n == name) {
        Some(l) => l.1 = value,
        None => labels.push((name.to_string(), value)),
    }
}

/// The last 8 bytes of the MD5 of `s`, big-endian (Prometheus's `sum64(md5.Sum(...))`).
fn md5_sum64(s: &str) -> u64 {
    use md5::{Digest, Md5};
    let d = Md5::digest(s.as_bytes());
    u64::from_be_bytes(d[8..16].try_into().expect("16-byte digest"))
}

/// Applies `steps` in order; `false` when a step drops the target or series. The labels are
/// left sorted by name.
pub fn process(steps: &[Relabel], labels: &mut Vec<(String, String)>) -> bool {
    for r in steps {
        if !apply(r, labels) {
            return false;
        }
    }
    labels.sort();
    true
}

fn apply(r: &Relabel, labels: &mut Vec<(String, String)>) -> bool {
    let val = || -> String {
        let vals: Vec<&str> = r.source_labels.iter().map(|n| get(labels, n)).collect();
        vals.join(&r.separator)
    };
    match r.action {
        Action::Drop => !r.regex.is_match(&val()),
        Action::Keep => r.regex.is_match(&val()),
        Action::DropEqual => val() != get(labels, &r.target_label),
        Action::KeepEqual => val() == get(labels, &r.target_label),
        Action::Replace => {
            let v = val();
            if let Some(caps) = r.regex.captures(&v) {
                let mut target = String::new();
                caps.expand(&r.target_label, &mut target);
                if !valid_target(&target, false) {
                    return true;
                }
                let mut res = String::new();
                caps.expand(&r.replacement, &mut res);
                set(labels, &target, res);
            }
            true
        }
        Action::Lowercase => {
            let v = val().to_lowercase();
            set(labels, &r.target_label, v);
            true
        }
        Action::Uppercase => {
            let v = val().to_uppercase();
            set(labels, &r.target_label, v);
            true
        }
        Action::HashMod => {
            let m = md5_sum64(&val()) % r.modulus;
            set(labels, &r.target_label, m.to_string());
            true
        }
        Action::LabelMap => {
            let mut add = Vec::new();
            for (n, v) in labels.iter() {
                if let Some(caps) = r.regex.captures(n) {
                    let mut name = String::new();
                    caps.expand(&r.replacement, &mut name);
                    add.push((name, v.clone()));
                }
            }
            for (n, v) in add {
                set(labels, &n, v);
            }
            true
        }
        Action::LabelDrop => {
            labels.retain(|(n, _)| !r.regex.is_match(n));
            true
        }
        Action::LabelKeep => {
            labels.retain(|(n, _)| r.regex.is_match(n));
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(yaml: &str) -> Vec<Relabel> {
        let cfg: Vec<RelabelConfig> = yaml_serde::from_str(yaml).unwrap();
        cfg.iter().map(|c| c.compile().unwrap()).collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    // Cases from Prometheus's model/relabel/relabel_test.go.
    #[test]
    fn replace_with_captures_and_concatenated_sources() {
        let s = steps(
            "- source_labels: [a]\n  regex: 'f(.*)'\n  target_label: d\n  separator: ';'\n  replacement: 'ch${1}-ch${1}'\n",
        );
        let mut l = labels(&[("a", "foo"), ("b", "bar"), ("c", "baz")]);
        assert!(process(&s, &mut l));
        assert_eq!(get(&l, "d"), "choo-choo");

        let s = steps(
            "- source_labels: [a, b]\n  regex: 'f(.*);(.*)r'\n  target_label: a\n  separator: ';'\n  replacement: 'b${1}${2}m'\n- source_labels: [c, a]\n  regex: '(b).*b(.*)ba(.*)'\n  target_label: d\n  separator: ';'\n  replacement: '$1$2$2$3'\n",
        );
        let mut l = labels(&[("a", "foo"), ("b", "bar"), ("c", "baz")]);
        assert!(process(&s, &mut l));
        assert_eq!(
            l,
            labels(&[("a", "boobam"), ("b", "bar"), ("c", "baz"), ("d", "boooom")])
        );
    }

    #[test]
    fn replace_to_empty_deletes_and_no_match_leaves_alone() {
        let s =
            steps("- source_labels: [a]\n  regex: '(f).*'\n  target_label: a\n  replacement: ''\n");
        let mut l = labels(&[("a", "foo"), ("b", "x")]);
        assert!(process(&s, &mut l));
        assert_eq!(l, labels(&[("b", "x")]));
        let s = steps("- source_labels: [a]\n  regex: 'no'\n  target_label: z\n");
        let mut l = labels(&[("a", "foo")]);
        assert!(process(&s, &mut l));
        assert_eq!(l, labels(&[("a", "foo")]));
        // A target name that expands to an invalid one changes nothing.
        let s = steps("- source_labels: [a]\n  regex: '(.*)'\n  target_label: '${1}'\n");
        let mut l = labels(&[("a", "some-name-0")]);
        assert!(process(&s, &mut l));
        assert_eq!(l, labels(&[("a", "some-name-0")]));
        let mut l = labels(&[("a", "some_name_0")]);
        assert!(process(&s, &mut l));
        assert_eq!(get(&l, "some_name_0"), "some_name_0");
    }

    #[test]
    fn keep_drop_and_the_equal_variants() {
        let keep = steps("- source_labels: [a]\n  regex: 'f.*'\n  action: keep\n");
        assert!(process(&keep, &mut labels(&[("a", "foo")])));
        assert!(!process(&keep, &mut labels(&[("a", "boo")])));
        // Anchored: `f` alone does not match "foo".
        let drop = steps("- source_labels: [a]\n  regex: 'f'\n  action: drop\n");
        assert!(process(&drop, &mut labels(&[("a", "foo")])));
        let ke = steps("- source_labels: [a]\n  target_label: b\n  action: keepequal\n");
        assert!(process(&ke, &mut labels(&[("a", "x"), ("b", "x")])));
        assert!(!process(&ke, &mut labels(&[("a", "x"), ("b", "y")])));
        let de = steps("- source_labels: [a]\n  target_label: b\n  action: dropequal\n");
        assert!(!process(&de, &mut labels(&[("a", "x"), ("b", "x")])));
    }

    #[test]
    fn hashmod_matches_prometheus() {
        // Prometheus's test (model/relabel): "baz" hashes to 976 modulo 1000.
        let s =
            steps("- source_labels: [c]\n  target_label: d\n  action: hashmod\n  modulus: 1000\n");
        let mut l = labels(&[("a", "foo"), ("b", "bar"), ("c", "baz")]);
        assert!(process(&s, &mut l));
        assert_eq!(get(&l, "d"), "976");
    }

    #[test]
    fn labelmap_labeldrop_labelkeep_and_case() {
        let s = steps("- action: labelmap\n  regex: '__meta_(my.*)'\n  replacement: '${1}'\n");
        let mut l = labels(&[("__meta_my_bar", "aaa"), ("__meta_other", "x")]);
        assert!(process(&s, &mut l));
        assert_eq!(get(&l, "my_bar"), "aaa");
        assert_eq!(get(&l, "__meta_my_bar"), "aaa");
        let s = steps("- action: labeldrop\n  regex: '__meta.*'\n");
        assert!(process(&s, &mut l));
        assert_eq!(l, labels(&[("my_bar", "aaa")]));
        let s = steps("- action: labelkeep\n  regex: 'a|b'\n");
        let mut l = labels(&[("a", "1"), ("b", "2"), ("c", "3")]);
        assert!(process(&s, &mut l));
        assert_eq!(l, labels(&[("a", "1"), ("b", "2")]));
        let s = steps("- source_labels: [a]\n  target_label: up\n  action: uppercase\n- source_labels: [b]\n  target_label: low\n  action: lowercase\n");
        let mut l = labels(&[("a", "foo"), ("b", "BaR")]);
        assert!(process(&s, &mut l));
        assert_eq!((get(&l, "up"), get(&l, "low")), ("FOO", "bar"));
    }

    #[test]
    fn invalid_steps_say_why() {
        let bad = |y: &str| -> String {
            let cfg: Vec<RelabelConfig> = yaml_serde::from_str(y).unwrap();
            cfg[0].compile().unwrap_err().to_string()
        };
        assert!(bad("- regex: '(['\n  target_label: x\n").contains("invalid regex"));
        assert!(bad("- source_labels: [a]\n").contains("requires 'target_label'"));
        assert!(bad("- action: hashmod\n  target_label: x\n").contains("modulus"));
        assert!(
            bad("- action: labeldrop\n  regex: x\n  source_labels: [a]\n")
                .contains("source_labels")
        );
        assert!(
            bad("- source_labels: [a]\n  target_label: '1x'\n  action: lowercase\n")
                .contains("invalid 'target_label'")
        );
        let e = yaml_serde::from_str::<Vec<RelabelConfig>>("- action: explode\n").unwrap_err();
        assert!(e.to_string().contains("unknown variant"), "{e}");
        let e = yaml_serde::from_str::<Vec<RelabelConfig>>("- regexp: x\n").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }
}

//! The notification configuration: an Alertmanager `alertmanager.yml` subset (`global`,
//! `route` tree, `receivers`, `inhibit_rules`, `templates`) plus Tidemark's `sms_configs`
//! receiver and a `delivery` section for the outbox's retry policy. Unknown keys are errors
//! that name the line; templates are checked when the file loads.
//!
//! ```yaml
//! global:
//!   smtp_smarthost: mail.example.com:587
//!   smtp_from: tidemark@example.com
//! route:
//!   receiver: ops
//!   group_by: [alertname, pool]
//!   group_wait: 0s
//!   group_interval: 1m
//!   repeat_interval: 4h
//!   routes:
//!     - matchers: ['severity="page"']
//!       receiver: pager
//!       continue: true
//! receivers:
//!   - name: ops
//!     webhook_configs: [{url: 'http://hooks.example.com/alerts'}]
//!   - name: pager
//!     pagerduty_configs: [{routing_key: 'R0UT1NG'}]
//! inhibit_rules:
//!   - source_matchers: ['severity="page"']
//!     target_matchers: ['severity="warning"']
//!     equal: [instance]
//! delivery:
//!   initial_backoff: 500ms
//!   max_backoff: 1m
//!   give_up_after: 24h
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use lettre::message::header::HeaderName;
use serde::{Deserialize, Deserializer};

use super::templates;
use crate::alert::template::Defs;

use crate::time::parse_duration_ms;

/// A configuration error with its file and line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub reason: String,
}

/// A duration in ms written as `30s`, `5m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub u64);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration_ms(s.trim())
            .filter(|v| *v >= 0 && s.trim().starts_with(|c: char| c.is_ascii_digit()))
            .map(|v| Dur(v as u64))
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid duration {s:?} (use e.g. \"30s\", \"5m\")"
                ))
            })
    }
}

/// One label matcher: `name="v"`, `name!="v"`, `name=~"re"`, `name!~"re"`.
#[derive(Clone, Debug)]
pub struct LabelMatcher {
    pub name: String,
    pub op: MatchType,
    pub value: String,
    re: Option<regex::Regex>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum MatchType {
    Eq,
    Ne,
    Re,
    Nre,
}

impl LabelMatcher {
    pub fn new(name: &str, op: MatchType, value: &str) -> Result<Self, String> {
        let re = match op {
            MatchType::Re | MatchType::Nre => Some(
                regex::Regex::new(&format!("^(?s:{value})$"))
                    .map_err(|e| format!("invalid regex {value:?}: {e}"))?,
            ),
            _ => None,
        };
        Ok(LabelMatcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            re,
        })
    }

    /// Parses `name="value"` (quotes optional, as Alertmanager allows).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let idx = s
            .find(['=', '!'])
            .ok_or_else(|| format!("bad matcher {s:?}: expected name=\"value\", name!=\"value\", name=~\"re\" or name!~\"re\""))?;
        let name = s[..idx].trim();
        let rest = &s[idx..];
        let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
            (MatchType::Re, v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            (MatchType::Nre, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (MatchType::Ne, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (MatchType::Eq, v)
        } else {
            return Err(format!("bad matcher {s:?}: unknown operator"));
        };
        if name.is_empty() || !crate::model::is_valid_label_name(name) {
            return Err(format!("bad matcher {s:?}: invalid label name {name:?}"));
        }
        let v = value.trim();
        let v = if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
            serde_json::from_str::<String>(v).map_err(|e| format!("bad matcher {s:?}: {e}"))?
        } else {
            v.to_string()
        };
        LabelMatcher::new(name, op, &v)
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map_or("", String::as_str);
        match self.op {
            MatchType::Eq => v == self.value,
            MatchType::Ne => v != self.value,
            MatchType::Re => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchType::Nre => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

impl std::fmt::Display for LabelMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            MatchType::Eq => "=",
            MatchType::Ne => "!=",
            MatchType::Re => "=~",
            MatchType::Nre => "!~",
        };
        write!(f, "{}{}{:?}", self.name, op, self.value)
    }
}

fn matchers_de<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<LabelMatcher>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    v.iter()
        .map(|s| LabelMatcher::parse(s).map_err(serde::de::Error::custom))
        .collect()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Global {
    pub resolve_timeout: Dur,
    pub smtp_smarthost: String,
    pub smtp_from: String,
    pub smtp_hello: String,
    pub smtp_auth_username: String,
    pub smtp_auth_password: String,
    pub smtp_require_tls: bool,
    pub pagerduty_url: String,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            resolve_timeout: Dur(300_000),
            smtp_smarthost: String::new(),
            smtp_from: String::new(),
            smtp_hello: "localhost".into(),
            smtp_auth_username: String::new(),
            smtp_auth_password: String::new(),
            smtp_require_tls: true,
            pagerduty_url: "https://events.pagerduty.com/v2/enqueue".into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteYaml {
    #[serde(default)]
    receiver: Option<String>,
    #[serde(default)]
    group_by: Option<Vec<String>>,
    #[serde(default)]
    group_wait: Option<Dur>,
    #[serde(default)]
    group_interval: Option<Dur>,
    #[serde(default)]
    repeat_interval: Option<Dur>,
    #[serde(default, deserialize_with = "matchers_de")]
    matchers: Vec<LabelMatcher>,
    #[serde(default)]
    r#match: BTreeMap<String, String>,
    #[serde(default)]
    match_re: BTreeMap<String, String>,
    #[serde(default)]
    r#continue: bool,
    #[serde(default)]
    routes: Vec<RouteYaml>,
}

/// A node of the route tree with its inherited settings resolved.
#[derive(Clone, Debug)]
pub struct Route {
    pub receiver: String,
    /// `None`: group by all labels (`group_by: ['...']`).
    pub group_by: Option<Vec<String>>,
    pub group_wait: u64,
    pub group_interval: u64,
    pub repeat_interval: u64,
    pub matchers: Vec<LabelMatcher>,
    pub continue_: bool,
    pub routes: Vec<Route>,
    /// Alertmanager's route key: `{}/{matchers}/...`.
    pub key: String,
}

impl Route {
    /// The routes an alert goes to (depth first, `continue` honoured); the root if no child
    /// matches.
    pub fn matching<'a>(&'a self, labels: &BTreeMap<String, String>, out: &mut Vec<&'a Route>) {
        let mut matched = false;
        for r in &self.routes {
            if r.matchers.iter().all(|m| m.matches(labels)) {
                let before = out.len();
                r.matching(labels, out);
                matched |= out.len() > before;
                if !r.continue_ {
                    break;
                }
            }
        }
        if !matched {
            out.push(self);
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    #[serde(default = "yes")]
    pub send_resolved: bool,
    #[serde(default)]
    pub max_alerts: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub to: String,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub smarthost: Option<String>,
    #[serde(default)]
    pub hello: Option<String>,
    #[serde(default)]
    pub auth_username: Option<String>,
    #[serde(default)]
    pub auth_password: Option<String>,
    /// STARTTLS required (default from `global.smtp_require_tls`).
    #[serde(default)]
    pub require_tls: Option<bool>,
    /// Implicit TLS (SMTPS, port 465).
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub send_resolved: bool,
    /// Header templates; `Subject` defaults to `{{ template "email.default.subject" . }}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// An HTML body template (sent as `text/html`, or beside `text` as
    /// `multipart/alternative`).
    #[serde(default)]
    pub html: Option<String>,
    /// A plain-text body template; with neither `html` nor `text` the body is
    /// `{{ template "email.default.text" . }}`.
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerdutyConfig {
    pub routing_key: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default = "yes")]
    pub send_resolved: bool,
    #[serde(default = "critical")]
    pub severity: String,
    /// The summary template (default `{{ template "pagerduty.default.description" . }}`).
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub client: Option<String>,
    #[serde(default)]
    pub client_url: Option<String>,
    /// `custom_details` templates, over the defaults `firing`, `num_firing`,
    /// `num_resolved`, `group_labels`.
    #[serde(default)]
    pub details: BTreeMap<String, String>,
}

/// Tidemark's SMS receiver: a Twilio-style gateway (`POST` form `To`, `From`, `Body` with HTTP
/// basic auth `account_sid:auth_token`), one request per number.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    pub url: String,
    #[serde(default)]
    pub account_sid: String,
    #[serde(default)]
    pub auth_token: String,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub send_resolved: bool,
    /// The message template (default `{{ template "sms.default.text" . }}`), cut at 1,600
    /// characters.
    #[serde(default)]
    pub text: Option<String>,
}

fn yes() -> bool {
    true
}

fn critical() -> String {
    "critical".into()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receiver {
    pub name: String,
    #[serde(default)]
    pub webhook_configs: Vec<WebhookConfig>,
    #[serde(default)]
    pub email_configs: Vec<EmailConfig>,
    #[serde(default)]
    pub pagerduty_configs: Vec<PagerdutyConfig>,
    #[serde(default)]
    pub sms_configs: Vec<SmsConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRule {
    #[serde(default, deserialize_with = "matchers_de")]
    pub source_matchers: Vec<LabelMatcher>,
    #[serde(default, deserialize_with = "matchers_de")]
    pub target_matchers: Vec<LabelMatcher>,
    #[serde(default)]
    pub equal: Vec<String>,
}

/// The outbox's retry policy.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    pub initial_backoff: Dur,
    pub max_backoff: Dur,
    /// A notification still failing this long after it was queued is dropped (and counted).
    pub give_up_after: Dur,
    /// Per request.
    pub timeout: Dur,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            initial_backoff: Dur(500),
            max_backoff: Dur(60_000),
            give_up_after: Dur(24 * 3_600_000),
            timeout: Dur(10_000),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileYaml {
    #[serde(default)]
    global: Global,
    route: RouteYaml,
    #[serde(default)]
    receivers: Vec<Receiver>,
    #[serde(default)]
    inhibit_rules: Vec<InhibitRule>,
    #[serde(default)]
    templates: Vec<String>,
    #[serde(default)]
    delivery: Delivery,
}

/// A loaded configuration.
#[derive(Clone, Debug)]
pub struct NotifyConfig {
    pub global: Global,
    pub route: Route,
    pub receivers: BTreeMap<String, Receiver>,
    pub inhibit_rules: Vec<InhibitRule>,
    pub delivery: Delivery,
    /// The defaults and the `templates:` files' definitions.
    pub templates: Arc<Defs>,
    /// The file's text (shown by `/api/v2/status`).
    pub original: String,
}

/// The configuration `tidemark up` uses when none is given: every alert to the log only (no
/// receiver integrations), grouped by `alertname`.
pub const DEFAULT_CONFIG: &str = "route:\n  receiver: log\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1m\n  repeat_interval: 4h\nreceivers:\n  - name: log\n";

fn build_route(
    y: RouteYaml,
    parent: Option<&Route>,
    receivers: &BTreeMap<String, Receiver>,
) -> Result<Route, String> {
    let mut matchers = y.matchers;
    for (k, v) in &y.r#match {
        matchers.push(LabelMatcher::new(k, MatchType::Eq, v)?);
    }
    for (k, v) in &y.match_re {
        matchers.push(LabelMatcher::new(k, MatchType::Re, v)?);
    }
    let receiver = match (y.receiver, parent) {
        (Some(r), _) => r,
        (None, Some(p)) => p.receiver.clone(),
        (None, None) => return Err("route: the root route needs a receiver".into()),
    };
    if !receivers.contains_key(&receiver) {
        return Err(format!(
            "route: receiver {receiver:?} is not defined in receivers"
        ));
    }
    let group_by = match y.group_by {
        Some(g) if g.iter().any(|s| s == "...") => None,
        Some(g) => {
            for l in &g {
                if !crate::model::is_valid_label_name(l) {
                    return Err(format!("route: group_by: invalid label name {l:?}"));
                }
            }
            let mut g = g;
            g.sort();
            g.dedup();
            Some(g)
        }
        None => parent.map_or(Some(Vec::new()), |p| p.group_by.clone()),
    };
    let inherit = |v: Option<Dur>, p: Option<u64>, d: u64| v.map(|d| d.0).or(p).unwrap_or(d);
    let group_interval = inherit(y.group_interval, parent.map(|p| p.group_interval), 300_000);
    if group_interval == 0 {
        return Err("route: group_interval must be positive".into());
    }
    let key = {
        let m: Vec<String> = matchers.iter().map(|m| m.to_string()).collect();
        let mine = format!("{{{}}}", m.join(","));
        match parent {
            Some(p) => format!("{}/{mine}", p.key),
            None => "{}".into(),
        }
    };
    let mut route = Route {
        receiver,
        group_by,
        group_wait: inherit(y.group_wait, parent.map(|p| p.group_wait), 30_000),
        group_interval,
        repeat_interval: inherit(
            y.repeat_interval,
            parent.map(|p| p.repeat_interval),
            4 * 3_600_000,
        ),
        matchers,
        continue_: y.r#continue,
        routes: Vec::new(),
        key,
    };
    let mut children = Vec::new();
    for c in y.routes {
        children.push(build_route(c, Some(&route), receivers)?);
    }
    route.routes = children;
    Ok(route)
}

/// Parses and checks a configuration; the error names `path`, the line and the reason.
pub fn parse_notify_config(path: &Path, text: &str) -> Result<NotifyConfig, ConfigError> {
    let file = path.display().to_string();
    let e = |line: usize, reason: String| ConfigError {
        file: file.clone(),
        line,
        reason,
    };
    let y: FileYaml = yaml_serde::from_str(text).map_err(|x| {
        let mut msg = x.to_string();
        if let Some(i) = msg.find(" at line ") {
            msg.truncate(i);
        }
        e(x.location().map_or(0, |l| l.line()), msg)
    })?;
    let line_of = |needle: &str| {
        text.lines()
            .position(|l| l.contains(needle))
            .map_or(0, |i| i + 1)
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let defs = templates::load(base, &y.templates).map_err(|t| {
        // `line N: reason` from the template parser becomes the error's line.
        let (line, reason) = t
            .reason
            .strip_prefix("line ")
            .and_then(|r| r.split_once(": "))
            .and_then(|(n, r)| Some((n.parse().ok()?, r.to_string())))
            .unwrap_or((0, t.reason.clone()));
        ConfigError {
            file: t.file,
            line,
            reason: format!("(a template file of {file}'s templates:) {reason}"),
        }
    })?;
    let mut receivers = BTreeMap::new();
    for r in y.receivers {
        let l = line_of(&format!("name: {}", r.name));
        for (field, src) in template_fields(&r) {
            templates::check(&defs, src).map_err(|t| {
                let first = src.lines().next().unwrap_or(src);
                e(
                    line_of(first),
                    format!("receiver {:?}: {field}: template: {}", r.name, t.0),
                )
            })?;
        }
        for (i, m) in r.email_configs.iter().enumerate() {
            for h in m.headers.keys() {
                if HeaderName::new_from_ascii(h.clone()).is_err() {
                    return Err(e(
                        line_of(&format!("{h}:")),
                        format!(
                            "receiver {:?}: email_configs[{i}].headers: {h:?} is not a valid header name",
                            r.name
                        ),
                    ));
                }
            }
        }
        for w in &r.webhook_configs {
            check_url(&w.url).map_err(|m| {
                e(
                    line_of(&w.url),
                    format!("receiver {:?}: webhook_configs.url: {m}", r.name),
                )
            })?;
        }
        for s in &r.sms_configs {
            check_url(&s.url).map_err(|m| {
                e(
                    line_of(&s.url),
                    format!("receiver {:?}: sms_configs.url: {m}", r.name),
                )
            })?;
            if s.to.is_empty() {
                return Err(e(
                    l,
                    format!(
                        "receiver {:?}: sms_configs.to: at least one number is needed",
                        r.name
                    ),
                ));
            }
        }
        for p in &r.pagerduty_configs {
            if p.routing_key.is_empty() {
                return Err(e(
                    l,
                    format!(
                        "receiver {:?}: pagerduty_configs.routing_key must be set",
                        r.name
                    ),
                ));
            }
            if let Some(u) = &p.url {
                check_url(u).map_err(|m| {
                    e(
                        line_of(u),
                        format!("receiver {:?}: pagerduty_configs.url: {m}", r.name),
                    )
                })?;
            }
        }
        for m in &r.email_configs {
            let host = m
                .smarthost
                .clone()
                .unwrap_or_else(|| y.global.smtp_smarthost.clone());
            if host
                .rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
            {
                return Err(e(l, format!("receiver {:?}: email_configs: smarthost {host:?} must be host:port (set it here or as global.smtp_smarthost)", r.name)));
            }
            if m.from
                .clone()
                .unwrap_or_else(|| y.global.smtp_from.clone())
                .is_empty()
            {
                return Err(e(l, format!("receiver {:?}: email_configs: from is not set (set it here or as global.smtp_from)", r.name)));
            }
        }
        if receivers.insert(r.name.clone(), r.clone()).is_some() {
            return Err(e(l, format!("receiver {:?} is defined twice", r.name)));
        }
    }
    let route = build_route(y.route, None, &receivers).map_err(|m| e(line_of("route:"), m))?;
    Ok(NotifyConfig {
        global: y.global,
        route,
        receivers,
        inhibit_rules: y.inhibit_rules,
        delivery: y.delivery,
        templates: defs,
        original: text.to_string(),
    })
}

/// Every template of a receiver, named as in the file (`email_configs[0].html`).
fn template_fields(r: &Receiver) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    for (i, c) in r.email_configs.iter().enumerate() {
        for (h, v) in &c.headers {
            out.push((format!("email_configs[{i}].headers.{h}"), v.as_str()));
        }
        for (name, v) in [("html", &c.html), ("text", &c.text)] {
            if let Some(v) = v {
                out.push((format!("email_configs[{i}].{name}"), v.as_str()));
            }
        }
    }
    for (i, c) in r.pagerduty_configs.iter().enumerate() {
        out.push((
            format!("pagerduty_configs[{i}].severity"),
            c.severity.as_str(),
        ));
        for (name, v) in [
            ("description", &c.description),
            ("client", &c.client),
            ("client_url", &c.client_url),
        ] {
            if let Some(v) = v {
                out.push((format!("pagerduty_configs[{i}].{name}"), v.as_str()));
            }
        }
        for (k, v) in &c.details {
            out.push((format!("pagerduty_configs[{i}].details.{k}"), v.as_str()));
        }
    }
    for (i, c) in r.sms_configs.iter().enumerate() {
        if let Some(v) = &c.text {
            out.push((format!("sms_configs[{i}].text"), v.as_str()));
        }
    }
    out
}

fn check_url(u: &str) -> Result<(), String> {
    if !(u.starts_with("http://") || u.starts_with("https://")) {
        return Err(format!("{u:?} is not an http:// or https:// URL"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(p: &[(&str, &str)]) -> BTreeMap<String, String> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn route_tree_with_continue_and_inheritance() {
        let c = parse_notify_config(
            Path::new("am.yml"),
            "route:\n  receiver: a\n  group_by: [alertname]\n  group_wait: 1s\n  routes:\n  - matchers: ['severity=\"page\"']\n    receiver: b\n    continue: true\n  - matchers: ['team=~\"db|web\"']\n    receiver: c\n    group_by: ['...']\nreceivers:\n- name: a\n- name: b\n- name: c\n",
        )
        .unwrap();
        let mut out = Vec::new();
        c.route
            .matching(&labels(&[("severity", "page"), ("team", "db")]), &mut out);
        let got: Vec<&str> = out.iter().map(|r| r.receiver.as_str()).collect();
        assert_eq!(got, vec!["b", "c"]);
        assert_eq!(out[0].group_wait, 1000, "inherited");
        assert_eq!(out[0].group_by, Some(vec!["alertname".to_string()]));
        assert_eq!(out[1].group_by, None);
        assert_eq!(out[0].key, "{}/{severity=\"page\"}");
        let mut out = Vec::new();
        c.route.matching(&labels(&[("team", "x")]), &mut out);
        assert_eq!(out[0].receiver, "a");
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_notify_config(
            Path::new("am.yml"),
            "route:\n  receiver: a\n  group_wiat: 1s\nreceivers:\n- name: a\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.to_string().contains("unknown field `group_wiat`"), "{e}");
        let e = parse_notify_config(
            Path::new("am.yml"),
            "route:\n  receiver: nope\nreceivers:\n- name: a\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("receiver \"nope\" is not defined"),
            "{e}"
        );
        let e = parse_notify_config(
            Path::new("am.yml"),
            "route:\n  receiver: a\nreceivers:\n- name: a\n  webhook_configs:\n  - url: ftp://x\n",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("am.yml:6: receiver \"a\": webhook_configs.url"),
            "{e}"
        );
        let e = LabelMatcher::parse("severity~page").unwrap_err();
        assert!(e.contains("expected name=\"value\""), "{e}");
        assert!(parse_notify_config(Path::new("d"), DEFAULT_CONFIG).is_ok());
        let example = include_str!("../../../jobs/alertmanager.yml");
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/alertmanager.yml");
        let c = parse_notify_config(&path, example).unwrap();
        // Its templates (jobs/templates/fleet.tmpl) render.
        let mut n = templates::sample();
        for a in &mut n.alerts {
            a.labels.insert("pool".into(), "p7".into());
        }
        let subject = templates::render(
            &c.templates,
            &c.receivers["ops"].email_configs[0].headers["Subject"],
            &n,
        )
        .unwrap();
        assert_eq!(subject, "[FIRING:1] Example in pool p7");
        let text = templates::render(
            &c.templates,
            c.receivers["ops"].email_configs[0].text.as_deref().unwrap(),
            &n,
        )
        .unwrap();
        assert_eq!(text, "FIRING since 2023-11-14 22:13:20 UTC: a:9100\n  example on a:9100\nRESOLVED at 22:14:20 UTC: b:9100\nhttp://localhost:9470/#/alerts?receiver=example");
    }
}

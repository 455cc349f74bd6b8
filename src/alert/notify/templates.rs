//! Notification templates, as Alertmanager has them: the configuration's `templates:` files
//! of `{{ define "name" }}` blocks, the default definitions (`email.default.subject`,
//! `email.default.text`, `__subject`, `__text_alert_list`, `pagerduty.default.*`,
//! `sms.default.text`: the texts receivers send when no template is configured), and the
//! data a template sees (Alertmanager's `template.Data`: `.Receiver`, `.Status`, `.Alerts`
//! with `.Firing`/`.Resolved`, `.GroupLabels`, `.CommonLabels`, `.CommonAnnotations`,
//! `.ExternalURL`, `.GroupKey`; label maps with `.SortedPairs`, `.Names`, `.Values`,
//! `.Remove`; `.StartsAt`/`.EndsAt` as times with `.Format`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::receivers::{Notification, NotifiedAlert};
use crate::alert::template::{parse_defs, Defs, Template, TemplateError, Value, ZERO_TIME_MS};

/// Alertmanager's default definitions that Tidemark's receivers use (its HTML e-mail is not
/// among them: the default e-mail is plain text).
pub const DEFAULT_TEMPLATES: &str = r#"
{{ define "__alertmanager" }}Tidemark{{ end }}
{{ define "__alertmanagerURL" }}{{ .ExternalURL }}/#/alerts?receiver={{ .Receiver | urlquery }}{{ end }}
{{ define "__subject" }}[{{ .Status | toUpper }}{{ if eq .Status "firing" }}:{{ .Alerts.Firing | len }}{{ end }}] {{ .GroupLabels.SortedPairs.Values | join " " }} {{ if gt (len .CommonLabels) (len .GroupLabels) }}({{ with .CommonLabels.Remove .GroupLabels.Names }}{{ .Values | join " " }}{{ end }}){{ end }}{{ end }}
{{ define "__description" }}{{ end }}
{{ define "__text_alert_list" }}{{ range . }}Labels:
{{ range .Labels.SortedPairs }} - {{ .Name }} = {{ .Value }}
{{ end }}Annotations:
{{ range .Annotations.SortedPairs }} - {{ .Name }} = {{ .Value }}
{{ end }}Source: {{ .GeneratorURL }}
{{ end }}{{ end }}
{{ define "email.default.subject" }}{{ template "__subject" . }}{{ end }}
{{ define "__tidemark_alert_list" }}{{ range . }}
Labels:
{{ range .Labels.SortedPairs }} - {{ .Name }} = {{ .Value }}
{{ end }}{{ if .Annotations }}Annotations:
{{ range .Annotations.SortedPairs }} - {{ .Name }} = {{ .Value }}
{{ end }}{{ end }}Started: {{ .StartsAt.Format "2006-01-02T15:04:05.999Z07:00" }}
{{ if eq .Status "resolved" }}Ended: {{ .EndsAt.Format "2006-01-02T15:04:05.999Z07:00" }}
{{ end }}Source: {{ .GeneratorURL }}
{{ end }}{{ end }}
{{ define "email.default.text" }}{{ with .Alerts.Firing }}Firing alerts ({{ len . }}):
{{ template "__tidemark_alert_list" . }}
{{ end }}{{ with .Alerts.Resolved }}Resolved alerts ({{ len . }}):
{{ template "__tidemark_alert_list" . }}
{{ end }}{{ end }}
{{ define "pagerduty.default.description" }}{{ template "__subject" . }}{{ end }}
{{ define "pagerduty.default.client" }}{{ template "__alertmanager" . }}{{ end }}
{{ define "pagerduty.default.clientURL" }}{{ template "__alertmanagerURL" . }}{{ end }}
{{ define "pagerduty.default.instances" }}{{ template "__text_alert_list" . }}{{ end }}
{{ define "sms.default.text" }}{{ template "__subject" . }}{{ range $i, $a := .Alerts }}{{ if lt $i 3 }}{{ with $a.Annotations.summary }}
{{ . }}{{ end }}{{ end }}{{ end }}{{ end }}
"#;

/// The default definitions, parsed once.
pub fn default_defs() -> &'static Defs {
    static D: OnceLock<Defs> = OnceLock::new();
    D.get_or_init(|| parse_defs(DEFAULT_TEMPLATES).expect("the default templates parse"))
}

/// Why a `templates:` entry did not load: the file, the line when known, the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct TemplateFileError {
    pub file: String,
    pub reason: String,
}

/// The files a `templates:` pattern names: a path relative to the configuration file's
/// directory whose last component may hold `*` and `?` wildcards (Alertmanager's globs).
/// A pattern that matches nothing is not an error (as in Alertmanager); a plain path that
/// does not exist is.
pub fn expand_pattern(base: &Path, pattern: &str) -> Result<Vec<PathBuf>, TemplateFileError> {
    let path = base.join(pattern);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return Ok(vec![path]);
    }
    let dir = path.parent().unwrap_or(base);
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| wildcard(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    Ok(out)
}

fn wildcard(pat: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pat.chars().collect(), s.chars().collect());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Loads the `templates:` files (relative to `base`) over the defaults; a later file's
/// `define` replaces an earlier one of the same name.
pub fn load(base: &Path, patterns: &[String]) -> Result<Arc<Defs>, TemplateFileError> {
    let mut defs = default_defs().clone();
    for pat in patterns {
        for f in expand_pattern(base, pat)? {
            let file = f.display().to_string();
            let text = std::fs::read_to_string(&f).map_err(|e| TemplateFileError {
                file: file.clone(),
                reason: format!("cannot read the template file: {e}"),
            })?;
            let d = parse_defs(&text).map_err(|e| TemplateFileError {
                file: file.clone(),
                reason: e.0,
            })?;
            defs.merge(d);
        }
    }
    Ok(Arc::new(defs))
}

fn alert_value(a: &NotifiedAlert) -> Value {
    Value::record(
        "Alert",
        vec![
            (
                "Status",
                Value::str(if a.resolved() { "resolved" } else { "firing" }),
            ),
            ("Labels", Value::map(a.labels.clone())),
            ("Annotations", Value::map(a.annotations.clone())),
            ("StartsAt", Value::time(a.starts_at)),
            (
                "EndsAt",
                Value::time(if a.resolved() {
                    a.ends_at
                } else {
                    ZERO_TIME_MS
                }),
            ),
            ("GeneratorURL", Value::str(a.generator_url.clone())),
            ("Fingerprint", Value::str(a.fingerprint.clone())),
        ],
    )
}

/// Alertmanager's `template.Data` of a notification.
pub fn data(n: &Notification) -> Value {
    Value::record(
        "Data",
        vec![
            ("Receiver", Value::str(n.receiver.clone())),
            ("Status", Value::str(n.status())),
            (
                "Alerts",
                Value::list(n.alerts.iter().map(alert_value).collect()),
            ),
            ("GroupLabels", Value::map(n.group_labels.clone())),
            ("CommonLabels", Value::map(n.common_labels())),
            ("CommonAnnotations", Value::map(n.common_annotations())),
            ("ExternalURL", Value::str(n.external_url.clone())),
            ("GroupKey", Value::str(n.group_key.clone())),
            ("TruncatedAlerts", Value::int(n.truncated as i64)),
        ],
    )
}

/// Expands the configured template text `src` for `n`.
pub fn render(defs: &Defs, src: &str, n: &Notification) -> Result<String, TemplateError> {
    Template::parse_with(src, defs)?.expand_value(&data(n))
}

/// `src` expanded for `n`; when it fails, `fallback` with the failure logged (a notification
/// with the default text beats none).
pub fn render_or(
    defs: &Defs,
    what: &str,
    src: Option<&str>,
    n: &Notification,
    fallback: impl FnOnce() -> String,
) -> String {
    let Some(src) = src else {
        return fallback();
    };
    match render(defs, src, n) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(
                "notifier: receiver {:?}: {what}: template failed, sending the default text: {e}",
                n.receiver
            );
            fallback()
        }
    }
}

/// A notification every configured template is tried on when the configuration loads: one
/// firing and one resolved alert.
pub fn sample() -> Notification {
    let alert = |instance: &str, resolved: bool| NotifiedAlert {
        labels: [
            ("alertname", "Example"),
            ("instance", instance),
            ("severity", "warning"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        annotations: [("summary".to_string(), format!("example on {instance}"))].into(),
        starts_at: 1_700_000_000_000,
        ends_at: if resolved { 1_700_000_060_000 } else { 0 },
        generator_url: "http://localhost:9470/graph".into(),
        fingerprint: "0000000000000000".into(),
    };
    Notification {
        receiver: "example".into(),
        group_key: "{}:{alertname=\"Example\"}".into(),
        group_labels: [("alertname".to_string(), "Example".to_string())].into(),
        alerts: vec![alert("a:9100", false), alert("b:9100", true)],
        external_url: "http://localhost:9470".into(),
        truncated: 0,
    }
}

/// Checks a configured template when the configuration loads: it must parse, every
/// `{{ template }}` it calls must exist and every field it reads must be one the data has
/// (tried on [`sample`]). Errors that depend on the data (an index past the end) are left to
/// delivery time, where the default text is sent instead.
pub fn check(defs: &Defs, src: &str) -> Result<(), TemplateError> {
    let t = Template::parse_with(src, defs)?;
    match t.expand_value(&data(&sample())) {
        Err(e)
            if [
                "no such template",
                "can't evaluate field",
                "not defined",
                "wrong number of args",
            ]
            .iter()
            .any(|k| e.0.contains(k)) =>
        {
            Err(e)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n() -> Notification {
        let mut n = sample();
        n.receiver = "ops".into();
        n.alerts[1].ends_at = 0;
        n
    }

    #[test]
    fn default_subject_matches_alertmanager() {
        let defs = default_defs();
        for mut n in [n(), sample()] {
            let s = render(defs, r#"{{ template "email.default.subject" . }}"#, &n).unwrap();
            assert_eq!(s.trim_end(), n.subject());
            n.alerts
                .iter_mut()
                .for_each(|a| a.ends_at = 1_700_000_100_000);
            let s = render(defs, r#"{{ template "email.default.subject" . }}"#, &n).unwrap();
            assert_eq!(s.trim_end(), n.subject());
        }
        // The default e-mail body is this template's text.
        let mut s = sample();
        s.alerts[1].starts_at += 1_250;
        s.alerts[0].annotations.clear();
        let t = render(defs, r#"{{ template "email.default.text" . }}"#, &s).unwrap();
        assert_eq!(t, s.text_body());
        assert!(t.contains("Started: 2023-11-14T22:13:21.25Z\n"), "{t}");
        assert!(t.contains("Resolved alerts (1):\n"), "{t}");
        let t = render(defs, r#"{{ template "sms.default.text" . }}"#, &n()).unwrap();
        assert_eq!(
            t,
            "[FIRING:2] Example (warning)\nexample on a:9100\nexample on b:9100"
        );
    }

    #[test]
    fn data_fields_methods_and_times() {
        let d = default_defs();
        let r = |src: &str| render(d, src, &sample()).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert_eq!(
            r("{{ range .Alerts }}{{ .Labels.instance }}={{ .Status }};{{ end }}"),
            "a:9100=firing;b:9100=resolved;"
        );
        assert_eq!(r("{{ len .Alerts.Resolved }}/{{ len .Alerts }}"), "1/2");
        assert_eq!(
            r("{{ (index .Alerts 0).Annotations.summary }}"),
            "example on a:9100"
        );
        assert_eq!(
            r("{{ .CommonLabels.Names | join \",\" }}"),
            "alertname,severity"
        );
        assert_eq!(
            r("{{ range .CommonLabels.SortedPairs }}{{ .Name }}:{{ .Value }} {{ end }}"),
            "alertname:Example severity:warning "
        );
        assert_eq!(
            r("{{ with .CommonLabels.Remove (stringSlice \"alertname\") }}{{ .Values }}{{ end }}"),
            "[warning]"
        );
        assert_eq!(
            r("{{ range $i, $a := .Alerts }}{{ $i }}:{{ $a.Fingerprint }} {{ end }}"),
            "0:0000000000000000 1:0000000000000000 "
        );
        assert_eq!(
            r("{{ (index .Alerts 0).StartsAt }}"),
            "2023-11-14 22:13:20 +0000 UTC"
        );
        assert_eq!(
            r("{{ (index .Alerts 0).EndsAt }}|{{ (index .Alerts 0).EndsAt.IsZero }}"),
            "0001-01-01 00:00:00 +0000 UTC|true"
        );
        assert_eq!(
            r(
                r#"{{ (index .Alerts 1).EndsAt.Format "2006-01-02T15:04:05Z07:00 Mon Jan _2 3:04PM" }}"#
            ),
            "2023-11-14T22:14:20Z Tue Nov 14 10:14PM"
        );
        assert_eq!(r("{{ (index .Alerts 0).StartsAt.Unix }}"), "1700000000");
        assert_eq!(
            r("{{ template \"__alertmanagerURL\" . }}"),
            "http://localhost:9470/#/alerts?receiver=example"
        );
        assert_eq!(
            r("{{ .GroupKey }} {{ .TruncatedAlerts }}"),
            "{}:{alertname=\"Example\"} 0"
        );
    }

    #[test]
    fn custom_files_override_defaults_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.tmpl"),
            "{{ define \"__subject\" }}ALERT {{ .GroupLabels.alertname }}{{ end }}\n{{ define \"my.body\" }}{{ range .Alerts.Firing }}* {{ .Labels.instance }}\n{{ end }}{{ end }}",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "{{ broken").unwrap();
        let defs = load(dir.path(), &["*.tmpl".into()]).unwrap();
        assert_eq!(
            render(
                &defs,
                "{{ template \"email.default.subject\" . }}",
                &sample()
            )
            .unwrap(),
            "ALERT Example",
            "a custom __subject changes every default that uses it, as in Alertmanager"
        );
        assert_eq!(
            render(&defs, "{{ template \"my.body\" . }}", &sample()).unwrap(),
            "* a:9100\n"
        );
        assert!(load(dir.path(), &["none-*.tmpl".into()]).is_ok());
        let e = load(dir.path(), &["notes.txt".into()]).unwrap_err();
        assert!(
            e.file.ends_with("notes.txt") && e.reason.contains("line 1: unclosed action"),
            "{e}"
        );
        let e = load(dir.path(), &["missing.tmpl".into()]).unwrap_err();
        assert!(e.reason.contains("cannot read"), "{e}");
        std::fs::write(
            dir.path().join("b.tmpl"),
            "{{ define \"x\" }}\n\n{{ nosuch . }}\n{{ end }}",
        )
        .unwrap();
        let e = load(dir.path(), &["b.tmpl".into()]).unwrap_err();
        assert!(e.reason.contains("line 3"), "{e}");

        assert!(check(&defs, "{{ template \"my.body\" . }}").is_ok());
        let e = check(&defs, "{{ template \"nope\" . }}").unwrap_err();
        assert!(e.0.contains("no such template \"nope\""), "{e}");
        let e = check(&defs, "{{ .Alerts.Labels }}").unwrap_err();
        assert!(e.0.contains("can't evaluate field Labels"), "{e}");
        assert!(
            check(&defs, "{{ (index .Alerts 7).Labels }}").is_ok(),
            "data-dependent"
        );
        assert!(wildcard("*.tmpl", "a.tmpl") && !wildcard("*.tmpl", "a.tmpl.bak"));
        assert!(wildcard("a?c*", "abcdef") && !wildcard("a?c", "ac"));
    }
}

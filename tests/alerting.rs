//! Alerting end to end: rules evaluated on event time by `tidemark up`, notifications to real
//! receivers on loopback (an HTTP webhook, a PagerDuty-style endpoint, an SMS gateway, aiosmtpd
//! for email), faults (receiver down, SIGKILL in a pending `for`), silences through Debian's
//! `amtool`, inhibition, bad input, access control, and `promtool check rules` on the shipped
//! rule file.

mod support;

use std::path::Path;
use std::process::Command;

use support::receivers::{HttpReceiver, SmtpServer};
use support::Tidemark;

/// A base event time: whole minutes, an hour ago (a backfill; rules run on event time).
fn base() -> i64 {
    (support::now_ms() - 3_600_000) / 60_000 * 60_000
}

/// Pushes `cpu{host}` samples at `base + s` seconds, and a `clock` sample that moves the
/// watermark (5 s of out-of-orderness by default) past the last of them.
fn push_cpu(
    t: &Tidemark,
    b: i64,
    hosts: &str,
    secs: std::ops::RangeInclusive<i64>,
    value: f64,
    clock: i64,
) {
    let mut body = String::new();
    for s in secs {
        for host in hosts.split(',') {
            body.push_str(&format!(
                "cpu{{host=\"{host}\"}} {value} {}\n",
                b + s * 1000
            ));
        }
    }
    body.push_str(&format!("clock 1 {}\n", b + clock * 1000));
    t.push_text(&body);
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

const HIGH_CPU: &str = "groups:\n- name: hosts\n  rules:\n  - alert: HighCpu\n    expr: cpu > 90\n    for: 2s\n    labels: {severity: warning}\n    annotations:\n      summary: '{{ $labels.host }} at {{ $value }}%'\n";

fn start(dir: &Path, rules: &str, routing: &str, extra: &str) -> Tidemark {
    let r = write(dir, "rules.yml", rules);
    let a = write(dir, "alertmanager.yml", routing);
    Tidemark::start(
        dir,
        &format!("[rules]\nfiles = [{r:?}]\n\n[alerting]\nconfig = {a:?}\n{extra}"),
        2,
    )
}

/// A metric's value, 0 while it has no sample yet.
fn metric(t: &Tidemark, name_and_labels: &str) -> f64 {
    let (_, body) = t.get("/metrics");
    body.lines()
        .find_map(|l| {
            l.strip_prefix(name_and_labels)?
                .strip_prefix(' ')?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

fn rfc3339(ms: i64) -> String {
    tidemark::time::rfc3339(ms)
}

#[test]
fn fire_and_resolve_to_webhook_email_pagerduty_and_sms() {
    let dir = tempfile::tempdir().unwrap();
    let http = HttpReceiver::start();
    let smtp = SmtpServer::start(dir.path());
    let routing = format!(
        "global:\n  smtp_smarthost: 127.0.0.1:{}\n  smtp_from: tidemark@example.com\n  smtp_require_tls: false\nroute:\n  receiver: all\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n- name: all\n  webhook_configs: [{{url: '{}'}}]\n  email_configs: [{{to: 'ops@example.com'}}]\n  pagerduty_configs: [{{routing_key: 'RK1', url: '{}'}}]\n  sms_configs: [{{url: '{}', account_sid: 'AC1', auth_token: 'secret', from: '+15550000', to: ['+15551111']}}]\n",
        smtp.port,
        http.url("/hook"),
        http.url("/pd"),
        http.url("/sms"),
    );
    let t = start(dir.path(), HIGH_CPU, &routing, "");
    let b = base();
    // 95% from 0 s to 5 s: pending at 0 s, firing at 2 s (event time).
    push_cpu(&t, b, "a", 0..=5, 95.0, 10);
    let fired = t.eventually("a firing webhook", || http.at("/hook").first().cloned());
    let j = fired.json();
    assert_eq!(j["version"], "4");
    assert_eq!(j["status"], "firing");
    assert_eq!(j["receiver"], "all");
    assert_eq!(j["groupLabels"]["alertname"], "HighCpu");
    assert_eq!(j["groupKey"], "{}:{alertname=\"HighCpu\"}");
    let a = &j["alerts"][0];
    assert_eq!(a["labels"]["host"], "a");
    assert_eq!(a["labels"]["severity"], "warning");
    assert_eq!(a["annotations"]["summary"], "a at 95%");
    assert_eq!(
        a["startsAt"],
        rfc3339(b),
        "active from the first sample's tick"
    );
    assert!(a["generatorURL"]
        .as_str()
        .unwrap()
        .contains("/graph?g0.expr=cpu"));
    // The rules API shows it firing; ALERTS is a series.
    let rules = t.api("/api/v1/rules?type=alert");
    assert_eq!(rules["groups"][0]["rules"][0]["state"], "firing", "{rules}");
    // `cpu > 90` is kept up to date from the sample stream, not queried at each tick.
    assert_eq!(
        rules["groups"][0]["rules"][0]["incremental"], true,
        "{rules}"
    );
    let alerts = t.api("/api/v1/alerts");
    assert_eq!(alerts["alerts"][0]["activeAt"], rfc3339(b));
    let q = t.api(&format!(
        "/api/v1/query?query={}&time={}",
        support::enc("ALERTS{alertstate=\"firing\"}"),
        (b + 4000) / 1000
    ));
    assert_eq!(q["result"][0]["metric"]["alertname"], "HighCpu", "{q}");

    // Back to 10% from 6 s: resolved at 6 s.
    push_cpu(&t, b, "a", 6..=10, 10.0, 20);
    let resolved = t.eventually("a resolved webhook", || http.at("/hook").get(1).cloned());
    let j = resolved.json();
    assert_eq!(j["status"], "resolved");
    assert_eq!(j["alerts"][0]["endsAt"], rfc3339(b + 6000));

    // PagerDuty: trigger, then resolve with the same dedup_key.
    let pd = t.eventually("two PagerDuty events", || {
        let v = http.at("/pd");
        (v.len() >= 2).then_some(v)
    });
    let (trig, res) = (pd[0].json(), pd[1].json());
    assert_eq!(trig["event_action"], "trigger");
    assert_eq!(trig["routing_key"], "RK1");
    assert_eq!(trig["payload"]["severity"], "critical");
    assert_eq!(trig["payload"]["summary"], "[FIRING:1] HighCpu (a warning)");
    assert_eq!(res["event_action"], "resolve");
    assert_eq!(trig["dedup_key"], res["dedup_key"]);
    assert!(!trig["dedup_key"].as_str().unwrap().is_empty());

    // SMS: a Twilio-style form POST with basic auth; resolved ones are not sent by default.
    let sms = t.eventually("an SMS", || http.at("/sms").first().cloned());
    let form = sms.form();
    assert!(
        form.contains(&("To".into(), "+15551111".into())),
        "{form:?}"
    );
    assert!(form.contains(&("From".into(), "+15550000".into())));
    let body = &form.iter().find(|(k, _)| k == "Body").unwrap().1;
    assert!(
        body.starts_with("[FIRING:1] HighCpu") && body.contains("a at 95%"),
        "{body}"
    );
    assert_eq!(sms.header("authorization"), Some("Basic QUMxOnNlY3JldA=="));

    // Email: subject and body rendered.
    let mail = t.eventually("an email", || smtp.messages().into_iter().next());
    assert!(
        mail.contains("Subject: [FIRING:1] HighCpu (a warning)"),
        "{mail}"
    );
    assert!(mail.contains("To: ops@example.com"), "{mail}");
    assert!(mail.contains("summary = a at 95%"), "{mail}");
    // The counter moves after the receiver answered: the webhook may have both already.
    t.eventually("both webhook deliveries counted", || {
        let n = t.metric("tidemark_notifications_total{receiver=\"all\",integration=\"webhook\"}");
        (n >= 2.0).then_some(())
    });
    assert_eq!(http.at("/hook").len(), 2, "no duplicates");
}

#[test]
fn a_receiver_down_then_back_gets_every_notification() {
    let dir = tempfile::tempdir().unwrap();
    let http = HttpReceiver::start();
    let (port, requests) = http.stop();
    let routing = format!(
        "route:\n  receiver: hook\n  group_by: [alertname, host]\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n- name: hook\n  webhook_configs: [{{url: 'http://127.0.0.1:{port}/hook'}}]\ndelivery:\n  initial_backoff: 100ms\n  max_backoff: 500ms\n"
    );
    let t = start(dir.path(), HIGH_CPU, &routing, "");
    let b = base();
    // One request: samples of host b pushed after the watermark passed their times would be
    // late, and rules do not go back in event time.
    push_cpu(&t, b, "a,b", 0..=5, 95.0, 10);
    t.eventually("failed deliveries counted", || {
        (metric(&t, "tidemark_notifications_failed_total{receiver=\"hook\",integration=\"webhook\",reason=\"connect\"}") >= 2.0).then_some(())
    });
    let http = HttpReceiver::start_on(port, requests);
    let got = t.eventually("both groups delivered", || {
        let v = http.at("/hook");
        (v.len() >= 2).then_some(v)
    });
    let mut hosts: Vec<String> = got
        .iter()
        .map(|r| {
            r.json()["alerts"][0]["labels"]["host"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    hosts.sort();
    assert_eq!(hosts, vec!["a", "b"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        http.at("/hook").len(),
        2,
        "each delivered once after the receiver came back"
    );
    let n = t.api("/api/v1/notifications");
    assert_eq!(n["queued"].as_array().unwrap().len(), 0, "{n}");
}

#[test]
fn sigkill_during_for_fires_once_at_the_right_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let http = HttpReceiver::start();
    let rules = HIGH_CPU.replace("for: 2s", "for: 10s");
    let routing = format!(
        "route:\n  receiver: hook\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n- name: hook\n  webhook_configs: [{{url: '{}'}}]\n",
        http.url("/hook")
    );
    let mut t = start(dir.path(), &rules, &routing, "");
    let b = base();
    push_cpu(&t, b, "a", 0..=5, 95.0, 10);
    t.eventually("pending", || {
        let a = t.api("/api/v1/alerts");
        (a["alerts"][0]["state"] == "pending").then_some(())
    });
    t.kill();
    t.spawn();
    // The restart replays the log; the alert is still pending since 0 s.
    let a = t.api("/api/v1/alerts");
    assert_eq!(a["alerts"][0]["activeAt"], rfc3339(b), "{a}");
    push_cpu(&t, b, "a", 6..=15, 95.0, 25);
    let fired = t.eventually("firing", || http.at("/hook").first().cloned());
    assert_eq!(fired.json()["alerts"][0]["startsAt"], rfc3339(b));
    // ALERTS_FOR_STATE says since when; firing began at 10 s, not 10 s after the restart.
    let q = t.api(&format!(
        "/api/v1/query?query={}&time={}",
        support::enc("ALERTS{alertstate=\"firing\"}"),
        (b + 10_000) / 1000
    ));
    assert_eq!(q["result"].as_array().unwrap().len(), 1, "{q}");
    let q = t.api(&format!(
        "/api/v1/query?query={}&time={}",
        support::enc("ALERTS{alertstate=\"firing\"}"),
        (b + 9_000) / 1000
    ));
    assert_eq!(q["result"].as_array().unwrap().len(), 0, "{q}");
    // Restart again: no second notification. Delivery is at-least-once: a kill between the
    // receiver's answer and the outbox write re-sends, so wait until the delivery is on disk.
    t.eventually("delivery recorded", || {
        let n = t.api("/api/v1/notifications");
        n["queued"].as_array().unwrap().is_empty().then_some(())
    });
    t.kill();
    t.spawn();
    push_cpu(&t, b, "a", 16..=20, 95.0, 30);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(http.at("/hook").len(), 1, "fired once");
}

fn amtool() -> std::path::PathBuf {
    support::installed_bin("amtool", "Debian package prometheus-alertmanager")
}

/// Runs `amtool ARGS --alertmanager.url=...`, asserts it succeeded, returns its stdout.
fn amtool_run(args: &[&str], url_flag: &str) -> String {
    let out = Command::new(amtool())
        .args(args)
        .arg(url_flag)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "amtool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn amtool_silences_mute_and_inhibit_rules_suppress() {
    let dir = tempfile::tempdir().unwrap();
    let http = HttpReceiver::start();
    let rules = "groups:\n- name: hosts\n  rules:\n  - alert: HostDown\n    expr: cpu == 0\n    labels: {severity: page}\n  - alert: HighCpu\n    expr: cpu >= 0\n    labels: {severity: warning}\n  - alert: Noisy\n    expr: cpu >= 0\n    labels: {severity: info}\n";
    let routing = format!(
        "route:\n  receiver: hook\n  group_by: ['...']\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n- name: hook\n  webhook_configs: [{{url: '{}'}}]\ninhibit_rules:\n- source_matchers: ['severity=\"page\"']\n  target_matchers: ['severity=\"warning\"']\n  equal: [host]\n",
        http.url("/hook")
    );
    let t = start(dir.path(), rules, &routing, "");
    let url = format!("--alertmanager.url={}", t.url);
    let am = |args: &[&str]| amtool_run(args, &url);
    let id = am(&[
        "silence",
        "add",
        "alertname=Noisy",
        "--comment=maintenance",
        "--author=ops",
        "--duration=1h",
    ]);
    let id = id.trim().to_string();
    let listed: serde_json::Value =
        serde_json::from_str(&am(&["silence", "query", "-o", "json"])).unwrap();
    assert_eq!(listed[0]["id"], id.as_str(), "{listed}");
    assert_eq!(listed[0]["status"]["state"], "active");

    let b = base();
    push_cpu(&t, b, "a", 0..=3, 0.0, 10);
    let got = t.eventually("HostDown delivered", || http.at("/hook").first().cloned());
    std::thread::sleep(std::time::Duration::from_secs(2));
    let names: Vec<String> = http
        .at("/hook")
        .iter()
        .flat_map(|r| {
            r.json()["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["labels"]["alertname"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        names,
        vec!["HostDown"],
        "HighCpu inhibited, Noisy silenced; got {got:?}"
    );
    let silenced = am(&["alert", "query", "-o", "json", "--silenced"]);
    assert!(silenced.contains("Noisy"), "{silenced}");
    // Expired with amtool: the silence no longer mutes.
    am(&["silence", "expire", &id]);
    let listed: serde_json::Value =
        serde_json::from_str(&am(&["silence", "query", "--expired", "-o", "json"])).unwrap();
    assert_eq!(listed[0]["status"]["state"], "expired", "{listed}");
    t.eventually("Noisy delivered after the silence expired", || {
        http.at("/hook")
            .iter()
            .any(|r| r.json().to_string().contains("Noisy"))
            .then_some(())
    });
}

#[test]
fn bad_rule_files_routing_and_receivers_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let http = HttpReceiver::start();
    let good = write(dir.path(), "good.yml", HIGH_CPU);
    let bad = write(
        dir.path(),
        "bad.yml",
        "groups:\n- name: b\n  rules:\n  - alert: Typo\n    expr: up == 0\n    fore: 5m\n",
    );
    let tmpl = write(dir.path(), "tmpl.yml", "groups:\n- name: t\n  rules:\n  - alert: T\n    expr: up\n    annotations: {s: '{{ $labels.x '}\n");
    let refused = support::free_port();
    let routing = write(
        dir.path(),
        "am.yml",
        &format!(
            "route:\n  receiver: both\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n- name: both\n  webhook_configs:\n  - url: 'http://127.0.0.1:{refused}/nobody'\n  - url: '{}'\ndelivery:\n  initial_backoff: 100ms\n",
            http.url("/hook")
        ),
    );
    let t = Tidemark::start(
        dir.path(),
        &format!(
            "[rules]\nfiles = [{good:?}, {bad:?}, {tmpl:?}]\n\n[alerting]\nconfig = {routing:?}\n"
        ),
        1,
    );
    let log = t.log_text();
    assert!(
        log.contains(&format!(
            "{bad}:6: rule \"Typo\": groups[0].rules[0]: unknown field `fore`"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "{tmpl}:6: group \"t\", rule \"T\": annotations.s: template:"
        )),
        "{log}"
    );
    let rules = t.api("/api/v1/rules");
    assert_eq!(
        rules["groups"].as_array().unwrap().len(),
        1,
        "the good file runs: {rules}"
    );
    assert_eq!(rules["loadErrors"].as_array().unwrap().len(), 2, "{rules}");
    // The receiver that refuses connections fails; the other one gets its notification.
    let b = base();
    push_cpu(&t, b, "a", 0..=5, 95.0, 10);
    t.eventually("the working webhook", || http.at("/hook").first().cloned());
    t.eventually("the refused one counted", || {
        (metric(&t, "tidemark_notifications_failed_total{receiver=\"both\",integration=\"webhook\",reason=\"connect\"}") >= 1.0).then_some(())
    });
    // A reload with a broken rule file is refused with file and line; the rules stay.
    std::fs::write(
        &good,
        "groups:\n- name: hosts\n  rules:\n  - alert: X\n    expr: cpu >\n",
    )
    .unwrap();
    let (status, text) = t.post("/-/reload", "text/plain", &[], b"");
    assert_eq!(status, 500, "{text}");
    assert!(
        text.contains(&format!(
            "{good}:5: group \"hosts\", rule \"X\": expr: could not parse"
        )),
        "{text}"
    );
    assert_eq!(
        t.api("/api/v1/rules")["groups"][0]["rules"][0]["name"],
        "HighCpu"
    );
    // Fixed (the other broken files too): the reload swaps the rules and keeps the firing
    // alert's state.
    std::fs::write(
        &good,
        format!("{HIGH_CPU}  - record: cpu:max\n    expr: max(cpu)\n"),
    )
    .unwrap();
    std::fs::write(&bad, "groups: []\n").unwrap();
    std::fs::write(&tmpl, "").unwrap();
    let (status, text) = t.post("/-/reload", "text/plain", &[], b"");
    assert_eq!(status, 200, "{text}");
    let a = t.api("/api/v1/alerts");
    assert_eq!(a["alerts"][0]["state"], "firing", "{a}");
    assert!(t.api("/api/v1/rules").get("loadErrors").is_none());
    // A bad routing file on reload names its line.
    std::fs::write(
        &routing,
        "route:\n  receiver: both\n  group_wiat: 1s\nreceivers:\n- name: both\n",
    )
    .unwrap();
    let (status, text) = t.post("/-/reload", "text/plain", &[], b"");
    assert_eq!(status, 500);
    assert!(
        text.contains(&format!("{routing}:3: route: unknown field `group_wiat`")),
        "{text}"
    );
    // A notification template that calls a template nobody defined, and a template file
    // with a syntax error: each names its file, line and reason.
    std::fs::write(
        &routing,
        "route:\n  receiver: both\nreceivers:\n- name: both\n  sms_configs:\n  - url: 'http://127.0.0.1:1/sms'\n    from: '+1'\n    to: ['+2']\n    text: '{{ template \"nope\" . }}'\n",
    )
    .unwrap();
    let (status, text) = t.post("/-/reload", "text/plain", &[], b"");
    assert_eq!(status, 500);
    assert!(
        text.contains(&format!(
            "{routing}:9: receiver \"both\": sms_configs[0].text: template: no such template \"nope\""
        )),
        "{text}"
    );
    let broken = write(
        dir.path(),
        "broken.tmpl",
        "{{ define \"a\" }}ok{{ end }}\n{{ define \"b\" }}{{ .Status {{ end }}\n",
    );
    std::fs::write(
        &routing,
        "templates: ['*.tmpl']\nroute:\n  receiver: both\nreceivers:\n- name: both\n",
    )
    .unwrap();
    let (status, text) = t.post("/-/reload", "text/plain", &[], b"");
    assert_eq!(status, 500);
    assert!(
        text.contains(&format!(
            "{broken}:2: (a template file of {routing}'s templates:) unexpected '{{' in action"
        )),
        "{text}"
    );
}

/// Alertmanager's `templates:` files and per-receiver templates: the e-mail's subject, text
/// and HTML parts and an extra header, PagerDuty's summary and details, the SMS text.
#[test]
fn custom_notification_templates_render_in_every_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let http = HttpReceiver::start();
    let smtp = SmtpServer::start(dir.path());
    std::fs::create_dir(dir.path().join("templates")).unwrap();
    write(
        &dir.path().join("templates"),
        "ops.tmpl",
        "{{ define \"ops.subject\" }}{{ .Status | toUpper }}: {{ .CommonLabels.alertname }} on {{ range .Alerts }}{{ .Labels.host }} {{ end }}{{ end }}\n{{ define \"ops.html\" }}<h1>{{ len .Alerts.Firing }} firing</h1>{{ range .Alerts.Firing }}<p>{{ .Annotations.summary }} since {{ .StartsAt.Format \"15:04:05\" }}</p>{{ end }}{{ end }}\n",
    );
    let routing = format!(
        "global:\n  smtp_smarthost: 127.0.0.1:{}\n  smtp_from: tidemark@example.com\n  smtp_require_tls: false\ntemplates: ['templates/*.tmpl']\nroute:\n  receiver: all\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n- name: all\n  email_configs:\n  - to: 'ops@example.com'\n    headers: {{Subject: '{{{{ template \"ops.subject\" . }}}}', X-Team: '{{{{ .CommonLabels.severity }}}}-team'}}\n    text: 'text: {{{{ range .Alerts }}}}{{{{ .Annotations.summary }}}}{{{{ end }}}}'\n    html: '{{{{ template \"ops.html\" . }}}}'\n  pagerduty_configs:\n  - routing_key: RK1\n    url: '{}'\n    description: '{{{{ .CommonLabels.alertname }}}}: {{{{ .CommonAnnotations.summary }}}}'\n    severity: '{{{{ if eq .CommonLabels.severity \"warning\" }}}}warning{{{{ else }}}}critical{{{{ end }}}}'\n    details: {{hosts: '{{{{ range .Alerts }}}}{{{{ .Labels.host }}}}{{{{ end }}}}'}}\n  sms_configs:\n  - {{url: '{}', from: '+15550000', to: ['+15551111'], text: 'cpu {{{{ .CommonLabels.host }}}}: {{{{ (index .Alerts 0).Annotations.summary }}}}'}}\n",
        smtp.port,
        http.url("/pd"),
        http.url("/sms"),
    );
    let t = start(dir.path(), HIGH_CPU, &routing, "");
    push_cpu(&t, base(), "a", 0..=5, 95.0, 10);

    let mail = t.eventually("an email", || smtp.messages().into_iter().next());
    assert!(mail.contains("Subject: FIRING: HighCpu on a"), "{mail}");
    assert!(mail.contains("X-Team: warning-team"), "{mail}");
    assert!(mail.contains("multipart/alternative"), "{mail}");
    assert!(mail.contains("text: a at 95%"), "{mail}");
    let start = tidemark::alert::template::go_time(base(), "15:04:05");
    assert!(
        mail.contains(&format!("<h1>1 firing</h1><p>a at 95% since {start}</p>")),
        "{mail}"
    );

    let pd = t.eventually("a PagerDuty trigger", || http.at("/pd").first().cloned());
    let j = pd.json();
    assert_eq!(j["payload"]["summary"], "HighCpu: a at 95%", "{j}");
    assert_eq!(j["payload"]["severity"], "warning", "{j}");
    assert_eq!(j["payload"]["custom_details"]["hosts"], "a", "{j}");
    assert_eq!(j["payload"]["custom_details"]["num_firing"], 1, "{j}");

    let sms = t.eventually("an SMS", || http.at("/sms").first().cloned());
    let form = sms.form();
    let body = &form.iter().find(|(k, _)| k == "Body").unwrap().1;
    assert_eq!(body, "cpu a: a at 95%");
}

#[test]
fn only_admin_tokens_change_silences_and_rules() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(
        dir.path(),
        HIGH_CPU,
        "route:\n  receiver: r\nreceivers:\n- name: r\n",
        "\n[auth]\ntokens = [{ token = \"rtok\", role = \"read\" }, { token = \"atok\", role = \"admin\" }, { token = \"wtok\", role = \"write\" }]\n",
    );
    let silence = format!(
        "{{\"matchers\":[{{\"name\":\"alertname\",\"value\":\"X\",\"isRegex\":false}}],\"startsAt\":\"{}\",\"endsAt\":\"{}\",\"createdBy\":\"me\",\"comment\":\"c\"}}",
        rfc3339(support::now_ms()),
        rfc3339(support::now_ms() + 3_600_000)
    );
    let post = |tok: Option<&str>, path: &str, body: &str| {
        let h = tok.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = h.iter().map(|h| ("Authorization", h.as_str())).collect();
        t.post(path, "application/json", &headers, body.as_bytes())
            .0
    };
    assert_eq!(post(None, "/api/v2/silences", &silence), 401);
    assert_eq!(post(Some("rtok"), "/api/v2/silences", &silence), 403);
    assert_eq!(post(Some("wtok"), "/api/v2/silences", &silence), 403);
    assert_eq!(post(Some("atok"), "/api/v2/silences", &silence), 200);
    assert_eq!(post(Some("rtok"), "/-/reload", ""), 403);
    assert_eq!(post(Some("atok"), "/-/reload", ""), 200);
    // The same tokens guard ingest and queries; health checks stay open.
    let sample = "up 1\n";
    assert_eq!(post(None, "/api/v1/import/prometheus", sample), 401);
    assert_eq!(post(Some("rtok"), "/api/v1/import/prometheus", sample), 403);
    assert!(post(Some("wtok"), "/api/v1/import/prometheus", sample) < 300);
    assert_eq!(t.get("/api/v1/query?query=up").0, 401);
    assert_eq!(t.get("/-/ready").0, 200);
}

#[test]
fn promtool_accepts_the_shipped_rule_files() {
    let promtool = support::installed_bin("promtool", "Debian package prometheus");
    for f in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/rules")).unwrap() {
        let p = f.unwrap().path();
        if p.to_string_lossy().ends_with("_test.yml") {
            continue; // unit tests of the rules (tests/check.rs runs them)
        }
        let out = Command::new(&promtool)
            .arg("check")
            .arg("rules")
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}{}",
            p.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // And Tidemark loads them without error.
        let (groups, errors) = tidemark::alert::rules::load_rule_files(std::slice::from_ref(&p));
        assert!(errors.is_empty() && !groups.is_empty(), "{errors:?}");
    }
}

//! Receiver integrations: webhook (Alertmanager's JSON, version 4), email (SMTP via lettre,
//! STARTTLS or TLS, auth), PagerDuty Events API v2, SMS through a Twilio-style gateway.
//! Each renders a [`Notification`] and delivers it once; the outbox retries.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::config::{EmailConfig, Global, PagerdutyConfig, Receiver, SmsConfig, WebhookConfig};
use super::templates::render_or;
use crate::alert::template::Defs;
use crate::time::rfc3339;

/// One alert of a notification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NotifiedAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: i64,
    /// 0 while firing.
    pub ends_at: i64,
    pub generator_url: String,
    pub fingerprint: String,
}

impl NotifiedAlert {
    pub fn resolved(&self) -> bool {
        self.ends_at > 0
    }
}

/// What one receiver integration is told about one group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub receiver: String,
    pub group_key: String,
    pub group_labels: BTreeMap<String, String>,
    pub alerts: Vec<NotifiedAlert>,
    pub external_url: String,
    pub truncated: usize,
}

impl Notification {
    /// `firing` while any alert fires, else `resolved`.
    pub fn status(&self) -> &'static str {
        if self.alerts.iter().any(|a| !a.resolved()) {
            "firing"
        } else {
            "resolved"
        }
    }

    fn common<'a>(
        &'a self,
        f: impl Fn(&'a NotifiedAlert) -> &'a BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let mut it = self.alerts.iter();
        let Some(first) = it.next() else {
            return BTreeMap::new();
        };
        let mut common = f(first).clone();
        for a in it {
            let m = f(a);
            common.retain(|k, v| m.get(k) == Some(v));
        }
        common
    }

    pub fn common_labels(&self) -> BTreeMap<String, String> {
        self.common(|a| &a.labels)
    }

    pub fn common_annotations(&self) -> BTreeMap<String, String> {
        self.common(|a| &a.annotations)
    }

    /// Alertmanager's default subject: `[FIRING:2] HighCpu web (warning)`.
    pub fn subject(&self) -> String {
        let status = self.status();
        let mut s = format!("[{}", status.to_uppercase());
        if status == "firing" {
            s.push_str(&format!(
                ":{}",
                self.alerts.iter().filter(|a| !a.resolved()).count()
            ));
        }
        s.push_str("] ");
        let vals: Vec<&str> = self.group_labels.values().map(String::as_str).collect();
        s.push_str(&vals.join(" "));
        let common = self.common_labels();
        let extra: Vec<&str> = common
            .iter()
            .filter(|(k, _)| !self.group_labels.contains_key(*k))
            .map(|(_, v)| v.as_str())
            .collect();
        if !extra.is_empty() {
            s.push_str(&format!(" ({})", extra.join(" ")));
        }
        s
    }

    /// A plain-text body listing the alerts with their labels and annotations.
    pub fn text_body(&self) -> String {
        let mut b = String::new();
        for (title, resolved) in [("Firing", false), ("Resolved", true)] {
            let list: Vec<&NotifiedAlert> = self
                .alerts
                .iter()
                .filter(|a| a.resolved() == resolved)
                .collect();
            if list.is_empty() {
                continue;
            }
            b.push_str(&format!("{title} alerts ({}):\n", list.len()));
            for a in list {
                b.push_str("\nLabels:\n");
                for (k, v) in &a.labels {
                    b.push_str(&format!(" - {k} = {v}\n"));
                }
                if !a.annotations.is_empty() {
                    b.push_str("Annotations:\n");
                    for (k, v) in &a.annotations {
                        b.push_str(&format!(" - {k} = {v}\n"));
                    }
                }
                b.push_str(&format!("Started: {}\n", rfc3339(a.starts_at)));
                if resolved {
                    b.push_str(&format!("Ended: {}\n", rfc3339(a.ends_at)));
                }
                b.push_str(&format!("Source: {}\n", a.generator_url));
            }
            b.push('\n');
        }
        b
    }

    /// Alertmanager's webhook payload, version 4.
    pub fn webhook_json(&self) -> serde_json::Value {
        let alerts: Vec<serde_json::Value> = self
            .alerts
            .iter()
            .map(|a| {
                json!({
                    "status": if a.resolved() { "resolved" } else { "firing" },
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": rfc3339(a.starts_at),
                    "endsAt": if a.resolved() { rfc3339(a.ends_at) } else { "0001-01-01T00:00:00Z".into() },
                    "generatorURL": a.generator_url,
                    "fingerprint": a.fingerprint,
                })
            })
            .collect();
        json!({
            "version": "4",
            "groupKey": self.group_key,
            "truncatedAlerts": self.truncated,
            "status": self.status(),
            "receiver": self.receiver,
            "groupLabels": self.group_labels,
            "commonLabels": self.common_labels(),
            "commonAnnotations": self.common_annotations(),
            "externalURL": self.external_url,
            "alerts": alerts,
        })
    }

    /// PagerDuty's dedup key: stable per group (hex of a 128-bit hash of the group key).
    pub fn dedup_key(&self) -> String {
        format!(
            "{:032x}",
            xxhash_rust::xxh3::xxh3_128(self.group_key.as_bytes())
        )
    }
}

/// Which integration of a receiver: kind and index (`webhook[0]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Integration {
    pub kind: String,
    pub index: usize,
}

impl std::fmt::Display for Integration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.kind, self.index)
    }
}

/// The integrations of a receiver, with whether each sends resolved notifications.
pub fn integrations(r: &Receiver) -> Vec<(Integration, bool)> {
    let mut out = Vec::new();
    let mut add = |kind: &str, flags: Vec<bool>| {
        for (index, sr) in flags.into_iter().enumerate() {
            out.push((
                Integration {
                    kind: kind.into(),
                    index,
                },
                sr,
            ));
        }
    };
    add(
        "webhook",
        r.webhook_configs.iter().map(|c| c.send_resolved).collect(),
    );
    add(
        "email",
        r.email_configs.iter().map(|c| c.send_resolved).collect(),
    );
    add(
        "pagerduty",
        r.pagerduty_configs
            .iter()
            .map(|c| c.send_resolved)
            .collect(),
    );
    add(
        "sms",
        r.sms_configs.iter().map(|c| c.send_resolved).collect(),
    );
    out
}

/// Why a delivery failed; `retry` false when trying again cannot help (a 4xx answer).
#[derive(Debug, Clone)]
pub struct DeliveryError {
    /// For `/metrics`: `connect`, `timeout`, `http_4xx`, `http_5xx`, `smtp`, `config`, `other`.
    pub reason: &'static str,
    pub message: String,
    pub retry: bool,
}

fn http_error(e: ureq::Error, url: &str) -> DeliveryError {
    let s = e.to_string();
    let reason = match &e {
        ureq::Error::Timeout(_) => "timeout",
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => "timeout",
        ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => "connect",
        _ => "other",
    };
    DeliveryError {
        reason,
        message: format!("{url}: {s}"),
        retry: true,
    }
}

fn post(
    url: &str,
    content_type: &str,
    body: Vec<u8>,
    basic_auth: Option<(&str, &str)>,
    timeout: Duration,
) -> Result<(), DeliveryError> {
    let agent = ureq::Agent::new_with_config(
        ureq::config::Config::builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .user_agent("Tidemark")
            .build(),
    );
    let mut req = agent.post(url).header("content-type", content_type);
    if let Some((u, p)) = basic_auth {
        let token = base64(format!("{u}:{p}").as_bytes());
        req = req.header("authorization", format!("Basic {token}"));
    }
    let mut resp = req.send(&body[..]).map_err(|e| http_error(e, url))?;
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let text: String = text.chars().take(200).collect();
    let retry = status >= 500 || status == 429 || status == 408;
    Err(DeliveryError {
        reason: if status >= 500 {
            "http_5xx"
        } else {
            "http_4xx"
        },
        message: format!("{url}: HTTP {status}: {text}"),
        retry,
    })
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Sends `n` through the integration `which` of receiver `r`, its texts from the templates
/// `defs` (blocking; run it off the async threads).
pub fn deliver(
    r: &Receiver,
    global: &Global,
    defs: &Defs,
    which: &Integration,
    n: &Notification,
    timeout: Duration,
) -> Result<(), DeliveryError> {
    let missing = || DeliveryError {
        reason: "config",
        message: format!(
            "receiver {:?} has no {which} any more (configuration reloaded)",
            r.name
        ),
        retry: false,
    };
    match which.kind.as_str() {
        "webhook" => {
            let c = r.webhook_configs.get(which.index).ok_or_else(missing)?;
            webhook(c, n, timeout)
        }
        "email" => {
            let c = r.email_configs.get(which.index).ok_or_else(missing)?;
            email(c, global, defs, n, timeout)
        }
        "pagerduty" => {
            let c = r.pagerduty_configs.get(which.index).ok_or_else(missing)?;
            pagerduty(c, global, defs, n, timeout)
        }
        "sms" => {
            let c = r.sms_configs.get(which.index).ok_or_else(missing)?;
            sms(c, defs, n, timeout)
        }
        _ => Err(missing()),
    }
}

fn webhook(c: &WebhookConfig, n: &Notification, timeout: Duration) -> Result<(), DeliveryError> {
    let mut n = n.clone();
    if c.max_alerts > 0 && n.alerts.len() > c.max_alerts {
        n.truncated += n.alerts.len() - c.max_alerts;
        n.alerts.truncate(c.max_alerts);
    }
    let body = serde_json::to_vec(&n.webhook_json()).unwrap_or_default();
    post(&c.url, "application/json", body, None, timeout)
}

fn pagerduty(
    c: &PagerdutyConfig,
    global: &Global,
    defs: &Defs,
    n: &Notification,
    timeout: Duration,
) -> Result<(), DeliveryError> {
    let url = c
        .url
        .clone()
        .unwrap_or_else(|| global.pagerduty_url.clone());
    let firing = n.status() == "firing";
    let render = |what: &str, src: Option<&str>, dflt: &dyn Fn() -> String| {
        render_or(defs, what, src, n, dflt)
    };
    let mut summary = render("description", c.description.as_deref(), &|| n.subject());
    if summary.len() > 1024 {
        let mut end = 1021;
        while !summary.is_char_boundary(end) {
            end -= 1;
        }
        summary.truncate(end);
        summary.push_str("...");
    }
    let body = if firing {
        let client = render("client", c.client.as_deref(), &|| "Tidemark".into());
        let client_url = render("client_url", c.client_url.as_deref(), &|| {
            n.external_url.clone()
        });
        let severity = render("severity", Some(&c.severity), &|| "critical".into());
        let mut details = serde_json::Map::new();
        details.insert("firing".into(), n.text_body().into());
        details.insert(
            "num_firing".into(),
            n.alerts.iter().filter(|a| !a.resolved()).count().into(),
        );
        details.insert(
            "num_resolved".into(),
            n.alerts.iter().filter(|a| a.resolved()).count().into(),
        );
        details.insert("group_labels".into(), json!(n.group_labels));
        for (k, v) in &c.details {
            let what = format!("details.{k}");
            details.insert(k.clone(), render(&what, Some(v), &String::new).into());
        }
        json!({
            "routing_key": c.routing_key,
            "event_action": "trigger",
            "dedup_key": n.dedup_key(),
            "payload": {
                "summary": summary,
                "source": client,
                "severity": severity,
                "custom_details": details,
            },
            "client": client,
            "client_url": client_url,
        })
    } else {
        json!({
            "routing_key": c.routing_key,
            "event_action": "resolve",
            "dedup_key": n.dedup_key(),
        })
    };
    post(
        &url,
        "application/json",
        serde_json::to_vec(&body).unwrap_or_default(),
        None,
        timeout,
    )
}

fn sms(
    c: &SmsConfig,
    defs: &Defs,
    n: &Notification,
    timeout: Duration,
) -> Result<(), DeliveryError> {
    let text = render_or(defs, "sms text", c.text.as_deref(), n, || {
        let mut text = n.subject();
        for a in n.alerts.iter().take(3) {
            if let Some(s) = a.annotations.get("summary") {
                text.push('\n');
                text.push_str(s);
            }
        }
        text
    });
    let text: String = text.chars().take(1600).collect();
    for to in &c.to {
        let body = serde_urlencoded::to_string([
            ("To", to.as_str()),
            ("From", c.from.as_str()),
            ("Body", text.as_str()),
        ])
        .unwrap_or_default();
        let auth =
            (!c.account_sid.is_empty()).then_some((c.account_sid.as_str(), c.auth_token.as_str()));
        post(
            &c.url,
            "application/x-www-form-urlencoded",
            body.into_bytes(),
            auth,
            timeout,
        )?;
    }
    Ok(())
}

fn email(
    c: &EmailConfig,
    g: &Global,
    defs: &Defs,
    n: &Notification,
    timeout: Duration,
) -> Result<(), DeliveryError> {
    use lettre::message::header::{HeaderName, HeaderValue};
    use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::{Message, SmtpTransport, Transport};

    let bad = |m: String| DeliveryError {
        reason: "config",
        message: m,
        retry: false,
    };
    let host_port = c
        .smarthost
        .clone()
        .unwrap_or_else(|| g.smtp_smarthost.clone());
    let (host, port) = host_port
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| bad(format!("smarthost {host_port:?} is not host:port")))?;
    let from = c.from.clone().unwrap_or_else(|| g.smtp_from.clone());
    let from: Mailbox = from
        .parse()
        .map_err(|e| bad(format!("from {from:?}: {e}")))?;
    let mut msg = Message::builder().from(from);
    for to in c.to.split(',') {
        let to = to.trim();
        let mb: Mailbox = to.parse().map_err(|e| bad(format!("to {to:?}: {e}")))?;
        msg = msg.to(mb);
    }
    let header = |name: &str| {
        c.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let subject = render_or(defs, "email subject", header("Subject"), n, || n.subject());
    let mut msg = msg.subject(subject);
    for (k, v) in &c.headers {
        if ["subject", "to", "from"].contains(&k.to_ascii_lowercase().as_str()) {
            continue;
        }
        let what = format!("email header {k}");
        let value = render_or(defs, &what, Some(v), n, String::new);
        let name =
            HeaderName::new_from_ascii(k.clone()).map_err(|e| bad(format!("header {k:?}: {e}")))?;
        msg = msg.raw_header(HeaderValue::new(name, value));
    }
    let text = c
        .text
        .as_deref()
        .map(|t| render_or(defs, "email text", Some(t), n, || n.text_body()));
    let html = c.html.as_deref().map(|t| {
        render_or(defs, "email html", Some(t), n, || {
            format!("<pre>{}</pre>", html_escape(&n.text_body()))
        })
    });
    let msg = match (text, html) {
        (Some(t), Some(h)) => msg.multipart(MultiPart::alternative_plain_html(t, h)),
        (None, Some(h)) => msg.singlepart(SinglePart::html(h)),
        (t, None) => msg
            .header(ContentType::TEXT_PLAIN)
            .body(t.unwrap_or_else(|| n.text_body())),
    }
    .map_err(|e| bad(format!("building the message: {e}")))?;
    let tls_params =
        || TlsParameters::new(host.clone()).map_err(|e| bad(format!("TLS for {host}: {e}")));
    let require_tls = c.require_tls.unwrap_or(g.smtp_require_tls);
    let tls = if c.tls {
        Tls::Wrapper(tls_params()?)
    } else if require_tls {
        Tls::Required(tls_params()?)
    } else {
        Tls::Opportunistic(tls_params()?)
    };
    let hello = c.hello.clone().unwrap_or_else(|| g.smtp_hello.clone());
    let mut t = SmtpTransport::builder_dangerous(host.as_str())
        .port(port)
        .tls(tls)
        .timeout(Some(timeout))
        .hello_name(lettre::transport::smtp::extension::ClientId::Domain(hello));
    let user = c
        .auth_username
        .clone()
        .unwrap_or_else(|| g.smtp_auth_username.clone());
    if !user.is_empty() {
        let pass = c
            .auth_password
            .clone()
            .unwrap_or_else(|| g.smtp_auth_password.clone());
        t = t.credentials(Credentials::new(user, pass));
    }
    t.build().send(&msg).map(|_| ()).map_err(|e| {
        let permanent = e.is_permanent();
        DeliveryError {
            reason: if e.is_timeout() { "timeout" } else { "smtp" },
            message: format!("smtp {host_port}: {e}"),
            retry: !permanent,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(resolved: bool) -> Notification {
        let a = |i: &str| NotifiedAlert {
            labels: [
                ("alertname", "HighCpu"),
                ("instance", i),
                ("severity", "warning"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            annotations: [("summary".to_string(), format!("cpu on {i}"))].into(),
            starts_at: 1_700_000_000_000,
            ends_at: if resolved { 1_700_000_060_000 } else { 0 },
            generator_url: "http://tm/graph".into(),
            fingerprint: "0123456789abcdef".into(),
        };
        Notification {
            receiver: "ops".into(),
            group_key: "{}:{alertname=\"HighCpu\"}".into(),
            group_labels: [("alertname".to_string(), "HighCpu".to_string())].into(),
            alerts: vec![a("web-1"), a("web-2")],
            external_url: "http://tm".into(),
            truncated: 0,
        }
    }

    #[test]
    fn alertmanager_texts() {
        assert_eq!(n(false).subject(), "[FIRING:2] HighCpu (warning)");
        assert_eq!(n(true).subject(), "[RESOLVED] HighCpu (warning)");
        let j = n(false).webhook_json();
        assert_eq!(j["version"], "4");
        assert_eq!(j["status"], "firing");
        assert_eq!(j["commonLabels"]["severity"], "warning");
        assert!(j["commonLabels"].get("instance").is_none());
        assert_eq!(j["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(j["alerts"][0]["startsAt"], "2023-11-14T22:13:20Z");
        assert!(n(false).text_body().contains(" - instance = web-2"));
        assert_eq!(n(false).dedup_key(), n(true).dedup_key());
        assert_eq!(base64(b"sid:tok"), "c2lkOnRvaw==");
    }
}

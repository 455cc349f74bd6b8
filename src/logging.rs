//! Logs: every line Tidemark writes to stderr is a `tracing` event, formatted here as
//! [logfmt](https://brandur.org/logfmt) (the default, as Prometheus writes) or JSON, one line
//! each, with the time, the level, the component and the message, then the event's fields:
//!
//! ```text
//! ts=2026-12-06T09:41:07.412Z level=info component=job msg="loaded checkpoint" path=data/checkpoints/ckpt-00000000000000018128.tdc series=1000001
//! {"ts":"2026-12-06T09:41:07.412Z","level":"info","component":"job","msg":"loaded checkpoint","path":"data/checkpoints/ckpt-00000000000000018128.tdc","series":1000001}
//! ```
//!
//! The component is the event's `component` field when it has one, else it follows from the
//! module that logged it ([`component_of`]): `ingest`, `log`, `job`, `rules`, `notify`, `tiers`,
//! `kafka`, `cluster`, `http`, `cli`. Which events are written: `--log.level` for Tidemark's own
//! modules (`warn` for its dependencies), or `RUST_LOG` when set (`tracing-subscriber`'s
//! `EnvFilter` syntax, for example `RUST_LOG=info,tidemark::store::cold=debug`). Request logs
//! are `debug` events of component `http` (target `tidemark::http`), so off by default.
//!
//! The command line's own output for a person at a terminal (the `tiers` tables, progress) is
//! not a log and stays on stdout.

use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How log lines are written (`--log.format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// `key=value` pairs, values quoted when they hold a space, `=` or `"`.
    #[default]
    Logfmt,
    /// One JSON object per line.
    Json,
}

impl FromStr for Format {
    type Err = LogError;
    fn from_str(s: &str) -> Result<Self, LogError> {
        match s {
            "logfmt" => Ok(Format::Logfmt),
            "json" => Ok(Format::Json),
            _ => Err(LogError::Format(s.to_string())),
        }
    }
}

/// A log setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("--log.format {0:?}: not a log format (use logfmt or json)")]
    Format(String),
    #[error("--log.level {0:?}: not a level (use debug, info, warn or error)")]
    Level(String),
    #[error("RUST_LOG {value:?}: {reason} (see https://docs.rs/tracing-subscriber/latest/tracing_subscriber/filter/struct.EnvFilter.html)")]
    Filter { value: String, reason: String },
}

/// The filter: `RUST_LOG` when set, else `level` for Tidemark's crates and `warn` for the
/// rest.
pub fn filter(level: &str, rust_log: Option<&str>) -> Result<EnvFilter, LogError> {
    if let Some(v) = rust_log.filter(|v| !v.trim().is_empty()) {
        return EnvFilter::builder().parse(v).map_err(|e| LogError::Filter {
            value: v.to_string(),
            reason: e.to_string(),
        });
    }
    let level = match level {
        "debug" | "info" | "warn" | "error" => level,
        _ => return Err(LogError::Level(level.to_string())),
    };
    Ok(EnvFilter::new(format!(
        "warn,tidemark={level},tidemark_dataflows={level}"
    )))
}

/// Installs the process's logger: events at `level` and above (or as `RUST_LOG` says) to
/// stderr in `format`. Called once by the binary; a second call changes nothing.
pub fn init(level: &str, format: Format) -> Result<(), LogError> {
    let filter = filter(level, std::env::var("RUST_LOG").ok().as_deref())?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(Line { format })
        .try_init();
    Ok(())
}

/// The component of an event from the module that logged it (its `tracing` target).
pub fn component_of(target: &str) -> &str {
    let path = match target
        .strip_prefix("tidemark::")
        .or_else(|| target.strip_prefix("tidemark_dataflows::").map(|_| "job"))
    {
        Some(p) => p,
        // An explicit target (`target: "http"`) or another crate's module: its first segment.
        None => return target.split("::").next().unwrap_or(target),
    };
    let starts = |p: &str| path == p || path.starts_with(&format!("{p}::"));
    if starts("process::worker") {
        "cluster"
    } else if starts("process::notify") {
        "notify"
    } else if starts("process::ingest") {
        "ingest"
    } else if starts("process::up") {
        "http"
    } else if starts("transport::log") {
        "log"
    } else if starts("transport::kafka") || starts("alert::kafka") || starts("cluster::source") {
        "kafka"
    } else if starts("ingest") || starts("transport") {
        "ingest"
    } else if starts("alert::notify") {
        "notify"
    } else if starts("alert") {
        "rules"
    } else if starts("store::cold") {
        "tiers"
    } else if starts("cluster") {
        "cluster"
    } else if starts("server") || starts("query") || starts("web") || starts("ops") {
        "http"
    } else if starts("job") || starts("store") || path == "job" {
        "job"
    } else {
        path.split("::").next().unwrap_or(path)
    }
}

/// A field's value as the event recorded it.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

/// An event's message, component and other fields, in the order recorded.
#[derive(Default)]
struct Fields {
    message: String,
    component: Option<String>,
    rest: Vec<(&'static str, Value)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::Str(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::Str(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::U64(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::F64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::Str(value.to_string()));
    }
}

impl Fields {
    fn put(&mut self, field: &Field, v: Value) {
        match (field.name(), v) {
            ("message", Value::Str(s)) => self.message = s,
            ("component", Value::Str(s)) => self.component = Some(s),
            (name, v) => self.rest.push((name, v)),
        }
    }
}

/// The event formatter ([`Format`]).
struct Line {
    format: Format,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut f = Fields::default();
        event.record(&mut f);
        let meta = event.metadata();
        let line = render(
            self.format,
            &crate::time::rfc3339_ms(crate::time::now_ms()),
            *meta.level(),
            f.component
                .as_deref()
                .unwrap_or(component_of(meta.target())),
            &f.message,
            &f.rest,
        );
        writeln!(w, "{line}")
    }
}

fn level_name(l: Level) -> &'static str {
    match l {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// One line, without its newline.
fn render(
    format: Format,
    ts: &str,
    level: Level,
    component: &str,
    msg: &str,
    rest: &[(&str, Value)],
) -> String {
    let mut out = String::with_capacity(128 + msg.len());
    match format {
        Format::Logfmt => {
            let mut pair = |k: &str, v: &Value| {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(k);
                out.push('=');
                match v {
                    Value::Str(s) => logfmt_value(&mut out, s),
                    Value::I64(n) => {
                        let _ = write!(out, "{n}");
                    }
                    Value::U64(n) => {
                        let _ = write!(out, "{n}");
                    }
                    Value::F64(n) => {
                        let _ = write!(out, "{n}");
                    }
                    Value::Bool(b) => {
                        let _ = write!(out, "{b}");
                    }
                }
            };
            pair("ts", &Value::Str(ts.into()));
            pair("level", &Value::Str(level_name(level).into()));
            pair("component", &Value::Str(component.into()));
            pair("msg", &Value::Str(msg.into()));
            for (k, v) in rest {
                pair(k, v);
            }
        }
        Format::Json => {
            let mut m = serde_json::Map::new();
            m.insert("ts".into(), ts.into());
            m.insert("level".into(), level_name(level).into());
            m.insert("component".into(), component.into());
            m.insert("msg".into(), msg.into());
            for (k, v) in rest {
                let v = match v {
                    Value::Str(s) => serde_json::Value::from(s.as_str()),
                    Value::I64(n) => (*n).into(),
                    Value::U64(n) => (*n).into(),
                    // NaN and infinities are not JSON numbers: written as strings.
                    Value::F64(n) if n.is_finite() => (*n).into(),
                    Value::F64(n) => n.to_string().into(),
                    Value::Bool(b) => (*b).into(),
                };
                m.insert((*k).to_string(), v);
            }
            out = serde_json::Value::Object(m).to_string();
        }
    }
    out
}

/// A logfmt value: bare when it is a non-empty run of printable characters without space,
/// `=` or `"`; else quoted, with `"` and `\` escaped and control characters as `\n`, `\t` or
/// `\u{..}`.
fn logfmt_value(out: &mut String, s: &str) {
    let bare = !s.is_empty()
        && s.chars()
            .all(|c| c > ' ' && c != '=' && c != '"' && c != '\\' && !c.is_control());
    if bare {
        out.push_str(s);
        return;
    }
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Lets a repeated warning through at most once per `every`, counting what it held back:
/// [`Every::ready`] returns how many were held back since the last one let through.
pub struct Every {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Every {
    pub const fn new(every: Duration) -> Self {
        Every {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(held back since the last one)` when this one may be logged, else `None`.
    pub fn ready(&self) -> Option<u64> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if st.0.is_some_and(|t| now.duration_since(t) < self.every) {
            st.1 += 1;
            return None;
        }
        let held = st.1;
        *st = (Some(now), 0);
        Some(held)
    }
}

/// Parses one logfmt line into its pairs (for tests and tools that read Tidemark's logs).
pub fn parse_logfmt(line: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = line.chars().peekable();
    loop {
        while it.peek() == Some(&' ') {
            it.next();
        }
        if it.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = it.peek() {
            if c == '=' || c == ' ' {
                break;
            }
            key.push(c);
            it.next();
        }
        if it.next() != Some('=') {
            return Err(format!("key {key:?} without a value"));
        }
        let mut val = String::new();
        if it.peek() == Some(&'"') {
            it.next();
            loop {
                match it.next() {
                    Some('"') => break,
                    Some('\\') => match it.next() {
                        Some('n') => val.push('\n'),
                        Some('r') => val.push('\r'),
                        Some('t') => val.push('\t'),
                        Some('u') => {
                            let hex: String = it
                                .by_ref()
                                .skip_while(|&c| c == '{')
                                .take_while(|&c| c != '}')
                                .collect();
                            let c = u32::from_str_radix(&hex, 16)
                                .ok()
                                .and_then(char::from_u32)
                                .ok_or_else(|| format!("bad escape \\u{{{hex}}}"))?;
                            val.push(c);
                        }
                        Some(c) => val.push(c),
                        None => return Err("unterminated escape".into()),
                    },
                    Some(c) => val.push(c),
                    None => return Err(format!("unterminated quoted value of {key:?}")),
                }
            }
        } else {
            while let Some(&c) = it.peek() {
                if c == ' ' {
                    break;
                }
                val.push(c);
                it.next();
            }
        }
        out.push((key, val));
    }
}

/// A progress bar on stderr (done/total, rate, ETA), drawn only when stderr is a terminal:
/// `indicatif` hides it otherwise, so logs and pipes get no `\r` lines.
pub fn progress_bar(unit: &str) -> indicatif::ProgressBar {
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    let style = indicatif::ProgressStyle::with_template(&format!(
        "[{{bar:30}}] {{human_pos}}/{{human_len}} {unit}, {{per_sec}}, ETA {{eta}}"
    ))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("#>-");
    bar.set_style(style);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Vec<(&'static str, Value)> {
        vec![
            ("path", Value::Str("data/a b.tdc".into())),
            ("series", Value::U64(1_000_001)),
            ("took_s", Value::F64(1.5)),
            ("why", Value::Str("said \"no\"\nthen=yes".into())),
            ("ok", Value::Bool(true)),
        ]
    }

    #[test]
    fn logfmt_lines_parse_back_with_level_component_and_fields() {
        let line = render(
            Format::Logfmt,
            "2026-12-06T09:41:07.412Z",
            Level::WARN,
            "job",
            "checkpoint not usable, trying the previous one",
            &fields(),
        );
        assert!(!line.contains('\n'), "{line}");
        let pairs = parse_logfmt(&line).unwrap();
        let get = |k: &str| pairs.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
        assert_eq!(pairs[0].0, "ts");
        assert_eq!(get("level"), Some("warn"));
        assert_eq!(get("component"), Some("job"));
        assert_eq!(
            get("msg"),
            Some("checkpoint not usable, trying the previous one")
        );
        assert_eq!(get("path"), Some("data/a b.tdc"));
        assert_eq!(get("series"), Some("1000001"));
        assert_eq!(get("took_s"), Some("1.5"));
        assert_eq!(get("why"), Some("said \"no\"\nthen=yes"));
        assert_eq!(get("ok"), Some("true"));
    }

    #[test]
    fn json_lines_are_objects_with_typed_fields() {
        let mut f = fields();
        f.push(("nan", Value::F64(f64::NAN)));
        let line = render(
            Format::Json,
            "2026-12-06T09:41:07.412Z",
            Level::ERROR,
            "tiers",
            "cannot compact",
            &f,
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["component"], "tiers");
        assert_eq!(v["msg"], "cannot compact");
        assert_eq!(v["series"], 1_000_001);
        assert_eq!(v["took_s"], 1.5);
        assert_eq!(v["why"], "said \"no\"\nthen=yes");
        assert_eq!(v["nan"], "NaN");
    }

    #[test]
    fn components_follow_the_module() {
        for (target, c) in [
            ("tidemark::transport::log", "log"),
            ("tidemark::ingest::http", "ingest"),
            ("tidemark::job::checkpoint", "job"),
            ("tidemark::store::hot", "job"),
            ("tidemark::store::cold::writer", "tiers"),
            ("tidemark::alert::notify::templates", "notify"),
            ("tidemark::alert::eval", "rules"),
            ("tidemark::alert::kafka", "kafka"),
            ("tidemark::cluster::source", "kafka"),
            ("tidemark::cluster::control", "cluster"),
            ("tidemark::process::worker", "cluster"),
            ("tidemark::process::notify", "notify"),
            ("tidemark::process::up", "http"),
            ("tidemark::server", "http"),
            ("tidemark_dataflows::window", "job"),
            ("http", "http"),
            ("tidemark::http", "http"),
            ("rdkafka::client", "rdkafka"),
        ] {
            assert_eq!(component_of(target), c, "{target}");
        }
    }

    #[test]
    fn levels_and_filters_are_checked() {
        assert!(filter("info", None).is_ok());
        assert!(matches!(filter("loud", None), Err(LogError::Level(_))));
        assert!(filter("loud", Some("debug,tidemark::store=trace")).is_ok());
        assert!(matches!(
            filter("info", Some("tidemark=[{")),
            Err(LogError::Filter { .. })
        ));
        assert!(matches!("xml".parse::<Format>(), Err(LogError::Format(_))));
    }

    #[test]
    fn every_lets_one_through_per_period_and_counts_the_rest() {
        let e = Every::new(Duration::from_secs(3600));
        assert_eq!(e.ready(), Some(0));
        assert_eq!(e.ready(), None);
        assert_eq!(e.ready(), None);
        let e0 = Every::new(Duration::ZERO);
        assert_eq!(e0.ready(), Some(0));
        assert_eq!(e0.ready(), Some(0));
    }
}

//! OpenTelemetry metrics over OTLP/HTTP (`POST /api/v1/otlp/v1/metrics`, protobuf or JSON),
//! translated as Prometheus 3's OTLP receiver translates them by default
//! (`UnderscoreEscapingWithSuffixes`):
//!
//! - names: the metric name's words joined by `_`, the unit's words appended (`s` ->
//!   `seconds`, `By` -> `bytes`, `By/s` -> `bytes_per_second`, `{annotations}` dropped),
//!   `_total` for monotonic sums, `_ratio` for gauges of unit `1`;
//! - gauges and non-monotonic sums are gauges; monotonic cumulative sums are counters;
//!   cumulative explicit-bucket histograms become `_bucket{le}` (cumulative counts, `+Inf`),
//!   `_sum` and `_count`; summaries become `{quantile}`, `_sum` and `_count`;
//! - data point attributes are labels (invalid characters become `_`, a leading digit gets
//!   `key_`); `service.name` (with `service.namespace/`) is `job`, `service.instance.id` is
//!   `instance`; the resource's other attributes go to one `target_info` series per resource;
//! - a data point flagged "no recorded value" is a staleness marker.
//!
//! Delta temporality and exponential histograms are rejected per metric, naming it; the rest
//! of the request is kept.

use std::borrow::Cow;

use serde_json::Value;

use super::{BatchBuilder, IngestError, SeriesBuf};
use crate::model::metadata::Metadata;

/// The protobuf messages of `opentelemetry/proto/collector/metrics/v1` and the messages they
/// use (fields Tidemark reads; others are skipped by the decoder).
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportMetricsServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_metrics: Vec<ResourceMetrics>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportMetricsServiceResponse {
        #[prost(message, optional, tag = "1")]
        pub partial_success: Option<ExportMetricsPartialSuccess>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportMetricsPartialSuccess {
        #[prost(int64, tag = "1")]
        pub rejected_data_points: i64,
        #[prost(string, tag = "2")]
        pub error_message: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceMetrics {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_metrics: Vec<ScopeMetrics>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeMetrics {
        #[prost(message, repeated, tag = "2")]
        pub metrics: Vec<Metric>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub description: String,
        #[prost(string, tag = "3")]
        pub unit: String,
        #[prost(oneof = "Data", tags = "5, 7, 9, 10, 11")]
        pub data: Option<Data>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Data {
        #[prost(message, tag = "5")]
        Gauge(Gauge),
        #[prost(message, tag = "7")]
        Sum(Sum),
        #[prost(message, tag = "9")]
        Histogram(Histogram),
        #[prost(message, tag = "10")]
        ExponentialHistogram(ExponentialHistogram),
        #[prost(message, tag = "11")]
        Summary(Summary),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Gauge {
        #[prost(message, repeated, tag = "1")]
        pub data_points: Vec<NumberDataPoint>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sum {
        #[prost(message, repeated, tag = "1")]
        pub data_points: Vec<NumberDataPoint>,
        /// 1 = delta, 2 = cumulative.
        #[prost(int32, tag = "2")]
        pub aggregation_temporality: i32,
        #[prost(bool, tag = "3")]
        pub is_monotonic: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        #[prost(message, repeated, tag = "1")]
        pub data_points: Vec<HistogramDataPoint>,
        #[prost(int32, tag = "2")]
        pub aggregation_temporality: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExponentialHistogram {
        #[prost(int32, tag = "2")]
        pub aggregation_temporality: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        #[prost(message, repeated, tag = "1")]
        pub data_points: Vec<SummaryDataPoint>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum NumberValue {
        #[prost(double, tag = "4")]
        AsDouble(f64),
        #[prost(sfixed64, tag = "6")]
        AsInt(i64),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NumberDataPoint {
        #[prost(message, repeated, tag = "7")]
        pub attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "3")]
        pub time_unix_nano: u64,
        #[prost(oneof = "NumberValue", tags = "4, 6")]
        pub value: Option<NumberValue>,
        #[prost(uint32, tag = "8")]
        pub flags: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HistogramDataPoint {
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "3")]
        pub time_unix_nano: u64,
        #[prost(fixed64, tag = "4")]
        pub count: u64,
        #[prost(double, optional, tag = "5")]
        pub sum: Option<f64>,
        #[prost(fixed64, repeated, tag = "6")]
        pub bucket_counts: Vec<u64>,
        #[prost(double, repeated, tag = "7")]
        pub explicit_bounds: Vec<f64>,
        #[prost(uint32, tag = "10")]
        pub flags: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SummaryDataPoint {
        #[prost(message, repeated, tag = "7")]
        pub attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "3")]
        pub time_unix_nano: u64,
        #[prost(fixed64, tag = "4")]
        pub count: u64,
        #[prost(double, tag = "5")]
        pub sum: f64,
        #[prost(message, repeated, tag = "6")]
        pub quantile_values: Vec<ValueAtQuantile>,
        #[prost(uint32, tag = "8")]
        pub flags: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueAtQuantile {
        #[prost(double, tag = "1")]
        pub quantile: f64,
        #[prost(double, tag = "2")]
        pub value: f64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "Any", tags = "1, 2, 3, 4, 5, 6, 7")]
        pub value: Option<Any>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Any {
        #[prost(string, tag = "1")]
        String(String),
        #[prost(bool, tag = "2")]
        Bool(bool),
        #[prost(int64, tag = "3")]
        Int(i64),
        #[prost(double, tag = "4")]
        Double(f64),
        #[prost(message, tag = "5")]
        Array(ArrayValue),
        #[prost(message, tag = "6")]
        KvList(KeyValueList),
        #[prost(bytes, tag = "7")]
        Bytes(Vec<u8>),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ArrayValue {
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<AnyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValueList {
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<KeyValue>,
    }
}

use proto::*;

/// The data point flag "no recorded value" (a staleness marker).
const NO_RECORDED_VALUE: u32 = 1;
const DELTA: i32 = 1;

/// What a request translated to besides its samples: the points rejected and why.
#[derive(Debug, Default)]
pub struct Outcome {
    pub metadata: Vec<(String, Metadata)>,
    /// Points refused beyond the one error each refused metric counts in the builder.
    pub extra_rejected_points: i64,
}

/// Decodes a protobuf (`json == false`) or OTLP/JSON body.
pub fn decode(body: &[u8], json: bool) -> Result<ExportMetricsServiceRequest, IngestError> {
    if json {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| IngestError::Decode(format!("OTLP/JSON: {e}")))?;
        from_json(&v).map_err(|e| IngestError::Decode(format!("OTLP/JSON: {e}")))
    } else {
        <ExportMetricsServiceRequest as prost::Message>::decode(body).map_err(|e| {
            IngestError::Decode(format!("OTLP protobuf ExportMetricsServiceRequest: {e}"))
        })
    }
}

/// Translates a decoded request into `out` (errors per metric, counted in `metric`s).
pub fn translate(req: &ExportMetricsServiceRequest, out: &mut BatchBuilder<'_>) -> Outcome {
    out.position = "metric";
    let mut outcome = Outcome::default();
    let mut ordinal = 0usize;
    for rm in &req.resource_metrics {
        let res_attrs: &[KeyValue] = rm
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let (job, instance) = job_instance(res_attrs);
        let mut newest: Option<i64> = None;
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                ordinal += 1;
                match metric(m, &job, &instance, ordinal, out, &mut newest) {
                    Ok(meta) => outcome.metadata.push(meta),
                    Err((points, reason)) => {
                        // The error counts one point; the metric's others are refused too.
                        out.error(ordinal, format!("metric {:?}: {reason}", m.name));
                        outcome.extra_rejected_points += points.saturating_sub(1) as i64;
                    }
                }
            }
        }
        // target_info: the resource's other attributes, once per resource.
        let others: Vec<&KeyValue> = res_attrs
            .iter()
            .filter(|kv| {
                !matches!(
                    kv.key.as_str(),
                    "service.name" | "service.namespace" | "service.instance.id"
                )
            })
            .collect();
        if let (Some(ts), false) = (newest, others.is_empty()) {
            let mut buf = SeriesBuf::default();
            buf.set_name(&["target_info"]);
            push_id(&mut buf, &job, &instance);
            for kv in others {
                buf.push(
                    Cow::Owned(label_name(&kv.key)),
                    Cow::Owned(any_string(&kv.value)),
                );
            }
            out.add(&mut buf, ts, 1.0, ordinal.max(1));
            outcome.metadata.push((
                "target_info".into(),
                Metadata {
                    kind: "gauge".into(),
                    help: "Target metadata".into(),
                    unit: String::new(),
                },
            ));
        }
    }
    outcome
}

fn job_instance(attrs: &[KeyValue]) -> (String, String) {
    let get = |k: &str| {
        attrs
            .iter()
            .find(|kv| kv.key == k)
            .map(|kv| any_string(&kv.value))
            .filter(|v| !v.is_empty())
    };
    let job = match (get("service.namespace"), get("service.name")) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        (None, Some(n)) => n,
        _ => String::new(),
    };
    (job, get("service.instance.id").unwrap_or_default())
}

fn push_id(buf: &mut SeriesBuf<'_>, job: &str, instance: &str) {
    if !job.is_empty() {
        buf.push(Cow::Borrowed("job"), Cow::Owned(job.to_string()));
    }
    if !instance.is_empty() {
        buf.push(Cow::Borrowed("instance"), Cow::Owned(instance.to_string()));
    }
}

/// One metric's points into `out`; its metadata, or (points, reason) when it is refused.
fn metric(
    m: &Metric,
    job: &str,
    instance: &str,
    ordinal: usize,
    out: &mut BatchBuilder<'_>,
    newest: &mut Option<i64>,
) -> Result<(String, Metadata), (usize, String)> {
    if m.name.is_empty() {
        return Err((0, "a metric needs a name".into()));
    }
    let series = |attrs: &[KeyValue], name: &str, extra: Option<(&str, String)>| {
        let mut buf = SeriesBuf::default();
        buf.set_name(&[name]);
        for kv in attrs {
            let n = label_name(&kv.key);
            if n == "job" || n == "instance" {
                continue;
            }
            buf.push(Cow::Owned(n), Cow::Owned(any_string(&kv.value)));
        }
        push_id(&mut buf, job, instance);
        if let Some((k, v)) = extra {
            buf.push(Cow::Owned(k.to_string()), Cow::Owned(v));
        }
        buf
    };
    let mut note = |ts: i64| *newest = Some(newest.map_or(ts, |n| n.max(ts)));
    let value = |flags: u32, v: f64| {
        if flags & NO_RECORDED_VALUE != 0 {
            crate::model::stale_nan()
        } else {
            v
        }
    };
    let (kind, name) = match &m.data {
        None => return Err((0, "no data (gauge, sum, histogram or summary)".into())),
        Some(Data::Gauge(g)) => {
            let name = metric_name(&m.name, &m.unit, Kind::Gauge);
            for p in &g.data_points {
                let ts = ms(p.time_unix_nano);
                note(ts);
                out.add(
                    &mut series(&p.attributes, &name, None),
                    ts,
                    value(p.flags, number(p)),
                    ordinal,
                );
            }
            ("gauge", name)
        }
        Some(Data::Sum(s)) => {
            if s.is_monotonic && s.aggregation_temporality == DELTA {
                return Err((s.data_points.len(), "delta temporality is not supported for monotonic sums (Prometheus stores cumulative counters): configure the exporter's temporality preference as cumulative".into()));
            }
            let k = if s.is_monotonic {
                Kind::Counter
            } else {
                Kind::Gauge
            };
            let name = metric_name(&m.name, &m.unit, k);
            for p in &s.data_points {
                let ts = ms(p.time_unix_nano);
                note(ts);
                out.add(
                    &mut series(&p.attributes, &name, None),
                    ts,
                    value(p.flags, number(p)),
                    ordinal,
                );
            }
            (if s.is_monotonic { "counter" } else { "gauge" }, name)
        }
        Some(Data::Histogram(h)) => {
            if h.aggregation_temporality == DELTA {
                return Err((h.data_points.len(), "delta temporality is not supported for histograms: configure the exporter's temporality preference as cumulative".into()));
            }
            let name = metric_name(&m.name, &m.unit, Kind::Histogram);
            for p in &h.data_points {
                let ts = ms(p.time_unix_nano);
                note(ts);
                if p.bucket_counts.len() != p.explicit_bounds.len() + 1
                    && !p.bucket_counts.is_empty()
                {
                    return Err((h.data_points.len(), format!("{} bucket counts for {} bounds (there must be one more count than bounds)", p.bucket_counts.len(), p.explicit_bounds.len())));
                }
                let mut cum = 0u64;
                for (i, c) in p.bucket_counts.iter().enumerate() {
                    cum += c;
                    let le = match p.explicit_bounds.get(i) {
                        Some(b) => format_bound(*b),
                        None => "+Inf".to_string(),
                    };
                    out.add(
                        &mut series(&p.attributes, &format!("{name}_bucket"), Some(("le", le))),
                        ts,
                        value(p.flags, cum as f64),
                        ordinal,
                    );
                }
                if p.bucket_counts.is_empty() {
                    out.add(
                        &mut series(
                            &p.attributes,
                            &format!("{name}_bucket"),
                            Some(("le", "+Inf".into())),
                        ),
                        ts,
                        value(p.flags, p.count as f64),
                        ordinal,
                    );
                }
                if let Some(sum) = p.sum {
                    out.add(
                        &mut series(&p.attributes, &format!("{name}_sum"), None),
                        ts,
                        value(p.flags, sum),
                        ordinal,
                    );
                }
                out.add(
                    &mut series(&p.attributes, &format!("{name}_count"), None),
                    ts,
                    value(p.flags, p.count as f64),
                    ordinal,
                );
            }
            ("histogram", name)
        }
        Some(Data::ExponentialHistogram(_)) => {
            return Err((0, "exponential histograms (Prometheus native histograms) are not supported; configure the exporter's default histogram aggregation as explicit bucket".into()));
        }
        Some(Data::Summary(s)) => {
            let name = metric_name(&m.name, &m.unit, Kind::Summary);
            for p in &s.data_points {
                let ts = ms(p.time_unix_nano);
                note(ts);
                for q in &p.quantile_values {
                    out.add(
                        &mut series(
                            &p.attributes,
                            &name,
                            Some(("quantile", format_bound(q.quantile))),
                        ),
                        ts,
                        value(p.flags, q.value),
                        ordinal,
                    );
                }
                out.add(
                    &mut series(&p.attributes, &format!("{name}_sum"), None),
                    ts,
                    value(p.flags, p.sum),
                    ordinal,
                );
                out.add(
                    &mut series(&p.attributes, &format!("{name}_count"), None),
                    ts,
                    value(p.flags, p.count as f64),
                    ordinal,
                );
            }
            ("summary", name)
        }
    };
    Ok((
        name,
        Metadata {
            kind: kind.into(),
            help: m.description.clone(),
            unit: unit_words(&m.unit).0,
        },
    ))
}

/// A bucket bound or quantile as Prometheus's OTLP translator writes it (Go's
/// `FormatFloat(v, 'f', -1, 64)`: `1`, `0.25`, `+Inf`).
fn format_bound(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn number(p: &NumberDataPoint) -> f64 {
    match p.value {
        Some(NumberValue::AsDouble(d)) => d,
        Some(NumberValue::AsInt(i)) => i as f64,
        None => 0.0,
    }
}

fn ms(nanos: u64) -> i64 {
    (nanos / 1_000_000) as i64
}

#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    Gauge,
    Counter,
    Histogram,
    Summary,
}

/// A unit's words: (main, per) — `By/s` is ("bytes", "second").
fn unit_words(unit: &str) -> (String, String) {
    // `{requests}` annotations carry no unit.
    let mut clean = String::new();
    let mut depth = 0;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = (depth - 1).max(0),
            c if depth == 0 => clean.push(c),
            _ => {}
        }
    }
    let (main, per) = match clean.split_once('/') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (clean.trim(), ""),
    };
    let main = match main {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        other => other,
    };
    let per = match per {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    };
    (main.to_string(), per.to_string())
}

/// Prometheus 3's metric name for an OTLP metric (words, unit, `_total`, `_ratio`).
pub fn metric_name(name: &str, unit: &str, kind: Kind) -> String {
    let mut words: Vec<String> = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    let (main, per) = unit_words(unit);
    let clean = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    };
    let main_words = clean(&main);
    if !main_words.is_empty() && !words.ends_with(&main_words) && !words.contains(&main) {
        words.extend(main_words);
    }
    let per_words = clean(&per);
    let has_per = words.iter().any(|w| w == "per") && words.contains(&per);
    if !per_words.is_empty() && !has_per {
        words.push("per".into());
        words.extend(per_words);
    }
    if kind == Kind::Counter {
        words.retain(|w| w != "total");
        words.push("total".into());
    }
    if kind == Kind::Gauge && unit.trim() == "1" && !words.iter().any(|w| w == "ratio") {
        words.push("ratio".into());
    }
    let mut out = words.join("_");
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Prometheus's label name for an attribute key: invalid characters become `_`, a leading
/// digit gets `key_`, a single leading `_` gets `key`.
pub fn label_name(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert_str(0, "key_");
    } else if s.starts_with('_') && !s.starts_with("__") {
        s.insert_str(0, "key");
    }
    s
}

/// An attribute value as label text (arrays and maps as JSON, as Prometheus does).
fn any_string(v: &Option<AnyValue>) -> String {
    fn json(v: &AnyValue) -> Value {
        match &v.value {
            None => Value::Null,
            Some(Any::String(s)) => Value::String(s.clone()),
            Some(Any::Bool(b)) => Value::Bool(*b),
            Some(Any::Int(i)) => Value::from(*i),
            Some(Any::Double(d)) => Value::from(*d),
            Some(Any::Array(a)) => Value::Array(a.values.iter().map(json).collect()),
            Some(Any::KvList(l)) => Value::Object(
                l.values
                    .iter()
                    .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, json)))
                    .collect(),
            ),
            Some(Any::Bytes(b)) => Value::String(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                b,
            )),
        }
    }
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(Any::String(s)) => s.clone(),
        Some(Any::Bool(b)) => b.to_string(),
        Some(Any::Int(i)) => i.to_string(),
        Some(Any::Double(d)) => d.to_string(),
        Some(_) => json(v.as_ref().expect("matched Some")).to_string(),
    }
}

// OTLP/JSON: the protobuf JSON mapping (lowerCamelCase, or the proto names), 64-bit integers
// as strings or numbers, enums as numbers.

fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

fn list<'a>(v: &'a Value, camel: &str, snake: &str) -> Result<&'a [Value], String> {
    match field(v, camel, snake) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(format!("{camel} must be a list, not {other}")),
    }
}

fn u64_of(v: Option<&Value>, what: &str) -> Result<u64, String> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| format!("{what}: {n} is not an unsigned integer")),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| format!("{what}: {s:?} is not an unsigned integer")),
        Some(o) => Err(format!("{what}: {o} is not an integer")),
    }
}

fn i64_of(v: Option<&Value>, what: &str) -> Result<i64, String> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| format!("{what}: {n} is not an integer")),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| format!("{what}: {s:?} is not an integer")),
        Some(o) => Err(format!("{what}: {o} is not an integer")),
    }
}

fn f64_of(v: Option<&Value>, what: &str) -> Result<f64, String> {
    match v {
        None | Some(Value::Null) => Ok(0.0),
        Some(Value::Number(n)) => n
            .as_f64()
            .ok_or_else(|| format!("{what}: {n} is not a number")),
        Some(Value::String(s)) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => s
                .parse()
                .map_err(|_| format!("{what}: {s:?} is not a number")),
        },
        Some(o) => Err(format!("{what}: {o} is not a number")),
    }
}

fn any_json(v: &Value) -> Result<AnyValue, String> {
    let value = if let Some(s) = field(v, "stringValue", "string_value") {
        Some(Any::String(s.as_str().unwrap_or_default().to_string()))
    } else if let Some(b) = field(v, "boolValue", "bool_value") {
        Some(Any::Bool(b.as_bool().unwrap_or(false)))
    } else if let Some(i) = field(v, "intValue", "int_value") {
        Some(Any::Int(i64_of(Some(i), "intValue")?))
    } else if let Some(d) = field(v, "doubleValue", "double_value") {
        Some(Any::Double(f64_of(Some(d), "doubleValue")?))
    } else if let Some(a) = field(v, "arrayValue", "array_value") {
        Some(Any::Array(ArrayValue {
            values: list(a, "values", "values")?
                .iter()
                .map(any_json)
                .collect::<Result<_, _>>()?,
        }))
    } else if let Some(l) = field(v, "kvlistValue", "kvlist_value") {
        Some(Any::KvList(KeyValueList {
            values: attrs_json(l, "values", "values")?,
        }))
    } else if let Some(b) = field(v, "bytesValue", "bytes_value") {
        let s = b.as_str().unwrap_or_default();
        Some(Any::Bytes(
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, s)
                .map_err(|e| format!("bytesValue: {e}"))?,
        ))
    } else {
        None
    };
    Ok(AnyValue { value })
}

fn attrs_json(v: &Value, camel: &str, snake: &str) -> Result<Vec<KeyValue>, String> {
    list(v, camel, snake)?
        .iter()
        .map(|kv| {
            Ok(KeyValue {
                key: kv
                    .get("key")
                    .and_then(Value::as_str)
                    .ok_or("an attribute needs a \"key\"")?
                    .to_string(),
                value: match kv.get("value") {
                    Some(v) => Some(any_json(v)?),
                    None => None,
                },
            })
        })
        .collect()
}

fn number_points(v: &Value) -> Result<Vec<NumberDataPoint>, String> {
    list(v, "dataPoints", "data_points")?
        .iter()
        .map(|p| {
            let value = if let Some(d) = field(p, "asDouble", "as_double") {
                Some(NumberValue::AsDouble(f64_of(Some(d), "asDouble")?))
            } else if let Some(i) = field(p, "asInt", "as_int") {
                Some(NumberValue::AsInt(i64_of(Some(i), "asInt")?))
            } else {
                None
            };
            Ok(NumberDataPoint {
                attributes: attrs_json(p, "attributes", "attributes")?,
                time_unix_nano: u64_of(field(p, "timeUnixNano", "time_unix_nano"), "timeUnixNano")?,
                value,
                flags: u64_of(p.get("flags"), "flags")? as u32,
            })
        })
        .collect()
}

fn from_json(v: &Value) -> Result<ExportMetricsServiceRequest, String> {
    let mut req = ExportMetricsServiceRequest::default();
    for (i, rm) in list(v, "resourceMetrics", "resource_metrics")?
        .iter()
        .enumerate()
    {
        let at = |e: String| format!("resourceMetrics[{i}]: {e}");
        let resource = match rm.get("resource") {
            Some(r) => Some(Resource {
                attributes: attrs_json(r, "attributes", "attributes").map_err(at)?,
            }),
            None => None,
        };
        let mut out = ResourceMetrics {
            resource,
            scope_metrics: Vec::new(),
        };
        for (j, sm) in list(rm, "scopeMetrics", "scope_metrics")
            .map_err(at)?
            .iter()
            .enumerate()
        {
            let mut metrics = Vec::new();
            for (k, m) in list(sm, "metrics", "metrics")
                .map_err(at)?
                .iter()
                .enumerate()
            {
                let at =
                    |e: String| format!("resourceMetrics[{i}].scopeMetrics[{j}].metrics[{k}]: {e}");
                let temporality = |d: &Value| {
                    i64_of(
                        field(d, "aggregationTemporality", "aggregation_temporality"),
                        "aggregationTemporality",
                    )
                    .map(|t| t as i32)
                };
                let data = if let Some(g) = m.get("gauge") {
                    Some(Data::Gauge(Gauge {
                        data_points: number_points(g).map_err(at)?,
                    }))
                } else if let Some(s) = m.get("sum") {
                    Some(Data::Sum(Sum {
                        data_points: number_points(s).map_err(at)?,
                        aggregation_temporality: temporality(s).map_err(at)?,
                        is_monotonic: field(s, "isMonotonic", "is_monotonic")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                    }))
                } else if let Some(h) = m.get("histogram") {
                    let points = list(h, "dataPoints", "data_points")
                        .map_err(at)?
                        .iter()
                        .map(|p| {
                            Ok(HistogramDataPoint {
                                attributes: attrs_json(p, "attributes", "attributes")?,
                                time_unix_nano: u64_of(
                                    field(p, "timeUnixNano", "time_unix_nano"),
                                    "timeUnixNano",
                                )?,
                                count: u64_of(p.get("count"), "count")?,
                                sum: match p.get("sum") {
                                    None | Some(Value::Null) => None,
                                    s => Some(f64_of(s, "sum")?),
                                },
                                bucket_counts: list(p, "bucketCounts", "bucket_counts")?
                                    .iter()
                                    .map(|c| u64_of(Some(c), "bucketCounts"))
                                    .collect::<Result<_, _>>()?,
                                explicit_bounds: list(p, "explicitBounds", "explicit_bounds")?
                                    .iter()
                                    .map(|c| f64_of(Some(c), "explicitBounds"))
                                    .collect::<Result<_, _>>()?,
                                flags: u64_of(p.get("flags"), "flags")? as u32,
                            })
                        })
                        .collect::<Result<Vec<_>, String>>()
                        .map_err(at)?;
                    Some(Data::Histogram(Histogram {
                        data_points: points,
                        aggregation_temporality: temporality(h).map_err(at)?,
                    }))
                } else if let Some(e) = field(m, "exponentialHistogram", "exponential_histogram") {
                    Some(Data::ExponentialHistogram(ExponentialHistogram {
                        aggregation_temporality: temporality(e).map_err(at)?,
                    }))
                } else if let Some(s) = m.get("summary") {
                    let points = list(s, "dataPoints", "data_points")
                        .map_err(at)?
                        .iter()
                        .map(|p| {
                            Ok(SummaryDataPoint {
                                attributes: attrs_json(p, "attributes", "attributes")?,
                                time_unix_nano: u64_of(
                                    field(p, "timeUnixNano", "time_unix_nano"),
                                    "timeUnixNano",
                                )?,
                                count: u64_of(p.get("count"), "count")?,
                                sum: f64_of(p.get("sum"), "sum")?,
                                quantile_values: list(p, "quantileValues", "quantile_values")?
                                    .iter()
                                    .map(|q| {
                                        Ok(ValueAtQuantile {
                                            quantile: f64_of(q.get("quantile"), "quantile")?,
                                            value: f64_of(q.get("value"), "value")?,
                                        })
                                    })
                                    .collect::<Result<_, String>>()?,
                                flags: u64_of(p.get("flags"), "flags")? as u32,
                            })
                        })
                        .collect::<Result<Vec<_>, String>>()
                        .map_err(at)?;
                    Some(Data::Summary(Summary {
                        data_points: points,
                    }))
                } else {
                    None
                };
                metrics.push(Metric {
                    name: m
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    description: m
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    unit: m
                        .get("unit")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    data,
                });
            }
            out.scope_metrics.push(ScopeMetrics { metrics });
        }
        req.resource_metrics.push(out);
    }
    Ok(req)
}

/// The response body for `outcome`: an `ExportMetricsServiceResponse`, with
/// `partial_success` when points were rejected (protobuf, or its JSON mapping).
pub fn response(rejected: i64, message: &str, json: bool) -> Vec<u8> {
    let partial = (rejected > 0).then(|| ExportMetricsPartialSuccess {
        rejected_data_points: rejected,
        error_message: message.to_string(),
    });
    if json {
        let v = match &partial {
            Some(p) => {
                serde_json::json!({"partialSuccess": {"rejectedDataPoints": p.rejected_data_points.to_string(), "errorMessage": p.error_message}})
            }
            None => serde_json::json!({}),
        };
        v.to_string().into_bytes()
    } else {
        prost::Message::encode_to_vec(&ExportMetricsServiceResponse {
            partial_success: partial,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Limits;

    #[test]
    fn names_as_prometheus_3() {
        assert_eq!(
            metric_name("http.server.request.duration", "s", Kind::Histogram),
            "http_server_request_duration_seconds"
        );
        assert_eq!(
            metric_name("http.server.requests", "{request}", Kind::Counter),
            "http_server_requests_total"
        );
        assert_eq!(
            metric_name("system.network.io", "By", Kind::Counter),
            "system_network_io_bytes_total"
        );
        assert_eq!(
            metric_name("throughput", "By/s", Kind::Gauge),
            "throughput_bytes_per_second"
        );
        assert_eq!(
            metric_name("cpu.utilization", "1", Kind::Gauge),
            "cpu_utilization_ratio"
        );
        assert_eq!(
            metric_name("requests_total", "", Kind::Counter),
            "requests_total"
        );
        assert_eq!(
            metric_name("latency_seconds", "s", Kind::Gauge),
            "latency_seconds"
        );
        assert_eq!(metric_name("2xx.count", "", Kind::Gauge), "_2xx_count");
        assert_eq!(label_name("http.method"), "http_method");
        assert_eq!(label_name("0day"), "key_0day");
        assert_eq!(label_name("_private"), "key_private");
    }

    fn json_request() -> &'static str {
        r#"{"resourceMetrics":[{"resource":{"attributes":[
            {"key":"service.name","value":{"stringValue":"checkout"}},
            {"key":"service.instance.id","value":{"stringValue":"i-1"}},
            {"key":"host.name","value":{"stringValue":"h1"}}]},
          "scopeMetrics":[{"scope":{"name":"app"},"metrics":[
            {"name":"orders","unit":"{order}","description":"Orders placed.","sum":{"aggregationTemporality":2,"isMonotonic":true,
              "dataPoints":[{"attributes":[{"key":"region","value":{"stringValue":"eu"}}],"timeUnixNano":"1700000000000000000","asInt":"42"}]}},
            {"name":"queue.depth","gauge":{"dataPoints":[{"timeUnixNano":"1700000000000000000","asDouble":3.5}]}},
            {"name":"latency","unit":"s","histogram":{"aggregationTemporality":2,"dataPoints":[
              {"timeUnixNano":"1700000000000000000","count":"6","sum":1.5,"bucketCounts":["1","2","3"],"explicitBounds":[0.1,1]}]}},
            {"name":"deltas","sum":{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{"timeUnixNano":"1","asInt":"1"}]}},
            {"name":"expo","exponentialHistogram":{"aggregationTemporality":2}}
          ]}]}]}"#
    }

    #[test]
    fn translates_json_as_prometheus_3_and_names_bad_metrics() {
        let req = decode(json_request().as_bytes(), true).unwrap();
        let limits = Limits::default();
        let mut b = BatchBuilder::new(&limits);
        let outcome = translate(&req, &mut b);
        let (batch, errs, rejected) = b.finish();
        let mut got: Vec<String> = batch
            .samples
            .iter()
            .map(|s| format!("{} {} {}", batch.labels(s.series as usize), s.ts, s.value))
            .collect();
        got.sort();
        let want = [
            "latency_seconds_bucket{instance=\"i-1\", job=\"checkout\", le=\"+Inf\"} 1700000000000 6",
            "latency_seconds_bucket{instance=\"i-1\", job=\"checkout\", le=\"0.1\"} 1700000000000 1",
            "latency_seconds_bucket{instance=\"i-1\", job=\"checkout\", le=\"1\"} 1700000000000 3",
            "latency_seconds_count{instance=\"i-1\", job=\"checkout\"} 1700000000000 6",
            "latency_seconds_sum{instance=\"i-1\", job=\"checkout\"} 1700000000000 1.5",
            "orders_total{instance=\"i-1\", job=\"checkout\", region=\"eu\"} 1700000000000 42",
            "queue_depth{instance=\"i-1\", job=\"checkout\"} 1700000000000 3.5",
            "target_info{host_name=\"h1\", instance=\"i-1\", job=\"checkout\"} 1700000000000 1",
        ];
        assert_eq!(got, want);
        assert_eq!(rejected, 2);
        assert_eq!(outcome.extra_rejected_points, 0);
        assert!(
            errs[0]
                .reason
                .contains("metric \"deltas\": delta temporality"),
            "{errs:?}"
        );
        assert_eq!(errs[0].line, 4);
        assert!(
            errs[1].reason.contains("exponential histograms"),
            "{errs:?}"
        );
        assert_eq!(outcome.metadata[0].0, "orders_total");
        assert_eq!(outcome.metadata[0].1.kind, "counter");
        assert_eq!(outcome.metadata[0].1.help, "Orders placed.");
    }

    #[test]
    fn protobuf_round_trip_and_garbage() {
        let req = decode(json_request().as_bytes(), true).unwrap();
        let bytes = prost::Message::encode_to_vec(&req);
        assert_eq!(decode(&bytes, false).unwrap(), req);
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            let _ = decode(&bytes[..cut], false);
        }
        let e = decode(b"{\"resourceMetrics\": 5}", true).unwrap_err();
        assert!(
            e.to_string().contains("resourceMetrics must be a list"),
            "{e}"
        );
        let e = decode(b"not json", true).unwrap_err();
        assert!(e.to_string().contains("OTLP/JSON: expected"), "{e}");
    }
}

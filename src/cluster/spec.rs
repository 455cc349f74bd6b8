//! Job specs (`jobs/*.toml`), validated against `schemas/job.schema.json`.
//!
//! Errors name the file, the line, the key and the fix, e.g.
//! `jobs/x.toml line 4: source.topcs: unknown key: did you mean `topics`?`.

use serde::Deserialize;

use crate::config::KafkaFormat;
use crate::jsonschema as schema;
use crate::time::Millis;

/// The JSON schema every spec is checked against (the file in `schemas/`).
pub const JOB_SCHEMA: &str = include_str!("../../schemas/job.schema.json");

/// A spec that does not validate: every problem, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid job spec {origin}:\n{}", problems.join("\n"))]
pub struct SpecError {
    pub origin: String,
    pub problems: Vec<String>,
}

/// Where partitions without a committed offset start.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    #[default]
    Earliest,
    Latest,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    #[serde(default = "kafka_kind")]
    pub kind: String,
    /// Empty: the worker's `--brokers`.
    #[serde(default)]
    pub brokers: String,
    pub topics: Vec<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub format: KafkaFormat,
    #[serde(default)]
    pub start: StartAt,
    /// librdkafka `fetch.wait.max.ms`: how long a fetch waits for data. Brokers that do not
    /// answer a waiting fetch when data arrives (tansu) add up to this to the latency.
    #[serde(default = "fetch_wait")]
    pub fetch_wait: Millis,
}

fn fetch_wait() -> Millis {
    Millis(10)
}

fn kafka_kind() -> String {
    "kafka".into()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatermarkSpec {
    pub out_of_orderness: Millis,
    pub idle_timeout: Millis,
    pub allowed_lateness: Millis,
}

impl Default for WatermarkSpec {
    fn default() -> Self {
        let j = crate::config::JobConfig::default();
        WatermarkSpec {
            out_of_orderness: j.out_of_orderness,
            idle_timeout: j.idle_timeout,
            allowed_lateness: j.allowed_lateness,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowSpec {
    pub rollups: Vec<String>,
}

impl Default for WindowSpec {
    fn default() -> Self {
        WindowSpec {
            rollups: vec!["1m".into(), "1h".into()],
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HotSpec {
    pub retention: Millis,
}

impl Default for HotSpec {
    fn default() -> Self {
        HotSpec {
            retention: crate::config::HotConfig::default().retention,
        }
    }
}

/// Cold tiers: with `url`, the job writes raw samples and its rollups as Parquet there
/// (`file:///abs/path`, `s3://bucket/prefix`); retentions apply where `tidemark up` compacts.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TierSpec {
    pub url: Option<String>,
    pub raw_retention: Option<Millis>,
    pub rollup_1m_retention: Option<Millis>,
    pub rollup_1h_retention: Option<Millis>,
}

/// Alerting and recording rules: evaluated on worker 0 over the whole cluster's data at
/// event-time ticks; alert events go to the Kafka topic `topic` (for `tidemark notify`),
/// recorded samples to the job's first source topic.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleSpec {
    /// Prometheus rule files, on process 0's file system (relative to its working directory).
    pub files: Vec<String>,
    /// The topic alert events are produced to.
    pub topic: String,
    /// Evaluation resolution (event time between ticks).
    pub resolution: Millis,
    /// Base of the alerts' `generatorURL` (default: process 0's HTTP address).
    pub external_url: String,
    /// Maintain the rules that fit incrementally on every worker (default `true`).
    pub incremental: bool,
}

impl Default for RuleSpec {
    fn default() -> Self {
        RuleSpec {
            files: Vec::new(),
            topic: "alerts".into(),
            resolution: Millis(1_000),
            external_url: String::new(),
            incremental: true,
        }
    }
}

/// A validated job spec.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: String,
    pub source: SourceSpec,
    #[serde(default)]
    pub watermark: WatermarkSpec,
    #[serde(default)]
    pub windows: WindowSpec,
    #[serde(default)]
    pub hot: HotSpec,
    #[serde(default)]
    pub tiers: TierSpec,
    #[serde(default)]
    pub rules: RuleSpec,
}

impl JobSpec {
    /// Parses and validates TOML `text`; `origin` names it in errors (a path or "request").
    pub fn parse(text: &str, origin: &str) -> Result<JobSpec, SpecError> {
        let fail = |problems: Vec<String>| SpecError {
            origin: origin.to_string(),
            problems,
        };
        let value: toml::Value =
            toml::from_str(text).map_err(|e| fail(vec![e.to_string().trim().to_string()]))?;
        let json = serde_json::to_value(&value).map_err(|e| fail(vec![e.to_string()]))?;
        let schema: serde_json::Value = serde_json::from_str(JOB_SCHEMA).expect("valid schema");
        let violations = schema::validate(&schema, &json);
        if !violations.is_empty() {
            return Err(fail(
                violations
                    .iter()
                    .map(|v| match key_line(text, &v.path) {
                        Some(l) => format!("line {l}: {}: {}", v.path, v.message),
                        None => format!("{}: {}", v.path, v.message),
                    })
                    .collect(),
            ));
        }
        let spec: JobSpec = value
            .try_into()
            .map_err(|e: toml::de::Error| fail(vec![e.to_string().trim().to_string()]))?;
        if let Some(url) = &spec.tiers.url {
            if let Err(e) = crate::store::cold::ColdStore::check_url(url) {
                let at =
                    key_line(text, "tiers.url").map_or(String::new(), |l| format!("line {l}: "));
                return Err(fail(vec![format!("{at}tiers.url: {e}")]));
            }
        }
        Ok(spec)
    }

    /// The consumer group offsets are committed to.
    pub fn group(&self) -> String {
        self.source
            .group
            .clone()
            .unwrap_or_else(|| format!("tidemark-{}", self.name))
    }

    pub fn minute_rollups(&self) -> bool {
        self.windows.rollups.iter().any(|w| w == "1m" || w == "1h")
    }

    pub fn hour_rollups(&self) -> bool {
        self.windows.rollups.iter().any(|w| w == "1h")
    }
}

/// The 1-based line that sets `path` (`a.b.c`, array indices ignored) in simple TOML: either
/// `c = ` under the table `[a.b]`, or `b.c =` under `[a]`, or the table header itself.
fn key_line(text: &str, path: &str) -> Option<usize> {
    let path: String = path.split('[').next()?.to_string();
    let parts: Vec<&str> = path.split('.').collect();
    let mut table: Vec<String> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = h.trim().split('.').map(|s| s.trim().to_string()).collect();
            if table == parts {
                return Some(i + 1);
            }
            continue;
        }
        let Some((k, _)) = line.split_once('=') else {
            continue;
        };
        let mut full = table.clone();
        full.extend(
            k.trim()
                .split('.')
                .map(|s| s.trim().trim_matches('"').to_string()),
        );
        if full == parts {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_jobs_validate() {
        let f = "jobs/kafka-infra.toml";
        let text = std::fs::read_to_string(f).unwrap();
        let spec = JobSpec::parse(&text, f).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.source.topics, vec!["metrics".to_string()]);
    }

    #[test]
    fn errors_name_line_key_and_fix() {
        let text = "name = \"x\"\n\n[source]\ntopcs = [\"metrics\"]\nformat = \"json\"\n";
        let e = JobSpec::parse(text, "jobs/x.toml").unwrap_err().to_string();
        assert!(e.contains("jobs/x.toml"), "{e}");
        assert!(
            e.contains("line 4: source.topcs: unknown key: did you mean `topics`?"),
            "{e}"
        );
        assert!(e.contains("source.topics: is required but missing"), "{e}");
        assert!(
            e.contains("line 5: source.format: \"json\" is not allowed"),
            "{e}"
        );
        let e = JobSpec::parse("name = \"x\"\n[source\n", "r")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = JobSpec::parse(
            "name = \"x\"\n[source]\ntopics = [\"m\"]\n[watermark]\nallowed_lateness = \"soon\"\n",
            "r",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 5: watermark.allowed_lateness"), "{e}");
        let e = JobSpec::parse(
            "name = \"x\"\n[source]\ntopics = [\"m\"]\n[tiers]\nurl = \"file://cold\"\n",
            "r",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 5: tiers.url"), "{e}");
        assert!(e.contains("absolute path"), "{e}");
    }
}

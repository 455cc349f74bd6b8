//! `tidemark.toml`: every table and key, with its default. Unknown keys are errors. These doc
//! comments are the reference documentation (the README reproduces them).
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:9470"   # HTTP address (--listen)
//! data_dir = "./data"         # log and other local data (--data-dir)
//! workers = 0                 # timely worker threads; 0 = number of cores (--workers)
//! tls_cert_file = ""          # HTTPS (rustls): PEM certificate chain and private key;
//! tls_key_file = ""           # both or neither; "" = plain HTTP
//!
//! [ingest]
//! max_body_bytes = 67108864
//! max_labels_per_series = 64
//! max_label_name_len = 256
//! max_label_value_len = 4096
//! max_series_per_metric = 1000000
//! graphite_listen = ""        # Graphite plaintext over TCP, e.g. "127.0.0.1:2003"; "" = off
//! graphite_templates = []     # ["[filter] template [tag=value,...]"], e.g.
//!                             # ["servers.* .host.measurement.field dc=eu"]
//!
//! [log]
//! fsync = "always"            # always | interval | never
//! fsync_interval = "1s"       # for fsync = "interval"
//! retention = "26h"           # without checkpoints: whole segments older than this are
//!                             # deleted; with them, segments behind the oldest one kept go
//!
//! [checkpoint]
//! interval = "5m"             # how often the hot index is checkpointed into
//!                             # <data_dir>/checkpoints; "0s" = never (a restart replays the log)
//! keep = 2                    # checkpoints kept (the previous one is the fallback when the
//!                             # newest is damaged); the log is truncated behind the oldest
//! timeout = "2m"              # a cut the job does not reach within this is given up (retried)
//!
//! [job]
//! out_of_orderness = "5s"     # watermark = max event time - this
//! idle_timeout = "30s"        # an idle log advances event time by wall time after this
//! allowed_lateness = "5m"     # windows accept late samples this long after they close
//!
//! [hot]
//! retention = "26h"           # measured from the newest sample
//! minute_rollup_retention = "2h"  # 1m rollups in memory (then only in the cold 1m tier)
//!
//! [query]
//! timeout = "2m"              # a query's evaluation time (a request's timeout parameter
//!                             # can only shorten it)
//! max_samples = 50000000      # samples a query's selectors may load; 0 = no limit
//! max_series = 1000000        # series a query may return; 0 = no limit
//! max_concurrency = 20        # queries evaluated at once; others wait up to their timeout
//! delayed_name_removal = false  # Prometheus 3's promql-delayed-name-removal: __name__ is
//!                             # dropped when a query ends, so label_replace and by (__name__)
//!                             # still see it
//!
//! [cold]
//! url = ""                    # file:///path | s3://bucket/prefix | memory://; "" = file://<data_dir>/cold
//! raw_retention = "7d"        # partitions ending this long before the newest sample are deleted
//! minute_retention = "30d"
//! hour_retention = "365d"
//! compaction_interval = "5m"  # how often sealed partitions with several files are compacted
//!
//! [rules]
//! enabled = true
//! files = []                  # Prometheus rule files; [] = the shipped fleet rules, copied to
//!                             # <data_dir>/rules/fleet.yml on first start (edit, then /-/reload)
//! resolution = "1s"           # rules are evaluated each time the watermark passes a tick
//! external_url = ""           # base of alerts' generatorURL; "" = http://<listen>
//! external_labels = {}        # added to every alert sent
//! incremental = true          # rules that fit are maintained from the sample stream
//!
//! [alerting]
//! config = ""                 # Alertmanager-style routing YAML (route, receivers,
//!                             # inhibit_rules); "" = keep alerts, send nowhere
//!
//! [scrape]
//! config = ""                 # a Prometheus scrape file (scrape_configs: static, file, HTTP
//!                             # and etcd discovery, relabeling, limits); "" = none
//! self_scrape = true          # scrape this process's own /metrics as job "tidemark"
//! self_interval = "15s"
//!
//! [scrape.ring]                # a collector pool sharing the targets of one scrape file
//! member = ""                 # this collector's id; "" = its listen address
//! members = []                # static membership: every collector's id (this one's too)
//! etcd_endpoints = []         # or membership in etcd: a lease under etcd_prefix per collector
//! etcd_prefix = "/tidemark/collectors/"
//! lease_ttl = "10s"           # a killed collector's targets move after at most this
//! handover = "2s"             # a joining collector owns its targets from registration + this
//! vnodes = 128                # virtual nodes per collector
//!
//! [ui]
//! dashboards = ""             # a directory of Grafana dashboard JSON files, besides the
//!                             # built-in "Tidemark" and "Hosts"; "" = none
//!
//! [auth]
//! tokens = []                 # [{ token = "...", role = "read" | "write" | "admin" }];
//!                             # none: everything open (loopback only)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::Limits;

/// Configuration errors name the file, the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

pub use crate::time::Millis;

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    /// Ingest limits (see [`Limits`]).
    pub ingest: Limits,
    pub log: LogConfig,
    pub checkpoint: CheckpointConfig,
    pub job: JobConfig,
    pub hot: HotConfig,
    pub query: QueryConfig,
    /// Kafka, for `tidemark ingest` (see [`KafkaConfig`]).
    pub kafka: KafkaConfig,
    pub cold: ColdConfig,
    pub rules: RulesConfig,
    pub alerting: AlertingConfig,
    pub auth: AuthConfig,
    pub scrape: ScrapeSection,
    pub ui: UiConfig,
}

/// `[ui]`: the built-in web UI.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// A directory of dashboards in Grafana's dashboard JSON (`*.json`), read again on each
    /// request (edits show on the next load); besides the built-in ones. Relative paths are
    /// relative to the working directory.
    pub dashboards: Option<PathBuf>,
}

/// `[scrape]`: pull collection.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeSection {
    /// A Prometheus scrape file (`global`, `scrape_configs`); empty: no file.
    pub config: Option<PathBuf>,
    /// Scrape this process's own `/metrics` as job `tidemark` (unless the file has a job of
    /// that name).
    pub self_scrape: bool,
    pub self_interval: Millis,
    pub ring: RingSection,
}

impl Default for ScrapeSection {
    fn default() -> Self {
        ScrapeSection {
            config: None,
            self_scrape: true,
            self_interval: Millis(15_000),
            ring: RingSection::default(),
        }
    }
}

/// `[scrape.ring]`: collectors sharing one scrape configuration on a consistent hash ring.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RingSection {
    /// This collector's id on the ring; empty: its listen address.
    pub member: String,
    /// Static membership: the ids of every collector of the pool.
    pub members: Vec<String>,
    /// Membership from etcd (each collector holds a lease under `etcd_prefix`).
    pub etcd_endpoints: Vec<String>,
    pub etcd_prefix: String,
    pub lease_ttl: Millis,
    pub handover: Millis,
    pub vnodes: usize,
}

impl Default for RingSection {
    fn default() -> Self {
        RingSection {
            member: String::new(),
            members: Vec::new(),
            etcd_endpoints: Vec::new(),
            etcd_prefix: "/tidemark/collectors/".into(),
            lease_ttl: Millis(10_000),
            handover: Millis(2_000),
            vnodes: 128,
        }
    }
}

/// `[alerting]`: where notifications go.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// The routing file; empty: alerts are kept and shown, not sent.
    pub config: Option<PathBuf>,
}

/// A role a bearer token grants; each includes the ones before it for reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Write,
    Admin,
}

/// One token.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// Shown as `<secret>` by [`Config::effective_toml`] (`/api/v1/status/config`).
    #[serde(serialize_with = "redacted")]
    pub token: String,
    pub role: Role,
    /// The labels every sample written with this token must carry (`labels = { tenant =
    /// "a" }`); empty: any series.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Writes a secret as `<secret>`, as Prometheus shows its secrets in `/api/v1/status/config`.
fn redacted<S: serde::Serializer>(_: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("<secret>")
}

/// The write scope of the token a request came with (a request extension set by the auth
/// middleware): the labels each of its samples must carry.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteScope(pub std::sync::Arc<Vec<(String, String)>>);

/// `[auth]`: bearer tokens.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub tokens: Vec<Token>,
}

impl AuthConfig {
    /// Whether `headers` carry a token good for `need`: `admin` may do everything, `write`
    /// may read, `read` only reads. Without tokens everything is allowed. The error is an
    /// HTTP status and a message saying what is needed.
    pub fn check(&self, headers: &axum::http::HeaderMap, need: Role) -> Result<(), (u16, String)> {
        self.check_scoped(headers, need).map(|_| ())
    }

    /// [`AuthConfig::check`], and the token's write scope when it has one.
    pub fn check_scoped(
        &self,
        headers: &axum::http::HeaderMap,
        need: Role,
    ) -> Result<Option<WriteScope>, (u16, String)> {
        if self.tokens.is_empty() {
            return Ok(None);
        }
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(given) = given else {
            return Err((401, format!("this endpoint needs an Authorization: Bearer token with role {need:?} or higher")));
        };
        let token = self
            .tokens
            .iter()
            .find(|t| constant_time_eq(t.token.as_bytes(), given.as_bytes()));
        let scope = token.filter(|t| !t.labels.is_empty()).map(|t| {
            WriteScope(std::sync::Arc::new(
                t.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ))
        });
        match token.map(|t| t.role) {
            None => Err((401, "unknown bearer token".into())),
            Some(r) if r >= need => Ok(scope),
            Some(r) => Err((
                403,
                format!("a {r:?} token cannot do this; it needs role {need:?}"),
            )),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `[rules]`: alerting and recording rules.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    pub enabled: bool,
    /// Rule files (Prometheus YAML); empty: the shipped `jobs/rules/fleet.yml`.
    pub files: Vec<PathBuf>,
    /// Evaluation tick in event time.
    pub resolution: Millis,
    pub external_url: String,
    pub external_labels: std::collections::BTreeMap<String, String>,
    /// Maintain the rules that fit incrementally from the sample stream (the others are
    /// evaluated by the query engine at the same ticks); `false`: the engine evaluates all.
    pub incremental: bool,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            enabled: true,
            files: Vec::new(),
            resolution: Millis(1000),
            external_url: String::new(),
            external_labels: Default::default(),
            incremental: true,
        }
    }
}

/// The fleet rules shipped with Tidemark (`jobs/rules/fleet.yml`).
pub const FLEET_RULES: &str = include_str!("../jobs/rules/fleet.yml");

impl RulesConfig {
    /// The rule files to load: the configured ones, or the shipped fleet rules written under
    /// `data_dir` (once; an edited copy is kept).
    pub fn resolve_files(&self, data_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        if !self.files.is_empty() {
            return Ok(self.files.clone());
        }
        let dir = data_dir.join("rules");
        let path = dir.join("fleet.yml");
        if !path.exists() {
            std::fs::create_dir_all(&dir)?;
            std::fs::write(&path, FLEET_RULES)?;
        }
        Ok(vec![path])
    }
}

/// `[cold]`: the Parquet tiers on object storage.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ColdConfig {
    /// `file:///path`, `s3://bucket/prefix` (credentials, region and endpoint from `AWS_*`) or
    /// `memory://`; empty: `file://<data_dir>/cold`.
    pub url: String,
    pub raw_retention: Millis,
    pub minute_retention: Millis,
    pub hour_retention: Millis,
    pub compaction_interval: Millis,
}

impl Default for ColdConfig {
    fn default() -> Self {
        ColdConfig {
            url: String::new(),
            raw_retention: Millis(7 * 86_400_000),
            minute_retention: Millis(30 * 86_400_000),
            hour_retention: Millis(365 * 86_400_000),
            compaction_interval: Millis(300_000),
        }
    }
}

impl ColdConfig {
    /// The store URL, with the default under `data_dir` made absolute.
    pub fn url(&self, data_dir: &Path) -> String {
        if !self.url.is_empty() {
            return self.url.clone();
        }
        let dir = data_dir.join("cold");
        let abs = if dir.is_absolute() {
            dir
        } else {
            std::env::current_dir().unwrap_or_default().join(dir)
        };
        format!("file://{}", abs.display())
    }
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Directory for the embedded log.
    pub data_dir: PathBuf,
    /// Timely worker threads; 0 means the number of cores.
    pub workers: usize,
    /// HTTPS: a PEM certificate chain and its PEM private key (both, or neither).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:9470".parse().expect("valid"),
            data_dir: PathBuf::from("./data"),
            workers: 0,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// `[log]`: the embedded log.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `always` (fsync before acknowledging; concurrent writes share an fsync), `interval`, `never`.
    pub fsync: FsyncPolicy,
    /// fsync period under `interval`.
    pub fsync_interval: Millis,
    /// Without checkpoints, segments last written longer ago than this are deleted (once the
    /// cold tiers sealed their data); with checkpoints, segments behind the oldest checkpoint
    /// kept are.
    pub retention: Millis,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            fsync: FsyncPolicy::Always,
            fsync_interval: Millis(1000),
            retention: Millis(26 * 3_600_000),
        }
    }
}

/// `[checkpoint]`: periodic checkpoints of the hot index (DESIGN.md section 11).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Period; 0 disables checkpoints (the log is then the only durable state).
    pub interval: Millis,
    /// Checkpoints kept; the log keeps what the oldest needs.
    pub keep: usize,
    /// How long a cut may take before it is given up.
    pub timeout: Millis,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            interval: Millis(5 * 60_000),
            keep: 2,
            timeout: Millis(2 * 60_000),
        }
    }
}

impl CheckpointConfig {
    pub fn enabled(&self) -> bool {
        self.interval.0 > 0
    }
}

/// `[job]`: watermarks and lateness (DESIGN.md section 5).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobConfig {
    /// The watermark trails the largest event time seen by this much.
    pub out_of_orderness: Millis,
    /// When nothing is appended for this long, event time advances with wall time (a tick
    /// record in the log, so replays see the same watermark).
    pub idle_timeout: Millis,
    /// Windows take late samples for this long after the watermark passes their end.
    pub allowed_lateness: Millis,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            out_of_orderness: Millis(5_000),
            idle_timeout: Millis(30_000),
            allowed_lateness: Millis(300_000),
        }
    }
}

/// `[query]`: PromQL evaluation and its limits (Prometheus's `--query.*` flags). A breach
/// answers Prometheus's error JSON naming the key.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// How long a query may evaluate (`--query.timeout`); a request's `timeout` parameter can
    /// only shorten it.
    pub timeout: Millis,
    /// Samples a query's selectors may load (`--query.max-samples`); 0: no limit.
    pub max_samples: usize,
    /// Series a query may return; 0: no limit.
    pub max_series: usize,
    /// Queries evaluated at once (`--query.max-concurrency`); the others wait, up to their
    /// timeout.
    pub max_concurrency: usize,
    /// Prometheus 3's delayed `__name__` removal (its `promql-delayed-name-removal` feature,
    /// off there by default too): functions and operators mark the metric name to be dropped
    /// and it is dropped when the query ends.
    pub delayed_name_removal: bool,
    /// Bytes the `query_range` result cache may hold (least recently used queries go first);
    /// 0 turns it off.
    pub cache_bytes: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout: Millis(120_000),
            max_samples: 50_000_000,
            max_series: 1_000_000,
            max_concurrency: 20,
            delayed_name_removal: false,
            cache_bytes: 256 << 20,
        }
    }
}

/// `[hot]`: the in-memory tier.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HotConfig {
    /// Samples older than this before the newest sample are rejected and dropped.
    pub retention: Millis,
    /// 1-minute rollups older than this before the newest sample leave memory once the cold
    /// 1m tier has them (`/api/v1/rollups` reads them from there).
    pub minute_rollup_retention: Millis,
}

impl Default for HotConfig {
    fn default() -> Self {
        HotConfig {
            retention: Millis(26 * 3_600_000),
            minute_rollup_retention: Millis(2 * 3_600_000),
        }
    }
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let cfg: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        if cfg.job.allowed_lateness.0 < 0 || cfg.job.out_of_orderness.0 < 0 {
            return Err(
                "job.allowed_lateness and job.out_of_orderness must not be negative".into(),
            );
        }
        Ok(cfg)
    }

    /// The configuration in effect as TOML, every key with its value (defaults included),
    /// tokens shown as `<secret>`: what `/api/v1/status/config` and the status page show.
    /// Parsing it again gives the same configuration, apart from the tokens.
    pub fn effective_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# the configuration cannot be shown as TOML: {e}\n"))
    }

    /// Worker threads to start.
    pub fn workers(&self) -> usize {
        if self.server.workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.server.workers
        }
    }
}

/// Message value format.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum KafkaFormat {
    /// Influx line protocol, one line per sample, nanosecond timestamps.
    #[default]
    LineProtocol,
    /// Prometheus remote write (snappy protobuf).
    RemoteWrite,
}

/// Message key, which picks the partition.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PartitionKey {
    /// The metric name: one metric's series share a partition.
    #[default]
    Metric,
    /// The series id: spreads a metric over partitions (`id % partitions`; the message goes to
    /// that partition, keyed by the partition number).
    Series,
}

/// `[kafka]` in `tidemark.toml`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The topic pushes are produced to.
    pub topic: String,
    /// `line_protocol` or `remote_write`.
    pub format: KafkaFormat,
    /// `metric` or `series`.
    pub partition_key: PartitionKey,
    /// librdkafka `compression.type`: `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    pub compression: String,
    /// How long a push waits for the brokers before it gets 503 (librdkafka
    /// `message.timeout.ms`).
    pub produce_timeout: Millis,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic: "metrics".into(),
            format: KafkaFormat::LineProtocol,
            partition_key: PartitionKey::Metric,
            compression: "lz4".into(),
            produce_timeout: Millis(10_000),
        }
    }
}

/// When appended records are forced to disk.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// fsync before acknowledging each append (group commit): survives power loss.
    #[default]
    Always,
    /// fsync in the background every `fsync_interval_ms`: survives a process crash, may lose the
    /// last interval on power loss.
    Interval,
    /// Leave it to the OS.
    Never,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_is_the_defaults() {
        let text = include_str!("../tidemark.example.toml");
        let c = Config::parse(text).unwrap();
        let d = Config::default();
        assert_eq!(c.server.listen, d.server.listen);
        assert_eq!(c.job.allowed_lateness, d.job.allowed_lateness);
        assert_eq!(c.log.fsync, d.log.fsync);
        assert_eq!(c.hot.retention, d.hot.retention);
        assert_eq!(c.kafka.brokers, d.kafka.brokers);
        assert_eq!(c.kafka.produce_timeout, d.kafka.produce_timeout);
        assert_eq!(
            c.ingest.max_series_per_metric,
            d.ingest.max_series_per_metric
        );
        // Every key, not only the ones above.
        assert_eq!(c.effective_toml(), d.effective_toml());
    }

    #[test]
    fn the_effective_config_parses_back_and_hides_tokens() {
        let text = r#"
[server]
listen = "127.0.0.1:19999"
[job]
allowed_lateness = "1h30m"
[ingest]
graphite_listen = "127.0.0.1:2003"
[rules]
external_labels = { dc = "eu-1" }
[ui]
dashboards = "dash/"
[[auth.tokens]]
token = "s3cr3t-admin"
role = "admin"
[[auth.tokens]]
token = "s3cr3t-write"
role = "write"
labels = { tenant = "a" }
"#;
        let c = Config::parse(text).unwrap();
        let shown = c.effective_toml();
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert_eq!(shown.matches("<secret>").count(), 2, "{shown}");
        for want in [
            "listen = \"127.0.0.1:19999\"",
            "allowed_lateness = \"1h30m\"",
            "graphite_listen = \"127.0.0.1:2003\"",
            "dc = \"eu-1\"",
            "dashboards = \"dash/\"",
            "retention = \"1d2h\"",
        ] {
            assert!(shown.contains(want), "{want} missing from\n{shown}");
        }
        let again = Config::parse(&shown).unwrap();
        assert_eq!(again.effective_toml(), shown);
        assert_eq!(again.job.allowed_lateness, Millis(5_400_000));
        assert_eq!(again.auth.tokens[1].labels["tenant"], "a");
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_errors() {
        let e = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
        assert!(e.contains("unknown field `lisen`"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        let e = Config::parse("[job]\nallowed_lateness = \"soon\"\n").unwrap_err();
        assert!(e.contains("invalid duration"), "{e}");
        let c = Config::parse(
            "[job]\nallowed_lateness = \"10m\"\n[ingest]\nmax_labels_per_series = 8\n",
        )
        .unwrap();
        assert_eq!(c.job.allowed_lateness, Millis(600_000));
        assert_eq!(c.ingest.max_labels_per_series, 8);
    }
}

//! The scrape configuration: Prometheus's `scrape.yml` subset (`global`, `scrape_configs`)
//! with Tidemark's `etcd_sd_configs`. Unknown keys are errors; every error names the file,
//! the line and, for a job's problem, the job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::relabel::{Relabel, RelabelConfig};

/// A duration as Prometheus writes it (`15s`, `1m30s`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Duration(pub i64);

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        crate::time::parse_duration_ms(&s)
            .filter(|&ms| ms > 0)
            .map(Duration)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid duration {s:?}: use a Prometheus duration such as 15s or 1m"
                ))
            })
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileYaml {
    #[serde(default)]
    global: GlobalYaml,
    #[serde(default)]
    scrape_configs: Vec<JobYaml>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GlobalYaml {
    scrape_interval: Option<Duration>,
    scrape_timeout: Option<Duration>,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobYaml {
    job_name: String,
    scrape_interval: Option<Duration>,
    scrape_timeout: Option<Duration>,
    metrics_path: Option<String>,
    scheme: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    honor_labels: bool,
    honor_timestamps: Option<bool>,
    basic_auth: Option<BasicAuth>,
    authorization: Option<Authorization>,
    tls_config: Option<TlsConfig>,
    #[serde(default)]
    static_configs: Vec<StaticConfig>,
    #[serde(default)]
    file_sd_configs: Vec<FileSdConfig>,
    #[serde(default)]
    http_sd_configs: Vec<HttpSdConfig>,
    #[serde(default)]
    etcd_sd_configs: Vec<EtcdSdConfig>,
    #[serde(default)]
    relabel_configs: Vec<RelabelConfig>,
    #[serde(default)]
    metric_relabel_configs: Vec<RelabelConfig>,
    #[serde(default)]
    sample_limit: u64,
    #[serde(default)]
    label_limit: u64,
    #[serde(default)]
    target_limit: u64,
}

/// `basic_auth`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
}

/// `authorization` (`type` defaults to Bearer).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub credentials: Option<String>,
    pub credentials_file: Option<PathBuf>,
}

/// `tls_config` of an `https` job: the CA that signs the targets' certificates (default:
/// Mozilla's roots), a client certificate and key, or no verification at all.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// A static target group.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `file_sd_configs`: JSON or YAML files of target groups (globs in the last path element).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfig {
    pub files: Vec<String>,
    pub refresh_interval: Option<Duration>,
}

/// `http_sd_configs`: Prometheus's HTTP SD (a JSON list of target groups), polled.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSdConfig {
    pub url: String,
    pub refresh_interval: Option<Duration>,
}

/// `etcd_sd_configs` (Tidemark's): services register under `prefix` with a lease; the value
/// is JSON `{"targets": [...], "labels": {...}}`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSdConfig {
    pub endpoints: Vec<String>,
    pub prefix: String,
}

/// One scrape job, with the global defaults applied.
#[derive(Clone, Debug)]
pub struct ScrapeJob {
    pub name: String,
    /// Line of its `job_name` in the file.
    pub line: usize,
    pub interval_ms: i64,
    pub timeout_ms: i64,
    pub metrics_path: String,
    pub scheme: String,
    pub params: BTreeMap<String, Vec<String>>,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    pub basic_auth: Option<BasicAuth>,
    pub authorization: Option<Authorization>,
    pub tls_config: Option<TlsConfig>,
    pub static_configs: Vec<StaticConfig>,
    pub file_sd_configs: Vec<FileSdConfig>,
    pub http_sd_configs: Vec<HttpSdConfig>,
    pub etcd_sd_configs: Vec<EtcdSdConfig>,
    pub relabel: Vec<Relabel>,
    pub metric_relabel: Vec<Relabel>,
    pub sample_limit: u64,
    pub label_limit: u64,
    pub target_limit: u64,
    /// Scraped by this collector whatever the ring says (the self-scrape job: each collector
    /// scrapes its own `/metrics`).
    pub local: bool,
}

/// A whole scrape file.
#[derive(Clone, Debug, Default)]
pub struct ScrapeConfig {
    pub path: PathBuf,
    pub external_labels: BTreeMap<String, String>,
    pub jobs: Vec<ScrapeJob>,
}

/// One problem in a scrape file.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}:{line}: {}{reason}", file.display(), job.as_ref().map(|j| format!("job {j:?}: ")).unwrap_or_default())]
pub struct ScrapeConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub job: Option<String>,
    pub reason: String,
}

/// Prometheus's defaults.
pub const DEFAULT_INTERVAL_MS: i64 = 60_000;
pub const DEFAULT_TIMEOUT_MS: i64 = 10_000;

/// The line of each `job_name:` (1-based), in file order.
fn job_lines(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let t = l.trim_start().trim_start_matches("- ").trim_start();
            let v = t.strip_prefix("job_name:")?;
            Some((i + 1, v.trim().trim_matches(['"', '\'']).to_string()))
        })
        .collect()
}

impl ScrapeConfig {
    /// Reads and checks a scrape file.
    pub fn load(path: &Path) -> Result<ScrapeConfig, Vec<ScrapeConfigError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ScrapeConfigError {
                file: path.to_path_buf(),
                line: 0,
                job: None,
                reason: format!("cannot read it: {e}"),
            }]
        })?;
        Self::parse(path, &text)
    }

    /// Checks a scrape file's text; `path` names it in errors. Every problem is reported.
    pub fn parse(path: &Path, text: &str) -> Result<ScrapeConfig, Vec<ScrapeConfigError>> {
        let err = |line: usize, job: Option<&str>, reason: String| ScrapeConfigError {
            file: path.to_path_buf(),
            line,
            job: job.map(str::to_string),
            reason,
        };
        let file: FileYaml = if text.trim().is_empty() {
            FileYaml::default()
        } else {
            yaml_serde::from_str(text).map_err(|e| {
                let line = e.location().map_or(0, |l| l.line());
                let mut msg = e.to_string();
                if let Some(i) = msg.find(" at line ") {
                    msg.truncate(i);
                }
                vec![err(line, None, msg)]
            })?
        };
        let lines = job_lines(text);
        let g_interval = file
            .global
            .scrape_interval
            .map_or(DEFAULT_INTERVAL_MS, |d| d.0);
        let g_timeout = file
            .global
            .scrape_timeout
            .map_or(DEFAULT_TIMEOUT_MS.min(g_interval), |d| d.0);
        let mut errors = Vec::new();
        if g_timeout > g_interval {
            errors.push(err(
                0,
                None,
                format!("global scrape_timeout ({g_timeout} ms) is greater than scrape_interval ({g_interval} ms)"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        let mut jobs = Vec::new();
        for (i, j) in file.scrape_configs.into_iter().enumerate() {
            let line = lines.get(i).map_or(0, |l| l.0);
            let name = Some(j.job_name.as_str());
            if j.job_name.is_empty() {
                errors.push(err(line, None, "job_name must not be empty".into()));
                continue;
            }
            if !seen.insert(j.job_name.clone()) {
                errors.push(err(
                    line,
                    name,
                    "found multiple scrape configs with this job name; give each a unique job_name"
                        .into(),
                ));
                continue;
            }
            let interval = j.scrape_interval.map_or(g_interval, |d| d.0);
            let timeout = j.scrape_timeout.map_or(g_timeout.min(interval), |d| d.0);
            if timeout > interval {
                errors.push(err(line, name, format!("scrape_timeout ({timeout} ms) is greater than scrape_interval ({interval} ms)")));
            }
            let scheme = j.scheme.clone().unwrap_or_else(|| "http".into());
            if scheme != "http" && scheme != "https" {
                errors.push(err(
                    line,
                    name,
                    format!("scheme {scheme:?}: use http or https"),
                ));
            }
            let path_ = j.metrics_path.clone().unwrap_or_else(|| "/metrics".into());
            if !path_.starts_with('/') {
                errors.push(err(
                    line,
                    name,
                    format!("metrics_path {path_:?} must start with /"),
                ));
            }
            if j.basic_auth.is_some() && j.authorization.is_some() {
                errors.push(err(
                    line,
                    name,
                    "at most one of basic_auth and authorization may be set".into(),
                ));
            }
            let mut compile = |what: &str, cfgs: &[RelabelConfig]| -> Vec<Relabel> {
                let mut out = Vec::new();
                for (k, c) in cfgs.iter().enumerate() {
                    match c.compile() {
                        Ok(r) => out.push(r),
                        Err(e) => errors.push(err(line, name, format!("{what}[{k}]: {e}"))),
                    }
                }
                out
            };
            let relabel = compile("relabel_configs", &j.relabel_configs);
            let metric_relabel = compile("metric_relabel_configs", &j.metric_relabel_configs);
            for (k, sd) in j.http_sd_configs.iter().enumerate() {
                if !(sd.url.starts_with("http://") || sd.url.starts_with("https://")) {
                    errors.push(err(
                        line,
                        name,
                        format!(
                            "http_sd_configs[{k}]: url {:?} must be http:// or https://",
                            sd.url
                        ),
                    ));
                }
            }
            for (k, sd) in j.etcd_sd_configs.iter().enumerate() {
                if sd.endpoints.is_empty() || sd.prefix.is_empty() {
                    errors.push(err(
                        line,
                        name,
                        format!("etcd_sd_configs[{k}]: endpoints and prefix are required"),
                    ));
                }
            }
            for (k, sc) in j.static_configs.iter().enumerate() {
                for t in &sc.targets {
                    if t.is_empty() || t.contains('/') {
                        errors.push(err(line, name, format!("static_configs[{k}]: target {t:?} is not host:port (the path goes in metrics_path)")));
                    }
                }
            }
            jobs.push(ScrapeJob {
                name: j.job_name,
                line,
                interval_ms: interval,
                timeout_ms: timeout,
                metrics_path: path_,
                scheme,
                params: j.params,
                honor_labels: j.honor_labels,
                honor_timestamps: j.honor_timestamps.unwrap_or(true),
                basic_auth: j.basic_auth,
                authorization: j.authorization,
                tls_config: j.tls_config,
                static_configs: j.static_configs,
                file_sd_configs: j.file_sd_configs,
                http_sd_configs: j.http_sd_configs,
                etcd_sd_configs: j.etcd_sd_configs,
                relabel,
                metric_relabel,
                sample_limit: j.sample_limit,
                label_limit: j.label_limit,
                target_limit: j.target_limit,
                local: false,
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ScrapeConfig {
            path: path.to_path_buf(),
            external_labels: file.global.external_labels,
            jobs,
        })
    }
}

/// The scrape configuration of `tidemark up` and `tidemark ingest`: the `[scrape] config` file, plus the job
/// `tidemark` scraping this process's own `/metrics` at `listen` (with `token` when the
/// server has tokens) when `self_scrape` is on and the file has no job of that name.
pub fn for_process(
    section: &crate::config::ScrapeSection,
    listen: std::net::SocketAddr,
    token: Option<&str>,
    https: bool,
) -> Result<ScrapeConfig, Vec<ScrapeConfigError>> {
    let mut cfg = match &section.config {
        Some(p) if !p.as_os_str().is_empty() => ScrapeConfig::load(p)?,
        _ => ScrapeConfig::default(),
    };
    if section.self_scrape && !cfg.jobs.iter().any(|j| j.name == "tidemark") {
        let host = if listen.ip().is_unspecified() {
            std::net::SocketAddr::new([127, 0, 0, 1].into(), listen.port())
        } else {
            listen
        };
        let auth = token
            .map(|t| format!("    authorization:\n      credentials: {t:?}\n"))
            .unwrap_or_default();
        // Over HTTPS the process scrapes itself by address: its certificate is not checked.
        let tls = if https {
            "    scheme: https\n    tls_config:\n      insecure_skip_verify: true\n"
        } else {
            ""
        };
        let text = format!(
            "scrape_configs:\n  - job_name: tidemark\n    scrape_interval: {}ms\n{tls}    static_configs:\n      - targets: ['{host}']\n{auth}",
            section.self_interval.0.max(1000)
        );
        let own = ScrapeConfig::parse(Path::new("(self-scrape)"), &text)?;
        cfg.jobs
            .extend(own.jobs.into_iter().map(|j| ScrapeJob { local: true, ..j }));
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
global:
  scrape_interval: 15s
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ['127.0.0.1:9100']
        labels: {env: prod}
    relabel_configs:
      - source_labels: [__address__]
        target_label: instance
  - job_name: "app"
    scrape_interval: 5s
    metrics_path: /stats
    file_sd_configs:
      - files: ['targets/*.json']
"#;

    #[test]
    fn applies_global_defaults() {
        let c = ScrapeConfig::parse(Path::new("s.yml"), GOOD).unwrap();
        assert_eq!(c.jobs.len(), 2);
        let (node, app) = (&c.jobs[0], &c.jobs[1]);
        assert_eq!((node.interval_ms, node.timeout_ms), (15_000, 10_000));
        assert_eq!((app.interval_ms, app.timeout_ms), (5_000, 5_000));
        assert_eq!(node.metrics_path, "/metrics");
        assert_eq!(app.metrics_path, "/stats");
        assert_eq!((node.line, app.line), (5, 12));
        assert!(node.honor_timestamps && !node.honor_labels);
    }

    #[test]
    fn errors_name_file_line_and_job() {
        let e = ScrapeConfig::parse(
            Path::new("s.yml"),
            "scrape_configs:\n  - job_name: a\n    scrape_intervall: 5s\n",
        )
        .unwrap_err();
        assert_eq!(e[0].line, 3, "{e:?}");
        assert!(e[0].to_string().starts_with("s.yml:3: "), "{}", e[0]);
        assert!(e[0].reason.contains("unknown field"), "{}", e[0]);
        let text = "scrape_configs:\n  - job_name: a\n  - job_name: b\n    relabel_configs:\n      - source_labels: [x]\n        regex: '(['\n        target_label: y\n    scrape_interval: 5s\n    scrape_timeout: 10s\n  - job_name: a\n";
        let e = ScrapeConfig::parse(Path::new("s.yml"), text).unwrap_err();
        let msgs: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("s.yml:3: job \"b\": scrape_timeout")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("job \"b\": relabel_configs[0]: invalid regex")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("s.yml:10: job \"a\": found multiple")),
            "{msgs:?}"
        );
        let e = ScrapeConfig::parse(Path::new("s.yml"), "global:\n  scrape_interval: soon\n")
            .unwrap_err();
        assert!(e[0].reason.contains("invalid duration \"soon\""), "{e:?}");
    }
}

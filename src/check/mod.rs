//! `tidemark check`: validates a file before it is deployed, as `promtool check` and
//! `amtool check-config` do, without starting anything. Each check prints `Checking FILE`, then
//! `  SUCCESS` with what was found or `  FAILED:` with every problem as `file:line: reason`;
//! the command exits 1 when any file failed.
//!
//! - `check config tidemark.toml`: the TOML (unknown keys, bad durations, types), then the
//!   files it names: `[rules] files`, `[alerting] config` and `[cold] url`.
//! - `check rules FILE...`: Prometheus rule files, with how each rule runs: `incremental`
//!   (maintained from the sample stream) or `engine` (evaluated by the query engine at each
//!   tick).
//! - `check routing alertmanager.yml`: an Alertmanager configuration (routes, receivers,
//!   inhibition, templates).
//! - `check job jobs/x.toml`: a worker-cluster job spec against `schemas/job.schema.json`.
//!
//! `check rules` also takes Prometheus's rule unit test files (`promtool test rules` format,
//! [`ruletest`]) and runs them on the engine.

pub mod ruletest;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::alert::rules::{load_rule_files, Group, RuleError};
use crate::config::Config;

/// The outcome of checking one or more files: the report to print and whether all passed.
#[derive(Debug, Default)]
pub struct Report {
    pub text: String,
    pub ok: bool,
}

impl Report {
    fn new() -> Report {
        Report {
            text: String::new(),
            ok: true,
        }
    }

    fn checking(&mut self, path: &Path) {
        let _ = writeln!(self.text, "Checking {}", path.display());
    }

    fn success(&mut self, what: &str) {
        if what.is_empty() {
            self.text.push_str("  SUCCESS\n");
        } else {
            let _ = writeln!(self.text, "  SUCCESS: {what}");
        }
    }

    fn failed(&mut self, problems: impl IntoIterator<Item = String>) {
        self.ok = false;
        self.text.push_str("  FAILED:\n");
        for p in problems {
            let _ = writeln!(self.text, "{p}");
        }
    }

    fn detail(&mut self, line: &str) {
        let _ = writeln!(self.text, "  {line}");
    }
}

/// `check scrape`: Prometheus scrape files as `tidemark up` reads `[scrape] config` (errors
/// as `file:line: job "x": reason`), with what each job discovers from.
pub fn scrape(paths: &[PathBuf]) -> Report {
    let mut r = Report::new();
    for path in paths {
        r.checking(path);
        match crate::collect::config::ScrapeConfig::load(path) {
            Ok(c) => {
                r.success(&format!("{} scrape jobs", c.jobs.len()));
                for j in &c.jobs {
                    let mut sources = Vec::new();
                    let targets: usize = j.static_configs.iter().map(|s| s.targets.len()).sum();
                    if targets > 0 {
                        sources.push(format!("{targets} static targets"));
                    }
                    for (n, what) in [
                        (j.file_sd_configs.len(), "file SD"),
                        (j.http_sd_configs.len(), "HTTP SD"),
                        (j.etcd_sd_configs.len(), "etcd SD"),
                    ] {
                        if n > 0 {
                            sources.push(format!("{n} {what}"));
                        }
                    }
                    r.detail(&format!(
                        "job {:?}: every {} ms, {}",
                        j.name,
                        j.interval_ms,
                        if sources.is_empty() {
                            "no targets".to_string()
                        } else {
                            sources.join(", ")
                        }
                    ));
                }
            }
            Err(errs) => r.failed(errs.iter().map(|e| e.to_string())),
        }
    }
    r
}

/// `check config`: each file as `tidemark up --config` would read it, then the files it names.
pub fn config(paths: &[PathBuf]) -> Report {
    let mut r = Report::new();
    for path in paths {
        r.checking(path);
        let cfg = match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                r.failed([e.to_string()]);
                continue;
            }
        };
        let mut problems = Vec::new();
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let mut rules = 0;
        if cfg.rules.enabled && !cfg.rules.files.is_empty() {
            let files: Vec<PathBuf> = cfg.rules.files.iter().map(|p| resolve(p)).collect();
            let (groups, errors) = load_rule_files(&files);
            rules = groups.iter().map(|g| g.rules.len()).sum::<usize>();
            problems.extend(errors.iter().map(|e| format!("[rules] files: {e}")));
        }
        if let Some(routing) = &cfg.alerting.config {
            let p = resolve(routing);
            if let Err(e) = read(&p).and_then(|text| {
                crate::alert::notify::config::parse_notify_config(&p, &text)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }) {
                problems.push(format!("[alerting] config: {e}"));
            }
        }
        if let Some(sc) = cfg
            .scrape
            .config
            .as_ref()
            .filter(|p| !p.as_os_str().is_empty())
        {
            if let Err(errs) = crate::collect::config::ScrapeConfig::load(&resolve(sc)) {
                problems.extend(errs.iter().map(|e| format!("[scrape] config: {e}")));
            }
        }
        if let Err(e) =
            crate::collect::ring::Membership::from_config(&cfg.scrape.ring, cfg.server.listen)
        {
            problems.push(format!("{}: {e}", path.display()));
        }
        if let Err(e) = crate::ingest::graphite::Templates::parse(&cfg.ingest.graphite_templates) {
            problems.push(format!("{}: {e}", path.display()));
        }
        let mut server = cfg.server.clone();
        server.tls_cert_file = server.tls_cert_file.as_deref().map(resolve);
        server.tls_key_file = server.tls_key_file.as_deref().map(resolve);
        if let Err(e) = crate::http::tls_acceptor(&server) {
            problems.push(format!("{}: {e}", path.display()));
        }
        if !cfg.cold.url.is_empty() {
            if let Err(e) = crate::store::cold::ColdStore::check_url(&cfg.cold.url) {
                problems.push(format!("{}: [cold] url: {e}", path.display()));
            }
        }
        if problems.is_empty() {
            let rules = if cfg.rules.files.is_empty() {
                "the shipped fleet rules".to_string()
            } else {
                format!("{rules} rules in {} files", cfg.rules.files.len())
            };
            r.success(&format!(
                "listen {}, data dir {}, {rules}{}",
                cfg.server.listen,
                cfg.server.data_dir.display(),
                if cfg.rules.enabled {
                    ""
                } else {
                    " (rules disabled)"
                }
            ));
        } else {
            r.failed(problems);
        }
    }
    r
}

fn read(p: &Path) -> Result<String, String> {
    std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
}

/// How each rule of `groups` runs: `(group, rule name, "incremental" | "engine")`.
pub fn rule_modes(groups: &[Group], resolution_ms: u64) -> Vec<(String, String, &'static str)> {
    let compiled = crate::alert::incremental::compile(groups, resolution_ms);
    let mut out = Vec::new();
    for (g, ids) in groups.iter().zip(&compiled.rules) {
        for (rule, id) in g.rules.iter().zip(ids) {
            let mode = if id.is_some() {
                "incremental"
            } else {
                "engine"
            };
            out.push((g.name.clone(), rule.name.clone(), mode));
        }
    }
    out
}

/// `check rules`: each file on its own (an error in one does not hide the others'), with how
/// each rule runs at the default 1 s resolution; a unit test file is run ([`ruletest`]).
pub fn rules(paths: &[PathBuf]) -> Report {
    let mut r = Report::new();
    for path in paths {
        if let Ok(text) = std::fs::read_to_string(path) {
            if ruletest::is_test_file(&text) {
                let _ = writeln!(r.text, "Unit Testing:  {}", path.display());
                let (out, ok) = ruletest::run_file(path, &text);
                r.text.push_str(&out);
                r.ok &= ok;
                continue;
            }
        }
        r.checking(path);
        let (groups, errors): (Vec<Group>, Vec<RuleError>) =
            load_rule_files(std::slice::from_ref(path));
        if !errors.is_empty() {
            r.failed(errors.iter().map(|e| e.to_string()));
            continue;
        }
        let n: usize = groups.iter().map(|g| g.rules.len()).sum();
        r.success(&format!("{n} rules found"));
        for (g, name, mode) in rule_modes(&groups, 1000) {
            r.detail(&format!("{g}/{name}: {mode}"));
        }
    }
    r
}

/// `check routing`: as `amtool check-config`, with what the file holds.
pub fn routing(paths: &[PathBuf]) -> Report {
    let mut r = Report::new();
    for path in paths {
        r.checking(path);
        let parsed = read(path).and_then(|text| {
            crate::alert::notify::config::parse_notify_config(path, &text)
                .map_err(|e| e.to_string())
        });
        match parsed {
            Ok(c) => {
                r.success("");
                r.text.push_str("Found:\n");
                if c.original.lines().any(|l| l.starts_with("global:")) {
                    r.text.push_str(" - global config\n");
                }
                r.text.push_str(" - route\n");
                let _ = writeln!(r.text, " - {} inhibit rules", c.inhibit_rules.len());
                let _ = writeln!(r.text, " - {} receivers", c.receivers.len());
                let templates = templates_listed(&c.original);
                let _ = writeln!(r.text, " - {templates} templates");
            }
            Err(e) => r.failed([e]),
        }
    }
    r
}

/// How many entries the file's top-level `templates:` list has.
fn templates_listed(text: &str) -> usize {
    let mut n = 0;
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("templates:") {
            inside = true;
            n += line.matches(',').count() + usize::from(line.contains('['));
            if line.contains("[]") {
                n = 0;
            }
            continue;
        }
        if inside {
            if line.trim_start().starts_with('-') {
                n += 1;
            } else if !line.trim().is_empty() && !line.starts_with(' ') {
                inside = false;
            }
        }
    }
    n
}

/// `check job`: a job spec as `tidemark submit` would send it.
pub fn job(paths: &[PathBuf]) -> Report {
    let mut r = Report::new();
    for path in paths {
        r.checking(path);
        let parsed = read(path).and_then(|text| {
            crate::cluster::spec::JobSpec::parse(&text, &path.display().to_string())
                .map_err(|e| e.to_string())
        });
        match parsed {
            Ok(spec) => r.success(&format!(
                "job {:?}: topics {}, consumer group {}",
                spec.name,
                spec.source.topics.join(", "),
                spec.group()
            )),
            Err(e) => r.failed([e]),
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn rules_report_modes_and_errors_with_lines() {
        let d = tempfile::tempdir().unwrap();
        let good = write(
            d.path(),
            "good.yml",
            "groups:\n  - name: g\n    rules:\n      - record: a:sum\n        expr: sum(rate(x[5m]))\n      - alert: Hi\n        expr: topk(3, x) > 1\n",
        );
        let bad = write(
            d.path(),
            "bad.yml",
            "groups:\n  - name: g\n    rules:\n      - alert: Broken\n        expr: sum(\n",
        );
        let r = rules(&[good.clone(), bad.clone()]);
        assert!(!r.ok, "{}", r.text);
        assert!(r.text.contains("  SUCCESS: 2 rules found"), "{}", r.text);
        assert!(r.text.contains("g/a:sum: incremental"), "{}", r.text);
        assert!(r.text.contains("g/Hi: engine"), "{}", r.text);
        assert!(
            r.text.contains(&format!(
                "{}:5: group \"g\", rule \"Broken\"",
                bad.display()
            )),
            "{}",
            r.text
        );
        assert!(rules(&[good]).ok);
    }

    #[test]
    fn config_checks_the_files_it_names() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "r.yml",
            "groups:\n  - name: g\n    rules:\n      - record: x\n        expr: up ==\n",
        );
        let c = write(d.path(), "t.toml", "[rules]\nfiles = [\"r.yml\"]\n");
        let r = config(&[c]);
        assert!(!r.ok);
        assert!(r.text.contains("[rules] files: "), "{}", r.text);
        let c = write(
            d.path(),
            "u.toml",
            "[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n",
        );
        let r = config(&[c]);
        assert!(!r.ok);
        assert!(r.text.contains("bogus"), "{}", r.text);
        let c = write(d.path(), "ok.toml", "[job]\nallowed_lateness = \"1m\"\n");
        let r = config(&[c]);
        assert!(r.ok, "{}", r.text);
    }

    #[test]
    fn routing_lists_what_it_found() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "am.yml",
            "route:\n  receiver: a\nreceivers:\n  - name: a\n  - name: b\ninhibit_rules:\n  - source_matchers: [x=\"1\"]\n    target_matchers: [y=\"1\"]\n",
        );
        let r = routing(std::slice::from_ref(&p));
        assert!(r.ok, "{}", r.text);
        assert!(
            r.text
                .contains(" - 1 inhibit rules\n - 2 receivers\n - 0 templates"),
            "{}",
            r.text
        );
        let bad = write(
            d.path(),
            "bad.yml",
            "route:\n  receiver: nobody\nreceivers:\n  - name: a\n",
        );
        let r = routing(&[bad]);
        assert!(!r.ok);
        assert!(r.text.contains("nobody"), "{}", r.text);
    }
}

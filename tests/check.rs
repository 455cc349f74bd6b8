//! `tidemark check` against the real binary, with Debian's `promtool` and `amtool` as the
//! reference: on the same files both accept or both refuse, and Tidemark names the file and
//! line of each problem.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

fn tidemark(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn reference(bin: &str, install: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(support::installed_bin(bin, install))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const GROUP: &str = "groups:\n  - name: g\n    rules:\n";

#[test]
fn rule_files_pass_and_fail_as_promtool_says_with_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    // (file name, rules, line of the problem for a bad file)
    let cases: [(&str, &str, Option<usize>); 7] = [
        (
            "good.yml",
            "      - record: job:up:sum\n        expr: sum by (job) (up)\n      - alert: Down\n        expr: up == 0\n        for: 5m\n        labels:\n          severity: page\n        annotations:\n          summary: \"{{ $labels.instance }} down\"\n",
            None,
        ),
        (
            "bad_expr.yml",
            "      - record: ok\n        expr: up\n      - alert: Broken\n        expr: sum(rate(x[5m])\n",
            Some(7),
        ),
        (
            "bad_for.yml",
            "      - alert: Slow\n        expr: up == 0\n        for: soon\n",
            Some(6),
        ),
        ("no_expr.yml", "      - alert: Empty\n", Some(4)),
        (
            "both.yml",
            "      - alert: A\n        record: b\n        expr: up\n",
            Some(4),
        ),
        (
            "bad_template.yml",
            "      - alert: T\n        expr: up\n        annotations:\n          summary: \"{{ $labels.instance \"\n",
            Some(7),
        ),
        (
            "bad_record_name.yml",
            "      - record: \"not a metric\"\n        expr: up\n",
            Some(4),
        ),
    ];
    for (name, rules, line) in cases {
        let p = write(d.path(), name, &format!("{GROUP}{rules}"));
        let path = p.to_str().unwrap();
        let (ok, out) = tidemark(&["check", "rules", path]);
        let (want, reference) = reference(
            "promtool",
            "Debian package prometheus",
            &["check", "rules", path],
        );
        assert_eq!(ok, want, "{name}: tidemark:\n{out}\npromtool:\n{reference}");
        match line {
            None => assert!(out.contains("  SUCCESS: 2 rules found"), "{out}"),
            Some(l) => assert!(out.contains(&format!("{path}:{l}: ")), "{name}: {out}"),
        }
    }
}

#[test]
fn routing_files_pass_and_fail_as_amtool_says() {
    let d = tempfile::tempdir().unwrap();
    let cases = [
        (
            "good.yml",
            "route:\n  receiver: team\n  group_by: [alertname]\n  routes:\n    - matchers: [severity=\"page\"]\n      receiver: pager\nreceivers:\n  - name: team\n    webhook_configs:\n      - url: http://127.0.0.1:1/hook\n  - name: pager\ninhibit_rules:\n  - source_matchers: [severity=\"page\"]\n    target_matchers: [severity=\"warning\"]\n    equal: [instance]\n",
            true,
        ),
        (
            "undefined.yml",
            "route:\n  receiver: nobody\nreceivers:\n  - name: team\n",
            false,
        ),
        (
            "bad_matcher.yml",
            "route:\n  receiver: team\n  routes:\n    - matchers: [\"severity=~(\"]\n      receiver: team\nreceivers:\n  - name: team\n",
            false,
        ),
        (
            "bad_url.yml",
            "route:\n  receiver: team\nreceivers:\n  - name: team\n    webhook_configs:\n      - url: not a url\n",
            false,
        ),
    ];
    for (name, text, good) in cases {
        let p = write(d.path(), name, text);
        let path = p.to_str().unwrap();
        let (ok, out) = tidemark(&["check", "routing", path]);
        let (want, reference) = reference(
            "amtool",
            "Debian package prometheus-alertmanager",
            &["check-config", path],
        );
        assert_eq!(want, good, "{name}: amtool:\n{reference}");
        assert_eq!(ok, good, "{name}: tidemark:\n{out}");
        if good {
            assert!(
                out.contains(" - 1 inhibit rules\n - 2 receivers\n"),
                "{out}"
            );
        } else {
            assert!(out.contains(&format!("{path}:")), "{name}: {out}");
        }
    }
}

#[test]
fn config_and_job_files_name_the_line_and_key() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write(
        d.path(),
        "tidemark.toml",
        "[server]\nlisten = \"127.0.0.1:9470\"\n\n[job]\nallowed_lateness = \"five minutes\"\n",
    );
    let (ok, out) = tidemark(&["check", "config", cfg.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("line 5"), "{out}");
    assert!(out.contains("invalid duration \"five minutes\""), "{out}");

    write(
        d.path(),
        "bad.yml",
        &format!("{GROUP}      - alert: X\n        expr: up ==\n"),
    );
    let cfg = write(d.path(), "rules.toml", "[rules]\nfiles = [\"bad.yml\"]\n");
    let (ok, out) = tidemark(&["check", "config", cfg.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("bad.yml:5: "), "{out}");

    let cfg = write(d.path(), "good.toml", "[checkpoint]\ninterval = \"1m\"\n");
    let (ok, out) = tidemark(&["check", "config", cfg.to_str().unwrap()]);
    assert!(ok, "{out}");

    let (ok, out) = tidemark(&["check", "job", "jobs/kafka-infra.toml"]);
    assert!(ok, "{out}");
    let job = write(
        d.path(),
        "job.toml",
        "name = \"Bad Name\"\n[source]\ntopics = [\"metrics\"]\n",
    );
    let (ok, out) = tidemark(&["check", "job", job.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("line 1"), "{out}");
}

#[test]
fn scrape_files_and_the_collection_settings_name_the_file_line_and_key() {
    let d = tempfile::tempdir().unwrap();
    let good = write(
        d.path(),
        "scrape.yml",
        "scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['a:9100', 'b:9100']\n    etcd_sd_configs:\n      - endpoints: ['127.0.0.1:2379']\n        prefix: /svc/\n",
    );
    let (ok, out) = tidemark(&["check", "scrape", good.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(
        out.contains("job \"node\": every 60000 ms, 2 static targets, 1 etcd SD"),
        "{out}"
    );
    let bad = write(
        d.path(),
        "bad-scrape.yml",
        "scrape_configs:\n  - job_name: node\n    metric_relabel_configs:\n      - source_labels: [x]\n        regex: '(['\n        target_label: y\n",
    );
    let (ok, out) = tidemark(&["check", "scrape", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        out.contains("bad-scrape.yml:2: job \"node\": metric_relabel_configs[0]: invalid regex"),
        "{out}"
    );
    // `check config` follows [scrape] config and checks the ring, Graphite and TLS keys.
    let cfg = write(
        d.path(),
        "collect.toml",
        "[scrape]\nconfig = \"bad-scrape.yml\"\n[scrape.ring]\nmembers = [\"a\", \"b\"]\n[ingest]\ngraphite_templates = [\"a.* .host\"]\n[server]\ntls_cert_file = \"cert.pem\"\n",
    );
    let (ok, out) = tidemark(&["check", "config", cfg.to_str().unwrap()]);
    assert!(!ok);
    for want in [
        "[scrape] config: ",
        "invalid regex",
        "scrape.ring.members",
        "ingest.graphite_templates[0]",
        "set both",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
}

#[test]
fn rule_unit_test_files_run_on_the_engine_as_promtool_runs_them() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "rules.yml",
        "groups:\n  - name: example\n    rules:\n      - record: job:up:sum\n        expr: sum by (job) (up)\n      - alert: InstanceDown\n        expr: up == 0\n        for: 5m\n        labels:\n          severity: page\n        annotations:\n          summary: \"Instance {{ $labels.instance }} down\"\n          source: \"{{ $externalLabels.region }}\"\n",
    );
    let test = |alert_at: &str, sum: &str| {
        format!(
            "rule_files:\n  - rules.yml\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    external_labels:\n      region: eu\n    input_series:\n      - series: 'up{{job=\"prometheus\", instance=\"a:9090\"}}'\n        values: '0x14'\n      - series: 'up{{job=\"node\", instance=\"b:9100\"}}'\n        values: '1x6 0x8'\n    alert_rule_test:\n      - eval_time: {alert_at}\n        alertname: InstanceDown\n        exp_alerts:\n          - exp_labels:\n              severity: page\n              instance: a:9090\n              job: prometheus\n            exp_annotations:\n              summary: Instance a:9090 down\n              source: eu\n      - eval_time: 4m\n        alertname: InstanceDown\n        exp_alerts: []\n    promql_expr_test:\n      - expr: job:up:sum\n        eval_time: 4m\n        exp_samples:\n          - labels: 'job:up:sum{{job=\"prometheus\"}}'\n            value: 0\n          - labels: 'job:up:sum{{job=\"node\"}}'\n            value: {sum}\n"
        )
    };
    // (alert eval time, expected node sum, passes): at 12m the second instance has fired too
    // (down from 7m, `for: 5m`); at 11m it is still pending.
    for (at, sum, pass) in [
        ("10m", "1", true),
        ("11m", "1", true),
        ("12m", "1", false),
        ("10m", "2", false),
    ] {
        let p = write(d.path(), &format!("t_{at}_{sum}.yml"), &test(at, sum));
        let path = p.to_str().unwrap();
        let (ok, out) = tidemark(&["check", "rules", path]);
        let (want, reference) = reference(
            "promtool",
            "Debian package prometheus",
            &["test", "rules", path],
        );
        assert_eq!(want, pass, "promtool on {at}/{sum}:\n{reference}");
        assert_eq!(ok, pass, "tidemark on {at}/{sum}:\n{out}");
        assert!(
            out.starts_with(&format!("Unit Testing:  {path}\n")),
            "{out}"
        );
        if !pass {
            let what = if sum == "2" {
                "expr: \"job:up:sum\", time: 4m"
            } else {
                "alertname: InstanceDown, time: 12m"
            };
            assert!(out.contains(what), "{out}");
        }
    }
}

#[test]
fn the_shipped_fleet_rule_tests_pass_in_promtool_and_tidemark() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/rules/fleet_test.yml");
    let (want, reference) = reference(
        "promtool",
        "Debian package prometheus",
        &["test", "rules", path],
    );
    assert!(want, "{reference}");
    let (ok, out) = tidemark(&["check", "rules", path]);
    assert!(ok, "{out}");
    assert!(out.contains("  SUCCESS\n"), "{out}");
}

//! Prometheus's rule unit tests (`promtool test rules` files) run on Tidemark's engine, so a
//! team's existing tests run unchanged: `rule_files`, `evaluation_interval`, and `tests` with
//! `interval`, `input_series` (the series notation of PromQL test scripts: `1+1x10`, `_`,
//! `stale`), `alert_rule_test` (the alerts firing at `eval_time`, their labels and
//! annotations), `promql_expr_test` (an instant query's samples at `eval_time`),
//! `external_labels` and `external_url`.
//!
//! The rules are evaluated by the rule evaluator of `tidemark up` (the query engine, with the
//! series recorded at earlier ticks visible to later ones) at every `evaluation_interval` from
//! 0 to the last `eval_time`. Group `interval`s are rounded up to a multiple of
//! `evaluation_interval` (the evaluator's tick); `group_eval_order` is not read (groups run in
//! file order).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Deserialize;

use crate::alert::eval::{AlertSink, MemorySink, RuleConfig, Rules, SeriesWriter};
use crate::model::{Labels, WriteBatch};
use crate::query::engine::Engine;
use crate::query::promqltest::{almost_equal, parse_points, parse_series_desc, MemStorage, Point};
use crate::query::QueryValue;
use crate::store::hot::index::Matcher;
use crate::store::{Series, Storage};
use crate::time::Millis;

/// An alert's labels and annotations, as compared.
type LabelsAndAnnotations = (BTreeMap<String, String>, BTreeMap<String, String>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    rule_files: Vec<PathBuf>,
    evaluation_interval: Option<Millis>,
    #[serde(default)]
    group_eval_order: Vec<String>,
    #[serde(default)]
    tests: Vec<TestGroup>,
    /// Prometheus 3's fuzzy comparison setting; accepted, comparisons are exact to 1e-6.
    #[serde(default)]
    fuzzy_compare: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    #[serde(default)]
    name: String,
    interval: Option<Millis>,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    promql_expr_test: Vec<ExprTest>,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    #[serde(default)]
    external_url: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    series: String,
    #[serde(default)]
    values: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTest {
    eval_time: Millis,
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExprTest {
    expr: String,
    eval_time: Millis,
    #[serde(default)]
    exp_samples: Vec<ExpSample>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSample {
    #[serde(default)]
    labels: String,
    #[serde(default)]
    value: f64,
    histogram: Option<String>,
}

/// True when `text` looks like a unit test file (top-level `tests:` or `rule_files:`), not a
/// rule file.
pub fn is_test_file(text: &str) -> bool {
    text.lines()
        .any(|l| l.starts_with("tests:") || l.starts_with("rule_files:"))
}

/// Runs one unit test file; returns the report lines (`  SUCCESS` or `  FAILED:` and each
/// failure as promtool words it) and whether every test passed.
pub fn run_file(path: &Path, text: &str) -> (String, bool) {
    let file: TestFile = match yaml_serde::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            let line = e.location().map_or(0, |l| l.line());
            let mut msg = e.to_string();
            if let Some(i) = msg.find(" at line ") {
                msg.truncate(i);
            }
            return (
                format!("  FAILED:\n{}:{line}: {msg}\n", path.display()),
                false,
            );
        }
    };
    let _ = (&file.group_eval_order, file.fuzzy_compare);
    let base = path.parent().unwrap_or(Path::new("."));
    let rule_files: Vec<PathBuf> = file
        .rule_files
        .iter()
        .map(|p| {
            if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            }
        })
        .collect();
    let eval_interval = file.evaluation_interval.map_or(60_000, |m| m.0.max(1));
    let mut errors = Vec::new();
    for (i, t) in file.tests.iter().enumerate() {
        let name = if t.name.is_empty() {
            format!("test {}", i + 1)
        } else {
            t.name.clone()
        };
        match run_test(t, &rule_files, eval_interval) {
            Ok(fails) => errors.extend(fails.into_iter().map(|f| format!("    {name}: {f}"))),
            Err(e) => errors.push(format!("    {name}: {e}")),
        }
    }
    if errors.is_empty() {
        ("  SUCCESS\n".into(), true)
    } else {
        let mut out = String::from("  FAILED:\n");
        for e in errors {
            let _ = writeln!(out, "{e}");
        }
        (out, false)
    }
}

/// Recorded samples, as the evaluator writes them.
struct Recorded(Mutex<MemStorage>);

impl SeriesWriter for &Recorded {
    fn write(&mut self, batch: WriteBatch) -> Result<(), String> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for s in &batch.samples {
            m.add(batch.labels(s.series as usize), [(s.ts, s.value)]);
        }
        Ok(())
    }
}

/// The input series and what the rules recorded, as one store.
struct Union<'a> {
    input: &'a MemStorage,
    recorded: &'a Recorded,
}

impl Storage for Union<'_> {
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<Series> {
        let mut out = self.input.select(matchers, start, end);
        out.extend(
            self.recorded
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .select(matchers, start, end),
        );
        out
    }
}

fn duration(ms: i64) -> String {
    let (h, m, s, r) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut out = String::new();
    for (n, u) in [(h, "h"), (m, "m"), (s, "s"), (r, "ms")] {
        if n > 0 {
            let _ = write!(out, "{n}{u}");
        }
    }
    if out.is_empty() {
        "0s".into()
    } else {
        out
    }
}

fn run_test(
    t: &TestGroup,
    rule_files: &[PathBuf],
    eval_interval: i64,
) -> Result<Vec<String>, String> {
    let interval = t.interval.map_or(eval_interval, |m| m.0.max(1));
    let mut input = MemStorage::default();
    for s in &t.input_series {
        let labels = parse_series_desc(&s.series)
            .map_err(|e| format!("input_series {:?}: {e}", s.series))?;
        let points = parse_points(&s.values).map_err(|histogram| {
            if histogram {
                format!(
                    "input_series {:?}: native histograms are not supported",
                    s.series
                )
            } else {
                format!(
                    "input_series {:?}: cannot parse values {:?}",
                    s.series, s.values
                )
            }
        })?;
        let samples: Vec<(i64, f64)> = points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                Point::Value(v) => Some((i as i64 * interval, *v)),
                Point::Gap | Point::Histogram => None,
            })
            .collect();
        input.add(labels, samples);
    }
    let (rules, errs) = Rules::open(RuleConfig {
        files: rule_files.to_vec(),
        state_dir: None,
        external_labels: t.external_labels.clone(),
        external_url: t.external_url.clone(),
        resolution_ms: eval_interval as u64,
    });
    if !errs.is_empty() {
        return Err(errs
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; "));
    }
    let recorded = Recorded(Mutex::new(MemStorage::default()));
    let sink = MemorySink(Mutex::new(Vec::new()));
    // Every evaluation time, in order, with what is checked there.
    let mut times: Vec<i64> = t
        .alert_rule_test
        .iter()
        .map(|a| a.eval_time.0)
        .chain(t.promql_expr_test.iter().map(|e| e.eval_time.0))
        .collect();
    times.sort_unstable();
    times.dedup();
    let mut fails = Vec::new();
    let mut next_tick = 0i64;
    for &at in &times {
        let ticks: Vec<u64> = (next_tick..=at)
            .step_by(eval_interval as usize)
            .map(|x| x as u64)
            .collect();
        if let Some(&last) = ticks.last() {
            next_tick = last as i64 + eval_interval;
        }
        let mut writer = &recorded;
        rules.evaluate(&input, &ticks, &mut writer, &sink as &dyn AlertSink);
        // A rule evaluated at `at` only when `at` is on the grid (as in Prometheus).
        let firing: Vec<LabelsAndAnnotations> = rules.api_alerts()["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|a| a["state"] == "firing")
            .map(|a| (string_map(&a["labels"]), string_map(&a["annotations"])))
            .collect();
        for a in t.alert_rule_test.iter().filter(|a| a.eval_time.0 == at) {
            let mut got: Vec<_> = firing
                .iter()
                .filter(|(l, _)| l.get("alertname") == Some(&a.alertname))
                .cloned()
                .collect();
            let mut exp: Vec<_> = a
                .exp_alerts
                .iter()
                .map(|e| {
                    let mut l = e.exp_labels.clone();
                    l.insert("alertname".into(), a.alertname.clone());
                    (l, e.exp_annotations.clone())
                })
                .collect();
            got.sort();
            exp.sort();
            if got != exp {
                fails.push(format!(
                    "alertname: {}, time: {}, \n        exp:{}, \n        got:{}",
                    a.alertname,
                    duration(at),
                    alerts_text(&exp),
                    alerts_text(&got)
                ));
            }
        }
        for e in t.promql_expr_test.iter().filter(|e| e.eval_time.0 == at) {
            let union = Union {
                input: &input,
                recorded: &recorded,
            };
            let got = Engine::new(&union, at, at, 1).and_then(|eng| eng.query(&e.expr, false));
            let got: Vec<(Labels, f64)> = match got {
                Ok(QueryValue::Vector(v)) => v.into_iter().map(|(l, _, x)| (l, x)).collect(),
                Ok(QueryValue::Scalar(_, x)) => vec![(Labels::empty(), x)],
                Ok(other) => {
                    fails.push(format!(
                        "expr: {:?}, time: {}, err: expected an instant vector or a scalar, got {other:?}",
                        e.expr,
                        duration(at)
                    ));
                    continue;
                }
                Err(err) => {
                    fails.push(format!(
                        "expr: {:?}, time: {}, err: {err}",
                        e.expr,
                        duration(at)
                    ));
                    continue;
                }
            };
            let mut exp = Vec::new();
            for s in &e.exp_samples {
                if s.histogram.is_some() {
                    fails.push(format!(
                        "expr: {:?}, time: {}: native histograms are not supported",
                        e.expr,
                        duration(at)
                    ));
                    continue;
                }
                match parse_series_desc(&s.labels) {
                    Ok(l) => exp.push((l, s.value)),
                    Err(err) => {
                        fails.push(format!("expr: {:?}: labels {:?}: {err}", e.expr, s.labels))
                    }
                }
            }
            let mut got = got;
            got.sort_by(|a, b| a.0.cmp(&b.0));
            exp.sort_by(|a, b| a.0.cmp(&b.0));
            let same = got.len() == exp.len()
                && got.iter().zip(&exp).all(|(g, x)| {
                    g.0 == x.0 && (almost_equal(g.1, x.1) || (g.1.is_nan() && x.1.is_nan()))
                });
            if !same {
                fails.push(format!(
                    "expr: {:?}, time: {},\n        exp: {}\n        got: {}",
                    e.expr,
                    duration(at),
                    samples_text(&exp),
                    samples_text(&got)
                ));
            }
        }
    }
    Ok(fails)
}

fn string_map(v: &serde_json::Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn map_text(m: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

fn alerts_text(a: &[LabelsAndAnnotations]) -> String {
    if a.is_empty() {
        return "[]".into();
    }
    let mut out = String::from("[\n");
    for (i, (l, ann)) in a.iter().enumerate() {
        let _ = write!(
            out,
            "            {i}:\n              Labels:{}\n              Annotations:{}\n",
            map_text(l),
            map_text(ann)
        );
    }
    out.push_str("            ]");
    out
}

fn samples_text(s: &[(Labels, f64)]) -> String {
    if s.is_empty() {
        return "nothing".into();
    }
    s.iter()
        .map(|(l, v)| format!("{l} {v:E}"))
        .collect::<Vec<_>>()
        .join(",\n             ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        crate::time::parse_duration_ms(s).unwrap()
    }

    #[test]
    fn durations_print_as_promtool_does() {
        assert_eq!(duration(ms("10m")), "10m");
        assert_eq!(duration(ms("1h30m")), "1h30m");
        assert_eq!(duration(0), "0s");
    }

    #[test]
    fn test_files_are_told_from_rule_files() {
        assert!(is_test_file("rule_files:\n  - a.yml\ntests: []\n"));
        assert!(!is_test_file("groups:\n  - name: g\n"));
    }
}

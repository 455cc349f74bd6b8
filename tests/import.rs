//! `tidemark import` with the real binary: from a real Prometheus (Debian's, loaded with
//! `promtool tsdb create-blocks-from openmetrics`) over remote read, from the same OpenMetrics
//! file, from an `influx_inspect export`-style file, and old data into the cold tiers resumed
//! after a SIGKILL.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{agent, free_port, installed_bin, now_ms, Rng, Tidemark};

const HOUR: i64 = 3_600_000;

fn tidemark_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tidemark")
}

/// The arguments of an import from a Prometheus over remote read, all series.
fn remote_read_args(prom: &str, start: &str, end: &str, to: &str, state: &Path) -> Vec<String> {
    [
        "--from-prometheus",
        prom,
        "--match",
        "{job=~\".+\"}",
        "--start",
        start,
        "--end",
        end,
        "--url",
        to,
        "--state",
        state.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

/// The arguments of an import from a file.
fn file_args(file: &Path, to: &str, state: &Path) -> Vec<String> {
    [
        "--from-file",
        file.to_str().unwrap(),
        "--url",
        to,
        "--state",
        state.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

/// Runs `tidemark import ARGS` to the end; returns its stdout, asserting success.
fn import<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = Command::new(tidemark_bin())
        .arg("import")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "tidemark import {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A real Prometheus over a TSDB directory, on a free port (another one when the bind races).
struct Prometheus {
    child: Child,
    url: String,
}

impl Prometheus {
    fn start(dir: &Path, tsdb: &Path) -> Prometheus {
        let bin = installed_bin("prometheus", "Debian's prometheus package");
        let cfg = dir.join("prometheus.yml");
        std::fs::write(&cfg, "global:\n  scrape_interval: 15s\n").unwrap();
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&bin)
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!("--storage.tsdb.path={}", tsdb.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
                .spawn()
                .unwrap();
            let url = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken: try another
                }
                if let Ok(r) = agent().get(format!("{url}/-/ready")).call() {
                    if r.status() == 200 {
                        return Prometheus { child, url };
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "prometheus did not start: {}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
    }

    fn query_range(&self, q: &str, start: f64, end: f64, step: f64) -> Vec<Value> {
        query_range(&self.url, q, start, end, step)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn query_range(base: &str, q: &str, start: f64, end: f64, step: f64) -> Vec<Value> {
    let url = format!(
        "{base}/api/v1/query_range?query={}&start={start}&end={end}&step={step}",
        support::enc(q)
    );
    let mut r = agent().get(&url).call().unwrap();
    let body = r.body_mut().read_to_string().unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success", "{url}: {body}");
    v["data"]["result"].as_array().unwrap().clone()
}

/// Series by their labels, each as time -> value.
fn by_labels(result: &[Value]) -> std::collections::BTreeMap<String, Vec<(f64, f64)>> {
    result
        .iter()
        .map(|s| {
            let pts = s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p[0].as_f64().unwrap(),
                        p[1].as_str().unwrap().parse::<f64>().unwrap(),
                    )
                })
                .collect();
            (s["metric"].to_string(), pts)
        })
        .collect()
}

/// An hour of fleet data ending `end_ms` as OpenMetrics (seconds with a fraction, off the
/// minute grid): 12 counters scraped every 15 s and 12 gauges every 10 s.
fn fleet_hour_openmetrics(end_ms: i64) -> String {
    let start = end_ms - HOUR;
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut s = String::from("# TYPE http_requests counter\n");
    for i in 0..12 {
        let mut v = 0u64;
        let mut t = start + i * 370 + 11;
        while t < end_ms {
            v += rng.next() % 40;
            let code = if i % 3 == 0 { "500" } else { "200" };
            s.push_str(&format!(
                "http_requests_total{{job=\"api\",instance=\"h{i}\",code=\"{code}\"}} {v} {}.{:03}\n",
                t / 1000,
                t % 1000
            ));
            t += 15_000;
        }
    }
    s.push_str("# TYPE cpu_load gauge\n");
    for i in 0..12 {
        let mut t = start + i * 530 + 7;
        while t < end_ms {
            let v = (rng.next() % 10_000) as f64 / 10_000.0;
            s.push_str(&format!(
                "cpu_load{{job=\"node\",instance=\"h{i}\",region=\"{}\"}} {v} {}.{:03}\n",
                if i % 2 == 0 { "eu" } else { "us" },
                t / 1000,
                t % 1000
            ));
            t += 10_000;
        }
    }
    s.push_str("# EOF\n");
    s
}

/// The queries compared, with the first evaluation time each may use: Prometheus 2.42 (the
/// Debian reference) extrapolates `rate` at a counter's first samples in the order older
/// releases used (the zero-point cut before the gap check; 2.5x and 3.x, which Tidemark
/// follows, do the check first), so windows reaching before the data are not compared.
const QUERIES: &[(&str, i64)] = &[
    ("cpu_load", 0),
    ("avg by (region) (cpu_load)", 0),
    ("max_over_time(cpu_load[7m])", 0),
    ("quantile_over_time(0.9, cpu_load[5m])", 0),
    ("count_over_time(http_requests_total[1h])", 0),
    ("rate(http_requests_total[5m])", 6 * 60_000),
    (
        "sum by (code) (increase(http_requests_total[10m]))",
        11 * 60_000,
    ),
    ("topk(3, cpu_load)", 0),
];

/// Waits until the job has applied `n` samples of the last two hours before `at`.
fn wait_applied(tm: &Tidemark, n: usize, at: i64) {
    let q = support::enc("sum(count_over_time({job=~\".+\"}[2h]))");
    tm.eventually(&format!("{n} samples applied"), || {
        let v = tm.api(&format!("/api/v1/query?query={q}&time={}", at / 1000));
        let got = v["result"].as_array()?.first()?["value"][1]
            .as_str()?
            .to_string();
        (got == n.to_string()).then_some(())
    });
}

/// Asserts that Tidemark at `tm` answers every query of [`QUERIES`] as Prometheus does over
/// `[start, end]` (off the sample grid); returns the points compared.
fn assert_same_answers(prom: &Prometheus, tm: &str, first_sample: i64, end: i64) -> usize {
    let mut points = 0;
    for (q, skip) in QUERIES {
        let start = (first_sample + skip) as f64 / 1000.0 + 17.3;
        let until = end as f64 / 1000.0 + 200.1;
        let want = by_labels(&prom.query_range(q, start, until, 37.0));
        let got = by_labels(&query_range(tm, q, start, until, 37.0));
        assert!(!want.is_empty(), "{q}: Prometheus has no data");
        assert_eq!(
            want.keys().collect::<Vec<_>>(),
            got.keys().collect::<Vec<_>>(),
            "{q}: series differ"
        );
        for (k, w) in &want {
            let g = &got[k];
            if w.len() != g.len() {
                let wt: Vec<f64> = w.iter().map(|p| p.0).collect();
                let gt: Vec<f64> = g.iter().map(|p| p.0).collect();
                let only_w: Vec<&f64> = wt.iter().filter(|t| !gt.contains(t)).collect();
                let only_g: Vec<&f64> = gt.iter().filter(|t| !wt.contains(t)).collect();
                panic!("{tm}: {q} {k}: points differ: only Prometheus {only_w:?}, only Tidemark {only_g:?}");
            }
            for (a, b) in w.iter().zip(g) {
                assert_eq!(a.0, b.0, "{q} {k}: times differ");
                assert!(
                    (a.1 - b.1).abs() <= 1e-9 * a.1.abs().max(1.0),
                    "{tm}: {q} {k} at {}: Prometheus {} Tidemark {}",
                    a.0,
                    a.1,
                    b.1
                );
                points += 1;
            }
        }
    }
    points
}

#[test]
fn import_from_prometheus_remote_read_and_from_its_file_answers_as_prometheus() {
    let d = tempfile::tempdir().unwrap();
    // An hour ending 10 minutes ago: inside the hot retention, so it is all pushed.
    let end = now_ms() - 600_000;
    let file = d.path().join("fleet.om");
    std::fs::write(&file, fleet_hour_openmetrics(end)).unwrap();
    let tsdb = d.path().join("tsdb");
    let promtool = installed_bin("promtool", "Debian's prometheus package");
    let out = Command::new(promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&file)
        .arg(&tsdb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let prom = Prometheus::start(d.path(), &tsdb);
    let first_sample = end - HOUR;

    // (a) Remote read from the real Prometheus.
    let rd = d.path().join("from-prometheus");
    std::fs::create_dir_all(&rd).unwrap();
    let tm = Tidemark::start(&rd, "", 2);
    let state = rd.join("import.state.json");
    let start_arg = format!("{}", (first_sample - 60_000) / 1000);
    let end_arg = format!("{}", end / 1000 + 60);
    let args = remote_read_args(&prom.url, &start_arg, &end_arg, &tm.url, &state);
    let out = import(&args);
    let samples = 12 * 240 + 12 * 360;
    assert!(
        out.contains(&format!("imported {samples} samples")),
        "{out}"
    );
    wait_applied(&tm, samples, end + 60_000);
    let points = assert_same_answers(&prom, &tm.url, first_sample, end);
    assert!(points > 1000, "{points}");
    // A second run of the same import has nothing to do.
    let again = import(&args);
    assert!(again.starts_with("already imported"), "{again}");

    // (b) The same data from the file Prometheus was built from.
    let fd = d.path().join("from-file");
    std::fs::create_dir_all(&fd).unwrap();
    let tm2 = Tidemark::start(&fd, "", 1);
    let fstate = fd.join("import.state.json");
    let out = import(&file_args(&file, &tm2.url, &fstate));
    assert!(
        out.contains(&format!("imported {samples} samples")),
        "{out}"
    );
    wait_applied(&tm2, samples, end + 60_000);
    assert_same_answers(&prom, &tm2.url, first_sample, end);

    // (c) Remote read into a target whose hot retention (10 minutes) ends after the data:
    // every hour goes straight to the cold tiers, and the empty hot index leaves every query
    // to them; the answers are still Prometheus's.
    let cd = d.path().join("to-cold");
    std::fs::create_dir_all(&cd).unwrap();
    let tm3 = Tidemark::start(
        &cd,
        "[hot]\nretention = \"10m\"\nminute_rollup_retention = \"5m\"\n",
        1,
    );
    let later = format!("{}", now_ms() / 1000 + 3600);
    let cstate = cd.join("import.state.json");
    let out = import(&remote_read_args(
        &prom.url, &start_arg, &later, &tm3.url, &cstate,
    ));
    assert!(
        out.contains(&format!("imported {samples} samples"))
            && out.contains(": 0 pushed to the hot index")
            && out.contains(&format!("{samples} written to the cold tiers")),
        "{out}"
    );
    wait_applied(&tm3, samples, end + 60_000);
    assert_same_answers(&prom, &tm3.url, first_sample, end);
}

/// Ten hours of 6 gauges every minute ending two days ago: the value of series `i` at minute
/// `k` (from the start) is `i * 1000 + k`.
fn old_gauges(start: i64) -> (String, Vec<(usize, i64, f64)>) {
    let mut text = String::new();
    let mut rows = Vec::new();
    for i in 0..6 {
        for k in 0..600 {
            let t = start + k * 60_000;
            let v = (i * 1000 + k) as f64;
            text.push_str(&format!("fleet_temp{{host=\"s{i}\"}} {v} {t}\n"));
            rows.push((i as usize, t, v));
        }
    }
    (text, rows)
}

/// A child process killed and reaped when dropped (a failed assertion included).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn read_state(p: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
}

#[test]
fn old_data_goes_to_the_cold_tiers_with_rollups_and_a_killed_import_resumes_without_doubles() {
    let d = tempfile::tempdir().unwrap();
    // A 4 h hot retention: of the 10 hours, the first 6 or so are beyond it.
    let tm = Tidemark::start(
        d.path(),
        "[hot]\nretention = \"4h\"\nminute_rollup_retention = \"1h\"\n",
        2,
    );
    let day = 86_400_000;
    let start = (now_ms() / HOUR) * HOUR - 2 * day + 30_000; // off the hour
    let (text, rows) = old_gauges(start);
    let file = d.path().join("old.prom");
    std::fs::write(&file, &text).unwrap();
    let state = d.path().join("import.state.json");

    // First run, slowed down between hours, killed once it is pushing recent hours.
    let mut child = Reaped(
        Command::new(tidemark_bin())
            .args(["import", "--from-file"])
            .arg(&file)
            .args(["--url", tm.url.as_str(), "--state"])
            .arg(&state)
            .env("TIDEMARK_TEST_IMPORT_HOUR_PAUSE_MS", "700")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let killed_at = loop {
        assert!(
            Instant::now() < deadline,
            "the import never got past its cut"
        );
        let past_cut = read_state(&state).filter(|s| {
            let (done, cut) = (s["done_through"].as_i64(), s["cut"].as_i64());
            matches!((done, cut), (Some(d), Some(c)) if d > c + HOUR)
        });
        if let Some(s) = past_cut {
            child.0.kill().unwrap();
            child.0.wait().unwrap();
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The kill came inside the import: cold hours written, some hours pushed, not finished.
    let after_kill = read_state(&state).unwrap();
    assert_eq!(after_kill["finished"], false, "{after_kill}");
    let done = after_kill["done_through"].as_i64().unwrap();
    assert!(
        done < start + 10 * HOUR,
        "killed after the last hour: {after_kill}"
    );
    assert!(
        killed_at["cold_samples"].as_u64().unwrap() > 0,
        "{killed_at}"
    );

    // The second run resumes: it skips the hours done and stores nothing twice.
    let out = import(&file_args(&file, &tm.url, &state));
    assert!(out.contains("resumed:"), "{out}");
    let fin = read_state(&state).unwrap();
    assert_eq!(fin["finished"], true);
    // Samples sent (an hour cut short by the kill is sent again in full).
    let sent = fin["pushed"].as_u64().unwrap() + fin["cold_samples"].as_u64().unwrap();
    assert!(
        sent >= rows.len() as u64,
        "every sample pushed or written cold: {fin}"
    );
    let cut = fin["cut"].as_i64().unwrap();
    assert!(cut > start + 4 * HOUR && cut < start + 8 * HOUR, "{fin}");

    // Every sample once: counts per series over the whole span, across both tiers.
    let end = start + 600 * 60_000;
    let instant = |q: &str, t: i64| -> Vec<Value> {
        tm.api(&format!(
            "/api/v1/query?query={}&time={}",
            support::enc(q),
            t as f64 / 1000.0
        ))["result"]
            .as_array()
            .unwrap()
            .clone()
    };
    let counts = tm.eventually("the pushed hours are queryable", || {
        let r = instant("count_over_time(fleet_temp[11h])", end);
        (r.len() == 6 && r.iter().all(|s| s["value"][1] == "600")).then_some(r)
    });
    assert_eq!(counts.len(), 6);

    // Raw values in the cold range, off the grid: the last sample at or before t.
    for t in [start + HOUR + 12_345, start + 3 * HOUR + 59_000] {
        let r = instant("fleet_temp{host=\"s2\"}", t);
        let k = (t - start) / 60_000;
        assert_eq!(r[0]["value"][1], format!("{}", 2000 + k), "at {t}");
    }
    // Hourly sums in the cold range, answered by the 1-hour tier (aligned steps), against
    // sums computed here from the generated rows.
    let h0 = (start / HOUR + 2) * HOUR;
    let got = by_labels(&query_range(
        &tm.url,
        "sum_over_time(fleet_temp{host=\"s1\"}[1h])",
        (h0 / 1000) as f64,
        ((h0 + 2 * HOUR) / 1000) as f64,
        3600.0,
    ));
    let pts = got.values().next().expect("a series");
    assert_eq!(pts.len(), 3);
    for (t, v) in pts {
        let t = (*t * 1000.0) as i64;
        let want: f64 = rows
            .iter()
            .filter(|r| r.0 == 1 && r.1 > t - HOUR && r.1 <= t)
            .map(|r| r.2)
            .sum();
        assert_eq!(*v, want, "sum_over_time at {t}");
    }

    // The cold files are Parquet any engine reads: DuckDB counts the imported raw rows.
    let raw_glob = format!(
        "{}/cold/tier=raw/*/*/part-import-*.parquet",
        tm.data_dir.display()
    );
    let n = support::duckdb::query(&format!(
        "select count(*), count(distinct series_id) from read_parquet('{raw_glob}', hive_partitioning = false)"
    ));
    let cold_hours_rows = rows.iter().filter(|r| r.1 < cut + HOUR).count() as i64;
    assert_eq!(n[0][0].as_i64().unwrap(), cold_hours_rows, "{n:?}");
    assert_eq!(n[0][1].as_i64().unwrap(), 6);
    for tier in ["1m", "1h"] {
        let files = support::files_under(&tm.data_dir.join("cold").join(format!("tier={tier}")));
        assert!(
            files.iter().any(|f| f.contains("part-import-")),
            "no imported {tier} rollups in {files:?}"
        );
    }
}

#[test]
fn influx_export_imports_with_bad_lines_named_and_the_rest_kept() {
    let d = tempfile::tempdir().unwrap();
    let tm = Tidemark::start(d.path(), "", 1);
    let t0 = (now_ms() / 60_000 - 30) * 60_000;
    let ns = |ms: i64| ms as i128 * 1_000_000;
    let mut text = String::from(
        "# INFLUXDB EXPORT: 1677-09-21T00:12:43Z - 2262-04-11T23:47:16Z\n# DDL\nCREATE DATABASE telegraf WITH NAME autogen\n# DML\n# CONTEXT-DATABASE:telegraf\n# CONTEXT-RETENTION-POLICY:autogen\n# writing tsm data\n",
    );
    for k in 0..20 {
        text.push_str(&format!(
            "cpu,host=a,cpu=cpu0 usage_idle={},usage_user={}i {}\n",
            90 + k % 5,
            k,
            ns(t0 + k * 10_000)
        ));
    }
    text.push_str("cpu,host=a usage_idle=oops 1\n"); // line 28
    text.push_str("cpu,host=b usage_idle=50\n"); // line 29: no timestamp
    text.push_str(&format!("mem,host=a used=1024 {}\n", ns(t0)));
    let file = d.path().join("export.txt");
    std::fs::write(&file, text).unwrap();
    let out = import(&[
        "--from-file",
        file.to_str().unwrap(),
        "--url",
        tm.url.as_str(),
        "--state",
        d.path().join("s.json").to_str().unwrap(),
    ]);
    assert!(out.contains("imported 41 samples"), "{out}");
    assert!(out.contains("2 input lines rejected"), "{out}");
    assert!(out.contains("export.txt:28: "), "{out}");
    assert!(
        out.contains("export.txt:29: line without a timestamp"),
        "{out}"
    );
    let at = (t0 + 19 * 10_000) as f64 / 1000.0;
    let r = tm.eventually("the export is queryable", || {
        let v = tm.api(&format!(
            "/api/v1/query?query={}&time={at}",
            support::enc("sum(cpu_usage_user) + sum(count_over_time(cpu_usage_idle[10m]))")
        ));
        let r = v["result"].as_array()?.first()?["value"][1]
            .as_str()?
            .to_string();
        (r == "39").then_some(r)
    });
    assert_eq!(r, "39");
}

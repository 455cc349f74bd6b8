//! Alerting in cluster mode against a real Kafka-protocol broker (tansu) and a real HTTP
//! webhook receiver: a job with `[rules]` evaluates them on worker 0 over both processes'
//! shards and produces alert events to the topic `alerts`; `tidemark notify` delivers them and
//! commits offsets only after delivery. A notify process SIGKILLed with an undelivered
//! notification, its disk lost, loses nothing: a fresh one re-reads from the committed offsets.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::cluster::Cluster;
use support::kafka::Broker;
use support::receivers::HttpReceiver;
use support::{agent, enc, free_port, now_ms, Tidemark};

/// The tests run one at a time: each starts several processes on ports picked by
/// [`free_port`], and a port one test picked and released can be picked again by the other
/// before its process binds it (seen once in CI: the broker's port taken by a worker).
static SERIAL: Mutex<()> = Mutex::new(());

const RULES: &str = r#"groups:
- name: pools
  rules:
  - record: pool:cpu_usage:max
    expr: max by (pool) (cpu_usage)
  - alert: HotPool
    expr: pool:cpu_usage:max > 90
    for: 5s
    labels:
      severity: page
    annotations:
      summary: "pool {{ $labels.pool }} at {{ $value }}%"
"#;

/// `tidemark notify` as a child process.
struct Notify {
    child: Option<Child>,
    url: String,
    log: PathBuf,
}

impl Notify {
    fn start(dir: &Path, data: &Path, brokers: &str, routing: &Path) -> Notify {
        let port = free_port();
        let log = dir.join("notify.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["notify", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data)
            .args(["--brokers", brokers])
            .arg("--routing")
            .arg(routing)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start tidemark notify");
        let n = Notify {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        n.wait_for(60, "notify ready", || {
            agent()
                .get(format!("{}/-/ready", n.url))
                .call()
                .ok()
                .filter(|r| r.status() == 200)
        });
        n
    }

    fn text(&self, path: &str) -> String {
        agent()
            .get(format!("{}{path}", self.url))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default()
    }

    /// Sum of the samples of `name` on /metrics (`(partition, value)` for per-partition ones).
    fn metric(&self, name: &str) -> Vec<(String, f64)> {
        self.text("/metrics")
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter(|l| l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    }

    fn wait_for<T>(&self, secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; notify log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Line protocol for seconds `[from, to)` after `base`: eight hosts in two pools; pool p0 runs
/// hot (95) during `hot`, everything else idles at 20.
fn seconds(base: i64, from: i64, to: i64, hot: std::ops::Range<i64>) -> String {
    let mut s = String::new();
    for k in from..to {
        for h in 0..8 {
            let pool = h % 2;
            let v = if pool == 0 && hot.contains(&k) {
                95.0
            } else {
                20.0
            };
            s.push_str(&format!(
                "cpu,host=h{h},pool=p{pool} usage={v} {}\n",
                base + k * 1000
            ));
        }
    }
    s
}

fn push(ingest: &Tidemark, body: &str) {
    let (st, b) = ingest.post("/write?precision=ms", "text/plain", &[], body.as_bytes());
    assert_eq!(st, 204, "push: {b}");
}

/// Webhook notifications so far: `(status, alertname, pool)` per alert.
fn notified(requests: &Arc<Mutex<Vec<support::receivers::Request>>>) -> Vec<(String, String)> {
    requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "/hook")
        .flat_map(|r| {
            let v = r.json();
            v["alerts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |a| {
                    (
                        v["status"].as_str().unwrap_or("").to_string(),
                        format!(
                            "{}/{}/{}",
                            a["labels"]["alertname"].as_str().unwrap_or(""),
                            a["labels"]["pool"].as_str().unwrap_or(""),
                            a["status"].as_str().unwrap_or("")
                        ),
                    )
                })
        })
        .collect()
}

#[test]
fn cluster_rules_reach_the_webhook_through_kafka_and_notify_commits_after_delivery() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_on(free_port(), dir.path());
    broker.create_topic("metrics", 2);
    broker.create_topic("alerts", 2);
    let ingest = Tidemark::start_ingest(
        dir.path(),
        &format!(
            "[kafka]\nbrokers = \"{}\"\ntopic = \"metrics\"\npartition_key = \"series\"\nproduce_timeout = \"10s\"\n",
            broker.addr()
        ),
    );
    let c = Cluster::start(&dir.path().join("cluster"), 2, 1, &broker.addr());

    // A rule file with an error is refused at submit with file, line and reason.
    let bad_rules = dir.path().join("bad-rules.yml");
    std::fs::write(
        &bad_rules,
        "groups:\n- name: g\n  rules:\n  - alert: X\n    expr: up ==\n",
    )
    .unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES).unwrap();
    let spec = |rules: &Path| {
        format!(
            "name = \"fleet\"\n[source]\ntopics = [\"metrics\"]\ngroup = \"tm-fleet\"\n\
             [watermark]\nout_of_orderness = \"1s\"\nidle_timeout = \"1h\"\n\
             [rules]\nfiles = [\"{}\"]\ntopic = \"alerts\"\n",
            rules.display()
        )
    };
    let spec_path = dir.path().join("job.toml");
    std::fs::write(&spec_path, spec(&bad_rules)).unwrap();
    let (ok, out) = c.cli(&["submit", spec_path.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("bad-rules.yml:5: group \"g\", rule \"X\": expr"),
        "{out}"
    );
    std::fs::write(&spec_path, spec(&rules)).unwrap();
    let (ok, out) = c.cli(&["submit", spec_path.to_str().unwrap()]);
    assert!(ok, "{out}");

    // The receiver is down when the alert fires: notify takes the event, cannot deliver it,
    // and must not commit it.
    let hook_port = free_port();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let routing = dir.path().join("routing.yml");
    std::fs::write(
        &routing,
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname, pool]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n- name: hook\n  webhook_configs: [{{url: 'http://127.0.0.1:{hook_port}/hook'}}]\n\
             delivery:\n  initial_backoff: 200ms\n  max_backoff: 1s\n"
        ),
    )
    .unwrap();
    let mut first = Notify::start(
        dir.path(),
        &dir.path().join("notify-a"),
        &broker.addr(),
        &routing,
    );

    let base = (now_ms() - 600_000) / 1000 * 1000;
    // p0 is hot from second 10 to 60; push the first 40 seconds.
    push(&ingest, &seconds(base, 0, 40, 10..60));
    c.eventually(
        60,
        "HotPool firing on /api/v1/alerts (asked of process 1)",
        || {
            let v = c.get(1, "/api/v1/alerts");
            let a = v["data"]["alerts"].as_array()?.clone();
            a.iter()
                .any(|a| {
                    a["labels"]["alertname"] == "HotPool"
                        && a["labels"]["pool"] == "p0"
                        && a["state"] == "firing"
                })
                .then_some(())
        },
    );
    let rules_api = c.get(0, "/api/v1/rules?type=alert");
    assert_eq!(
        rules_api["data"]["groups"][0]["rules"][0]["name"], "HotPool",
        "{rules_api}"
    );
    // Maintained by every worker from its shard of the stream (the recording rule inlined),
    // not queried across the cluster at each tick.
    assert_eq!(
        rules_api["data"]["groups"][0]["rules"][0]["incremental"], true,
        "{rules_api}"
    );
    // The recorded series went back through Kafka and is stored like any other.
    c.eventually(60, "recorded series queryable", || {
        let v = c.get(
            1,
            &format!(
                "/api/v1/query?query={}&time={}",
                enc("pool:cpu_usage:max{pool=\"p0\"}"),
                (base + 30_000) / 1000
            ),
        );
        (v["data"]["result"][0]["value"][1] == "95").then_some(())
    });
    // The event is on the topic, keyed by alertname, valid against the schema.
    let msgs = broker.read_all("alerts", 2, 1, Duration::from_secs(30));
    assert_eq!(msgs.len(), 1, "the firing event");
    assert_eq!(msgs[0].2, b"HotPool");
    let event: serde_json::Value = serde_json::from_slice(&msgs[0].3).unwrap();
    assert_eq!(event["labels"]["pool"], "p0");
    assert_eq!(event["endsAt"], 0);
    assert_eq!(event["annotations"]["summary"], "pool p0 at 95%");
    // Active from the first hot tick on (second 10), fired 5 s later.
    let starts = event["startsAt"].as_i64().unwrap();
    assert!(
        (base + 10_000..=base + 11_000).contains(&starts),
        "startsAt {starts} vs base {base}"
    );

    // notify took it and is retrying; nothing is committed.
    first.wait_for(60, "a failed delivery attempt", || {
        let failed: f64 = first
            .metric("tidemark_notifications_failed_total")
            .iter()
            .map(|x| x.1)
            .sum();
        (failed >= 1.0).then_some(())
    });
    let (part, offset) = (msgs[0].0, msgs[0].1);
    let at = format!("partition=\"{part}\"");
    first.wait_for(30, "the event's partition read past it", || {
        first
            .metric("tidemark_notify_position")
            .iter()
            .any(|(k, v)| k.contains(&at) && *v == offset as f64 + 1.0)
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    let committed = first.metric("tidemark_notify_committed_offset");
    assert!(
        committed.iter().any(|(k, v)| k.contains(&at) && *v == -1.0),
        "nothing delivered, so nothing committed: {committed:?}"
    );
    // A message that is not an alert event, on the other partition: skipped with a clear
    // error, the rest goes on.
    broker.produce_raw("alerts", 1 - part, b"{\"labels\": {\"alertname\": 3}}");
    first.wait_for(30, "the malformed message reported", || {
        (first.metric("tidemark_notify_malformed_events_total")[0].1 == 1.0).then_some(())
    });
    let log = std::fs::read_to_string(&first.log).unwrap();
    assert!(
        log.contains(&format!(
            "skipping message alerts/{}@0: not an alert event",
            1 - part
        )) && log.contains("labels.alertname: must be a string"),
        "{log}"
    );
    // SIGKILL, and the disk (outbox, notification log) is gone too.
    first.kill();
    std::fs::remove_dir_all(dir.path().join("notify-a")).unwrap();

    // The receiver is back; a fresh notify re-reads the uncommitted event and delivers it.
    let hook = HttpReceiver::start_on(hook_port, Arc::clone(&requests));
    let second = Notify::start(
        dir.path(),
        &dir.path().join("notify-b"),
        &broker.addr(),
        &routing,
    );
    second.wait_for(60, "firing notification", || {
        (!notified(&requests).is_empty()).then_some(())
    });
    assert_eq!(
        notified(&requests),
        vec![("firing".to_string(), "HotPool/p0/firing".to_string())]
    );
    // Its UI in a real browser: `/` leads to the alerts view, which shows the alert in its
    // routing group (notify has no rules: that part says so, without a console error).
    let groups: serde_json::Value =
        serde_json::from_str(&second.text("/api/v2/alerts/groups")).unwrap();
    assert_eq!(
        groups[0]["alerts"][0]["labels"]["alertname"], "HotPool",
        "{groups}"
    );
    let br = support::browser::Browser::start();
    br.goto(&format!("{}/", second.url));
    br.wait_for(
        "notify's alerts view with the firing alert",
        "return location.pathname === '/alerts' && document.body.dataset.state === 'ready' \
         && document.body.dataset.firing === '1'",
    );
    let shown = br.js(
        "return [...document.querySelectorAll('#groups .group')].map(g => g.textContent)",
        serde_json::json!([]),
    );
    assert!(
        shown.to_string().contains("HotPool") && shown.to_string().contains("p0"),
        "{shown}"
    );
    assert_eq!(
        br.js("return window.tidemarkErrors", serde_json::json!([])),
        serde_json::json!([])
    );
    assert_eq!(
        br.severe_console(),
        Vec::<String>::new(),
        "no console errors"
    );
    drop(br);
    // Committed past the event once delivered.
    second.wait_for(30, "offset committed after delivery", || {
        second
            .metric("tidemark_notify_committed_offset")
            .iter()
            .any(|(k, v)| k.contains(&at) && *v == offset as f64 + 1.0)
            .then_some(())
    });

    // p0 cools down: resolved, delivered once.
    push(&ingest, &seconds(base, 40, 90, 10..60));
    second.wait_for(60, "resolved notification", || {
        (notified(&requests).len() >= 2).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        notified(&requests),
        vec![
            ("firing".to_string(), "HotPool/p0/firing".to_string()),
            ("resolved".to_string(), "HotPool/p0/resolved".to_string()),
        ],
        "each notification once"
    );

    // The whole cluster SIGKILLed and restarted: the rule state (data-0/jobs/fleet/alerts)
    // keeps the last tick, so nothing is announced again.
    let mut c = c;
    c.kill(1);
    c.kill(0);
    c.restart();
    push(&ingest, &seconds(base, 90, 100, 10..60));
    c.eventually(60, "the restarted job past the new data", || {
        (c.job("fleet")["watermark"].as_i64()? >= base + 98_000).then_some(())
    });
    c.eventually(30, "rules evaluated after the restart", || {
        let v = c.get(0, "/api/v1/rules");
        let last = v["data"]["groups"][0]["rules"][1]["lastEvaluation"]
            .as_str()?
            .to_string();
        (!last.is_empty() && !last.starts_with("0001")).then_some(())
    });
    let all = broker.read_all("alerts", 2, 4, Duration::from_secs(5));
    let events = all
        .iter()
        .filter(|m| {
            serde_json::from_slice::<serde_json::Value>(&m.3).is_ok_and(|v| v["tick"].is_number())
        })
        .count();
    assert_eq!(
        (all.len(), events),
        (3, 2),
        "firing and resolved (plus the malformed message), nothing again after the restart"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(notified(&requests).len(), 2);
    let malformed: f64 = second
        .metric("tidemark_notify_malformed_events_total")
        .iter()
        .map(|x| x.1)
        .sum();
    assert_eq!(
        malformed, 1.0,
        "the fresh notify read it again: it was never committed"
    );
    drop(hook);
}

/// `[auth] tokens` on the worker processes: jobs and reloads need `admin`, queries `read`; the
/// processes call each other with the admin token, so a query on process 1 still reads
/// process 0's shard.
#[test]
fn worker_apis_need_tokens_by_role() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start_with_config(
        &dir.path().join("cluster"),
        2,
        1,
        "127.0.0.1:9",
        Some(
            "[auth]\ntokens = [{ token = \"adm\", role = \"admin\" }, { token = \"rd\", role = \"read\" }]\n",
        ),
    );
    let call = |method: &str, i: usize, path: &str, token: Option<&str>| -> (u16, String) {
        let url = format!("{}{path}", c.urls[i]);
        let mut r = match method {
            "POST" => {
                let mut req = agent().post(&url);
                if let Some(t) = token {
                    req = req.header("authorization", format!("Bearer {t}"));
                }
                req.send_empty()
            }
            _ => {
                let mut req = agent().get(&url);
                if let Some(t) = token {
                    req = req.header("authorization", format!("Bearer {t}"));
                }
                req.call()
            }
        }
        .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    let q = format!("/api/v1/query?query={}", enc("count(up) or vector(0)"));
    assert_eq!(call("GET", 1, &q, None).0, 401);
    let (st, body) = call("GET", 1, &q, Some("rd"));
    assert_eq!(
        st, 200,
        "a read token queries, fanned out to process 0: {body}"
    );
    assert!(body.contains("\"success\""), "{body}");
    assert_eq!(call("GET", 0, "/-/ready", None).0, 200, "health stays open");
    assert_eq!(call("POST", 1, "/-/reload", Some("rd")).0, 403);
    assert_eq!(
        call("POST", 1, "/-/reload", Some("adm")).0,
        200,
        "forwarded to process 0 with the peer token"
    );
    let spec = dir.path().join("job.toml");
    std::fs::write(&spec, "name = \"x\"\n[source]\ntopics = [\"metrics\"]\n").unwrap();
    let (ok, out) = c.cli(&["submit", spec.to_str().unwrap()]);
    assert!(!ok && out.contains("HTTP 401"), "{out}");
    c.token = Some("rd".into());
    let (ok, out) = c.cli(&["submit", spec.to_str().unwrap()]);
    assert!(!ok && out.contains("HTTP 403"), "{out}");
    c.token = Some("adm".into());
    let (ok, out) = c.cli(&["jobs"]);
    assert!(ok, "{out}");
    // Past auth: the submit fails on the (absent) broker, not on the token.
    // (Matched as "HTTP 401": the message names the port, which may contain "401".)
    let (ok, out) = c.cli(&["submit", spec.to_str().unwrap()]);
    assert!(
        !ok && !out.contains("HTTP 401") && !out.contains("HTTP 403"),
        "{out}"
    );
    c.kill(0);
    c.kill(1);
}

//! etcd discovery and the collector pool, with a real etcd (Debian's `etcd-server`, and its
//! `etcdctl` as the registering service) and real `tidemark up` collectors on loopback: an
//! etcd-registered target appears and goes when its lease expires; three collectors share
//! 300 targets (each scraped once per interval), a fourth joins (the moved fraction is
//! reported and at most 1.5/N), and a killed collector's targets are taken over.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::targets::Fleet;
use support::{agent, free_port, installed_bin, Tidemark};

/// A single-member etcd on free loopback ports, its data in a temporary directory.
struct Etcd {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Etcd {
        let bin = installed_bin("etcd", "Debian's etcd-server");
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let (client, peer) = (free_port(), free_port());
            let endpoint = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let mut child = Command::new(&bin)
                .arg("--data-dir")
                .arg(dir.path().join("etcd"))
                .args(["--listen-client-urls", &endpoint])
                .args(["--advertise-client-urls", &endpoint])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("default={peer_url}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                let healthy = agent()
                    .get(format!("{endpoint}/health"))
                    .call()
                    .ok()
                    .and_then(|mut r| r.body_mut().read_to_string().ok())
                    .is_some_and(|b| b.contains("\"health\":\"true\""));
                if healthy {
                    return Etcd {
                        child,
                        endpoint,
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("etcd did not start");
    }

    /// `etcdctl` against this etcd.
    fn ctl(&self) -> Command {
        let mut c = Command::new(installed_bin("etcdctl", "Debian's etcd-client"));
        c.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint));
        c
    }

    /// Grants a lease with `etcdctl lease grant`; its id (hex, as etcdctl prints it).
    fn lease(&self, ttl_s: u32) -> String {
        let out = self
            .ctl()
            .args(["lease", "grant", &ttl_s.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        // "lease 694d8b3c9a1c2b05 granted with TTL(3s)"
        text.split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("{text}"))
            .to_string()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn instant(tm: &Tidemark, q: &str) -> Vec<Value> {
    tm.api(&format!("/api/v1/query?query={}", support::enc(q)))["result"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn an_etcd_registered_target_appears_and_goes_with_its_lease() {
    let etcd = Etcd::start();
    let d = tempfile::tempdir().unwrap();
    let fleet = Fleet::start();
    let scrape = d.path().join("scrape.yml");
    std::fs::write(
        &scrape,
        format!(
            "scrape_configs:\n  - job_name: svc\n    scrape_interval: 1s\n    metrics_path: /t/7\n    etcd_sd_configs:\n      - endpoints: ['{}']\n        prefix: /services/\n",
            etcd.endpoint
        ),
    )
    .unwrap();
    let tm = Tidemark::start(
        d.path(),
        &format!(
            "[scrape]\nconfig = {:?}\nself_scrape = false\n[rules]\nenabled = false\n",
            scrape.display().to_string()
        ),
        1,
    );
    // A service registers with etcdctl under a 3 s lease, kept alive by `etcdctl lease
    // keep-alive` (the service's heartbeat).
    let lease = etcd.lease(3);
    let value = format!(
        "{{\"targets\": [\"{}\"], \"labels\": {{\"team\": \"payments\"}}}}",
        fleet.addr
    );
    let out = etcd
        .ctl()
        .args([
            "put",
            "/services/pay-1",
            &value,
            &format!("--lease={lease}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut heartbeat = etcd
        .ctl()
        .args(["lease", "keep-alive", &lease])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = tm.eventually("the etcd-registered target is scraped", || {
        let t = tm.api("/api/v1/targets?state=active");
        let a = t["activeTargets"].as_array()?.clone();
        a.into_iter().find(|x| x["health"] == "up")
    });
    assert_eq!(t["labels"]["team"], "payments", "{t}");
    assert_eq!(
        t["discoveredLabels"]["__meta_etcd_key"], "/services/pay-1",
        "{t}"
    );
    // The target is "up" once its scrape is appended to the log; its samples are queryable
    // once the job applied them, a moment later.
    tm.eventually("the etcd-registered target's samples are queryable", || {
        let r = instant(&tm, "fleet_value{job=\"svc\",team=\"payments\"}");
        (r.len() == 1).then_some(())
    });
    // It stays while the heartbeat runs (longer than the lease's TTL).
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        tm.api("/api/v1/targets?state=active")["activeTargets"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The service dies: no more keep-alives, the lease expires, etcd deletes the key, the
    // target goes and its series get staleness markers.
    heartbeat.kill().unwrap();
    heartbeat.wait().unwrap();
    let killed = Instant::now();
    tm.eventually("the target goes when its lease expires", || {
        let t = tm.api("/api/v1/targets?state=active");
        t["activeTargets"].as_array()?.is_empty().then_some(())
    });
    let gone_after = killed.elapsed();
    tm.eventually("its series are stale", || {
        let r = instant(&tm, "fleet_value");
        let up = instant(&tm, "up{job=\"svc\"}");
        (r.is_empty() && up.is_empty()).then_some(())
    });
    println!(
        "etcd SD: target gone {:.1} s after its heartbeat stopped (lease TTL 3 s)",
        gone_after.as_secs_f64()
    );
}

/// A collector of the pool: `tidemark up` with etcd membership.
fn collector(dir: &Path, scrape: &Path, etcd: &Etcd, id: &str) -> Tidemark {
    let d = dir.join(id);
    std::fs::create_dir_all(&d).unwrap();
    Tidemark::start(
        &d,
        &format!(
            "[scrape]\nconfig = {:?}\nself_scrape = false\n[scrape.ring]\nmember = {id:?}\netcd_endpoints = [{:?}]\nlease_ttl = \"2s\"\nhandover = \"1s\"\n[rules]\nenabled = false\n",
            scrape.display().to_string(),
            etcd.endpoint
        ),
        1,
    )
}

/// Owner per scrape URL, from a collector's `/api/v1/status/ring`, once it sees `n` active
/// members.
fn owners(tm: &Tidemark, n: usize) -> BTreeMap<String, String> {
    tm.eventually(&format!("{n} active members on the ring"), || {
        let r = tm.api("/api/v1/status/ring");
        let active = r["members"]
            .as_array()?
            .iter()
            .filter(|m| m["active"] == true)
            .count();
        let targets = r["targets"].as_array()?;
        (active == n && r["registered"] == true && targets.len() == 300).then(|| {
            targets
                .iter()
                .map(|t| {
                    (
                        t["scrapeUrl"].as_str().unwrap().to_string(),
                        t["owner"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
    })
}

/// Checks that in `[from, to)` every target was scraped once per interval: consecutive
/// scrapes of one target are between 0.5 and 1.5 intervals apart (closer: scraped twice in a
/// slot; further: a slot missed), and each target has its share of scrapes.
fn once_per_interval(fleet: &Fleet, from: Instant, to: Instant, interval: Duration) -> usize {
    let by = fleet.scrapes_between(from, to);
    assert_eq!(by.len(), 300, "targets scraped in the window: {}", by.len());
    let slots = ((to - from).as_secs_f64() / interval.as_secs_f64()).floor() as usize;
    let mut total = 0;
    for (i, times) in &by {
        assert!(
            times.len() >= slots.saturating_sub(1) && times.len() <= slots + 1,
            "target {i}: {} scrapes in {slots} intervals",
            times.len()
        );
        for w in times.windows(2) {
            let gap = w[1] - w[0];
            assert!(
                gap >= interval / 2,
                "target {i} scraped twice within {gap:?} (interval {interval:?})"
            );
            assert!(
                gap <= interval * 3 / 2,
                "target {i} missed a slot: {gap:?} between scrapes (interval {interval:?})"
            );
        }
        total += times.len();
    }
    total
}

#[test]
fn a_collector_pool_shares_targets_on_the_ring() {
    let etcd = Etcd::start();
    let d = tempfile::tempdir().unwrap();
    let fleet = Fleet::start();
    let interval = Duration::from_secs(3);
    // 300 targets on the fleet server, one path and instance each.
    let groups: Vec<String> = (0..300)
        .map(|i| {
            format!(
                "{{\"targets\": [\"{}\"], \"labels\": {{\"__metrics_path__\": \"/t/{i}\", \"instance\": \"t{i}\"}}}}",
                fleet.addr
            )
        })
        .collect();
    std::fs::write(
        d.path().join("fleet.json"),
        format!("[{}]", groups.join(",")),
    )
    .unwrap();
    let scrape = d.path().join("scrape.yml");
    std::fs::write(
        &scrape,
        format!(
            "scrape_configs:\n  - job_name: fleet\n    scrape_interval: 3s\n    file_sd_configs:\n      - files: ['{}']\n",
            d.path().join("fleet.json").display()
        ),
    )
    .unwrap();
    let mut pool: Vec<Tidemark> = ["c0", "c1", "c2"]
        .iter()
        .map(|id| collector(d.path(), &scrape, &etcd, id))
        .collect();
    let before = owners(&pool[0], 3);
    for tm in &pool[1..] {
        assert_eq!(
            owners(tm, 3),
            before,
            "every member computes the same owners"
        );
    }
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for o in before.values() {
        *per.entry(o.as_str()).or_default() += 1;
    }
    println!("ring of 3: targets per collector {per:?}");
    assert_eq!(per.len(), 3, "{per:?}");
    // Steady state: every target once per interval.
    std::thread::sleep(interval);
    let from = Instant::now();
    std::thread::sleep(interval * 4);
    let n = once_per_interval(&fleet, from, Instant::now(), interval);
    println!("3 collectors, 4 intervals: {n} scrapes of 300 targets");

    // A fourth collector joins: only the targets it gains move, none is scraped twice.
    let joined = Instant::now();
    pool.push(collector(d.path(), &scrape, &etcd, "c3"));
    let after = owners(&pool[0], 4);
    assert_eq!(owners(&pool[3], 4), after);
    let moved: Vec<&String> = before
        .keys()
        .filter(|url| before[*url] != after[*url])
        .collect();
    let fraction = moved.len() as f64 / 300.0;
    println!(
        "a fourth collector joined: {} of 300 targets moved ({fraction:.3}; bound 1.5/4 = 0.375)",
        moved.len()
    );
    assert!(fraction <= 1.5 / 4.0, "moved {fraction}");
    assert!(
        moved.iter().all(|u| after[*u] == "c3"),
        "only to the new member"
    );
    std::thread::sleep(interval * 4);
    once_per_interval(&fleet, joined, Instant::now(), interval);
    // c3 scrapes what it owns (its /api/v1/targets lists exactly those).
    let mine = pool[3].api("/api/v1/targets?state=active")["activeTargets"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(mine, moved.len());

    // c1 is killed (SIGKILL: no goodbye): its lease expires after 2 s and the others take
    // its targets from their next slot; nothing is scraped twice.
    let orphans: Vec<String> = after
        .iter()
        .filter(|(_, o)| *o == "c1")
        .map(|(u, _)| u.clone())
        .collect();
    pool[1].kill();
    let killed = Instant::now();
    let rest = owners(&pool[0], 3);
    assert!(rest.values().all(|o| o != "c1"));
    let taken_over = killed.elapsed();
    std::thread::sleep(interval * 4);
    let by = fleet.scrapes_between(killed, Instant::now());
    let mut worst = Duration::ZERO;
    for (i, times) in &by {
        for w in times.windows(2) {
            assert!(
                w[1] - w[0] >= interval / 2,
                "target {i} scraped twice after the kill"
            );
        }
        let url = format!("http://{}/t/{i}", fleet.addr);
        if orphans.contains(&url) {
            worst = worst.max(times[0] - killed);
        }
    }
    assert_eq!(by.len(), 300, "every target is scraped after the kill");
    println!(
        "c1 killed: the ring dropped it after {:.1} s; its {} targets were next scraped at most {:.1} s after the kill (interval 3 s, lease TTL 2 s)",
        taken_over.as_secs_f64(),
        orphans.len(),
        worst.as_secs_f64()
    );
    // Within one interval of the ring seeing the loss.
    assert!(worst <= taken_over + interval + Duration::from_secs(1));
    // From then on, once per interval again.
    let from = Instant::now();
    std::thread::sleep(interval * 3);
    once_per_interval(&fleet, from, Instant::now(), interval);
}

//! The collector pool's consistent hash ring. Every collector of a pool reads the same scrape
//! configuration and discovers the same targets; each hashes the target keys onto a ring of
//! the members' virtual nodes and scrapes only the targets it owns. When a member joins or
//! leaves, only the targets it gains or loses move (about 1/N of them).
//!
//! Membership is static (`[scrape.ring] members`) or held in etcd: each collector keeps a
//! lease on `<prefix><id>` whose value is `{"id", "url", "since"}`. A member takes part in the
//! ring from `since` (its registration time plus `handover`), and ownership is decided per
//! scrape slot: the owner of a target for the slot at time `t` is its owner on the ring of the
//! members active at `t`. Every member sees a joining member's record within milliseconds, so
//! before `since` all agree that the old owner scrapes and from `since` on that the new one
//! does: no slot is scraped twice. A member that stops (its lease revoked, or expired after
//! `lease_ttl` when it was killed) leaves the ring as soon as the others see its key go; its
//! targets are scraped by their new owners from their next slot. A member whose own lease
//! lapsed (etcd unreachable) stops scraping until it has registered again, since the others
//! have taken its targets.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::etcd::Etcd;
use crate::time::now_ms;

/// A ring of members' virtual nodes.
#[derive(Debug)]
pub struct Ring {
    ids: Vec<String>,
    /// (point, member index), sorted by point.
    points: Vec<(u64, u32)>,
}

/// Spreads a key over the ring (target keys are already hashes; this keeps any input well
/// mixed).
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Ring {
    /// `vnodes` points per member, at `xxh3(id # i)`.
    pub fn new(ids: &[String], vnodes: usize) -> Ring {
        let mut ids = ids.to_vec();
        ids.sort();
        ids.dedup();
        let mut points = Vec::with_capacity(ids.len() * vnodes);
        for (m, id) in ids.iter().enumerate() {
            for v in 0..vnodes.max(1) {
                let p = xxhash_rust::xxh3::xxh3_64(format!("{id}#{v}").as_bytes());
                points.push((p, m as u32));
            }
        }
        points.sort_unstable();
        Ring { ids, points }
    }

    /// The member owning `key`: the first virtual node at or after the key's point.
    pub fn owner(&self, key: u64) -> Option<&str> {
        if self.points.is_empty() {
            return None;
        }
        let h = mix(key);
        let i = self.points.partition_point(|(p, _)| *p < h);
        let (_, m) = self.points[if i == self.points.len() { 0 } else { i }];
        Some(&self.ids[m as usize])
    }

    pub fn members(&self) -> &[String] {
        &self.ids
    }
}

/// A member as registered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    /// Where its API is (for the status page).
    #[serde(default)]
    pub url: String,
    /// From when it owns targets (ms since the epoch).
    #[serde(default)]
    pub since: i64,
}

/// Where membership comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// No ring: this collector scrapes every target.
    Alone,
    /// A fixed list of member ids.
    Static(Vec<String>),
    /// Leases in etcd.
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
        lease_ttl_s: i64,
        handover_ms: i64,
    },
}

/// This collector's view of the pool.
pub struct Membership {
    me: String,
    url: String,
    vnodes: usize,
    source: Source,
    view: Mutex<Vec<Member>>,
    /// The ring of the last active member set asked for.
    cache: Mutex<Option<(Vec<String>, Arc<Ring>)>>,
    /// etcd: our lease is alive (else we own nothing).
    registered: AtomicBool,
    stop: Arc<AtomicBool>,
    last_error: Mutex<String>,
    /// etcd: the client and our lease (0: none), for leaving.
    etcd: std::sync::OnceLock<Arc<Etcd>>,
    lease: std::sync::atomic::AtomicI64,
}

impl Membership {
    /// This collector's membership from `[scrape.ring]` (`listen` names it when `member` is
    /// empty); errors name the `tidemark.toml` key.
    pub fn from_config(
        section: &crate::config::RingSection,
        listen: std::net::SocketAddr,
    ) -> Result<Arc<Membership>, String> {
        let s = section;
        let me = if s.member.is_empty() {
            listen.to_string()
        } else {
            s.member.clone()
        };
        let url = format!("http://{listen}");
        let source = match (s.members.is_empty(), s.etcd_endpoints.is_empty()) {
            (true, true) => return Ok(Membership::alone()),
            (false, false) => {
                return Err(
                    "scrape.ring: set either members (static) or etcd_endpoints, not both".into(),
                )
            }
            (false, true) => {
                if !s.members.contains(&me) {
                    return Err(format!(
                        "scrape.ring.members {:?} does not contain this collector's id {me:?} (scrape.ring.member, or the listen address when it is empty)",
                        s.members
                    ));
                }
                Source::Static(s.members.clone())
            }
            (true, false) => {
                if s.lease_ttl.0 < 1000 {
                    return Err(
                        "scrape.ring.lease_ttl: at least 1s (etcd leases count seconds)".into(),
                    );
                }
                Source::Etcd {
                    endpoints: s.etcd_endpoints.clone(),
                    prefix: s.etcd_prefix.clone(),
                    lease_ttl_s: s.lease_ttl.0 / 1000,
                    handover_ms: s.handover.0,
                }
            }
        };
        Ok(Membership::new(me, url, s.vnodes, source))
    }

    /// A collector that scrapes everything.
    pub fn alone() -> Arc<Membership> {
        Membership::new("local".into(), String::new(), 1, Source::Alone)
    }

    pub fn new(me: String, url: String, vnodes: usize, source: Source) -> Arc<Membership> {
        let view = match &source {
            Source::Static(ids) => ids
                .iter()
                .map(|id| Member {
                    id: id.clone(),
                    url: String::new(),
                    since: 0,
                })
                .collect(),
            _ => Vec::new(),
        };
        Arc::new(Membership {
            me,
            url,
            vnodes: vnodes.max(1),
            source,
            view: Mutex::new(view),
            cache: Mutex::new(None),
            registered: AtomicBool::new(false),
            stop: Arc::new(AtomicBool::new(false)),
            last_error: Mutex::new(String::new()),
            etcd: std::sync::OnceLock::new(),
            lease: std::sync::atomic::AtomicI64::new(0),
        })
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// Whether targets are sharded at all.
    pub fn sharded(&self) -> bool {
        !matches!(self.source, Source::Alone)
    }

    /// The ring of the members active at `t`.
    pub fn ring_at(&self, t: i64) -> Arc<Ring> {
        let mut ids: Vec<String> = self
            .view
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|m| m.since <= t)
            .map(|m| m.id.clone())
            .collect();
        ids.sort();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, r)) = cache.as_ref() {
            if *k == ids {
                return Arc::clone(r);
            }
        }
        let r = Arc::new(Ring::new(&ids, self.vnodes));
        *cache = Some((ids, Arc::clone(&r)));
        r
    }

    /// The owner of `key` for the slot at `t`.
    pub fn owner(&self, key: u64, t: i64) -> Option<String> {
        match self.source {
            Source::Alone => Some(self.me.clone()),
            _ => self.ring_at(t).owner(key).map(str::to_string),
        }
    }

    /// Whether this collector scrapes `key` in the slot at `t`.
    pub fn owns(&self, key: u64, t: i64) -> bool {
        match self.source {
            Source::Alone => true,
            Source::Static(_) => self.ring_at(t).owner(key) == Some(self.me.as_str()),
            Source::Etcd { .. } => {
                self.registered.load(Ordering::Acquire)
                    && self.ring_at(t).owner(key) == Some(self.me.as_str())
            }
        }
    }

    fn set_view(&self, mut members: Vec<Member>) {
        members.sort_by(|a, b| a.id.cmp(&b.id));
        *self.view.lock().unwrap_or_else(|e| e.into_inner()) = members;
    }

    fn note_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// `/api/v1/status/ring`: the members, this collector, and each target's owner now.
    pub fn status_json(&self, targets: &[(String, String, u64)]) -> Value {
        let now = now_ms();
        let ring = self.ring_at(now);
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
        let owners: Vec<Value> = targets
            .iter()
            .map(|(job, url, key)| {
                let owner = match self.source {
                    Source::Alone => Some(self.me.as_str()),
                    _ => ring.owner(*key),
                };
                if let Some(o) = owner {
                    *counts.entry(o.to_string()).or_default() += 1;
                }
                json!({"scrapePool": job, "scrapeUrl": url, "owner": owner})
            })
            .collect();
        let members: Vec<Value> = view
            .iter()
            .map(|m| {
                json!({
                    "id": m.id,
                    "url": m.url,
                    "since": crate::time::rfc3339_ms(m.since),
                    "active": m.since <= now,
                    "targets": counts.get(&m.id).copied().unwrap_or(0),
                })
            })
            .collect();
        json!({
            "self": self.me,
            "membership": match &self.source {
                Source::Alone => "none",
                Source::Static(_) => "static",
                Source::Etcd { .. } => "etcd",
            },
            "registered": match self.source {
                Source::Etcd { .. } => self.registered.load(Ordering::Acquire),
                _ => true,
            },
            "lastError": self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            "virtualNodes": self.vnodes,
            "members": members,
            "targets": owners,
        })
    }

    /// etcd membership: registers this collector and follows the others. Runs on threads of
    /// its own until [`Membership::leave`].
    pub fn start(self: &Arc<Self>) {
        let Source::Etcd {
            endpoints,
            prefix,
            lease_ttl_s,
            handover_ms,
        } = self.source.clone()
        else {
            return;
        };
        let etcd = Arc::clone(self.etcd.get_or_init(|| Arc::new(Etcd::new(&endpoints))));
        {
            let (me, etcd) = (Arc::clone(self), Arc::clone(&etcd));
            let prefix = prefix.clone();
            std::thread::Builder::new()
                .name("ring-lease".into())
                .spawn(move || me.keep_registered(&etcd, &prefix, lease_ttl_s, handover_ms))
                .ok();
        }
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("ring-watch".into())
            .spawn(move || {
                super::etcd::follow_prefix(
                    &etcd,
                    &prefix,
                    &me.stop,
                    |keys| {
                        me.set_view(
                            keys.values()
                                .filter_map(|v| serde_json::from_slice::<Member>(v).ok())
                                .collect(),
                        )
                    },
                    |e| me.note_error(e.to_string()),
                )
            })
            .ok();
    }

    fn keep_registered(&self, etcd: &Etcd, prefix: &str, ttl_s: i64, handover_ms: i64) {
        let ttl_s = ttl_s.max(1);
        let key = format!("{prefix}{}", self.me);
        while !self.stop.load(Ordering::Acquire) {
            // Register.
            let record = Member {
                id: self.me.clone(),
                url: self.url.clone(),
                since: now_ms() + handover_ms,
            };
            let reg = etcd.grant(ttl_s).and_then(|lease| {
                let body = serde_json::to_vec(&record).unwrap_or_default();
                etcd.put(&key, &body, lease).map(|_| lease)
            });
            let lease = match reg {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(target: "tidemark::collect", "ring: cannot register in etcd ({e}); this collector scrapes nothing until it can");
                    self.note_error(e.to_string());
                    sleep_unless(&self.stop, Duration::from_secs(1));
                    continue;
                }
            };
            self.lease.store(lease, Ordering::Release);
            self.registered.store(true, Ordering::Release);
            tracing::info!(target: "tidemark::collect", member = self.me.as_str(), lease, "ring: registered in etcd under {key}");
            // Keep it alive; a lapse past the TTL means the others took our targets.
            let mut alive_until = now_ms() + ttl_s * 1000;
            loop {
                sleep_unless(&self.stop, Duration::from_millis((ttl_s * 1000 / 3) as u64));
                if self.stop.load(Ordering::Acquire) {
                    return;
                }
                match etcd.keepalive(lease) {
                    Ok(ttl) if ttl > 0 => alive_until = now_ms() + ttl * 1000,
                    Ok(_) => {
                        tracing::warn!(target: "tidemark::collect", "ring: our etcd lease expired; registering again");
                        self.registered.store(false, Ordering::Release);
                        break;
                    }
                    Err(e) => {
                        self.note_error(e.to_string());
                        if now_ms() >= alive_until {
                            tracing::warn!(target: "tidemark::collect", "ring: lease lapsed ({e}); scraping nothing until registered again");
                            self.registered.store(false, Ordering::Release);
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Stops following and, with etcd, gives up our lease (the others take our targets from
    /// their next slot).
    /// Blocks for at most a few seconds (the revoke call).
    pub fn leave(&self) {
        self.registered.store(false, Ordering::Release);
        self.stop.store(true, Ordering::Release);
        let lease = self.lease.swap(0, Ordering::AcqRel);
        if let (Some(etcd), true) = (self.etcd.get(), lease != 0) {
            match etcd.revoke(lease) {
                Ok(()) => {
                    tracing::info!(target: "tidemark::collect", member = self.me.as_str(), "ring: left (lease revoked)")
                }
                Err(e) => {
                    tracing::warn!(target: "tidemark::collect", "ring: could not revoke our lease ({e}); the others take our targets when it expires")
                }
            }
        }
    }
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let until = std::time::Instant::now() + d;
    while std::time::Instant::now() < until && !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50).min(d));
    }
}

/// The fraction of `keys` whose owner differs between two rings.
pub fn moved_fraction(a: &Ring, b: &Ring, keys: impl Iterator<Item = u64>) -> f64 {
    let (mut n, mut moved) = (0u64, 0u64);
    for k in keys {
        n += 1;
        if a.owner(k) != b.owner(k) {
            moved += 1;
        }
    }
    moved as f64 / n.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("collector-{i}")).collect()
    }

    fn keys() -> impl Iterator<Item = u64> {
        (0..100_000u64).map(|i| xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()))
    }

    #[test]
    fn balanced_and_minimal_moves() {
        let three = Ring::new(&ids(3), 128);
        let four = Ring::new(&ids(4), 128);
        let mut per = std::collections::HashMap::new();
        for k in keys() {
            *per.entry(three.owner(k).unwrap().to_string())
                .or_insert(0u64) += 1;
        }
        for (m, n) in &per {
            assert!((25_000..41_000).contains(n), "{m} owns {n} of 100000");
        }
        // Joining moves about 1/4 of the keys, and only to the new member.
        let f = moved_fraction(&three, &four, keys());
        assert!(f <= 1.5 / 4.0 && f > 0.15, "moved {f}");
        for k in keys() {
            if three.owner(k) != four.owner(k) {
                assert_eq!(four.owner(k), Some("collector-3"));
            }
        }
        // Leaving moves only the leaver's keys.
        let two = Ring::new(&ids(2), 128);
        for k in keys() {
            if three.owner(k) != two.owner(k) {
                assert_eq!(three.owner(k), Some("collector-2"));
            }
        }
    }

    #[test]
    fn config_errors_name_the_key() {
        let listen: std::net::SocketAddr = "127.0.0.1:9090".parse().unwrap();
        let mut s = crate::config::RingSection::default();
        assert!(!Membership::from_config(&s, listen).unwrap().sharded());
        s.members = vec!["a".into(), "b".into()];
        let e = Membership::from_config(&s, listen).err().unwrap();
        assert!(
            e.contains("scrape.ring.members") && e.contains("127.0.0.1:9090"),
            "{e}"
        );
        s.member = "a".into();
        let m = Membership::from_config(&s, listen).unwrap();
        assert!(m.sharded() && m.me() == "a");
        s.etcd_endpoints = vec!["127.0.0.1:2379".into()];
        let e = Membership::from_config(&s, listen).err().unwrap();
        assert!(e.contains("not both"), "{e}");
    }

    #[test]
    fn ownership_follows_since() {
        let m = Membership::new("b".into(), String::new(), 64, Source::Static(vec![]));
        m.set_view(vec![
            Member {
                id: "a".into(),
                url: String::new(),
                since: 0,
            },
            Member {
                id: "b".into(),
                url: String::new(),
                since: 1_000,
            },
        ]);
        // Before b's `since` everything is a's; after it, b owns about half.
        let before = keys().take(1000).filter(|k| m.owns(*k, 999)).count();
        let after = keys().take(1000).filter(|k| m.owns(*k, 1_000)).count();
        assert_eq!(before, 0);
        assert!((300..700).contains(&after), "{after}");
    }
}

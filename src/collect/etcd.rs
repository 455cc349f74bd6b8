//! A small etcd v3 client over etcd's JSON gateway (`/v3/kv/*`, `/v3/lease/*`, `/v3/watch`),
//! the calls discovery and ring membership need: a prefix range, put with a lease, lease
//! grant / keep-alive / revoke, and a prefix watch. Blocking (`ureq`): callers run it on
//! `spawn_blocking` or a thread of their own. Endpoints are tried in turn until one answers.

use std::io::BufRead;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

/// An etcd call failed on every endpoint.
#[derive(Debug, thiserror::Error)]
#[error("etcd ({endpoints}): {reason}")]
pub struct EtcdError {
    pub endpoints: String,
    pub reason: String,
}

/// A key and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Put(Kv),
    /// Deleted, or its lease expired.
    Delete(String),
}

/// A client of one etcd cluster.
pub struct Etcd {
    agent: ureq::Agent,
    endpoints: Vec<String>,
    next: AtomicUsize,
}

/// The end of a prefix range: the prefix with its last byte incremented.
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn num(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn kv(v: &Value) -> Option<Kv> {
    let key = B64.decode(v.get("key")?.as_str()?).ok()?;
    let value = match v.get("value").and_then(Value::as_str) {
        Some(s) => B64.decode(s).ok()?,
        None => Vec::new(),
    };
    Some(Kv {
        key: String::from_utf8_lossy(&key).into_owned(),
        value,
    })
}

impl Etcd {
    /// `endpoints`: `http://host:port` (a bare `host:port` gets `http://`).
    pub fn new(endpoints: &[String]) -> Etcd {
        Etcd {
            agent: ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build(),
            ),
            endpoints: endpoints
                .iter()
                .map(|e| {
                    let e = e.trim_end_matches('/');
                    if e.contains("://") {
                        e.to_string()
                    } else {
                        format!("http://{e}")
                    }
                })
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    fn error(&self, reason: String) -> EtcdError {
        EtcdError {
            endpoints: self.endpoints.join(","),
            reason,
        }
    }

    /// POSTs `body` to `path` on the endpoints in turn; the first answer wins.
    fn call(&self, path: &str, body: &Value, timeout: Duration) -> Result<Value, EtcdError> {
        let n = self.endpoints.len().max(1);
        let mut last = String::from("no endpoints configured");
        for _ in 0..n {
            let i = self.next.load(Ordering::Relaxed) % n;
            let Some(ep) = self.endpoints.get(i) else {
                break;
            };
            let r = self
                .agent
                .post(&format!("{ep}{path}"))
                .config()
                .timeout_global(Some(timeout))
                .build()
                .send(body.to_string());
            match r {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.body_mut().read_to_string().unwrap_or_default();
                    if status == 200 {
                        return serde_json::from_str(&text)
                            .map_err(|e| self.error(format!("{path}: not JSON: {e}")));
                    }
                    // An answer from etcd (bad request, lease not found) is final.
                    return Err(self.error(format!("{path}: HTTP {status}: {}", text.trim())));
                }
                Err(e) => {
                    last = format!("{ep}{path}: {e}");
                    self.next.store(i + 1, Ordering::Relaxed);
                }
            }
        }
        Err(self.error(last))
    }

    /// Every key under `prefix` with its value, and the store's revision.
    pub fn range_prefix(&self, prefix: &str) -> Result<(i64, Vec<Kv>), EtcdError> {
        let v = self.call(
            "/v3/kv/range",
            &json!({"key": B64.encode(prefix), "range_end": B64.encode(range_end(prefix))}),
            Duration::from_secs(10),
        )?;
        let rev = num(&v["header"]["revision"]);
        let kvs = v["kvs"]
            .as_array()
            .map(|a| a.iter().filter_map(kv).collect())
            .unwrap_or_default();
        Ok((rev, kvs))
    }

    /// A lease of `ttl_s` seconds (etcd may raise it to its minimum); its id.
    pub fn grant(&self, ttl_s: i64) -> Result<i64, EtcdError> {
        let v = self.call(
            "/v3/lease/grant",
            &json!({"TTL": ttl_s.to_string()}),
            Duration::from_secs(10),
        )?;
        match num(&v["ID"]) {
            0 => Err(self.error(format!("lease grant: no ID in {v}"))),
            id => Ok(id),
        }
    }

    /// Renews a lease; its remaining TTL in seconds, 0 when it has expired.
    pub fn keepalive(&self, lease: i64) -> Result<i64, EtcdError> {
        let v = self.call(
            "/v3/lease/keepalive",
            &json!({"ID": lease.to_string()}),
            Duration::from_secs(5),
        )?;
        Ok(num(&v["result"]["TTL"]))
    }

    /// Ends a lease now: its keys are deleted.
    pub fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        self.call(
            "/v3/lease/revoke",
            &json!({"ID": lease.to_string()}),
            Duration::from_secs(5),
        )
        .map(|_| ())
    }

    /// Sets `key` to `value`, attached to `lease` (0: none).
    pub fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<(), EtcdError> {
        let mut body = json!({"key": B64.encode(key), "value": B64.encode(value)});
        if lease != 0 {
            body["lease"] = json!(lease.to_string());
        }
        self.call("/v3/kv/put", &body, Duration::from_secs(10))
            .map(|_| ())
    }

    /// Watches `prefix` from revision `from` for at most `for_at_most`, calling `on` for each
    /// change; returns the last revision seen (the next watch starts after it). The stream
    /// ending or the time running out is not an error.
    pub fn watch_prefix(
        &self,
        prefix: &str,
        from: i64,
        for_at_most: Duration,
        mut on: impl FnMut(Event),
    ) -> Result<i64, EtcdError> {
        let n = self.endpoints.len().max(1);
        let i = self.next.load(Ordering::Relaxed) % n;
        let ep = self
            .endpoints
            .get(i)
            .ok_or_else(|| self.error("no endpoints configured".into()))?;
        let body = json!({"create_request": {
            "key": B64.encode(prefix),
            "range_end": B64.encode(range_end(prefix)),
            "start_revision": from.to_string(),
        }});
        let resp = self
            .agent
            .post(&format!("{ep}/v3/watch"))
            .config()
            .timeout_global(Some(for_at_most))
            .build()
            .send(body.to_string());
        let mut resp = match resp {
            Ok(r) if r.status() == 200 => r,
            Ok(r) => {
                return Err(self.error(format!("watch: HTTP {}", r.status().as_u16())));
            }
            Err(e) => {
                self.next.store(i + 1, Ordering::Relaxed);
                return Err(self.error(format!("{ep}/v3/watch: {e}")));
            }
        };
        let mut last = from - 1;
        let reader = std::io::BufReader::new(resp.body_mut().as_reader());
        for line in reader.lines() {
            // A timeout or a closed stream ends this watch; the caller starts the next.
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let r = &v["result"];
            if r.get("canceled").and_then(Value::as_bool) == Some(true) {
                // Compacted past `from`: the caller lists again.
                return Err(self.error(format!(
                    "watch canceled: {}",
                    r["cancel_reason"].as_str().unwrap_or("compacted")
                )));
            }
            for e in r["events"].as_array().into_iter().flatten() {
                let Some(k) = kv(&e["kv"]) else { continue };
                last = last.max(num(&e["kv"]["mod_revision"]));
                if e["type"].as_str() == Some("DELETE") {
                    on(Event::Delete(k.key));
                } else {
                    on(Event::Put(k));
                }
            }
        }
        Ok(last)
    }
}

/// Follows every key under `prefix` until `stop`: lists them, then watches for changes (and
/// lists again whenever a watch ends or fails), calling `on_change` with the whole set after
/// the list and after each change; failures go to `on_error` and are retried every second.
pub fn follow_prefix(
    etcd: &Etcd,
    prefix: &str,
    stop: &std::sync::atomic::AtomicBool,
    mut on_change: impl FnMut(&std::collections::BTreeMap<String, Vec<u8>>),
    mut on_error: impl FnMut(&EtcdError),
) {
    let pause = |d: Duration| {
        let until = std::time::Instant::now() + d;
        while std::time::Instant::now() < until && !stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    while !stop.load(Ordering::Acquire) {
        let (rev, kvs) = match etcd.range_prefix(prefix) {
            Ok(x) => x,
            Err(e) => {
                on_error(&e);
                pause(Duration::from_secs(1));
                continue;
            }
        };
        let mut keys: std::collections::BTreeMap<String, Vec<u8>> =
            kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
        on_change(&keys);
        let mut from = rev + 1;
        while !stop.load(Ordering::Acquire) {
            // Short watches, so that `stop` is noticed and a silent stream is replaced.
            let r = etcd.watch_prefix(prefix, from, Duration::from_secs(5), |e| {
                match e {
                    Event::Put(kv) => {
                        keys.insert(kv.key, kv.value);
                    }
                    Event::Delete(k) => {
                        keys.remove(&k);
                    }
                }
                on_change(&keys);
            });
            match r {
                Ok(last) => from = from.max(last + 1),
                Err(e) => {
                    on_error(&e);
                    pause(Duration::from_millis(500));
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_range_ends() {
        assert_eq!(range_end("/svc/"), b"/svc0".to_vec());
        assert_eq!(range_end("a\u{7f}"), b"a\x80".to_vec());
        assert_eq!(range_end(""), vec![0]);
    }

    #[test]
    fn gateway_values() {
        let v: Value = serde_json::from_str(
            r#"{"key":"L3N2Yy9h","create_revision":"2","mod_revision":"2","value":"eyJ0YXJnZXRzIjpbIng6MSJdfQ=="}"#,
        )
        .unwrap();
        let k = kv(&v).unwrap();
        assert_eq!(k.key, "/svc/a");
        assert_eq!(k.value, br#"{"targets":["x:1"]}"#.to_vec());
        assert_eq!(num(&v["mod_revision"]), 2);
    }
}

//! The cluster's fan-out storage: a query on one worker process reads its own hot index and
//! every peer's shard (`POST /internal/v1/select`), with the wire codec of matchers and series.
//! A peer that does not answer fails the query, or, for rules, skips the tick
//! ([`ClusterStorage`]). Older than the hot indexes keep, a query reads the cold tiers of the
//! first job that opened its `[tiers] url` in this process ([`cluster_query`]).

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::store::hot::index::{MatchOp, Matcher};
use crate::store::hot::HotIndex;
use crate::store::{Series, Storage};

/// Header marking a request one process forwards to another: answer from the local shard.
pub const LOCAL_HEADER: &str = "x-tidemark-local";

/// The bearer token this process sends to its peers (the first `admin` token of its
/// `[auth] tokens`; set once at start, unset without tokens). Process-wide because one
/// process is one cluster member.
pub static PEER_TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// `r` with the peer token, when there is one.
pub fn to_peer<B>(r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
    match PEER_TOKEN.get() {
        Some(t) => r.header("authorization", format!("Bearer {t}")),
        None => r,
    }
}

/// Matchers on the wire: `(name, op, value)` with op `=`, `!=`, `=~`, `!~` (regexes anchored).
#[derive(Serialize, Deserialize)]
pub struct SelectRequest {
    pub matchers: Vec<(String, String, String)>,
    pub start: i64,
    pub end: i64,
}

pub fn to_wire(ms: &[Matcher]) -> Vec<(String, String, String)> {
    ms.iter()
        .map(|m| {
            let (op, v) = match &m.op {
                MatchOp::Eq(v) => ("=", v.clone()),
                MatchOp::Ne(v) => ("!=", v.clone()),
                MatchOp::Re(r) => ("=~", r.as_str().to_string()),
                MatchOp::Nre(r) => ("!~", r.as_str().to_string()),
            };
            (m.name.clone(), op.to_string(), v)
        })
        .collect()
}

pub fn from_wire(ms: &[(String, String, String)]) -> Result<Vec<Matcher>, String> {
    ms.iter()
        .map(|(n, op, v)| {
            let op = match op.as_str() {
                "=" => MatchOp::Eq(v.clone()),
                "!=" => MatchOp::Ne(v.clone()),
                "=~" => MatchOp::Re(regex::Regex::new(v).map_err(|e| e.to_string())?),
                "!~" => MatchOp::Nre(regex::Regex::new(v).map_err(|e| e.to_string())?),
                other => return Err(format!("unknown matcher op {other:?}")),
            };
            Ok(Matcher {
                name: n.clone(),
                op,
            })
        })
        .collect()
}

/// `u32 n_series`, then per series `u32 len, canonical labels, u32 n, (i64 ts, u64 bits)*n`.
pub fn encode_series(series: &[Series]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut canon = Vec::new();
    out.extend_from_slice(&(series.len() as u32).to_le_bytes());
    for s in series {
        crate::model::canonical_encode(s.labels.iter(), &mut canon);
        out.extend_from_slice(&(canon.len() as u32).to_le_bytes());
        out.extend_from_slice(&canon);
        out.extend_from_slice(&(s.samples.len() as u32).to_le_bytes());
        for (t, v) in &s.samples {
            out.extend_from_slice(&t.to_le_bytes());
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
    }
    out
}

/// Inverse of [`encode_series`].
pub fn decode_series(mut b: &[u8]) -> Result<Vec<Series>, String> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if b.len() < n {
            return Err("truncated series response".into());
        }
        let (x, rest) = b.split_at(n);
        *b = rest;
        Ok(x)
    }
    let u32_ = |b: &mut &[u8]| -> Result<usize, String> {
        Ok(u32::from_le_bytes(take(b, 4)?.try_into().expect("4")) as usize)
    };
    let n = u32_(&mut b)?;
    let mut out = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let len = u32_(&mut b)?;
        let labels = crate::model::decode_canonical(take(&mut b, len)?);
        let m = u32_(&mut b)?;
        let body = take(&mut b, m.checked_mul(16).ok_or("overflow")?)?;
        let samples = body
            .chunks_exact(16)
            .map(|c| {
                (
                    i64::from_le_bytes(c[0..8].try_into().expect("8")),
                    f64::from_bits(u64::from_le_bytes(c[8..16].try_into().expect("8"))),
                )
            })
            .collect();
        out.push(Series { labels, samples });
    }
    Ok(out)
}

/// The local hot index plus every peer's shard. A peer that does not answer fails the query
/// (a partial answer would be silently wrong).
pub struct FanoutStorage<'a> {
    pub local: &'a HotIndex,
    pub peers: &'a [String],
    pub errors: Mutex<Vec<String>>,
}

impl Storage for FanoutStorage<'_> {
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<Series> {
        let req = serde_json::to_vec(&SelectRequest {
            matchers: to_wire(matchers),
            start,
            end,
        })
        .expect("serializable");
        let mut out = self.local.select(matchers, start, end);
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .peers
                .iter()
                .map(|p| {
                    let req = &req;
                    s.spawn(move || -> Result<Vec<Series>, String> {
                        let url = format!("{p}/internal/v1/select");
                        let mut resp = to_peer(ureq::post(&url))
                            .header("content-type", "application/json")
                            .send(&req[..])
                            .map_err(|e| format!("{url}: {e}"))?;
                        let body = resp
                            .body_mut()
                            .with_config()
                            .limit(1 << 32)
                            .read_to_vec()
                            .map_err(|e| format!("{url}: {e}"))?;
                        decode_series(&body)
                    })
                })
                .collect();
            for h in handles {
                match h.join() {
                    Ok(Ok(v)) => out.extend(v),
                    Ok(Err(e)) => self
                        .errors
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(e),
                    Err(_) => {}
                }
            }
        });
        // A series lives in one shard, but merge defensively (same labels: union by time).
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        let mut merged: Vec<Series> = Vec::with_capacity(out.len());
        for s in out {
            match merged.last_mut() {
                Some(last) if last.labels == s.labels => {
                    last.samples.extend(s.samples);
                    last.samples.sort_by_key(|p| p.0);
                    last.samples.dedup_by_key(|p| p.0);
                }
                _ => merged.push(s),
            }
        }
        merged
    }
}

/// [`FanoutStorage`] that owns its parts, for the rule evaluator on worker 0. A peer that does
/// not answer is reported by [`Storage::take_failure`], so rules skip the tick instead of
/// resolving alerts on a partial answer.
pub struct ClusterStorage {
    pub hot: Arc<HotIndex>,
    pub peers: Vec<String>,
    pub errors: Mutex<Vec<String>>,
}

impl Storage for ClusterStorage {
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<Series> {
        let st = FanoutStorage {
            local: &self.hot,
            peers: &self.peers,
            errors: Mutex::new(Vec::new()),
        };
        let out = st.select(matchers, start, end);
        let errs = st.errors.into_inner().unwrap_or_else(|e| e.into_inner());
        if !errs.is_empty() {
            self.errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(errs);
        }
        out
    }

    fn take_failure(&self) -> Option<String> {
        let mut e = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if e.is_empty() {
            return None;
        }
        e.dedup();
        let msg = format!("a worker process did not answer: {}", e.join("; "));
        e.clear();
        Some(msg)
    }
}

/// Runs a PromQL query over the whole cluster.
pub fn cluster_query(
    q: &super::api::QueryState,
    e: &super::api::Eval<'_>,
) -> Result<super::QueryValue, super::QueryError> {
    let st = FanoutStorage {
        local: &q.hot,
        peers: &q.peers,
        errors: Mutex::new(Vec::new()),
    };
    // Older than the hot indexes keep: the cold tiers the jobs write (one copy for the whole
    // cluster, read from here), as `tidemark up` reads them.
    let v = super::api::evaluate_on(q, &st, e)?;
    let errs = st.errors.into_inner().unwrap_or_else(|e| e.into_inner());
    if !errs.is_empty() {
        return Err(super::QueryError::Execution(format!(
            "a worker process did not answer: {}",
            errs.join("; ")
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Labels;

    #[test]
    fn series_codec_round_trips_stale_markers() {
        let s = vec![Series {
            labels: Labels::from_pairs([("__name__", "up"), ("job", "x")]),
            samples: vec![(1, 1.0), (2, f64::from_bits(crate::model::STALE_NAN_BITS))],
        }];
        let d = decode_series(&encode_series(&s)).unwrap();
        assert_eq!(d[0].labels, s[0].labels);
        assert_eq!(d[0].samples[1].1.to_bits(), crate::model::STALE_NAN_BITS);
        assert!(decode_series(&encode_series(&s)[..7]).is_err());
    }
}

//! The import's target: a running `tidemark up` (its `/api/v1/status/tsdb` for what goes
//! where, its remote-write endpoint for recent samples).
//!
//! Recent samples are pushed in time order, so that the job's watermark moves with them and
//! every window is complete before it closes (the job takes a request's samples at the
//! watermark it had before them). A sample pushed twice (a resumed
//! import) changes nothing: the hot index keeps one sample per series and time, and a window
//! keeps the last of equal times.

use std::time::Duration;

use serde::Deserialize;

use super::source::Hour;
use super::ImportError;
use crate::transport::remote_proto::{self, Label, Sample, TimeSeries, WriteRequest};

/// What the target says about itself (`/api/v1/status/tsdb`, `data.tidemark`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    pub newest: Option<i64>,
    pub hot_retention_ms: i64,
    pub allowed_lateness_ms: i64,
    pub cold_url: Option<String>,
    pub raw_retention_ms: i64,
    pub minute_retention_ms: i64,
    pub hour_retention_ms: i64,
}

/// A `tidemark up` to import into.
pub struct Target {
    pub url: String,
    token: Option<String>,
    agent: ureq::Agent,
    /// Samples per remote-write request.
    batch: usize,
}

/// What pushing an hour did.
#[derive(Clone, Debug, Default)]
pub struct Pushed {
    pub samples: u64,
    pub requests: u64,
    pub rejected: u64,
    /// The target's first rejection reasons (as it wrote them).
    pub errors: Vec<String>,
}

impl Target {
    pub fn new(url: &str, token: Option<String>, batch: usize) -> Target {
        Target {
            url: url.trim_end_matches('/').to_string(),
            token,
            agent: ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(120)))
                    .build(),
            ),
            batch: batch.max(1),
        }
    }

    fn auth(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    /// The target's status; an error names the URL and what to check.
    pub fn status(&self) -> Result<TargetStatus, ImportError> {
        let url = format!("{}/api/v1/status/tsdb", self.url);
        let failed = |reason: String| ImportError::Target {
            url: url.clone(),
            reason,
        };
        let mut req = self.agent.get(&url);
        if let Some(a) = self.auth() {
            req = req.header("Authorization", a);
        }
        let mut resp = req.call().map_err(|e| {
            failed(format!(
                "{e}; is `tidemark up` running there? (--url names it)"
            ))
        })?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| failed(e.to_string()))?;
        if status != 200 {
            return Err(failed(format!(
                "HTTP {status}: {}{}",
                body.trim(),
                if status == 401 || status == 403 {
                    " (give a token with the write role: --token)"
                } else {
                    ""
                }
            )));
        }
        #[derive(Deserialize)]
        struct Outer {
            data: Data,
        }
        #[derive(Deserialize)]
        struct Data {
            tidemark: Option<TargetStatus>,
        }
        let o: Outer = serde_json::from_str(&body)
            .map_err(|e| failed(format!("unexpected answer ({e}); is this a tidemark up?")))?;
        o.data.tidemark.ok_or_else(|| {
            failed("the answer has no `tidemark` section; import into `tidemark up` (a worker cluster takes Kafka, see `tidemark ingest`)".into())
        })
    }

    /// Pushes the samples of `hour` with time in `[from, hour end)`, in time order.
    pub fn push_hour(&self, hour: &Hour, from: i64) -> Result<Pushed, ImportError> {
        let mut out = Pushed::default();
        let labels: Vec<Vec<Label>> = hour
            .series
            .iter()
            .map(|l| {
                l.iter()
                    .map(|(n, v)| Label {
                        name: n.to_string(),
                        value: v.to_string(),
                    })
                    .collect()
            })
            .collect();
        // Requests in time order: the job takes a request's samples at the watermark it had
        // before it, so no sample of a later request is older than an earlier one's by more
        // than the out-of-orderness, and no window closes before its samples are in.
        let samples: Vec<&(u32, i64, f64)> = hour
            .samples
            .iter()
            .filter(|s| s.1 >= from && s.1 < hour.end())
            .collect();
        for part in samples.chunks(self.batch) {
            let mut by_series: std::collections::BTreeMap<u32, Vec<Sample>> = Default::default();
            for s in part {
                by_series.entry(s.0).or_default().push(Sample {
                    value: s.2,
                    timestamp: s.1,
                });
            }
            let req = WriteRequest {
                timeseries: by_series
                    .into_iter()
                    .map(|(k, samples)| TimeSeries {
                        labels: labels[k as usize].clone(),
                        samples,
                    })
                    .collect(),
                metadata: Vec::new(),
            };
            self.send(&remote_proto::encode(&req), part.len() as u64, &mut out)?;
        }
        Ok(out)
    }

    /// Sends one remote-write request, retrying while the target is unreachable or busy (a
    /// restart, a full disk being cleared) for about 10 minutes.
    fn send(&self, body: &[u8], n: u64, out: &mut Pushed) -> Result<(), ImportError> {
        let url = format!("{}/api/v1/write", self.url);
        let mut delay = Duration::from_millis(200);
        let mut waited = Duration::ZERO;
        loop {
            let mut req = self
                .agent
                .post(&url)
                .header("Content-Type", "application/x-protobuf")
                .header("Content-Encoding", "snappy")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0");
            if let Some(a) = self.auth() {
                req = req.header("Authorization", a);
            }
            let (retry, reason) = match req.send(body) {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.body_mut().read_to_string().unwrap_or_default();
                    match status {
                        200..=299 => {
                            out.samples += n;
                            out.requests += 1;
                            return Ok(());
                        }
                        400 => {
                            // Some samples refused (too old, limits): the target said which.
                            let accepted = accepted_of(&text).unwrap_or(0).min(n);
                            out.samples += accepted;
                            out.rejected += n - accepted;
                            out.requests += 1;
                            if out.errors.len() < super::source::SHOWN_ERRORS {
                                out.errors.push(text.trim().to_string());
                            }
                            return Ok(());
                        }
                        401 | 403 => {
                            return Err(ImportError::Target {
                                url,
                                reason: format!(
                                    "HTTP {status}: {} (give a token with the write role: --token)",
                                    text.trim()
                                ),
                            })
                        }
                        429 | 500..=599 => (true, format!("HTTP {status}: {}", text.trim())),
                        _ => (false, format!("HTTP {status}: {}", text.trim())),
                    }
                }
                Err(e) => (true, e.to_string()),
            };
            if !retry || waited > Duration::from_secs(600) {
                return Err(ImportError::Target { url, reason });
            }
            tracing::warn!(
                target: "tidemark::import",
                url = url.as_str(),
                retry_in_ms = delay.as_millis() as u64,
                "push failed, retrying: {reason}"
            );
            std::thread::sleep(delay);
            waited += delay;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}

/// `N` of a partial-write answer: "partial write: N samples accepted, M rejected: ...".
fn accepted_of(text: &str) -> Option<u64> {
    let rest = text.split("partial write: ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_accepted_count_of_a_partial_write() {
        let t = r#"{"error":"partial write: 12 samples accepted, 3 rejected: line 1: ..."}"#;
        assert_eq!(accepted_of(t), Some(12));
        assert_eq!(accepted_of("bad request"), None);
    }
}

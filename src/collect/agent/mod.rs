//! The host agent (`tidemark agent`): this machine's metrics with node_exporter's names
//! ([`host`]), pushed by remote write through a bounded memory-then-disk buffer ([`buffer`])
//! and served on the agent's own `/metrics` for pull. The process around it (threads, the
//! HTTP listener) is [`crate::process::agent`].

pub mod buffer;
pub mod host;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ops::TextWriter;
use crate::transport::remote_proto::{
    self, Label, MetricMetadata, Sample, TimeSeries, WriteRequest,
};
use buffer::Batch;
use host::Family;

/// The agent's own counters (also pushed, as `tidemark_agent_*`).
#[derive(Debug, Default)]
pub struct AgentStats {
    pub collections: AtomicU64,
    pub collected_samples: AtomicU64,
    pub sent_samples: AtomicU64,
    pub sent_requests: AtomicU64,
    pub send_failures: AtomicU64,
    pub dropped_samples: AtomicU64,
    pub buffered_samples_memory: AtomicU64,
    pub buffered_samples_disk: AtomicU64,
    pub buffered_bytes_memory: AtomicU64,
    pub buffered_bytes_disk: AtomicU64,
}

impl AgentStats {
    /// The counters as families, for `/metrics` and the push.
    pub fn families(&self) -> Vec<Family> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let one = |name: &str, kind: &'static str, help: &'static str, v: f64| Family {
            name: name.to_string(),
            kind,
            help,
            samples: vec![(Vec::new(), v)],
        };
        let by_where = |name: &str, help: &'static str, mem: f64, disk: f64| Family {
            name: name.to_string(),
            kind: "gauge",
            help,
            samples: vec![
                (vec![("where".into(), "memory".into())], mem),
                (vec![("where".into(), "disk".into())], disk),
            ],
        };
        vec![
            one(
                "tidemark_agent_collections_total",
                "counter",
                "Collections of this machine's metrics.",
                g(&self.collections),
            ),
            one(
                "tidemark_agent_samples_collected_total",
                "counter",
                "Samples collected (and queued for the push).",
                g(&self.collected_samples),
            ),
            one(
                "tidemark_agent_samples_sent_total",
                "counter",
                "Samples the push target acknowledged.",
                g(&self.sent_samples),
            ),
            one(
                "tidemark_agent_send_failures_total",
                "counter",
                "Push requests that failed (retried in order).",
                g(&self.send_failures),
            ),
            one(
                "tidemark_agent_dropped_samples_total",
                "counter",
                "Samples dropped: the buffer's memory and disk bounds were full, or the target refused them for good (4xx).",
                g(&self.dropped_samples),
            ),
            by_where(
                "tidemark_agent_buffered_samples",
                "Samples waiting to be sent.",
                g(&self.buffered_samples_memory),
                g(&self.buffered_samples_disk),
            ),
            by_where(
                "tidemark_agent_buffered_bytes",
                "Encoded bytes waiting to be sent.",
                g(&self.buffered_bytes_memory),
                g(&self.buffered_bytes_disk),
            ),
        ]
    }
}

/// The exposition text of `families` (as node_exporter serves it: no job or instance).
pub fn render(families: &[Family]) -> String {
    let mut w = TextWriter(String::with_capacity(64 << 10));
    for f in families {
        let texts: Vec<String> = f
            .samples
            .iter()
            .map(|(l, _)| {
                let pairs: Vec<(&str, &str)> =
                    l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                crate::ops::labels(&pairs)
            })
            .collect();
        let samples: Vec<(&str, f64)> = texts
            .iter()
            .zip(&f.samples)
            .map(|(t, (_, v))| (t.as_str(), *v))
            .collect();
        w.family(&f.name, f.kind, f.help, &samples);
    }
    w.0
}

/// One collection as a remote write request: every sample at `ts` with `extra` labels (job,
/// instance, ...) added, and the families' metadata when `metadata` is set.
pub fn encode(families: &[Family], extra: &[(String, String)], ts: i64, metadata: bool) -> Batch {
    let mut series = Vec::new();
    let mut n = 0u64;
    for f in families {
        for (labels, v) in &f.samples {
            let mut l: Vec<Label> = Vec::with_capacity(labels.len() + extra.len() + 1);
            l.push(Label {
                name: "__name__".into(),
                value: f.name.clone(),
            });
            for (k, val) in labels.iter().chain(extra.iter()) {
                if !l.iter().any(|x| x.name == *k) {
                    l.push(Label {
                        name: k.clone(),
                        value: val.clone(),
                    });
                }
            }
            l.sort_by(|a, b| a.name.cmp(&b.name));
            series.push(TimeSeries {
                labels: l,
                samples: vec![Sample {
                    value: *v,
                    timestamp: ts,
                }],
            });
            n += 1;
        }
    }
    let metadata = if metadata {
        families
            .iter()
            .map(|f| MetricMetadata {
                r#type: match f.kind {
                    "counter" => 1,
                    "gauge" => 2,
                    _ => 0,
                },
                metric_family_name: f.name.clone(),
                help: f.help.to_string(),
                unit: String::new(),
            })
            .collect()
    } else {
        Vec::new()
    };
    Batch {
        body: remote_proto::encode(&WriteRequest {
            timeseries: series,
            metadata,
        }),
        samples: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_with_extra_labels_and_renders() {
        let fams = host::loadavg("0.5 0.25 0.125 1/2 3");
        let b = encode(
            &fams,
            &[
                ("instance".into(), "h1".into()),
                ("job".into(), "node".into()),
            ],
            1_000,
            true,
        );
        assert_eq!(b.samples, 3);
        let limits = crate::model::Limits::default();
        let mut bb = crate::ingest::BatchBuilder::new(&limits);
        let meta = crate::ingest::remote_write::parse(&b.body, 1 << 20, &mut bb).unwrap();
        let (batch, errs, _) = bb.finish();
        assert!(errs.is_empty());
        assert_eq!(
            batch.labels(0).to_string(),
            "node_load1{instance=\"h1\", job=\"node\"}"
        );
        assert_eq!(meta.len(), 3);
        let text = render(&fams);
        assert!(
            text.contains("# TYPE node_load1 gauge\nnode_load1 0.5\n"),
            "{text}"
        );
    }
}

//! Kafka transport: the producer of `tidemark ingest`.
//!
//! A push's accepted samples are grouped by key (the metric name, or with
//! `partition_key = "series"` the partition their series id maps to: `id % partitions`, the
//! partition count read from the topic's metadata and refreshed every 30 s) and each group
//! becomes one message on the `metrics` topic, its
//! value a batch of Influx line protocol (what Telegraf's Kafka output writes; nanosecond
//! timestamps) or a snappy-compressed remote-write `WriteRequest` (`format = "remote_write"`,
//! which also keeps staleness markers bit-exact). The push is acknowledged only once every
//! message is acknowledged by all in-sync replicas (idempotent producer, `acks=all`).
//!
//! Workarounds for the tansu broker used in tests (DESIGN.md section 10) are configuration
//! only: `batch.num.messages = 1` and `linger.ms = 0`, so every record batch holds one record.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::remote_proto::{self, Label, Sample, TimeSeries, WriteRequest};
use super::sink::SinkUnavailable;
use crate::config::{KafkaConfig, KafkaFormat, PartitionKey};
use crate::model::WriteBatch;
use crate::model::METRIC_NAME;

/// Kafka errors at start-up.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the Kafka producer for {brokers}: {source} (check [kafka] brokers and compression in tidemark.toml)")]
pub struct KafkaSetupError {
    brokers: String,
    source: rdkafka::error::KafkaError,
}

/// The producing side of `tidemark ingest`.
pub struct KafkaSink {
    producer: FutureProducer,
    cfg: KafkaConfig,
    /// The topic's partition count and when it was read (`partition_key = "series"`).
    partitions: Mutex<Option<(u32, Instant)>>,
}

/// How often the series partitioner re-reads the topic's partition count.
const PARTITIONS_REFRESH: Duration = Duration::from_secs(30);

/// One message: its key, the partition when the producer picks it, and its value.
pub struct Message {
    pub key: Vec<u8>,
    pub partition: Option<i32>,
    pub value: Vec<u8>,
}

/// The sorted `(name, value)` pairs of a canonical label encoding.
pub fn canonical_pairs(bytes: &[u8]) -> impl Iterator<Item = (&str, &str)> {
    bytes
        .split(|&b| b == 0xfe)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut it = p.splitn(2, |&b| b == 0xff);
            let k = std::str::from_utf8(it.next().unwrap_or_default()).unwrap_or_default();
            let v = std::str::from_utf8(it.next().unwrap_or_default()).unwrap_or_default();
            (k, v)
        })
}

fn escape(out: &mut Vec<u8>, s: &str, specials: &[u8]) {
    for b in s.bytes() {
        if specials.contains(&b) || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// Writes one sample as a line of Influx line protocol: measurement = metric name, tags =
/// labels, field `value`, nanosecond timestamp.
pub fn write_line(out: &mut Vec<u8>, canonical: &[u8], ts_ms: i64, value: f64) {
    let pairs: Vec<(&str, &str)> = canonical_pairs(canonical).collect();
    let name = pairs
        .iter()
        .find(|p| p.0 == METRIC_NAME)
        .map_or("", |p| p.1);
    escape(out, name, b", ");
    for (k, v) in pairs.iter().filter(|p| p.0 != METRIC_NAME) {
        out.push(b',');
        escape(out, k, b", =");
        out.push(b'=');
        escape(out, v, b", =");
    }
    let _ = if value.is_nan() {
        write!(out, " value=NaN")
    } else if value.is_infinite() {
        write!(out, " value={}", if value > 0.0 { "+Inf" } else { "-Inf" })
    } else {
        write!(out, " value={value:?}")
    };
    let _ = writeln!(out, " {}", ts_ms.saturating_mul(1_000_000));
}

/// Largest |timestamp| in ms that a nanosecond line-protocol timestamp can carry (year 2262).
pub const MAX_NS_TS_MS: i64 = i64::MAX / 1_000_000;

impl KafkaSink {
    /// A producer for `cfg`; it connects lazily.
    pub fn new(cfg: &KafkaConfig) -> Result<Self, KafkaSetupError> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &cfg.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &cfg.compression)
            .set("batch.num.messages", "1")
            .set("linger.ms", "0")
            .set(
                "message.timeout.ms",
                cfg.produce_timeout.0.max(1).to_string(),
            )
            .create()
            .map_err(|source| KafkaSetupError {
                brokers: cfg.brokers.clone(),
                source,
            })?;
        Ok(KafkaSink {
            producer,
            cfg: cfg.clone(),
            partitions: Mutex::new(None),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &KafkaConfig {
        &self.cfg
    }

    /// The messages for a batch, grouped by the partition key; `partitions` is the topic's
    /// partition count (used by `partition_key = "series"` only).
    pub fn messages(&self, batch: &WriteBatch, partitions: u32) -> Vec<Message> {
        let mut groups: BTreeMap<(Vec<u8>, Option<i32>), Vec<usize>> = BTreeMap::new();
        for (i, s) in batch.samples.iter().enumerate() {
            let (id, _) = batch.series[s.series as usize];
            let key = match self.cfg.partition_key {
                PartitionKey::Metric => (
                    canonical_pairs(batch.canonical(s.series as usize))
                        .find(|p| p.0 == METRIC_NAME)
                        .map_or("", |p| p.1)
                        .as_bytes()
                        .to_vec(),
                    None,
                ),
                PartitionKey::Series => {
                    let p = (id % u64::from(partitions.max(1))) as i32;
                    (p.to_string().into_bytes(), Some(p))
                }
            };
            groups.entry(key).or_default().push(i);
        }
        groups
            .into_iter()
            .map(|((key, partition), idx)| {
                let value = match self.cfg.format {
                    KafkaFormat::LineProtocol => {
                        let mut v = Vec::with_capacity(idx.len() * 80);
                        for i in idx {
                            let s = batch.samples[i];
                            write_line(&mut v, batch.canonical(s.series as usize), s.ts, s.value);
                        }
                        v
                    }
                    KafkaFormat::RemoteWrite => {
                        let mut by_series: BTreeMap<u32, Vec<Sample>> = BTreeMap::new();
                        for i in idx {
                            let s = batch.samples[i];
                            by_series.entry(s.series).or_default().push(Sample {
                                value: s.value,
                                timestamp: s.ts,
                            });
                        }
                        let timeseries = by_series
                            .into_iter()
                            .map(|(si, samples)| TimeSeries {
                                labels: canonical_pairs(batch.canonical(si as usize))
                                    .map(|(k, v)| Label {
                                        name: k.to_string(),
                                        value: v.to_string(),
                                    })
                                    .collect(),
                                samples,
                            })
                            .collect();
                        remote_proto::encode(&WriteRequest {
                            timeseries,
                            metadata: Vec::new(),
                        })
                    }
                };
                Message {
                    key,
                    partition,
                    value,
                }
            })
            .collect()
    }

    /// Reads the topic's partition count from the brokers (a metadata request).
    async fn read_partitions(&self, timeout: Duration) -> Result<u32, String> {
        let producer = self.producer.clone();
        let topic = self.cfg.topic.clone();
        tokio::task::spawn_blocking(move || {
            let md = producer
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .map_err(|e| e.to_string())?;
            match md.topics().iter().find(|t| t.name() == topic) {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    Ok(t.partitions().len() as u32)
                }
                _ => Err(format!(
                    "topic {topic:?} has no partitions (create it first)"
                )),
            }
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
    }

    /// Readiness of `tidemark ingest`: the brokers answer a metadata request for the topic
    /// within `timeout` and it has partitions. The error says which brokers and why.
    pub async fn ready(&self, timeout: Duration) -> Result<u32, String> {
        self.read_partitions(timeout).await.map_err(|e| {
            format!(
                "the Kafka brokers at {} do not answer for topic {:?}: {e}",
                self.cfg.brokers, self.cfg.topic
            )
        })
    }

    /// The topic's partition count, read from the brokers at most every 30 s; the last known
    /// count is kept when a refresh fails.
    async fn partition_count(&self) -> Result<u32, SinkUnavailable> {
        let cached = *self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((n, at)) = cached {
            if at.elapsed() < PARTITIONS_REFRESH {
                return Ok(n);
            }
        }
        let timeout = Duration::from_millis(self.cfg.produce_timeout.0.max(1) as u64);
        let read = self.read_partitions(timeout).await;
        match (read, cached) {
            (Ok(n), _) => {
                *self.partitions.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((n, Instant::now()));
                Ok(n)
            }
            (Err(_), Some((n, _))) => Ok(n),
            (Err(e), None) => Err(SinkUnavailable(format!(
                "cannot read the partitions of Kafka topic {:?}: {e}",
                self.cfg.topic
            ))),
        }
    }

    /// Produces the batch and waits until every message is acknowledged.
    pub async fn commit(&self, batch: &WriteBatch) -> Result<(), SinkUnavailable> {
        let partitions = match self.cfg.partition_key {
            PartitionKey::Metric => 1,
            PartitionKey::Series => self.partition_count().await?,
        };
        let mut pending = Vec::new();
        for m in self.messages(batch, partitions) {
            let mut record = FutureRecord::to(&self.cfg.topic)
                .key(&m.key)
                .payload(&m.value);
            if let Some(p) = m.partition {
                record = record.partition(p);
            }
            match self.producer.send_result(record) {
                Ok(delivery) => pending.push(delivery),
                Err((e, _)) => {
                    return Err(SinkUnavailable(format!(
                        "Kafka did not take the message: {e}"
                    )))
                }
            }
        }
        for d in pending {
            match d.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    return Err(SinkUnavailable(format!(
                        "Kafka did not acknowledge the message: {e}"
                    )))
                }
                Err(_) => return Err(SinkUnavailable("the Kafka producer was shut down".into())),
            }
        }
        Ok(())
    }

    /// Waits up to `timeout` for queued messages (shutdown).
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{influx, BatchBuilder, SeriesBuf};
    use crate::model::Limits;

    #[test]
    fn line_protocol_messages_parse_back_to_the_same_samples() {
        let limits = Limits::default();
        let mut b = BatchBuilder::new(&limits);
        let mut buf = SeriesBuf::default();
        for (name, host, v) in [
            ("cpu", "a b", 0.25),
            ("cpu", "c,d", 1e21),
            ("mem", "x=y", -3.0),
            ("mem", "z", f64::INFINITY),
        ] {
            buf.clear();
            buf.push(METRIC_NAME.into(), name.into());
            buf.push("host".into(), host.into());
            b.add(&mut buf, 1_700_000_000_123, v, 1);
        }
        let (batch, _, _) = b.finish();
        let mut sink = KafkaSink {
            producer: ClientConfig::new().create().unwrap(),
            cfg: KafkaConfig::default(),
            partitions: Mutex::new(None),
        };
        let msgs = sink.messages(&batch, 1);
        assert_eq!(
            msgs.iter().map(|m| m.key.clone()).collect::<Vec<_>>(),
            vec![b"cpu".to_vec(), b"mem".to_vec()]
        );
        assert!(msgs.iter().all(|m| m.partition.is_none()));
        sink.cfg.partition_key = PartitionKey::Series;
        let by_series = sink.messages(&batch, 3);
        assert!(by_series.len() <= 3);
        for m in &by_series {
            let p = m.partition.expect("series keying picks the partition");
            assert_eq!(m.key, p.to_string().into_bytes());
        }
        let lines: usize = by_series
            .iter()
            .map(|m| {
                m.value
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count()
            })
            .sum();
        assert_eq!(lines, 4);
        let mut back = BatchBuilder::new(&limits);
        for m in &msgs {
            influx::parse(&m.value, influx::Precision::Ns, 0, &mut back);
        }
        let (got, errs, _) = back.finish();
        assert!(errs.is_empty(), "{errs:?}");
        let norm = |b: &WriteBatch| {
            let mut v: Vec<(String, i64, u64)> = b
                .samples
                .iter()
                .map(|s| {
                    (
                        b.labels(s.series as usize).to_string(),
                        s.ts,
                        s.value.to_bits(),
                    )
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(norm(&got), norm(&batch));
    }
}

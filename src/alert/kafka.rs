//! Alerting in cluster mode: alert events travel through the Kafka topic `alerts`.
//!
//! A cluster job with `[rules]` evaluates them on worker 0 (against the whole cluster's hot
//! data, see [`crate::query::fanout::ClusterStorage`]) and hands its alert events to a
//! [`KafkaAlertSink`]: one JSON message per event (`schemas/alert-event.schema.json`), key =
//! `alertname`, so the events of one rule stay in order on one partition. `send` returns only
//! once the brokers acknowledged every message (`acks=all`, idempotent producer); until then
//! the evaluator keeps the events and does not save its state, so a crash re-evaluates them.
//! Recording rules' samples go back to the job's own topic through a [`KafkaSeriesWriter`],
//! so they are stored, rolled up and tiered like scraped series.
//!
//! `tidemark notify` ([`crate::process::notify`]) consumes the topic and feeds a
//! [`Notifier`](crate::alert::notify::Notifier). It commits a message's offset to its consumer
//! group only after every notification that message caused has been delivered (or given up
//! under the delivery policy), or turned out unnecessary (deduplicated, silenced, inhibited):
//! [`Notifier::delivered_below`](crate::alert::notify::Notifier::delivered_below). A notify
//! process that dies, even with its disk, loses nothing: its successor re-reads from the
//! committed offsets, and the notification log deduplicates what was already sent when the
//! disk survived.
//! Several notify processes split the partitions statically (`--index I --peers N`, like the
//! timely workers), so an aggregation group sees all its alerts as long as the routes group by
//! `alertname` (the message key) or finer.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::eval::{AlertEvent, AlertSink, SeriesWriter};
use crate::config::KafkaConfig;
use crate::model::WriteBatch;
use crate::transport::kafka::KafkaSink;

/// The JSON schema every event on the topic validates against.
pub const ALERT_EVENT_SCHEMA: &str = include_str!("../../schemas/alert-event.schema.json");

/// Produces alert events to the `alerts` topic.
pub struct KafkaAlertSink {
    producer: FutureProducer,
    topic: String,
    brokers: String,
}

impl KafkaAlertSink {
    /// A producer for `topic` at `brokers`; `timeout` bounds how long one `send` waits for the
    /// brokers (librdkafka `message.timeout.ms`).
    pub fn new(brokers: &str, topic: &str, timeout: Duration) -> Result<Self, String> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // One record per batch: brokers that cannot fetch from the middle of a batch
            // (DESIGN.md 10) still resume exactly at a committed offset.
            .set("batch.num.messages", "1")
            .set("linger.ms", "0")
            .set("message.timeout.ms", timeout.as_millis().max(1).to_string())
            .create()
            .map_err(|e| format!("cannot create the Kafka producer for {brokers}: {e}"))?;
        Ok(KafkaAlertSink {
            producer,
            topic: topic.to_string(),
            brokers: brokers.to_string(),
        })
    }
}

/// The message key of an event: its `alertname`.
pub fn event_key(e: &AlertEvent) -> &str {
    e.labels.get("alertname").map_or("", String::as_str)
}

impl AlertSink for KafkaAlertSink {
    fn send(&self, events: &[AlertEvent]) -> Result<(), String> {
        let mut pending = Vec::with_capacity(events.len());
        for e in events {
            let payload = serde_json::to_vec(e).map_err(|e| e.to_string())?;
            let record = FutureRecord::to(&self.topic)
                .key(event_key(e))
                .payload(&payload);
            match self.producer.send_result(record) {
                Ok(d) => pending.push(d),
                Err((e, _)) => {
                    return Err(format!(
                        "Kafka ({}) did not take an event for topic {}: {e}",
                        self.brokers, self.topic
                    ))
                }
            }
        }
        futures::executor::block_on(async {
            for d in pending {
                match d.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => {
                        return Err(format!(
                            "Kafka ({}) did not acknowledge an event on topic {}: {e}",
                            self.brokers, self.topic
                        ))
                    }
                    Err(_) => return Err("the Kafka producer was shut down".to_string()),
                }
            }
            Ok(())
        })
    }
}

/// Writes recorded samples to a job's own topic.
pub struct KafkaSeriesWriter(pub KafkaSink);

impl SeriesWriter for KafkaSeriesWriter {
    fn write(&mut self, batch: WriteBatch) -> Result<(), String> {
        futures::executor::block_on(self.0.commit(&batch)).map_err(|e| e.to_string())
    }
}

impl KafkaSeriesWriter {
    pub fn new(cfg: &KafkaConfig) -> Result<Self, String> {
        KafkaSink::new(cfg)
            .map(KafkaSeriesWriter)
            .map_err(|e| e.to_string())
    }
}

/// Parses one message of the topic; errors say what is wrong and where.
pub fn parse_event(payload: &[u8]) -> Result<AlertEvent, String> {
    let v: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    let schema: serde_json::Value =
        serde_json::from_str(ALERT_EVENT_SCHEMA).expect("valid alert event schema");
    let violations = crate::jsonschema::validate(&schema, &v);
    if !violations.is_empty() {
        let list: Vec<String> = violations
            .iter()
            .map(|v| format!("{}: {}", v.path, v.message))
            .collect();
        return Err(format!(
            "not an alert event (schemas/alert-event.schema.json): {}",
            list.join("; ")
        ));
    }
    serde_json::from_value(v).map_err(|e| format!("not an alert event: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> AlertEvent {
        AlertEvent {
            labels: [("alertname", "HighCpu"), ("instance", "a:9100")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: [("summary".to_string(), "CPU at 97%".to_string())].into(),
            starts_at: 1_700_000_000_000,
            ends_at: 0,
            tick: 1_700_000_060_000,
            generator_url: "http://x/graph?g0.expr=up".into(),
        }
    }

    #[test]
    fn events_validate_against_the_schema_and_round_trip() {
        let e = event();
        let bytes = serde_json::to_vec(&e).unwrap();
        assert_eq!(parse_event(&bytes).unwrap(), e);
        assert_eq!(event_key(&e), "HighCpu");
    }

    #[test]
    fn malformed_events_say_what_is_wrong() {
        let err = parse_event(b"{not json").unwrap_err();
        assert!(err.starts_with("not JSON"), "{err}");
        let mut v = serde_json::to_value(event()).unwrap();
        v["labels"]["instance"] = serde_json::json!(3);
        v.as_object_mut().unwrap().remove("startsAt");
        v["endAt"] = serde_json::json!(1);
        let err = parse_event(v.to_string().as_bytes()).unwrap_err();
        assert!(err.contains("labels.instance"), "{err}");
        assert!(err.contains("startsAt: is required"), "{err}");
        assert!(
            err.contains("endAt: unknown key: did you mean `endsAt`?"),
            "{err}"
        );
        let mut v = serde_json::to_value(event()).unwrap();
        v["labels"].as_object_mut().unwrap().remove("alertname");
        let err = parse_event(v.to_string().as_bytes()).unwrap_err();
        assert!(err.contains("labels.alertname: is required"), "{err}");
    }
}

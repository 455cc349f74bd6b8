//! The consuming side of the Kafka transport: one consumer per timely worker, owning the
//! partitions `(p + topic_index) % peers == worker_index` of the job's topics.
//!
//! Auto-commit is off and partitions are assigned manually (no group rebalancing: timely
//! decides who owns what). Offsets are committed to the job's consumer group only when the
//! job says the data is durable ([`PartitionConsumer::commit`]). New partitions are found by
//! re-reading the topic metadata every few seconds. The brokers' high watermarks come from
//! librdkafka's statistics callback, so lag costs no extra round trips.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// A partition of one of the job's topics: `(topic index, partition)`.
pub type PartKey = (usize, i32);

/// The compact id the watermark tracker uses for a partition.
pub fn part_id(k: PartKey) -> u32 {
    ((k.0 as u32) << 24) | (k.1 as u32 & 0x00ff_ffff)
}

/// Consumer errors.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("cannot create a Kafka consumer for {brokers}: {source}")]
    Create {
        brokers: String,
        source: rdkafka::error::KafkaError,
    },
    #[error("topic {topic:?} does not exist on {brokers}: create it (e.g. kafka-topics --create --topic {topic}) or fix source.topics in the job spec")]
    MissingTopic { topic: String, brokers: String },
    #[error("Kafka request to {brokers} failed: {source}")]
    Kafka {
        brokers: String,
        source: rdkafka::error::KafkaError,
    },
}

/// Keeps the brokers' high watermarks from the statistics callback.
#[derive(Default)]
pub struct StatsContext {
    pub high: Mutex<HashMap<(String, i32), i64>>,
}

impl ClientContext for StatsContext {
    fn stats(&self, s: Statistics) {
        let mut h = self.high.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, t) in s.topics {
            for (p, ps) in t.partitions {
                if p >= 0 && ps.hi_offset >= 0 {
                    h.insert((topic.clone(), p), ps.hi_offset);
                }
            }
        }
    }
}
impl ConsumerContext for StatsContext {}

/// One message, copied out of librdkafka's buffer.
pub struct Msg {
    pub part: PartKey,
    pub offset: i64,
    pub payload: Vec<u8>,
}

/// Where a partition starts when it is first assigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    Earliest,
    Latest,
}

/// The partitions of `topic` (errors when the topic does not exist).
pub fn topic_partitions(brokers: &str, topic: &str) -> Result<usize, ConsumerError> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|source| ConsumerError::Create {
            brokers: brokers.into(),
            source,
        })?;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|source| ConsumerError::Kafka {
            brokers: brokers.into(),
            source,
        })?;
    match md.topics().iter().find(|t| t.name() == topic) {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(t.partitions().len()),
        _ => Err(ConsumerError::MissingTopic {
            topic: topic.into(),
            brokers: brokers.into(),
        }),
    }
}

/// A worker's consumer.
pub struct PartitionConsumer {
    consumer: BaseConsumer<StatsContext>,
    brokers: String,
    topics: Vec<String>,
    index: usize,
    peers: usize,
    start: Start,
    /// Owned partitions and the next offset to read (`None`: not read yet, start per policy
    /// or committed offset).
    positions: BTreeMap<PartKey, Option<i64>>,
    /// Starting offsets imposed by a replay; they win over committed offsets.
    overrides: BTreeMap<PartKey, i64>,
    last_discovery: Option<Instant>,
    pub discovery_interval: Duration,
}

impl PartitionConsumer {
    /// A consumer for `topics` in consumer group `group`, owning its share of partitions.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        brokers: &str,
        topics: &[String],
        group: &str,
        index: usize,
        peers: usize,
        start: Start,
        overrides: BTreeMap<PartKey, i64>,
        fetch_wait: Duration,
    ) -> Result<Self, ConsumerError> {
        let consumer: BaseConsumer<StatsContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("statistics.interval.ms", "1000")
            .set(
                "fetch.wait.max.ms",
                fetch_wait.as_millis().max(1).to_string(),
            )
            .set("client.id", format!("tidemark-{group}-{index}"))
            .create_with_context(StatsContext::default())
            .map_err(|source| ConsumerError::Create {
                brokers: brokers.into(),
                source,
            })?;
        Ok(PartitionConsumer {
            consumer,
            brokers: brokers.into(),
            topics: topics.to_vec(),
            index,
            peers: peers.max(1),
            start,
            positions: BTreeMap::new(),
            overrides,
            last_discovery: None,
            discovery_interval: Duration::from_secs(5),
        })
    }

    fn kafka_err(&self, source: rdkafka::error::KafkaError) -> ConsumerError {
        ConsumerError::Kafka {
            brokers: self.brokers.clone(),
            source,
        }
    }

    /// Owned partitions, sorted.
    pub fn partitions(&self) -> Vec<PartKey> {
        self.positions.keys().copied().collect()
    }

    /// Re-reads the topics' metadata when due and assigns newly found partitions; returns the
    /// partitions added.
    pub fn discover(&mut self) -> Result<Vec<PartKey>, ConsumerError> {
        if self
            .last_discovery
            .is_some_and(|t| t.elapsed() < self.discovery_interval)
        {
            return Ok(Vec::new());
        }
        self.last_discovery = Some(Instant::now());
        let mut found = Vec::new();
        for (ti, topic) in self.topics.iter().enumerate() {
            let md = self
                .consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .map_err(|e| self.kafka_err(e))?;
            let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
                continue;
            };
            if t.error().is_some() {
                return Err(ConsumerError::MissingTopic {
                    topic: topic.clone(),
                    brokers: self.brokers.clone(),
                });
            }
            for p in t.partitions() {
                let k = (ti, p.id());
                if (p.id() as usize + ti) % self.peers == self.index
                    && !self.positions.contains_key(&k)
                {
                    found.push(k);
                }
            }
        }
        if found.is_empty() {
            return Ok(found);
        }
        // Committed offsets of the new partitions (replay overrides win).
        let mut ask = TopicPartitionList::new();
        for &(ti, p) in &found {
            ask.add_partition(&self.topics[ti], p);
        }
        let committed = self
            .consumer
            .committed_offsets(ask, Duration::from_secs(10))
            .map_err(|e| self.kafka_err(e))?;
        for &k in &found {
            let c = committed
                .find_partition(&self.topics[k.0], k.1)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) if o >= 0 => Some(o),
                    _ => None,
                });
            let pos = self.overrides.get(&k).copied().or(c);
            self.positions.insert(k, pos);
        }
        self.assign()?;
        Ok(found)
    }

    fn assign(&self) -> Result<(), ConsumerError> {
        let mut tpl = TopicPartitionList::new();
        for (&(ti, p), pos) in &self.positions {
            let off = match (pos, self.start) {
                (Some(o), _) => Offset::Offset(*o),
                (None, Start::Earliest) => Offset::Beginning,
                (None, Start::Latest) => Offset::End,
            };
            tpl.add_partition_offset(&self.topics[ti], p, off)
                .map_err(|e| self.kafka_err(e))?;
        }
        self.consumer.assign(&tpl).map_err(|e| self.kafka_err(e))
    }

    /// The next message, waiting at most `timeout`.
    pub fn poll(&mut self, timeout: Duration) -> Option<Result<Msg, ConsumerError>> {
        match self.consumer.poll(timeout)? {
            Ok(m) => {
                let ti = self.topics.iter().position(|t| t == m.topic())?;
                let k = (ti, m.partition());
                self.positions.insert(k, Some(m.offset() + 1));
                Some(Ok(Msg {
                    part: k,
                    offset: m.offset(),
                    payload: m.payload().unwrap_or_default().to_vec(),
                }))
            }
            Err(e) => Some(Err(self.kafka_err(e))),
        }
    }

    /// Commits `next offset` per partition to the consumer group (asynchronously: a lost
    /// commit only means a little more is re-read, and the sinks are idempotent).
    pub fn commit(&self, next: &BTreeMap<PartKey, i64>) -> Result<(), ConsumerError> {
        if next.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (&(ti, p), &o) in next {
            tpl.add_partition_offset(&self.topics[ti], p, Offset::Offset(o))
                .map_err(|e| self.kafka_err(e))?;
        }
        self.consumer
            .commit(&tpl, CommitMode::Async)
            .map_err(|e| self.kafka_err(e))
    }

    /// `(partition, next offset to read, broker high watermark)` of every owned partition
    /// (high watermark -1 until the first statistics arrive).
    pub fn lag(&self) -> Vec<(PartKey, i64, i64)> {
        let high = self
            .consumer
            .context()
            .high
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.positions
            .iter()
            .map(|(&k, pos)| {
                let h = high
                    .get(&(self.topics[k.0].clone(), k.1))
                    .copied()
                    .unwrap_or(-1);
                (k, pos.unwrap_or(-1), h)
            })
            .collect()
    }

    pub fn topic(&self, k: PartKey) -> &str {
        &self.topics[k.0]
    }

    /// Shared so the job can report it.
    pub fn topics(&self) -> Arc<[String]> {
        self.topics.clone().into()
    }
}

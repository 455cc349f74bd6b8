//! Transport between ingest and the timely job: the embedded, durable, offset-addressed log
//! (`tidemark up`), the record codec shared with Kafka, the Kafka producer, the sink a push
//! is committed to, and remote write's wire format.

pub mod codec;
pub mod consumer;
pub mod kafka;
pub mod log;
pub mod remote_proto;
pub mod sink;

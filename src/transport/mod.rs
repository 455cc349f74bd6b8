//! Transport between ingest and the timely job: the embedded, durable, offset-addressed log
//! (`tidemark up`) and the record codec shared with Kafka.

pub mod codec;
pub mod consumer;
pub mod kafka;
pub mod log;

//! Where an accepted push goes before it is acknowledged: the embedded log of `tidemark up` or
//! the Kafka `metrics` topic of `tidemark ingest`.

use super::codec;
use super::kafka::KafkaSink;
use super::log::{Log, RecordKind};
use crate::model::WriteBatch;

/// Where accepted batches go before the push is acknowledged.
pub enum Sink {
    /// The embedded log of `tidemark up`.
    Log(Log),
    /// The Kafka `metrics` topic of `tidemark ingest`.
    Kafka(KafkaSink),
}

/// Why a sink could not take a batch: the client should retry.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkUnavailable(pub String);

impl Sink {
    /// Makes the batch durable; returns once it is.
    pub async fn commit(&self, batch: WriteBatch) -> Result<(), SinkUnavailable> {
        let Some((lo, hi)) = batch.time_range() else {
            return Ok(());
        };
        match self {
            Sink::Log(log) => {
                let log = log.clone();
                tokio::task::spawn_blocking(move || {
                    let mut payload = Vec::new();
                    codec::encode(&batch, &mut payload);
                    log.append(RecordKind::Batch, lo, hi, &payload)
                })
                .await
                .map_err(|e| SinkUnavailable(format!("log append task failed: {e}")))?
                .map(|_| ())
                .map_err(|e| SinkUnavailable(format!("cannot append to the log: {e}")))
            }
            Sink::Kafka(k) => k.commit(&batch).await,
        }
    }
}

//! Prometheus remote write 1.0: snappy (block format) compressed protobuf `WriteRequest`
//! (`schemas/remote.proto`). Errors name the 1-based time series index.

use super::{BatchBuilder, IngestError, SeriesBuf};

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Decompresses and decodes a request body, then adds its samples to `out`.
pub fn parse(body: &[u8], max_bytes: usize, out: &mut BatchBuilder<'_>) -> Result<(), IngestError> {
    let len =
        snap::raw::decompress_len(body).map_err(|e| IngestError::Decode(format!("snappy: {e}")))?;
    if len > max_bytes {
        return Err(IngestError::TooLarge {
            got: len,
            limit: max_bytes,
        });
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| IngestError::Decode(format!("snappy: {e}")))?;
    let req = <WriteRequest as prost::Message>::decode(raw.as_slice())
        .map_err(|e| IngestError::Decode(format!("protobuf WriteRequest: {e}")))?;
    let mut buf = SeriesBuf::default();
    for (i, ts) in req.timeseries.iter().enumerate() {
        buf.clear();
        for l in &ts.labels {
            buf.push(l.name.as_str().into(), l.value.as_str().into());
        }
        for s in &ts.samples {
            out.add(&mut buf, s.timestamp, s.value, i + 1);
        }
    }
    Ok(())
}

/// Encodes a request (used by tests, benches and the agent).
pub fn encode(req: &WriteRequest) -> Vec<u8> {
    let raw = prost::Message::encode_to_vec(req);
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy compression of an in-memory buffer")
}

//! Prometheus remote write 1.0: snappy (block format) compressed protobuf `WriteRequest`
//! (`schemas/remote.proto`). Errors name the 1-based time series index.

use super::{BatchBuilder, IngestError, SeriesBuf};
use crate::model::metadata::Metadata;

pub use crate::transport::remote_proto::{
    encode, Label, MetricMetadata, Sample, TimeSeries, WriteRequest,
};

/// Decompresses and decodes a request body, then adds its samples to `out`; returns the
/// request's metric metadata.
pub fn parse(
    body: &[u8],
    max_bytes: usize,
    out: &mut BatchBuilder<'_>,
) -> Result<Vec<(String, Metadata)>, IngestError> {
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
    Ok(req
        .metadata
        .iter()
        .filter(|m| !m.metric_family_name.is_empty())
        .map(|m| {
            (
                m.metric_family_name.clone(),
                Metadata {
                    kind: m.kind().to_string(),
                    help: m.help.clone(),
                    unit: m.unit.clone(),
                },
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Limits;

    #[test]
    fn round_trip_and_garbage() {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![
                    Label {
                        name: "__name__".into(),
                        value: "up".into(),
                    },
                    Label {
                        name: "job".into(),
                        value: "a".into(),
                    },
                ],
                samples: vec![
                    Sample {
                        value: 1.0,
                        timestamp: 5,
                    },
                    Sample {
                        value: 0.0,
                        timestamp: 6,
                    },
                ],
            }],
            metadata: vec![MetricMetadata {
                r#type: 2,
                metric_family_name: "up".into(),
                help: "Target is up.".into(),
                unit: String::new(),
            }],
        };
        let body = encode(&req);
        let limits = Limits::default();
        let mut b = BatchBuilder::new(&limits);
        let meta = parse(&body, 1 << 20, &mut b).unwrap();
        assert_eq!(meta.len(), 1);
        assert_eq!(
            (meta[0].0.as_str(), meta[0].1.kind.as_str()),
            ("up", "gauge")
        );
        let (batch, errs, _) = b.finish();
        assert!(errs.is_empty());
        assert_eq!(batch.samples.len(), 2);
        assert_eq!(batch.labels(0).to_string(), "up{job=\"a\"}");
        // Every truncation and bit flip is an error or a smaller batch, never a panic.
        for cut in 0..body.len() {
            let mut b = BatchBuilder::new(&limits);
            let _ = parse(&body[..cut], 1 << 20, &mut b);
            let mut flipped = body.clone();
            flipped[cut] ^= 0x5a;
            let mut b = BatchBuilder::new(&limits);
            let _ = parse(&flipped, 1 << 20, &mut b);
        }
        // The decompressed-size limit is enforced before decompressing.
        let mut b = BatchBuilder::new(&limits);
        assert!(matches!(
            parse(&body, 4, &mut b),
            Err(IngestError::TooLarge { .. })
        ));
    }
}

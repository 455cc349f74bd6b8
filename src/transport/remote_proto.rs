//! Prometheus remote write 1.0 and remote read (samples responses) on the wire
//! (`schemas/remote.proto`): the protobuf messages and their snappy-compressed encoding. Parsing a request into a batch is
//! [`crate::ingest::remote_write`]; producing to Kafka in this format is [`super::kafka`].

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `prometheus.MetricMetadata`: a family's type, help and unit.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricMetadata {
    /// UNKNOWN = 0, COUNTER = 1, GAUGE = 2, HISTOGRAM = 3, GAUGEHISTOGRAM = 4, SUMMARY = 5,
    /// INFO = 6, STATESET = 7.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

impl MetricMetadata {
    /// The type as the text formats and `/api/v1/metadata` name it.
    pub fn kind(&self) -> &'static str {
        match self.r#type {
            1 => "counter",
            2 => "gauge",
            3 => "histogram",
            4 => "gaugehistogram",
            5 => "summary",
            6 => "info",
            7 => "stateset",
            _ => "unknown",
        }
    }
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

/// Encodes a request (used by tests, benches and the agent).
pub fn encode(req: &WriteRequest) -> Vec<u8> {
    let raw = prost::Message::encode_to_vec(req);
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy compression of an in-memory buffer")
}

/// `prometheus.ReadRequest`: queries, and the response types the client accepts (empty:
/// `SAMPLES`, one snappy-compressed [`ReadResponse`]).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadRequest {
    #[prost(message, repeated, tag = "1")]
    pub queries: Vec<Query>,
    #[prost(int32, repeated, tag = "2")]
    pub accepted_response_types: Vec<i32>,
}

/// `prometheus.Query`: samples of the series matching every matcher, times inclusive.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Query {
    #[prost(int64, tag = "1")]
    pub start_timestamp_ms: i64,
    #[prost(int64, tag = "2")]
    pub end_timestamp_ms: i64,
    #[prost(message, repeated, tag = "3")]
    pub matchers: Vec<LabelMatcher>,
}

/// `prometheus.LabelMatcher`; `r#type` is EQ = 0, NEQ = 1, RE = 2, NRE = 3.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelMatcher {
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub value: String,
}

/// `prometheus.ReadResponse`: one result per query, in order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadResponse {
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<QueryResult>,
}

/// `prometheus.QueryResult`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryResult {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// Encodes a read request (snappy block format, as the server expects).
pub fn encode_read(req: &ReadRequest) -> Vec<u8> {
    let raw = prost::Message::encode_to_vec(req);
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy compression of an in-memory buffer")
}

/// Decodes a `SAMPLES` read response body.
pub fn decode_read_response(body: &[u8]) -> Result<ReadResponse, String> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("the remote read response is not snappy-compressed: {e}"))?;
    <ReadResponse as prost::Message>::decode(&raw[..])
        .map_err(|e| format!("the remote read response is not a ReadResponse: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_messages_round_trip() {
        let req = ReadRequest {
            queries: vec![Query {
                start_timestamp_ms: 1,
                end_timestamp_ms: 2,
                matchers: vec![LabelMatcher {
                    r#type: 2,
                    name: "job".into(),
                    value: ".+".into(),
                }],
            }],
            accepted_response_types: vec![],
        };
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&encode_read(&req))
            .unwrap();
        assert_eq!(
            <ReadRequest as prost::Message>::decode(&raw[..]).unwrap(),
            req
        );
        let resp = ReadResponse {
            results: vec![QueryResult {
                timeseries: vec![TimeSeries {
                    labels: vec![Label {
                        name: "__name__".into(),
                        value: "up".into(),
                    }],
                    samples: vec![Sample {
                        value: 1.0,
                        timestamp: 5,
                    }],
                }],
            }],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&prost::Message::encode_to_vec(&resp))
            .unwrap();
        assert_eq!(decode_read_response(&body).unwrap(), resp);
        assert!(decode_read_response(b"not snappy").is_err());
    }
}

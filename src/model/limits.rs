use serde::{Deserialize, Serialize};

/// Ingest limits, the `[ingest]` table of `tidemark.toml`. Every rejection names the limit and
/// the key that raises it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest accepted request body in bytes, after decompression (HTTP 413 beyond).
    pub max_body_bytes: usize,
    /// Most labels a series may have, `__name__` included.
    pub max_labels_per_series: usize,
    /// Longest label name (and metric name) in bytes.
    pub max_label_name_len: usize,
    /// Longest label value in bytes.
    pub max_label_value_len: usize,
    /// Most distinct series one metric name may have in the hot index.
    pub max_series_per_metric: usize,
    /// Graphite plaintext over TCP on this address (`None`: off).
    pub graphite_listen: Option<std::net::SocketAddr>,
    /// Graphite path templates (`[filter] template [tag=value,...]`, InfluxDB's syntax).
    pub graphite_templates: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 << 20,
            max_labels_per_series: 64,
            max_label_name_len: 256,
            max_label_value_len: 4096,
            max_series_per_metric: 1_000_000,
            graphite_listen: None,
            graphite_templates: Vec::new(),
        }
    }
}

/// Why a series was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("invalid metric name {0:?}: must match [a-zA-Z_:][a-zA-Z0-9_:]*")]
    InvalidMetricName(String),
    #[error("missing metric name: every series needs __name__")]
    MissingMetricName,
    #[error("invalid label name {0:?}: must match [a-zA-Z_][a-zA-Z0-9_]*")]
    InvalidLabelName(String),
    #[error("label value for {0:?} is not valid UTF-8")]
    InvalidLabelValue(String),
    #[error("series has {got} labels, more than ingest.max_labels_per_series = {limit}; raise it in tidemark.toml [ingest] or drop labels")]
    TooManyLabels { got: usize, limit: usize },
    #[error("label name {name:?}... is {got} bytes, more than ingest.max_label_name_len = {limit}; raise it in tidemark.toml [ingest]")]
    NameTooLong {
        name: String,
        got: usize,
        limit: usize,
    },
    #[error("value of label {name:?} is {got} bytes, more than ingest.max_label_value_len = {limit}; raise it in tidemark.toml [ingest]")]
    ValueTooLong {
        name: String,
        got: usize,
        limit: usize,
    },
    #[error("metric {metric:?} already has {limit} series (ingest.max_series_per_metric); raise it in tidemark.toml [ingest] or reduce label cardinality")]
    TooManySeries { metric: String, limit: usize },
    #[error("series {series} is outside this token's scope: its samples must carry {need} (the token's labels in tidemark.toml [auth] tokens); write it with a token for that scope")]
    OutOfScope { series: String, need: String },
}

/// Prometheus metric-name rule: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_valid_metric_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_' || b[0] == b':')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
}

/// Prometheus label-name rule: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn truncated(s: &str) -> String {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl Limits {
    /// Checks one series' labels (sorted pairs, `__name__` included) against the limits, and
    /// the names against Prometheus's rules when `validate_names`.
    pub fn check<'a>(
        &self,
        pairs: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
        validate_names: bool,
    ) -> Result<(), LimitError> {
        if pairs.len() > self.max_labels_per_series {
            return Err(LimitError::TooManyLabels {
                got: pairs.len(),
                limit: self.max_labels_per_series,
            });
        }
        let mut has_name = false;
        for (k, v) in pairs {
            if k.len() > self.max_label_name_len {
                return Err(LimitError::NameTooLong {
                    name: truncated(k),
                    got: k.len(),
                    limit: self.max_label_name_len,
                });
            }
            if k.len() == 8 && k == super::METRIC_NAME {
                has_name = true;
                if v.len() > self.max_label_name_len {
                    return Err(LimitError::NameTooLong {
                        name: truncated(v),
                        got: v.len(),
                        limit: self.max_label_name_len,
                    });
                }
                if validate_names && !is_valid_metric_name(v) {
                    return Err(LimitError::InvalidMetricName(truncated(v)));
                }
                continue;
            }
            if validate_names && !is_valid_label_name(k) {
                return Err(LimitError::InvalidLabelName(truncated(k)));
            }
            if v.len() > self.max_label_value_len {
                return Err(LimitError::ValueTooLong {
                    name: k.to_string(),
                    got: v.len(),
                    limit: self.max_label_value_len,
                });
            }
        }
        if !has_name {
            return Err(LimitError::MissingMetricName);
        }
        Ok(())
    }
}

//! The data model: series labels, series ids, samples, and the validation limits.
//!
//! A series is a metric name plus labels. [`Labels`] holds `__name__` and the other label pairs
//! sorted by name; [`SeriesId`] is xxh3 over the canonical encoding ([`canonical_encode`]) and is
//! fixed forever because it is written to Parquet.

mod batch;
mod labels;
mod limits;
pub mod metadata;

pub use batch::{BatchSample, WriteBatch, MAX_ABS_TS};
pub use labels::{canonical_encode, decode_canonical, Labels, METRIC_NAME};
pub use limits::{is_valid_label_name, is_valid_metric_name, LimitError, Limits};

/// Stable 64-bit series identity: xxh3 of [`canonical_encode`].
pub type SeriesId = u64;

/// Prometheus's staleness marker: a NaN with this exact bit pattern marks the end of a series.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker value.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// True for Prometheus's staleness marker (and only for it, not for other NaNs).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// Tables keyed by series id without rehashing (ids are already hashes).
pub use tidemark_dataflows::types::{IdHasher, IdMap, IdSet};

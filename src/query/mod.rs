//! PromQL: evaluation over a [`Storage`] seam (the hot index, or the conformance runner's
//! in-memory store), the Prometheus HTTP API, and the `.test` script runner.
//!
//! The evaluator is step-vectorised: every node of the expression is evaluated for all steps of
//! the query at once, so a range query selects each series once and walks its samples once.

pub mod aggregate;
pub mod api;
pub mod binary;
pub mod engine;
pub mod functions;
pub mod promqltest;

use crate::model::Labels;
use crate::store::hot::index::Matcher;

/// Raw samples of one series, sorted by time; may include staleness markers.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
}

/// Where the engine reads series from.
pub trait Storage: Send + Sync {
    /// Every series matching all `matchers`, with its samples in `[start, end]` (ms, inclusive).
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<Series>;
}

/// Query errors, with Prometheus's `errorType`s.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// The query text or a parameter is invalid (`bad_data`, HTTP 400).
    #[error("{0}")]
    BadData(String),
    /// Evaluation failed (`execution`, HTTP 422).
    #[error("{0}")]
    Execution(String),
}

impl QueryError {
    /// Prometheus's `errorType` string.
    pub fn error_type(&self) -> &'static str {
        match self {
            QueryError::BadData(_) => "bad_data",
            QueryError::Execution(_) => "execution",
        }
    }
}

/// The result of a query, as Prometheus's API returns it.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryValue {
    /// Instant vector at one time: `(labels, timestamp ms, value)`.
    Vector(Vec<(Labels, i64, f64)>),
    /// Range vector or range-query result.
    Matrix(Vec<Series>),
    Scalar(i64, f64),
    String(i64, String),
}

//! PromQL: evaluation over a [`Storage`] seam (the hot index, or the conformance runner's
//! in-memory store), the Prometheus HTTP API, and the `.test` script runner.
//!
//! The evaluator is step-vectorised: every node of the expression is evaluated for all steps of
//! the query at once, so a range query selects each series once and walks its samples once.

pub mod aggregate;
pub mod api;
pub mod binary;
pub mod engine;
pub mod fanout;
pub mod functions;
pub mod promqltest;

use crate::model::Labels;

pub use crate::store::{SelectHints, Selected, Series, Storage};

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

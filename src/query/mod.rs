//! PromQL: evaluation over a [`Storage`] seam (the hot index, or the conformance runner's
//! in-memory store), the Prometheus HTTP API, and the `.test` script runner.
//!
//! The evaluator is step-vectorised: every node of the expression is evaluated for all steps of
//! the query at once, so a range query selects each series once and walks its samples once.

pub mod aggregate;
pub mod api;
pub mod ast_json;
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

/// What a query noticed besides its result: Prometheus's annotations, `warnings` (the result
/// may be wrong or incomplete) and `infos` (it may not be what was meant), each message once,
/// in the order they were first noted. The API returns them beside the data; `expect warn` and
/// `expect info` lines of the conformance scripts check them.
#[derive(Debug, Default)]
pub struct Annotations {
    notes: std::sync::Mutex<(Vec<String>, Vec<String>)>,
    /// The query's text, for the positions (`line:column`) messages end with.
    query: std::sync::OnceLock<String>,
}

impl Annotations {
    /// Records the query's text (the first one given stays).
    pub fn set_query(&self, query: &str) {
        let _ = self.query.set(query.to_string());
    }

    /// The query's text, when recorded.
    pub fn query(&self) -> Option<&str> {
        self.query.get().map(String::as_str)
    }

    fn add(&self, info: bool, msg: String) {
        let mut n = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        let list = if info { &mut n.1 } else { &mut n.0 };
        if !list.contains(&msg) {
            list.push(msg);
        }
    }

    /// Notes a warning (`PromQL warning: ...`).
    pub fn warn(&self, msg: impl Into<String>) {
        self.add(false, msg.into());
    }

    /// Notes an info (`PromQL info: ...`).
    pub fn info(&self, msg: impl Into<String>) {
        self.add(true, msg.into());
    }

    /// The warnings and infos noted so far.
    pub fn take(&self) -> (Vec<String>, Vec<String>) {
        std::mem::take(&mut *self.notes.lock().unwrap_or_else(|e| e.into_inner()))
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

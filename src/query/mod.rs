//! PromQL: evaluation over a [`Storage`] seam (the hot index, or the conformance runner's
//! in-memory store), the Prometheus HTTP API, and the `.test` script runner.
//!
//! The evaluator is step-vectorised: every node of the expression is evaluated for all steps of
//! the query at once, so a range query selects each series once and walks its samples once.

pub mod aggregate;
pub mod api;
pub mod ast_json;
pub mod binary;
pub mod cache;
pub mod engine;
pub mod fanout;
pub mod functions;
pub mod json;
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
    /// The query ran out of time (`timeout`, HTTP 503).
    #[error("{0}")]
    Timeout(String),
}

impl QueryError {
    /// Prometheus's `errorType` string.
    pub fn error_type(&self) -> &'static str {
        match self {
            QueryError::BadData(_) => "bad_data",
            QueryError::Execution(_) => "execution",
            QueryError::Timeout(_) => "timeout",
        }
    }
}

/// What one query may use (`[query]` in `tidemark.toml`): time, and samples loaded by its
/// selectors. The engine charges each selection ([`Budget::charge`]) and checks the time at
/// every node; a breach is an error naming the limit and its key.
#[derive(Debug)]
pub struct Budget {
    deadline: std::time::Instant,
    timeout_ms: i64,
    /// The `timeout` request parameter set the deadline (shorter than `[query] timeout`).
    by_parameter: bool,
    max_samples: usize,
    loaded: std::sync::atomic::AtomicUsize,
}

impl Budget {
    /// A budget from now: `timeout_ms` (`by_parameter`: the request's `timeout` chose it) and
    /// at most `max_samples` samples loaded (0: no limit).
    pub fn new(timeout_ms: i64, by_parameter: bool, max_samples: usize) -> Self {
        Budget {
            deadline: std::time::Instant::now()
                + std::time::Duration::from_millis(timeout_ms.max(0) as u64),
            timeout_ms,
            by_parameter,
            max_samples,
            loaded: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// An error when the deadline has passed.
    pub fn check_time(&self) -> Result<(), QueryError> {
        if std::time::Instant::now() < self.deadline {
            return Ok(());
        }
        let by = if self.by_parameter {
            "the request's timeout parameter".to_string()
        } else {
            format!(
                "[query] timeout = \"{}\" in tidemark.toml",
                crate::time::format_duration_ms(self.timeout_ms)
            )
        };
        Err(QueryError::Timeout(format!(
            "query timed out in expression evaluation (after {} ms: {by})",
            self.timeout_ms
        )))
    }

    /// Counts `n` samples loaded; an error past `max_samples` or the deadline.
    pub fn charge(&self, n: usize) -> Result<(), QueryError> {
        let total = self
            .loaded
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed)
            + n;
        if self.max_samples > 0 && total > self.max_samples {
            return Err(QueryError::Execution(format!(
                "query processing would load too many samples into memory in query execution (more than {}: [query] max_samples in tidemark.toml)",
                self.max_samples
            )));
        }
        self.check_time()
    }

    /// Samples loaded so far.
    pub fn loaded(&self) -> usize {
        self.loaded.load(std::sync::atomic::Ordering::Relaxed)
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

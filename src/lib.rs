//! Tidemark: metrics monitoring and alerting on timely dataflow.
pub mod alert;
pub mod check;
pub mod cluster;
pub mod config;
pub mod http;
pub mod ingest;
pub mod job;
pub mod jsonschema;
pub mod logging;
pub mod model;
pub mod ops;
pub mod process;
pub mod query;
pub mod server;
pub mod store;
pub mod time;
pub mod transport;

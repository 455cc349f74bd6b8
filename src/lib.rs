//! Tidemark: metrics monitoring and alerting on timely dataflow.
pub mod ingest;
pub mod model;
pub mod store;
pub mod transport;

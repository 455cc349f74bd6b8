//! The processes, one module each: what `main` starts. Everything below them is a library
//! they assemble.
//!
//! - [`agent`]: the host agent (this machine's metrics, pushed by remote write);
//! - [`up`]: everything in one process (the embedded log, the job, the API);
//! - [`ingest`]: stateless push endpoints producing to Kafka;
//! - [`worker`]: a process of the worker cluster (timely across processes, jobs from Kafka);
//! - [`notify`]: the alert manager of the cluster, consuming the `alerts` topic.

pub mod agent;
pub mod ingest;
pub mod notify;
pub mod up;
pub mod worker;

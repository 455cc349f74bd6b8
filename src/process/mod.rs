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

/// Raises this process's open-file limit from its soft value to the hard one (as Go's runtime
/// does for Prometheus): a collector keeps a connection per scrape target, and a server a
/// socket per client plus its log segments and chunk files, while most systems start
/// processes with a soft limit of 1,024. Returns the limit in effect, and the soft limit
/// before when it was raised.
pub fn raise_open_file_limit() -> (Option<u64>, Option<u64>) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    match (now.current, now.maximum) {
        (Some(soft), hard) if hard.is_none_or(|h| h > soft) => {
            // An unlimited hard limit is capped at what the kernel allows a process
            // (fs.nr_open, 1,048,576 by default).
            let want = hard.unwrap_or(1 << 20);
            let raised = Rlimit {
                current: Some(want),
                maximum: hard,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => (Some(want), Some(soft)),
                Err(_) => (Some(soft), None),
            }
        }
        (soft, _) => (soft, None),
    }
}

//! Cold tiers: Parquet files on object storage (DESIGN.md section 6).
//!
//! | module | what |
//! |---|---|
//! | [`layout`] | tiers, partitions and the Hive-style paths of their files |
//! | [`parquet_io`] | Arrow schemas, encoding and decoding of tier files |
//! | [`store`] | the object store by URL (`file://`, `s3://`, `memory://`), retrying writes |
//! | [`writer`] | the tier writers: the job's sinks, sealing partitions on the frontier |
//! | [`maintain`] | listing (`tidemark tiers`), retention and compaction |
//! | [`query`] | reading tiers for queries: partitions of a range, pruned reads, dedupe on read |

pub mod layout;
pub mod maintain;
pub mod parquet_io;
pub mod query;
pub mod store;
pub mod writer;

pub use layout::{FileKind, Partition, Tier};
pub use store::{ColdError, ColdStore};

//! Storage: the hot tier in memory (Gorilla-style chunks, inverted label index, rollups) and
//! the cold tiers (Parquet on object storage).
pub mod cold;
pub mod hot;
pub mod tiered;

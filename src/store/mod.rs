//! Storage: the hot tier in memory (Gorilla-style chunks, inverted label index, rollups).
pub mod hot;

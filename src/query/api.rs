//! The Prometheus HTTP API (query side).

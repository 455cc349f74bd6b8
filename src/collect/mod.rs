//! Collection (DESIGN.md sections 1, 2 and 9): pull scraping with service discovery, sharded
//! across a collector pool.
//!
//! | module | what |
//! |---|---|
//! | [`config`] | the scrape file (Prometheus's `scrape_configs` subset, Tidemark's etcd SD) |
//! | [`manager`] | discovery (static, file, HTTP), one scrape loop per target, `/api/v1/targets` |
//! | [`relabel`] | `relabel_configs` and `metric_relabel_configs` as Prometheus applies them |
//! | [`scrape`] | targets from discovered groups; one scrape as samples, staleness and report series |
//!
//! Issue 21 builds the rest on these: the scrape loop, service discovery, the hash ring.

pub mod config;
pub mod manager;
pub mod relabel;
pub mod scrape;

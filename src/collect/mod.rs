//! Collection (DESIGN.md sections 1, 2 and 9): pull scraping with service discovery, sharded
//! across a collector pool.
//!
//! | module | what |
//! |---|---|
//! | [`agent`] | the host agent: this machine's metrics (node_exporter's names), a push buffer |
//! | [`config`] | the scrape file (Prometheus's `scrape_configs` subset, Tidemark's etcd SD) |
//! | [`etcd`] | an etcd v3 client over its JSON gateway: prefix range and watch, leases |
//! | [`manager`] | discovery (static, file, HTTP, etcd), one scrape loop per target, `/api/v1/targets` |
//! | [`relabel`] | `relabel_configs` and `metric_relabel_configs` as Prometheus applies them |
//! | [`ring`] | the collector pool's consistent hash ring; static or etcd membership |
//! | [`scrape`] | targets from discovered groups; one scrape as samples, staleness and report series |

pub mod agent;
pub mod config;
pub mod etcd;
pub mod manager;
pub mod relabel;
pub mod ring;
pub mod scrape;

/// What a process collects: its scrape configuration (`[scrape] config` plus the self-scrape)
/// and its place in the collector pool (`[scrape.ring]`). Errors name the file and line, or
/// the key.
pub fn setup(
    section: &crate::config::ScrapeSection,
    listen: std::net::SocketAddr,
    token: Option<&str>,
    https: bool,
) -> Result<(config::ScrapeConfig, std::sync::Arc<ring::Membership>), String> {
    let cfg = config::for_process(section, listen, token, https).map_err(|errs| {
        format!(
            "scrape.config: {}",
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let ring = ring::Membership::from_config(&section.ring, listen)?;
    Ok((cfg, ring))
}

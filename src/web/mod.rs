//! The built-in web UI (DESIGN.md: `web/`, "UI: `/`"): static files built into the binary from
//! `src/web/assets/` with `include_bytes!`, so the UI needs no separate server, no CDN and no
//! network at run time, and a `cargo build` needs no Node. The page talks to the same process's
//! Prometheus API (`/api/v1/...`) like any other client.
//!
//! - `GET /`: the explorer; `GET /alerts`: alerts as the routing groups them, pending alerts,
//!   silences (created and expired here, with an `admin` token), rules and notifications by
//!   receiver; `GET /targets`: scrape targets by pool; `GET /status`: build, ingest,
//!   watermark, log, checkpoints, hot index, memory, tiers, queries. One page,
//!   `assets/index.html`, which shows the view its path names; `GET /dashboards` and
//!   `GET /d/<uid>`: dashboards in Grafana's JSON model ([`dashboards`]).
//! - `GET /ui/<file>`: its script, style sheet and the vendored chart library (uPlot, MIT,
//!   copied from the npm registry's tarball: `assets/vendor/uplot/SOURCE`).
//!
//! `tidemark notify` serves the alerts view only ([`notify_routes`]).
//!
//! Both are served without a token: they hold no data, and the page sends the token the user
//! gives it (kept for the browser session) with each API request, which the API checks.

pub mod dashboards;
pub mod status;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file: its path under `/ui/`, content type and bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $ctype:literal) => {
        Asset {
            path: $path,
            content_type: $ctype,
            bytes: include_bytes!(concat!("assets/", $path)),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("alerts.js", "text/javascript; charset=utf-8"),
    asset!("status.js", "text/javascript; charset=utf-8"),
    asset!("dashboards.js", "text/javascript; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!(
        "vendor/uplot/uPlot.iife.min.js",
        "text/javascript; charset=utf-8"
    ),
    asset!("vendor/uplot/uPlot.min.css", "text/css; charset=utf-8"),
    asset!("vendor/uplot/LICENSE", "text/plain; charset=utf-8"),
];

const INDEX: &[u8] = include_bytes!("assets/index.html");

/// The UI's routes, to merge into a process's router (`tidemark up`, a worker process).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/alerts", get(index))
        .route("/targets", get(index))
        .route("/status", get(index))
        .route("/dashboards", get(index))
        .route("/d/{uid}", get(index))
        .route("/ui/{*path}", get(asset))
}

/// The UI of `tidemark notify`, which has alerts and silences but no queries: `/` leads to
/// the alerts view.
pub fn notify_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/alerts") }),
        )
        .route("/alerts", get(index))
        .route("/ui/{*path}", get(asset))
}

/// The UI's pages: one HTML file, which shows the page its path names.
const PAGES: &[&str] = &["/", "/alerts", "/targets", "/status", "/dashboards"];

/// Paths the UI serves without a token ([`crate::http::required_role`]).
pub fn is_public(path: &str) -> bool {
    PAGES.contains(&path) || path.starts_with("/ui/") || path.starts_with("/d/")
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
        .into_response()
}

async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.path == path) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                // Built into this binary: a new build may change them, so revalidate.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            a.bytes,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("no UI file /ui/{path} in this build\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_loads_is_embedded() {
        let html = std::str::from_utf8(INDEX).unwrap();
        let mut refs = 0;
        for part in html.split("\"/ui/").skip(1) {
            let path = &part[..part.find('"').unwrap()];
            assert!(
                ASSETS.iter().any(|a| a.path == path),
                "index.html loads /ui/{path}, which is not embedded"
            );
            refs += 1;
        }
        assert_eq!(
            refs, 8,
            "the icon, the four scripts, the style sheet and uPlot's two files"
        );
        assert!(ASSETS.iter().all(|a| !a.bytes.is_empty()));
    }

    /// The scripts share the page's global scope: a top-level function or binding defined in
    /// two of them would silently replace the first (the dashboards' `drawTable` once broke
    /// the explorer's table).
    #[test]
    fn the_scripts_define_each_global_once() {
        let mut seen: std::collections::BTreeMap<String, &str> = Default::default();
        for a in ASSETS
            .iter()
            .filter(|a| a.path.ends_with(".js") && !a.path.starts_with("vendor/"))
        {
            let text = std::str::from_utf8(a.bytes).unwrap();
            for line in text.lines() {
                let rest = line
                    .strip_prefix("async function ")
                    .or_else(|| line.strip_prefix("function "))
                    .or_else(|| line.strip_prefix("const "))
                    .or_else(|| line.strip_prefix("let "));
                let Some(rest) = rest else { continue };
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
                    .collect();
                if name.is_empty() {
                    continue;
                }
                if let Some(first) = seen.insert(name.clone(), a.path) {
                    panic!(
                        "{name} is defined at the top level of both {first} and {}",
                        a.path
                    );
                }
            }
        }
        assert!(seen.len() > 50, "{} globals found", seen.len());
    }
}

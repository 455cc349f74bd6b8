//! `tidemark ingest`: the push endpoints, producing to Kafka; stateless, so several can run
//! behind a load balancer. With `--scrape` it is also a collector: it scrapes the targets of a
//! scrape file (sharing them with the other collectors of its `[scrape.ring]`) and produces
//! the samples to Kafka like pushes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::{header, StatusCode};
use axum::routing::get;
use axum::Router;

use crate::config::Config;
use crate::http::{authorize, request_log};
use crate::ingest::http as ingest_http;
use crate::ops::{render_counters, Metrics, TextWriter};

/// `tidemark ingest`: the push endpoints, producing to Kafka; stateless, so several can run
/// behind a load balancer. `/-/ready` is 200 while the brokers answer a metadata request for
/// the topic (within 2 s), 503 with the brokers and the reason otherwise.
pub fn run(cfg: Config) -> anyhow::Result<()> {
    // Scraping (`--scrape`, `[scrape] config`): checked before anything starts. Without a
    // scrape file an ingest process scrapes nothing (not even itself).
    let tls = crate::http::tls_acceptor(&cfg.server).map_err(anyhow::Error::msg)?;
    let self_token = cfg.auth.tokens.iter().map(|t| t.token.clone()).next();
    let mut section = cfg.scrape.clone();
    if section
        .config
        .as_ref()
        .is_none_or(|p| p.as_os_str().is_empty())
    {
        section.self_scrape = false;
    }
    let (scrape_cfg, ring) = crate::collect::setup(
        &section,
        cfg.server.listen,
        self_token.as_deref(),
        tls.is_some(),
    )
    .map_err(anyhow::Error::msg)?;
    let collector: crate::collect::manager::CollectorCell = Default::default();
    let sink = crate::transport::kafka::KafkaSink::new(&cfg.kafka)?;
    let metrics = Arc::new(Metrics::default());
    let listen = cfg.server.listen;
    let kafka = cfg.kafka.clone();
    let auth = Arc::new(cfg.auth.clone());
    let state = Arc::new(ingest_http::IngestState {
        limits: cfg.ingest.clone(),
        sink: ingest_http::Sink::Kafka(sink),
        metrics: Arc::clone(&metrics),
        hot: None,
        metadata: Default::default(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        tracing::info!(
            "listening on {}://{}, producing to topic {:?} at {} ({:?}, key {:?})",
            if tls.is_some() { "https" } else { "http" },
            listener.local_addr()?,
            kafka.topic,
            kafka.brokers,
            kafka.format,
            kafka.partition_key
        );
        let m = Arc::clone(&metrics);
        let ingest_ready = {
            let state = Arc::clone(&state);
            move || {
                let state = Arc::clone(&state);
                async move {
                    let ingest_http::Sink::Kafka(k) = &state.sink else {
                        return (StatusCode::OK, "Tidemark ingest is Ready.\n".to_string());
                    };
                    match k.ready(Duration::from_secs(2)).await {
                        Ok(n) => (
                            StatusCode::OK,
                            format!(
                                "Tidemark ingest is Ready: topic {:?} has {n} partitions.\n",
                                k.config().topic
                            ),
                        ),
                        Err(e) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("Tidemark ingest is not ready: {e}\n"),
                        ),
                    }
                }
            }
        };
        let app = Router::new()
            .route(
                "/metrics",
                get(move || {
                    let m = Arc::clone(&m);
                    async move {
                        let mut w = TextWriter(String::with_capacity(2048));
                        render_counters(&m, &mut w);
                        (
                            [(
                                header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )],
                            w.0,
                        )
                    }
                }),
            )
            .route("/-/healthy", get(|| async { "Tidemark is Healthy.\n" }))
            .route("/-/ready", get(ingest_ready))
            .merge(ingest_http::routes(Arc::clone(&state)))
            .merge(crate::collect::manager::routes(Arc::clone(&collector)))
            .layer(axum::middleware::from_fn_with_state(auth, authorize))
            .layer(axum::middleware::from_fn(request_log));
        crate::ingest::tcp::start_graphite(&state)
            .await
            .map_err(anyhow::Error::msg)?;
        if !scrape_cfg.jobs.is_empty() {
            let c = crate::collect::manager::Collector::start(scrape_cfg, Arc::clone(&state), ring);
            let _ = collector.set(c);
        }
        crate::http::serve(listener, tls, app).await?;
        if let Some(c) = collector.get().cloned() {
            let _ = tokio::task::spawn_blocking(move || c.shutdown()).await;
        }
        anyhow::Ok(())
    })?;
    if let ingest_http::Sink::Kafka(k) = &state.sink {
        k.flush(Duration::from_secs(5));
    }
    tracing::info!("stopped");
    Ok(())
}

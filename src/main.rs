//! The `tidemark` binary: `up` runs everything in one process; `promqltest` runs PromQL
//! conformance scripts.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tidemark",
    version,
    about = "Metrics monitoring and alerting on timely dataflow"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run everything in one process with embedded defaults: ingest, the embedded log, the
    /// timely job, the hot index and the Prometheus HTTP API.
    Up {
        /// Address to serve HTTP on.
        #[arg(long, default_value = "127.0.0.1:9470")]
        listen: SocketAddr,
        /// Where the log and other data live.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// A tidemark.toml (defaults are embedded).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Timely worker threads (default: the number of cores).
        #[arg(long)]
        workers: Option<usize>,
        /// Allow a non-loopback listen address without auth tokens.
        #[arg(long)]
        insecure: bool,
    },
    /// Stateless push receiver: the ingest endpoints of `up`, producing accepted batches to the
    /// Kafka topic `metrics` (acknowledged only once Kafka acknowledged them; 503 otherwise).
    Ingest {
        /// Address to serve HTTP on.
        #[arg(long, default_value = "127.0.0.1:9470")]
        listen: SocketAddr,
        /// A tidemark.toml; its [kafka] table configures the producer.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Bootstrap servers (overrides kafka.brokers).
        #[arg(long)]
        brokers: Option<String>,
        /// Topic (overrides kafka.topic).
        #[arg(long)]
        topic: Option<String>,
        /// Allow a non-loopback listen address without auth tokens.
        #[arg(long)]
        insecure: bool,
    },
    /// Run Prometheus `.test` scripts and print `N passed, N failed` per file and overall.
    Promqltest {
        /// Script files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// List every failure with its query and difference.
        #[arg(long, short)]
        verbose: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Up {
            listen,
            data_dir,
            config,
            workers,
            insecure,
        } => {
            let mut cfg = load_config(config.as_deref())?;
            cfg.server.listen = listen;
            cfg.server.data_dir = data_dir;
            if let Some(w) = workers {
                cfg.server.workers = w;
            }
            refuse_open_without_tokens(&cfg, insecure)?;
            tidemark::server::run(cfg).context("tidemark up")
        }
        Cmd::Ingest {
            listen,
            config,
            brokers,
            topic,
            insecure,
        } => {
            let mut cfg = load_config(config.as_deref())?;
            cfg.server.listen = listen;
            if let Some(b) = brokers {
                cfg.kafka.brokers = b;
            }
            if let Some(t) = topic {
                cfg.kafka.topic = t;
            }
            refuse_open_without_tokens(&cfg, insecure)?;
            tidemark::server::run_ingest(cfg).context("tidemark ingest")
        }
        Cmd::Promqltest { files, verbose } => {
            let (report, total) = tidemark::query::promqltest::run_files(&files, verbose)
                .context("reading test scripts")?;
            print!("{report}");
            println!("{} passed, {} failed", total.passed, total.failed);
            Ok(())
        }
    }
}

/// Without auth tokens Tidemark serves loopback only, unless `--insecure`.
fn refuse_open_without_tokens(
    cfg: &tidemark::config::Config,
    insecure: bool,
) -> anyhow::Result<()> {
    if !insecure && !cfg.server.listen.ip().is_loopback() {
        anyhow::bail!(
            "refusing to serve {} without auth tokens: bind a loopback address, or pass --insecure",
            cfg.server.listen
        );
    }
    Ok(())
}

/// The config file, or the embedded defaults.
fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<tidemark::config::Config> {
    Ok(match path {
        Some(p) => tidemark::config::Config::load(p)?,
        None => tidemark::config::Config::default(),
    })
}

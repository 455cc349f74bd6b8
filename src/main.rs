//! The `tidemark` binary: `up` runs everything in one process; `promqltest` runs PromQL
//! conformance scripts.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// jemalloc rather than glibc's malloc: at 200,000 series with the default rules it peaked
/// 12 % lower (719 vs 821 MiB: less fragmentation across the worker threads' arenas) and used
/// 6 % less CPU per sample (benches/README.md, Footprint). Feature `jemalloc` (default). Its
/// options are built in from `.cargo/config.toml` (`JEMALLOC_SYS_WITH_MALLOC_CONF`).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "tidemark",
    version,
    about = "Metrics monitoring and alerting on timely dataflow"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Only log events at this level or above: debug, info, warn, error (`RUST_LOG`, when
    /// set, overrides it with a per-module filter).
    #[arg(long = "log.level", global = true, default_value = "info")]
    log_level: String,
    /// Log line format: logfmt or json.
    #[arg(long = "log.format", global = true, default_value = "logfmt")]
    log_format: String,
}

/// What `tidemark check` validates.
#[derive(Subcommand)]
enum CheckCmd {
    /// tidemark.toml files, and the rule, routing and storage settings they name.
    Config {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Prometheus rule files (as `promtool check rules`), with how each rule runs:
    /// incremental or engine.
    Rules {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Alertmanager configuration files (as `amtool check-config`).
    Routing {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Prometheus scrape files (`[scrape] config`), as `tidemark up` reads them.
    Scrape {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Worker-cluster job specs (as `tidemark submit` would send them).
    Job {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Check files before deploying them; exit status 1 when any has a problem.
    Check {
        #[command(subcommand)]
        what: CheckCmd,
    },
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
    /// List the cold tiers: partitions, files, bytes, rows and bytes per row per tier, then
    /// every partition.
    Tiers {
        /// Where `up` keeps its data (the default store is file://<data_dir>/cold).
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// A tidemark.toml whose [cold] url names the store.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The store URL (overrides the config): file:///path, s3://bucket/prefix, memory://.
        #[arg(long)]
        url: Option<String>,
    },
    /// The host agent: this machine's CPU, load, memory, filesystems, disks, network and
    /// processes from /proc with node_exporter's names, pushed by remote write every interval
    /// (buffered in memory, then on disk, while the target is unreachable) and served on its
    /// own /metrics.
    Agent {
        /// Remote write URL, e.g. http://tidemark:9090/api/v1/write.
        #[arg(long)]
        push_to: String,
        /// Collection interval.
        #[arg(long, default_value = "10s")]
        interval: String,
        /// Address to serve /metrics on.
        #[arg(long, default_value = "127.0.0.1:9471")]
        listen: SocketAddr,
        /// The job label of pushed samples.
        #[arg(long, default_value = "node")]
        job: String,
        /// The instance label of pushed samples (default: this machine's hostname).
        #[arg(long)]
        instance: Option<String>,
        /// Another label for every pushed sample, NAME=VALUE (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// A write token for the target (also read from TIDEMARK_TOKEN, which keeps it out of
        /// the process list).
        #[arg(long)]
        token: Option<String>,
        /// Unsent samples kept in memory (encoded bytes).
        #[arg(long, default_value = "64MiB")]
        buffer_memory: String,
        /// Where the backlog spills past the memory bound (kept across restarts); "" = none.
        #[arg(long, default_value = "tidemark-agent-buffer")]
        buffer_dir: PathBuf,
        /// Unsent samples kept on disk; past it the oldest are dropped and counted.
        #[arg(long, default_value = "1GiB")]
        buffer_disk: String,
        /// The proc filesystem to read.
        #[arg(long, default_value = "/proc")]
        procfs: PathBuf,
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
        /// Scrape the targets of this Prometheus scrape file too (overrides scrape.config);
        /// collectors with the same file share its targets on the [scrape.ring].
        #[arg(long)]
        scrape: Option<PathBuf>,
        /// This collector's id on the ring (overrides scrape.ring.member).
        #[arg(long)]
        member: Option<String>,
        /// Allow a non-loopback listen address without auth tokens.
        #[arg(long)]
        insecure: bool,
    },
    /// Run one process of a timely worker cluster: jobs are submitted to process 0's control
    /// API; every process serves the query API over the whole cluster.
    Worker {
        /// This process's index in the hosts file (0-based).
        #[arg(long)]
        process: usize,
        /// Number of processes (must match the hosts file).
        #[arg(long)]
        processes: usize,
        /// Hosts file: one line per process, `TIMELY_HOST:PORT HTTP_HOST:PORT`.
        #[arg(long)]
        hosts: PathBuf,
        /// Timely worker threads in this process.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// WALs, bindings and submitted job specs.
        #[arg(long, default_value = "./data-worker")]
        data_dir: PathBuf,
        /// Kafka bootstrap servers for jobs that do not name their own.
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// A tidemark.toml ([ingest] limits apply to decoded messages, [hot] retention,
        /// [auth] tokens guard the HTTP side: jobs, replays and reload need `admin`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Allow a non-loopback HTTP address without auth tokens.
        #[arg(long)]
        insecure: bool,
    },
    /// Consume alert events from the Kafka topic `alerts` (written by cluster jobs with
    /// `[rules]`) and deliver notifications; offsets are committed only after delivery. Serves
    /// the Alertmanager v2 API (silences: `amtool --alertmanager.url=...`) and /metrics.
    Notify {
        /// Address to serve HTTP on.
        #[arg(long, default_value = "127.0.0.1:9472")]
        listen: SocketAddr,
        /// Where the notifier keeps its state (outbox, notification log, silences).
        #[arg(long, default_value = "./data-notify")]
        data_dir: PathBuf,
        /// A tidemark.toml: [alerting] config (the routing file), [auth] tokens, [kafka]
        /// brokers, [rules] external_url.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Alertmanager-style routing file (overrides [alerting] config).
        #[arg(long)]
        routing: Option<PathBuf>,
        /// Bootstrap servers (overrides kafka.brokers).
        #[arg(long)]
        brokers: Option<String>,
        #[arg(long, default_value = "alerts")]
        topic: String,
        /// Consumer group offsets are committed to.
        #[arg(long, default_value = "tidemark-notify")]
        group: String,
        /// This process's share of the partitions (p % peers == index) when several run.
        #[arg(long, default_value_t = 0)]
        index: usize,
        #[arg(long, default_value_t = 1)]
        peers: usize,
        /// Allow a non-loopback listen address without auth tokens.
        #[arg(long)]
        insecure: bool,
    },
    /// Validate a job spec against schemas/job.schema.json and submit it to worker 0.
    Submit {
        /// The job spec (TOML).
        file: PathBuf,
        /// Worker 0's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:9471")]
        to: String,
    },
    /// List the cluster's jobs with their state, watermark, lag and partitions.
    Jobs {
        #[arg(long, default_value = "http://127.0.0.1:9471")]
        to: String,
    },
    /// Stop a job.
    Cancel {
        name: String,
        #[arg(long, default_value = "http://127.0.0.1:9471")]
        to: String,
    },
    /// Rewind a job's partitions (with --job, against a worker cluster) or `tidemark up`'s
    /// embedded log (without --job) and re-process them, rebuilding rollups idempotently.
    Replay {
        /// The cluster job to replay; without it, the target is `tidemark up`.
        #[arg(long)]
        job: Option<String>,
        /// Event time (RFC 3339) to replay from (its whole hour); a cluster job turns it into
        /// offsets with its own bindings, `up` with its log's record time ranges.
        #[arg(long)]
        from_time: Option<String>,
        /// Cluster job: offsets `PARTITION:OFFSET[,...]` (or `TOPIC/PARTITION:OFFSET`).
        #[arg(long, requires = "job", conflicts_with_all = ["from_time", "from_offset"])]
        from_offsets: Option<String>,
        /// `tidemark up`: the embedded-log offset to replay from.
        #[arg(long, conflicts_with_all = ["from_time", "job"])]
        from_offset: Option<u64>,
        /// Worker 0's control URL (default http://127.0.0.1:9471) or `up`'s URL (default
        /// http://127.0.0.1:9470).
        #[arg(long)]
        to: Option<String>,
        /// Return at once instead of showing progress until caught up.
        #[arg(long)]
        detach: bool,
        /// Stop showing progress after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
    },
    /// Bring existing data over into a running `tidemark up`: from a Prometheus server's
    /// remote-read API, an OpenMetrics or Prometheus text file with timestamps, or an
    /// `influx_inspect export`. Recent samples are pushed (the job rolls them up as live
    /// data); older ones, beyond the hot retention, are written straight to the cold tiers
    /// with their 1-minute and 1-hour rollups. Resumable: a second run skips what is done.
    Import {
        /// A Prometheus server's base URL (remote read, `/api/v1/read`).
        #[arg(long, conflicts_with = "from_file")]
        from_prometheus: Option<String>,
        /// Series selector(s) for --from-prometheus (repeatable), e.g. '{job=~".+"}'.
        #[arg(long = "match")]
        matches: Vec<String>,
        /// Start of the range for --from-prometheus (RFC 3339 or Unix seconds).
        #[arg(long)]
        start: Option<String>,
        /// End of the range for --from-prometheus (RFC 3339 or Unix seconds; default now).
        #[arg(long)]
        end: Option<String>,
        /// A file: OpenMetrics (as `promtool tsdb create-blocks-from openmetrics` takes), the
        /// Prometheus text format with millisecond timestamps, or an `influx_inspect export`.
        #[arg(long)]
        from_file: Option<PathBuf>,
        /// The file's format: openmetrics | prometheus | influx (default: detected).
        #[arg(long)]
        format: Option<String>,
        /// Timestamp precision of an Influx export: ns | us | ms | s.
        #[arg(long, default_value = "ns")]
        precision: String,
        /// The target `tidemark up`.
        #[arg(long, default_value = "http://127.0.0.1:9470")]
        url: String,
        /// A token with the write role, when the target has [auth] tokens.
        #[arg(long)]
        token: Option<String>,
        /// The cold tiers' URL (default: the one the target reports).
        #[arg(long)]
        cold_url: Option<String>,
        /// The resume state file.
        #[arg(long, default_value = "tidemark-import.state.json")]
        state: PathBuf,
        /// Samples per remote-write request (each a log record: larger requests carry each
        /// series' labels once for more samples).
        #[arg(long, default_value_t = 250_000)]
        batch: usize,
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

/// The command line's flags as `/api/v1/status/flags` lists them: each flag's long name and
/// its value (given or defaulted), the global ones and the subcommand's.
fn command_flags(matches: &clap::ArgMatches) -> Vec<(String, String)> {
    let root = <Cli as clap::CommandFactory>::command();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut add = |cmd: &clap::Command, m: &clap::ArgMatches| {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            let Some(name) = arg.get_long() else { continue };
            let Ok(Some(values)) = m.try_get_raw(id) else {
                continue;
            };
            let value = values
                .map(|v| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(",");
            if !out.iter().any(|(k, _)| k == name) {
                out.push((name.to_string(), value));
            }
        }
    };
    if let Some((name, sub)) = matches.subcommand() {
        if let Some(cmd) = root.find_subcommand(name) {
            add(cmd, sub);
        }
    }
    add(&root, matches);
    out
}

fn main() -> anyhow::Result<()> {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli =
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    tidemark::web::status::set_flags(command_flags(&matches));
    let format: tidemark::logging::Format = cli.log_format.parse()?;
    tidemark::logging::init(&cli.log_level, format)?;
    if let (Some(now), Some(was)) = tidemark::process::raise_open_file_limit() {
        tracing::debug!(target: "tidemark", "open file limit raised from {was} to {now}");
    }
    match cli.cmd {
        Cmd::Check { what } => {
            use tidemark::check;
            let report = match what {
                CheckCmd::Config { files } => check::config(&files),
                CheckCmd::Rules { files } => check::rules(&files),
                CheckCmd::Routing { files } => check::routing(&files),
                CheckCmd::Job { files } => check::job(&files),
                CheckCmd::Scrape { files } => check::scrape(&files),
            };
            print!("{}", report.text);
            if !report.ok {
                std::process::exit(1);
            }
            Ok(())
        }
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
            tidemark::process::up::run(cfg).context("tidemark up")
        }
        Cmd::Agent {
            push_to,
            interval,
            listen,
            job,
            instance,
            labels,
            token,
            buffer_memory,
            buffer_dir,
            buffer_disk,
            procfs,
        } => {
            use tidemark::process::agent::{parse_bytes, AgentOpts};
            let interval_ms = tidemark::time::parse_duration_ms(&interval)
                .filter(|ms| *ms >= 100)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--interval {interval:?}: give a duration of at least 100ms, e.g. 10s"
                    )
                })?;
            let instance = instance.unwrap_or_else(|| {
                std::fs::read_to_string(procfs.join("sys/kernel/hostname"))
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "localhost".into())
            });
            let mut all = vec![("instance".to_string(), instance), ("job".to_string(), job)];
            for l in &labels {
                let (k, v) = l
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--label {l:?}: give NAME=VALUE"))?;
                if !tidemark::model::is_valid_label_name(k) {
                    anyhow::bail!("--label {l:?}: {k:?} is not a valid label name");
                }
                all.retain(|(n, _)| n != k);
                all.push((k.to_string(), v.to_string()));
            }
            let size =
                |flag: &str, v: &str| parse_bytes(v).map_err(|e| anyhow::anyhow!("{flag}: {e}"));
            tidemark::process::agent::run(AgentOpts {
                push_to,
                interval_ms,
                listen,
                labels: all,
                buffer_memory: size("--buffer-memory", &buffer_memory)?,
                buffer_dir: (!buffer_dir.as_os_str().is_empty()).then_some(buffer_dir),
                buffer_disk: size("--buffer-disk", &buffer_disk)?,
                token: token.or_else(|| std::env::var("TIDEMARK_TOKEN").ok()),
                procfs,
            })
            .context("tidemark agent")
        }
        Cmd::Ingest {
            listen,
            config,
            brokers,
            topic,
            scrape,
            member,
            insecure,
        } => {
            let mut cfg = load_config(config.as_deref())?;
            cfg.server.listen = listen;
            if let Some(s) = scrape {
                cfg.scrape.config = Some(s);
            }
            if let Some(m) = member {
                cfg.scrape.ring.member = m;
            }
            if let Some(b) = brokers {
                cfg.kafka.brokers = b;
            }
            if let Some(t) = topic {
                cfg.kafka.topic = t;
            }
            refuse_open_without_tokens(&cfg, insecure)?;
            tidemark::process::ingest::run(cfg).context("tidemark ingest")
        }
        Cmd::Worker {
            process,
            processes,
            hosts,
            workers,
            data_dir,
            brokers,
            config,
            insecure,
        } => {
            let mut cfg = load_config(config.as_deref())?;
            let text = std::fs::read_to_string(&hosts)
                .with_context(|| format!("reading hosts file {}", hosts.display()))?;
            let hosts = tidemark::process::worker::parse_hosts(&text, &hosts.display().to_string())
                .map_err(anyhow::Error::msg)?;
            anyhow::ensure!(
                hosts.len() == processes,
                "--processes {processes} but the hosts file lists {} processes: make them agree",
                hosts.len()
            );
            if let Some(h) = hosts.get(process) {
                cfg.server.listen = h.http;
            }
            // What the status page shows as in effect: the flags override the file.
            cfg.server.data_dir = data_dir.clone();
            cfg.server.workers = workers.max(1);
            refuse_open_without_tokens(&cfg, insecure)?;
            tidemark::process::worker::run(tidemark::process::worker::WorkerOpts {
                process,
                hosts,
                workers,
                data_dir,
                brokers,
                limits: cfg.ingest.clone(),
                hot_retention_ms: cfg.hot.retention.0,
                auth: cfg.auth.clone(),
                checkpoint: cfg.checkpoint.clone(),
                query: cfg.query.clone(),
                ui: cfg.ui.clone(),
                status: std::sync::Arc::new(tidemark::web::status::ProcessStatus::new(
                    "worker", &cfg,
                )),
            })
            .context("tidemark worker")
        }
        Cmd::Notify {
            listen,
            data_dir,
            config,
            routing,
            brokers,
            topic,
            group,
            index,
            peers,
            insecure,
        } => {
            let mut cfg = load_config(config.as_deref())?;
            cfg.server.listen = listen;
            cfg.server.data_dir = data_dir.clone();
            if let Some(b) = &brokers {
                cfg.kafka.brokers = b.clone();
            }
            if let Some(r) = &routing {
                cfg.alerting.config = Some(r.clone());
            }
            refuse_open_without_tokens(&cfg, insecure)?;
            let external_url = if cfg.rules.external_url.is_empty() {
                format!("http://{listen}")
            } else {
                cfg.rules.external_url.clone()
            };
            let status =
                std::sync::Arc::new(tidemark::web::status::ProcessStatus::new("notify", &cfg));
            tidemark::process::notify::run(tidemark::process::notify::NotifyOpts {
                listen,
                data_dir,
                brokers: brokers.unwrap_or(cfg.kafka.brokers),
                topic,
                group,
                index,
                peers,
                routing: routing.or(cfg.alerting.config),
                external_url,
                status,
                auth: cfg.auth,
                commit_interval: std::time::Duration::from_secs(1),
            })
            .context("tidemark notify")
        }
        Cmd::Submit { file, to } => {
            println!("{}", tidemark::cluster::client::submit(&file, &to)?);
            Ok(())
        }
        Cmd::Jobs { to } => {
            print!("{}", tidemark::cluster::client::jobs(&to)?);
            Ok(())
        }
        Cmd::Tiers {
            data_dir,
            config,
            url,
        } => {
            let cfg = load_config(config.as_deref())?;
            let url = url.unwrap_or_else(|| cfg.cold.url(&data_dir));
            let store = tidemark::store::cold::ColdStore::open(&url)?;
            let listing = tidemark::store::cold::maintain::list(&store)?;
            println!("cold tiers at {url}");
            print!(
                "{}",
                tidemark::store::cold::maintain::summary(&store, &listing)?
            );
            Ok(())
        }
        Cmd::Cancel { name, to } => {
            println!("{}", tidemark::cluster::client::cancel(&name, &to)?);
            Ok(())
        }
        Cmd::Replay {
            job,
            from_time,
            from_offsets,
            from_offset,
            to,
            detach,
            timeout_secs,
        } => {
            let timeout = std::time::Duration::from_secs(timeout_secs);
            let out = match job {
                Some(job) => tidemark::cluster::client::replay(
                    &job,
                    from_time.as_deref(),
                    from_offsets.as_deref(),
                    to.as_deref().unwrap_or("http://127.0.0.1:9471"),
                    detach,
                    timeout,
                )?,
                None => tidemark::cluster::client::replay_log(
                    from_time.as_deref(),
                    from_offset,
                    to.as_deref().unwrap_or("http://127.0.0.1:9470"),
                    detach,
                    timeout,
                )?,
            };
            print!("{out}");
            Ok(())
        }
        Cmd::Import {
            from_prometheus,
            matches,
            start,
            end,
            from_file,
            format,
            precision,
            url,
            token,
            cold_url,
            state,
            batch,
        } => {
            use tidemark::import::{self, source::FileFormat, From};
            let precision = tidemark::ingest::influx::Precision::parse(&precision)
                .with_context(|| format!("--precision {precision:?}: use ns, us, ms or s"))?;
            let time = |flag: &str, v: &str| {
                tidemark::query::api::parse_time(v).map_err(|e| {
                    anyhow::anyhow!(
                        "{flag} {v:?}: {e}; use RFC 3339 (2026-11-22T10:00:00Z) or Unix seconds"
                    )
                })
            };
            let from = match (from_prometheus, from_file) {
                (Some(url), None) => From::Prometheus {
                    url,
                    matches,
                    start: time(
                        "--start",
                        start
                            .as_deref()
                            .context("--from-prometheus needs --start")?,
                    )?,
                    end: match end {
                        Some(e) => time("--end", &e)?,
                        None => tidemark::time::now_ms(),
                    },
                },
                (None, Some(path)) => From::File {
                    format: match format {
                        Some(f) => Some(FileFormat::parse(&f, precision).with_context(|| {
                            format!("--format {f:?}: use openmetrics, prometheus or influx")
                        })?),
                        None => None,
                    },
                    path,
                    precision,
                },
                _ => anyhow::bail!("give one source: --from-prometheus URL or --from-file FILE"),
            };
            let opts = import::Options {
                from,
                url,
                token,
                cold_url,
                state,
                batch,
                progress: true,
            };
            let summary = import::run(&opts)?;
            print!("{}", summary.text());
            Ok(())
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
    if !insecure && cfg.auth.tokens.is_empty() && !cfg.server.listen.ip().is_loopback() {
        anyhow::bail!(
            "refusing to serve {} without auth tokens: add [auth] tokens to the config, bind a loopback address, or pass --insecure",
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

//! A real Kafka-protocol broker for tests: tansu (installed by `.ci/test`), started on a free
//! loopback port with in-memory storage, and rdkafka clients to create topics and read them.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// The tansu binary: `$TANSU`, then `tansu` on the PATH, then `~/.cargo/bin/tansu`.
pub fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU") {
        return PathBuf::from(p);
    }
    super::installed_bin(
        "tansu",
        "cargo install tansu@0.6.0 --locked --features dynostore",
    )
}

/// A running broker.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    log: PathBuf,
}

impl Broker {
    /// Starts a broker on `port` (use [`super::free_port`]); `log_dir` receives its output.
    pub fn start_on(port: u16, log_dir: &std::path::Path) -> Broker {
        let log = log_dir.join(format!("tansu-{port}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start tansu");
        let mut b = Broker {
            child: Some(child),
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen in 30 s: {}",
                std::fs::read_to_string(&b.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Something listens; make sure it is tansu (another process may have taken the port
        // between free_port() and tansu's bind, and tansu then exits).
        std::thread::sleep(Duration::from_millis(300));
        if let Some(Ok(Some(st))) = b.child.as_mut().map(|c| c.try_wait()) {
            panic!(
                "tansu exited ({st}) although port {port} answers (taken by another process?): {}",
                std::fs::read_to_string(&b.log).unwrap_or_default()
            );
        }
        b
    }

    /// `host:port` for clients.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates a topic.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.addr())
            .create()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let res = rt
            .block_on(admin.create_topics(
                &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            ))
            .expect("create_topics");
        for r in res {
            r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
        }
    }

    /// Reads `partitions` of `topic` from the beginning until `want` messages were read or
    /// `timeout` passed: `(partition, offset, key, value)`.
    pub fn read_all(
        &self,
        topic: &str,
        partitions: i32,
        want: usize,
        timeout: Duration,
    ) -> Vec<(i32, i64, Vec<u8>, Vec<u8>)> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.addr())
            .set("group.id", "tidemark-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        c.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + timeout;
        while out.len() < want && Instant::now() < deadline {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
                out.push((
                    m.partition(),
                    m.offset(),
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                ));
            }
        }
        out
    }

    /// Produces one message with `value` to `partition` of `topic` (bypassing Tidemark, e.g.
    /// to inject malformed data).
    pub fn produce_raw(&self, topic: &str, partition: i32, value: &[u8]) {
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", self.addr())
            .set("batch.num.messages", "1")
            .set("linger.ms", "0")
            .create()
            .unwrap();
        p.send(
            BaseRecord::<(), [u8]>::to(topic)
                .payload(value)
                .partition(partition),
        )
        .map_err(|(e, _)| e)
        .unwrap();
        p.flush(Duration::from_secs(10)).unwrap();
    }

    /// Stops the broker (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

//! Scrape targets served by a test: many targets on one port, each scrape recorded.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{agent, free_port, installed_bin};

/// HTTP targets served by this test on one port: `/t/<i>` answers a small exposition and
/// records when it was scraped (keep-alive connections, as a pooled client makes them).
pub struct Fleet {
    pub addr: String,
    pub scrapes: Arc<Mutex<Vec<(usize, Instant)>>>,
    /// TCP connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Fleet {
    pub fn start() -> Fleet {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let scrapes: Arc<Mutex<Vec<(usize, Instant)>>> = Default::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let (s, rec, conns) = (
            Arc::clone(&stop),
            Arc::clone(&scrapes),
            Arc::clone(&connections),
        );
        std::thread::spawn(move || {
            while !s.load(Ordering::Acquire) {
                let Ok((c, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                conns.fetch_add(1, Ordering::Relaxed);
                let (s, rec) = (Arc::clone(&s), Arc::clone(&rec));
                std::thread::spawn(move || {
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(Duration::from_millis(500)))
                        .unwrap();
                    let mut w = c.try_clone().unwrap();
                    let mut r = BufReader::new(c);
                    while !s.load(Ordering::Acquire) {
                        let mut first = String::new();
                        match r.read_line(&mut first) {
                            Ok(0) => return,
                            Ok(_) => {}
                            Err(e)
                                if e.kind() == std::io::ErrorKind::WouldBlock
                                    || e.kind() == std::io::ErrorKind::TimedOut =>
                            {
                                continue
                            }
                            Err(_) => return,
                        }
                        let mut line = String::new();
                        while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                            line.clear();
                        }
                        let i: usize = first
                            .split_whitespace()
                            .nth(1)
                            .and_then(|p| p.strip_prefix("/t/"))
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(usize::MAX);
                        rec.lock().unwrap().push((i, Instant::now()));
                        let body = format!("# TYPE fleet_value gauge\nfleet_value {i}\n");
                        let _ = write!(
                            w,
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                    }
                });
            }
        });
        Fleet {
            addr,
            scrapes,
            connections,
            stop,
        }
    }

    /// Scrape times per target within `[from, to)`.
    pub fn scrapes_between(&self, from: Instant, to: Instant) -> BTreeMap<usize, Vec<Instant>> {
        let mut by: BTreeMap<usize, Vec<Instant>> = BTreeMap::new();
        for (i, t) in self.scrapes.lock().unwrap().iter() {
            if *t >= from && *t < to {
                by.entry(*i).or_default().push(*t);
            }
        }
        by
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl Fleet {
    /// Scrapes per target so far.
    pub fn counts(&self) -> BTreeMap<usize, usize> {
        let mut by = BTreeMap::new();
        for (i, _) in self.scrapes.lock().unwrap().iter() {
            *by.entry(*i).or_default() += 1;
        }
        by
    }
}

/// Debian's node_exporter on a free port (another when the bind races).
pub struct NodeExporter {
    child: Child,
    pub addr: String,
}

impl NodeExporter {
    pub fn start() -> NodeExporter {
        let bin = installed_bin(
            "prometheus-node-exporter",
            "Debian's prometheus-node-exporter",
        );
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&bin)
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let addr = format!("127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if agent()
                    .get(format!("http://{addr}/metrics"))
                    .call()
                    .is_ok_and(|r| r.status() == 200)
                {
                    return NodeExporter { child, addr };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("node_exporter did not start");
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

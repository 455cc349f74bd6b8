//! A real S3-compatible server for tests: s3s-fs (installed by `.ci/test`) serving a directory
//! on a free loopback port; a bucket is a directory under the root, an object a file.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "tidemark";
pub const SECRET_KEY: &str = "tidemark-secret";

fn s3s_bin() -> PathBuf {
    super::installed_bin(
        "s3s-fs",
        "cargo install s3s-fs@0.14.1 --locked --features binary",
    )
}

/// A running s3s-fs.
pub struct S3Server {
    pub port: u16,
    pub root: PathBuf,
    child: Option<Child>,
}

impl S3Server {
    /// Starts a server over `root` with `bucket` created.
    pub fn start(root: &Path, bucket: &str) -> S3Server {
        std::fs::create_dir_all(root.join(bucket)).unwrap();
        let mut s = S3Server {
            port: super::free_port(),
            root: root.to_path_buf(),
            child: None,
        };
        s.spawn();
        s
    }

    /// (Re)starts it on the same port.
    pub fn spawn(&mut self) {
        let child = Command::new(s3s_bin())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&self.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it (the directory stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The environment a client needs.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "AWS_ENDPOINT_URL".into(),
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

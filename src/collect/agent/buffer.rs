//! The agent's send buffer: a FIFO of encoded batches, in memory up to a bound, then spilled
//! to a directory up to a second bound (the oldest batches go to disk first, so the disk
//! holds the older part of the backlog and is sent first). Past both bounds the oldest batch
//! is dropped and its samples counted. Batches on disk survive a restart of the agent.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

/// One request body and what it carries.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub body: Vec<u8>,
    pub samples: u64,
}

/// A batch spilled to disk: `<seq>-<samples>.rw`.
#[derive(Debug)]
struct Spilled {
    path: PathBuf,
    bytes: usize,
    samples: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("agent buffer {path}: {reason}")]
pub struct BufferError {
    pub path: String,
    pub reason: String,
}

/// Memory, then disk, then drop.
#[derive(Debug)]
pub struct Buffer {
    mem: VecDeque<Batch>,
    mem_bytes: usize,
    mem_limit: usize,
    dir: Option<PathBuf>,
    disk: VecDeque<Spilled>,
    disk_bytes: usize,
    disk_limit: usize,
    next_seq: u64,
    /// Samples dropped because both bounds were full.
    pub dropped_samples: u64,
}

impl Buffer {
    /// A buffer holding up to `mem_limit` bytes in memory and `disk_limit` bytes in `dir`
    /// (`None`: no disk). Batches a previous run left in `dir` are picked up, oldest first.
    pub fn open(
        mem_limit: usize,
        dir: Option<&Path>,
        disk_limit: usize,
    ) -> Result<Buffer, BufferError> {
        let mut b = Buffer {
            mem: VecDeque::new(),
            mem_bytes: 0,
            mem_limit,
            dir: dir.map(Path::to_path_buf),
            disk: VecDeque::new(),
            disk_bytes: 0,
            disk_limit,
            next_seq: 0,
            dropped_samples: 0,
        };
        if let Some(d) = dir {
            let err = |reason: String| BufferError {
                path: d.display().to_string(),
                reason,
            };
            std::fs::create_dir_all(d).map_err(|e| err(format!("cannot create it: {e}")))?;
            let mut found: Vec<(u64, Spilled)> = Vec::new();
            for e in std::fs::read_dir(d)
                .map_err(|e| err(format!("cannot list it: {e}")))?
                .flatten()
            {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some((seq, samples)) = name
                    .strip_suffix(".rw")
                    .and_then(|s| s.split_once('-'))
                    .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
                else {
                    continue;
                };
                let bytes = e.metadata().map(|m| m.len() as usize).unwrap_or(0);
                found.push((
                    seq,
                    Spilled {
                        path: e.path(),
                        bytes,
                        samples,
                    },
                ));
            }
            found.sort_by_key(|(s, _)| *s);
            b.next_seq = found.last().map_or(0, |(s, _)| s + 1);
            for (_, s) in found {
                b.disk_bytes += s.bytes;
                b.disk.push_back(s);
            }
        }
        Ok(b)
    }

    /// Appends the newest batch; spills and drops the oldest as the bounds require.
    pub fn push(&mut self, batch: Batch) {
        self.mem_bytes += batch.body.len();
        self.mem.push_back(batch);
        while self.mem_bytes > self.mem_limit && !self.mem.is_empty() {
            let Some(old) = self.mem.pop_front() else {
                break;
            };
            self.mem_bytes -= old.body.len();
            if !self.spill(&old) {
                self.dropped_samples += old.samples;
            }
        }
        while self.disk_bytes > self.disk_limit {
            let Some(old) = self.disk.pop_front() else {
                break;
            };
            self.disk_bytes -= old.bytes;
            self.dropped_samples += old.samples;
            let _ = std::fs::remove_file(&old.path);
        }
    }

    /// Writes `b` to the disk queue (atomically: a temporary file renamed); false when there
    /// is no directory, the batch alone exceeds the disk bound, or the write failed.
    fn spill(&mut self, b: &Batch) -> bool {
        let Some(dir) = &self.dir else {
            return false;
        };
        if b.body.len() > self.disk_limit {
            return false;
        }
        let path = dir.join(format!("{:020}-{}.rw", self.next_seq, b.samples));
        let tmp = path.with_extension("tmp");
        let ok = std::fs::write(&tmp, &b.body)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .is_ok();
        if !ok {
            tracing::warn!(target: "tidemark::agent", path = %path.display(), "cannot spill a batch to disk; it is dropped");
            let _ = std::fs::remove_file(&tmp);
            return false;
        }
        self.next_seq += 1;
        self.disk_bytes += b.body.len();
        self.disk.push_back(Spilled {
            path,
            bytes: b.body.len(),
            samples: b.samples,
        });
        true
    }

    /// The oldest batch (from disk when the disk queue has any), without removing it. A
    /// spilled file that cannot be read is dropped (counted) and the next one tried.
    pub fn front(&mut self) -> Option<Batch> {
        while let Some(s) = self.disk.front() {
            match std::fs::read(&s.path) {
                Ok(body) => {
                    return Some(Batch {
                        body,
                        samples: s.samples,
                    })
                }
                Err(e) => {
                    tracing::warn!(target: "tidemark::agent", path = %s.path.display(), "spilled batch unreadable ({e}); dropped");
                    self.dropped_samples += s.samples;
                    self.disk_bytes -= s.bytes;
                    self.disk.pop_front();
                }
            }
        }
        self.mem.front().cloned()
    }

    /// Removes the oldest batch (after it was delivered, or refused for good).
    pub fn pop(&mut self) {
        if let Some(s) = self.disk.pop_front() {
            self.disk_bytes -= s.bytes;
            let _ = std::fs::remove_file(&s.path);
        } else if let Some(b) = self.mem.pop_front() {
            self.mem_bytes -= b.body.len();
        }
    }

    /// Writes the batches held in memory to the disk queue (after what is there, in order,
    /// within its bound); the samples written. For a clean stop: a restart sends them.
    pub fn flush_to_disk(&mut self) -> u64 {
        let mut kept = 0;
        while let Some(b) = self.mem.pop_front() {
            self.mem_bytes -= b.body.len();
            if self.disk_bytes + b.body.len() <= self.disk_limit && self.spill(&b) {
                kept += b.samples;
            } else {
                self.dropped_samples += b.samples;
            }
        }
        kept
    }

    /// (batches, bytes, samples) in memory and on disk.
    pub fn sizes(&self) -> [(usize, usize, u64); 2] {
        [
            (
                self.mem.len(),
                self.mem_bytes,
                self.mem.iter().map(|b| b.samples).sum(),
            ),
            (
                self.disk.len(),
                self.disk_bytes,
                self.disk.iter().map(|s| s.samples).sum(),
            ),
        ]
    }

    pub fn is_empty(&self) -> bool {
        self.mem.is_empty() && self.disk.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(i: u8) -> Batch {
        Batch {
            body: vec![i; 100],
            samples: 10,
        }
    }

    fn drain(b: &mut Buffer) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(x) = b.front() {
            out.push(x.body[0]);
            b.pop();
        }
        out
    }

    #[test]
    fn memory_then_disk_then_drop_oldest_in_order() {
        let d = tempfile::tempdir().unwrap();
        // 3 batches in memory, 4 on disk.
        let mut b = Buffer::open(300, Some(d.path()), 400).unwrap();
        for i in 0..10 {
            b.push(batch(i));
        }
        let [(mb, _, _), (db, _, _)] = b.sizes();
        assert_eq!((mb, db), (3, 4));
        assert_eq!(b.dropped_samples, 30, "the three oldest were dropped");
        assert_eq!(drain(&mut b), vec![3, 4, 5, 6, 7, 8, 9]);
        assert!(b.is_empty());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn spilled_batches_survive_a_restart() {
        let d = tempfile::tempdir().unwrap();
        {
            let mut b = Buffer::open(100, Some(d.path()), 10_000).unwrap();
            for i in 0..5 {
                b.push(batch(i));
            }
            // 4 on disk, 1 in memory (lost with the process).
        }
        let mut b = Buffer::open(100, Some(d.path()), 10_000).unwrap();
        b.push(batch(9));
        assert_eq!(drain(&mut b), vec![0, 1, 2, 3, 9]);
        // A clean stop writes memory to disk after what is there: nothing is lost.
        for i in 0..3 {
            b.push(batch(i));
        }
        assert_eq!(b.flush_to_disk(), 10);
        drop(b);
        let mut b = Buffer::open(100, Some(d.path()), 10_000).unwrap();
        assert_eq!(drain(&mut b), vec![0, 1, 2]);
    }

    #[test]
    fn without_a_directory_memory_only() {
        let mut b = Buffer::open(250, None, 0).unwrap();
        for i in 0..4 {
            b.push(batch(i));
        }
        assert_eq!(b.dropped_samples, 20);
        assert_eq!(drain(&mut b), vec![2, 3]);
    }
}

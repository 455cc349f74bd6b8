//! Checkpoint cuts of `tidemark up`'s job: the point in the log where every source stops, so
//! that the hot index holds exactly what the records before it produced.
//!
//! The protocol, driven by [`CutControl::cut`] from outside the workers:
//!
//! 1. **Hold**: every source stops reading and reports its position.
//! 2. **Target**: the cut is the highest of those positions; the sources behind it read up to
//!    it (every source reads every record header, so all of them pass that offset) and return
//!    [`Poll::Cut`](tidemark_dataflows::source::Poll::Cut): the operator moves the capability
//!    from the watermark `W` to `W + 1`, which every later record's samples are sent at or
//!    after anyway.
//! 3. **Drain**: once the frontier of the hot sinks (samples, 1-minute and 1-hour rollups)
//!    passes `W` on every worker, everything the records before the cut produced is in the
//!    index. The sources stay held while the checkpoint is written (see
//!    [`crate::store::hot::checkpoint`]), so the index holds no sample of a record after the
//!    cut (a restart rebuilds windows from it, and a sample a window dropped as too late after
//!    the cut must not come back); [`Held`] releases them when dropped. Ingest goes on into
//!    the log meanwhile; the job catches up after.
//!
//! A cut moves the watermark on by 1 ms: data read after it is stamped at least 1 ms after the
//! data before it (a window ending exactly at `W` closes before the records after the cut).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

const IDLE: u8 = 0;
const HOLD: u8 = 1;
const TO_TARGET: u8 = 2;

/// Marks kept for finding a replay point: one per second of watermark, for about a day.
const MAX_MARKS: usize = 100_000;

/// A consistent point of the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// Log offset: the index holds every record before it.
    pub offset: u64,
    /// The sources' watermark after the cut.
    pub watermark: u64,
    /// Where a restart reads from and at which watermark (see [`CutControl::replay_point`]).
    pub replay_offset: u64,
    pub replay_watermark: u64,
}

/// The oldest correction time each cold writer still buffers (it writes corrections when
/// their correction window ends, so what sent them is read again after a restart).
#[derive(Default)]
pub struct LateCorrections(Mutex<Vec<Weak<AtomicU64>>>);

impl LateCorrections {
    /// A writer's slot: it stores the send time of its oldest buffered correction
    /// (`u64::MAX`: none); dropping the slot unregisters it.
    pub fn register(&self) -> Arc<AtomicU64> {
        let a = Arc::new(AtomicU64::new(u64::MAX));
        let mut late = self.0.lock().unwrap_or_else(|e| e.into_inner());
        late.retain(|w| w.strong_count() > 0);
        late.push(Arc::downgrade(&a));
        a
    }

    /// The oldest over every writer (`u64::MAX`: none).
    pub fn oldest(&self) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .map(|a| a.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX)
    }
}

/// Why a cut was not taken.
#[derive(Debug, thiserror::Error)]
pub enum CutError {
    #[error("the job's sources did not reach the cut within {0:?} (stopped, or far behind)")]
    Timeout(Duration),
    #[error("the workers stopped at different watermarks ({0:?}); the cut is not consistent")]
    Diverged(Vec<u64>),
}

/// Shared between the job's sources and sinks and whoever takes cuts.
pub struct CutControl {
    phase: AtomicU8,
    target: AtomicU64,
    /// Per worker: the position it held at (`u64::MAX`: not yet).
    held: Vec<AtomicU64>,
    /// Per worker: its source moved its capability on for the current cut.
    moved: Vec<AtomicBool>,
    /// Per worker: the frontier of its hot sinks (`u64::MAX` once closed).
    pub done: Vec<AtomicU64>,
    /// (log offset, watermark before the record at that offset), from worker 0's source.
    marks: Mutex<VecDeque<(u64, u64)>>,
    /// Per cold writer: the oldest time of a correction it still buffers.
    late: LateCorrections,
    /// One cut at a time.
    lock: Mutex<()>,
}

/// What a source does at its next poll.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Read the next record.
    Read,
    /// Do not read; poll again shortly.
    Wait,
    /// Return `Poll::Cut` (once).
    Cut,
}

impl CutControl {
    pub fn new(workers: usize) -> Self {
        CutControl {
            phase: AtomicU8::new(IDLE),
            target: AtomicU64::new(0),
            held: (0..workers).map(|_| AtomicU64::new(u64::MAX)).collect(),
            moved: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            done: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            marks: Mutex::new(VecDeque::new()),
            late: LateCorrections::default(),
            lock: Mutex::new(()),
        }
    }

    /// Called by worker `w`'s source before it reads, at log position `pos`.
    pub fn step(&self, w: usize, pos: u64) -> Step {
        match self.phase.load(Ordering::Acquire) {
            HOLD => {
                self.held[w].store(pos, Ordering::Release);
                Step::Wait
            }
            TO_TARGET => {
                if pos < self.target.load(Ordering::Acquire) {
                    Step::Read
                } else if self.moved[w].load(Ordering::Acquire) {
                    Step::Wait
                } else {
                    Step::Cut
                }
            }
            _ => Step::Read,
        }
    }

    /// Called by worker `w`'s source once the operator moved its capability on (after
    /// [`Step::Cut`]).
    pub fn moved(&self, w: usize) {
        self.moved[w].store(true, Ordering::Release);
    }

    /// Records that the record at `offset` is sent at `watermark` (worker 0's source, when its
    /// watermark moves; at most one mark per second of watermark).
    pub fn mark(&self, offset: u64, watermark: u64) {
        let mut m = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        if m.back()
            .is_some_and(|&(_, w)| watermark < w.saturating_add(1000))
        {
            return;
        }
        m.push_back((offset, watermark));
        if m.len() > MAX_MARKS {
            m.pop_front();
        }
    }

    /// Forgets the marks: a (re)started job begins at `(offset, watermark)`.
    pub fn reset_marks(&self, offset: u64, watermark: u64) {
        let mut m = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        m.clear();
        m.push_back((offset, watermark));
    }

    /// Registers a cold writer's oldest buffered correction time.
    pub fn late_since(&self) -> Arc<AtomicU64> {
        self.late.register()
    }

    /// Where a restart from a cut at `(offset, watermark)` must read from: the cut itself,
    /// or, while a cold writer buffers corrections sent since time `L`, the newest mark at or
    /// before `L` (those corrections are written only when their correction window ends, so their records
    /// are read again).
    pub fn replay_point(&self, offset: u64, watermark: u64) -> (u64, u64) {
        let late = self.late.oldest();
        if late >= watermark {
            return (offset, watermark);
        }
        let m = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .rev()
            .find(|&&(_, w)| w <= late)
            .or(m.front())
            .copied()
            .unwrap_or((offset, watermark))
    }

    fn wait(&self, deadline: Instant, mut ok: impl FnMut() -> bool) -> bool {
        while !ok() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// Takes a cut (blocking; see the module documentation), given the workers' watermarks.
    /// The sources stay held until the returned guard is dropped.
    pub fn cut(
        &self,
        watermarks: &[AtomicU64],
        timeout: Duration,
    ) -> Result<(Cut, Held<'_>), CutError> {
        let one = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = Instant::now() + timeout;
        for (h, m) in self.held.iter().zip(&self.moved) {
            h.store(u64::MAX, Ordering::Release);
            m.store(false, Ordering::Release);
        }
        self.phase.store(HOLD, Ordering::Release);
        let res = (|| {
            if !self.wait(deadline, || {
                self.held
                    .iter()
                    .all(|h| h.load(Ordering::Acquire) != u64::MAX)
            }) {
                return Err(CutError::Timeout(timeout));
            }
            let target = self
                .held
                .iter()
                .map(|h| h.load(Ordering::Acquire))
                .max()
                .unwrap_or(0);
            self.target.store(target, Ordering::Release);
            self.phase.store(TO_TARGET, Ordering::Release);
            if !self.wait(deadline, || {
                self.moved.iter().all(|m| m.load(Ordering::Acquire))
            }) {
                return Err(CutError::Timeout(timeout));
            }
            let wms: Vec<u64> = watermarks
                .iter()
                .map(|w| w.load(Ordering::Acquire))
                .collect();
            let watermark = wms.iter().copied().min().unwrap_or(0);
            if wms.iter().any(|&w| w != watermark) {
                return Err(CutError::Diverged(wms));
            }
            if !self.wait(deadline, || {
                self.done
                    .iter()
                    .all(|d| d.load(Ordering::Acquire) >= watermark)
            }) {
                return Err(CutError::Timeout(timeout));
            }
            let (replay_offset, replay_watermark) = self.replay_point(target, watermark);
            Ok(Cut {
                offset: target,
                watermark,
                replay_offset,
                replay_watermark,
            })
        })();
        match res {
            Ok(cut) => Ok((
                cut,
                Held {
                    control: self,
                    _one: one,
                },
            )),
            Err(e) => {
                self.phase.store(IDLE, Ordering::Release);
                Err(e)
            }
        }
    }
}

/// The sources held at a cut; dropping it lets them read on.
pub struct Held<'a> {
    control: &'a CutControl,
    _one: std::sync::MutexGuard<'a, ()>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.control.phase.store(IDLE, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_point_goes_back_to_the_oldest_buffered_correction() {
        let c = CutControl::new(1);
        c.mark(0, 0);
        c.mark(100, 5_000);
        c.mark(150, 5_500); // within a second of the last mark: not kept
        c.mark(200, 9_000);
        let late = c.late_since();
        assert_eq!(c.replay_point(300, 10_000), (300, 10_000));
        late.store(8_000, Ordering::Release);
        assert_eq!(c.replay_point(300, 10_000), (100, 5_000));
        late.store(9_000, Ordering::Release);
        assert_eq!(c.replay_point(300, 10_000), (200, 9_000));
        late.store(u64::MAX, Ordering::Release);
        assert_eq!(c.replay_point(300, 10_000), (300, 10_000));
    }

    #[test]
    fn a_cut_waits_for_every_source_and_the_sinks() {
        let c = Arc::new(CutControl::new(2));
        let wms: Arc<Vec<AtomicU64>> = Arc::new(vec![AtomicU64::new(40), AtomicU64::new(40)]);
        let (c2, w2) = (Arc::clone(&c), Arc::clone(&wms));
        // Two scripted sources, worker 1 three records behind worker 0.
        let sources = std::thread::spawn(move || {
            let mut pos = [10u64, 7];
            let mut cut_seen = [false; 2];
            for _ in 0..10_000 {
                for w in 0..2 {
                    match c2.step(w, pos[w]) {
                        Step::Read => pos[w] += 1,
                        Step::Wait => {}
                        Step::Cut => {
                            assert!(!cut_seen[w], "a cut is returned once");
                            cut_seen[w] = true;
                            w2[w].store(41, Ordering::Release);
                            c2.moved(w);
                            c2.done[w].store(41, Ordering::Release);
                        }
                    }
                }
                if cut_seen == [true; 2] {
                    return pos;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            panic!("no cut");
        });
        let (cut, held) = c.cut(&wms, Duration::from_secs(10)).unwrap();
        let pos = sources.join().unwrap();
        // Held until released.
        assert_eq!(c.step(0, pos[0]), Step::Wait);
        drop(held);
        assert_eq!(
            pos[0], pos[1],
            "both sources stop at the highest held position"
        );
        assert_eq!(cut.offset, pos[0]);
        // Worker 0 may read on before the hold reaches it (the sources start first).
        assert!(cut.offset >= 10, "{cut:?}");
        assert_eq!(cut.watermark, 41);
        // No correction buffered: a restart reads from the cut itself.
        assert_eq!((cut.replay_offset, cut.replay_watermark), (cut.offset, 41));
        // Released: the sources read again.
        assert_eq!(c.step(0, 10), Step::Read);
    }
}

//! A pull-based source whose capability is its watermark.

use std::time::Duration;

use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, Stream};

use crate::types::Sample;

/// What a [`BatchSource`] has for the operator.
#[derive(Debug)]
pub enum Poll {
    /// One record: its largest event time (which advances the watermark even when this worker
    /// does not own the record's samples) and the samples this worker owns (maybe none).
    Ready { max_ts: i64, samples: Vec<Sample> },
    /// Nothing now; poll again after the given delay (or sooner if woken).
    Pending(Duration),
    /// The source stopped at a checkpoint cut: every record after it will be sent at a later
    /// time than every record before it, so the operator moves its capability on by one (the
    /// sinks' frontiers passing the old watermark then prove that all of it was applied).
    /// Return it once per cut, then `Pending` until the cut is released.
    Cut(Duration),
    /// The source is finished: the operator drops its capability.
    Done,
}

/// A partitioned, replayable input the operator pulls from (the embedded log, a Kafka
/// partition set, a test vector). Implementations do the I/O; the operator does the time.
pub trait BatchSource: 'static {
    fn poll(&mut self) -> Poll;
    /// Called after each record's samples were sent and the capability was downgraded to
    /// `watermark`; sources use it to report progress.
    fn progressed(&mut self, _watermark: u64) {}
}

/// Watermark settings (DESIGN.md section 5).
#[derive(Clone, Copy, Debug)]
pub struct WatermarkConfig {
    /// Subtracted from the largest event time seen to form the watermark.
    pub out_of_orderness_ms: u64,
    /// Records handled per activation before yielding to other operators.
    pub records_per_activation: usize,
    /// The first watermark (a restart resumes at its checkpoint's).
    pub start: u64,
}

impl Default for WatermarkConfig {
    fn default() -> Self {
        WatermarkConfig {
            out_of_orderness_ms: 5_000,
            records_per_activation: 16,
            start: 0,
        }
    }
}

/// Builds a source operator from `make(worker_index, peers)`.
///
/// Each record's samples are sent at the current capability (the watermark of the records
/// before it); a sample whose event time is below that time is late, and carries its true
/// event time for the windows to place. After each record the capability is downgraded to
/// `max(watermark, max_ts - out_of_orderness)`, so the outcome depends only on the record
/// sequence, not on batching or on the number of workers.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use timely::dataflow::operators::Capture;
/// use tidemark_dataflows::captured;
/// use tidemark_dataflows::source::{watermark_source, BatchSource, Poll, WatermarkConfig};
/// use tidemark_dataflows::Sample;
///
/// struct Script(Vec<(i64, Vec<Sample>)>);
/// impl BatchSource for Script {
///     fn poll(&mut self) -> Poll {
///         if self.0.is_empty() { return Poll::Done; }
///         let (max_ts, samples) = self.0.remove(0);
///         Poll::Ready { max_ts, samples }
///     }
/// }
/// let s = |ts| Sample { series: 1, ts, value: 1.0 };
/// let rx = timely::example(move |scope| {
///     let cfg = WatermarkConfig { out_of_orderness_ms: 1_000, ..Default::default() };
///     watermark_source(scope, "Script", cfg, move |_, _| Script(vec![
///         (10_000, vec![s(10_000)]),
///         (12_000, vec![s(12_000), s(8_500)]), // 8_500 is late: the watermark is 9_000
///     ])).capture()
/// });
/// assert_eq!(captured(rx), vec![(0, s(10_000)), (9_000, s(12_000)), (9_000, s(8_500))]);
/// ```
pub fn watermark_source<'s, S, F>(
    scope: Scope<'s, u64>,
    name: &str,
    config: WatermarkConfig,
    make: F,
) -> Stream<'s, u64, Vec<Sample>>
where
    S: BatchSource,
    F: FnOnce(usize, usize) -> S,
{
    let mut src = make(scope.index(), scope.peers());
    let activations = scope.activations();
    source(scope, name, move |cap, info| {
        let mut cap = Some(cap);
        if let Some(c) = cap.as_mut() {
            c.downgrade(&config.start);
        }
        let address = info.address;
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            for _ in 0..config.records_per_activation.max(1) {
                match src.poll() {
                    Poll::Ready {
                        max_ts,
                        mut samples,
                    } => {
                        if !samples.is_empty() {
                            output.session(&*c).give_container(&mut samples);
                        }
                        let wm = u64::try_from(max_ts)
                            .unwrap_or(0)
                            .saturating_sub(config.out_of_orderness_ms);
                        if wm > *c.time() {
                            c.downgrade(&wm);
                        }
                        src.progressed(*c.time());
                    }
                    Poll::Pending(delay) => {
                        activations.borrow_mut().activate_after(&address, delay);
                        return;
                    }
                    Poll::Cut(delay) => {
                        let next = c.time().saturating_add(1);
                        c.downgrade(&next);
                        src.progressed(next);
                        activations.borrow_mut().activate_after(&address, delay);
                        return;
                    }
                    Poll::Done => {
                        cap = None;
                        return;
                    }
                }
            }
            activations.borrow_mut().activate(&address);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::captured;
    use timely::dataflow::operators::Capture;

    struct Script(Vec<Poll>);
    impl BatchSource for Script {
        fn poll(&mut self) -> Poll {
            if self.0.is_empty() {
                return Poll::Done;
            }
            self.0.remove(0)
        }
    }

    #[test]
    fn starts_at_its_watermark_and_a_cut_moves_it_on_by_one() {
        let s = |ts| Sample {
            series: 1,
            ts,
            value: 1.0,
        };
        let rx = timely::example(move |scope| {
            let cfg = WatermarkConfig {
                out_of_orderness_ms: 1_000,
                start: 7_000,
                ..Default::default()
            };
            watermark_source(scope, "Script", cfg, move |_, _| {
                Script(vec![
                    Poll::Ready {
                        max_ts: 5_000,
                        samples: vec![s(5_000)],
                    },
                    Poll::Ready {
                        max_ts: 10_000,
                        samples: vec![s(10_000)],
                    },
                    Poll::Cut(Duration::ZERO),
                    Poll::Ready {
                        max_ts: 10_000,
                        samples: vec![s(9_999)],
                    },
                ])
            })
            .capture()
        });
        assert_eq!(
            captured(rx),
            vec![(7_000, s(5_000)), (7_000, s(10_000)), (9_001, s(9_999))]
        );
    }
}

//! A source over a partitioned log (Kafka): per-partition watermarks, idle partitions, and a
//! second output that carries the label sets of series the source has not sent before.

use std::collections::BTreeMap;
use std::time::Duration;

use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::{Scope, Stream};

use crate::types::Sample;

/// A series definition: its id and its canonical label bytes (the process that stores the
/// series needs its labels; the source that decoded them may live in another process).
pub type SeriesDef = (u64, Vec<u8>);

/// What a [`PartitionedSource`] has for the operator.
#[derive(Debug)]
pub enum PartPoll {
    /// One message of `partition`: its largest event time, its samples and the definitions of
    /// the series among them this source has not sent before.
    Record {
        partition: u32,
        max_ts: i64,
        samples: Vec<Sample>,
        series: Vec<SeriesDef>,
    },
    /// Nothing now; poll again after the delay (the operator re-evaluates idleness first).
    Pending(Duration),
    /// Finished (cancelled): the operator drops its capabilities.
    Done,
}

/// The I/O side of the source: Kafka consumers in `src/transport/kafka`, scripts in tests.
pub trait PartitionedSource: 'static {
    fn poll(&mut self) -> PartPoll;
    /// The partitions currently assigned to this worker (may grow while running).
    fn partitions(&self) -> Vec<u32>;
    /// Wall-clock time in ms: used only to decide that a partition is idle and, when every
    /// partition is idle, to let event time advance with wall time.
    fn now_ms(&self) -> i64;
    /// Called after every poll with the capability the operator now holds: every record
    /// returned before this call was sent at a time `<=` the previous value.
    fn progressed(&mut self, _watermark: u64) {}
    /// While true, the operator keeps its capability where it is: for input whose partition
    /// set is not known yet (a write-ahead log replayed at start), so nothing it sends is late.
    fn hold(&self) -> bool {
        false
    }
    /// The operator's first capability: a restart resuming where its replay point was sent
    /// (0 by default).
    fn start_time(&self) -> u64 {
        0
    }
}

/// Watermark settings (DESIGN.md section 5).
#[derive(Clone, Copy, Debug)]
pub struct PartitionWatermarks {
    pub out_of_orderness_ms: u64,
    /// A partition without messages for this long stops holding the watermark back; when all
    /// are idle, event time advances with wall time from the newest event seen.
    pub idle_timeout_ms: i64,
    /// Messages handled per activation before yielding.
    pub records_per_activation: usize,
}

impl Default for PartitionWatermarks {
    fn default() -> Self {
        PartitionWatermarks {
            out_of_orderness_ms: 5_000,
            idle_timeout_ms: 30_000,
            records_per_activation: 16,
        }
    }
}

/// Per-partition progress: the largest event time seen and when the last message came.
#[derive(Clone, Copy, Debug)]
struct PartState {
    max_ts: Option<i64>,
    last_ms: i64,
}

/// The watermark rule, separate from the operator so it can be tested on its own.
///
/// * A partition is active if it had a message within `idle_timeout` (a newly assigned
///   partition counts as active, with no events yet, for its first `idle_timeout`).
/// * With active partitions: the minimum over them of `max_ts - out_of_orderness`; an active
///   partition without events holds the watermark where it is.
/// * With none active (and at least `idle_timeout` after the source started): the watermark
///   follows wall time, `now - idle_timeout - out_of_orderness`. An idle worker must not hold
///   back the others (timely's frontier is the minimum over all workers), and it cannot know
///   how far they got, so it steps aside to wall time; when the whole input stops, every
///   window closes. Samples that later arrive on an idle partition with older event times are
///   late, as with Flink's idleness. Backfills of historical data therefore either keep the
///   input flowing or use a longer `idle_timeout`.
#[derive(Debug, Default)]
pub struct WatermarkTracker {
    parts: BTreeMap<u32, PartState>,
    /// Wall time the tracker first saw: a source without partitions holds its watermark for
    /// `idle_timeout` (its assignment may be on the way) before it follows wall time.
    started: Option<i64>,
}

impl WatermarkTracker {
    /// Notes wall time `now` as the start if none was noted yet.
    pub fn start(&mut self, now: i64) {
        self.started.get_or_insert(now);
    }

    /// Adds newly assigned partitions (first seen at `now`).
    pub fn assign(&mut self, partitions: &[u32], now: i64) {
        for &p in partitions {
            self.parts.entry(p).or_insert(PartState {
                max_ts: None,
                last_ms: now,
            });
        }
    }

    /// Records a message of `partition` with largest event time `max_ts`.
    pub fn observe(&mut self, partition: u32, max_ts: i64, now: i64) {
        let e = self.parts.entry(partition).or_insert(PartState {
            max_ts: None,
            last_ms: now,
        });
        e.max_ts = Some(e.max_ts.map_or(max_ts, |m| m.max(max_ts)));
        e.last_ms = now;
    }

    /// The watermark candidate at wall time `now` (the operator never moves backwards).
    pub fn watermark(&self, cfg: &PartitionWatermarks, now: i64) -> Option<u64> {
        let ooo = cfg.out_of_orderness_ms as i64;
        let mut active_min: Option<i64> = None;
        let mut any_active = false;
        for st in self.parts.values() {
            if now - st.last_ms < cfg.idle_timeout_ms {
                any_active = true;
                match st.max_ts {
                    Some(m) => active_min = Some(active_min.map_or(m, |a| a.min(m))),
                    None => return None,
                }
            }
        }
        let t = if any_active {
            active_min? - ooo
        } else {
            if now - self.started.unwrap_or(now) < cfg.idle_timeout_ms {
                return None;
            }
            now - ooo - cfg.idle_timeout_ms
        };
        Some(u64::try_from(t).unwrap_or(0))
    }
}

/// Builds the source from `make(worker_index, peers)`: returns `(samples, series definitions)`.
///
/// Each message's samples are sent at the current capability (a sample below it is late and
/// carries its true event time); after each poll the capability moves to the
/// [`WatermarkTracker`]'s watermark if that is higher. Both outputs share the time.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use timely::dataflow::operators::Capture;
/// use tidemark_dataflows::captured;
/// use tidemark_dataflows::partitioned::{partitioned_source, PartPoll, PartitionWatermarks, PartitionedSource};
/// use tidemark_dataflows::Sample;
///
/// // Two partitions; partition 1 lags, so it holds the watermark back.
/// struct Script(Vec<(u32, i64)>);
/// impl PartitionedSource for Script {
///     fn poll(&mut self) -> PartPoll {
///         if self.0.is_empty() { return PartPoll::Done; }
///         let (partition, ts) = self.0.remove(0);
///         let samples = vec![Sample { series: partition as u64, ts, value: 1.0 }];
///         PartPoll::Record { partition, max_ts: ts, samples, series: vec![] }
///     }
///     fn partitions(&self) -> Vec<u32> { vec![0, 1] }
///     fn now_ms(&self) -> i64 { 0 } // never idle
/// }
/// let rx = timely::example(|scope| {
///     let cfg = PartitionWatermarks { out_of_orderness_ms: 1_000, ..Default::default() };
///     let (samples, _series) = partitioned_source(scope, "Script", cfg,
///         |_, _| Script(vec![(0, 50_000), (1, 10_000), (0, 60_000), (1, 20_000)]));
///     samples.capture()
/// });
/// let times: Vec<(u64, i64)> = captured(rx).into_iter().map(|(t, s)| (t, s.ts)).collect();
/// // After (1, 10_000) the watermark is min(50_000, 10_000) - 1_000 = 9_000.
/// assert_eq!(times, vec![(0, 50_000), (0, 10_000), (9_000, 60_000), (9_000, 20_000)]);
/// ```
pub fn partitioned_source<'s, S, F>(
    scope: Scope<'s, u64>,
    name: &str,
    config: PartitionWatermarks,
    make: F,
) -> (
    Stream<'s, u64, Vec<Sample>>,
    Stream<'s, u64, Vec<SeriesDef>>,
)
where
    S: PartitionedSource,
    F: FnOnce(usize, usize) -> S,
{
    let mut src = make(scope.index(), scope.peers());
    let activations = scope.activations();
    let mut builder = OperatorBuilder::new(name.to_owned(), scope);
    let address = builder.operator_info().address;
    let (out_s, samples) = builder.new_output::<Vec<Sample>>();
    let (out_d, defs) = builder.new_output::<Vec<SeriesDef>>();
    let mut out_s = OutputBuilder::from(out_s);
    let mut out_d = OutputBuilder::from(out_d);
    let start = src.start_time();
    builder.build(move |mut caps| {
        for c in caps.iter_mut() {
            c.downgrade(&start);
        }
        let mut caps = Some(caps);
        let mut tracker = WatermarkTracker::default();
        move |_frontiers| {
            let Some(c) = caps.as_mut() else { return };
            let now = src.now_ms();
            tracker.start(now);
            tracker.assign(&src.partitions(), now);
            let mut next = Next::Yield;
            {
                let mut os = out_s.activate();
                let mut od = out_d.activate();
                for _ in 0..config.records_per_activation.max(1) {
                    match src.poll() {
                        PartPoll::Record {
                            partition,
                            max_ts,
                            mut samples,
                            mut series,
                        } => {
                            if !series.is_empty() {
                                od.session(&c[1]).give_container(&mut series);
                            }
                            if !samples.is_empty() {
                                os.session(&c[0]).give_container(&mut samples);
                            }
                            tracker.observe(partition, max_ts, src.now_ms());
                            advance(c, &tracker, &config, src.now_ms(), src.hold());
                            src.progressed(*c[0].time());
                        }
                        PartPoll::Pending(d) => {
                            next = Next::Wait(d);
                            break;
                        }
                        PartPoll::Done => {
                            next = Next::Done;
                            break;
                        }
                    }
                }
            }
            match next {
                Next::Done => caps = None,
                Next::Wait(d) => {
                    // Idleness is a matter of wall time: re-evaluate it while waiting.
                    advance(c, &tracker, &config, src.now_ms(), src.hold());
                    src.progressed(*c[0].time());
                    let wait = d.min(Duration::from_millis(
                        (config.idle_timeout_ms.max(4) / 4) as u64,
                    ));
                    activations.borrow_mut().activate_after(&address, wait);
                }
                Next::Yield => activations.borrow_mut().activate(&address),
            }
        }
    });
    (samples, defs)
}

enum Next {
    Yield,
    Wait(Duration),
    Done,
}

fn advance(
    caps: &mut [timely::dataflow::operators::Capability<u64>],
    tracker: &WatermarkTracker,
    cfg: &PartitionWatermarks,
    now: i64,
    hold: bool,
) {
    if hold {
        return;
    }
    if let Some(wm) = tracker.watermark(cfg, now) {
        if wm > *caps[0].time() {
            for c in caps.iter_mut() {
                c.downgrade(&wm);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PartitionWatermarks {
        PartitionWatermarks {
            out_of_orderness_ms: 1_000,
            idle_timeout_ms: 10_000,
            records_per_activation: 16,
        }
    }

    #[test]
    fn a_new_partition_without_events_holds_the_watermark() {
        let mut t = WatermarkTracker::default();
        t.assign(&[0, 1], 0);
        t.observe(0, 50_000, 1);
        assert_eq!(t.watermark(&cfg(), 2), None);
        t.observe(1, 40_000, 3);
        assert_eq!(t.watermark(&cfg(), 4), Some(39_000));
    }

    #[test]
    fn idle_partitions_stop_holding_it_back_and_all_idle_follows_wall_time() {
        let mut t = WatermarkTracker::default();
        t.observe(0, 50_000, 0);
        t.observe(1, 40_000, 0);
        t.observe(0, 60_000, 5_000);
        // Partition 1 idle since 0: only partition 0 counts.
        assert_eq!(t.watermark(&cfg(), 12_000), Some(59_000));
        // Both idle: wall time minus the idle timeout and the out-of-orderness.
        t.start(0);
        assert_eq!(t.watermark(&cfg(), 100_000), Some(100_000 - 10_000 - 1_000));
    }

    #[test]
    fn no_partitions_hold_for_the_idle_timeout_then_follow_wall_time() {
        let mut t = WatermarkTracker::default();
        t.start(95_000);
        assert_eq!(t.watermark(&cfg(), 100_000), None);
        assert_eq!(t.watermark(&cfg(), 105_000), Some(94_000));
    }
}

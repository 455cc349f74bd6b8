//! The cold-tier sink operator: hands every batch, with the time it was sent at, to a
//! [`TierSink`] that buffers it per partition, and tells the sink when the frontier moves so it
//! can seal (write) the partitions the frontier has passed.
//!
//! Its output carries no data; it holds a capability at the oldest time whose data is still
//! only in the sink's buffers, so a probe on it passes a time only once that data is durable
//! (the Kafka source commits offsets on that probe).

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use crate::sink::Done;

/// A writer of one cold tier.
pub trait TierSink<D>: 'static {
    /// `data` sent at `time` (the event-time frontier it was sent under).
    fn accept(&mut self, time: u64, data: &[D]);
    /// Every record sent before `frontier` has arrived: write what that completes. It returns
    /// once the files are durable (it retries a failing store, which holds the worker back).
    /// An empty frontier (the input closed: shutdown) seals nothing.
    fn advance(&mut self, frontier: u64);
    /// The oldest send time of data not yet durable.
    fn pending_since(&self) -> Option<u64>;
}

/// Writes `stream` into `sink`; see the module documentation.
///
/// # Examples
/// ```
/// use std::sync::{Arc, Mutex};
/// use timely::dataflow::operators::{Input, Probe};
/// use tidemark_dataflows::tier::{sink_tier, TierSink};
///
/// // Seals "hours" of 10 ticks once the frontier passes them.
/// struct Hours { buf: Vec<(u64, i64)>, out: Arc<Mutex<Vec<Vec<i64>>>> }
/// impl TierSink<i64> for Hours {
///     fn accept(&mut self, time: u64, data: &[i64]) {
///         self.buf.extend(data.iter().map(|&d| (time, d)));
///     }
///     fn advance(&mut self, frontier: u64) {
///         let (done, keep): (Vec<_>, Vec<_>) =
///             self.buf.drain(..).partition(|&(_, d)| (d / 10 + 1) * 10 <= frontier as i64);
///         self.buf = keep;
///         if !done.is_empty() {
///             self.out.lock().unwrap().push(done.into_iter().map(|x| x.1).collect());
///         }
///     }
///     fn pending_since(&self) -> Option<u64> { self.buf.iter().map(|x| x.0).min() }
/// }
/// let out = Arc::new(Mutex::new(Vec::new()));
/// let o = Arc::clone(&out);
/// timely::execute_directly(move |worker| {
///     let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
///         let (input, stream) = scope.new_input::<Vec<i64>>();
///         let done = sink_tier(stream, "Tier", Hours { buf: Vec::new(), out: o });
///         (input, done.probe().0)
///     });
///     input.send(3);
///     input.send(15);
///     input.advance_to(12);
///     for _ in 0..20 {
///         worker.step();
///     }
///     // 3 is sealed; 15, sent at 0, is only buffered: the probe has not passed 0.
///     assert!(probe.less_equal(&0));
///     input.advance_to(25);
///     worker.step_while(|| probe.less_than(&25));
/// });
/// assert_eq!(*out.lock().unwrap(), vec![vec![3], vec![15]]);
/// ```
pub fn sink_tier<'s, D, S>(stream: Stream<'s, u64, Vec<D>>, name: &str, mut sink: S) -> Done<'s>
where
    D: Clone + 'static,
    S: TierSink<D>,
{
    stream.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        Pipeline,
        name,
        move |_cap, _info| {
            let mut held: Option<Capability<u64>> = None;
            move |(input, frontier), _output| {
                input.for_each(|cap, data| {
                    let Some(&t) = cap.least() else { return };
                    sink.accept(t, data);
                    if held.as_ref().is_none_or(|h| t < *h.time()) {
                        held = cap.retain_least(0);
                    }
                });
                let Some(&f) = frontier.frontier().iter().min() else {
                    // The input closed (shutdown): what is buffered stays unwritten, and the
                    // source (the log, Kafka offsets) still holds it. Release the output so
                    // the dataflow can finish.
                    held = None;
                    return;
                };
                sink.advance(f);
                match sink.pending_since() {
                    None => held = None,
                    Some(t) => {
                        if let Some(h) = held.as_mut() {
                            if t > *h.time() {
                                h.downgrade(&t);
                            }
                        }
                    }
                }
            }
        },
    )
}

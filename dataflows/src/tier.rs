//! The cold-tier sink operator: hands every batch, with the time it was sent at, to a
//! [`TierSink`] that buffers it per partition, and tells the sink when the frontier moves so it
//! can seal (write) the partitions the frontier has passed.
//!
//! Its output carries no data; it holds a capability at the oldest time whose data is still
//! only in the sink's buffers, so a probe on it passes a time only once that data is durable
//! (the Kafka source commits offsets on that probe).
//!
//! An optional second stream, `after`, holds sealing back too: the sink advances to the lower
//! of both frontiers. The cluster passes the series catalog's [`Done`] stream, so a partition
//! is written only once every series definition sent before its seal is registered (a
//! definition travels apart from its samples and can reach another worker later).

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Capability, ToStream};
use timely::dataflow::Stream;

use crate::sink::Done;

/// The worker among `peers` that timely's exchange sends a record keyed `key` to (as in
/// `stream.exchange(|s: &Sample| s.series)`): the key's low bits when `peers` is a power of
/// two, the key modulo `peers` otherwise; both are `key % peers`. A cold writer lists the
/// series it owns in the hot index with it instead of remembering every series it was sent.
///
/// # Examples
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use timely::dataflow::operators::{Exchange, Inspect, ToStream};
/// use tidemark_dataflows::tier::worker_of;
///
/// for peers in [3, 4] {
///     let seen = Arc::new(AtomicUsize::new(0));
///     let s = Arc::clone(&seen);
///     timely::execute(timely::Config::process(peers), move |worker| {
///         let (index, peers) = (worker.index(), worker.peers());
///         let s = Arc::clone(&s);
///         worker.dataflow::<u64, _, _>(|scope| {
///             // Worker 0 sends every key; each arrives where `worker_of` says.
///             let keys: Vec<u64> = match index {
///                 0 => (0..1000u64).map(|k| k * 7919).collect(),
///                 _ => vec![],
///             };
///             keys.to_stream(scope)
///                 .container::<Vec<u64>>()
///                 .exchange(|k: &u64| *k)
///                 .inspect(move |k: &u64| {
///                     assert_eq!(worker_of(*k, peers), index);
///                     s.fetch_add(1, Ordering::Relaxed);
///                 });
///         });
///     })
///     .unwrap();
///     assert_eq!(seen.load(Ordering::Relaxed), 1000);
/// }
/// ```
pub fn worker_of(key: u64, peers: usize) -> usize {
    (key % peers.max(1) as u64) as usize
}

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

/// Writes `stream` into `sink`, sealing only what the frontiers of both `stream` and `after`
/// have passed; see the module documentation.
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
///         let done = sink_tier(stream, None, "Tier", Hours { buf: Vec::new(), out: o });
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
pub fn sink_tier<'s, D, S>(
    stream: Stream<'s, u64, Vec<D>>,
    after: Option<Done<'s>>,
    name: &str,
    mut sink: S,
) -> Done<'s>
where
    D: Clone + 'static,
    S: TierSink<D>,
{
    // Without `after`, an empty stream: its frontier is empty at once and holds nothing back.
    let after = after.unwrap_or_else(|| {
        Vec::<()>::new()
            .to_stream(stream.scope())
            .container::<Vec<()>>()
    });
    stream.binary_frontier::<_, CapacityContainerBuilder<Vec<()>>, _, _, _, _>(
        after,
        Pipeline,
        Pipeline,
        name,
        move |_cap, _info| {
            let mut held: Option<Capability<u64>> = None;
            move |(input, frontier), (other, after), _output| {
                other.for_each(|_, _| {});
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
                let f = after.frontier().iter().min().map_or(f, |&a| a.min(f));
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

/// A sink that may be absent: `None` accepts and drops, so every worker can build the same
/// dataflow (timely needs identical operator graphs) even where one could not open its store.
impl<D, S: TierSink<D>> TierSink<D> for Option<S> {
    fn accept(&mut self, time: u64, data: &[D]) {
        if let Some(s) = self {
            s.accept(time, data);
        }
    }
    fn advance(&mut self, frontier: u64) {
        if let Some(s) = self {
            s.advance(frontier);
        }
    }
    fn pending_since(&self) -> Option<u64> {
        self.as_ref().and_then(|s| s.pending_since())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use timely::dataflow::operators::{Input, Probe};

    /// Seals everything below the frontier it is given; records the frontiers.
    struct Seen(Arc<Mutex<Vec<u64>>>, Vec<(u64, u64)>);
    impl TierSink<u64> for Seen {
        fn accept(&mut self, time: u64, data: &[u64]) {
            self.1.extend(data.iter().map(|&d| (time, d)));
        }
        fn advance(&mut self, frontier: u64) {
            self.1.retain(|&(t, _)| t >= frontier);
            self.0.lock().unwrap().push(frontier);
        }
        fn pending_since(&self) -> Option<u64> {
            self.1.iter().map(|x| x.0).min()
        }
    }

    /// The sink seals nothing the `after` stream has not passed: the cluster's catalog holds
    /// partitions back until the definitions of their series are registered.
    #[test]
    fn after_holds_sealing_back() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        timely::execute_directly(move |worker| {
            let (mut data, mut gate, probe) = worker.dataflow::<u64, _, _>(|scope| {
                let (data, stream) = scope.new_input::<Vec<u64>>();
                let (gate, after) = scope.new_input::<Vec<()>>();
                let done = sink_tier(stream, Some(after), "Tier", Seen(s, Vec::new()));
                (data, gate, done.probe().0)
            });
            data.advance_to(2);
            data.send(7);
            data.advance_to(10);
            gate.advance_to(3);
            worker.step_while(|| probe.less_than(&3));
            for _ in 0..10 {
                worker.step();
            }
            assert!(probe.less_equal(&3), "the gate at 3 holds the probe at 3");
            gate.advance_to(10);
            worker.step_while(|| probe.less_than(&10));
        });
        let seen = seen.lock().unwrap();
        assert_eq!(seen.iter().max(), Some(&10));
        assert!(seen.iter().all(|&f| f <= 10));
        assert!(seen.contains(&3), "{seen:?}");
        assert!(!seen.iter().any(|&f| f > 3 && f < 10), "{seen:?}");
    }
}

//! Sinks: apply raw samples and rollups to a store (the hot index in `src/store/hot`).

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use crate::types::{Rollup, Sample};

/// A store the job writes into. Implementations must be idempotent: the same series and
/// timestamp (or window start) written twice leaves one value, the last.
pub trait HotSink {
    fn append(&self, samples: &[Sample]);
    fn upsert_rollups(&self, rollups: &[Rollup]);
}

impl<T: HotSink + ?Sized> HotSink for std::sync::Arc<T> {
    fn append(&self, samples: &[Sample]) {
        (**self).append(samples)
    }
    fn upsert_rollups(&self, rollups: &[Rollup]) {
        (**self).upsert_rollups(rollups)
    }
}

/// Applies every sample of `stream` to `sink` (on the worker that holds it).
///
/// # Examples
/// ```
/// use std::sync::{Arc, Mutex};
/// use timely::dataflow::operators::ToStream;
/// use tidemark_dataflows::sink::{sink_samples, HotSink};
/// use tidemark_dataflows::{Rollup, Sample};
///
/// #[derive(Default)]
/// struct Mem(Mutex<Vec<Sample>>);
/// impl HotSink for Mem {
///     fn append(&self, s: &[Sample]) { self.0.lock().unwrap().extend_from_slice(s) }
///     fn upsert_rollups(&self, _: &[Rollup]) {}
/// }
/// let got = timely::example(|scope| {
///     let mem = Arc::new(Mem::default());
///     let s = (0..3).map(|i| Sample { series: 7, ts: i, value: 0.5 }).to_stream(scope).container::<Vec<_>>();
///     sink_samples(s, Arc::clone(&mem));
///     mem
/// });
/// assert_eq!(got.0.lock().unwrap().len(), 3);
/// ```
pub fn sink_samples<S: HotSink + 'static>(stream: Stream<'_, u64, Vec<Sample>>, sink: S) {
    stream.sink(Pipeline, "HotAppend", move |(input, _frontier)| {
        input.for_each(|_, data| sink.append(data));
    });
}

/// Upserts every rollup of `stream` into `sink`.
///
/// # Examples
/// ```
/// use std::sync::{Arc, Mutex};
/// use timely::dataflow::operators::ToStream;
/// use tidemark_dataflows::sink::{sink_rollups, HotSink};
/// use tidemark_dataflows::{Rollup, Sample};
///
/// #[derive(Default)]
/// struct Mem(Mutex<Vec<Rollup>>);
/// impl HotSink for Mem {
///     fn append(&self, _: &[Sample]) {}
///     fn upsert_rollups(&self, r: &[Rollup]) { self.0.lock().unwrap().extend_from_slice(r) }
/// }
/// let got = timely::example(|scope| {
///     let mem = Arc::new(Mem::default());
///     let r = Rollup::from_sorted(7, 0, 60_000, &[(0, 1.0), (10_000, 3.0)]).unwrap();
///     sink_rollups(Some(r).to_stream(scope).container::<Vec<_>>(), Arc::clone(&mem));
///     mem
/// });
/// assert_eq!(got.0.lock().unwrap()[0].sum, 4.0);
/// ```
pub fn sink_rollups<S: HotSink + 'static>(stream: Stream<'_, u64, Vec<Rollup>>, sink: S) {
    stream.sink(Pipeline, "HotRollups", move |(input, _frontier)| {
        input.for_each(|_, data| sink.upsert_rollups(data));
    });
}

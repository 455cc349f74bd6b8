//! Sinks: apply raw samples and rollups to a store (the hot index in `src/store/hot`).

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::OutputBuilderSession;

use crate::types::{Rollup, Sample};

/// A sink's empty output: its frontier passes a time once the sink has applied everything at
/// that time (probe it to know what is applied).
pub type Done<'s> = Stream<'s, u64, Vec<()>>;

/// A store the job writes into. Implementations must be idempotent: the same series and
/// timestamp (or window start) written twice leaves one value, the last.
pub trait HotSink {
    fn append(&self, samples: &[Sample]);
    fn upsert_rollups(&self, rollups: &[Rollup]);
    /// A hint that the samples of `series` are read next (a closing window reads its series
    /// back, a slice at a time): a store whose entries are cache misses can load them all
    /// first, so that the misses overlap. Nothing by default.
    fn warm(&self, _series: &[u64]) {}
    /// Appends as [`HotSink::append`] does, and sets `before[i]` to the newest sample the
    /// series of `samples[i]` held before it was appended (`None`: not known). A window that
    /// reads its records back from the store notes a series once per window instead of once
    /// per sample with it ([`sample_rollups_stored`](crate::stored::sample_rollups_stored)).
    /// By default nothing is known, which is always correct.
    fn append_reporting(&self, samples: &[Sample], before: &mut Vec<Option<(i64, f64)>>) {
        self.append(samples);
        before.clear();
        before.resize(samples.len(), None);
    }
}

impl<T: HotSink + ?Sized> HotSink for std::sync::Arc<T> {
    fn append(&self, samples: &[Sample]) {
        (**self).append(samples)
    }
    fn upsert_rollups(&self, rollups: &[Rollup]) {
        (**self).upsert_rollups(rollups)
    }
    fn warm(&self, series: &[u64]) {
        (**self).warm(series)
    }
    fn append_reporting(&self, samples: &[Sample], before: &mut Vec<Option<(i64, f64)>>) {
        (**self).append_reporting(samples, before)
    }
}

/// A catalog that learns series labels from the job (cluster mode: the process that stores a
/// series is not the one that decoded it). Registering twice is harmless.
pub trait SeriesSink {
    fn register(&self, id: u64, canonical: &[u8]);
}

impl<T: SeriesSink + ?Sized> SeriesSink for std::sync::Arc<T> {
    fn register(&self, id: u64, canonical: &[u8]) {
        (**self).register(id, canonical)
    }
}

/// Registers every series definition of `stream` (exchange it by id first, like the samples).
/// Samples may reach the store before their definition; they become visible to queries once
/// it arrives.
///
/// # Examples
/// ```
/// use std::sync::{Arc, Mutex};
/// use timely::dataflow::operators::ToStream;
/// use tidemark_dataflows::sink::{sink_series, SeriesSink};
///
/// #[derive(Default)]
/// struct Cat(Mutex<Vec<u64>>);
/// impl SeriesSink for Cat {
///     fn register(&self, id: u64, _: &[u8]) { self.0.lock().unwrap().push(id) }
/// }
/// let got = timely::example(|scope| {
///     let cat = Arc::new(Cat::default());
///     let defs = vec![(7u64, b"__name__\xffup".to_vec())].to_stream(scope).container::<Vec<_>>();
///     sink_series(defs, Arc::clone(&cat));
///     cat
/// });
/// assert_eq!(*got.0.lock().unwrap(), vec![7]);
/// ```
pub fn sink_series<'s, S: SeriesSink + 'static>(
    stream: Stream<'s, u64, Vec<crate::partitioned::SeriesDef>>,
    sink: S,
) -> Done<'s> {
    apply_each(stream, "RegisterSeries", move |data| {
        for (id, c) in data {
            sink.register(*id, c);
        }
    })
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
pub fn sink_samples<'s, S: HotSink + 'static>(
    stream: Stream<'s, u64, Vec<Sample>>,
    sink: S,
) -> Done<'s> {
    apply_each(stream, "HotAppend", move |data| sink.append(data))
}

/// A sink operator: `apply` gets every batch; the output carries no data, only the frontier.
fn apply_each<'s, D: Clone + 'static>(
    stream: Stream<'s, u64, Vec<D>>,
    name: &str,
    mut apply: impl FnMut(&[D]) + 'static,
) -> Done<'s> {
    stream.unary(Pipeline, name, |_, _| {
        move |input, _output: &mut OutputBuilderSession<'_, u64, CapacityContainerBuilder<Vec<()>>>| {
            input.for_each(|_, data| apply(data));
        }
    })
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
pub fn sink_rollups<'s, S: HotSink + 'static>(
    stream: Stream<'s, u64, Vec<Rollup>>,
    sink: S,
) -> Done<'s> {
    apply_each(stream, "HotRollups", move |data| sink.upsert_rollups(data))
}

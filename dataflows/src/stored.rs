//! Windows whose state is the store: an open window holds which series have records in it,
//! and reads each series' records back from where they are stored (the hot index) when it
//! closes, and again for a correction.
//!
//! [`window::windows`](crate::window::windows) keeps the records themselves: at 1 M series a
//! 1-minute window held a series' samples packed (about 30 bytes) for as long as it was open
//! for lateness (six windows), with its slot, 300-340 bytes a series, the job's largest state
//! after the hot index. Here a window holds a set entry per series until it closes (a list
//! entry in [`sample_rollups_stored`], whose store reports each series' newest sample before
//! an append: see [`HotSink::append_reporting`]), and nothing after.
//!
//! - [`rollups_from_store`]: 1-hour rollups from the 1-minute ones a sink upserted into the
//!   store (the sink is a separate operator: a window re-reads once the sink's frontier passed
//!   the records it noted).
//! - [`sample_rollups_stored`]: 1-minute rollups of raw samples, with the raw sink inside the
//!   operator. Being the only writer of its series' samples, it knows exactly what the store
//!   holds when it reads: every sample it was sent, including those it dropped from the rollups
//!   as later than the allowed lateness, whose earlier state it notes before writing them.

use std::collections::BTreeMap;
use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use crate::memory::{hash_slot, Component, Reported};
use crate::sink::{Done, HotSink};
use crate::types::{IdMap, IdSet, LateStats, Rollup, Sample, STALE_NAN_BITS};
use crate::window::{admit, batch_time, passed, Windowed, EMIT_PER_ACTIVATION};

/// Reads the finer rollups of one series whose window starts in `[start, end)` from where a
/// sink stored them (the hot index), sorted by start, appended to the vector.
pub type RollupStore = Arc<dyn Fn(u64, i64, i64, &mut Vec<Rollup>) + Send + Sync>;

/// Reads the raw samples of one series with time in `[from, to]` from the store, sorted by
/// time, one per time (the last written wins), staleness markers included, appended to the
/// vector.
pub type SampleStore = Arc<dyn Fn(u64, i64, i64, &mut Vec<(i64, f64)>) + Send + Sync>;

/// Series a closing window reads back after one [`HotSink::warm`] hint: their entries' lines
/// stay in the cache until the reads reach them.
const WARM_SLICE: usize = 32;

/// The series noted in an open window: a set, or a list that may name a series more than once
/// (for a caller that notes a series about once per window: [`sample_rollups_stored`] notes
/// only a series' first sample in a window as its store reports it). A list takes 8 bytes a
/// series where a set took 17 at 1 M series (its power-of-two table half empty), and is
/// sorted in place when the window is emitted instead of copied out of a set.
enum Noted {
    Set(IdSet),
    List(Vec<u64>),
}

impl Noted {
    fn new(listed: bool) -> Self {
        if listed {
            Noted::List(Vec::new())
        } else {
            Noted::Set(IdSet::default())
        }
    }

    fn insert(&mut self, series: u64) {
        match self {
            Noted::Set(s) => {
                s.insert(series);
            }
            Noted::List(v) => {
                if v.len() == v.capacity() {
                    // By a quarter, not by doubling: a window's list holds a worker's series.
                    v.reserve_exact((v.len() / 4).max(64));
                }
                v.push(series);
            }
        }
    }

    /// The series noted, sorted, each once; leaves this empty.
    fn take_sorted(&mut self) -> Vec<u64> {
        let mut ids = match self {
            Noted::Set(s) => std::mem::take(s).into_iter().collect(),
            Noted::List(v) => std::mem::take(v),
        };
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Estimated bytes held.
    fn bytes(&self) -> i64 {
        match self {
            Noted::Set(s) => s.capacity() as i64 * hash_slot(8),
            Noted::List(v) => v.capacity() as i64 * 8,
        }
    }
}

/// An open window: which series have records in it.
struct StoreWindow {
    cap: Capability<u64>,
    /// The series seen before the emission began (taken by it).
    series: Noted,
    /// Set when the emission begins: records after that mark their series dirty.
    emitted: bool,
    /// Opened by a record sent at or before its end: every series with samples in it was
    /// noted, or is named by the restart's seed. A window a late record opens after its end
    /// (after a restart: one emitted before it) may have series only the store knows of.
    fresh: bool,
    /// While the emission is under way: the series to emit, sorted, and how many went out
    /// (at most [`EMIT_PER_ACTIVATION`] per activation, each read back from the store).
    emitting: Option<(Vec<u64>, usize)>,
    /// Series a record corrected after the window was emitted, with the latest time such a
    /// record was sent at (re-emitted once the store holds it).
    dirty: IdMap<u64>,
}

/// The windows of one operator, by start.
struct StoreWindows {
    width: i64,
    lateness: i64,
    open: BTreeMap<i64, StoreWindow>,
    /// Windows note their series in lists ([`Noted::List`]) rather than sets.
    listed: bool,
}

impl StoreWindows {
    fn new(width: i64, lateness: i64, listed: bool) -> Self {
        assert!(
            width > 0 && lateness >= 0,
            "window width must be positive and lateness non-negative"
        );
        StoreWindows {
            width,
            lateness,
            open: BTreeMap::new(),
            listed,
        }
    }

    /// Whether the window starting at `start` is open, fresh (see [`StoreWindow::fresh`]) and
    /// its emission has not begun: a series noted in it is still there, and one with samples
    /// in it from before a restart is noted too once the seed is read.
    fn collecting(&self, start: i64) -> bool {
        self.open.get(&start).is_some_and(|w| !w.emitted && w.fresh)
    }

    /// The last time a record of the window starting at `start` can be sent at and be taken.
    fn gone(&self, start: i64) -> i64 {
        let end = start.saturating_add(self.width);
        end.max(end.saturating_add(self.lateness) - 1)
    }

    /// Whether the window starting at `start` may still be read: it is open (its emission or
    /// a correction may be pending, even once the frontier passed its lateness: a window is
    /// emitted after the records an activation took), or a record can still open it.
    fn may_read(&self, start: i64, all: impl Fn(i64) -> bool) -> bool {
        self.open.contains_key(&start) || !all(self.gone(start))
    }

    /// Notes that `series` has a record in the window starting at `start`, sent at `t`.
    /// `seeded`: a seed record after a restart at `t`. A window it opens that ended before `t`
    /// was emitted before the restart (see
    /// [`windows_seeded`](crate::window::windows_seeded)): it starts as emitted, and only
    /// records after the seed re-emit a series.
    fn note(&mut self, cap: &Capability<u64>, series: u64, start: i64, t: u64, seeded: bool) {
        let ended = u64::try_from(start.saturating_add(self.width)).is_ok_and(|end| end < t);
        let listed = self.listed;
        let w = self.open.entry(start).or_insert_with(|| StoreWindow {
            cap: cap.clone(),
            series: Noted::new(listed),
            emitted: seeded && ended,
            fresh: !ended,
            emitting: None,
            dirty: IdMap::default(),
        });
        if seeded && ended {
            return;
        }
        if w.emitted {
            // Sent (or read back) before this record was stored, perhaps: again once the
            // store has it.
            let d = w.dirty.entry(series).or_insert(t);
            *d = (*d).max(t);
        } else {
            w.series.insert(series);
        }
    }

    /// Emits what the closed windows owe, reading at most [`EMIT_PER_ACTIVATION`] series:
    /// `all(t)`: no record sent at or before `t` can still come; `stored(t)`: the store holds
    /// every record sent at or before `t`; `give` gets each window's rollups with its
    /// capability. Retires the windows past their lateness and returns their starts, and
    /// whether work is left for another activation (the capabilities stay until then).
    fn emit(
        &mut self,
        lowest: Option<u64>,
        all: impl Fn(i64) -> bool,
        stored: impl Fn(i64) -> bool,
        mut read: impl FnMut(u64, i64, i64) -> Option<Rollup>,
        mut warm: impl FnMut(&[u64]),
        mut give: impl FnMut(&Capability<u64>, &mut Vec<Rollup>),
    ) -> (Vec<i64>, bool) {
        let mut retired = Vec::new();
        let mut more = false;
        let mut budget = EMIT_PER_ACTIVATION;
        let mut batch = Vec::new();
        let (width, lateness) = (self.width, self.lateness);
        for (&start, w) in self.open.iter_mut() {
            let end = start.saturating_add(width);
            if all(end) {
                if budget == 0 && (!w.emitted || w.emitting.is_some()) {
                    // Older windows used this activation's slice: the capability stays.
                    more = true;
                    continue;
                }
                if !w.emitted {
                    w.emitted = true;
                    w.emitting = Some((w.series.take_sorted(), 0));
                }
                let mut left = false;
                if let Some((ids, sent)) = &mut w.emitting {
                    let n = budget.min(ids.len() - *sent);
                    for slice in ids[*sent..*sent + n].chunks(WARM_SLICE) {
                        warm(slice);
                        batch.extend(slice.iter().filter_map(|&series| read(series, start, end)));
                    }
                    *sent += n;
                    budget -= n;
                    left = *sent < ids.len();
                    if !left {
                        w.emitting = None;
                    }
                }
                if !left {
                    let ready: Vec<u64> = w
                        .dirty
                        .iter()
                        .filter(|(_, &t)| stored(i64::try_from(t).unwrap_or(i64::MAX)))
                        .map(|(&s, _)| s)
                        .collect();
                    for series in ready {
                        w.dirty.remove(&series);
                        batch.extend(read(series, start, end));
                    }
                }
                if !batch.is_empty() {
                    give(&w.cap, &mut batch);
                    batch.clear();
                }
                if left {
                    // The capability stays where it is until the last slice is out.
                    more = true;
                    continue;
                }
                let gone = end.max(end.saturating_add(lateness) - 1);
                if all(gone) && w.dirty.is_empty() {
                    retired.push(start);
                    continue;
                }
            }
            if let Some(f) = lowest {
                if f > *w.cap.time() {
                    w.cap.downgrade(&f);
                }
            }
        }
        for s in &retired {
            self.open.remove(s);
        }
        (retired, more)
    }

    /// Estimated bytes held (see [`crate::memory`]).
    fn bytes(&self) -> i64 {
        let set = hash_slot(8);
        self.open
            .values()
            .map(|w| {
                let ids = w
                    .emitting
                    .as_ref()
                    .map_or(0, |(ids, _)| ids.capacity() as i64 * 8);
                w.series.bytes() + w.dirty.capacity() as i64 * 2 * set + ids
            })
            .sum()
    }
}

type Out = Vec<Result<Rollup, LateStats>>;

/// What [`sample_rollups_stored`] gives: the rollups, the late counts, the sink's frontier.
pub type StoredRollups<'s> = (
    Stream<'s, u64, Vec<Rollup>>,
    Stream<'s, u64, Vec<LateStats>>,
    Done<'s>,
);

/// Coarser rollups (1 h) from finer ones (1 m) kept in a store rather than in the operator:
/// [`rollup_rollups`](crate::window::rollup_rollups) holds up to an hour's finer rollups per
/// series (about 0.9 KB per series with the allowed lateness's unfolded minutes); this holds
/// only which series an open window has (a set entry), and when the window closes reads the
/// series' finer rollups back from `store`, into which a sink writes the same stream (the hot
/// index). `stored` is that sink's [`Done`] stream: a window is (re-)emitted only once its
/// frontier passed every time a finer rollup of the window was sent at, so the store holds
/// them all.
///
/// The result equals [`rollup_rollups`](crate::window::rollup_rollups)'s: the store keeps the
/// latest version of each finer window (upserted by series and start), which is what
/// `RollupAcc` keeps; it may already hold a version sent later than the frontier this operator
/// has seen, and that version reaches this operator too, which emits again. No finer rollup is
/// dropped for lateness when the finer operator has the same allowed lateness (a finer window
/// `(s, e]` is sent before `e + lateness`), so reading them all back reads nothing this
/// operator would have dropped. `seed` names, after a restart at time `T`, the series each
/// open window has (one finer rollup each); a window that ended before `T` is not emitted
/// again (as in [`windows_seeded`](crate::window::windows_seeded)), only re-emitted for the
/// series a finer rollup after the seed changes.
///
/// A closing window is read back and emitted [`EMIT_PER_ACTIVATION`] series at a time, its
/// capability held until the last slice is out (as [`windows`](crate::window::windows) does):
/// at 1 M series an hour emitted at once put a rollup per series into each consumer's channel
/// and read every series' hour of minutes in one activation. A record arriving once the
/// emission began marks its series for a re-emission after it (read again once the store
/// holds the record).
///
/// # Examples
/// ```
/// use std::collections::BTreeMap;
/// use std::sync::{Arc, Mutex};
/// use timely::dataflow::operators::{Capture, Input, Probe};
/// use tidemark_dataflows::sink::{sink_rollups, HotSink};
/// use tidemark_dataflows::stored::{rollups_from_store, RollupStore};
/// use tidemark_dataflows::{captured, Rollup, Sample};
///
/// // A store: the latest finer rollup per (series, start).
/// #[derive(Clone, Default)]
/// struct Store(Arc<Mutex<BTreeMap<(u64, i64), Rollup>>>);
/// impl HotSink for Store {
///     fn append(&self, _: &[Sample]) {}
///     fn upsert_rollups(&self, rs: &[Rollup]) {
///         let mut m = self.0.lock().unwrap();
///         for r in rs { m.insert((r.series, r.start), *r); }
///     }
/// }
/// let store = Store::default();
/// let s = store.clone();
/// let read: RollupStore = Arc::new(move |series, start, end, out: &mut Vec<Rollup>| {
///     let m = s.0.lock().unwrap();
///     out.extend(m.range((series, start)..(series, end)).map(|(_, r)| *r));
/// });
/// let hours = timely::execute_directly(move |worker| {
///     let (mut input, probe, hours) = worker.dataflow::<u64, _, _>(|scope| {
///         let (input, minutes) = scope.new_input::<Vec<Rollup>>();
///         let (seed, seeds) = scope.new_input::<Vec<Rollup>>();
///         drop(seed);
///         let stored = sink_rollups(minutes.clone(), store);
///         let (hours, _late) = rollups_from_store(minutes, stored, seeds, 3_600_000, 300_000, read);
///         let (probe, hours) = hours.probe();
///         (input, probe, hours.capture())
///     });
///     let m = |start, v: f64| Rollup::from_sorted(1, start, 60_000, &[(start + 1, v)]).unwrap();
///     input.send(m(0, 1.0));
///     input.send(m(60_000, 5.0));
///     input.advance_to(3_700_000); // the hour closes: emitted from the store
///     while probe.less_than(&3_700_000) { worker.step(); }
///     input.send(m(120_000, 2.0)); // late, within lateness: emitted again
///     input.advance_to(4_000_000);
///     while probe.less_than(&4_000_000) { worker.step(); }
///     hours
/// });
/// let sums: Vec<f64> = captured(hours).into_iter().map(|(_, r)| r.sum).collect();
/// assert_eq!(sums, vec![6.0, 8.0]);
/// ```
pub fn rollups_from_store<'s>(
    finer: Stream<'s, u64, Vec<Rollup>>,
    stored: Done<'s>,
    seed: Stream<'s, u64, Vec<Rollup>>,
    width: i64,
    lateness: i64,
    store: RollupStore,
) -> (
    Stream<'s, u64, Vec<Rollup>>,
    Stream<'s, u64, Vec<LateStats>>,
) {
    let mut windows = StoreWindows::new(width, lateness, false);
    let scope = finer.scope();
    let mut builder = OperatorBuilder::new("RollupsFromStore".to_string(), scope);
    let activator = scope.activator_for(builder.operator_info().address);
    let mut finer_in = builder.new_input(finer, Exchange::new(|r: &Rollup| r.series));
    let mut seed_in = builder.new_input(seed, Exchange::new(|r: &Rollup| r.series));
    let mut stored_in = builder.new_input(stored, Pipeline);
    let (output, out_stream) = builder.new_output::<Out>();
    let mut output = OutputBuilder::<_, CapacityContainerBuilder<Out>>::from(output);
    builder.build(move |_caps| {
        let mut reported = Reported::new(Component::Windows1h);
        let mut rows = Vec::new();
        move |frontiers| {
            let (data_f, seed_f, stored_f) = (&frontiers[0], &frontiers[1], &frontiers[2]);
            let mut output = output.activate();
            let lowest = data_f
                .frontier()
                .iter()
                .chain(seed_f.frontier().iter())
                .chain(stored_f.frontier().iter())
                .min()
                .copied();
            seed_in.for_each(|cap, data| {
                let Some((t, c)) = batch_time(&cap) else {
                    return;
                };
                for r in data.drain(..) {
                    windows.note(&c, r.series, r.window_start(width), t, true);
                }
            });
            finer_in.for_each(|cap, data| {
                let Some((t, c)) = batch_time(&cap) else {
                    return;
                };
                let t_i = i64::try_from(t).unwrap_or(i64::MAX);
                let mut stats = LateStats::default();
                for r in data.drain(..) {
                    if admit(&r, t_i, width, lateness, &mut stats) {
                        windows.note(&c, r.series, r.window_start(width), t, false);
                    }
                }
                if stats != LateStats::default() {
                    output.session(&c).give(Err(stats));
                }
            });
            stored_in.for_each(|_, _| {});
            let read = |series: u64, start: i64, end: i64| -> Option<Rollup> {
                rows.clear();
                store(series, start, end, &mut rows);
                let mut parts = rows.iter();
                let mut r = Rollup {
                    series,
                    start,
                    width,
                    ..*parts.next()?
                };
                for p in parts {
                    r.merge(p);
                }
                Some(r)
            };
            let (_, more) = windows.emit(
                lowest,
                |t| passed(data_f, t) && passed(seed_f, t) && passed(stored_f, t),
                |t| passed(stored_f, t),
                read,
                |_| {},
                |cap, batch| output.session(cap).give_iterator(batch.drain(..).map(Ok)),
            );
            if more {
                activator.activate();
            }
            reported.set(windows.bytes());
        }
    });
    out_stream.ok_err(|r| r)
}

/// What the store held for a time of a series before a sample too late for its window was
/// written over it (`None`: nothing), by window start and series.
type Overrides = BTreeMap<i64, IdMap<Vec<(i64, Option<f64>)>>>;

/// 1-minute (or any width) rollups of raw samples, with the raw sink inside: each batch of
/// `samples` is appended to `sink` as it comes (every sample, staleness markers and samples
/// too late for their window included, as [`sink_samples`](crate::sink::sink_samples) would),
/// and a window holds only which series have samples in it; when it closes it reads each
/// series' samples `(start, end]` back through `read`, and again for a series a late sample
/// changed. Appends go through [`HotSink::append_reporting`]: a sample whose series' newest
/// sample before it is a live one in the same window is not noted again, unless the window
/// was opened after its end (after a restart, the store may have series there this run never
/// noted) or a sample too late for it was stored there. The third stream is the sink's [`Done`]: its frontier passes a time once every
/// sample sent before it is appended.
///
/// The rollups equal [`tumbling_rollups_seeded`](crate::window::tumbling_rollups_seeded)'s
/// (`dataflows/tests/rollups_reference.rs` and this module's tests compare them): this
/// operator is the only writer of its series' samples (both are exchanged by series), so when
/// it reads, the store holds exactly what it was sent. The one difference a store makes, a
/// sample dropped as later than the allowed lateness but stored as raw data, is undone on
/// reading: before writing such a sample over a window that can still be re-emitted, the
/// operator notes what the store held at that time, and a read puts it back. Staleness
/// markers are not aggregated. Samples at or before `from` are stored but not windowed
/// (rollups already rebuilt up to there). `seed` names, after a restart at `T`, the series of
/// each window not yet emitted (one sample each); a window that ended before `T` was emitted
/// before the restart and is not emitted again.
///
/// # Examples
/// ```
/// use std::collections::BTreeMap;
/// use std::sync::{Arc, Mutex};
/// use timely::dataflow::operators::{Capture, Input, Probe};
/// use tidemark_dataflows::sink::HotSink;
/// use tidemark_dataflows::stored::{sample_rollups_stored, SampleStore};
/// use tidemark_dataflows::{captured, Rollup, Sample};
///
/// // A store: the latest value per (series, time).
/// #[derive(Clone, Default)]
/// struct Store(Arc<Mutex<BTreeMap<(u64, i64), f64>>>);
/// impl HotSink for Store {
///     fn append(&self, ss: &[Sample]) {
///         let mut m = self.0.lock().unwrap();
///         for s in ss { m.insert((s.series, s.ts), s.value); }
///     }
///     fn upsert_rollups(&self, _: &[Rollup]) {}
/// }
/// let store = Store::default();
/// let s = store.clone();
/// let read: SampleStore = Arc::new(move |series, from, to, out: &mut Vec<(i64, f64)>| {
///     let m = s.0.lock().unwrap();
///     out.extend(m.range((series, from)..=(series, to)).map(|(k, v)| (k.1, *v)));
/// });
/// let (minutes, stored) = timely::execute_directly(move |worker| {
///     let st = store.clone();
///     let (mut input, probe, minutes) = worker.dataflow::<u64, _, _>(|scope| {
///         let (input, samples) = scope.new_input::<Vec<Sample>>();
///         let (seed, seeds) = scope.new_input::<Vec<Sample>>();
///         drop(seed);
///         let (minutes, _late, _done) =
///             sample_rollups_stored(samples, seeds, 60_000, 120_000, i64::MIN, st, read);
///         let (probe, minutes) = minutes.probe();
///         (input, probe, minutes.capture())
///     });
///     let s = |ts, value| Sample { series: 1, ts, value };
///     input.send(s(10_000, 1.0));
///     input.send(s(60_000, 5.0)); // on the boundary: ends the first window
///     input.send(s(70_000, 9.0));
///     input.advance_to(61_000); // the first window closes: read back from the store
///     while probe.less_than(&61_000) { worker.step(); }
///     input.send(s(30_000, 2.0)); // late, within lateness: emitted again
///     input.advance_to(200_000);
///     while probe.less_than(&200_000) { worker.step(); }
///     input.send(s(40_000, 3.0)); // too late for its window: stored, not in a rollup
///     input.advance_to(201_000);
///     while probe.less_than(&201_000) { worker.step(); }
///     (minutes, store.0.lock().unwrap().len())
/// });
/// let got: Vec<(i64, u64, f64)> =
///     captured(minutes).into_iter().map(|(_, r)| (r.start, r.count, r.sum)).collect();
/// assert_eq!(got, vec![(0, 2, 6.0), (0, 3, 8.0), (60_000, 1, 9.0)]);
/// assert_eq!(stored, 5);
/// ```
pub fn sample_rollups_stored<'s, S: HotSink + 'static>(
    samples: Stream<'s, u64, Vec<Sample>>,
    seed: Stream<'s, u64, Vec<Sample>>,
    width: i64,
    lateness: i64,
    from: i64,
    sink: S,
    store: SampleStore,
) -> StoredRollups<'s> {
    let live = move |s: &Sample| s.value.to_bits() != STALE_NAN_BITS && s.ts > from;
    let mut windows = StoreWindows::new(width, lateness, true);
    let scope = samples.scope();
    let mut builder = OperatorBuilder::new("SampleRollupsStored".to_string(), scope);
    let activator = scope.activator_for(builder.operator_info().address);
    let mut data_in = builder.new_input(samples, Exchange::new(|s: &Sample| s.series));
    let mut seed_in = builder.new_input(seed, Exchange::new(|s: &Sample| s.series));
    let (output, out_stream) = builder.new_output::<Out>();
    let mut output = OutputBuilder::<_, CapacityContainerBuilder<Out>>::from(output);
    // No capability is ever held for it: its frontier is the inputs', passed once a batch
    // was consumed, and so appended.
    let (_done_out, done) = builder.new_output::<Vec<()>>();
    builder.build(move |_caps| {
        let mut reported = Reported::new(Component::Windows1m);
        let mut overrides: Overrides = BTreeMap::new();
        let mut pts: Vec<(i64, f64)> = Vec::new();
        // Per sample appended: its series' newest sample before it, as the store reports it.
        let mut before: Vec<Option<(i64, f64)>> = Vec::new();
        // Windows a live sample was stored in without being noted (too late for its window
        // then): a later sample of its series there must be noted (see below).
        let mut gapped: std::collections::BTreeSet<i64> = std::collections::BTreeSet::new();
        move |frontiers| {
            let (data_f, seed_f) = (&frontiers[0], &frontiers[1]);
            let mut output = output.activate();
            let lowest = data_f
                .frontier()
                .iter()
                .chain(seed_f.frontier().iter())
                .min()
                .copied();
            let all = |t: i64| passed(data_f, t) && passed(seed_f, t);
            seed_in.for_each(|cap, data| {
                let Some((t, c)) = batch_time(&cap) else {
                    return;
                };
                for s in data.drain(..).filter(live) {
                    windows.note(&c, s.series, s.window_start(width), t, true);
                }
            });
            data_in.for_each(|cap, data| {
                let Some((t, c)) = batch_time(&cap) else {
                    return;
                };
                let t_i = i64::try_from(t).unwrap_or(i64::MAX);
                let mut stats = LateStats::default();
                let mut taken = Vec::with_capacity(data.len());
                for s in data.iter() {
                    let ok = admit(s, t_i, width, lateness, &mut stats);
                    taken.push(ok);
                    let start = s.window_start(width);
                    if !ok && live(s) {
                        gapped.insert(start);
                    }
                    if ok {
                        // The store will hold what this operator takes: nothing to put back.
                        if let Some(v) =
                            overrides.get_mut(&start).and_then(|m| m.get_mut(&s.series))
                        {
                            v.retain(|o| o.0 != s.ts);
                        }
                    } else if windows.may_read(start, all) {
                        // Too late for a window that may still be read: note what the store
                        // holds at its time, once (the first note is the state before).
                        let v = overrides
                            .entry(start)
                            .or_default()
                            .entry(s.series)
                            .or_default();
                        if !v.iter().any(|o| o.0 == s.ts) {
                            pts.clear();
                            store(s.series, s.ts, s.ts, &mut pts);
                            v.push((s.ts, pts.last().map(|p| p.1)));
                        }
                    }
                }
                sink.append_reporting(data, &mut before);
                for ((s, ok), prev) in data.iter().zip(taken).zip(&before) {
                    if !(ok && live(s)) {
                        continue;
                    }
                    let start = s.window_start(width);
                    // The series' newest sample before this one is an earlier live one in the
                    // same window: it was noted there (or named by the seed, or it was too late
                    // and the window is gapped), so the series is there already, unless the
                    // window was emitted or is not fresh. A set took every sample (4 % of the
                    // job's CPU at 1 M series); the list takes a series about once.
                    let there = prev.is_some_and(|(pt, pv)| {
                        let p = Sample {
                            series: s.series,
                            ts: pt,
                            value: pv,
                        };
                        pt < s.ts && live(&p) && p.window_start(width) == start
                    }) && windows.collecting(start)
                        && !gapped.contains(&start);
                    if !there {
                        windows.note(&c, s.series, start, t, false);
                    }
                }
                if stats != LateStats::default() {
                    output.session(&c).give(Err(stats));
                }
            });
            let read = |series: u64, start: i64, end: i64| -> Option<Rollup> {
                pts.clear();
                store(series, start.saturating_add(1), end, &mut pts);
                if let Some(put_back) = overrides.get(&start).and_then(|m| m.get(&series)) {
                    for &(ts, before) in put_back {
                        let i = pts.partition_point(|p| p.0 < ts);
                        match (pts.get(i).is_some_and(|p| p.0 == ts), before) {
                            (true, Some(v)) => pts[i].1 = v,
                            (true, None) => {
                                pts.remove(i);
                            }
                            (false, Some(v)) => pts.insert(i, (ts, v)),
                            (false, None) => {}
                        }
                    }
                }
                pts.retain(|p| p.1.to_bits() != STALE_NAN_BITS && p.0 > from);
                Rollup::from_sorted(series, start, width, &pts)
            };
            // This operator wrote everything it was sent: the store has it.
            let (retired, more) = windows.emit(
                lowest,
                all,
                |_| true,
                read,
                |ids| sink.warm(ids),
                |cap, batch| output.session(cap).give_iterator(batch.drain(..).map(Ok)),
            );
            if more {
                activator.activate();
            }
            for start in retired {
                overrides.remove(&start);
            }
            // Notes for windows that were never opened (only too-late samples came).
            let windows_ref = &windows;
            overrides.retain(|&start, _| windows_ref.may_read(start, all));
            gapped.retain(|&start| windows_ref.may_read(start, all));
            let notes: i64 = overrides
                .values()
                .flat_map(|m| m.values())
                .map(|v| hash_slot(32) + v.capacity() as i64 * 24)
                .sum();
            reported.set(windows.bytes() + notes);
        }
    });
    let (rollups, late) = out_stream.ok_err(|r| r);
    (rollups, late, done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::tumbling_rollups;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Samples of one series: `sample_of(series)(ts, value)`.
    fn sample_of(series: u64) -> impl Fn(i64, f64) -> Sample {
        move |ts, value| Sample { series, ts, value }
    }
    use std::sync::Mutex;
    use timely::dataflow::operators::{Concat, Input, Inspect, Probe};

    /// The latest value per (series, time), and how many samples were written.
    #[derive(Clone, Default)]
    struct Store(Arc<Mutex<Written>>);
    type Written = (BTreeMap<(u64, i64), f64>, usize);

    impl HotSink for Store {
        fn append(&self, ss: &[Sample]) {
            let mut m = self.0.lock().unwrap();
            m.1 += ss.len();
            for s in ss {
                m.0.insert((s.series, s.ts), s.value);
            }
        }
        fn upsert_rollups(&self, _: &[Rollup]) {}
        /// Reports each series' newest sample before the one appended, as the hot index does,
        /// so that the tests here take the operator's path that notes a series once per window.
        fn append_reporting(&self, ss: &[Sample], before: &mut Vec<Option<(i64, f64)>>) {
            before.clear();
            for s in ss {
                let newest = {
                    let m = self.0.lock().unwrap();
                    m.0.range((s.series, i64::MIN)..=(s.series, i64::MAX))
                        .next_back()
                        .map(|(k, v)| (k.1, *v))
                };
                before.push(newest);
                self.append(std::slice::from_ref(s));
            }
        }
    }

    impl Store {
        fn reader(&self) -> SampleStore {
            let s = self.clone();
            Arc::new(move |series, from, to, out: &mut Vec<(i64, f64)>| {
                let m = s.0.lock().unwrap();
                out.extend(
                    m.0.range((series, from)..=(series, to))
                        .map(|(k, v)| (k.1, *v)),
                );
            })
        }
    }

    const WIDTH: i64 = 60_000;
    const LATENESS: i64 = 120_000;

    /// A rollup computed here, apart from [`Rollup::from_sorted`]: what the oracle expects.
    fn oracle_rollup(series: u64, start: i64, pts: &[(i64, f64)]) -> Option<Rollup> {
        let (&(first_ts, first), _) = pts.split_first()?;
        let &(last_ts, last) = pts.last()?;
        let mut increase = 0.0;
        for w in pts.windows(2) {
            let (a, b) = (w[0].1, w[1].1);
            increase += if b >= a { b - a } else { b };
        }
        Some(Rollup {
            series,
            start,
            width: WIDTH,
            count: pts.len() as u64,
            sum: pts.iter().map(|p| p.1).sum(),
            min: pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min),
            max: pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max),
            first,
            last,
            first_ts,
            last_ts,
            increase,
        })
    }

    /// Sends `(input, time, sample)` events through two inputs, the second `lead` ahead of the
    /// first (an event on it at `t` is sent when the first input is at `t - lead`), into the
    /// operator under test and into [`tumbling_rollups`] (samples held in the operator); returns
    /// both operators' rollups and the store's write count.
    fn run(events: Vec<(usize, u64, Sample)>, lead: u64) -> (Vec<Rollup>, Vec<Rollup>, usize) {
        let store = Store::default();
        let st = store.clone();
        let read = store.reader();
        let (stored, held) = timely::execute_directly(move |worker| {
            let a: Rc<RefCell<Vec<Rollup>>> = Rc::default();
            let b: Rc<RefCell<Vec<Rollup>>> = Rc::default();
            let (sa, sb) = (Rc::clone(&a), Rc::clone(&b));
            let (mut inputs, probe) = worker.dataflow::<u64, _, _>(|scope| {
                let (in0, s0) = scope.new_input::<Vec<Sample>>();
                let (in1, s1) = scope.new_input::<Vec<Sample>>();
                let (seed, seeds) = scope.new_input::<Vec<Sample>>();
                drop(seed);
                let samples = s0.concat(s1);
                let (m1, _, done) = sample_rollups_stored(
                    samples.clone(),
                    seeds,
                    WIDTH,
                    LATENESS,
                    i64::MIN,
                    st,
                    read,
                );
                let (m2, _) = tumbling_rollups(samples, WIDTH, LATENESS);
                let m2 = m2.inspect(move |r| sb.borrow_mut().push(*r));
                let (probe, _) = m1
                    .inspect(move |r| sa.borrow_mut().push(*r))
                    .concat(m2)
                    .probe();
                drop(done);
                ([in0, in1], probe)
            });
            let mut events = events;
            // The driver's clock: the first input's time.
            events.sort_by_key(|&(i, t, _)| if i == 1 { t - lead } else { t });
            for (i, t, s) in events {
                let clock = if i == 1 { t - lead } else { t };
                if clock > *inputs[0].time() {
                    inputs[0].advance_to(clock);
                    inputs[1].advance_to(clock + lead);
                    while probe.less_than(inputs[0].time()) {
                        worker.step();
                    }
                }
                inputs[i].send(s);
            }
            drop(inputs);
            while !probe.done() {
                worker.step();
            }
            let (a, b) = (a.borrow().clone(), b.borrow().clone());
            (a, b)
        });
        let written = store.0.lock().unwrap().1;
        (stored, held, written)
    }

    fn finals(got: &[Rollup]) -> BTreeMap<(u64, i64), Rollup> {
        got.iter().map(|r| ((r.series, r.start), *r)).collect()
    }

    fn differ(got: &[Rollup], expected: &BTreeMap<(u64, i64), Rollup>) -> Vec<String> {
        let got = finals(got);
        let keys: std::collections::BTreeSet<_> = got.keys().chain(expected.keys()).collect();
        keys.into_iter()
            .filter(|k| got.get(k) != expected.get(k))
            .map(|k| {
                format!(
                    "{k:?}: got {:?}, expected {:?}",
                    got.get(k),
                    expected.get(k)
                )
            })
            .collect()
    }

    #[test]
    fn a_sample_too_late_for_its_window_is_stored_but_a_correction_reads_around_it() {
        let s = sample_of(1);
        let lead = 200_000;
        let events = vec![
            (0, 1, s(10_000, 1.0)),
            (0, 1, s(20_000, 2.0)),
            // The second input is far ahead: too late for the window (0, 60 s], which the
            // first input's frontier keeps open for corrections.
            (1, lead + 70_000, s(20_000, 50.0)), // over a stored sample
            (1, lead + 70_000, s(25_000, 70.0)), // at a new time
            // A correction within the lateness after them, one at the too-late one's time.
            (0, 80_000, s(30_000, 4.0)),
            (0, 80_000, s(25_000, 5.0)),
            // Too late again over the taken one.
            (1, lead + 90_000, s(25_000, 99.0)),
            (0, 100_000, s(40_000, 8.0)),
        ];
        let (stored, held, written) = run(events, lead);
        let want = oracle_rollup(
            1,
            0,
            &[
                (10_000, 1.0),
                (20_000, 2.0),
                (25_000, 5.0),
                (30_000, 4.0),
                (40_000, 8.0),
            ],
        );
        let want: BTreeMap<_, _> = want.into_iter().map(|r| ((1, 0), r)).collect();
        assert_eq!(differ(&held, &want), Vec::<String>::new(), "held samples");
        assert_eq!(
            differ(&stored, &want),
            Vec::<String>::new(),
            "from the store"
        );
        // Every sample was written, the too-late ones too (raw data is kept).
        assert_eq!(written, 8);
        // The window was emitted, then corrected twice (at 80 s and 100 s).
        assert_eq!(stored.len(), 3, "{stored:?}");
    }

    #[test]
    fn a_window_emitted_after_its_lateness_passed_reads_around_a_too_late_sample() {
        // A window whose emission waits for an older window's (more series than one
        // activation emits) takes a sample too late for it once the frontier passed its end
        // plus the lateness: it is emitted after that sample was written, and must read around
        // it (a log replay after a restart ran like this, the frontier jumping ahead).
        let store = Store::default();
        let (st, read) = (store.clone(), store.reader());
        let older = EMIT_PER_ACTIVATION as u64 + 16;
        let got = timely::execute_directly(move |worker| {
            let out: Rc<RefCell<Vec<Rollup>>> = Rc::default();
            let o = Rc::clone(&out);
            let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, samples) = scope.new_input::<Vec<Sample>>();
                let (seed, seeds) = scope.new_input::<Vec<Sample>>();
                drop(seed);
                let (m, _, _) =
                    sample_rollups_stored(samples, seeds, WIDTH, LATENESS, i64::MIN, st, read);
                let (probe, _) = m.inspect(move |r| o.borrow_mut().push(*r)).probe();
                (input, probe)
            });
            let s = |series, ts, value| Sample { series, ts, value };
            for series in 0..older {
                input.send(s(1_000 + series, 30_000, 1.0));
            }
            input.send(s(3, 70_000, 1.0));
            input.send(s(3, 80_000, 2.0));
            input.advance_to(500_000);
            // The first activation past the frontier emits one slice of the older window.
            while out.borrow().len() < EMIT_PER_ACTIVATION {
                worker.step();
            }
            assert!(out.borrow().iter().all(|r| r.start == 0));
            input.send(s(3, 90_000, 9.0)); // too late: 500 s >= 120 s + 120 s
            input.send(s(3, 80_000, 7.0)); // too late, over a taken sample
            input.advance_to(500_001);
            while probe.less_than(&500_001) {
                worker.step();
            }
            let v = out.borrow().clone();
            v
        });
        let got: Vec<(u64, f64)> = got
            .iter()
            .filter(|r| r.series == 3)
            .map(|r| (r.count, r.sum))
            .collect();
        assert_eq!(got, vec![(2, 3.0)]);
        assert_eq!(store.0.lock().unwrap().1, older as usize + 4);
    }

    #[test]
    fn rollups_read_from_the_store_equal_the_rollups_of_held_samples_and_the_oracle() {
        // Samples every 10 s for 12 minutes over 30 series, some on window boundaries, sent
        // on time, late within the lateness, or too late (on the input that is ahead), some
        // twice with another value, some staleness markers.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let lead = 150_000u64;
        let mut events: Vec<(usize, u64, Sample)> = Vec::new();
        for series in 0..30u64 {
            for k in 1..=72i64 {
                let ts = k * 10_000
                    + if next() % 4 == 0 {
                        0
                    } else {
                        (next() % 3) as i64
                    };
                let end = (ts - 1).div_euclid(WIDTH) * WIDTH + WIDTH;
                let value = if next() % 40 == 0 {
                    f64::from_bits(STALE_NAN_BITS)
                } else {
                    (next() % 1000) as f64 / 8.0
                };
                let delay = if next() % 5 == 0 { next() % 170_000 } else { 0 };
                events.push((0, ts as u64 + delay, Sample { series, ts, value }));
                if next() % 10 == 0 {
                    // Again on the same input within the lateness: the later one wins.
                    let value = (next() % 1000) as f64 / 8.0 + 0.5;
                    events.push((0, ts as u64 + delay + 5_000, Sample { series, ts, value }));
                }
                if next() % 6 == 0 {
                    // Too late, on the input ahead, over the same time or a new one.
                    let ts = if next() % 2 == 0 { ts } else { ts - 3_000 };
                    let t = (end + LATENESS) as u64 + next() % 60_000;
                    let value = 1000.0 + (next() % 100) as f64;
                    events.push((1, t.max(lead + 1), Sample { series, ts, value }));
                }
            }
        }
        // The oracle: taken samples (sent before their window's end plus the lateness), the
        // last one sent per time (only the first input repeats a time within the lateness, in
        // order), staleness markers out.
        let mut sorted = events.clone();
        sorted.sort_by_key(|&(i, t, _)| if i == 1 { t - lead } else { t });
        let mut last: BTreeMap<(u64, i64, i64), f64> = BTreeMap::new();
        let mut too_late = 0;
        for (_, t, s) in &sorted {
            let start = (s.ts - 1).div_euclid(WIDTH) * WIDTH;
            let end = start + WIDTH;
            if (*t as i64) > end && (*t as i64) >= end + LATENESS {
                too_late += 1;
                continue;
            }
            last.insert((s.series, start, s.ts), s.value);
        }
        let mut by_window: BTreeMap<(u64, i64), Vec<(i64, f64)>> = BTreeMap::new();
        for ((series, start, ts), v) in last {
            if v.to_bits() != STALE_NAN_BITS {
                by_window.entry((series, start)).or_default().push((ts, v));
            }
        }
        let expected: BTreeMap<(u64, i64), Rollup> = by_window
            .into_iter()
            .filter_map(|((series, start), pts)| {
                Some(((series, start), oracle_rollup(series, start, &pts)?))
            })
            .collect();
        let n = events.len();
        let (stored, held, written) = run(events, lead);
        assert!(
            expected.len() > 300 && too_late > 200,
            "{} windows, {too_late} too late",
            expected.len()
        );
        assert_eq!(
            differ(&held, &expected),
            Vec::<String>::new(),
            "held samples"
        );
        assert_eq!(
            differ(&stored, &expected),
            Vec::<String>::new(),
            "from the store"
        );
        assert_eq!(written, n);
    }

    #[test]
    fn a_restart_seeds_the_windows_not_yet_emitted_and_emits_only_those() {
        let store = Store::default();
        // Before the restart: two windows' samples in the store, the first already emitted.
        let s = sample_of(7);
        store.append(&[s(10_000, 1.0), s(50_000, 2.0), s(70_000, 4.0)]);
        let (st, read) = (store.clone(), store.reader());
        let got = timely::execute_directly(move |worker| {
            let out: Rc<RefCell<Vec<Rollup>>> = Rc::default();
            let o = Rc::clone(&out);
            let (mut input, mut seed, probe) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, samples) = scope.new_input::<Vec<Sample>>();
                let (seed, seeds) = scope.new_input::<Vec<Sample>>();
                let (m, _, _) =
                    sample_rollups_stored(samples, seeds, WIDTH, LATENESS, i64::MIN, st, read);
                let (probe, _) = m.inspect(move |r| o.borrow_mut().push(*r)).probe();
                (input, seed, probe)
            });
            // The restart at 65 s: the window (60 s, 120 s] is not emitted yet; (0, 60 s] was.
            input.advance_to(65_000);
            seed.advance_to(65_000);
            seed.send(s(10_000, 1.0));
            seed.send(s(70_000, 4.0));
            drop(seed);
            input.send(s(80_000, 8.0));
            input.advance_to(121_000);
            while probe.less_than(&121_000) {
                worker.step();
            }
            // A late sample re-emits the first window, read from the store.
            input.send(s(30_000, 3.0));
            input.advance_to(122_000);
            while probe.less_than(&122_000) {
                worker.step();
            }
            let v = out.borrow().clone();
            v
        });
        let got: Vec<(i64, u64, f64)> = got.iter().map(|r| (r.start, r.count, r.sum)).collect();
        assert_eq!(got, vec![(60_000, 2, 12.0), (0, 3, 6.0)]);
    }

    #[test]
    fn a_window_reopened_after_a_restart_notes_a_series_whose_earlier_samples_only_the_store_has() {
        let store = Store::default();
        let s = |series, ts, value| Sample { series, ts, value };
        // Before the restart at 65 s: the window (0, 60 s] was emitted with both series.
        store.append(&[s(7, 10_000, 1.0), s(7, 50_000, 2.0), s(8, 20_000, 4.0)]);
        let (st, read) = (store.clone(), store.reader());
        let got = timely::execute_directly(move |worker| {
            let out: Rc<RefCell<Vec<Rollup>>> = Rc::default();
            let o = Rc::clone(&out);
            let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, samples) = scope.new_input::<Vec<Sample>>();
                let (seed, seeds) = scope.new_input::<Vec<Sample>>();
                drop(seed); // no window is open at the restart: nothing to seed
                let (m, _, _) =
                    sample_rollups_stored(samples, seeds, WIDTH, LATENESS, i64::MIN, st, read);
                let (probe, _) = m.inspect(move |r| o.borrow_mut().push(*r)).probe();
                (input, probe)
            });
            input.advance_to(65_000);
            // Late, within the lateness: series 8 opens the window again; series 7's newest
            // sample before its own is in the window, but came before the restart, so this
            // run never noted it: the window is not fresh, and series 7 must be noted.
            input.send(s(8, 40_000, 8.0));
            input.send(s(7, 55_000, 16.0));
            input.advance_to(200_000);
            while probe.less_than(&200_000) {
                worker.step();
            }
            let v = out.borrow().clone();
            v
        });
        let got: Vec<(u64, i64, u64, f64)> = got
            .iter()
            .map(|r| (r.series, r.start, r.count, r.sum))
            .collect();
        assert_eq!(got, vec![(7, 0, 3, 19.0), (8, 0, 2, 12.0)]);
    }

    #[test]
    fn a_series_whose_first_sample_in_a_window_was_a_staleness_marker_is_noted_by_the_next() {
        let s = |series, ts, value| Sample { series, ts, value };
        let events = vec![
            (0, 1, s(3, 5_000, 1.0)),
            (0, 2, s(2, 10_000, f64::from_bits(STALE_NAN_BITS))),
            (0, 3, s(2, 20_000, 4.0)),
        ];
        both_give(
            events,
            0,
            [
                oracle_rollup(3, 0, &[(5_000, 1.0)]),
                oracle_rollup(2, 0, &[(20_000, 4.0)]),
            ],
        );
    }

    /// Runs `events` through both operators ([`run`]) and checks each gives `want`.
    fn both_give<const N: usize>(
        events: Vec<(usize, u64, Sample)>,
        lead: u64,
        want: [Option<Rollup>; N],
    ) {
        let (stored, held, _) = run(events, lead);
        let want: BTreeMap<_, _> = want
            .into_iter()
            .flatten()
            .map(|r| ((r.series, r.start), r))
            .collect();
        assert_eq!(differ(&held, &want), Vec::<String>::new(), "held samples");
        assert_eq!(
            differ(&stored, &want),
            Vec::<String>::new(),
            "from the store"
        );
    }

    #[test]
    fn a_series_whose_first_sample_in_a_window_was_too_late_is_noted_by_the_next() {
        let s = sample_of(2);
        let lead = 200_000;
        let events = vec![
            // Another series keeps the window (0, 60 s] open and collecting.
            (
                0,
                1,
                Sample {
                    series: 3,
                    ts: 5_000,
                    value: 1.0,
                },
            ),
            // Too late on the input far ahead: stored, not noted; it is the newest sample of
            // its series when the next one comes.
            (1, lead + 10_000, s(30_000, 50.0)),
            // Within the lateness on the first input: its newest sample before is in the same
            // window, but was never noted there.
            (0, 20_000, s(40_000, 4.0)),
        ];
        both_give(
            events,
            lead,
            [
                oracle_rollup(3, 0, &[(5_000, 1.0)]),
                oracle_rollup(2, 0, &[(40_000, 4.0)]),
            ],
        );
    }
}

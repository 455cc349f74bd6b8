//! Tumbling windows closed by the frontier, with allowed lateness and corrected re-emission.

use std::collections::hash_map::Entry;
use std::collections::BTreeMap;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::core::OkErr;

use timely::dataflow::operators::generic::operator::empty;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Capability, InputCapability};
use timely::dataflow::Stream;
use timely::progress::frontier::MutableAntichain;

use crate::memory::{hash_slot, Component, Reported};
use crate::packed::{decode_samples, SampleRun};
pub use crate::stored::{rollups_from_store, RollupStore};
use crate::types::{IdMap, IdSet, LateStats, Rollup, Sample, STALE_NAN_BITS};

/// A record a window can place: its series, event time and window.
pub trait Windowed: Clone + 'static {
    fn series(&self) -> u64;
    fn event_ts(&self) -> i64;
    /// Start of the window `(start, start + width]` this record belongs to.
    fn window_start(&self, width: i64) -> i64;
}

impl Windowed for Sample {
    fn series(&self) -> u64 {
        self.series
    }
    fn event_ts(&self) -> i64 {
        self.ts
    }
    fn window_start(&self, width: i64) -> i64 {
        // Left-open, right-closed, as PromQL ranges: a sample on a boundary ends a window.
        self.ts.saturating_sub(1).div_euclid(width) * width
    }
}

impl Windowed for Rollup {
    fn series(&self) -> u64 {
        self.series
    }
    fn event_ts(&self) -> i64 {
        self.start
    }
    fn window_start(&self, width: i64) -> i64 {
        // A finer window lies inside the coarser one its start falls in.
        self.start.div_euclid(width) * width
    }
}

/// Per series, per window state.
pub trait Accumulator<D>: Default + 'static {
    /// Adds a record. `settled`: records of finer windows ending at or before it can no
    /// longer change (the operator's input frontier minus the allowed lateness).
    fn add(&mut self, d: D, settled: i64);
    fn rollup(&mut self, series: u64, start: i64, width: i64) -> Option<Rollup>;
    /// Heap bytes held (for [`crate::memory`]).
    fn heap_bytes(&self) -> usize;
    /// After the window was emitted: the state as bytes, kept with the window's other series
    /// in one buffer until a correction needs it back ([`Accumulator::thaw`]). `None`: the
    /// state stays as it is.
    fn frozen(&self) -> Option<&[u8]> {
        None
    }
    /// The state from the bytes [`Accumulator::frozen`] gave.
    fn thaw(_bytes: &[u8]) -> Self {
        Self::default()
    }
}

/// Raw samples of one series in one window, packed (a few bytes a sample instead of 16) while
/// they come in time order, as they do from a scrape or an agent; a sample at or before the
/// newest one (disorder, a duplicate, a correction to an emitted window) unpacks them into
/// arrival order until the window is emitted, which packs them again. (Held as a vector while
/// the window was open, the open window was the job's largest state at 1 M series: about
/// 190 bytes a series with the vector and its table slot.)
pub enum SampleAcc {
    Open(Vec<(i64, f64)>),
    /// Sorted, distinct times: see `pack`.
    Packed(Box<[u8]>),
}

impl Default for SampleAcc {
    fn default() -> Self {
        SampleAcc::Packed(Box::default())
    }
}

/// Samples as bytes: a [`SampleRun`]'s (per sample the change of the time's delta, one byte
/// at a steady interval, and the value as [`crate::packed::put_num`] writes it: a short
/// decimal as a mantissa delta, anything else as an XOR).
fn pack(samples: &[(i64, f64)]) -> Box<[u8]> {
    SampleRun::from_sorted(samples)
        .into_bytes()
        .into_boxed_slice()
}

fn unpack(b: &[u8], out: &mut Vec<(i64, f64)>) {
    decode_samples(b, out);
}

impl SampleAcc {
    /// The samples as a vector to change (unpacked if packed).
    fn open(&mut self) -> &mut Vec<(i64, f64)> {
        if let SampleAcc::Packed(b) = self {
            let mut v = Vec::with_capacity(b.len() / 4 + 2);
            unpack(b, &mut v);
            *self = SampleAcc::Open(v);
        }
        match self {
            SampleAcc::Open(v) => v,
            SampleAcc::Packed(_) => unreachable!("unpacked above"),
        }
    }
}

impl Accumulator<Sample> for SampleAcc {
    fn add(&mut self, s: Sample, _settled: i64) {
        if let SampleAcc::Packed(b) = self {
            let mut run = SampleRun::resume(std::mem::take(b).into_vec());
            let in_order = run.last_ts().is_none_or(|t| s.ts > t);
            if in_order {
                run.push(s.ts, s.value);
            }
            *b = run.into_bytes().into_boxed_slice();
            if in_order {
                return;
            }
        }
        let v = self.open();
        if v.len() == v.capacity() {
            // Grow by a few samples, not by doubling (6 a minute at a 10 s interval).
            v.reserve_exact(2);
        }
        v.push((s.ts, s.value));
    }
    /// Packs the samples afterwards: the window was emitted.
    fn rollup(&mut self, series: u64, start: i64, width: i64) -> Option<Rollup> {
        if let SampleAcc::Packed(b) = self {
            let mut v = Vec::with_capacity(b.len() / 2 + 2);
            unpack(b, &mut v);
            return Rollup::from_sorted(series, start, width, &v);
        }
        let v = self.open();
        // Sort by time; for equal times the last arrival wins (replays are idempotent).
        v.sort_by_key(|p| p.0);
        let mut w = 0;
        for r in 0..v.len() {
            if w > 0 && v[w - 1].0 == v[r].0 {
                v[w - 1] = v[r];
            } else {
                v[w] = v[r];
                w += 1;
            }
        }
        v.truncate(w);
        let r = Rollup::from_sorted(series, start, width, v);
        *self = SampleAcc::Packed(pack(v));
        r
    }
    fn heap_bytes(&self) -> usize {
        match self {
            SampleAcc::Open(v) => v.capacity() * std::mem::size_of::<(i64, f64)>(),
            SampleAcc::Packed(b) => b.len(),
        }
    }
    fn frozen(&self) -> Option<&[u8]> {
        match self {
            SampleAcc::Open(_) => None,
            SampleAcc::Packed(b) => Some(b),
        }
    }
    fn thaw(bytes: &[u8]) -> Self {
        SampleAcc::Packed(bytes.into())
    }
}

/// Finer rollups of one series in one coarser window, upserted by start. Finer windows that
/// can no longer be corrected are folded into one running rollup, so a series holds the
/// folded prefix and the few finer windows still open for lateness (about 7 one-minute
/// rollups with 5 minutes of lateness), not the whole hour's 60.
///
/// This relies on the finer windows' operator having the same (or a smaller) allowed lateness
/// as this one: a finer window `(s, e]` is re-emitted only at times before `e + lateness`.
#[derive(Default)]
pub struct RollupAcc {
    folded: Option<Rollup>,
    /// Sorted by start; every start is after the folded ones'.
    parts: Vec<Rollup>,
}

impl Accumulator<Rollup> for RollupAcc {
    fn add(&mut self, r: Rollup, settled: i64) {
        if self.parts.len() == self.parts.capacity() {
            // Grow by a few rollups, not by doubling: about 7 are held per series.
            self.parts.reserve_exact(2);
        }
        match self.parts.binary_search_by_key(&r.start, |p| p.start) {
            Ok(i) => self.parts[i] = r,
            Err(i) => self.parts.insert(i, r),
        }
        let n = self.parts.iter().take_while(|p| p.end() <= settled).count();
        for p in self.parts.drain(..n) {
            match &mut self.folded {
                None => self.folded = Some(p),
                // `last_ts` of the fold is inside the last folded window: a window after it
                // extends the fold. One at or before it could only come from a finer operator
                // with more lateness than this one (see above); it is left out.
                Some(f) if p.start >= f.last_ts => f.merge(&p),
                Some(_) => debug_assert!(false, "a finer window after it was folded"),
            }
        }
    }
    fn rollup(&mut self, series: u64, start: i64, width: i64) -> Option<Rollup> {
        let mut parts = self.folded.iter().chain(self.parts.iter());
        let first = parts.next()?;
        let mut r = Rollup {
            series,
            start,
            width,
            ..*first
        };
        for p in parts {
            r.merge(p);
        }
        Some(r)
    }
    fn heap_bytes(&self) -> usize {
        self.parts.capacity() * std::mem::size_of::<Rollup>()
    }
}

struct Window<A> {
    cap: Capability<u64>,
    /// Per series state: every series while the window is open; once it was emitted, those
    /// a correction thawed (the rest are in `frozen`).
    series: IdMap<A>,
    frozen: Frozen,
    emitted: bool,
    /// Opened by a seed record for a window that ended before the seed's time: its rollups
    /// reached the sinks before the restart, so its first emission sends only the series a
    /// record after the seed changed (in `dirty`); the rest is packed for corrections.
    silent: bool,
    /// While the first emission is under way: the series to emit, sorted, and how many of
    /// them went out (see [`EMIT_PER_ACTIVATION`]).
    emitting: Option<(Box<[u64]>, usize)>,
    dirty: IdSet,
    /// Estimated bytes held (see [`crate::memory`]).
    bytes: i64,
}

/// Rollups a window operator emits per activation (per worker). A closing window emits one
/// rollup per series, and every consumer of the stream gets its own copy in timely's
/// channels: emitted at once, a 1-minute window at 1 M series put about 100 MB per consumer in
/// flight (the job's catch-up after ingest closed several at once: 459 MB of the peak was in
/// channels). In slices the consumers drain each one before the next is sent; the window's
/// capability stays where it was until the last slice is out, so downstream sees the same
/// times as before.
pub const EMIT_PER_ACTIVATION: usize = 16 * 1024;

impl<A> Window<A> {
    /// Whether the first emission has sent (or will not send) `series`' rollup: a record for it
    /// arriving now must be re-emitted as a correction.
    fn past(&self, series: u64) -> bool {
        if self.emitted {
            return true;
        }
        match &self.emitting {
            // A series not in the list (new since the emission began) is emitted as a
            // correction after it.
            Some((ids, sent)) => ids.binary_search(&series).map_or(true, |i| i < *sent),
            None => false,
        }
    }
}

/// The states of an emitted window's series as one buffer, by series id: about 12 bytes of
/// index a series instead of a hash slot and an allocation of its own (at 1 M series, the
/// five windows the default lateness keeps after emission held about 250 bytes a series in
/// slots and allocator rounding).
#[derive(Default)]
struct Frozen {
    ids: Box<[u64]>,
    /// Where each series' bytes end.
    ends: Box<[u32]>,
    bytes: Box<[u8]>,
}

impl Frozen {
    /// Moves the series whose state [`Accumulator::frozen`] gives out of `series`; `None` when
    /// there is nothing to freeze or the bytes would not fit `u32` offsets.
    fn build<A: Accumulator<D>, D>(series: &mut IdMap<A>) -> Option<Frozen> {
        let mut ids: Vec<u64> = series
            .iter()
            .filter_map(|(&id, a)| a.frozen().map(|_| id))
            .collect();
        if ids.is_empty() {
            return None;
        }
        ids.sort_unstable();
        let total: usize = ids
            .iter()
            .filter_map(|id| series.get(id)?.frozen().map(<[u8]>::len))
            .sum();
        u32::try_from(total).ok()?;
        let mut bytes = Vec::with_capacity(total);
        let mut ends = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some(a) = series.remove(id) {
                bytes.extend_from_slice(a.frozen().unwrap_or_default());
            }
            ends.push(bytes.len() as u32);
        }
        series.shrink_to_fit();
        Some(Frozen {
            ids: ids.into(),
            ends: ends.into(),
            bytes: bytes.into(),
        })
    }

    /// A series' state, thawed (the default when the series is not here).
    fn thaw<A: Accumulator<D>, D>(&self, id: u64) -> A {
        let Ok(i) = self.ids.binary_search(&id) else {
            return A::default();
        };
        let from = i.checked_sub(1).map_or(0, |j| self.ends[j] as usize);
        A::thaw(&self.bytes[from..self.ends[i] as usize])
    }

    fn heap_bytes(&self) -> usize {
        self.ids.len() * 8 + self.ends.len() * 4 + self.bytes.len()
    }
}

/// The least time of an input batch, and a capability for output 0 at it.
pub(crate) fn batch_time(cap: &InputCapability<u64>) -> Option<(u64, Capability<u64>)> {
    let t = *cap.least()?;
    let c = cap
        .retain_least(0)
        .expect("a totally ordered stamp has a least time");
    Some((t, c))
}

/// True when every time in the frontier is greater than `t` (no record at or before `t` can come).
pub(crate) fn passed(frontier: &MutableAntichain<u64>, t: i64) -> bool {
    match u64::try_from(t) {
        Ok(t) => !frontier.less_equal(&t),
        Err(_) => true,
    }
}

/// Whether a record sent at `t` is taken by its window: dropped (counted) once `t` reached the
/// window's end plus the allowed lateness (nothing is dropped before its window closed), late
/// (counted, taken) when its event time is below `t`.
pub(crate) fn admit<D: Windowed>(
    d: &D,
    t: i64,
    width: i64,
    lateness: i64,
    stats: &mut LateStats,
) -> bool {
    let end = d.window_start(width).saturating_add(width);
    if t > end && t >= end.saturating_add(lateness) {
        stats.dropped += 1;
        return false;
    }
    if d.event_ts() < t {
        stats.accepted += 1;
    }
    true
}

/// The generic tumbling-window operator behind [`tumbling_rollups`] and [`rollup_rollups`].
///
/// A record arriving at time `t` for window `(start, end]`:
/// - is **dropped** (counted) when `t >= end + lateness`: the window is gone;
/// - is **late** (counted, accepted) when its event time is below `t`;
/// - otherwise on time.
///
/// A window is emitted once the frontier passes `end`, re-emitted for the series a late record
/// changed, and retired once the frontier passes `end + lateness`.
///
/// # Examples
/// ```
/// use timely::dataflow::operators::{Capture, Input, Probe};
/// use tidemark_dataflows::window::{windows, SampleAcc};
/// use tidemark_dataflows::{captured, Sample};
///
/// // 10 s windows, 20 s lateness, driven by hand: the input's time is the watermark.
/// let (rollups, late) = timely::execute_directly(|worker| {
///     let (mut input, probe, rollups, late) = worker.dataflow::<u64, _, _>(|scope| {
///         let (input, stream) = scope.new_input::<Vec<Sample>>();
///         let (rollups, late) = windows::<Sample, SampleAcc>(stream, "Windows", 10_000, 20_000, None);
///         let (probe, rollups) = rollups.probe();
///         (input, probe, rollups.capture(), late.capture())
///     });
///     let s = |ts, value| Sample { series: 3, ts, value };
///     input.send(s(1_000, 1.0));
///     input.send(s(4_000, 2.0));
///     input.advance_to(12_000); // window (0, 10 s] closes: emitted
///     while probe.less_than(&12_000) { worker.step(); }
///     input.send(s(5_000, 4.0)); // late, within lateness: re-emitted corrected
///     input.advance_to(40_000); // retired
///     while probe.less_than(&40_000) { worker.step(); }
///     input.send(s(6_000, 8.0)); // too late: dropped from rollups, counted
///     (rollups, late)
/// });
/// let sums: Vec<f64> = captured(rollups).into_iter().map(|(_, r)| r.sum).collect();
/// assert_eq!(sums, vec![3.0, 7.0]);
/// let late: Vec<(u64, u64)> = captured(late).into_iter().map(|(_, l)| (l.accepted, l.dropped)).collect();
/// assert_eq!(late, vec![(1, 0), (0, 1)]);
/// ```
pub fn windows<'s, D, A>(
    stream: Stream<'s, u64, Vec<D>>,
    name: &str,
    width: i64,
    lateness: i64,
    memory: Option<Component>,
) -> (
    Stream<'s, u64, Vec<Rollup>>,
    Stream<'s, u64, Vec<LateStats>>,
)
where
    D: Windowed + Send + serde::Serialize + for<'de> serde::Deserialize<'de>,
    A: Accumulator<D>,
{
    let seed = empty(stream.scope());
    windows_seeded::<D, A>(stream, seed, name, width, lateness, memory)
}

/// [`windows`] with a second input, `seed`, that restores window state after a restart: a
/// record on it is added to its window as it is, never dropped or counted as late. A restart
/// sends, at its first time `T`, the records of every window not yet retired there.
///
/// A window that ended before `T` is not emitted again: its rollups reached the sinks before
/// the restart (a checkpoint's cut at watermark `T` waits until the sinks applied everything
/// sent before `T`, and every window ending before `T` was emitted before then). It is held
/// for corrections, and a record arriving on the main input re-emits the series it changed,
/// with the seeded state. (It was emitted again before: 6 rollups a series at the default
/// lateness, 6 M upserts into the hot index at 1 M series, most of a restart's time after
/// the checkpoint load.) A window ending at or after `T` emits once the frontier passes its
/// end.
///
/// # Examples
/// ```
/// use timely::dataflow::operators::{Capture, Input, Probe};
/// use tidemark_dataflows::window::{windows_seeded, SampleAcc};
/// use tidemark_dataflows::{captured, Sample};
///
/// // A restart at 12 s: the window (0, 10 s] is still open for lateness; its samples come back
/// // on the seed input, and the late sample after the restart corrects it.
/// let (rollups, late) = timely::execute_directly(|worker| {
///     let (mut input, mut seed, probe, rollups, late) = worker.dataflow::<u64, _, _>(|scope| {
///         let (input, stream) = scope.new_input::<Vec<Sample>>();
///         let (seed, seeds) = scope.new_input::<Vec<Sample>>();
///         let (rollups, late) =
///             windows_seeded::<Sample, SampleAcc>(stream, seeds, "Windows", 10_000, 20_000, None);
///         let (probe, rollups) = rollups.probe();
///         (input, seed, probe, rollups.capture(), late.capture())
///     });
///     let s = |ts, value| Sample { series: 3, ts, value };
///     input.advance_to(12_000);
///     seed.advance_to(12_000);
///     seed.send(s(1_000, 1.0));
///     seed.send(s(4_000, 2.0));
///     drop(seed);
///     input.send(s(5_000, 4.0)); // late, within lateness
///     input.advance_to(13_000);
///     while probe.less_than(&13_000) { worker.step(); }
///     (rollups, late)
/// });
/// let sums: Vec<f64> = captured(rollups).into_iter().map(|(_, r)| r.sum).collect();
/// assert_eq!(sums, vec![7.0]);
/// let late: Vec<u64> = captured(late).into_iter().map(|(_, l)| l.accepted).collect();
/// assert_eq!(late, vec![1]); // the seed is not late data
/// ```
pub fn windows_seeded<'s, D, A>(
    stream: Stream<'s, u64, Vec<D>>,
    seed: Stream<'s, u64, Vec<D>>,
    name: &str,
    width: i64,
    lateness: i64,
    memory: Option<Component>,
) -> (
    Stream<'s, u64, Vec<Rollup>>,
    Stream<'s, u64, Vec<LateStats>>,
)
where
    D: Windowed + Send + serde::Serialize + for<'de> serde::Deserialize<'de>,
    A: Accumulator<D>,
{
    assert!(
        width > 0 && lateness >= 0,
        "window width must be positive and lateness non-negative"
    );
    let scope = stream.scope();
    let out = stream
        .binary_frontier::<_, CapacityContainerBuilder<Vec<Result<Rollup, LateStats>>>, _, _, _, _>(
            seed,
            Exchange::new(|d: &D| d.series()),
            Exchange::new(|d: &D| d.series()),
            name,
            move |_cap, info| {
                let activator = scope.activator_for(info.address.clone());
                let mut open: BTreeMap<i64, Window<A>> = BTreeMap::new();
                let mut reported = memory.map(Reported::new);
                move |(input, frontier), (seeds, seed_frontier), output| {
                    // Finer windows ending at or before this can no longer be corrected.
                    let lowest = frontier
                        .frontier()
                        .iter()
                        .chain(seed_frontier.frontier().iter())
                        .min()
                        .copied();
                    let settled = lowest
                        .map_or(i64::MAX, |f| i64::try_from(f).unwrap_or(i64::MAX))
                        .saturating_sub(lateness);
                    // `seeded`: a seed record, restoring what the sinks already have.
                    let add = |open: &mut BTreeMap<i64, Window<A>>,
                               cap: &Capability<u64>,
                               d: D,
                               seeded: bool| {
                        let start = d.window_start(width);
                        let w = open.entry(start).or_insert_with(|| Window {
                            cap: cap.clone(),
                            series: IdMap::default(),
                            frozen: Frozen::default(),
                            emitted: false,
                            silent: seeded
                                && u64::try_from(start.saturating_add(width))
                                    .is_ok_and(|end| end < *cap.time()),
                            emitting: None,
                            dirty: IdSet::default(),
                            bytes: 0,
                        });
                        let changed = if seeded {
                            !w.silent && w.past(d.series())
                        } else {
                            w.silent || w.past(d.series())
                        };
                        if changed && w.dirty.insert(d.series()) {
                            w.bytes += hash_slot(8);
                        }
                        let entry = w.series.entry(d.series());
                        let fresh = matches!(entry, Entry::Vacant(_));
                        let frozen = &w.frozen;
                        let acc = entry.or_insert_with(|| frozen.thaw(d.series()));
                        let before = acc.heap_bytes() as i64;
                        if fresh {
                            // A thawed state is a copy: its frozen bytes stay until retired.
                            w.bytes += hash_slot(8 + std::mem::size_of::<A>()) + before;
                        }
                        acc.add(d, settled);
                        w.bytes += acc.heap_bytes() as i64 - before;
                    };
                    seeds.for_each(|cap, data| {
                        let Some((_, c)) = batch_time(&cap) else {
                            return;
                        };
                        for d in data.drain(..) {
                            add(&mut open, &c, d, true);
                        }
                    });
                    input.for_each(|cap, data| {
                        let Some((t, c)) = batch_time(&cap) else {
                            return;
                        };
                        let t_i = i64::try_from(t).unwrap_or(i64::MAX);
                        let mut stats = LateStats::default();
                        for d in data.drain(..) {
                            if admit(&d, t_i, width, lateness, &mut stats) {
                                add(&mut open, &c, d, false);
                            }
                        }
                        if stats != LateStats::default() {
                            output.session(&c).give(Err(stats));
                        }
                    });
                    let mut retired = Vec::new();
                    let mut budget = EMIT_PER_ACTIVATION;
                    for (&start, w) in open.iter_mut() {
                        let end = start.saturating_add(width);
                        let closed = |f: &MutableAntichain<u64>, t| passed(f, t);
                        if !(closed(frontier, end) && closed(seed_frontier, end)) {
                            // Not closed yet: hold the capability no lower than the frontier, so
                            // a window of the future does not hold back downstream progress.
                            if let Some(f) = lowest {
                                if f > *w.cap.time() {
                                    w.cap.downgrade(&f);
                                }
                            }
                            continue;
                        }
                        if budget == 0 {
                            // Older windows used this activation's slice: the capability
                            // stays, and the next activation goes on.
                            activator.activate();
                            continue;
                        }
                        let mut session = output.session(&w.cap);
                        // Emitting may shrink an accumulator (samples are packed).
                        let mut emit = |series: u64, acc: &mut A, bytes: &mut i64, send: bool| {
                            let before = acc.heap_bytes() as i64;
                            if let Some(r) = acc.rollup(series, start, width) {
                                if send {
                                    session.give(Ok(r));
                                }
                            }
                            *bytes += acc.heap_bytes() as i64 - before;
                        };
                        if !w.emitted {
                            let (ids, sent) = w.emitting.get_or_insert_with(|| {
                                let mut ids: Vec<u64> = w.series.keys().copied().collect();
                                ids.sort_unstable();
                                w.bytes += ids.len() as i64 * 8;
                                (ids.into(), 0)
                            });
                            let n = budget.min(ids.len() - *sent);
                            for &series in &ids[*sent..*sent + n] {
                                if let Some(acc) = w.series.get_mut(&series) {
                                    emit(series, acc, &mut w.bytes, !w.silent);
                                }
                            }
                            *sent += n;
                            budget -= n;
                            if *sent < ids.len() {
                                drop(session);
                                activator.activate();
                                continue;
                            }
                            w.bytes -= ids.len() as i64 * 8;
                            w.emitting = None;
                            w.emitted = true;
                            // Corrections to series sent while the emission went on.
                            for series in w.dirty.drain() {
                                if let Some(acc) = w.series.get_mut(&series) {
                                    emit(series, acc, &mut w.bytes, true);
                                }
                            }
                            if let Some(f) = Frozen::build(&mut w.series) {
                                w.frozen = f;
                                let slot = hash_slot(8 + std::mem::size_of::<A>());
                                w.bytes = w.frozen.heap_bytes() as i64
                                    + w.series.len() as i64 * slot
                                    + w.series
                                        .values()
                                        .map(|a| a.heap_bytes() as i64)
                                        .sum::<i64>();
                            }
                        } else {
                            for series in w.dirty.drain() {
                                if let Some(acc) = w.series.get_mut(&series) {
                                    emit(series, acc, &mut w.bytes, true);
                                }
                            }
                        }
                        drop(session);
                        let gone = end.max(end.saturating_add(lateness) - 1);
                        if closed(frontier, gone) && closed(seed_frontier, gone) {
                            retired.push(start);
                        } else if let Some(f) = lowest {
                            if f > *w.cap.time() {
                                w.cap.downgrade(&f);
                            }
                        }
                    }
                    for s in retired {
                        open.remove(&s);
                    }
                    if let Some(r) = reported.as_mut() {
                        r.set(open.values().map(|w| w.bytes).sum());
                    }
                }
            },
        );
    out.ok_err(|r| r)
}

/// 1-minute (or any width) rollups of raw samples, exchanged by series. Staleness markers are
/// not aggregated.
///
/// # Examples
/// ```
/// use timely::dataflow::operators::{Capture, ToStream};
/// use tidemark_dataflows::captured;
/// use tidemark_dataflows::window::tumbling_rollups;
/// use tidemark_dataflows::Sample;
///
/// let (rollups, late) = timely::example(|scope| {
///     let s = |ts, value| Sample { series: 1, ts, value };
///     // All sent at time 0, as a source at watermark 0 would send them.
///     // Windows are (start, start + 1 min]: the sample at 60 s ends the first one.
///     let input = vec![s(60_000, 5.0), s(30_000, 7.0), s(20_000, 1.0), s(61_000, 2.0)]
///         .to_stream(scope).container::<Vec<_>>();
///     let (rollups, late) = tumbling_rollups(input, 60_000, 300_000);
///     (rollups.capture(), late.capture())
/// });
/// let mut got: Vec<_> = captured(rollups).into_iter().map(|(_, r)| r).collect();
/// got.sort_by_key(|r| r.start);
/// assert_eq!(got.len(), 2);
/// assert_eq!((got[0].start, got[0].count, got[0].sum), (0, 3, 13.0));
/// assert_eq!((got[0].first, got[0].first_ts, got[0].last, got[0].last_ts), (1.0, 20_000, 5.0, 60_000));
/// assert_eq!(got[0].increase, 6.0 + 5.0); // 1 -> 7 -> 5: the drop to 5 is a counter reset
/// assert_eq!((got[1].start, got[1].count), (60_000, 1));
/// assert!(captured(late).is_empty());
/// ```
pub fn tumbling_rollups<'s>(
    samples: Stream<'s, u64, Vec<Sample>>,
    width: i64,
    lateness: i64,
) -> (
    Stream<'s, u64, Vec<Rollup>>,
    Stream<'s, u64, Vec<LateStats>>,
) {
    let seed = empty(samples.scope());
    tumbling_rollups_seeded(samples, seed, width, lateness)
}

/// [`tumbling_rollups`] with window state restored from `seed` (see [`windows_seeded`]).
pub fn tumbling_rollups_seeded<'s>(
    samples: Stream<'s, u64, Vec<Sample>>,
    seed: Stream<'s, u64, Vec<Sample>>,
    width: i64,
    lateness: i64,
) -> (
    Stream<'s, u64, Vec<Rollup>>,
    Stream<'s, u64, Vec<LateStats>>,
) {
    use timely::dataflow::operators::core::Filter;
    let live = |s: &Sample| s.value.to_bits() != STALE_NAN_BITS;
    windows_seeded::<Sample, SampleAcc>(
        samples.filter(live),
        seed.filter(live),
        "TumblingRollups",
        width,
        lateness,
        Some(Component::Windows1m),
    )
}

/// Coarser rollups (1 h) built from finer ones (1 m), which may arrive again corrected: the
/// latest rollup for a finer window replaces the earlier one.
///
/// # Examples
/// ```
/// use timely::dataflow::operators::{Capture, ToStream};
/// use tidemark_dataflows::captured;
/// use tidemark_dataflows::window::rollup_rollups;
/// use tidemark_dataflows::Rollup;
///
/// let got = timely::example(|scope| {
///     let m0 = Rollup::from_sorted(1, 0, 60_000, &[(0, 1.0), (30_000, 2.0)]).unwrap();
///     let m1 = Rollup::from_sorted(1, 60_000, 60_000, &[(60_000, 4.0)]).unwrap();
///     let m1_corrected = Rollup::from_sorted(1, 60_000, 60_000, &[(60_000, 4.0), (90_000, 5.0)]).unwrap();
///     let (hours, _late) = rollup_rollups(vec![m0, m1, m1_corrected].to_stream(scope).container::<Vec<_>>(), 3_600_000, 300_000);
///     hours.capture()
/// });
/// let h: Vec<_> = captured(got).into_iter().map(|(_, r)| r).collect();
/// assert_eq!(h.len(), 1);
/// assert_eq!((h[0].count, h[0].sum, h[0].min, h[0].max, h[0].last), (4, 12.0, 1.0, 5.0, 5.0));
/// assert_eq!(h[0].increase, 4.0); // 1 -> 2 -> 4 -> 5
/// ```
pub fn rollup_rollups<'s>(
    rollups: Stream<'s, u64, Vec<Rollup>>,
    width: i64,
    lateness: i64,
) -> (
    Stream<'s, u64, Vec<Rollup>>,
    Stream<'s, u64, Vec<LateStats>>,
) {
    windows::<Rollup, RollupAcc>(
        rollups,
        "RollupRollups",
        width,
        lateness,
        Some(Component::Windows1h),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn packed_samples_round_trip_bit_for_bit() {
        let specials = [0.0, -0.0, f64::NAN, f64::INFINITY, -1.5, 1e300, 5e-324];
        let mut samples: Vec<(i64, f64)> = (0..40)
            .map(|i| (1_700_000_000_000 + i * 10_000 + (i % 3), (i as f64) * 0.37))
            .collect();
        for (i, v) in specials.iter().enumerate() {
            samples.push((1_800_000_000_000 + i as i64, *v));
        }
        samples.push((-5, 42.0)); // a negative delta
        let packed = pack(&samples);
        assert!(packed.len() < samples.len() * 16, "{} bytes", packed.len());
        let mut back = Vec::new();
        unpack(&packed, &mut back);
        assert_eq!(back.len(), samples.len());
        for (a, b) in samples.iter().zip(&back) {
            assert_eq!((a.0, a.1.to_bits()), (b.0, b.1.to_bits()));
        }
        // A damaged buffer decodes to something, without a panic.
        let mut cut = packed.to_vec();
        cut.truncate(cut.len() - 3);
        cut.push(0xff);
        unpack(&cut, &mut Vec::new());
    }

    /// What an operator emitted (an `inspect` pushes into `got`) and how many records each
    /// worker step added: the emission's slices.
    #[derive(Default)]
    struct Slices {
        got: std::rc::Rc<std::cell::RefCell<Vec<Rollup>>>,
        steps: Vec<usize>,
        seen: usize,
    }

    impl Slices {
        /// Steps the worker while `more` says so, recording what each step added.
        fn step_while(
            &mut self,
            worker: &mut timely::worker::Worker,
            mut more: impl FnMut() -> bool,
        ) {
            while more() {
                worker.step();
                let n = self.got.borrow().len();
                self.steps.push(n - self.seen);
                self.seen = n;
            }
        }

        /// A series already emitted and one of `0..n` not yet.
        fn sent_and_unsent(&self, n: u64) -> (u64, u64) {
            let sent: std::collections::HashSet<u64> =
                self.got.borrow().iter().map(|r| r.series).collect();
            let early = *sent.iter().next().expect("something was emitted");
            (early, (0..n).find(|x| !sent.contains(x)).expect("not all"))
        }
    }

    #[test]
    fn a_large_window_is_emitted_in_slices_and_takes_corrections_during_the_emission() {
        use timely::dataflow::operators::{Input, Inspect, Probe};
        let n = 2 * EMIT_PER_ACTIVATION as u64 + 1_000;
        timely::execute_directly(move |worker| {
            let mut slices = Slices::default();
            let sink = std::rc::Rc::clone(&slices.got);
            let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<Sample>>();
                let (rollups, _late) = tumbling_rollups(stream, 60_000, 300_000);
                let (probe, _) = rollups.inspect(move |r| sink.borrow_mut().push(*r)).probe();
                (input, probe)
            });
            let s = |series, ts, value| Sample { series, ts, value };
            for series in 0..n {
                input.send(s(series, 30_000, 1.0));
            }
            // The frontier passes the window's end: it closes and is emitted.
            input.advance_to(61_000);
            let got = std::rc::Rc::clone(&slices.got);
            slices.step_while(worker, || got.borrow().len() < EMIT_PER_ACTIVATION);
            assert!(slices.seen < n as usize, "emitted at once");
            // The emission is under way: the capability did not move on.
            assert!(probe.less_equal(&60_999));
            // A late sample for a series already sent (a correction follows the emission) and
            // for one not yet sent (its one rollup includes it), and a new series.
            let (early, later) = slices.sent_and_unsent(n);
            input.send(s(early, 40_000, 5.0));
            input.send(s(later, 40_000, 7.0));
            input.send(s(n + 5, 40_000, 9.0));
            input.advance_to(62_000);
            slices.step_while(worker, || probe.less_than(&62_000));
            let steps = &slices.steps;
            assert!(
                steps.iter().all(|&k| k <= EMIT_PER_ACTIVATION + 2),
                "{steps:?}"
            );
            let got = got.borrow();
            let of = |x: u64| -> Vec<(u64, f64)> {
                got.iter()
                    .filter(|r| r.series == x)
                    .map(|r| (r.count, r.sum))
                    .collect()
            };
            assert_eq!(of(early), vec![(1, 1.0), (2, 6.0)]);
            assert_eq!(of(later), vec![(2, 8.0)]);
            assert_eq!(of(n + 5), vec![(1, 9.0)]);
            let mut each: Vec<u64> = got.iter().map(|r| r.series).collect();
            each.sort_unstable();
            each.dedup();
            assert_eq!(each.len() as u64, n + 1);
            assert_eq!(got.len() as u64, n + 2);
        });
    }

    #[test]
    fn an_hour_read_from_the_store_is_emitted_in_slices_and_takes_corrections() {
        use crate::sink::{sink_rollups, HotSink};
        use std::rc::Rc;
        use std::sync::Mutex;
        use timely::dataflow::operators::{Input, Inspect, Probe};
        #[derive(Clone, Default)]
        struct Store(Arc<Mutex<BTreeMap<(u64, i64), Rollup>>>);
        impl HotSink for Store {
            fn append(&self, _: &[Sample]) {}
            fn upsert_rollups(&self, rs: &[Rollup]) {
                let mut m = self.0.lock().unwrap();
                for r in rs {
                    m.insert((r.series, r.start), *r);
                }
            }
        }
        const HOUR: i64 = 3_600_000;
        let n = 2 * EMIT_PER_ACTIVATION as u64 + 1_000;
        let store = Store::default();
        let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, counted) = (store.clone(), Arc::clone(&reads));
        let read: RollupStore = Arc::new(move |series, start, end, out: &mut Vec<Rollup>| {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let m = s.0.lock().unwrap();
            out.extend(m.range((series, start)..(series, end)).map(|(_, r)| *r));
        });
        timely::execute_directly(move |worker| {
            let mut slices = Slices::default();
            let sink = Rc::clone(&slices.got);
            let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, minutes) = scope.new_input::<Vec<Rollup>>();
                let seeds = empty(scope);
                let stored = sink_rollups(minutes.clone(), store);
                let (hours, _late) =
                    rollups_from_store(minutes, stored, seeds, HOUR, 300_000, read);
                let (probe, _) = hours.inspect(move |r| sink.borrow_mut().push(*r)).probe();
                (input, probe)
            });
            let m = |series, start: i64, v: f64| {
                Rollup::from_sorted(series, start, 60_000, &[(start + 1, v)]).unwrap()
            };
            for series in 0..n {
                input.send(m(series, 0, 1.0));
            }
            // The frontier passes the hour's end: it closes and is read back in slices.
            input.advance_to(HOUR as u64 + 1_000);
            let got = Rc::clone(&slices.got);
            slices.step_while(worker, || got.borrow().len() < EMIT_PER_ACTIVATION);
            assert!(slices.seen < n as usize, "emitted at once");
            assert!(
                reads.load(std::sync::atomic::Ordering::Relaxed) < n as usize,
                "read back at once"
            );
            // The emission is under way: the capability did not move on.
            assert!(probe.less_equal(&(HOUR as u64)));
            // A late minute for a series already sent and for one not yet sent, and a series
            // new to the hour: each is emitted with it (again) once the store has it.
            let (early, later) = slices.sent_and_unsent(n);
            input.send(m(early, 60_000, 5.0));
            input.send(m(later, 60_000, 7.0));
            input.send(m(n + 5, 60_000, 9.0));
            input.advance_to(HOUR as u64 + 2_000);
            slices.step_while(worker, || probe.less_than(&(HOUR as u64 + 2_000)));
            let steps = &slices.steps;
            assert!(
                steps.iter().all(|&k| k <= EMIT_PER_ACTIVATION + 3),
                "{steps:?}"
            );
            let got = got.borrow();
            let last = |x: u64| {
                got.iter()
                    .rev()
                    .find(|r| r.series == x)
                    .map(|r| (r.count, r.sum))
            };
            assert_eq!(last(early), Some((2, 6.0)));
            assert_eq!(last(later), Some((2, 8.0)));
            assert_eq!(last(n + 5), Some((1, 9.0)));
            assert_eq!(got.iter().filter(|r| r.series == early).count(), 2);
            let mut each: Vec<u64> = got.iter().map(|r| r.series).collect();
            each.sort_unstable();
            each.dedup();
            assert_eq!(each.len() as u64, n + 1);
            assert!(got.iter().all(|r| r.start == 0 && r.width == HOUR));
        });
    }

    #[test]
    fn seeded_windows_that_ended_before_the_restart_are_not_emitted_again() {
        use timely::dataflow::operators::{Capture, Input, Probe};
        let got = timely::execute_directly(|worker| {
            let (mut input, mut seed, probe, rollups) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<Sample>>();
                let (seed, seeds) = scope.new_input::<Vec<Sample>>();
                let (rollups, _late) =
                    windows_seeded::<Sample, SampleAcc>(stream, seeds, "W", 60_000, 300_000, None);
                let (probe, rollups) = rollups.probe();
                (input, seed, probe, rollups.capture())
            });
            let s = |series, ts, value| Sample { series, ts, value };
            // A restart at 130 s: windows (0, 60 s] and (60 s, 120 s] ended before it, (120 s,
            // 180 s] had not.
            input.advance_to(130_000);
            seed.advance_to(130_000);
            for series in 1..=3 {
                seed.send(s(series, 30_000, 1.0));
                seed.send(s(series, 90_000, 2.0));
                seed.send(s(series, 125_000, 3.0));
            }
            drop(seed);
            // After the seed: a late sample for series 2's first window.
            input.send(s(2, 40_000, 10.0));
            input.advance_to(200_000);
            while probe.less_than(&200_000) {
                worker.step();
            }
            rollups
        });
        let mut got: Vec<(u64, i64, u64, f64)> = crate::captured(got)
            .into_iter()
            .map(|(_, r)| (r.series, r.start, r.count, r.sum))
            .collect();
        got.sort_by_key(|a| (a.0, a.1));
        assert_eq!(
            got,
            vec![
                (1, 120_000, 1, 3.0),
                // Corrected with the seeded sample kept.
                (2, 0, 2, 11.0),
                (2, 120_000, 1, 3.0),
                (3, 120_000, 1, 3.0),
            ]
        );
    }

    #[test]
    fn samples_in_time_order_stay_packed_while_the_window_is_open() {
        let s = |ts, value| Sample {
            series: 1,
            ts,
            value,
        };
        let pts: Vec<(i64, f64)> = (1..=6)
            .map(|i| (1_700_000_000_000 + i * 10_000, 0.5 + i as f64 * 0.25))
            .collect();
        let mut acc = SampleAcc::default();
        for &(ts, v) in &pts {
            acc.add(s(ts, v), 0);
            assert!(matches!(acc, SampleAcc::Packed(_)));
        }
        // A third of the 96 bytes a vector takes (the first time is a whole varint).
        assert!(acc.heap_bytes() <= 32, "{} bytes", acc.heap_bytes());
        let want = Rollup::from_sorted(1, 1_700_000_000_000, 60_000, &pts).unwrap();
        assert_eq!(acc.rollup(1, 1_700_000_000_000, 60_000), Some(want));
        // The same time again unpacks them; the last arrival wins.
        acc.add(s(pts[5].0, 9.0), 0);
        assert!(matches!(acc, SampleAcc::Open(_)));
        let r = acc.rollup(1, 1_700_000_000_000, 60_000).unwrap();
        assert_eq!((r.count, r.last), (6, 9.0));
        assert!(matches!(acc, SampleAcc::Packed(_)));
    }

    #[test]
    fn an_emitted_window_is_packed_and_takes_a_late_sample() {
        assert!(std::mem::size_of::<SampleAcc>() <= 24);
        let mut acc = SampleAcc::default();
        let s = |ts, value| Sample {
            series: 1,
            ts,
            value,
        };
        for (ts, v) in [(10_000, 1.0), (30_000, 3.0), (20_000, 2.0)] {
            acc.add(s(ts, v), 0);
        }
        let open = acc.heap_bytes();
        let r = acc.rollup(1, 0, 60_000).unwrap();
        assert!(matches!(acc, SampleAcc::Packed(_)));
        assert!(acc.heap_bytes() < open, "{} >= {open}", acc.heap_bytes());
        assert_eq!((r.count, r.sum, r.first, r.last), (3, 6.0, 1.0, 3.0));
        acc.add(s(40_000, 4.0), 0);
        acc.add(s(20_000, 5.0), 0); // same time again: the last arrival wins
        let r = acc.rollup(1, 0, 60_000).unwrap();
        assert_eq!((r.count, r.sum, r.last), (4, 13.0, 4.0));
    }
}

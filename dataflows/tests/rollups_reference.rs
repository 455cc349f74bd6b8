//! The windows against an oracle that recomputes from scratch, on random inputs with disorder,
//! late and very late samples, at 1 and at 3 workers (as differential's `reduce_reference`):
//! minutes from windows that hold their samples and from windows that read them back from a raw
//! store (very late samples are written to it too), hours from both hour operators.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tidemark_dataflows::sink::{sink_rollups, HotSink};
use tidemark_dataflows::source::{watermark_source, BatchSource, Poll, WatermarkConfig};
use tidemark_dataflows::stored::{sample_rollups_stored, SampleStore};
use tidemark_dataflows::window::{
    rollup_rollups, rollups_from_store, tumbling_rollups, RollupStore,
};
use tidemark_dataflows::{LateStats, Rollup, Sample};
use timely::dataflow::operators::capture::{Capture, Event};

const OOO: i64 = 5_000;
const LATENESS: i64 = 90_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Records (batches) as a log would hold them.
fn records(seed: u64) -> Vec<Vec<Sample>> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    let mut clock = 1_000_000i64;
    let mut used = std::collections::HashSet::new();
    for _ in 0..120 {
        let mut rec = Vec::new();
        for _ in 0..(1 + rng.below(12)) {
            let lag = match rng.below(20) {
                0 => 60_000 + rng.below(200_000) as i64, // late, often too late
                1..=3 => rng.below(30_000) as i64,       // a little late
                _ => rng.below(4_000) as i64,            // within the bound
            };
            let mut ts = (clock - lag).max(0);
            let series = rng.below(5);
            if rng.below(8) == 0 {
                // Exactly on a minute boundary: it ends the window before.
                ts = ts / 60_000 * 60_000;
            }
            // One value per series and time: two records with the same series and time but
            // different values, read by different workers, have no defined order (the
            // workers' outputs interleave), so the scripts avoid them.
            if !used.insert((series, ts)) {
                continue;
            }
            rec.push(Sample {
                series,
                ts,
                value: rng.below(1000) as f64,
            });
        }
        clock += rng.below(9_000) as i64;
        out.push(rec);
    }
    out
}

struct Script {
    records: Arc<Vec<Vec<Sample>>>,
    next: usize,
    index: usize,
    peers: usize,
}

impl BatchSource for Script {
    fn poll(&mut self) -> Poll {
        let Some(rec) = self.records.get(self.next) else {
            return Poll::Done;
        };
        let mine = self.next % self.peers == self.index;
        self.next += 1;
        let max_ts = rec.iter().map(|s| s.ts).max().unwrap_or(0);
        Poll::Ready {
            max_ts,
            samples: if mine { rec.clone() } else { Vec::new() },
        }
    }
}

type Key = (u64, i64);

/// The window `(start, start + width]` a time falls in, computed apart from `window.rs`.
fn window_of(ts: i64, width: i64) -> i64 {
    // The largest multiple of `width` strictly below `ts`.
    let mut start = ts - ts.rem_euclid(width);
    if start == ts {
        start -= width;
    }
    start
}

/// A rollup computed straight from a window's samples (time order, last write per time),
/// apart from `Rollup::from_sorted` and `Rollup::merge`, the code under test.
fn reference_rollup(series: u64, start: i64, width: i64, pts: &BTreeMap<i64, f64>) -> Rollup {
    let values: Vec<f64> = pts.values().copied().collect();
    let times: Vec<i64> = pts.keys().copied().collect();
    let mut increase = 0.0;
    for w in values.windows(2) {
        // A counter that drops restarted from zero: the whole new value is the increase.
        increase += if w[1] < w[0] { w[1] } else { w[1] - w[0] };
    }
    Rollup {
        series,
        start,
        width,
        count: values.len() as u64,
        sum: values.iter().sum(),
        min: values.iter().copied().fold(f64::INFINITY, f64::min),
        max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        first: values[0],
        last: values[values.len() - 1],
        first_ts: times[0],
        last_ts: times[times.len() - 1],
        increase,
    }
}

fn oracle(records: &[Vec<Sample>], width: i64) -> (BTreeMap<Key, Rollup>, LateStats) {
    let mut wm = 0i64;
    let mut kept: BTreeMap<Key, BTreeMap<i64, f64>> = BTreeMap::new();
    let mut stats = LateStats::default();
    for rec in records {
        for s in rec {
            let minute_end = window_of(s.ts, 60_000) + 60_000;
            if wm >= minute_end + LATENESS {
                stats.dropped += 1;
                continue;
            }
            if s.ts < wm {
                stats.accepted += 1;
            }
            kept.entry((s.series, window_of(s.ts, width)))
                .or_default()
                .insert(s.ts, s.value);
        }
        let max = rec.iter().map(|s| s.ts).max().unwrap_or(0);
        wm = wm.max(max - OOO);
    }
    let rollups = kept
        .into_iter()
        .map(|((series, start), pts)| {
            (
                (series, start),
                reference_rollup(series, start, width, &pts),
            )
        })
        .collect();
    (rollups, stats)
}

/// A store of the latest minute rollup per (series, start), shared by the workers (the hot
/// index in Tidemark), for `rollups_from_store`.
#[derive(Clone, Default)]
struct Store(Arc<Mutex<BTreeMap<Key, Rollup>>>);

impl HotSink for Store {
    fn append(&self, _: &[Sample]) {}
    fn upsert_rollups(&self, rs: &[Rollup]) {
        let mut m = self.0.lock().unwrap();
        for r in rs {
            m.insert((r.series, r.start), *r);
        }
    }
}

/// A store of the latest raw value per (series, time), shared by the workers (the hot index in
/// Tidemark), for `sample_rollups_stored`.
#[derive(Clone, Default)]
struct RawStore(Arc<Mutex<BTreeMap<Key, f64>>>);

impl HotSink for RawStore {
    fn append(&self, ss: &[Sample]) {
        let mut m = self.0.lock().unwrap();
        for s in ss {
            m.insert((s.series, s.ts), s.value);
        }
    }
    fn upsert_rollups(&self, _: &[Rollup]) {}
    /// The newest sample of each series before the one appended, as the hot index reports it:
    /// the operator then notes a series once per window, the path Tidemark runs.
    fn append_reporting(&self, ss: &[Sample], before: &mut Vec<Option<(i64, f64)>>) {
        let mut m = self.0.lock().unwrap();
        before.clear();
        for s in ss {
            let newest = m
                .range((s.series, i64::MIN)..=(s.series, i64::MAX))
                .next_back()
                .map(|(k, v)| (k.1, *v));
            before.push(newest);
            m.insert((s.series, s.ts), s.value);
        }
    }
}

struct Run {
    minutes: BTreeMap<Key, Rollup>,
    /// Minutes from `sample_rollups_stored` (samples read back from the raw store).
    stored_minutes: BTreeMap<Key, Rollup>,
    hours: BTreeMap<Key, Rollup>,
    /// Hours from `rollups_from_store`.
    stored_hours: BTreeMap<Key, Rollup>,
    late: LateStats,
}

fn run(records: Vec<Vec<Sample>>, workers: usize) -> Run {
    let records = Arc::new(records);
    let (tx_m, rx_m) = mpsc::channel();
    let (tx_r, rx_r) = mpsc::channel();
    let (tx_h, rx_h) = mpsc::channel();
    let (tx_s, rx_s) = mpsc::channel();
    let (tx_l, rx_l) = mpsc::channel();
    let senders = Arc::new(Mutex::new((tx_m, tx_r, tx_h, tx_s, tx_l)));
    let store = Store::default();
    let raw = RawStore::default();
    timely::execute(timely::Config::process(workers), move |worker| {
        let (tx_m, tx_r, tx_h, tx_s, tx_l) = senders.lock().unwrap().clone();
        let store = store.clone();
        let raw = raw.clone();
        let records = Arc::clone(&records);
        worker.dataflow::<u64, _, _>(move |scope| {
            let cfg = WatermarkConfig {
                out_of_orderness_ms: OOO as u64,
                records_per_activation: 3,
                start: 0,
            };
            let samples = watermark_source(scope, "Script", cfg, move |index, peers| Script {
                records,
                next: 0,
                index,
                peers,
            });
            let read_raw = raw.clone();
            let read_raw: SampleStore = Arc::new(move |series, from, to, out| {
                let m = read_raw.0.lock().unwrap();
                out.extend(
                    m.range((series, from)..=(series, to))
                        .map(|(k, v)| (k.1, *v)),
                );
            });
            let no_seed = timely::dataflow::operators::generic::operator::empty(scope);
            let (raw_minutes, _, _) = sample_rollups_stored(
                samples.clone(),
                no_seed,
                60_000,
                LATENESS,
                i64::MIN,
                raw,
                read_raw,
            );
            raw_minutes.capture_into(tx_r);
            let (minutes, late) = tumbling_rollups(samples, 60_000, LATENESS);
            let (hours, _) = rollup_rollups(minutes.clone(), 3_600_000, LATENESS);
            let read = store.clone();
            let read: RollupStore = Arc::new(move |series, start, end, out| {
                let m = read.0.lock().unwrap();
                out.extend(m.range((series, start)..(series, end)).map(|(_, r)| *r));
            });
            let stored = sink_rollups(minutes.clone(), store);
            let no_seed = timely::dataflow::operators::generic::operator::empty(scope);
            let (from_store, _) =
                rollups_from_store(minutes.clone(), stored, no_seed, 3_600_000, LATENESS, read);
            minutes.capture_into(tx_m);
            hours.capture_into(tx_h);
            from_store.capture_into(tx_s);
            late.capture_into(tx_l);
        });
    })
    .unwrap();
    let upserts = |rx: mpsc::Receiver<Event<u64, Vec<Rollup>>>| {
        let mut m = BTreeMap::new();
        for e in rx.try_iter() {
            if let Event::Messages(_, rs) = e {
                for r in rs {
                    m.insert((r.series, r.start), r);
                }
            }
        }
        m
    };
    let mut stats = LateStats::default();
    for e in rx_l.try_iter() {
        if let Event::Messages(_, ls) = e {
            for l in ls {
                stats.accepted += l.accepted;
                stats.dropped += l.dropped;
            }
        }
    }
    Run {
        minutes: upserts(rx_m),
        stored_minutes: upserts(rx_r),
        hours: upserts(rx_h),
        stored_hours: upserts(rx_s),
        late: stats,
    }
}

fn close(a: &Rollup, b: &Rollup) -> bool {
    let f = |x: f64, y: f64| (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0);
    a.count == b.count
        && f(a.sum, b.sum)
        && f(a.min, b.min)
        && f(a.max, b.max)
        && f(a.first, b.first)
        && f(a.last, b.last)
        && f(a.increase, b.increase)
        && a.first_ts == b.first_ts
        && a.last_ts == b.last_ts
}

#[test]
fn rollups_match_the_oracle_at_any_worker_count() {
    for seed in [1u64, 7, 42, 1234, 99_991] {
        let recs = records(seed);
        let (want_m, want_stats) = oracle(&recs, 60_000);
        let (want_h, _) = oracle(&recs, 3_600_000);
        assert!(
            want_stats.dropped > 0 && want_stats.accepted > 0,
            "seed {seed} exercises both paths"
        );
        let on_boundary = recs
            .iter()
            .flatten()
            .filter(|s| s.ts > 0 && s.ts % 60_000 == 0)
            .count();
        assert!(
            on_boundary > 0,
            "seed {seed} puts samples on minute boundaries"
        );
        for workers in [1, 3] {
            let got = run(recs.clone(), workers);
            let (got_h, got_s) = (&got.hours, &got.stored_hours);
            assert_eq!(got.late, want_stats, "seed {seed}, {workers} workers");
            // Minutes from windows holding their samples, and read back from a raw store.
            for (what, got_m) in [("held", &got.minutes), ("stored", &got.stored_minutes)] {
                assert_eq!(
                    got_m.keys().collect::<Vec<_>>(),
                    want_m.keys().collect::<Vec<_>>(),
                    "seed {seed}, {workers} workers, {what}"
                );
                for (k, w) in &want_m {
                    assert!(
                        close(&got_m[k], w),
                        "seed {seed}, {workers} workers, {what} minute {k:?}: {:?} vs {w:?}",
                        got_m[k]
                    );
                }
            }
            // Hours are combined from the minutes that were kept; compare with the oracle at 1 h.
            assert_eq!(got_h.len(), want_h.len(), "seed {seed}, {workers} workers");
            for (k, w) in &want_h {
                assert!(
                    close(&got_h[k], w),
                    "seed {seed}, {workers} workers, hour {k:?}: {:?} vs {w:?}",
                    got_h[k]
                );
            }
            // The same hours read back from a store of the minutes.
            assert_eq!(got_s.len(), want_h.len(), "seed {seed}, {workers} workers");
            for (k, w) in &want_h {
                assert!(
                    close(&got_s[k], w),
                    "seed {seed}, {workers} workers, hour from the store {k:?}: {:?} vs {w:?}",
                    got_s[k]
                );
            }
        }
    }
}

//! Queries across tiers: the hot index for recent data, and for older data the cold tier that
//! fits the query (DESIGN.md section 6).
//!
//! A selection of `[start, end]` is cut at `cut`, the first hour boundary at or after the time
//! from which the hot index holds every sample: newer data comes from the hot index, older data
//! from the cold tiers. Below the cut the time line is split, newest first, into segments, each
//! read from one tier:
//!
//! - the *preferred* tier is the coarsest whose windows answer the query exactly
//!   ([`SelectHints::aligned_to`]): 1 h rollups when every evaluation time is an hour boundary
//!   and the range is whole hours (so steps of at least 1 h), 1 m rollups likewise for
//!   minutes, raw samples otherwise;
//! - where the preferred tier has no partition yet (the 1 h tier seals a day at a time, say), a
//!   finer one fills in, and where it no longer has one (retention), a coarser one does. Once a
//!   segment came from rollups, older segments do too (rollups precede samples).
//!
//! Segments meet at hour boundaries; a sample exactly on a boundary `b` belongs to the rollup
//! window ending at `b` when a rollup segment meets it, and to the newer segment otherwise, so
//! nothing is counted twice or missed.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::model::Labels;
use crate::store::cold::layout::HOUR_MS;
use crate::store::cold::query::{ColdReader, ColdSeries};
use crate::store::cold::Tier;
use crate::store::hot::index::Matcher;
use crate::store::{SelectHints, Selected, Series, Storage};

/// One part of a selection, read from one tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// `None`: the hot index.
    pub tier: Option<Tier>,
    /// Sample times `lo..=hi` (raw), or windows inside `(lo, hi]` (rollups).
    pub lo: i64,
    pub hi: i64,
}

fn is_rollup(t: Option<Tier>) -> bool {
    matches!(t, Some(Tier::Minute | Tier::Hour))
}

/// The tier that answers `hints` exactly at the lowest cost.
pub fn preferred(hints: &SelectHints) -> Tier {
    if hints.aligned_to(Tier::Hour.resolution()) {
        Tier::Hour
    } else if hints.aligned_to(Tier::Minute.resolution()) {
        Tier::Minute
    } else {
        Tier::Raw
    }
}

/// Splits `[start, end]` into segments, newest first (see the module documentation).
/// `coverage(tier)` is the span `[from, to)` of a tier's partitions.
pub fn plan(
    start: i64,
    end: i64,
    hot_from: i64,
    pref: Tier,
    coverage: &dyn Fn(Tier) -> Option<(i64, i64)>,
) -> Vec<Segment> {
    if start >= hot_from {
        return vec![Segment {
            tier: None,
            lo: start,
            hi: end,
        }];
    }
    let cut = match hot_from.rem_euclid(HOUR_MS) {
        0 => hot_from,
        r => hot_from.saturating_add(HOUR_MS - r),
    };
    // Newest first; sample times of a segment are settled below, once its neighbours are known.
    let mut segs: Vec<Segment> = Vec::new();
    if end > cut {
        segs.push(Segment {
            tier: None,
            lo: cut,
            hi: end,
        });
    }
    let order = match pref {
        Tier::Raw => [Tier::Raw, Tier::Minute, Tier::Hour],
        Tier::Minute => [Tier::Minute, Tier::Raw, Tier::Hour],
        Tier::Hour => [Tier::Hour, Tier::Minute, Tier::Raw],
    };
    let mut cur = end.min(cut);
    let mut raw_allowed = true;
    // Cold data needed: samples at `start` or later, windows starting at `start - 1` or later.
    while cur >= start {
        let usable = |t: &Tier| raw_allowed || *t != Tier::Raw;
        let pick = order.iter().filter(|t| usable(t)).find_map(|&t| {
            coverage(t)
                .filter(|&(from, to)| from < cur && cur <= to)
                .map(|c| (t, c))
        });
        match pick {
            Some((t, (from, _))) => {
                // A fallback tier answers only until a more preferred one holds data again.
                let better = order
                    .iter()
                    .take_while(|&&b| b != t)
                    .filter(|b| usable(b))
                    .filter_map(|&b| coverage(b).map(|c| c.1))
                    .filter(|&to| to < cur)
                    .max()
                    .unwrap_or(i64::MIN);
                let lo = from.max(start - 1).max(better);
                segs.push(Segment {
                    tier: Some(t),
                    lo,
                    hi: cur,
                });
                // Rollups precede samples once raw data has ended below (retention); a
                // rollup segment above where the raw tier's data ends (a day partition of the
                // 1 h tier reaching past the newest hour, with nothing in the hot index) does
                // not stop the raw tier from answering below it.
                if t != Tier::Raw && better == i64::MIN {
                    raw_allowed = false;
                }
                if lo < start {
                    break;
                }
                cur = lo;
            }
            None => {
                // No tier holds data just before `cur`: skip to the newest that holds older.
                let next = order
                    .iter()
                    .filter(|t| usable(t))
                    .filter_map(|&t| coverage(t).map(|c| c.1))
                    .filter(|&to| to < cur)
                    .max();
                match next {
                    Some(to) if to >= start => cur = to,
                    _ => break,
                }
            }
        }
    }
    // A sample exactly on a boundary goes to the rollup side of it, else to the newer side.
    for i in 0..segs.len() {
        let newer = i.checked_sub(1).map(|j| segs[j]);
        let older = segs.get(i + 1).copied();
        let s = &mut segs[i];
        if s.tier == Some(Tier::Raw) || s.tier.is_none() {
            s.lo = s.lo.max(start);
            if let Some(o) = older.filter(|o| o.hi == s.lo && is_rollup(o.tier)) {
                s.lo = o.hi + 1;
            }
            if let Some(n) = newer.filter(|n| n.lo == s.hi) {
                if !is_rollup(n.tier) {
                    s.hi -= 1;
                }
            }
        }
    }
    segs
}

/// The hot index (or a cluster's fan-out over it) in front of the cold tiers.
pub struct Tiered<'a> {
    pub hot: &'a dyn Storage,
    /// The hot index holds every sample at or after this time.
    pub hot_from: i64,
    pub cold: &'a ColdReader,
    /// Cold reads that failed: the query reports them instead of answering without the data.
    pub errors: Mutex<Vec<String>>,
}

impl<'a> Tiered<'a> {
    pub fn new(hot: &'a dyn Storage, hot_from: i64, cold: &'a ColdReader) -> Self {
        Tiered {
            hot,
            hot_from,
            cold,
            errors: Mutex::new(Vec::new()),
        }
    }

    /// The first cold-read failure, if any.
    pub fn error(&self) -> Option<String> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first()
            .cloned()
    }

    fn fail(&self, e: impl std::fmt::Display) {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("reading the cold tiers: {e}"));
    }
}

impl Storage for Tiered<'_> {
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<Series> {
        self.select_hinted(matchers, start, end, &SelectHints::raw())
            .into_iter()
            // Raw hints: only raw segments, unless raw data expired and rollups stand in.
            .map(Selected::into_points)
            .collect()
    }

    fn select_hinted(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
        hints: &SelectHints,
    ) -> Vec<Selected> {
        // Within the hot index: its own answer (the newest samples alone, or an instant
        // selector's picks).
        if (hints.newest_only || hints.instant) && start >= self.hot_from {
            return self.hot.select_hinted(matchers, start, end, hints);
        }
        let coverage = |t: Tier| match self.cold.coverage(t) {
            Ok(c) => c,
            Err(e) => {
                self.fail(e);
                None
            }
        };
        let segs = plan(start, end, self.hot_from, preferred(hints), &coverage);
        let mut by: HashMap<Labels, Selected> = HashMap::new();
        // Oldest first, so each series' rows are appended in time order.
        for (k, seg) in segs.iter().enumerate().rev() {
            if seg.lo > seg.hi {
                continue;
            }
            let rows: Vec<ColdSeries> = match seg.tier {
                None => self
                    .hot
                    .select(matchers, seg.lo, seg.hi)
                    .into_iter()
                    .map(|s| ColdSeries {
                        labels: s.labels,
                        samples: s.samples,
                        rollups: Vec::new(),
                    })
                    .collect(),
                Some(t) => {
                    let w = t.resolution();
                    let (lo, hi) = if w > 0 {
                        // The oldest segment also takes the window reaching into the range
                        // from before it: an instant selector's lookback may end in it.
                        let lo = if k + 1 == segs.len() {
                            seg.lo - w + 1
                        } else {
                            seg.lo
                        };
                        (lo, seg.hi - w)
                    } else {
                        (seg.lo, seg.hi)
                    };
                    match self.cold.read(t, matchers, lo, hi) {
                        Ok(m) => m.into_values().collect(),
                        Err(e) => {
                            self.fail(e);
                            Vec::new()
                        }
                    }
                }
            };
            for s in rows {
                let e = by.entry(s.labels.clone()).or_insert_with(|| Selected {
                    labels: s.labels,
                    rollups: Vec::new(),
                    samples: Vec::new(),
                });
                // Move, not copy, when a series comes from one segment (the common case).
                if e.rollups.is_empty() {
                    e.rollups = s.rollups;
                } else {
                    e.rollups.extend(s.rollups);
                }
                if e.samples.is_empty() {
                    e.samples = s.samples;
                } else {
                    e.samples.extend(s.samples);
                }
            }
        }
        by.into_values()
            .filter(|s| !s.rollups.is_empty() || !s.samples.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = HOUR_MS;
    const D: i64 = 24 * H;

    fn seg(tier: Option<Tier>, lo: i64, hi: i64) -> Segment {
        Segment { tier, lo, hi }
    }

    #[test]
    fn hot_only_when_the_range_is_recent() {
        let cov = |_| Some((0, 100 * D));
        assert_eq!(
            plan(5 * D, 6 * D, 4 * D, Tier::Raw, &cov),
            vec![seg(None, 5 * D, 6 * D)]
        );
    }

    #[test]
    fn an_empty_hot_index_leaves_everything_to_the_cold_tiers() {
        // `HotIndex::complete_from` without samples: data imported straight into the tiers.
        let cov = |_| Some((0, 100 * D));
        assert_eq!(
            plan(5 * D, 6 * D, i64::MAX, Tier::Raw, &cov),
            vec![seg(Some(Tier::Raw), 5 * D, 6 * D)]
        );
    }

    #[test]
    fn raw_answers_below_a_rollup_partition_that_reaches_past_its_data() {
        // Nothing hot; raw hours up to 10 h, the 1 h tier's day partition to 24 h: a query
        // to 12 h reads windows past 10 h from the 1 h tier and raw samples below.
        let cov = |t| match t {
            Tier::Raw => Some((0, 10 * H)),
            Tier::Minute => Some((0, 10 * H)),
            Tier::Hour => Some((0, D)),
        };
        assert_eq!(
            plan(2 * H, 12 * H, i64::MAX, Tier::Raw, &cov),
            vec![
                seg(Some(Tier::Hour), 10 * H, 12 * H),
                seg(Some(Tier::Raw), 2 * H, 10 * H)
            ]
        );
    }

    #[test]
    fn raw_below_hot_splits_boundary_samples_once() {
        // Hot from 10 d + 30 min: the cut is at 10 d + 1 h; raw covers days 3..10d+2h.
        let cov = |t| match t {
            Tier::Raw => Some((3 * D, 10 * D + 2 * H)),
            Tier::Minute => Some((0, 10 * D + 2 * H)),
            Tier::Hour => Some((0, 10 * D)),
        };
        let got = plan(9 * D, 11 * D, 10 * D + H / 2, Tier::Raw, &cov);
        assert_eq!(
            got,
            vec![
                seg(None, 10 * D + H, 11 * D),
                seg(Some(Tier::Raw), 9 * D, 10 * D + H - 1),
            ]
        );
    }

    #[test]
    fn preferred_rollups_fall_back_to_finer_then_coarser_tiers() {
        // 1h sealed through day 10; 1m through 10 d + 2 h, kept from day 5; raw from day 8.
        let cov = |t| match t {
            Tier::Raw => Some((8 * D, 10 * D + 2 * H)),
            Tier::Minute => Some((5 * D, 10 * D + 2 * H)),
            Tier::Hour => Some((0, 10 * D)),
        };
        let got = plan(D, 11 * D, 10 * D + H / 2, Tier::Hour, &cov);
        assert_eq!(
            got,
            vec![
                // The hot part starts after the sample on the boundary: the 1m window ending
                // at the cut holds it.
                seg(None, 10 * D + H + 1, 11 * D),
                seg(Some(Tier::Minute), 10 * D, 10 * D + H),
                seg(Some(Tier::Hour), D - 1, 10 * D),
            ]
        );
        // Once rollups answered, raw is not used below them.
        let got = plan(D, 11 * D, 10 * D + H / 2, Tier::Minute, &cov);
        assert_eq!(
            got,
            vec![
                seg(None, 10 * D + H + 1, 11 * D),
                seg(Some(Tier::Minute), 5 * D, 10 * D + H),
                seg(Some(Tier::Hour), D - 1, 5 * D),
            ]
        );
    }

    mod across_tiers {
        use std::sync::atomic::Ordering;
        use std::sync::Arc;

        use super::*;
        use crate::query::engine::Engine;
        use crate::query::promqltest::MemStorage;
        use crate::query::QueryValue;
        use crate::store::cold::layout::FileKind;
        use crate::store::cold::parquet_io::{sort_dedup, ColdRow};
        use crate::store::cold::ColdStore;
        use tidemark_dataflows::{Rollup, Sample};

        /// 2026-01-01T00:00:00Z.
        const BASE: i64 = 1_767_225_600_000;
        const END: i64 = BASE + 2 * D;
        const M: i64 = 60_000;

        /// Two days of a fleet: counters (with resets) and a gauge, on 10 s and 15 s grids
        /// (so samples sit exactly on window boundaries) and one off-grid phase, with a gap.
        fn data() -> Vec<(Labels, Vec<(i64, f64)>)> {
            let mut seed = 7u64;
            let mut rnd = move || {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (seed >> 33) as f64 / (1u64 << 31) as f64
            };
            let l = |name: &str, host: &str| {
                Labels::from_pairs(vec![("__name__", name), ("host", host)])
            };
            let mut out = Vec::new();
            for (host, period, phase) in [("a", 10_000, 0), ("b", 15_000, 0), ("c", 10_000, 3_700)]
            {
                let (mut c, mut g) = (Vec::new(), Vec::new());
                let mut v = 0.0;
                let mut ts = BASE + phase;
                while ts < END {
                    let gap = host == "b" && (BASE + 30 * H..BASE + 31 * H).contains(&ts);
                    if !gap {
                        v += (rnd() * 10.0).floor();
                        if rnd() < 0.0005 {
                            v = (rnd() * 5.0).floor(); // a counter reset
                        }
                        c.push((ts, v));
                        g.push((
                            ts,
                            50.0 + 40.0 * ((ts / 1000) as f64 / 3000.0).sin() + rnd(),
                        ));
                    }
                    ts += period;
                }
                out.push((l("req_total", host), c));
                out.push((l("cpu", host), g));
            }
            out
        }

        fn rollups(samples: &[(i64, f64)], id: u64) -> (Vec<Rollup>, Vec<Rollup>) {
            let mut minutes = Vec::new();
            let mut i = 0;
            while i < samples.len() {
                let s = (samples[i].0 - 1).div_euclid(M) * M;
                let j = i + samples[i..].partition_point(|p| p.0 <= s + M);
                minutes.push(Rollup::from_sorted(id, s, M, &samples[i..j]).unwrap());
                i = j;
            }
            let mut hours = Vec::new();
            let mut i = 0;
            while i < minutes.len() {
                let h = minutes[i].start.div_euclid(H) * H;
                let j = i + minutes[i..].partition_point(|r| r.start < h + H);
                hours.push(Rollup::combine(id, h, H, &minutes[i..j]).unwrap());
                i = j;
            }
            (minutes, hours)
        }

        fn write<R: ColdRow>(
            store: &ColdStore,
            tier: Tier,
            rows: Vec<R>,
            names: &HashMap<u64, Labels>,
        ) {
            let mut by: std::collections::BTreeMap<i64, Vec<R>> = Default::default();
            for r in rows {
                by.entry(tier.partition(r.time()).start)
                    .or_default()
                    .push(r);
            }
            for (start, mut rows) in by {
                let order = sort_dedup(&mut rows, &|id| names.get(&id).cloned()).unwrap();
                let path = tier.partition(start).file("t", 0, FileKind::Main);
                store
                    .write_file(&path, tier, &R::into_rows(rows), &order)
                    .unwrap();
            }
        }

        struct Setup {
            oracle: MemStorage,
            hot: MemStorage,
            hot_from: i64,
            reader: ColdReader,
        }

        /// Cold: raw for day 2 only (day 1 expired), 1m for both days, 1h for day 1 only (day
        /// 2 not sealed); all sealed up to END - 2 h. Hot: from END - 2 h 43 min.
        fn setup() -> Setup {
            let store = Arc::new(ColdStore::open("memory://").unwrap());
            let sealed = END - 2 * H;
            let (mut oracle, mut hot) = (MemStorage::default(), MemStorage::default());
            let hot_from = END - 2 * H - 43 * M;
            let (mut raw, mut minutes, mut hours) = (Vec::new(), Vec::new(), Vec::new());
            let mut names = HashMap::new();
            for (labels, samples) in data() {
                let id = labels.series_id();
                names.insert(id, labels.clone());
                let (m, h) = rollups(&samples, id);
                raw.extend(
                    samples
                        .iter()
                        .filter(|p| p.0 >= BASE + D && p.0 < sealed)
                        .map(|&(ts, value)| Sample {
                            series: id,
                            ts,
                            value,
                        }),
                );
                minutes.extend(m.into_iter().filter(|r| r.start < sealed));
                hours.extend(h.into_iter().filter(|r| r.start < BASE + D));
                hot.add(
                    labels.clone(),
                    samples.iter().copied().filter(|p| p.0 >= hot_from),
                );
                oracle.add(labels, samples);
            }
            write(&store, Tier::Raw, raw, &names);
            write(&store, Tier::Minute, minutes, &names);
            write(&store, Tier::Hour, hours, &names);
            Setup {
                oracle,
                hot,
                hot_from,
                reader: ColdReader::new(store),
            }
        }

        fn close(a: f64, b: f64) -> bool {
            (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0) || (a.is_nan() && b.is_nan())
        }

        fn check(s: &Setup, q: &str, start: i64, end: i64, step: i64) -> usize {
            let tiered = Tiered::new(&s.hot, s.hot_from, &s.reader);
            let got = Engine::new(&tiered, start, end, step)
                .unwrap()
                .query(q, true)
                .unwrap();
            assert_eq!(tiered.error(), None);
            let want = Engine::new(&s.oracle, start, end, step)
                .unwrap()
                .query(q, true)
                .unwrap();
            let (QueryValue::Matrix(mut got), QueryValue::Matrix(mut want)) = (got, want) else {
                panic!("{q}: not matrices");
            };
            got.sort_by(|a, b| a.labels.cmp(&b.labels));
            want.sort_by(|a, b| a.labels.cmp(&b.labels));
            let labels = |m: &[Series]| m.iter().map(|s| s.labels.clone()).collect::<Vec<_>>();
            assert_eq!(labels(&got), labels(&want), "{q}: series");
            let mut points = 0;
            for (g, w) in got.iter().zip(&want) {
                let ts = |s: &Series| {
                    s.samples
                        .iter()
                        .map(|p| (p.0 - BASE) / M)
                        .collect::<Vec<_>>()
                };
                assert_eq!(
                    ts(g),
                    ts(w),
                    "{q} {:?}: steps (minutes after BASE)",
                    g.labels
                );
                for (a, b) in g.samples.iter().zip(&w.samples) {
                    assert!(
                        a.0 == b.0 && close(a.1, b.1),
                        "{q} {:?}: {a:?} from tiers, {b:?} from raw",
                        g.labels
                    );
                    points += 1;
                }
            }
            points
        }

        #[test]
        fn rollup_tiers_answer_like_raw_data_across_every_boundary() {
            let s = setup();
            let stats = &s.reader.store.stats;
            let rows = |i: usize| stats.query_rows[i].load(Ordering::Relaxed);
            // Whole range at 1 h: 1h tier (day 1), 1m tier (day 2, 1h not sealed), hot.
            for q in [
                "increase(req_total[1h])",
                "rate(req_total[2h])",
                "sum by (host) (rate(req_total[1h]))",
                "avg_over_time(cpu[1h])",
                "min_over_time(cpu[3h])",
                "max_over_time(cpu[1h])",
                "sum_over_time(cpu[1h])",
                "count_over_time(cpu[1h])",
                "last_over_time(cpu[1h])",
                "cpu",
            ] {
                assert!(check(&s, q, BASE + 3 * H, END, H) >= 3 * 40, "{q}");
            }
            assert!(rows(2) > 0 && rows(1) > 0, "1h and 1m tiers were read");
            let before = rows(0);
            // 5 m steps over both days: 1m tier, then hot.
            for q in [
                "rate(req_total[5m])",
                "increase(req_total[10m])",
                "avg_over_time(cpu[5m])",
                "cpu",
                "delta(cpu[15m])",
            ] {
                assert!(check(&s, q, BASE + H, END, 5 * M) > 1000, "{q}");
            }
            assert_eq!(rows(0), before, "aligned 5 m steps read no raw rows");
            // 15 s steps on day 2: raw tier, then hot (raw/hot boundary).
            for q in [
                "rate(req_total[1m])",
                "irate(req_total[1m])",
                "cpu",
                "stddev_over_time(cpu[2m])",
            ] {
                assert!(check(&s, q, END - 4 * H, END, 15_000) > 1000, "{q}");
            }
            assert!(rows(0) > before, "the raw tier was read");
            // Unaligned steps on day 2 use raw data: exact as well.
            check(
                &s,
                "rate(req_total[5m])",
                BASE + D + 10 * M + 7_000,
                END,
                5 * M,
            );
            // An instant query at an hour boundary of day 1 reads the 1h tier.
            let t = BASE + 10 * H;
            let tiered = Tiered::new(&s.hot, s.hot_from, &s.reader);
            let got = Engine::new(&tiered, t, t, 1)
                .unwrap()
                .query("sum_over_time(cpu[2h])", false)
                .unwrap();
            let want = Engine::new(&s.oracle, t, t, 1)
                .unwrap()
                .query("sum_over_time(cpu[2h])", false)
                .unwrap();
            let (QueryValue::Vector(mut g), QueryValue::Vector(mut w)) = (got, want) else {
                panic!()
            };
            g.sort_by(|a, b| a.0.cmp(&b.0));
            w.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(g.len(), 3);
            for (a, b) in g.iter().zip(&w) {
                assert!(a.0 == b.0 && close(a.2, b.2), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn gaps_are_skipped() {
        let cov = |t| match t {
            Tier::Raw => Some((2 * D, 3 * D)),
            _ => None,
        };
        let got = plan(D, 10 * D, 9 * D, Tier::Raw, &cov);
        assert_eq!(
            got,
            vec![seg(None, 9 * D, 10 * D), seg(Some(Tier::Raw), 2 * D, 3 * D)]
        );
    }
}

//! Restoring the job's operator state from the hot index after a restart from a checkpoint.
//!
//! A checkpoint holds the hot index only; everything else the job keeps is a function of it:
//!
//! - a **1-minute window** not yet emitted at the restart holds the series with raw samples
//!   in it, which it reads back from the index when it closes: one sample per series and
//!   window names them (a window that ended before the restart was emitted before it, and a
//!   correction to it reads the index too);
//! - a **1-hour window** holds the 1-minute rollups the index has in its hour (those that can
//!   no longer change folded into one, as [`RollupAcc`](tidemark_dataflows::window::RollupAcc)
//!   folds them);
//! - **incremental rules** hold each matching series' samples within the longest range a rule
//!   reads;
//! - a **cold writer's open partition** is the set of series with rows in it: one row per
//!   series and partition tells the writer, which then writes the partition from the index.
//!
//! The seed source sends those records at the restart's first time, a bounded number of
//! series per activation (so the seed never needs more memory than a few batches), from the
//! index shards of its worker.

use std::sync::Arc;

use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, Stream};

use tidemark_dataflows::incremental::Matcher;
use tidemark_dataflows::types::STALE_NAN_BITS;
use tidemark_dataflows::{Rollup, Sample};

use super::{HOUR_MS, MINUTE_MS};
use crate::store::cold::Tier;
use crate::store::hot::{HotIndex, Resolution};

/// Series handled per activation.
const SERIES_PER_ACTIVATION: usize = 1024;
/// Open partitions looked at per series and tier, at most.
const MAX_OPEN_PARTITIONS: usize = 48;

/// Flags of a seeded sample: for the 1-minute windows, the rules, the cold raw tier.
pub const FOR_WINDOWS: u8 = 1;
pub const FOR_RULES: u8 = 2;
pub const FOR_COLD: u8 = 4;

/// One record of the seed.
#[derive(Clone, Copy, Debug)]
pub enum SeedRec {
    Sample(Sample, u8),
    /// A 1-minute rollup naming a series of an open hour to the 1-hour windows.
    Minute(Rollup),
    /// A row marking an open partition of the 1m or 1h cold tier.
    ColdMinute(Rollup),
    ColdHour(Rollup),
}

/// What to seed.
#[derive(Clone)]
pub struct SeedPlan {
    /// The restart's first time (its sources' watermark).
    pub at: u64,
    pub lateness: i64,
    /// The longest range the incremental rules read, and which series they read.
    pub rules: Option<(i64, Matcher)>,
    /// Whether cold writers run.
    pub cold: bool,
}

/// What the seed restores of the incremental rules in `plans`: the longest range a leaf
/// reads, and which series any leaf reads.
pub fn rules_of(plans: &Arc<tidemark_dataflows::incremental::Plans>) -> (i64, Matcher) {
    let span = plans.leaves.iter().map(|l| l.span()).max().unwrap_or(0);
    let plans = Arc::clone(plans);
    let matches: Matcher = Arc::new(move |pairs| plans.leaves.iter().any(|l| (l.matches)(pairs)));
    (span, matches)
}

fn minute_end(ts: i64) -> i64 {
    ts.saturating_sub(1).div_euclid(MINUTE_MS) * MINUTE_MS + MINUTE_MS
}

impl SeedPlan {
    /// The seed of one series, appended to `out`.
    pub fn series(
        &self,
        hot: &HotIndex,
        id: u64,
        pts: &mut Vec<(i64, f64)>,
        out: &mut Vec<SeedRec>,
    ) {
        let s = i64::try_from(self.at).unwrap_or(i64::MAX);
        let l = self.lateness;
        // A window is seeded unless it ended before `s` (emitted before the restart).
        let from_w = s.saturating_sub(MINUTE_MS);
        let from_r = self.rules.as_ref().and_then(|(span, matches)| {
            let labels = hot.catalog.labels(id)?;
            matches(&labels.clone().into_pairs())
                .then(|| s.saturating_sub(*span).saturating_sub(MINUTE_MS))
        });
        pts.clear();
        hot.samples(id, from_w.min(from_r.unwrap_or(i64::MAX)), i64::MAX, pts);
        // The windows read their samples back from the index: one sample names the series to
        // each (staleness markers are not windowed).
        let mut named = i64::MIN;
        for &(ts, value) in pts.iter() {
            let mut flags = 0;
            let end = minute_end(ts);
            if end >= s && end != named && value.to_bits() != STALE_NAN_BITS {
                flags |= FOR_WINDOWS;
                named = end;
            }
            if from_r.is_some_and(|f| ts > f) {
                flags |= FOR_RULES;
            }
            if flags != 0 {
                out.push(SeedRec::Sample(
                    Sample {
                        series: id,
                        ts,
                        value,
                    },
                    flags,
                ));
            }
        }
        // The hours not retired at `s - 1`: one of the series' minutes in each names it to the
        // 1-hour windows, which read the minutes back from the index when the hour closes.
        let newest = hot.newest().unwrap_or(s).max(s);
        let mut h = s
            .saturating_sub(l)
            .saturating_sub(HOUR_MS)
            .div_euclid(HOUR_MS)
            * HOUR_MS;
        for _ in 0..MAX_OPEN_PARTITIONS {
            if h > newest {
                break;
            }
            if h.saturating_add(HOUR_MS).saturating_add(l) >= s {
                if let Some(t) = hot.any_rollup_in(id, Resolution::OneMinute, h, h + HOUR_MS) {
                    out.push(SeedRec::Minute(Rollup {
                        start: t,
                        width: MINUTE_MS,
                        ..Rollup::point(id, t, 0.0)
                    }));
                }
            }
            h += HOUR_MS;
        }
        if self.cold {
            self.cold_rows(hot, id, s, out);
        }
    }

    /// One row per open partition of each cold tier the series has rows in.
    fn cold_rows(&self, hot: &HotIndex, id: u64, s: i64, out: &mut Vec<SeedRec>) {
        let newest = hot.newest().unwrap_or(s).max(s);
        for tier in [Tier::Raw, Tier::Minute, Tier::Hour] {
            let w = tier.partition_width();
            // Partitions a writer has not sealed at `s - 1`: `end + lateness >= s`.
            let mut p = tier.partition(s.saturating_sub(self.lateness).saturating_sub(w));
            for _ in 0..MAX_OPEN_PARTITIONS {
                if p.start > newest {
                    break;
                }
                if p.end().saturating_add(self.lateness) >= s {
                    let (a, b) = (p.start, p.end());
                    let row = |start: i64, width: i64| Rollup {
                        start,
                        width,
                        ..Rollup::point(id, start, 0.0)
                    };
                    match tier {
                        Tier::Raw => {
                            if let Some(ts) = hot.any_sample_in(id, a, b) {
                                let s = Sample {
                                    series: id,
                                    ts,
                                    value: 0.0,
                                };
                                out.push(SeedRec::Sample(s, FOR_COLD));
                            }
                        }
                        Tier::Minute => {
                            if let Some(t) = hot.any_rollup_in(id, Resolution::OneMinute, a, b) {
                                out.push(SeedRec::ColdMinute(row(t, MINUTE_MS)));
                            }
                        }
                        Tier::Hour => {
                            if let Some(t) = hot.any_rollup_in(id, Resolution::OneHour, a, b) {
                                out.push(SeedRec::ColdHour(row(t, HOUR_MS)));
                            }
                        }
                    }
                }
                p = tier.partition(p.end());
            }
        }
    }
}

/// The seed of index shards `s` with `s % peers == index` (`shards`: this worker's index and
/// the number of workers sharing `hot`), sent at `plan.at`; `done` is called once this worker
/// has sent its seed. `None`: nothing (`done` is not called).
pub fn seed_source<'s>(
    scope: Scope<'s, u64>,
    hot: Arc<HotIndex>,
    plan: Option<SeedPlan>,
    shards: (usize, usize),
    done: impl FnOnce() + 'static,
) -> Stream<'s, u64, Vec<SeedRec>> {
    let (index, peers) = shards;
    let mut done = Some(done);
    let activator_scope = scope;
    source(scope, "Seed", move |cap, info| {
        // Without a plan the operator still exists (every worker builds the same graph) and
        // sends nothing.
        let mut cap = plan.is_some().then_some(cap);
        let plan = plan.unwrap_or(SeedPlan {
            at: 0,
            lateness: 0,
            rules: None,
            cold: false,
        });
        if let Some(c) = cap.as_mut() {
            c.downgrade(&plan.at);
        }
        let activator = activator_scope.activator_for(info.address.clone());
        let mut shards = (0..HotIndex::SHARDS).filter(move |s| s % peers == index);
        let mut ids: Vec<u64> = Vec::new();
        let mut pts = Vec::new();
        move |output| {
            let Some(c) = cap.as_ref() else { return };
            let mut out = Vec::new();
            for _ in 0..SERIES_PER_ACTIVATION {
                let id = loop {
                    if let Some(id) = ids.pop() {
                        break Some(id);
                    }
                    match shards.next() {
                        Some(s) => ids = hot.shard_ids(s),
                        None => break None,
                    }
                };
                let Some(id) = id else {
                    if !out.is_empty() {
                        output.session(c).give_container(&mut out);
                    }
                    cap = None;
                    if let Some(d) = done.take() {
                        d();
                    }
                    return;
                };
                plan.series(&hot, id, &mut pts, &mut out);
            }
            if !out.is_empty() {
                output.session(c).give_container(&mut out);
            }
            activator.activate();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Labels;

    #[test]
    fn seeds_open_windows_and_marks_open_hours_and_partitions() {
        let hot = HotIndex::new(i64::MAX / 4);
        let labels = Labels::from_pairs([("__name__", "m")]);
        let id = labels.series_id();
        hot.catalog.register(id, labels);
        let base = 10 * HOUR_MS;
        let samples: Vec<Sample> = (1..=360)
            .map(|i| Sample {
                series: id,
                ts: base + i * 10_000,
                value: i as f64,
            })
            .collect();
        hot.append_samples(&samples);
        let minutes: Vec<Rollup> = (0..59)
            .map(|m| {
                let pts: Vec<(i64, f64)> = samples
                    .iter()
                    .filter(|s| minute_end(s.ts) == base + (m + 1) * MINUTE_MS)
                    .map(|s| (s.ts, s.value))
                    .collect();
                Rollup::from_sorted(id, base + m * MINUTE_MS, MINUTE_MS, &pts).unwrap()
            })
            .collect();
        hot.upsert(&minutes);
        // Restart at 59 min 30 s, 5 minutes of lateness.
        let at = (base + 59 * MINUTE_MS + 30_000) as u64;
        let plan = SeedPlan {
            at,
            lateness: 300_000,
            rules: None,
            cold: true,
        };
        let mut out = Vec::new();
        plan.series(&hot, id, &mut Vec::new(), &mut out);
        let win: Vec<i64> = out
            .iter()
            .filter_map(|r| match r {
                SeedRec::Sample(s, f) if f & FOR_WINDOWS != 0 => Some(s.ts),
                _ => None,
            })
            .collect();
        // Windows not emitted at 59 min 30 s: the one ending at 60 min, named by its first
        // sample (the windows before it were emitted; a correction reads them from the index).
        assert_eq!(win, vec![base + 59 * MINUTE_MS + 10_000]);
        let hours: Vec<Rollup> = out
            .iter()
            .filter_map(|r| match r {
                SeedRec::Minute(m) => Some(*m),
                _ => None,
            })
            .collect();
        // One marker for the open hour (the hour before ended more than the lateness ago).
        assert_eq!(hours.len(), 1);
        assert_eq!(hours[0].start.div_euclid(HOUR_MS) * HOUR_MS, base);
        let cold_raw = out
            .iter()
            .filter(|r| matches!(r, SeedRec::Sample(_, f) if f & FOR_COLD != 0))
            .count();
        assert_eq!(
            cold_raw, 2,
            "the hour of the samples and the next (the sample at 60 min)"
        );
        assert!(out.iter().any(|r| matches!(r, SeedRec::ColdMinute(_))));
    }
}

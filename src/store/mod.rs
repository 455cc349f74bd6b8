//! Storage: the hot tier in memory (Gorilla-style chunks, inverted label index, rollups) and
//! the cold tiers (Parquet on object storage), and the seam queries read through
//! ([`Storage`]: the hot index, the tiered store, the cluster's fan-out, the conformance
//! runner's in-memory store).
pub mod cold;
pub mod hot;
pub mod tiered;

use crate::model::Labels;
use hot::index::Matcher;
use tidemark_dataflows::Rollup;

/// Raw samples of one series, sorted by time; may include staleness markers.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
}

/// A series as a tiered store returns it: windows of a rollup tier for the older part, then
/// raw samples. Every rollup ends at or before the first sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Selected {
    pub labels: Labels,
    /// Sorted by window start, non-overlapping (1 h windows may precede 1 m ones).
    pub rollups: Vec<Rollup>,
    pub samples: Vec<(i64, f64)>,
}

/// Raw samples only.
impl From<Series> for Selected {
    fn from(s: Series) -> Selected {
        Selected {
            labels: s.labels,
            rollups: Vec::new(),
            samples: s.samples,
        }
    }
}

impl Selected {
    /// The series as points: each rollup window stands for its last sample.
    pub fn into_points(self) -> Series {
        if self.rollups.is_empty() {
            return Series {
                labels: self.labels,
                samples: self.samples,
            };
        }
        let mut samples: Vec<(i64, f64)> =
            self.rollups.iter().map(|r| (r.last_ts, r.last)).collect();
        samples.extend(self.samples);
        Series {
            labels: self.labels,
            samples,
        }
    }
}

/// How the engine will use a selection, so a tiered store can answer from the cheapest tier
/// that gives the same result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelectHints {
    /// The function applied to a range selection can be computed from rollups
    /// ([`crate::query::functions::from_rollups`]); false for instant selectors and other functions.
    pub summarizable: bool,
    /// An instant selector (the latest sample within `range`, the lookback).
    pub instant: bool,
    /// Evaluation times: the first one and the step between them (after `@` and `offset`;
    /// step 0 when they do not form a grid).
    pub first: i64,
    pub step: i64,
    /// The range of a range selection, or the lookback.
    pub range: i64,
    /// Only each series' newest sample in the selected range is read (an instant selector
    /// evaluated at one time): a store may return just that one and skip decoding the rest.
    pub newest_only: bool,
}

/// The samples an instant selector evaluated at `first`, `first + step`, ... up to `end` can
/// pick, appended to `out` in time order: for each evaluation time the newest sample at or
/// before it, when it is newer than `lookback` before that time (older, the selector has no
/// value there, and neither has it with any older sample). A walk over these finds, at every
/// evaluation time, the sample a walk over all of `samples` finds, so a store may return these
/// alone (a fleet's hour at 60 s steps: 61 of 366 samples a series). `samples` ascend by time.
///
/// ```
/// use tidemark::store::step_picks;
/// let s = [(0, 1.0), (10, 2.0), (20, 3.0), (30, 4.0), (95, 5.0)];
/// let mut out = Vec::new();
/// // Times 20, 40, 60, 80, 100 with a lookback of 25: 20 -> 20, 40 -> 30, 60 and 80 -> none
/// // (30 is too old), 100 -> 95.
/// step_picks(&s, 20, 20, 100, 25, &mut out);
/// assert_eq!(out, vec![(20, 3.0), (30, 4.0), (95, 5.0)]);
/// ```
pub fn step_picks(
    samples: &[(i64, f64)],
    first: i64,
    step: i64,
    end: i64,
    lookback: i64,
    out: &mut Vec<(i64, f64)>,
) {
    if step <= 0 {
        out.extend_from_slice(samples);
        return;
    }
    let mut i = 0;
    let mut t = first;
    while t <= end {
        while i < samples.len() && samples[i].0 <= t {
            i += 1;
        }
        if let Some(&p) = i.checked_sub(1).map(|k| &samples[k]) {
            if p.0 > t - lookback && out.last().is_none_or(|l| l.0 != p.0) {
                out.push(p);
            }
        }
        if i == samples.len() && samples.last().is_none_or(|l| l.0 <= t - lookback) {
            break;
        }
        t += step;
    }
}

impl SelectHints {
    /// Hints that ask for raw samples only.
    pub fn raw() -> SelectHints {
        SelectHints {
            summarizable: false,
            instant: false,
            first: 0,
            step: 0,
            range: 0,
            newest_only: false,
        }
    }

    /// True when windows of `width` answer this selection exactly: every evaluation time is a
    /// window end, and a range selection covers whole windows.
    pub fn aligned_to(&self, width: i64) -> bool {
        let grid = self.step > 0 && self.step % width == 0 && self.first.rem_euclid(width) == 0;
        if self.instant {
            grid
        } else {
            grid && self.summarizable && self.range > 0 && self.range % width == 0
        }
    }
}

/// Where the engine reads series from.
pub trait Storage: Send + Sync {
    /// Every series matching all `matchers`, with its samples in `[start, end]` (ms, inclusive).
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<Series>;

    /// As [`Storage::select`], but a store with rollup tiers may answer older parts with
    /// rollups where `hints` say they give the same result.
    fn select_hinted(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
        hints: &SelectHints,
    ) -> Vec<Selected> {
        let _ = hints;
        self.select(matchers, start, end)
            .into_iter()
            .map(Selected::from)
            .collect()
    }

    /// Why some answers since the last call may be incomplete (a remote shard that did not
    /// answer), and clears it. Rule evaluation skips a tick's results when this says so,
    /// rather than resolve alerts on a partial answer.
    fn take_failure(&self) -> Option<String> {
        None
    }

    /// About how many series the store holds (0: unknown), to size evaluations by.
    fn series_hint(&self) -> usize {
        0
    }

    /// The time of the oldest sample this store was given, when it knows (`None`: unknown,
    /// or nothing yet). A rule evaluator with no saved tick starts there rather than up to
    /// an hour of empty ticks before the data.
    fn oldest_sample(&self) -> Option<i64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::step_picks;

    /// The value an instant selector has at `t`: the newest sample at or before it within the
    /// lookback (the engine's rule), found by scanning every sample.
    fn at(samples: &[(i64, f64)], t: i64, lookback: i64) -> Option<(i64, f64)> {
        samples
            .iter()
            .rev()
            .find(|p| p.0 <= t)
            .filter(|p| p.0 > t - lookback)
            .copied()
    }

    #[test]
    fn the_picks_give_every_evaluation_time_the_value_all_samples_give() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..2_000 {
            let mut t = next(50) as i64;
            let samples: Vec<(i64, f64)> = (0..next(40))
                .map(|i| {
                    t += 1 + next(30) as i64;
                    (t, i as f64)
                })
                .collect();
            let (first, step) = (next(60) as i64, 1 + next(40) as i64);
            let end = first + step * next(30) as i64;
            let lookback = 1 + next(80) as i64;
            let mut picks = Vec::new();
            step_picks(&samples, first, step, end, lookback, &mut picks);
            assert!(picks.len() <= samples.len());
            let mut e = first;
            while e <= end {
                assert_eq!(
                    at(&picks, e, lookback),
                    at(&samples, e, lookback),
                    "t={e} lookback={lookback} samples={samples:?} picks={picks:?}"
                );
                e += step;
            }
        }
    }
}

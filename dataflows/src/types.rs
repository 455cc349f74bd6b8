//! Records that travel through the job.

use serde::{Deserialize, Serialize};

/// One sample: series id, event time in ms, value. 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub series: u64,
    pub ts: i64,
    pub value: f64,
}

/// Prometheus's staleness marker bits; such samples end a series and are not aggregated.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// An aggregate of one series over one tumbling window `[start, start + width)`.
/// Upsert key: `(series, start)`; a corrected rollup replaces the earlier one.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    pub series: u64,
    /// Window start, ms (aligned to the width).
    pub start: i64,
    /// Window width, ms (60 000 or 3 600 000).
    pub width: i64,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// Value of the earliest sample.
    pub first: f64,
    /// Value of the latest sample.
    pub last: f64,
    /// Counter increase over the window's samples, resets handled as Prometheus does (a drop
    /// means the counter restarted from zero).
    pub increase: f64,
}

impl Rollup {
    /// Rolls up samples of one series sorted by time (at most one per timestamp).
    /// Returns `None` for an empty slice.
    pub fn from_sorted(
        series: u64,
        start: i64,
        width: i64,
        samples: &[(i64, f64)],
    ) -> Option<Rollup> {
        let (&(_, first), rest) = samples.split_first()?;
        let mut r = Rollup {
            series,
            start,
            width,
            count: 1,
            sum: first,
            min: first,
            max: first,
            first,
            last: first,
            increase: 0.0,
        };
        for &(_, v) in rest {
            r.count += 1;
            r.sum += v;
            r.min = min_nan(r.min, v);
            r.max = max_nan(r.max, v);
            r.increase += counter_delta(r.last, v);
            r.last = v;
        }
        Some(r)
    }

    /// Combines finer rollups of one series, sorted by start, into one of `width`: the increase
    /// includes the steps between one window's last sample and the next one's first.
    pub fn combine(series: u64, start: i64, width: i64, parts: &[Rollup]) -> Option<Rollup> {
        let (first, rest) = parts.split_first()?;
        let mut r = Rollup {
            series,
            start,
            width,
            ..*first
        };
        for p in rest {
            r.count += p.count;
            r.sum += p.sum;
            r.min = min_nan(r.min, p.min);
            r.max = max_nan(r.max, p.max);
            r.increase += counter_delta(r.last, p.first) + p.increase;
            r.last = p.last;
        }
        Some(r)
    }
}

/// Increase from `a` to `b` of a counter: a drop is a reset to zero.
pub fn counter_delta(a: f64, b: f64) -> f64 {
    if b < a {
        b
    } else {
        b - a
    }
}

fn min_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b < a {
        b
    } else {
        a
    }
}

fn max_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b > a {
        b
    } else {
        a
    }
}

/// Lateness counts reported by a window operator: samples behind the watermark that still
/// corrected an open window, and samples too late for any window (kept raw, dropped from rollups).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateStats {
    pub accepted: u64,
    pub dropped: u64,
}

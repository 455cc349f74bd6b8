//! A validated write: the unit every stage passes on (ingest builds it, the log and Kafka carry
//! it, the job and the hot index apply it).

use super::{decode_canonical, Labels, SeriesId};

/// One sample of a batch, pointing into the batch's series table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchSample {
    pub series: u32,
    pub ts: i64,
    pub value: f64,
}

/// A validated write: distinct series, and samples referring to them. Each series' labels are
/// kept as their canonical encoding in one shared arena, so building and logging a batch does
/// not allocate per series.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteBatch {
    /// `(series id, range of its canonical encoding in arena)`.
    pub series: Vec<(SeriesId, std::ops::Range<u32>)>,
    pub arena: Vec<u8>,
    pub samples: Vec<BatchSample>,
}

impl WriteBatch {
    /// Canonical label bytes of series `i`.
    pub fn canonical(&self, i: usize) -> &[u8] {
        let r = &self.series[i].1;
        &self.arena[r.start as usize..r.end as usize]
    }

    /// Labels of series `i` (allocates).
    pub fn labels(&self, i: usize) -> Labels {
        decode_canonical(self.canonical(i))
    }

    /// Smallest and largest sample timestamps, if any.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        let mut it = self.samples.iter();
        let first = it.next()?;
        Some(it.fold((first.ts, first.ts), |(lo, hi), s| {
            (lo.min(s.ts), hi.max(s.ts))
        }))
    }
}

/// Largest accepted |timestamp| in ms (about year 33,658): keeps window and chunk arithmetic far
/// from overflow.
pub const MAX_ABS_TS: i64 = 1_000_000_000_000_000;

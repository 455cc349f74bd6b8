//! Writing imported hours straight to the cold tiers: the raw partition, the 1-minute rollups
//! of the hour and, once its day is complete, the day's 1-hour rollups (DESIGN.md section 6),
//! computed with the same [`Rollup`] arithmetic as the job's windows (stale markers are kept in
//! the raw tier and left out of rollups, as the job does).
//!
//! Files are named `part-import-w0-c<stamp>.parquet`: a correction file in the layout's terms,
//! so that where a partition also has a file of `tidemark up` (the hour where imported data
//! meets pushed data, whose windows the job saw only in part) the import's rows win, and
//! `<stamp>` is fixed for an import (kept in its state file), so that a resumed import writes
//! the same names again instead of adding copies.

use std::collections::HashMap;

use tidemark_dataflows::{Rollup, Sample};

use super::source::Hour;
use crate::model::{is_stale_nan, Labels};
use crate::store::cold::layout::{FileKind, Tier, DAY_MS, HOUR_MS};
use crate::store::cold::parquet_io::{sort_dedup, ColdRow};
use crate::store::cold::{ColdError, ColdStore};

/// The job name in imported files' names.
pub const IMPORT_JOB: &str = "import";

/// Counters of what was written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ColdWritten {
    pub files: u64,
    pub bytes: u64,
    pub raw_rows: u64,
    pub minute_rows: u64,
    pub hour_rows: u64,
}

/// Writes imported hours into the cold tiers.
pub struct ColdImport<'a> {
    store: &'a ColdStore,
    kind: FileKind,
    /// Per tier (raw, 1m, 1h): partitions ending at or before this are past retention.
    expired_before: [i64; 3],
    /// The day whose 1-hour rollups are being gathered, and those rollups.
    day: Option<i64>,
    hours: Vec<Rollup>,
    labels: HashMap<u64, Labels>,
    pub written: ColdWritten,
}

impl<'a> ColdImport<'a> {
    /// `stamp` names the files; `expired_before[tier]` skips partitions past retention.
    pub fn new(store: &'a ColdStore, stamp: i64, expired_before: [i64; 3]) -> Self {
        ColdImport {
            store,
            kind: FileKind::Correction(stamp),
            expired_before,
            day: None,
            hours: Vec::new(),
            labels: HashMap::new(),
            written: ColdWritten::default(),
        }
    }

    fn kept(&self, tier: Tier, start: i64) -> bool {
        let i = match tier {
            Tier::Raw => 0,
            Tier::Minute => 1,
            Tier::Hour => 2,
        };
        tier.partition(start).end() > self.expired_before[i]
    }

    /// Adds hour `h`: writes its raw and 1-minute partitions when `write` (not when a resumed
    /// import only rebuilds its day's 1-hour rollups from hours an earlier run wrote), and
    /// keeps its 1-hour rollups for the day's file.
    pub fn add_hour(&mut self, h: &Hour, write: bool) -> Result<(), ColdError> {
        let day = h.start.div_euclid(DAY_MS) * DAY_MS;
        if self.day.is_some_and(|d| d != day) {
            self.finish_day()?;
        }
        self.day = Some(day);
        let ids: Vec<u64> = h.series.iter().map(Labels::series_id).collect();
        // By series, then time.
        let mut order: Vec<u32> = (0..h.samples.len() as u32).collect();
        order.sort_by_key(|&i| {
            let s = h.samples[i as usize];
            (s.0, s.1)
        });
        let mut raw: Vec<Sample> = Vec::new();
        let mut minutes: Vec<Rollup> = Vec::new();
        let mut run: Vec<(i64, f64)> = Vec::new();
        let mut i = 0;
        while i < order.len() {
            let series = h.samples[order[i] as usize].0;
            let id = ids[series as usize];
            let first_minute = minutes.len();
            let mut window = i64::MIN;
            run.clear();
            while i < order.len() && h.samples[order[i] as usize].0 == series {
                let (_, ts, v) = h.samples[order[i] as usize];
                i += 1;
                if ts < h.end() {
                    raw.push(Sample {
                        series: id,
                        ts,
                        value: v,
                    });
                }
                if ts <= h.start || is_stale_nan(v) {
                    continue;
                }
                let w = (ts - 1).div_euclid(60_000) * 60_000;
                if w != window {
                    minutes.extend(Rollup::from_sorted(id, window, 60_000, &run));
                    run.clear();
                    window = w;
                }
                run.push((ts, v));
            }
            minutes.extend(Rollup::from_sorted(id, window, 60_000, &run));
            if let Some(r) = Rollup::combine(id, h.start, HOUR_MS, &minutes[first_minute..]) {
                self.hours.push(r);
                self.labels
                    .entry(id)
                    .or_insert_with(|| h.series[series as usize].clone());
            }
        }
        if write {
            let lookup: HashMap<u64, &Labels> = ids.iter().copied().zip(&h.series).collect();
            if self.kept(Tier::Raw, h.start) {
                let n = raw.len() as u64;
                self.write(Tier::Raw, h.start, raw, &lookup)?;
                self.written.raw_rows += n;
            }
            if self.kept(Tier::Minute, h.start) {
                let n = minutes.len() as u64;
                self.write(Tier::Minute, h.start, minutes, &lookup)?;
                self.written.minute_rows += n;
            }
        }
        Ok(())
    }

    /// Writes the gathered day's 1-hour rollups (if any, and within retention).
    pub fn finish_day(&mut self) -> Result<(), ColdError> {
        let Some(day) = self.day.take() else {
            return Ok(());
        };
        let rows = std::mem::take(&mut self.hours);
        let labels = std::mem::take(&mut self.labels);
        if self.kept(Tier::Hour, day) {
            let n = rows.len() as u64;
            let lookup: HashMap<u64, &Labels> = labels.iter().map(|(k, v)| (*k, v)).collect();
            self.write(Tier::Hour, day, rows, &lookup)?;
            self.written.hour_rows += n;
        }
        Ok(())
    }

    fn write<R: ColdRow>(
        &mut self,
        tier: Tier,
        start: i64,
        mut rows: Vec<R>,
        labels: &HashMap<u64, &Labels>,
    ) -> Result<(), ColdError> {
        if rows.is_empty() {
            return Ok(());
        }
        let path = tier.partition(start).file(IMPORT_JOB, 0, self.kind);
        let order = sort_dedup(&mut rows, &|id| labels.get(&id).map(|l| (*l).clone())).map_err(
            |source| ColdError::Parquet {
                path: path.clone(),
                source,
            },
        )?;
        let size = self
            .store
            .write_file(&path, tier, &R::into_rows(rows), &order)?;
        self.written.files += 1;
        self.written.bytes += size;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::cold::maintain;

    fn hour(start: i64, samples: &[(u32, i64, f64)]) -> Hour {
        Hour {
            start,
            series: vec![
                Labels::from_pairs([("__name__", "m"), ("a", "1")]),
                Labels::from_pairs([("__name__", "m"), ("a", "2")]),
            ],
            samples: samples.to_vec(),
        }
    }

    #[test]
    fn writes_raw_minute_and_day_files_with_the_edges_where_they_belong() {
        let store = ColdStore::open("memory://").unwrap();
        let h0 = 1_764_547_200_000i64; // 2025-12-01T00:00:00Z
        let mut c = ColdImport::new(&store, 42, [i64::MIN; 3]);
        // A sample exactly at h0 is the raw hour's first and the previous window's last; one
        // exactly at h0 + 1 h is the next raw hour's and this hour's last window's.
        let h = hour(
            h0,
            &[
                (0, h0, 1.0),
                (0, h0 + 30_000, 2.0),
                (1, h0 + 30_000, 5.0),
                (0, h0 + 60_000, 3.0),
                (0, h0 + 90_000, f64::from_bits(crate::model::STALE_NAN_BITS)),
                (0, h0 + HOUR_MS, 4.0),
            ],
        );
        c.add_hour(&h, true).unwrap();
        c.finish_day().unwrap();
        assert_eq!(c.written.raw_rows, 5, "the end edge is the next hour's");
        // Windows (h0, h0+1m] for both series, and (h0+59m, h0+1h] for series 0.
        assert_eq!(c.written.minute_rows, 3);
        assert_eq!(c.written.hour_rows, 2);
        let listing = maintain::list(&store).unwrap();
        let names: Vec<String> = listing
            .values()
            .flatten()
            .map(|(_, m)| m.location.to_string())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(
            names
                .iter()
                .all(|n| n.ends_with("part-import-w0-c42.parquet")),
            "{names:?}"
        );
    }

    #[test]
    fn rollups_match_a_hand_computed_hour() {
        let store = ColdStore::open("memory://").unwrap();
        let h0 = 1_764_547_200_000i64;
        let mut c = ColdImport::new(&store, 1, [i64::MIN; 3]);
        let samples: Vec<(u32, i64, f64)> =
            (1..=360).map(|k| (0, h0 + k * 10_000, k as f64)).collect();
        c.add_hour(&hour(h0, &samples), false).unwrap();
        assert_eq!(c.hours.len(), 1);
        let r = c.hours[0];
        assert_eq!(
            (r.start, r.count, r.sum),
            (h0, 360, (1..=360).sum::<i64>() as f64)
        );
        assert_eq!((r.first, r.last, r.increase), (1.0, 360.0, 359.0));
        assert_eq!(
            c.written,
            ColdWritten::default(),
            "nothing written when asked not to"
        );
    }

    #[test]
    fn skips_partitions_past_retention() {
        let store = ColdStore::open("memory://").unwrap();
        let h0 = 1_764_547_200_000i64;
        // Raw expired up to h0 + 1 h (so this hour), 1m and 1h kept.
        let mut c = ColdImport::new(&store, 1, [h0 + HOUR_MS, i64::MIN, i64::MIN]);
        c.add_hour(&hour(h0, &[(0, h0 + 10_000, 1.0)]), true)
            .unwrap();
        c.finish_day().unwrap();
        assert_eq!(c.written.raw_rows, 0);
        assert_eq!((c.written.minute_rows, c.written.hour_rows), (1, 1));
    }
}

//! Reading the cold tiers for queries: which partitions hold a time range, their files read
//! with pruning (row groups by metric, series and time; only the columns a tier needs), and
//! rows deduplicated as compaction would (for equal series and time, the later file wins), so
//! a query sees the same rows before and after compaction.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidemark_dataflows::Rollup;

use super::layout::Tier;
use super::maintain::{self, Listing};
use super::parquet_io::{Decoded, RowFilter};
use super::store::{ColdError, ColdStore};
use crate::model::{Labels, METRIC_NAME};
use crate::store::hot::index::{MatchOp, Matcher};

/// How long a listing of the tiers is reused before the store is listed again.
const LISTING_TTL: Duration = Duration::from_secs(2);

/// Rows of one series read from a tier, sorted by time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ColdSeries {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
    pub rollups: Vec<Rollup>,
}

/// Query-side access to the cold tiers, with a short-lived listing cache.
pub struct ColdReader {
    pub store: Arc<ColdStore>,
    listing: Mutex<Option<(Instant, Arc<Listing>)>>,
}

impl ColdReader {
    pub fn new(store: Arc<ColdStore>) -> ColdReader {
        ColdReader {
            store,
            listing: Mutex::new(None),
        }
    }

    /// The tiers' partitions and files (listed at most every [`LISTING_TTL`]).
    pub fn listing(&self) -> Result<Arc<Listing>, ColdError> {
        let mut g = self.listing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, l)) = &*g {
            if at.elapsed() < LISTING_TTL {
                return Ok(Arc::clone(l));
            }
        }
        let l = Arc::new(maintain::list(&self.store)?);
        *g = Some((Instant::now(), Arc::clone(&l)));
        Ok(l)
    }

    /// Forgets the cached listing (files may have been compacted or expired since).
    pub fn invalidate(&self) {
        *self.listing.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The span `[first partition start, last partition end)` a tier holds, if any.
    pub fn coverage(&self, tier: Tier) -> Result<Option<(i64, i64)>, ColdError> {
        let l = self.listing()?;
        let mut it = l.keys().filter(|p| p.tier == tier);
        let Some(first) = it.next() else {
            return Ok(None);
        };
        let last = it.next_back().unwrap_or(first);
        Ok(Some((first.start, last.end())))
    }

    /// The rows of `tier` whose time (sample time, or window start) lies in `[start, end]`, of
    /// the series matching every matcher, by series id. A file that vanished since the listing
    /// (compaction or retention running meanwhile) makes it list again and read again, a few
    /// times.
    pub fn read(
        &self,
        tier: Tier,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<HashMap<u64, ColdSeries>, ColdError> {
        let mut attempt = 0;
        loop {
            match self.read_once(tier, matchers, start, end) {
                Ok(v) => return Ok(v),
                Err(e) if attempt >= 4 => return Err(e),
                Err(_) => {
                    attempt += 1;
                    self.invalidate();
                }
            }
        }
    }

    fn read_once(
        &self,
        tier: Tier,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<HashMap<u64, ColdSeries>, ColdError> {
        let listing = self.listing()?;
        let metric = matchers.iter().find_map(|m| match &m.op {
            MatchOp::Eq(v) if m.name == METRIC_NAME => Some(v.as_str()),
            _ => None,
        });
        let filter = RowFilter {
            keep: &|_| true,
            series_ids: None,
            start,
            end,
            with_labels: true,
            matchers: Some(matchers),
            metric,
        };
        let mut d = Decoded::default();
        // Per file read: the rows it added, and its rank (later files win).
        let mut ranks: Vec<(usize, u32)> = Vec::new();
        let mut several = false;
        let mut rank = 0u32;
        for (p, files) in listing.range(..) {
            if p.tier != tier || p.start > end || p.end() <= start {
                continue;
            }
            several |= files.len() > 1;
            for (_, meta) in files {
                self.store.read_file(meta, tier, &filter, &mut d)?;
                ranks.push((d.samples.len().max(d.rollups.len()), rank));
                rank += 1;
            }
        }
        let i = Tier::ALL.iter().position(|&t| t == tier).unwrap_or(0);
        self.store.stats.query_rows[i].fetch_add(
            d.samples.len().max(d.rollups.len()) as u64,
            Ordering::Relaxed,
        );
        let rank_of = |row: usize| -> u32 {
            let k = ranks.partition_point(|&(end, _)| end <= row);
            ranks.get(k).map_or(0, |r| r.1)
        };
        let mut out: HashMap<u64, ColdSeries> = HashMap::new();
        let labels = &d.labels;
        fn entry<'a>(
            out: &'a mut HashMap<u64, ColdSeries>,
            labels: &HashMap<u64, Labels>,
            id: u64,
        ) -> &'a mut ColdSeries {
            out.entry(id).or_insert_with(|| ColdSeries {
                labels: labels.get(&id).cloned().unwrap_or_else(Labels::empty),
                ..ColdSeries::default()
            })
        }
        match tier {
            Tier::Raw => {
                let mut rows: Vec<(u64, i64, u32, f64)> = d
                    .samples
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        (
                            s.series,
                            s.ts,
                            if several { rank_of(i) } else { 0 },
                            s.value,
                        )
                    })
                    .collect();
                rows.sort_unstable_by_key(|r| (r.0, r.1, r.2));
                for (i, r) in rows.iter().enumerate() {
                    // For equal series and time only the last (highest rank) row stays.
                    if rows.get(i + 1).is_some_and(|n| n.0 == r.0 && n.1 == r.1) {
                        continue;
                    }
                    entry(&mut out, labels, r.0).samples.push((r.1, r.3));
                }
            }
            Tier::Minute | Tier::Hour => {
                let mut rows: Vec<(u32, Rollup)> = d
                    .rollups
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (if several { rank_of(i) } else { 0 }, *r))
                    .collect();
                rows.sort_unstable_by_key(|(k, r)| (r.series, r.start, *k));
                for (i, (_, r)) in rows.iter().enumerate() {
                    if rows
                        .get(i + 1)
                        .is_some_and(|(_, n)| n.series == r.series && n.start == r.start)
                    {
                        continue;
                    }
                    entry(&mut out, labels, r.series).rollups.push(*r);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::cold::layout::{FileKind, HOUR_MS};
    use crate::store::cold::parquet_io::{sort_dedup, ColdRow};
    use tidemark_dataflows::Sample;

    const BASE: i64 = 1_700_000_000_000 / HOUR_MS * HOUR_MS;

    fn labels(i: u64) -> Labels {
        Labels::from_pairs(vec![
            (
                "__name__",
                if i.is_multiple_of(2) { "cpu" } else { "mem" }.to_string(),
            ),
            ("host", format!("h{i}")),
        ])
    }

    fn write(store: &ColdStore, kind: FileKind, samples: &[(u64, i64, f64)]) {
        let mut rows: Vec<Sample> = samples
            .iter()
            .map(|&(s, ts, value)| Sample {
                series: labels(s).series_id(),
                ts,
                value,
            })
            .collect();
        let names: HashMap<u64, Labels> = (0..10)
            .map(|i| (labels(i).series_id(), labels(i)))
            .collect();
        let order = sort_dedup(&mut rows, &|id| names.get(&id).cloned().map(Into::into)).unwrap();
        let p = Tier::Raw.partition(samples[0].1);
        store
            .write_file(
                &p.file("t", 0, kind),
                Tier::Raw,
                &Sample::into_rows(rows),
                &order,
            )
            .unwrap();
    }

    #[test]
    fn reads_matching_series_and_later_files_win() {
        let store = Arc::new(ColdStore::open("memory://").unwrap());
        write(
            &store,
            FileKind::Main,
            &[
                (0, BASE, 1.0),
                (0, BASE + 10_000, 2.0),
                (1, BASE, 5.0),
                (2, BASE, 7.0),
            ],
        );
        // A late correction of series 0 at BASE + 10 s, and a new sample.
        write(
            &store,
            FileKind::Correction(BASE + 2 * HOUR_MS),
            &[(0, BASE + 10_000, 20.0), (0, BASE + 20_000, 3.0)],
        );
        write(&store, FileKind::Main, &[(0, BASE + HOUR_MS, 4.0)]);
        let r = ColdReader::new(Arc::clone(&store));
        let cpu = vec![Matcher::eq(METRIC_NAME, "cpu")];
        let got = r.read(Tier::Raw, &cpu, BASE, BASE + 2 * HOUR_MS).unwrap();
        assert_eq!(got.len(), 2, "cpu series h0 and h2, not mem h1");
        let h0 = &got[&labels(0).series_id()];
        assert_eq!(h0.labels, labels(0));
        assert_eq!(
            h0.samples,
            vec![
                (BASE, 1.0),
                (BASE + 10_000, 20.0),
                (BASE + 20_000, 3.0),
                (BASE + HOUR_MS, 4.0)
            ]
        );
        // Time bounds are inclusive and prune whole partitions.
        let got = r
            .read(Tier::Raw, &cpu, BASE + 10_000, BASE + 10_000)
            .unwrap();
        assert_eq!(
            got[&labels(0).series_id()].samples,
            vec![(BASE + 10_000, 20.0)]
        );
        assert_eq!(
            r.coverage(Tier::Raw).unwrap(),
            Some((BASE, BASE + 2 * HOUR_MS))
        );
        assert_eq!(r.coverage(Tier::Minute).unwrap(), None);
        // A regex matcher on a label.
        let h = vec![Matcher::regex("host", "h[12]", false).unwrap()];
        let got = r.read(Tier::Raw, &h, BASE, BASE + HOUR_MS).unwrap();
        let mut hosts: Vec<&str> = got
            .values()
            .map(|s| s.labels.get("host").unwrap())
            .collect();
        hosts.sort();
        assert_eq!(hosts, vec!["h1", "h2"]);
    }
}

//! Reading the cold tiers for queries: which partitions hold a time range, their files read
//! with pruning (row groups by metric, series and time; only the columns a tier needs), and
//! rows deduplicated as compaction would (for equal series and time, the later file wins), so
//! a query sees the same rows before and after compaction.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use object_store::ObjectMeta;
use tidemark_dataflows::{Rollup, Sample};

use super::layout::Tier;
use super::layout::{FileKind, Partition};
use super::maintain::{self, Listing};
use super::parquet_io::{ColdRow, Decoded, RowFilter};
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

    /// The tiers' partitions and files (listed at most every `LISTING_TTL`).
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
        // Partitions in time order, read on up to one thread per core (decoding is the cost).
        let parts: Vec<(&Partition, &[(FileKind, ObjectMeta)])> = listing
            .iter()
            .filter(|(p, _)| p.tier == tier && p.start <= end && p.end() > start)
            .map(|(p, files)| (p, files.as_slice()))
            .collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(parts.len())
            .max(1);
        type Read = (Vec<(usize, Part)>, HashMap<u64, Labels>);
        let read = |k: usize| -> Result<Read, ColdError> {
            let mut d = Decoded::default();
            let mut got = Vec::new();
            for (i, (p, files)) in parts.iter().enumerate().skip(k).step_by(threads) {
                let mut bounds = Vec::with_capacity(files.len());
                let mut files: Vec<(FileKind, ObjectMeta)> = files.to_vec();
                let mut attempt = 0;
                // Compaction or retention may replace or delete a partition's files while it
                // is read: list that partition again and read it again.
                while let Err(e) = files.iter().try_for_each(|(_, meta)| {
                    self.store.read_file(meta, tier, &filter, &mut d)?;
                    bounds.push(d.samples.len().max(d.rollups.len()));
                    Ok::<(), ColdError>(())
                }) {
                    attempt += 1;
                    if attempt > 5 {
                        return Err(e);
                    }
                    d.samples.clear();
                    d.rollups.clear();
                    bounds.clear();
                    files = maintain::list_partition(&self.store, p)?;
                }
                let part = Part {
                    samples: dedupe_files(std::mem::take(&mut d.samples), &bounds),
                    rollups: dedupe_files(std::mem::take(&mut d.rollups), &bounds),
                };
                got.push((i, part));
            }
            Ok((got, d.labels))
        };
        let mut results: Vec<Result<Read, ColdError>> = Vec::new();
        let mut labels: HashMap<u64, Labels> = HashMap::new();
        std::thread::scope(|s| {
            let handles: Vec<_> = (1..threads).map(|k| s.spawn(move || read(k))).collect();
            results.push(read(0));
            for h in handles {
                results.push(h.join().unwrap_or_else(|_| {
                    Err(ColdError::Other(
                        "a cold-tier reader thread panicked".into(),
                    ))
                }));
            }
        });
        let mut parts_read: Vec<(usize, Part)> = Vec::new();
        for r in results {
            let (parts, l) = r?;
            parts_read.extend(parts);
            labels.extend(l);
        }
        parts_read.sort_by_key(|(i, _)| *i);
        let mut out: HashMap<u64, ColdSeries> = HashMap::new();
        let mut rows = 0u64;
        for (_, part) in parts_read {
            rows += (part.samples.len() + part.rollups.len()) as u64;
            append(
                &mut out,
                &labels,
                part.samples,
                |s| s.series,
                |c, s| c.samples.push((s.ts, s.value)),
            );
            append(
                &mut out,
                &labels,
                part.rollups,
                |r| r.series,
                |c, r| c.rollups.push(r),
            );
        }
        let i = Tier::ALL.iter().position(|&t| t == tier).unwrap_or(0);
        self.store.stats.query_rows[i].fetch_add(rows, Ordering::Relaxed);
        Ok(out)
    }
}

/// One partition's rows, grouped by series and sorted by time, one row per series and time.
#[derive(Default)]
struct Part {
    samples: Vec<Sample>,
    rollups: Vec<Rollup>,
}

/// Rows of a partition's files read one after the other (`bounds`: where each file's rows
/// end). One file is already in (series, time) order; with several, for equal series and time
/// the later file's row wins, as in compaction.
fn dedupe_files<R: ColdRow>(rows: Vec<R>, bounds: &[usize]) -> Vec<R> {
    if bounds.len() < 2 || rows.is_empty() {
        return rows;
    }
    let mut keyed: Vec<(u64, i64, usize, R)> = rows
        .into_iter()
        .enumerate()
        .map(|(i, r)| (r.series(), r.time(), bounds.partition_point(|&b| b <= i), r))
        .collect();
    keyed.sort_unstable_by_key(|k| (k.0, k.1, k.2));
    let mut out: Vec<R> = Vec::with_capacity(keyed.len());
    let mut last: Option<(u64, i64)> = None;
    for (id, t, _, r) in keyed {
        if last == Some((id, t)) {
            *out.last_mut().expect("a previous row") = r;
        } else {
            out.push(r);
            last = Some((id, t));
        }
    }
    out
}

/// Appends rows (grouped by series) to their series, one lookup per run.
fn append<R>(
    out: &mut HashMap<u64, ColdSeries>,
    labels: &HashMap<u64, Labels>,
    rows: Vec<R>,
    series: impl Fn(&R) -> u64,
    mut push: impl FnMut(&mut ColdSeries, R),
) {
    let mut it = rows.into_iter().peekable();
    while let Some(r) = it.next() {
        let id = series(&r);
        let c = out.entry(id).or_insert_with(|| ColdSeries {
            labels: labels.get(&id).cloned().unwrap_or_else(Labels::empty),
            ..ColdSeries::default()
        });
        push(c, r);
        while let Some(n) = it.next_if(|n| series(n) == id) {
            push(c, n);
        }
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
        let order = sort_dedup(&mut rows, &|id| names.get(&id).cloned()).unwrap();
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

//! Keeping the cold tiers tidy: listing partitions (`tidemark tiers`), retention (whole
//! partitions past a tier's retention are deleted) and compaction (a sealed partition's files
//! merged into one, later writes winning per series and time).

use std::collections::{BTreeMap, HashMap};

use object_store::ObjectMeta;

use super::layout::{FileKind, Partition, Tier};
use super::parquet_io::{sort_dedup, ColdRow, Decoded, RowFilter};
use super::store::{ColdError, ColdStore, MergeError};
use tidemark_dataflows::{Rollup, Sample};

/// A partition's files.
pub type Listing = BTreeMap<Partition, Vec<(FileKind, ObjectMeta)>>;

/// Every partition of every tier, with its files (objects that are not tier files are left
/// out, such as checkpoints under `_tidemark/`).
pub fn list(store: &ColdStore) -> Result<Listing, ColdError> {
    let mut out: Listing = BTreeMap::new();
    for tier in Tier::ALL {
        list_under(store, &format!("tier={}", tier.name()), &mut out)?;
    }
    Ok(out)
}

/// Records what `listing` holds per tier (partitions, files, bytes) in the store's stats, for
/// `/metrics` and the status page.
pub fn record(store: &ColdStore, listing: &Listing) {
    use std::sync::atomic::Ordering;
    let mut sums = [[0u64; 3]; 3];
    for (p, files) in listing {
        let Some(t) = Tier::ALL.iter().position(|t| *t == p.tier) else {
            continue;
        };
        sums[0][t] += 1;
        sums[1][t] += files.len() as u64;
        sums[2][t] += files.iter().map(|(_, m)| m.size).sum::<u64>();
    }
    for (row, sum) in store.stats.stored.iter().zip(sums) {
        for (c, v) in row.iter().zip(sum) {
            c.store(v, Ordering::Relaxed);
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64);
    store
        .stats
        .listed_at_ms
        .store(now.max(1), Ordering::Relaxed);
}

/// The files of one partition, in precedence order (empty when it is gone).
pub fn list_partition(
    store: &ColdStore,
    p: &Partition,
) -> Result<Vec<(FileKind, ObjectMeta)>, ColdError> {
    let mut out: Listing = BTreeMap::new();
    list_under(store, &p.dir(), &mut out)?;
    Ok(out.remove(p).unwrap_or_default())
}

/// Adds the tier files under `prefix` to `out`, each partition's in precedence order.
fn list_under(store: &ColdStore, prefix: &str, out: &mut Listing) -> Result<(), ColdError> {
    {
        for meta in store.list(prefix)? {
            let path = meta.location.to_string();
            let Some(p) = Partition::parse(&path) else {
                continue;
            };
            let name = path.rsplit('/').next().unwrap_or_default();
            let Some((_, _, kind)) = FileKind::parse_file_name(name) else {
                continue;
            };
            out.entry(p).or_default().push((kind, meta));
        }
    }
    for files in out.values_mut() {
        files.sort_by(|a, b| {
            a.0.precedence()
                .cmp(&b.0.precedence())
                .then(a.1.location.cmp(&b.1.location))
        });
    }
    Ok(())
}

/// Deletes the partitions that ended more than their tier's retention before `newest`
/// (the newest event time); returns the partitions deleted.
pub fn apply_retention(
    store: &ColdStore,
    listing: &Listing,
    newest: i64,
    retention: &dyn Fn(Tier) -> i64,
) -> Result<Vec<Partition>, ColdError> {
    let mut gone = Vec::new();
    for (p, files) in listing {
        if p.end() <= newest.saturating_sub(retention(p.tier)) {
            for (_, meta) in files {
                store.delete(meta.location.as_ref())?;
            }
            gone.push(*p);
        }
    }
    Ok(gone)
}

/// Merges the rows of `files` (in precedence order): for equal series and time the row of
/// the later file wins.
fn merge<R: ColdRow>(
    store: &ColdStore,
    tier: Tier,
    files: &[(FileKind, ObjectMeta)],
    pick: fn(&mut Decoded) -> Vec<R>,
) -> Result<(Vec<R>, HashMap<u64, crate::model::Labels>), ColdError> {
    let mut rows = Vec::new();
    let mut labels = HashMap::new();
    for (_, meta) in files {
        let mut d = Decoded::default();
        store.read_file(meta, tier, &RowFilter::all(), &mut d)?;
        rows.extend(pick(&mut d));
        labels.extend(d.labels);
    }
    Ok((rows, labels))
}

/// Compacts one partition into a single file `part-compacted-w0-x<t>.parquet` (`t`: the
/// newest input's precedence) and deletes the inputs. Idempotent: compacting again, or after
/// a crash half-way, gives the same rows.
pub fn compact(
    store: &ColdStore,
    p: Partition,
    files: &[(FileKind, ObjectMeta)],
) -> Result<(), ColdError> {
    let newest = files
        .iter()
        .map(|(k, _)| k.precedence().1)
        .max()
        .unwrap_or(0);
    let out = p.file("compacted", 0, FileKind::Compacted(newest));
    // Streamed when it can be: an input that is the output itself (a compacted file and a
    // replayed main file below it) is merged in memory, as is an input out of file order.
    let metas: Vec<ObjectMeta> = files.iter().map(|(_, m)| m.clone()).collect();
    let streamed = if metas.iter().any(|m| m.location.as_ref() == out) {
        false
    } else {
        let res = match p.tier {
            Tier::Raw => store
                .merge_files::<Sample>(&out, p.tier, &metas, |d| std::mem::take(&mut d.samples)),
            Tier::Minute | Tier::Hour => store
                .merge_files::<Rollup>(&out, p.tier, &metas, |d| std::mem::take(&mut d.rollups)),
        };
        match res {
            Ok(_) => true,
            Err(MergeError::Cold(e)) => return Err(e),
            Err(e @ MergeError::Unsorted { .. }) => {
                tracing::warn!("compacting {}: {e}; merging in memory", p.dir());
                false
            }
        }
    };
    if !streamed {
        compact_in_memory(store, p, files, &out)?;
    }
    for (_, meta) in files {
        if meta.location.as_ref() != out {
            store.delete(meta.location.as_ref())?;
        }
    }
    store
        .stats
        .compactions
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// [`compact`] with every row in memory.
fn compact_in_memory(
    store: &ColdStore,
    p: Partition,
    files: &[(FileKind, ObjectMeta)],
    out: &str,
) -> Result<(), ColdError> {
    let write = |rows: super::parquet_io::Rows, order| store.write_file(out, p.tier, &rows, &order);
    match p.tier {
        Tier::Raw => {
            let (mut rows, labels) =
                merge::<Sample>(store, p.tier, files, |d| std::mem::take(&mut d.samples))?;
            let order =
                sort_dedup(&mut rows, &|id| labels.get(&id).cloned()).map_err(|source| {
                    ColdError::Parquet {
                        path: out.to_string(),
                        source,
                    }
                })?;
            write(Sample::into_rows(rows), order)?;
        }
        Tier::Minute | Tier::Hour => {
            let (mut rows, labels) =
                merge::<Rollup>(store, p.tier, files, |d| std::mem::take(&mut d.rollups))?;
            let order =
                sort_dedup(&mut rows, &|id| labels.get(&id).cloned()).map_err(|source| {
                    ColdError::Parquet {
                        path: out.to_string(),
                        source,
                    }
                })?;
            write(Rollup::into_rows(rows), order)?;
        }
    }
    Ok(())
}

/// Compacts every partition with more than one file that ended before `sealed_before`;
/// returns how many were compacted and, for those that could not be (an unreadable file, the
/// store failing), the partition and why. One bad partition does not stop the others; its
/// files stay as they are.
pub fn compact_all(
    store: &ColdStore,
    listing: &Listing,
    sealed_before: i64,
) -> (usize, Vec<(Partition, ColdError)>) {
    let (mut n, mut failed) = (0, Vec::new());
    for (p, files) in listing {
        if files.len() > 1 && p.end() <= sealed_before {
            match compact(store, *p, files) {
                Ok(()) => n += 1,
                Err(e) => failed.push((*p, e)),
            }
        }
    }
    (n, failed)
}

/// One line per tier for `tidemark tiers`: partitions, files, bytes, rows, bytes per row.
pub fn summary(store: &ColdStore, listing: &Listing) -> Result<String, ColdError> {
    let mut out = format!(
        "{:<5} {:>10} {:>7} {:>14} {:>14} {:>10}  {}\n",
        "TIER", "PARTITIONS", "FILES", "BYTES", "ROWS", "BYTES/ROW", "RANGE"
    );
    let mut detail = String::new();
    for tier in Tier::ALL {
        let parts: Vec<(&Partition, &Vec<(FileKind, ObjectMeta)>)> =
            listing.iter().filter(|(p, _)| p.tier == tier).collect();
        let (mut files, mut bytes, mut rows) = (0usize, 0u64, 0u64);
        for (p, fs) in &parts {
            let (mut pb, mut pr) = (0u64, 0u64);
            for (_, meta) in fs.iter() {
                pb += meta.size;
                match store.file_rows(meta) {
                    Ok(r) => pr += r,
                    Err(e) => detail.push_str(&format!("  unreadable: {e}\n")),
                }
            }
            files += fs.len();
            bytes += pb;
            rows += pr;
            detail.push_str(&format!(
                "  {:<40} {:>3} files {:>12} bytes {:>12} rows\n",
                p.dir(),
                fs.len(),
                pb,
                pr
            ));
        }
        let range = match (parts.first(), parts.last()) {
            (Some(a), Some(b)) => format!("{} .. {}", a.0.dir(), b.0.dir()),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{:<5} {:>10} {:>7} {:>14} {:>14} {:>10}  {}\n",
            tier.name(),
            parts.len(),
            files,
            bytes,
            rows,
            if rows > 0 {
                format!("{:.2}", bytes as f64 / rows as f64)
            } else {
                "-".into()
            },
            range
        ));
    }
    Ok(out + "\n" + &detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Labels;
    use crate::store::cold::layout::HOUR_MS;
    use crate::store::cold::parquet_io::SeriesOrder;
    use std::sync::Arc;

    const BASE: i64 = 1_795_305_600_000;

    fn put(store: &ColdStore, p: Partition, worker: usize, kind: FileKind, rows: Vec<Sample>) {
        let mut rows = rows;
        let order: SeriesOrder = sort_dedup(&mut rows, &|id| {
            Some(Labels::from_pairs([
                ("__name__", "cpu".to_string()),
                ("host", format!("h{id}")),
            ]))
        })
        .unwrap();
        store
            .write_file(
                &p.file("up", worker, kind),
                p.tier,
                &Sample::into_rows(rows),
                &order,
            )
            .unwrap();
    }

    fn rows(store: &ColdStore, p: Partition) -> Vec<(u64, i64, f64)> {
        let mut out = Vec::new();
        for (_, meta) in &list(store).unwrap()[&p] {
            let mut d = Decoded::default();
            store
                .read_file(meta, p.tier, &RowFilter::all(), &mut d)
                .unwrap();
            out.extend(d.samples.iter().map(|s| (s.series, s.ts, s.value)));
        }
        out.sort_by(|a, b| a.partial_cmp(b).unwrap());
        out
    }

    /// Labels for the streaming test: three metrics, so file order (metric, then id) is not
    /// id order.
    fn labels_of(id: u64) -> Option<Labels> {
        let metric = ["mem", "cpu", "disk"][(id % 3) as usize];
        Some(Labels::from_pairs([
            ("__name__", metric.to_string()),
            ("host", format!("h{id}")),
        ]))
    }

    fn put_sorted(store: &ColdStore, path: &str, tier: Tier, mut rows: Vec<Sample>) {
        let order = sort_dedup(&mut rows, &labels_of).unwrap();
        store
            .write_file(path, tier, &Sample::into_rows(rows), &order)
            .unwrap();
    }

    #[test]
    fn compaction_streams_files_larger_than_a_batch_in_file_order_later_files_winning() {
        let store = ColdStore::open("memory://").unwrap();
        let p = Tier::Raw.partition(BASE);
        // The oracle: (series, ts) -> value, later files overwriting, computed apart from the
        // merge.
        let mut want: BTreeMap<(u64, i64), f64> = BTreeMap::new();
        let kinds = [
            FileKind::Main,
            FileKind::Correction(BASE + HOUR_MS),
            FileKind::Correction(BASE + 2 * HOUR_MS),
        ];
        for (k, kind) in kinds.into_iter().enumerate() {
            // 2,000 series x 40 points (file 0), then overlapping halves with new values.
            let rows: Vec<Sample> = (0..2_000u64)
                .filter(|id| k == 0 || id % 2 == (k as u64 - 1))
                .flat_map(|id| {
                    (0..40i64)
                        .filter(move |i| k == 0 || i % 3 == 0)
                        .map(move |i| Sample {
                            series: id,
                            ts: BASE + i * 10_000 + k as i64 * 5_000 * (i % 2),
                            value: (id * 1_000) as f64 + i as f64 + k as f64 / 10.0,
                        })
                })
                .collect();
            for r in &rows {
                want.insert((r.series, r.ts), r.value);
            }
            put_sorted(&store, &p.file("up", 0, kind), p.tier, rows);
        }
        assert!(
            want.len() > 64 * 1024,
            "{} rows: more than one batch",
            want.len()
        );
        let listing = list(&store).unwrap();
        // Streamed (not the in-memory fallback): the merge itself writes every row once.
        let metas: Vec<ObjectMeta> = listing[&p].iter().map(|f| f.1.clone()).collect();
        let scratch = Tier::Raw
            .partition(BASE + 5 * HOUR_MS)
            .file("x", 0, FileKind::Main);
        let (_, n) = store
            .merge_files::<Sample>(&scratch, p.tier, &metas, |d| std::mem::take(&mut d.samples))
            .unwrap();
        assert_eq!(n as usize, want.len());
        store.delete(&scratch).unwrap();
        assert_eq!(compact_all(&store, &listing, p.end()).0, 1);
        let listing = list(&store).unwrap();
        assert_eq!(listing[&p].len(), 1);
        // Read back in file order: metric, then series id, then time.
        let mut d = Decoded::default();
        store
            .read_file(&listing[&p][0].1, p.tier, &RowFilter::all(), &mut d)
            .unwrap();
        let key = |s: &Sample| {
            let m = d.labels[&s.series].metric_name().unwrap_or("").to_string();
            (m, s.series, s.ts)
        };
        assert!(d.samples.windows(2).all(|w| key(&w[0]) < key(&w[1])));
        let got: BTreeMap<(u64, i64), f64> = d
            .samples
            .iter()
            .map(|s| ((s.series, s.ts), s.value))
            .collect();
        assert_eq!(got.len(), d.samples.len(), "no duplicates");
        assert_eq!(got, want);
        assert_eq!(d.labels[&7].get("host"), Some("h7"));
    }

    #[test]
    fn a_file_out_of_order_is_merged_in_memory_instead() {
        let store = ColdStore::open("memory://").unwrap();
        let p = Tier::Raw.partition(BASE);
        put_sorted(
            &store,
            &p.file("up", 0, FileKind::Main),
            p.tier,
            vec![Sample {
                series: 1,
                ts: BASE,
                value: 1.0,
            }],
        );
        // Rows of one series with times going backwards: not file order.
        let backwards = vec![
            Sample {
                series: 1,
                ts: BASE + 20,
                value: 3.0,
            },
            Sample {
                series: 1,
                ts: BASE + 10,
                value: 2.0,
            },
        ];
        let order = vec![(1, labels_of(1).unwrap())];
        let path = p.file("up", 1, FileKind::Main);
        store
            .write_file(&path, p.tier, &Sample::into_rows(backwards), &order)
            .unwrap();
        let metas: Vec<ObjectMeta> = list(&store).unwrap()[&p]
            .iter()
            .map(|f| f.1.clone())
            .collect();
        let out = p.file("compacted", 0, FileKind::Compacted(0));
        let err = store
            .merge_files::<Sample>(&out, p.tier, &metas, |d| std::mem::take(&mut d.samples))
            .unwrap_err();
        assert!(err.to_string().contains("not in file order"), "{err}");
        let listing = list(&store).unwrap();
        assert_eq!(compact_all(&store, &listing, p.end()).0, 1);
        assert_eq!(
            rows(&store, p),
            vec![(1, BASE, 1.0), (1, BASE + 10, 2.0), (1, BASE + 20, 3.0)]
        );
    }

    /// An in-memory object store that records what happens to multipart uploads (S3 keeps
    /// the parts of an upload neither completed nor aborted; the in-memory and local stores
    /// drop them on their own, so only the calls show a leak).
    mod recording {
        use futures::stream::BoxStream;
        use object_store::memory::InMemory;
        use object_store::path::Path;
        use object_store::{
            CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
            ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
            UploadPart,
        };
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;

        #[derive(Debug, Default)]
        pub struct Uploads {
            pub started: AtomicUsize,
            pub parts: AtomicUsize,
            pub completed: AtomicUsize,
            pub aborted: AtomicUsize,
        }

        #[derive(Debug, Default)]
        pub struct Recording {
            inner: InMemory,
            pub uploads: Arc<Uploads>,
        }

        impl std::fmt::Display for Recording {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "Recording({})", self.inner)
            }
        }

        #[derive(Debug)]
        struct Upload {
            inner: Box<dyn MultipartUpload>,
            uploads: Arc<Uploads>,
        }

        #[async_trait::async_trait]
        impl MultipartUpload for Upload {
            fn put_part(&mut self, data: PutPayload) -> UploadPart {
                self.uploads.parts.fetch_add(1, Ordering::SeqCst);
                self.inner.put_part(data)
            }
            async fn complete(&mut self) -> Result<PutResult> {
                self.uploads.completed.fetch_add(1, Ordering::SeqCst);
                self.inner.complete().await
            }
            async fn abort(&mut self) -> Result<()> {
                self.uploads.aborted.fetch_add(1, Ordering::SeqCst);
                self.inner.abort().await
            }
        }

        #[async_trait::async_trait]
        impl ObjectStore for Recording {
            async fn put_opts(
                &self,
                location: &Path,
                payload: PutPayload,
                opts: PutOptions,
            ) -> Result<PutResult> {
                self.inner.put_opts(location, payload, opts).await
            }
            async fn put_multipart_opts(
                &self,
                location: &Path,
                opts: PutMultipartOptions,
            ) -> Result<Box<dyn MultipartUpload>> {
                self.uploads.started.fetch_add(1, Ordering::SeqCst);
                let inner = self.inner.put_multipart_opts(location, opts).await?;
                Ok(Box::new(Upload {
                    inner,
                    uploads: Arc::clone(&self.uploads),
                }))
            }
            async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
                self.inner.get_opts(location, options).await
            }
            fn delete_stream(
                &self,
                locations: BoxStream<'static, Result<Path>>,
            ) -> BoxStream<'static, Result<Path>> {
                self.inner.delete_stream(locations)
            }
            fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
                self.inner.list(prefix)
            }
            async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
                self.inner.list_with_delimiter(prefix).await
            }
            async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
                self.inner.copy_opts(from, to, options).await
            }
        }
    }

    #[test]
    fn a_merge_that_fails_after_its_upload_started_aborts_the_upload() {
        let rec = Arc::new(recording::Recording::default());
        let uploads = Arc::clone(&rec.uploads);
        // A 64 KiB upload buffer: the first output row group (128 Ki rows) starts a multipart
        // upload.
        let store = ColdStore::with_store("memory://recording", rec)
            .unwrap()
            .with_upload_buffer(64 * 1024);
        let p = Tier::Raw.partition(BASE);
        // 200,000 rows of one series in file order, then one going back in time: the merge
        // finds it in its fourth batch, after an output row group went out.
        let mut rows: Vec<Sample> = (0..200_000i64)
            .map(|i| Sample {
                series: 1,
                ts: BASE + i,
                value: (i as f64 * 0.37).sin() * 1e6,
            })
            .collect();
        rows.push(Sample {
            series: 1,
            ts: BASE + 5,
            value: 0.0,
        });
        let order = vec![(1, labels_of(1).unwrap())];
        let path = p.file("up", 0, FileKind::Main);
        store
            .write_file(&path, p.tier, &Sample::into_rows(rows), &order)
            .unwrap();
        let input = uploads.started.load(std::sync::atomic::Ordering::SeqCst);
        let metas: Vec<ObjectMeta> = list(&store).unwrap()[&p]
            .iter()
            .map(|f| f.1.clone())
            .collect();
        let out = p.file("compacted", 0, FileKind::Compacted(0));
        let err = store
            .merge_files::<Sample>(&out, p.tier, &metas, |d| std::mem::take(&mut d.samples))
            .unwrap_err();
        assert!(err.to_string().contains("not in file order"), "{err}");
        let n = |a: &std::sync::atomic::AtomicUsize| a.load(std::sync::atomic::Ordering::SeqCst);
        // The merge's upload had started and sent a part before the error, and was aborted.
        assert_eq!(n(&uploads.started), input + 1);
        assert!(n(&uploads.parts) > 0);
        assert_eq!(n(&uploads.aborted), 1);
        assert_eq!(n(&uploads.completed), input);
        // Nothing of the output is listed; the input is untouched.
        let listing = list(&store).unwrap();
        assert_eq!(listing[&p].len(), 1);
        assert_eq!(listing[&p][0].1.location.as_ref(), path);
    }

    #[test]
    fn compaction_merges_with_later_files_winning_and_retention_drops_old_partitions() {
        let store = ColdStore::open("memory://").unwrap();
        let s = |series, ts, value| Sample { series, ts, value };
        let p = Tier::Raw.partition(BASE);
        put(
            &store,
            p,
            0,
            FileKind::Main,
            vec![s(1, BASE, 1.0), s(1, BASE + 10, 2.0)],
        );
        put(&store, p, 1, FileKind::Main, vec![s(2, BASE, 5.0)]);
        // A late correction of (1, BASE+10) and a new late sample.
        put(
            &store,
            p,
            0,
            FileKind::Correction(BASE + 2 * HOUR_MS),
            vec![s(1, BASE + 10, 2.5), s(1, BASE + 20, 3.0)],
        );
        let older = Tier::Raw.partition(BASE - 10 * HOUR_MS);
        put(
            &store,
            older,
            0,
            FileKind::Main,
            vec![s(1, older.start, 0.0)],
        );

        let listing = list(&store).unwrap();
        assert_eq!(listing[&p].len(), 3);
        // Not sealed long enough: nothing happens.
        assert_eq!(compact_all(&store, &listing, p.end() - 1).0, 0);
        assert_eq!(compact_all(&store, &listing, p.end()).0, 1);
        let listing = list(&store).unwrap();
        assert_eq!(listing[&p].len(), 1);
        assert_eq!(
            listing[&p][0].1.location.to_string(),
            p.file("compacted", 0, FileKind::Compacted(BASE + 2 * HOUR_MS))
        );
        let want = vec![
            (1, BASE, 1.0),
            (1, BASE + 10, 2.5),
            (1, BASE + 20, 3.0),
            (2, BASE, 5.0),
        ];
        assert_eq!(rows(&store, p), want);
        // A main file written again after compaction (a replay) loses to the compacted one.
        put(&store, p, 0, FileKind::Main, vec![s(1, BASE + 10, 2.0)]);
        let listing = list(&store).unwrap();
        assert_eq!(compact_all(&store, &listing, p.end()).0, 1);
        assert_eq!(rows(&store, p), want);

        // A corrupt file in another partition is reported; it does not stop the others, and
        // its partition's files stay.
        let q = Tier::Raw.partition(BASE + HOUR_MS);
        put(&store, q, 0, FileKind::Main, vec![s(1, q.start, 1.0)]);
        store
            .put_bytes(&q.file("up", 1, FileKind::Main), b"not parquet".to_vec())
            .unwrap();
        put(&store, p, 1, FileKind::Main, vec![s(3, BASE, 7.0)]);
        let listing = list(&store).unwrap();
        let (n, failed) = compact_all(&store, &listing, q.end());
        assert_eq!(n, 1);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, q);
        assert!(
            failed[0].1.to_string().contains("part-up-w1-m.parquet"),
            "{}",
            failed[0].1
        );
        assert_eq!(list(&store).unwrap()[&q].len(), 2);
        let text = summary(&store, &list(&store).unwrap()).unwrap();
        assert!(text.contains("unreadable"), "{text}");
        for f in [
            q.file("up", 0, FileKind::Main),
            q.file("up", 1, FileKind::Main),
        ] {
            store.delete(&f).unwrap();
        }
        let mut want = want;
        want.push((3, BASE, 7.0));
        want.sort_by(|a, b| a.partial_cmp(b).unwrap());
        assert_eq!(rows(&store, p), want);
        assert_eq!(list(&store).unwrap()[&p].len(), 1);

        // Retention: a 5-hour retention at BASE + 2h drops only the older partition.
        let listing = list(&store).unwrap();
        let gone = apply_retention(&store, &listing, BASE + 2 * HOUR_MS, &|_| 5 * HOUR_MS).unwrap();
        assert_eq!(gone, vec![older]);
        let listing = list(&store).unwrap();
        assert_eq!(listing.keys().copied().collect::<Vec<_>>(), vec![p]);
        let text = summary(&store, &listing).unwrap();
        assert!(text.contains("raw            1       1"), "{text}");
    }
}

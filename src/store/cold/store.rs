//! The object store behind the cold tiers, chosen by URL: `file:///path`, `s3://bucket/prefix`
//! (endpoint, region and credentials from the `AWS_*` variables, plain HTTP allowed), or
//! `memory://` (tests). Calls block the caller (timely workers, blocking tasks) on a small
//! runtime of the store's own; writes retry with backoff until they succeed, so a store that is
//! down holds the job back instead of losing data.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, RowSelection, RowSelector,
};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{AsyncArrowWriter, ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use super::layout::Tier;
use super::parquet_io::{self, ColdRow, Decoded, ParquetError, RowFilter, Rows};
use crate::model::Labels;

/// Cold-store errors: what failed, where, and what to check.
#[derive(Debug, thiserror::Error)]
pub enum ColdError {
    #[error(
        "cold storage URL {url:?} ([cold] url in tidemark.toml): {reason} (use file:///path, s3://bucket/prefix or memory://)"
    )]
    Url { url: String, reason: String },
    #[error("object store {url}: {op} {path}: {source}")]
    Store {
        url: String,
        op: &'static str,
        path: String,
        source: object_store::Error,
    },
    #[error("{path}: {source}")]
    Parquet { path: String, source: ParquetError },
    #[error("cold storage: {0}")]
    Other(String),
    #[error("stopped while retrying {0}")]
    Stopped(String),
}

/// A pause inside the write of every file whose path contains
/// `TIDEMARK_TEST_COLD_WRITE_PAUSE_MATCH` (all files if unset), after its first record batch
/// was encoded: `TIDEMARK_TEST_COLD_WRITE_PAUSE_MS` (the fault tests kill the process inside
/// a seal).
fn write_pause(path: &str) -> Option<Duration> {
    static PAUSE: std::sync::OnceLock<Option<(u64, String)>> = std::sync::OnceLock::new();
    PAUSE
        .get_or_init(|| {
            let ms = std::env::var("TIDEMARK_TEST_COLD_WRITE_PAUSE_MS")
                .ok()
                .and_then(|v| v.parse().ok())?;
            let m = std::env::var("TIDEMARK_TEST_COLD_WRITE_PAUSE_MATCH").unwrap_or_default();
            Some((ms, m))
        })
        .as_ref()
        .filter(|(_, m)| path.contains(m.as_str()))
        .map(|(ms, _)| Duration::from_millis(*ms))
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct ColdStats {
    pub files_written: AtomicU64,
    pub rows_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub write_failures: AtomicU64,
    pub files_deleted: AtomicU64,
    pub compactions: AtomicU64,
    /// Rows read by queries, per tier (raw, 1m, 1h).
    pub query_rows: [AtomicU64; 3],
    /// What the store held at the last maintenance listing, per tier: partitions, files,
    /// bytes; and when that was (unix ms, 0: not listed yet).
    pub stored: [[AtomicU64; 3]; 3],
    pub listed_at_ms: AtomicU64,
    pub last_error: Mutex<String>,
}

/// Rows a merge decodes from an input, and writes, at a time.
const MERGE_BATCH_ROWS: usize = 64 * 1024;

/// Bytes a file's writer buffers before it starts a multipart upload: object_store's
/// default, 10 MiB.
pub const UPLOAD_BUFFER: usize = 10 * 1024 * 1024;

/// Why [`ColdStore::merge_files`] did not write its file.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(transparent)]
    Cold(#[from] ColdError),
    #[error("{path} is not in file order (metric, series id, time) at series {series:016x}")]
    Unsorted { path: String, series: u64 },
}

/// One input of a merge: its current record batch, decoded, and where in it the merge is.
struct MergeCursor<R> {
    stream: parquet::arrow::async_reader::ParquetRecordBatchStream<RangeReader>,
    path: String,
    rows: Vec<R>,
    pos: usize,
    /// Labels of the series in `rows`.
    labels: HashMap<u64, Labels>,
    /// The key of the row before (to check the order): metric name, series id, time.
    last: Option<(String, u64, i64)>,
    done: bool,
}

impl<R: ColdRow> MergeCursor<R> {
    /// The current row's key: metric name, series id, time.
    fn key(&self) -> Option<(&str, u64, i64)> {
        let r = self.rows.get(self.pos)?;
        let m = self
            .labels
            .get(&r.series())
            .and_then(|l| l.metric_name())
            .unwrap_or("");
        Some((m, r.series(), r.time()))
    }

    /// Decodes the next batch when the current one is used up; checks the order.
    async fn fill(
        &mut self,
        tier: Tier,
        pick: fn(&mut Decoded) -> Vec<R>,
    ) -> Result<(), MergeError> {
        while self.pos >= self.rows.len() && !self.done {
            let batch = self
                .stream
                .try_next()
                .await
                .map_err(|e| ColdError::Parquet {
                    path: self.path.clone(),
                    source: e.into(),
                })?;
            let Some(batch) = batch else {
                self.done = true;
                break;
            };
            let mut d = Decoded::default();
            parquet_io::decode_batch(tier, &batch, &self.path, &RowFilter::all(), &mut d).map_err(
                |source| ColdError::Parquet {
                    path: self.path.clone(),
                    source,
                },
            )?;
            self.rows = pick(&mut d);
            self.labels = d.labels;
            self.pos = 0;
        }
        let Some(r) = self.rows.get(self.pos) else {
            return Ok(());
        };
        let (id, t) = (r.series(), r.time());
        let m = self
            .labels
            .get(&id)
            .and_then(|l| l.metric_name())
            .unwrap_or("");
        match &mut self.last {
            Some(last) if (last.0.as_str(), last.1, last.2) > (m, id, t) => {
                return Err(MergeError::Unsorted {
                    path: self.path.clone(),
                    series: id,
                });
            }
            Some(last) => {
                if last.0 != m {
                    last.0 = m.to_string();
                }
                (last.1, last.2) = (id, t);
            }
            None => self.last = Some((m.to_string(), id, t)),
        }
        Ok(())
    }
}

/// Reads a Parquet file from the object store by ranges: the footer first, then only the
/// column chunks of the row groups and columns a query needs.
#[derive(Clone)]
struct RangeReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

fn external(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl AsyncFileReader for RangeReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        Box::pin(async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(external)
        })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        Box::pin(async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(external)
        })
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        Box::pin(async move {
            let size = self.size;
            let md = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(64 * 1024))
                .with_offset_index_policy(parquet::file::metadata::PageIndexPolicy::Optional)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(md))
        })
    }
}

impl ColdStats {
    /// The `tidemark_cold_*` families of `/metrics`.
    pub fn render(&self, w: &mut crate::ops::TextWriter) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        for (name, help, v) in [
            (
                "tidemark_cold_files_written_total",
                "Parquet files written to the cold tiers.",
                get(&self.files_written),
            ),
            (
                "tidemark_cold_rows_written_total",
                "Rows (samples or rollups) written to the cold tiers.",
                get(&self.rows_written),
            ),
            (
                "tidemark_cold_bytes_written_total",
                "Bytes of Parquet written to the cold tiers.",
                get(&self.bytes_written),
            ),
            (
                "tidemark_cold_write_failures_total",
                "Failed object-store operations (each is retried with backoff; the job waits).",
                get(&self.write_failures),
            ),
            (
                "tidemark_cold_files_deleted_total",
                "Cold files deleted by retention and compaction.",
                get(&self.files_deleted),
            ),
            (
                "tidemark_cold_compactions_total",
                "Partitions compacted into one file.",
                get(&self.compactions),
            ),
        ] {
            w.family(name, "counter", help, &[("", v)]);
        }
        let tiers: Vec<(String, f64)> = Tier::ALL
            .iter()
            .zip(&self.query_rows)
            .map(|(t, c)| (crate::ops::labels(&[("tier", t.name())]), get(c)))
            .collect();
        let tiers: Vec<(&str, f64)> = tiers.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        w.family(
            "tidemark_cold_query_rows_total",
            "counter",
            "Rows (samples or rollups) queries read from each cold tier.",
            &tiers,
        );
        let listed = self.listed_at_ms.load(Ordering::Relaxed);
        if listed == 0 {
            return;
        }
        for (i, (name, help)) in [
            (
                "tidemark_cold_partitions",
                "Partitions of each cold tier at the last maintenance listing.",
            ),
            (
                "tidemark_cold_files",
                "Files of each cold tier at the last maintenance listing.",
            ),
            (
                "tidemark_cold_stored_bytes",
                "Bytes of each cold tier at the last maintenance listing.",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let v: Vec<(String, f64)> = Tier::ALL
                .iter()
                .zip(&self.stored[i])
                .map(|(t, c)| (crate::ops::labels(&[("tier", t.name())]), get(c)))
                .collect();
            let v: Vec<(&str, f64)> = v.iter().map(|(l, x)| (l.as_str(), *x)).collect();
            w.family(name, "gauge", help, &v);
        }
        w.family(
            "tidemark_cold_listed_timestamp_seconds",
            "gauge",
            "When the cold tiers were last listed (retention and compaction, every [cold] compaction_interval).",
            &[("", listed as f64 / 1000.0)],
        );
    }
}

/// A cold store: an object store, its URL and a runtime to drive it.
pub struct ColdStore {
    pub url: String,
    /// The directory of a `file://` store.
    local_root: Option<std::path::PathBuf>,
    store: Arc<dyn ObjectStore>,
    rt: tokio::runtime::Runtime,
    pub stats: Arc<ColdStats>,
    /// Set at shutdown: retry loops give up.
    pub stop: Arc<AtomicBool>,
    footers: Mutex<HashMap<(String, u64, String), ArrowReaderMetadata>>,
    /// Bytes a file's writer buffers before it starts a multipart upload (and the size of
    /// each part then).
    upload_buffer: usize,
}

impl std::fmt::Debug for ColdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ColdStore({})", self.url)
    }
}

fn url_err(url: &str, reason: impl Into<String>) -> ColdError {
    ColdError::Url {
        url: url.into(),
        reason: reason.into(),
    }
}

impl ColdStore {
    /// Checks a URL's syntax without touching the store (what `open` would reject before I/O).
    pub fn check_url(url: &str) -> Result<(), ColdError> {
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(url_err(url, "a file URL needs an absolute path"));
            }
        } else if let Some(rest) = url.strip_prefix("s3://") {
            if rest.split('/').next().unwrap_or("").is_empty() {
                return Err(url_err(url, "no bucket"));
            }
        } else if !url.starts_with("memory://") {
            return Err(url_err(url, "unknown scheme"));
        }
        Ok(())
    }

    /// Opens the store a URL names.
    pub fn open(url: &str) -> Result<ColdStore, ColdError> {
        let store: Arc<dyn ObjectStore> = if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(url_err(url, "a file URL needs an absolute path"));
            }
            std::fs::create_dir_all(path)
                .map_err(|e| url_err(url, format!("cannot create {path}: {e}")))?;
            Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(path)
                    .map_err(|e| url_err(url, e.to_string()))?,
            )
        } else if url == "memory://" || url.starts_with("memory://") {
            Arc::new(object_store::memory::InMemory::new())
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(url_err(url, "no bucket"));
            }
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false)
                // Tidemark retries writes itself, without limit; keep each attempt short.
                .with_retry(object_store::RetryConfig {
                    max_retries: 2,
                    retry_timeout: Duration::from_secs(10),
                    ..Default::default()
                });
            if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err()
            {
                b = b.with_region("us-east-1");
            }
            if let Ok(ep) = std::env::var("AWS_ENDPOINT_URL") {
                b = b.with_endpoint(ep);
            }
            let s3: Arc<dyn ObjectStore> =
                Arc::new(b.build().map_err(|e| url_err(url, e.to_string()))?);
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                s3
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
            }
        } else {
            return Err(url_err(url, "unknown scheme"));
        };
        Self::with_store(url, store)
    }

    /// A store over an object store built elsewhere (`url` names it in messages; a `file://`
    /// URL also says where its local files are).
    pub fn with_store(url: &str, store: Arc<dyn ObjectStore>) -> Result<ColdStore, ColdError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cold-store")
            .enable_all()
            .build()
            .map_err(|e| ColdError::Other(format!("cannot start the store's runtime: {e}")))?;
        Ok(ColdStore {
            url: url.into(),
            local_root: url.strip_prefix("file://").map(std::path::PathBuf::from),
            store,
            rt,
            stats: Arc::new(ColdStats::default()),
            stop: Arc::new(AtomicBool::new(false)),
            footers: Mutex::new(HashMap::new()),
            upload_buffer: UPLOAD_BUFFER,
        })
    }

    /// Closes a file's writer (the upload completes) and returns the file's size as stored.
    async fn close(
        &self,
        w: AsyncArrowWriter<object_store::buffered::BufWriter>,
        location: &Path,
        path: &str,
    ) -> Result<u64, ColdError> {
        w.close().await.map_err(|e| ColdError::Parquet {
            path: path.into(),
            source: e.into(),
        })?;
        let meta = self
            .store
            .head(location)
            .await
            .map_err(|e| self.store_err("head", path, e))?;
        Ok(meta.size)
    }

    fn count_written(&self, bytes: u64, rows: u64) {
        self.stats.files_written.fetch_add(1, Ordering::Relaxed);
        self.stats.rows_written.fetch_add(rows, Ordering::Relaxed);
        self.stats.bytes_written.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Sets the bytes a file's writer buffers before a multipart upload starts (default
    /// [`UPLOAD_BUFFER`]; tests make it small to exercise the multipart path).
    pub fn with_upload_buffer(mut self, bytes: usize) -> Self {
        self.upload_buffer = bytes.max(1);
        self
    }

    fn writer(&self, location: &Path) -> object_store::buffered::BufWriter {
        object_store::buffered::BufWriter::with_capacity(
            Arc::clone(&self.store),
            location.clone(),
            self.upload_buffer,
        )
    }

    /// Deletes the unfinished uploads under directory `dir` (a tier's `tier=<name>`) of files
    /// whose name starts with `prefix` (a writer's `part-<job>-w<worker>-`): a process killed
    /// while it wrote a file leaves, in a `file://` store, the staged part of it as
    /// `<file>#<n>` (object_store's local uploads), which no listing shows. Returns how many it deleted. In S3 an unfinished multipart
    /// upload is invisible as well and is removed by the bucket's lifecycle rule
    /// (`AbortIncompleteMultipartUpload`).
    pub fn remove_unfinished(&self, dir: &str, prefix: &str) -> usize {
        fn walk(dir: &std::path::Path, prefix: &str, n: &mut usize) {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            for e in rd.flatten() {
                let path = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&path, prefix, n);
                    continue;
                }
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                let staged = name.starts_with(prefix)
                    && name.rsplit_once('#').is_some_and(|(_, id)| {
                        !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())
                    });
                if staged && std::fs::remove_file(&path).is_ok() {
                    tracing::warn!(
                        "cold store: deleted {} (an upload a stopped process did not finish; the file is written again)",
                        path.display()
                    );
                    *n += 1;
                }
            }
        }
        let mut n = 0;
        if let Some(root) = &self.local_root {
            walk(&root.join(dir), prefix, &mut n);
        }
        n
    }

    /// The underlying object store.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    fn store_err(&self, op: &'static str, path: &str, source: object_store::Error) -> ColdError {
        ColdError::Store {
            url: self.url.clone(),
            op,
            path: path.into(),
            source,
        }
    }

    /// Runs `f` until it succeeds, with exponential backoff (100 ms doubling to 10 s, with
    /// jitter); every failure is counted and the last one kept for `/metrics`.
    pub fn retrying<T>(
        &self,
        what: &str,
        mut f: impl FnMut() -> Result<T, ColdError>,
    ) -> Result<T, ColdError> {
        let mut delay = Duration::from_millis(100);
        let mut last_log: Option<Instant> = None;
        loop {
            match f() {
                Ok(v) => return Ok(v),
                Err(e) => {
                    self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                    let msg = e.to_string();
                    if last_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!("cold storage: {what} failed (retrying): {msg}");
                        last_log = Some(Instant::now());
                    }
                    *self
                        .stats
                        .last_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = msg;
                }
            }
            if self.stop.load(Ordering::Acquire) {
                return Err(ColdError::Stopped(what.into()));
            }
            let jitter = Duration::from_millis(u64::from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos() % 100)
                    .unwrap_or(0),
            ));
            std::thread::sleep(delay + jitter);
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// Writes `rows` (sorted and deduplicated, see [`parquet_io::sort_dedup`]) as one Parquet
    /// file at `path`, whole: readers see the complete file or none. Returns its size.
    pub fn write_file(
        &self,
        path: &str,
        tier: Tier,
        rows: &Rows,
        names: &parquet_io::SeriesOrder,
    ) -> Result<u64, ColdError> {
        let batch =
            parquet_io::to_batch(tier, rows, names).map_err(|source| ColdError::Parquet {
                path: path.into(),
                source,
            })?;
        let location = Path::from(path);
        let props = parquet_io::writer_properties(tier);
        let res: Result<u64, ColdError> = self.rt.block_on(async {
            let out = self.writer(&location);
            let mut w =
                AsyncArrowWriter::try_new(out, batch.schema(), Some(props)).map_err(|e| {
                    ColdError::Parquet {
                        path: path.into(),
                        source: e.into(),
                    }
                })?;
            w.write(&batch).await.map_err(|e| ColdError::Parquet {
                path: path.into(),
                source: e.into(),
            })?;
            self.close(w, &location, path).await
        });
        let size = res?;
        self.count_written(size, rows.len() as u64);
        Ok(size)
    }

    /// Writes one Parquet file at `path` from record batches that `next` yields in file order
    /// (`None` ends the file), whole: readers see the complete file or none. Memory holds one
    /// batch and the row group being encoded, not the file's rows. Returns the size and rows;
    /// a file with no rows is not written (size 0).
    pub fn write_file_batches(
        &self,
        path: &str,
        tier: Tier,
        next: &mut dyn FnMut() -> Result<Option<RecordBatch>, ParquetError>,
    ) -> Result<(u64, u64), ColdError> {
        let perr = |source: ParquetError| ColdError::Parquet {
            path: path.into(),
            source,
        };
        let Some(first) = next().map_err(perr)? else {
            return Ok((0, 0));
        };
        let location = Path::from(path);
        let props = parquet_io::writer_properties(tier);
        let pause = write_pause(path);
        let res: Result<(u64, u64), ColdError> = self.rt.block_on(async {
            let out = self.writer(&location);
            let mut w = AsyncArrowWriter::try_new(out, first.schema(), Some(props))
                .map_err(|e| perr(e.into()))?;
            let mut rows = first.num_rows() as u64;
            w.write(&first).await.map_err(|e| perr(e.into()))?;
            drop(first);
            if let Some(p) = pause {
                tracing::warn!(
                    path,
                    pause_ms = p.as_millis() as u64,
                    "first record batch of a cold file encoded; pausing (TIDEMARK_TEST_COLD_WRITE_PAUSE_MS)"
                );
                tokio::time::sleep(p).await;
            }
            while let Some(batch) = next().map_err(perr)? {
                rows += batch.num_rows() as u64;
                w.write(&batch).await.map_err(|e| perr(e.into()))?;
            }
            Ok((self.close(w, &location, path).await?, rows))
        });
        let (size, rows) = res?;
        self.count_written(size, rows);
        Ok((size, rows))
    }

    /// Merges `files` (in precedence order, each in file order: metric, series id, time) into
    /// one file at `path`, streaming: a record batch of each input and one output batch are
    /// in memory at a time, not the partition (an hour of raw samples at 1 M series is 360 M
    /// rows). For equal series and time the later file's row wins. Returns the bytes and
    /// rows written; [`MergeError::Unsorted`] when an input is not in file order (the caller
    /// merges in memory instead), nothing written then.
    pub fn merge_files<R: ColdRow>(
        &self,
        path: &str,
        tier: Tier,
        files: &[ObjectMeta],
        pick: fn(&mut Decoded) -> Vec<R>,
    ) -> Result<(u64, u64), MergeError> {
        let perr = |p: &str, source: ParquetError| ColdError::Parquet {
            path: p.into(),
            source,
        };
        let location = Path::from(path);
        let res: Result<(u64, u64), MergeError> = self.rt.block_on(async {
            let mut cursors = Vec::with_capacity(files.len());
            for meta in files {
                let md = self.metadata(meta).await?;
                let reader = RangeReader {
                    store: Arc::clone(&self.store),
                    path: meta.location.clone(),
                    size: meta.size,
                };
                let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, md)
                    .with_batch_size(MERGE_BATCH_ROWS)
                    .build()
                    .map_err(|e| perr(meta.location.as_ref(), e.into()))?;
                cursors.push(MergeCursor {
                    stream,
                    path: meta.location.to_string(),
                    rows: Vec::new(),
                    pos: 0,
                    labels: HashMap::new(),
                    last: None,
                    done: false,
                });
            }
            for c in cursors.iter_mut() {
                c.fill(tier, pick).await?;
            }
            let out = self.writer(&location);
            let mut w = AsyncArrowWriter::try_new(
                out,
                parquet_io::schema(tier),
                Some(parquet_io::writer_properties(tier)),
            )
            .map_err(|e| perr(path, e.into()))?;
            // An error before the file is closed aborts the upload (a multipart upload left
            // open holds its parts in the bucket until a lifecycle rule removes them).
            let body = Self::merge_rows(&mut cursors, &mut w, path, tier, pick).await;
            let rows = match body {
                Ok(rows) => rows,
                Err(e) => {
                    if let Err(a) = w.into_inner().abort().await {
                        tracing::warn!("cold storage: aborting the upload of {path} after a failed merge failed too: {a}");
                    }
                    return Err(e);
                }
            };
            Ok((self.close(w, &location, path).await?, rows))
        });
        let (size, rows) = res?;
        self.count_written(size, rows);
        Ok((size, rows))
    }

    /// The merge loop of [`ColdStore::merge_files`]: writes the cursors' rows in key order;
    /// returns the rows written (the file is not closed).
    async fn merge_rows<R: ColdRow>(
        cursors: &mut [MergeCursor<R>],
        w: &mut AsyncArrowWriter<object_store::buffered::BufWriter>,
        path: &str,
        tier: Tier,
        pick: fn(&mut Decoded) -> Vec<R>,
    ) -> Result<u64, MergeError> {
        let perr = |p: &str, source: ParquetError| ColdError::Parquet {
            path: p.into(),
            source,
        };
        {
            let mut buf: Vec<R> = Vec::with_capacity(MERGE_BATCH_ROWS);
            let mut order: parquet_io::SeriesOrder = Vec::new();
            let mut rows = 0u64;
            loop {
                // The smallest key; of equal (series, time) the last file's row.
                let mut best: Option<usize> = None;
                for (i, c) in cursors.iter().enumerate() {
                    let Some(k) = c.key() else { continue };
                    best = match best {
                        Some(b) if cursors[b].key().is_some_and(|bk| bk < k) => Some(b),
                        _ => Some(i),
                    };
                }
                let Some(b) = best else { break };
                let row = cursors[b].rows[cursors[b].pos].clone();
                let (id, t) = (row.series(), row.time());
                if order.last().is_none_or(|o| o.0 != id) {
                    let labels = cursors[b]
                        .labels
                        .get(&id)
                        .cloned()
                        .unwrap_or_else(Labels::empty);
                    order.push((id, labels));
                }
                buf.push(row);
                // Every cursor at this key moves past it (the last one's row was taken).
                // (A series id is the hash of its labels: equal ids have equal metric names.)
                for c in cursors.iter_mut() {
                    if c.rows
                        .get(c.pos)
                        .is_some_and(|r| r.series() == id && r.time() == t)
                    {
                        c.pos += 1;
                        c.fill(tier, pick).await?;
                    }
                }
                if buf.len() >= MERGE_BATCH_ROWS {
                    let batch =
                        parquet_io::to_batch(tier, &R::into_rows(std::mem::take(&mut buf)), &order)
                            .map_err(|e| perr(path, e))?;
                    rows += batch.num_rows() as u64;
                    w.write(&batch).await.map_err(|e| perr(path, e.into()))?;
                    order.clear();
                }
            }
            if !buf.is_empty() {
                let batch = parquet_io::to_batch(tier, &R::into_rows(buf), &order)
                    .map_err(|e| perr(path, e))?;
                rows += batch.num_rows() as u64;
                w.write(&batch).await.map_err(|e| perr(path, e.into()))?;
            }
            Ok(rows)
        }
    }

    /// Every object under `prefix`.
    pub fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ColdError> {
        let p = (!prefix.is_empty()).then(|| Path::from(prefix));
        self.rt.block_on(async {
            self.store
                .list(p.as_ref())
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| self.store_err("list", prefix, e))
        })
    }

    /// Deletes an object (a missing one is fine).
    pub fn delete(&self, path: &str) -> Result<(), ColdError> {
        let location = Path::from(path);
        self.rt.block_on(async {
            match self.store.delete(&location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.store_err("delete", path, e)),
            }
        })?;
        self.stats.files_deleted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Small objects (checkpoints).
    pub fn put_bytes(&self, path: &str, bytes: Vec<u8>) -> Result<(), ColdError> {
        let location = Path::from(path);
        self.rt.block_on(async {
            self.store
                .put(&location, bytes.into())
                .await
                .map(|_| ())
                .map_err(|e| self.store_err("put", path, e))
        })
    }

    /// A small object, or `None` when it does not exist.
    pub fn get_bytes(&self, path: &str) -> Result<Option<Vec<u8>>, ColdError> {
        let location = Path::from(path);
        self.rt.block_on(async {
            match self.store.get(&location).await {
                Ok(r) => r
                    .bytes()
                    .await
                    .map(|b| Some(b.to_vec()))
                    .map_err(|e| self.store_err("get", path, e)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.store_err("get", path, e)),
            }
        })
    }

    /// The number of rows of a Parquet file (from its footer only).
    pub fn file_rows(&self, meta: &ObjectMeta) -> Result<u64, ColdError> {
        let mut reader = RangeReader {
            store: Arc::clone(&self.store),
            path: meta.location.clone(),
            size: meta.size,
        };
        self.rt.block_on(async {
            let md = reader
                .get_metadata(None)
                .await
                .map_err(|e| ColdError::Parquet {
                    path: meta.location.to_string(),
                    source: e.into(),
                })?;
            Ok(md.file_metadata().num_rows().max(0) as u64)
        })
    }

    /// A file's footer (with its offset index), cached by path, size and entity tag: a file's
    /// name changes with its content, except when a replay writes a correction part again
    /// with other rows of its window (the same name and possibly the same size).
    async fn metadata(&self, meta: &ObjectMeta) -> Result<ArrowReaderMetadata, ColdError> {
        let key = (
            meta.location.to_string(),
            meta.size,
            meta.e_tag.clone().unwrap_or_default(),
        );
        if let Some(md) = self
            .footers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(md.clone());
        }
        let mut reader = RangeReader {
            store: Arc::clone(&self.store),
            path: meta.location.clone(),
            size: meta.size,
        };
        let md = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new())
            .await
            .map_err(|e| ColdError::Parquet {
                path: key.0.clone(),
                source: e.into(),
            })?;
        let mut cache = self.footers.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= FOOTER_CACHE {
            cache.clear();
        }
        cache.insert(key, md.clone());
        Ok(md)
    }

    /// Reads the rows of a file that `filter` wants, skipping row groups whose statistics rule
    /// them out (metric, series, time).
    ///
    /// With matchers the read has three passes, so only the rows of matching series are
    /// decoded: series ids and times (each series' rows are one run, the file being sorted by
    /// series), then the labels of the first row of each series not seen yet, then the
    /// value columns of the matching runs only (a row selection: whole pages of other series
    /// are skipped through the offset index). Without matchers one pass reads everything the
    /// filter keeps (compaction).
    pub fn read_file(
        &self,
        meta: &ObjectMeta,
        tier: Tier,
        filter: &RowFilter<'_>,
        out: &mut Decoded,
    ) -> Result<(), ColdError> {
        let path = meta.location.to_string();
        let perr = |e: ParquetError| ColdError::Parquet {
            path: path.clone(),
            source: e,
        };
        let pq = |e: parquet::errors::ParquetError| perr(e.into());
        self.rt.block_on(async {
            let md = self.metadata(meta).await?;
            let reader = RangeReader {
                store: Arc::clone(&self.store),
                path: meta.location.clone(),
                size: meta.size,
            };
            let builder =
                || ParquetRecordBatchStreamBuilder::new_with_metadata(reader.clone(), md.clone());
            let wanted = prune(&md, filter).map_err(perr)?;
            if wanted.is_empty() {
                return Ok(());
            }
            let arrow_schema = md.schema();
            let mask = |names: &[&str]| {
                let roots = names.iter().filter_map(|n| arrow_schema.index_of(n).ok());
                ProjectionMask::roots(md.parquet_schema(), roots)
            };
            let mut values: Vec<&str> = vec!["series_id", "ts"];
            match tier {
                Tier::Raw => values.push("value"),
                _ => values.extend([
                    "count", "sum", "min", "max", "first", "last", "increase", "first_ts",
                    "last_ts",
                ]),
            }
            let Some(matchers) = filter.matchers else {
                let mut names = values.clone();
                if filter.with_labels {
                    names.extend(["metric", "labels"]);
                }
                let mut stream = builder()
                    .with_row_groups(wanted)
                    .with_projection(mask(&names))
                    .build()
                    .map_err(pq)?;
                while let Some(batch) = stream.try_next().await.map_err(pq)? {
                    parquet_io::decode_batch(tier, &batch, &path, filter, out).map_err(perr)?;
                }
                return Ok(());
            };
            // 1: each series' run of rows within the time range.
            let mut runs: Vec<(u64, usize, usize)> = Vec::new();
            let mut total = 0usize;
            let mut stream = builder()
                .with_row_groups(wanted.clone())
                .with_projection(mask(&["series_id", "ts"]))
                .build()
                .map_err(pq)?;
            while let Some(batch) = stream.try_next().await.map_err(pq)? {
                let (ids, ts) = parquet_io::ids_and_times(&batch, &path).map_err(perr)?;
                for i in 0..batch.num_rows() {
                    let (id, t) = (ids.value(i), ts.value(i));
                    let row = total + i;
                    if t < filter.start || t > filter.end || !(filter.keep)(id) {
                        continue;
                    }
                    match runs.last_mut() {
                        Some(r) if r.0 == id && r.2 == row => r.2 = row + 1,
                        _ => runs.push((id, row, row + 1)),
                    }
                }
                total += batch.num_rows();
            }
            // 2: labels of the series not seen yet, from their first row.
            let mut unseen: Vec<(usize, usize)> = Vec::new();
            let mut asked = std::collections::HashSet::new();
            for r in &runs {
                if !out.matched.contains_key(&r.0) && asked.insert(r.0) {
                    unseen.push((r.1, r.1 + 1));
                }
            }
            if !unseen.is_empty() {
                let mut stream = builder()
                    .with_row_groups(wanted.clone())
                    .with_projection(mask(&["metric", "labels", "series_id"]))
                    .with_row_selection(selection(&unseen, total))
                    .build()
                    .map_err(pq)?;
                while let Some(batch) = stream.try_next().await.map_err(pq)? {
                    for (id, labels) in parquet_io::series_labels(&batch, &path).map_err(perr)? {
                        let ok = parquet_io::matches_all(matchers, &labels);
                        out.matched.insert(id, ok);
                        if ok {
                            out.labels.insert(id, labels);
                        }
                    }
                }
            }
            // 3: the matching runs' values.
            let take: Vec<(usize, usize)> = runs
                .iter()
                .filter(|r| out.matched.get(&r.0).copied().unwrap_or(false))
                .map(|r| (r.1, r.2))
                .collect();
            if take.is_empty() {
                return Ok(());
            }
            let mut stream = builder()
                .with_row_groups(wanted)
                .with_projection(mask(&values))
                .with_row_selection(selection(&take, total))
                .build()
                .map_err(pq)?;
            let plain = RowFilter {
                with_labels: false,
                matchers: None,
                ..*filter
            };
            while let Some(batch) = stream.try_next().await.map_err(pq)? {
                parquet_io::decode_batch(tier, &batch, &path, &plain, out).map_err(perr)?;
            }
            Ok(())
        })
    }
}

/// Footers kept by [`ColdStore`] (about 10 KB each).
const FOOTER_CACHE: usize = 4096;

/// A row selection of the sorted, disjoint row ranges `take` out of `total` rows.
fn selection(take: &[(usize, usize)], total: usize) -> RowSelection {
    let mut sel: Vec<RowSelector> = Vec::new();
    let mut at = 0;
    for &(a, b) in take {
        if a > at {
            sel.push(RowSelector::skip(a - at));
        }
        match sel.last_mut() {
            Some(last) if !last.skip && a == at => last.row_count += b - a,
            _ => sel.push(RowSelector::select(b - a)),
        }
        at = b;
    }
    if total > at {
        sel.push(RowSelector::skip(total - at));
    }
    sel.into()
}

/// The row groups whose statistics do not rule out the filter's metric, series and time.
fn prune(md: &ArrowReaderMetadata, filter: &RowFilter<'_>) -> Result<Vec<usize>, ParquetError> {
    use arrow::array::{Array, StringArray, TimestampMillisecondArray, UInt64Array};
    let groups = md.metadata().row_groups();
    let (arrow_schema, pschema) = (md.schema(), md.parquet_schema());
    let stats = |col: &str| -> Option<(arrow::array::ArrayRef, arrow::array::ArrayRef)> {
        let c = StatisticsConverter::try_new(col, arrow_schema, pschema).ok()?;
        Some((
            c.row_group_mins(groups.iter()).ok()?,
            c.row_group_maxes(groups.iter()).ok()?,
        ))
    };
    let typed = |p: Option<(arrow::array::ArrayRef, arrow::array::ArrayRef)>| {
        p.and_then(|(lo, hi)| {
            Some((
                lo.as_any().downcast_ref::<UInt64Array>()?.clone(),
                hi.as_any().downcast_ref::<UInt64Array>()?.clone(),
            ))
        })
    };
    let ts = stats("ts").and_then(|(lo, hi)| {
        Some((
            lo.as_any()
                .downcast_ref::<TimestampMillisecondArray>()?
                .clone(),
            hi.as_any()
                .downcast_ref::<TimestampMillisecondArray>()?
                .clone(),
        ))
    });
    let ids = typed(stats("series_id"));
    // Rows are sorted by metric first: a metric's rows sit in few row groups.
    let metric = filter.metric.and(stats("metric")).and_then(|(lo, hi)| {
        let s = |a: arrow::array::ArrayRef| {
            arrow::compute::cast(&a, &arrow::datatypes::DataType::Utf8)
                .ok()?
                .as_any()
                .downcast_ref::<StringArray>()
                .cloned()
        };
        Some((s(lo)?, s(hi)?))
    });
    let mut wanted = Vec::new();
    for i in 0..groups.len() {
        let time_ok = match &ts {
            Some((lo, hi)) if lo.is_valid(i) && hi.is_valid(i) => {
                lo.value(i) <= filter.end && hi.value(i) >= filter.start
            }
            _ => true,
        };
        let series_ok = match (&ids, filter.series_ids) {
            (Some((lo, hi)), Some(want)) if lo.is_valid(i) && hi.is_valid(i) => {
                let k = want.partition_point(|&x| x < lo.value(i));
                k < want.len() && want[k] <= hi.value(i)
            }
            _ => true,
        };
        let metric_ok = match (&metric, filter.metric) {
            (Some((lo, hi)), Some(m)) if lo.is_valid(i) && hi.is_valid(i) => {
                lo.value(i) <= m && m <= hi.value(i)
            }
            _ => true,
        };
        if time_ok && series_ok && metric_ok {
            wanted.push(i);
        }
    }
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_local_uploads_of_a_writer_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let cold = ColdStore::open(&url).unwrap();
        let store = cold.object_store();
        // A multipart upload with a part written and never completed, as a killed process
        // leaves it; a finished file of the same writer; another writer's unfinished upload.
        let mine = "tier=raw/date=2026-12-04/hour=18/part-up-w0-m.parquet";
        let other = "tier=raw/date=2026-12-04/hour=18/part-up-w1-m.parquet";
        let done = "tier=raw/date=2026-12-04/hour=17/part-up-w0-m.parquet";
        let mut uploads = Vec::new();
        cold.rt.block_on(async {
            for p in [mine, other] {
                let mut u = store.put_multipart(&Path::from(p)).await.unwrap();
                u.put_part(vec![7u8; 1024].into()).await.unwrap();
                uploads.push(u);
            }
            store
                .put(&Path::from(done), vec![1u8; 16].into())
                .await
                .unwrap();
        });
        let staged = |name: &str| -> Vec<std::path::PathBuf> {
            let d = dir.path().join(name).parent().unwrap().to_path_buf();
            std::fs::read_dir(d)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().contains(".parquet#"))
                .collect()
        };
        assert_eq!(staged(mine).len(), 2, "both uploads are staged on disk");
        assert_eq!(cold.remove_unfinished("tier=raw", "part-up-w0-"), 1);
        let left = staged(mine);
        assert_eq!(left.len(), 1);
        assert!(left[0].to_string_lossy().contains("part-up-w1-m.parquet#"));
        assert!(dir.path().join(done).exists());
        // Another tier's directory is not searched.
        assert_eq!(cold.remove_unfinished("tier=1m", "part-up-w1-"), 0);
        drop(uploads);
    }
}

//! The Parquet files of the cold tiers: Arrow schemas, encoding (sorted rows, column
//! encodings) and decoding with projection and row-group pruning.
//!
//! Columns (DESIGN.md section 6; `schemas/cold-*.schema.txt` are the golden copies):
//! `metric` (dictionary utf8), `labels` (map<utf8, utf8>, sorted, without `__name__`),
//! `series_id` (u64), `ts` (timestamp ms UTC; the window start for rollups, whose windows are
//! `(ts, ts + width]`); raw adds `value` (f64); rollups add `count` (u64), `sum`, `min`, `max`,
//! `first`, `last`, `increase` (f64), `first_ts`, `last_ts` (timestamp ms UTC: when the first
//! and last sample of the window were taken, which `rate` extrapolation needs).
//! Rows are sorted by (metric, series_id, ts). ZSTD; dictionaries for `metric`, `labels` and
//! `series_id`; delta encoding for the timestamps and `count`; plain floats; page-level statistics, so
//! engines (and Tidemark) skip row groups by series and time.
//!
//! Floats are PLAIN, not BYTE_STREAM_SPLIT as DESIGN.md suggests: on the fleet workload
//! (`cargo bench --bench cold`) ZSTD over plain little-endian doubles sorted by series gives
//! 2.15 bytes per raw value against 2.90 with byte-stream-split (and 3.22 with a dictionary),
//! and 17.0 against 21.2 bytes per 1-minute rollup row: zstd finds the repeated values and
//! byte patterns of one series that splitting the bytes apart hides.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, DictionaryArray, Float64Array, Int32Array, MapBuilder, MapFieldNames,
    RecordBatch, StringArray, StringBuilder, TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Fields, Int32Type, Schema, SchemaRef, TimeUnit};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use tidemark_dataflows::{Rollup, Sample};

use super::layout::Tier;
use crate::model::{Labels, METRIC_NAME};
use crate::store::hot::index::Matcher;

/// Rows per row group: large enough to compress well, small enough to prune by series.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

const ROLLUP_FIELDS: [&str; 6] = ["sum", "min", "max", "first", "last", "increase"];
const ROLLUP_TIMES: [&str; 2] = ["first_ts", "last_ts"];

fn labels_type() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", DataType::Utf8, false),
            ])),
            false,
        )),
        false,
    )
}

/// The Arrow schema of a tier's files.
pub fn schema(tier: Tier) -> SchemaRef {
    let mut fields = vec![
        Field::new(
            "metric",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            false,
        ),
        Field::new("labels", labels_type(), false),
        Field::new("series_id", DataType::UInt64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
    ];
    match tier {
        Tier::Raw => fields.push(Field::new("value", DataType::Float64, false)),
        Tier::Minute | Tier::Hour => {
            fields.push(Field::new("count", DataType::UInt64, false));
            for f in ROLLUP_FIELDS {
                fields.push(Field::new(f, DataType::Float64, false));
            }
            for f in ROLLUP_TIMES {
                fields.push(Field::new(
                    f,
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    false,
                ));
            }
        }
    }
    Arc::new(Schema::new(fields))
}

/// A human-readable rendering of a schema (the golden files in `schemas/`).
pub fn describe(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| {
            format!(
                "{}: {}{}\n",
                f.name(),
                f.data_type(),
                if f.is_nullable() { "" } else { " not null" }
            )
        })
        .collect()
}

/// Writer settings: the encodings named in the module documentation.
pub fn writer_properties(tier: Tier) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("level 3")))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_dictionary_enabled(true);
    let plain = |b: parquet::file::properties::WriterPropertiesBuilder, col: &str, enc| {
        b.set_column_dictionary_enabled(ColumnPath::from(col), false)
            .set_column_encoding(ColumnPath::from(col), enc)
    };
    b = plain(b, "ts", Encoding::DELTA_BINARY_PACKED);
    match tier {
        Tier::Raw => b = plain(b, "value", Encoding::PLAIN),
        Tier::Minute | Tier::Hour => {
            b = plain(b, "count", Encoding::DELTA_BINARY_PACKED);
            for f in ROLLUP_FIELDS {
                b = plain(b, f, Encoding::PLAIN);
            }
            for f in ROLLUP_TIMES {
                b = plain(b, f, Encoding::DELTA_BINARY_PACKED);
            }
        }
    }
    b.build()
}

/// Rows of one tier.
#[derive(Clone, Debug, PartialEq)]
pub enum Rows {
    Raw(Vec<Sample>),
    Rollups(Vec<Rollup>),
}

impl Rows {
    pub fn len(&self) -> usize {
        match self {
            Rows::Raw(r) => r.len(),
            Rows::Rollups(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A row that can be stored in a tier: its series and its time (sample time or window start).
pub trait ColdRow: Clone + Send + 'static {
    fn series(&self) -> u64;
    fn time(&self) -> i64;
    fn into_rows(rows: Vec<Self>) -> Rows;
    fn to_rows(rows: &[Self]) -> Rows {
        Self::into_rows(rows.to_vec())
    }
}

impl ColdRow for Sample {
    fn series(&self) -> u64 {
        self.series
    }
    fn time(&self) -> i64 {
        self.ts
    }
    fn into_rows(rows: Vec<Self>) -> Rows {
        Rows::Raw(rows)
    }
}

impl ColdRow for Rollup {
    fn series(&self) -> u64 {
        self.series
    }
    fn time(&self) -> i64 {
        self.start
    }
    fn into_rows(rows: Vec<Self>) -> Rows {
        Rows::Rollups(rows)
    }
}

/// Why rows cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ParquetError {
    #[error("series {0:016x} has no labels in the catalog (was it registered?)")]
    UnknownSeries(u64),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("{path}: column {column} is missing or has the wrong type")]
    Column { path: String, column: String },
}

/// The series of a file in file order (by metric name, then id), with their labels.
pub type SeriesOrder = Vec<(u64, Labels)>;

/// Sorts `rows` into file order (metric, series_id, time), keeping the last of rows with equal
/// series and time (the latest write); returns the series in that order.
pub fn sort_dedup<R: ColdRow>(
    rows: &mut Vec<R>,
    labels: &dyn Fn(u64) -> Option<Labels>,
) -> Result<SeriesOrder, ParquetError> {
    let mut ids: Vec<u64> = rows.iter().map(|r| r.series()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut order: SeriesOrder = Vec::with_capacity(ids.len());
    for id in ids {
        order.push((id, labels(id).ok_or(ParquetError::UnknownSeries(id))?));
    }
    order.sort_by(|a, b| {
        let (ma, mb) = (
            a.1.metric_name().unwrap_or(""),
            b.1.metric_name().unwrap_or(""),
        );
        ma.cmp(mb).then(a.0.cmp(&b.0))
    });
    let rank: crate::model::IdMap<u32> = order
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i as u32))
        .collect();
    // (rank, time, arrival): the arrival index keeps equal keys in write order.
    let mut keys: Vec<(u32, i64, u32)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (rank[&r.series()], r.time(), i as u32))
        .collect();
    keys.sort_unstable();
    let mut out: Vec<R> = Vec::with_capacity(rows.len());
    let mut last: Option<(u32, i64)> = None;
    for (r, t, i) in keys {
        let row = rows[i as usize].clone();
        if last == Some((r, t)) {
            *out.last_mut().expect("a previous row") = row;
        } else {
            out.push(row);
            last = Some((r, t));
        }
    }
    *rows = out;
    Ok(order)
}

/// One record batch of rows in file order (see [`sort_dedup`]) and their series. Labels and
/// metric names are built once per series and gathered per row.
pub fn to_batch(
    tier: Tier,
    rows: &Rows,
    order: &[(u64, Labels)],
) -> Result<RecordBatch, ParquetError> {
    let n = rows.len();
    // Per series: its metric's dictionary key and its label map entry.
    let mut metric_names: Vec<&str> = Vec::new();
    let mut metric_key: Vec<i32> = Vec::with_capacity(order.len());
    let mut labels = MapBuilder::new(
        Some(MapFieldNames {
            entry: "entries".into(),
            key: "keys".into(),
            value: "values".into(),
        }),
        StringBuilder::new(),
        StringBuilder::new(),
    )
    .with_values_field(Field::new("values", DataType::Utf8, false));
    for (_, l) in order {
        let m = l.metric_name().unwrap_or("");
        if metric_names.last() != Some(&m) {
            metric_names.push(m);
        }
        metric_key.push(metric_names.len() as i32 - 1);
        for (k, v) in l.iter().filter(|(k, _)| *k != METRIC_NAME) {
            labels.keys().append_value(k);
            labels.values().append_value(v);
        }
        labels.append(true)?;
    }
    let series_labels = labels.finish();
    // Row -> series position (rows are in series order).
    let mut pos: Vec<u32> = Vec::with_capacity(n);
    let mut series: Vec<u64> = Vec::with_capacity(n);
    let mut ts: Vec<i64> = Vec::with_capacity(n);
    let mut j = 0usize;
    let mut push = |id: u64, t: i64| -> Result<(), ParquetError> {
        while j < order.len() && order[j].0 != id {
            j += 1;
        }
        if j == order.len() {
            return Err(ParquetError::UnknownSeries(id));
        }
        pos.push(j as u32);
        series.push(id);
        ts.push(t);
        Ok(())
    };
    let mut tail: Vec<ArrayRef> = Vec::new();
    match rows {
        Rows::Raw(rs) => {
            for r in rs {
                push(r.series, r.ts)?;
            }
            tail.push(Arc::new(Float64Array::from_iter_values(
                rs.iter().map(|r| r.value),
            )));
        }
        Rows::Rollups(rs) => {
            for r in rs {
                push(r.series, r.start)?;
            }
            tail.push(Arc::new(UInt64Array::from_iter_values(
                rs.iter().map(|r| r.count),
            )));
            let fields: [fn(&Rollup) -> f64; 6] = [
                |r| r.sum,
                |r| r.min,
                |r| r.max,
                |r| r.first,
                |r| r.last,
                |r| r.increase,
            ];
            for f in fields {
                tail.push(Arc::new(Float64Array::from_iter_values(rs.iter().map(f))));
            }
            let times: [fn(&Rollup) -> i64; 2] = [|r| r.first_ts, |r| r.last_ts];
            for f in times {
                tail.push(Arc::new(
                    TimestampMillisecondArray::from_iter_values(rs.iter().map(f))
                        .with_timezone("UTC"),
                ));
            }
        }
    }
    let keys = Int32Array::from_iter_values(pos.iter().map(|&p| metric_key[p as usize]));
    let metric =
        DictionaryArray::<Int32Type>::try_new(keys, Arc::new(StringArray::from(metric_names)))?;
    let labels = arrow::compute::take(&series_labels, &UInt32Array::from(pos), None)?;
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(metric),
        labels,
        Arc::new(UInt64Array::from(series)),
        Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")),
    ];
    columns.extend(tail);
    Ok(RecordBatch::try_new(schema(tier), columns)?)
}

/// Rows read back from a file, with the labels of their series.
#[derive(Default)]
pub struct Decoded {
    pub samples: Vec<Sample>,
    pub rollups: Vec<Rollup>,
    pub labels: HashMap<u64, Labels>,
    /// Series the filter's matchers were evaluated on: whether they matched.
    pub matched: HashMap<u64, bool>,
}

fn column<'a, T: 'static>(
    batch: &'a RecordBatch,
    name: &str,
    path: &str,
) -> Result<&'a T, ParquetError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| ParquetError::Column {
            path: path.into(),
            column: name.into(),
        })
}

/// Which rows a read wants.
#[derive(Clone, Copy)]
pub struct RowFilter<'a> {
    /// Series to keep.
    pub keep: &'a (dyn Fn(u64) -> bool + Sync),
    /// The sorted ids `keep` accepts, when known: row groups without any are skipped.
    pub series_ids: Option<&'a [u64]>,
    /// Inclusive time range.
    pub start: i64,
    pub end: i64,
    /// Read `metric` and `labels` too.
    pub with_labels: bool,
    /// Keep only series whose labels match all of these (evaluated once per series, on the
    /// labels of its first row).
    pub matchers: Option<&'a [Matcher]>,
    /// The metric name the matchers require, when one: row groups whose `metric` statistics
    /// exclude it are skipped.
    pub metric: Option<&'a str>,
}

impl RowFilter<'_> {
    /// Everything.
    pub fn all() -> RowFilter<'static> {
        RowFilter {
            keep: &|_| true,
            series_ids: None,
            start: i64::MIN,
            end: i64::MAX,
            with_labels: true,
            matchers: None,
            metric: None,
        }
    }
}

/// The labels of row `i`: its metric name and its label map.
fn row_labels(metric: &StringArray, labels: &arrow::array::MapArray, i: usize) -> Labels {
    let entry = labels.value(i);
    let keys = entry.column(0).as_any().downcast_ref::<StringArray>();
    let vals = entry.column(1).as_any().downcast_ref::<StringArray>();
    let mut pairs = vec![(METRIC_NAME.to_string(), metric.value(i).to_string())];
    if let (Some(k), Some(v)) = (keys, vals) {
        for j in 0..k.len() {
            pairs.push((k.value(j).to_string(), v.value(j).to_string()));
        }
    }
    Labels::from_pairs(pairs)
}

/// The `series_id` and `ts` columns of a batch.
pub fn ids_and_times<'a>(
    batch: &'a RecordBatch,
    path: &str,
) -> Result<(&'a UInt64Array, &'a TimestampMillisecondArray), ParquetError> {
    Ok((
        column::<UInt64Array>(batch, "series_id", path)?,
        column::<TimestampMillisecondArray>(batch, "ts", path)?,
    ))
}

/// The series id and labels of every row of a batch with `series_id`, `metric` and `labels`.
pub fn series_labels(batch: &RecordBatch, path: &str) -> Result<Vec<(u64, Labels)>, ParquetError> {
    let ids = column::<UInt64Array>(batch, "series_id", path)?;
    let metric = metric_names(batch, path)?;
    let labels = column::<arrow::array::MapArray>(batch, "labels", path)?;
    Ok((0..batch.num_rows())
        .map(|i| (ids.value(i), row_labels(&metric, labels, i)))
        .collect())
}

/// The `metric` column as plain strings (it is dictionary-encoded in files).
fn metric_names(batch: &RecordBatch, path: &str) -> Result<StringArray, ParquetError> {
    let missing = || ParquetError::Column {
        path: path.into(),
        column: "metric".into(),
    };
    let metric = batch
        .column_by_name("metric")
        .map(|c| arrow::compute::cast(c, &DataType::Utf8))
        .transpose()?
        .ok_or_else(missing)?;
    metric
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(missing)
}

/// Whether `labels` match every matcher (an absent label is the empty string).
pub fn matches_all(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers
        .iter()
        .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
}

/// Appends the rows of `batch` (a tier file's full schema, or at least `series_id`, `ts`, the
/// value columns and, with labels, `metric` and `labels`) that `filter` wants by series and
/// time (matchers are applied by [`super::store::ColdStore::read_file`] before decoding).
pub fn decode_batch(
    tier: Tier,
    batch: &RecordBatch,
    path: &str,
    filter: &RowFilter<'_>,
    out: &mut Decoded,
) -> Result<(), ParquetError> {
    let (keep, start, end, with_labels) =
        (filter.keep, filter.start, filter.end, filter.with_labels);
    let series = column::<UInt64Array>(batch, "series_id", path)?;
    let ts = column::<TimestampMillisecondArray>(batch, "ts", path)?;
    let names = if with_labels {
        let labels = column::<arrow::array::MapArray>(batch, "labels", path)?;
        Some((metric_names(batch, path)?, labels))
    } else {
        None
    };
    let labels_of = |i: usize| {
        names
            .as_ref()
            .map_or_else(Labels::empty, |(m, l)| row_labels(m, l, i))
    };
    let mut take = Vec::new();
    for i in 0..batch.num_rows() {
        let (id, t) = (series.value(i), ts.value(i));
        if t < start || t > end || !keep(id) {
            continue;
        }
        if with_labels && !out.labels.contains_key(&id) {
            out.labels.insert(id, labels_of(i));
        }
        take.push(i);
    }
    match tier {
        Tier::Raw => {
            let value = column::<Float64Array>(batch, "value", path)?;
            out.samples.extend(take.iter().map(|&i| Sample {
                series: series.value(i),
                ts: ts.value(i),
                value: value.value(i),
            }));
        }
        Tier::Minute | Tier::Hour => {
            let count = column::<UInt64Array>(batch, "count", path)?;
            let mut f = Vec::new();
            for name in ROLLUP_FIELDS {
                f.push(column::<Float64Array>(batch, name, path)?);
            }
            let first_ts = column::<TimestampMillisecondArray>(batch, "first_ts", path)?;
            let last_ts = column::<TimestampMillisecondArray>(batch, "last_ts", path)?;
            let width = tier.resolution();
            out.rollups.extend(take.iter().map(|&i| Rollup {
                series: series.value(i),
                start: ts.value(i),
                width,
                count: count.value(i),
                sum: f[0].value(i),
                min: f[1].value(i),
                max: f[2].value(i),
                first: f[3].value(i),
                last: f[4].value(i),
                increase: f[5].value(i),
                first_ts: first_ts.value(i),
                last_ts: last_ts.value(i),
            }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_match_the_golden_files_in_schemas() {
        let raw = describe(&schema(Tier::Raw));
        let rollup = describe(&schema(Tier::Minute));
        assert_eq!(rollup, describe(&schema(Tier::Hour)));
        let golden = |f: &str| {
            std::fs::read_to_string(format!("{}/schemas/{f}", env!("CARGO_MANIFEST_DIR")))
                .unwrap_or_default()
        };
        if std::env::var_os("TIDEMARK_BLESS").is_some() {
            let dir = format!("{}/schemas", env!("CARGO_MANIFEST_DIR"));
            std::fs::write(format!("{dir}/cold-raw.schema.txt"), &raw).unwrap();
            std::fs::write(format!("{dir}/cold-rollup.schema.txt"), &rollup).unwrap();
        }
        assert_eq!(
            raw,
            golden("cold-raw.schema.txt"),
            "TIDEMARK_BLESS=1 rewrites it"
        );
        assert_eq!(
            rollup,
            golden("cold-rollup.schema.txt"),
            "TIDEMARK_BLESS=1 rewrites it"
        );
    }
}

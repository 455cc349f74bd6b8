//! Cold tiers on the fleet workload: Parquet bytes per raw sample (one hour of 10,000 series,
//! one partition file, as the tier writer writes it), bytes per 1-minute and 1-hour rollup
//! row, then write throughput (sort + Arrow + Parquet encode + put to `memory://`).

#[path = "fleet.rs"]
mod fleet;

use std::collections::HashMap;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tidemark::model::Labels;
use tidemark::store::cold::parquet_io::{sort_dedup, ColdRow};
use tidemark::store::cold::{ColdStore, Tier};
use tidemark_dataflows::{Rollup, Sample};

const START: i64 = 1_795_305_600_000; // an hour boundary

struct Fleet {
    samples: Vec<Sample>,
    minutes: Vec<Rollup>,
    hours: Vec<Rollup>,
    labels: HashMap<u64, Labels>,
}

fn fleet() -> Fleet {
    let hosts = fleet::hosts(2500);
    let series = fleet::series(2500, 360, START);
    let mut f = Fleet {
        samples: Vec::new(),
        minutes: Vec::new(),
        hours: Vec::new(),
        labels: HashMap::new(),
    };
    for (m, h, pts) in &series {
        let host = &hosts[*h];
        let l = Labels::from_pairs([
            ("__name__", fleet::METRICS[*m]),
            ("host", host.name.as_str()),
            ("region", host.region),
            ("env", host.env),
        ]);
        let id = l.series_id();
        f.labels.insert(id, l);
        f.samples.extend(pts.iter().map(|&(ts, value)| Sample {
            series: id,
            ts,
            value,
        }));
        // Windows are (start, start + 1 min]: group by the window each sample ends in.
        let minutes_before = f.minutes.len();
        for w in pts.chunk_by(|a, b| (a.0 - 1).div_euclid(60_000) == (b.0 - 1).div_euclid(60_000)) {
            let start = (w[0].0 - 1).div_euclid(60_000) * 60_000;
            f.minutes
                .push(Rollup::from_sorted(id, start, 60_000, w).expect("points"));
        }
        f.hours.push(
            Rollup::combine(id, START, 3_600_000, &f.minutes[minutes_before..]).expect("minutes"),
        );
    }
    f
}

fn write<R: ColdRow>(store: &ColdStore, tier: Tier, rows: &[R], f: &Fleet) -> u64 {
    let mut rows = rows.to_vec();
    let names = sort_dedup(&mut rows, &|id| f.labels.get(&id).cloned()).expect("labels");
    store
        .write_file(
            &format!("tier={}/bench.parquet", tier.name()),
            tier,
            &R::into_rows(rows),
            &names,
        )
        .expect("write")
}

/// Compressed bytes per column of a written file.
fn columns(store: &ColdStore, path: &str) -> String {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let bytes = store.get_bytes(path).unwrap().unwrap();
    let r = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
    let md = r.metadata();
    let mut sizes: Vec<(String, i64)> = Vec::new();
    for rg in md.row_groups() {
        for (i, c) in rg.columns().iter().enumerate() {
            if sizes.len() <= i {
                sizes.push((c.column_path().string(), 0));
            }
            sizes[i].1 += c.compressed_size();
        }
    }
    let rows = md.file_metadata().num_rows() as f64;
    sizes
        .iter()
        .map(|(n, s)| format!("{n} {:.3}", *s as f64 / rows))
        .collect::<Vec<_>>()
        .join(", ")
}

fn report(f: &Fleet) {
    let store = ColdStore::open("memory://").unwrap();
    let raw = write(&store, Tier::Raw, &f.samples, f);
    eprintln!(
        "raw bytes/sample by column: {}",
        columns(&store, "tier=raw/bench.parquet")
    );
    let m = write(&store, Tier::Minute, &f.minutes, f);
    let h = write(&store, Tier::Hour, &f.hours, f);
    eprintln!(
        "cold tiers, fleet workload (10,000 series, one hour at 10 s): raw {:.3} bytes/sample ({} samples, {} bytes); 1m {:.2} bytes/rollup ({} rows); 1h {:.2} bytes/rollup ({} rows, one per series: the labels dominate)",
        raw as f64 / f.samples.len() as f64,
        f.samples.len(),
        raw,
        m as f64 / f.minutes.len() as f64,
        f.minutes.len(),
        h as f64 / f.hours.len() as f64,
        f.hours.len()
    );
}

fn bench(c: &mut Criterion) {
    let f = fleet();
    report(&f);
    let store = ColdStore::open("memory://").unwrap();
    let mut g = c.benchmark_group("cold");
    g.sample_size(10);
    g.throughput(Throughput::Elements(f.samples.len() as u64));
    g.bench_function("write_raw_hour", |b| {
        b.iter(|| write(&store, Tier::Raw, &f.samples, &f))
    });
    g.throughput(Throughput::Elements(f.minutes.len() as u64));
    g.bench_function("write_1m_hour", |b| {
        b.iter(|| write(&store, Tier::Minute, &f.minutes, &f))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Cold `query_range` latency on the fleet workload (2,500 hosts x 4 metrics = 10,000 series):
//! 24 h at a 5 m step from the 1m tier (24 hourly partitions, 14.4 M rollup rows) and 30 d at a
//! 1 h step from the 1h tier (30 daily partitions, 7.2 M rows), on local files (`file://`), the
//! hot index empty so every row comes from Parquet. Per range: one metric over the whole fleet
//! (2,500 series, aggregated by region, as a dashboard panel) and one host's series.
//!
//! Rollups are generated directly (six fleet steps per minute; for the 1h tier six steps per
//! hour stand for its 360 samples), which is what the query path reads either way.

#[path = "fleet.rs"]
mod fleet;

use std::collections::HashMap;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use tidemark::model::Labels;
use tidemark::query::engine::Engine;
use tidemark::query::promqltest::MemStorage;
use tidemark::query::QueryValue;
use tidemark::store::cold::layout::{FileKind, DAY_MS, HOUR_MS};
use tidemark::store::cold::parquet_io::{sort_dedup, ColdRow};
use tidemark::store::cold::query::ColdReader;
use tidemark::store::cold::{ColdStore, Tier};
use tidemark::store::tiered::Tiered;
use tidemark_dataflows::Rollup;

const HOSTS: usize = 2500;
/// 2026-11-01T00:00:00Z.
const START: i64 = 1_793_491_200_000;

fn labels(hosts: &[fleet::Host]) -> (Vec<[u64; 4]>, HashMap<u64, Labels>) {
    let mut ids = Vec::new();
    let mut names = HashMap::new();
    for h in hosts {
        let mut row = [0; 4];
        for (m, id) in row.iter_mut().enumerate() {
            let l = Labels::from_pairs([
                ("__name__", fleet::METRICS[m]),
                ("host", h.name.as_str()),
                ("region", h.region),
                ("env", h.env),
            ]);
            *id = l.series_id();
            names.insert(*id, l);
        }
        ids.push(row);
    }
    (ids, names)
}

/// Rollups of `width` for every series over `[from, from + span)`, `steps` fleet steps each.
fn rollups(
    hosts: &mut [fleet::Host],
    ids: &[[u64; 4]],
    from: i64,
    span: i64,
    width: i64,
    steps: usize,
) -> Vec<Rollup> {
    let mut out = Vec::with_capacity(hosts.len() * 4 * (span / width) as usize);
    for (h, host) in hosts.iter_mut().enumerate() {
        let mut s = from;
        while s < from + span {
            let mut pts: [Vec<(i64, f64)>; 4] = Default::default();
            for k in 0..steps {
                let ts = s + (k as i64 + 1) * width / steps as i64;
                for (m, v) in host.step().into_iter().enumerate() {
                    pts[m].push((ts, v));
                }
            }
            for m in 0..4 {
                let mut r = Rollup::from_sorted(ids[h][m], s, width, &pts[m]).expect("points");
                r.count = (width / 10_000) as u64;
                out.push(r);
            }
            s += width;
        }
    }
    out
}

fn write(
    store: &ColdStore,
    tier: Tier,
    start: i64,
    mut rows: Vec<Rollup>,
    names: &HashMap<u64, Labels>,
) {
    let order = sort_dedup(&mut rows, &|id| names.get(&id).cloned()).expect("labels");
    let path = tier.partition(start).file("bench", 0, FileKind::Main);
    store
        .write_file(&path, tier, &Rollup::into_rows(rows), &order)
        .expect("write");
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ColdStore::open(&format!("file://{}", dir.path().display())).unwrap());
    let mut hosts = fleet::hosts(HOSTS);
    let (ids, names) = labels(&hosts);
    let t0 = std::time::Instant::now();
    // 30 days of 1h rollups ending where the 24 h of 1m rollups end.
    let end = START + 30 * DAY_MS;
    for d in 0..30 {
        let day = START + d * DAY_MS;
        let rows = rollups(&mut hosts, &ids, day, DAY_MS, HOUR_MS, 6);
        write(&store, Tier::Hour, day, rows, &names);
    }
    for h in 0..24 {
        let hour = end - DAY_MS + h * HOUR_MS;
        let rows = rollups(&mut hosts, &ids, hour, HOUR_MS, 60_000, 6);
        write(&store, Tier::Minute, hour, rows, &names);
    }
    let bytes: u64 = walk(dir.path());
    eprintln!(
        "cold query bench data: 30 x 1h partitions (7.2 M rows) + 24 x 1m partitions (14.4 M rows), {:.0} MB, written in {:.1} s",
        bytes as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    let reader = ColdReader::new(Arc::clone(&store));
    let hot = MemStorage::default();
    let run = |q: &str, from: i64, step: i64| -> usize {
        let tiered = Tiered::new(&hot, i64::MAX, &reader);
        let v = Engine::new(&tiered, from, end, step)
            .unwrap()
            .query(q, true)
            .unwrap();
        assert_eq!(tiered.error(), None);
        match v {
            QueryValue::Matrix(m) => m.iter().map(|s| s.samples.len()).sum(),
            _ => 0,
        }
    };
    let host = "host-00042";
    let cases = [
        (
            "24h_5m_fleet",
            "avg by (region) (avg_over_time(cpu_load[5m]))",
            end - DAY_MS,
            300_000,
        ),
        (
            "24h_5m_fleet_rate",
            "sum by (region) (rate(http_requests_total[5m]))",
            end - DAY_MS,
            300_000,
        ),
        (
            "24h_5m_one_host",
            &*format!("cpu_load{{host=\"{host}\"}}"),
            end - DAY_MS,
            300_000,
        ),
        (
            "30d_1h_fleet",
            "max by (region) (max_over_time(cpu_load[1h]))",
            START + HOUR_MS,
            HOUR_MS,
        ),
        (
            "30d_1h_one_host",
            &*format!("rate(http_requests_total{{host=\"{host}\"}}[1h])"),
            START + HOUR_MS,
            HOUR_MS,
        ),
    ];
    for (name, q, from, step) in &cases {
        let points = run(q, *from, *step);
        let rows = |i: usize| store.stats.query_rows[i].load(std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "{name}: {q} -> {points} points; rows read so far: 1m {} 1h {}",
            rows(1),
            rows(2)
        );
        assert!(points > 0, "{name}");
    }
    let mut g = c.benchmark_group("cold_query");
    g.sample_size(10);
    for (name, q, from, step) in &cases {
        g.bench_function(*name, |b| b.iter(|| run(q, *from, *step)));
    }
    g.finish();
}

fn walk(p: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let m = e.metadata().unwrap();
        n += if m.is_dir() { walk(&e.path()) } else { m.len() };
    }
    n
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Scraping on one core: one scrape of a 500-sample target (node_exporter-like exposition:
//! 50 families with HELP and TYPE, 10 series each) parsed, relabeled, checked for staleness
//! and appended to a validated `WriteBatch`, with the target's series cache warm (every scrape
//! after the first) and cold (the first); then the ring: owner lookups, and the fraction of
//! targets that move when a fourth collector joins a ring of three (printed).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::path::Path;
use tidemark::collect::config::ScrapeConfig;
use tidemark::collect::ring::{moved_fraction, Ring};
use tidemark::collect::scrape::{self, Body, Cache, TargetGroup};
use tidemark::ingest::BatchBuilder;
use tidemark::model::Limits;

/// A 500-sample exposition page.
fn page() -> String {
    let mut s = String::new();
    for f in 0..50 {
        let counter = f % 2 == 0;
        let name = if counter {
            format!("node_family{f}_seconds_total")
        } else {
            format!("node_family{f}_bytes")
        };
        s.push_str(&format!(
            "# HELP {name} Family {f} of the benchmark page.\n# TYPE {name} {}\n",
            if counter { "counter" } else { "gauge" }
        ));
        for i in 0..10 {
            s.push_str(&format!(
                "{name}{{device=\"dev{i}\",mode=\"m{}\"}} {}\n",
                i % 4,
                1_234_567.891 + (f * 10 + i) as f64
            ));
        }
    }
    s
}

fn scraping(c: &mut Criterion) {
    let cfg = ScrapeConfig::parse(
        Path::new("bench.yml"),
        "scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['10.0.0.1:9100']\n        labels: {pool: p1}\n    metric_relabel_configs:\n      - source_labels: [__name__]\n        regex: 'node_family49_.*'\n        action: drop\n",
    )
    .unwrap();
    let job = &cfg.jobs[0];
    let (targets, _) = scrape::targets_of(
        job,
        &[TargetGroup {
            targets: vec!["10.0.0.1:9100".into()],
            labels: [("pool".to_string(), "p1".to_string())].into(),
        }],
    );
    let target = &targets[0];
    let body = page();
    let limits = Limits::default();
    let one = |cache: &mut Cache, ts: i64| {
        let mut b = BatchBuilder::new(&limits);
        let rep = scrape::scrape_samples(
            job,
            target,
            Ok(Body {
                bytes: body.as_bytes(),
                openmetrics: false,
            }),
            ts,
            0.01,
            cache,
            &mut b,
        );
        assert!(rep.up, "{rep:?}");
        assert_eq!(rep.scraped, 500);
        b.finish()
    };
    let mut g = c.benchmark_group("scrape");
    g.throughput(Throughput::Elements(500));
    let mut warm = Cache::default();
    one(&mut warm, 0);
    let mut ts = 10_000;
    g.bench_function("500_samples_warm_cache", |b| {
        b.iter(|| {
            ts += 10_000;
            black_box(one(&mut warm, ts))
        })
    });
    g.bench_function("500_samples_first_scrape", |b| {
        b.iter(|| {
            let mut cold = Cache::default();
            black_box(one(&mut cold, 0))
        })
    });
    g.finish();

    let ids = |n: usize| -> Vec<String> { (0..n).map(|i| format!("collector-{i}")).collect() };
    let keys: Vec<u64> = (0..100_000u64)
        .map(|i| xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()))
        .collect();
    for n in [3usize, 9] {
        let (a, b) = (Ring::new(&ids(n), 128), Ring::new(&ids(n + 1), 128));
        let f = moved_fraction(&a, &b, keys.iter().copied());
        println!(
            "ring of {n} + 1 collector (128 virtual nodes each): {:.3} of 100,000 targets moved (ideal 1/{} = {:.3}, bound 1.5/{} = {:.3})",
            f,
            n + 1,
            1.0 / (n + 1) as f64,
            n + 1,
            1.5 / (n + 1) as f64
        );
    }
    let ring = Ring::new(&ids(4), 128);
    let mut g = c.benchmark_group("ring");
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("owner_of_100k_targets", |b| {
        b.iter(|| {
            keys.iter()
                .filter(|k| ring.owner(**k) == Some("collector-0"))
                .count()
        })
    });
    g.finish();
}

criterion_group!(benches, scraping);
criterion_main!(benches);

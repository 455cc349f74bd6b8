//! Parser throughput on one core: Influx line protocol (lines/s) and Prometheus text format
//! (samples/s), each on a 10,000-line batch of the fleet workload, parsed into a validated,
//! interned `WriteBatch`.

#[path = "fleet.rs"]
mod fleet;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use tidemark::ingest::{influx, promtext, BatchBuilder};
use tidemark::model::Limits;

fn parsers(c: &mut Criterion) {
    let limits = Limits::default();
    let lines = fleet::line_batches(2500, 2, 1_700_000_000_000)
        .pop()
        .unwrap();
    let prom = fleet::prom_batches(2500, 2, 1_700_000_000_000)
        .pop()
        .unwrap();
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("influx_line_protocol_10k_lines", |b| {
        b.iter(|| {
            let mut bb = BatchBuilder::new(&limits);
            influx::parse(black_box(&lines), influx::Precision::Ms, 0, &mut bb);
            assert_eq!(bb.sample_count(), 10_000);
            bb.finish()
        })
    });
    g.bench_function("prometheus_text_10k_samples", |b| {
        b.iter(|| {
            let mut bb = BatchBuilder::new(&limits);
            promtext::parse(black_box(&prom), 0, &mut bb);
            assert_eq!(bb.sample_count(), 10_000);
            bb.finish()
        })
    });
    g.finish();
}

criterion_group!(benches, parsers);
criterion_main!(benches);

//! Parser throughput on one core: Influx line protocol (lines/s) and Prometheus text format
//! (samples/s), each on a 10,000-line batch of the fleet workload, parsed into a validated,
//! interned `WriteBatch`; then the log record codec on that batch: bytes per sample of
//! versions 2 and 3 (printed), encode and decode throughput.

#[path = "fleet.rs"]
mod fleet;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use tidemark::ingest::{influx, promtext, BatchBuilder};
use tidemark::model::Limits;
use tidemark::transport::codec;

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

    let mut bb = BatchBuilder::new(&limits);
    influx::parse(&lines, influx::Precision::Ms, 0, &mut bb);
    let (batch, _, _) = bb.finish();
    let (mut v2, mut v3) = (Vec::new(), Vec::new());
    codec::encode_v2(&batch, &mut v2);
    codec::encode(&batch, &mut v3);
    let n = batch.samples.len() as f64;
    println!(
        "log record of {n} fleet samples: version 2 {:.2} bytes/sample, version 3 {:.2}",
        v2.len() as f64 / n,
        v3.len() as f64 / n
    );
    let mut g = c.benchmark_group("log_record");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("encode_v2", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            codec::encode_v2(black_box(&batch), &mut out);
            out
        })
    });
    g.bench_function("encode_v3", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            codec::encode(black_box(&batch), &mut out);
            out
        })
    });
    let mut ids = Vec::new();
    for (name, rec) in [("decode_v2", &v2), ("decode_v3", &v3)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let (mut series, mut samples) = (0usize, 0usize);
                codec::decode(
                    black_box(rec),
                    &mut ids,
                    |s| series += s.len(),
                    |_, _, _| samples += 1,
                )
                .unwrap();
                series + samples
            })
        });
    }
    g.finish();
}

criterion_group!(benches, parsers);
criterion_main!(benches);

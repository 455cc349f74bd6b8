//! The packed codec of rollup tails and the rules' sample runs (`tidemark_dataflows::packed`):
//! 10,000 fleet-like values written with `put_num` (short decimals such as load averages,
//! integer counters, and floats that are not short decimals, which try every exponent before
//! falling back to the XOR form), and read back with `get_num`.
//!
//! `cargo bench -p tidemark-dataflows --bench packed`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use tidemark_dataflows::packed::{get_num, put_num, Reader};

/// A third each: load averages (two decimals), counters (integers), ratios (not short
/// decimals: 1/3, 0.1 + 0.2 ...).
fn values() -> Vec<f64> {
    (0..10_000u32)
        .map(|i| match i % 3 {
            0 => f64::from(100 + (i * 37) % 400) / 100.0,
            1 => f64::from(i) * 1_024.0 + 123_456_789.0,
            _ => 1.0 / f64::from(3 + i % 97),
        })
        .collect()
}

fn packed(c: &mut Criterion) {
    let vs = values();
    let mut g = c.benchmark_group("packed");
    g.throughput(Throughput::Elements(vs.len() as u64));
    g.bench_function("put_num_10k_fleet_values", |b| {
        b.iter_batched_ref(
            || Vec::with_capacity(vs.len() * 9),
            |out| {
                let mut prev = 0u64;
                for &v in &vs {
                    put_num(out, &mut prev, black_box(v));
                }
            },
            BatchSize::SmallInput,
        )
    });
    let mut buf = Vec::new();
    let mut prev = 0u64;
    for &v in &vs {
        put_num(&mut buf, &mut prev, v);
    }
    g.bench_function("get_num_10k_fleet_values", |b| {
        b.iter(|| {
            let (mut r, mut prev, mut sum) = (Reader::new(black_box(&buf)), 0u64, 0.0);
            while let Some(v) = get_num(&mut r, &mut prev) {
                sum += v;
            }
            sum
        })
    });
    g.finish();
}

criterion_group!(benches, packed);
criterion_main!(benches);

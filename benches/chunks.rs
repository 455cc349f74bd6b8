//! Hot-index chunk encoding on the fleet workload: bytes per sample (timestamps and values) for
//! the adaptive codec and for plain Gorilla, then encode and decode throughput.

#[path = "fleet.rs"]
mod fleet;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use tidemark::store::hot::chunk::{Chunk, ValueCodec, CHUNK_SAMPLES};

fn chunks_of(series: &[fleet::SeriesPoints]) -> Vec<(usize, &[(i64, f64)])> {
    series
        .iter()
        .flat_map(|(m, _, pts)| pts.chunks(CHUNK_SAMPLES).map(move |c| (*m, c)))
        .collect()
}

fn report(series: &[fleet::SeriesPoints]) {
    let chunks = chunks_of(series);
    let mut rows = Vec::new();
    for codec in [None, Some(ValueCodec::Gorilla)] {
        let mut bytes = [0usize; 4];
        let mut samples = [0usize; 4];
        for (m, c) in &chunks {
            bytes[*m] += Chunk::encode_with(c, codec).size();
            samples[*m] += c.len();
        }
        let name = if codec.is_none() {
            "adaptive (Tidemark)"
        } else {
            "Gorilla XOR"
        };
        let per: Vec<String> = (0..4)
            .map(|m| {
                format!(
                    "{}: {:.3}",
                    fleet::METRICS[m],
                    bytes[m] as f64 / samples[m] as f64
                )
            })
            .collect();
        let total = bytes.iter().sum::<usize>() as f64 / samples.iter().sum::<usize>() as f64;
        rows.push(format!(
            "{name}: {total:.3} bytes/sample overall; {}",
            per.join(", ")
        ));
    }
    for r in rows {
        eprintln!(
            "chunk size, fleet workload (10,000 series x 360 points, 120-sample chunks): {r}"
        );
    }
}

fn codecs(c: &mut Criterion) {
    let series = fleet::series(2500, 360, 1_700_000_000_000);
    report(&series);
    let chunks = chunks_of(&series);
    let sample: Vec<&[(i64, f64)]> = chunks.iter().take(2000).map(|(_, c)| *c).collect();
    let n: usize = sample.iter().map(|c| c.len()).sum();
    let encoded: Vec<Chunk> = sample.iter().map(|c| Chunk::encode(c)).collect();
    let mut g = c.benchmark_group("chunks");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("encode_adaptive", |b| {
        b.iter(|| {
            sample
                .iter()
                .map(|c| Chunk::encode(black_box(c)).size())
                .sum::<usize>()
        })
    });
    g.bench_function("decode", |b| {
        let mut out = Vec::with_capacity(CHUNK_SAMPLES);
        b.iter(|| {
            let mut total = 0;
            for ch in &encoded {
                out.clear();
                ch.decode_into(&mut out);
                total += out.len();
            }
            black_box(total)
        })
    });
    g.finish();
}

criterion_group!(benches, codecs);
criterion_main!(benches);

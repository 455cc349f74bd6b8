//! Hot-index chunk encoding on the fleet workload: bytes per sample (timestamps and values) for
//! the adaptive codec and for plain Gorilla, then encode and decode throughput.

#[path = "fleet.rs"]
mod fleet;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use tidemark::store::hot::chunk::{Appender, Chunk, ValueCodec, CHUNK_SAMPLES};

fn chunks_of(series: &[fleet::SeriesPoints]) -> Vec<(usize, &[(i64, f64)])> {
    series
        .iter()
        .flat_map(|(m, _, pts)| pts.chunks(CHUNK_SAMPLES).map(move |c| (*m, c)))
        .collect()
}

/// Bytes per sample overall and per metric.
fn row(name: &str, bytes: &[usize; 4], samples: &[usize; 4]) -> String {
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
    format!(
        "{name}: {total:.3} bytes/sample overall; {}",
        per.join(", ")
    )
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
        rows.push(row(name, &bytes, &samples));
    }
    // The open head, compressed as appended (decimal mode where the values allow).
    let mut bytes = [0usize; 4];
    let mut samples = [0usize; 4];
    for (m, c) in &chunks {
        bytes[*m] += Appender::from_samples(c).size();
        samples[*m] += c.len();
    }
    rows.push(row("open head (Appender)", &bytes, &samples));
    for r in rows {
        eprintln!(
            "chunk size, fleet workload (10,000 series x 360 points, 120-sample chunks): {r}"
        );
    }
}

/// Bytes per 1-minute rollup in the hot index at steady state: 100 hosts x 26 h (the hot
/// retention), 1,560 windows per series: 13 sealed blocks and an open tail.
fn report_rollups() {
    use tidemark::store::hot::rollups::RollupSeries;
    use tidemark_dataflows::Rollup;
    let series = fleet::series(100, 9360, 1_700_000_020_000 - 1_700_000_020_000 % 60_000);
    let (mut bytes, mut n) = (0i64, 0usize);
    for (_, _, pts) in &series {
        let mut rs = RollupSeries::default();
        for w in pts.chunks(6) {
            let start = w[0].0 - w[0].0.rem_euclid(60_000);
            bytes += rs.upsert(Rollup::from_sorted(1, start, 60_000, w).unwrap(), None);
            n += 1;
        }
    }
    eprintln!(
        "rollups, fleet workload (400 series x 26 h of one-minute windows): {:.1} bytes/rollup in the hot index (sealed blocks of 120 plus the open tail; uncompressed: {})",
        bytes as f64 / n as f64,
        std::mem::size_of::<Rollup>()
    );
}

fn codecs(c: &mut Criterion) {
    let series = fleet::series(2500, 360, 1_700_000_000_000);
    report(&series);
    report_rollups();
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
    g.bench_function("append_head", |b| {
        b.iter(|| {
            sample
                .iter()
                .map(|c| Appender::from_samples(black_box(c)).size())
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

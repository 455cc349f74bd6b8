//! Rule evaluation cost: 1,000 alerting rules over 100,000 series in the hot index (1,000
//! pools x 100 hosts, `cpu_usage_percent` every 10 s), each rule `avg by (pool, host)
//! (cpu_usage_percent{pool="pN"}) > 90` with `for: 1m` (about 1 host in 100 over the
//! threshold). Measures the wall time to evaluate one tick (all 1,000 rules) and a 10-tick
//! catch-up batch, and reports the ingest rate the evaluation keeps up with: at one sample per
//! series per 10 s the fleet sends 10,000 samples/s, and evaluating 1 s of event time must take
//! under 1 s.
//!
//! The same rules maintained incrementally (`incremental_*`): 300 s of event time (31 points
//! per series, 3.1 M samples) pushed through the job's incremental operators on one timely
//! worker, with the evaluator reading the results at every 1 s tick (and, in the `_250ms_ticks`
//! variant, every 250 ms); the figure is the wall time for all of it, so samples/s sustained =
//! 3.1 M / time.
//!
//! `cargo bench --bench rules` (criterion); `cargo test --benches` runs it once as a test.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use tidemark::alert::eval::{MemorySink, RuleConfig, Rules, SeriesWriter};
use tidemark::model::Labels;
use tidemark::model::WriteBatch;
use tidemark::store::hot::HotIndex;
use tidemark_dataflows::Sample;

type LabelPairs = Vec<(String, String)>;

const POOLS: usize = 1_000;
const HOSTS: usize = 100;
const INTERVAL_MS: i64 = 10_000;

struct Discard;
impl SeriesWriter for Discard {
    fn write(&mut self, _: WriteBatch) -> Result<(), String> {
        Ok(())
    }
}

/// The fleet's series: `cpu_usage_percent{pool, host}`.
fn fleet_labels() -> Vec<Labels> {
    let mut out = Vec::with_capacity(POOLS * HOSTS);
    for p in 0..POOLS {
        for h in 0..HOSTS {
            out.push(Labels::from_pairs([
                ("__name__", "cpu_usage_percent".to_string()),
                ("pool", format!("p{p}")),
                ("host", format!("h{h}")),
            ]));
        }
    }
    out
}

fn fleet(points: i64) -> Arc<HotIndex> {
    let hot = Arc::new(HotIndex::new(26 * 3_600_000));
    let mut samples = Vec::with_capacity(POOLS * HOSTS);
    for l in fleet_labels() {
        let id = l.series_id();
        hot.catalog.register(id, l);
        samples.push(id);
    }
    for i in 0..points {
        let batch: Vec<Sample> = samples
            .iter()
            .enumerate()
            .map(|(k, &series)| Sample {
                series,
                ts: i * INTERVAL_MS,
                // One host in a hundred runs hot.
                value: if k % 100 == 7 {
                    95.0
                } else {
                    20.0 + (k % 50) as f64
                },
            })
            .collect();
        hot.append_samples(&batch);
    }
    hot
}

fn rules(dir: &std::path::Path, resolution_ms: u64) -> Arc<Rules> {
    let mut text = String::from("groups:\n");
    for g in 0..10 {
        text.push_str(&format!("- name: g{g}\n  rules:\n"));
        for r in 0..100 {
            let p = g * 100 + r;
            text.push_str(&format!(
                "  - alert: HighCpu{p}\n    expr: avg by (pool, host) (cpu_usage_percent{{pool=\"p{p}\"}}) > 90\n    for: 1m\n    annotations: {{summary: '{{{{ $labels.host }}}} at {{{{ $value }}}}'}}\n"
            ));
        }
    }
    let f = dir.join("bench-rules.yml");
    std::fs::write(&f, text).unwrap();
    let (r, errs) = Rules::open(RuleConfig {
        files: vec![f],
        state_dir: None,
        resolution_ms,
        ..Default::default()
    });
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(r.rule_count(), 1000);
    r
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let hot = fleet(31);
    let rules = rules(dir.path(), 1_000);
    let sink = MemorySink::default();
    // Ticks cycle through 300-550 s, where every series has samples within the lookback.
    let mut tick = 300_000u64;
    let mut next = move |n: u64| {
        tick = 300_000 + (tick - 300_000 + n * 1000) % 250_000;
        (0..n).map(|k| tick + k * 1000).collect::<Vec<u64>>()
    };
    let mut g = c.benchmark_group("rules_1000_over_100k_series");
    g.sample_size(10);
    g.bench_function("one_tick", |b| {
        b.iter(|| rules.evaluate(&*hot, &next(1), &mut Discard, &sink))
    });
    g.bench_function("ten_tick_batch", |b| {
        b.iter(|| rules.evaluate(&*hot, &next(10), &mut Discard, &sink))
    });
    g.finish();
    let firing = rules.api_alerts()["alerts"]
        .as_array()
        .map_or(0, |a| a.len());
    // (Nothing ran when a filter left these benchmarks out.)
    let ran = rules.evaluations.load(std::sync::atomic::Ordering::Relaxed) > 0;
    assert!(
        !ran || firing >= 1000,
        "one host per pool is over the threshold: {firing}"
    );
}

/// 300 s of event time through the incremental operators and the evaluator, with ticks every
/// `res` ms: (firing, ticks).
fn incremental_run(
    dir: &std::path::Path,
    labels: &Arc<Vec<(u64, LabelPairs)>>,
    res: u64,
) -> (usize, usize) {
    use std::collections::HashMap;
    use tidemark_dataflows::incremental::{leaf_values, rule_results, sink_results, Lookup};
    use tidemark_dataflows::rules::TickConfig;
    use timely::dataflow::operators::{Input, Probe};
    let rules = rules(dir, res);
    let (plans, store) = rules.incremental(1);
    assert_eq!(rules.incremental_count(), 1000);
    let empty = Arc::new(HotIndex::new(26 * 3_600_000));
    type Shared = tidemark_dataflows::incremental::SharedLabels;
    let by_id: Arc<HashMap<u64, Shared>> = Arc::new(
        labels
            .iter()
            .map(|(id, l)| (*id, Labels::from_pairs(l.iter().cloned()).shared()))
            .collect(),
    );
    let labels = Arc::clone(labels);
    let r = Arc::clone(&rules);
    let ticks = timely::execute_directly(move |worker| {
        let sink = MemorySink::default();
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, samples) = scope.new_input::<Vec<Sample>>();
            let lookup: Lookup = Arc::new(move |id| by_id.get(&id).cloned());
            let cfg = TickConfig {
                resolution: res,
                ..TickConfig::default()
            };
            let leaves = leaf_values(
                samples,
                Arc::clone(&plans),
                Arc::clone(&lookup),
                cfg,
                Some(0),
            );
            let results = rule_results(leaves, Arc::clone(&plans), lookup);
            (input, sink_results(results, Some(store)).probe().0)
        });
        let mut last = 0u64;
        let mut ticks = 0;
        for i in 0..31i64 {
            let ts = i * INTERVAL_MS;
            if ts as u64 > *input.time() {
                input.advance_to(ts as u64);
            }
            for (k, (series, _)) in labels.iter().enumerate() {
                let value = if k % 100 == 7 {
                    95.0
                } else {
                    20.0 + (k % 50) as f64
                };
                input.send(Sample {
                    series: *series,
                    ts,
                    value,
                });
            }
            input.advance_to(ts as u64 + 1);
            worker.step_while(|| probe.less_than(&(ts as u64 + 1)));
            let due: Vec<u64> = ((last / res + 1)..=(ts as u64 / res))
                .map(|s| s * res)
                .collect();
            if let Some(&l) = due.last() {
                ticks += due.len();
                r.evaluate(&*empty, &due, &mut Discard, &sink);
                last = l;
            }
        }
        ticks
    });
    let firing = rules.api_alerts()["alerts"]
        .as_array()
        .map_or(0, |a| a.len());
    (firing, ticks)
}

fn incremental(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let labels: Vec<(u64, LabelPairs)> = fleet_labels()
        .into_iter()
        .map(|l| (l.series_id(), l.into_pairs()))
        .collect();
    let labels = Arc::new(labels);
    let mut g = c.benchmark_group("rules_1000_over_100k_series");
    g.sample_size(10);
    // The default 1 s ticks, and 250 ms ticks (a quarter of the tick alignment in the alert
    // latency, four times the evaluations).
    for (name, res) in [
        ("incremental_300s_of_event_time_3_1M_samples", 1_000),
        (
            "incremental_300s_of_event_time_3_1M_samples_250ms_ticks",
            250,
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let (firing, ticks) = incremental_run(dir.path(), &labels, res);
                // `for: 1m` from 0 s: every hot host fires by 300 s.
                assert!(
                    firing >= 1000,
                    "one host per pool is over the threshold: {firing}"
                );
                assert_eq!(ticks as u64, 300_000 / res);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench, incremental);
criterion_main!(benches);

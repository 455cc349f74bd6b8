//! The windows against an oracle that recomputes from scratch, on random inputs with disorder,
//! late and very late samples, at 1 and at 3 workers (as differential's `reduce_reference`).

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tidemark_dataflows::source::{watermark_source, BatchSource, Poll, WatermarkConfig};
use tidemark_dataflows::window::{rollup_rollups, tumbling_rollups};
use tidemark_dataflows::{LateStats, Rollup, Sample};
use timely::dataflow::operators::capture::{Capture, Event};

const OOO: i64 = 5_000;
const LATENESS: i64 = 90_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Records (batches) as a log would hold them.
fn records(seed: u64) -> Vec<Vec<Sample>> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    let mut clock = 1_000_000i64;
    for _ in 0..120 {
        let mut rec = Vec::new();
        for _ in 0..(1 + rng.below(12)) {
            let lag = match rng.below(20) {
                0 => 60_000 + rng.below(200_000) as i64, // late, often too late
                1..=3 => rng.below(30_000) as i64,       // a little late
                _ => rng.below(4_000) as i64,            // within the bound
            };
            let ts = (clock - lag).max(0);
            rec.push(Sample {
                series: rng.below(5),
                ts,
                value: rng.below(1000) as f64,
            });
        }
        clock += rng.below(9_000) as i64;
        out.push(rec);
    }
    out
}

struct Script {
    records: Arc<Vec<Vec<Sample>>>,
    next: usize,
    index: usize,
    peers: usize,
}

impl BatchSource for Script {
    fn poll(&mut self) -> Poll {
        let Some(rec) = self.records.get(self.next) else {
            return Poll::Done;
        };
        let mine = self.next % self.peers == self.index;
        self.next += 1;
        let max_ts = rec.iter().map(|s| s.ts).max().unwrap_or(0);
        Poll::Ready {
            max_ts,
            samples: if mine { rec.clone() } else { Vec::new() },
        }
    }
}

type Key = (u64, i64);

fn oracle(records: &[Vec<Sample>], width: i64) -> (BTreeMap<Key, Rollup>, LateStats) {
    let mut wm = 0i64;
    let mut kept: BTreeMap<Key, BTreeMap<i64, f64>> = BTreeMap::new();
    let mut stats = LateStats::default();
    for rec in records {
        for s in rec {
            let minute_end = s.ts.div_euclid(60_000) * 60_000 + 60_000;
            if wm >= minute_end + LATENESS {
                stats.dropped += 1;
                continue;
            }
            if s.ts < wm {
                stats.accepted += 1;
            }
            kept.entry((s.series, s.ts.div_euclid(width) * width))
                .or_default()
                .insert(s.ts, s.value);
        }
        let max = rec.iter().map(|s| s.ts).max().unwrap_or(0);
        wm = wm.max(max - OOO);
    }
    let rollups = kept
        .into_iter()
        .map(|((series, start), pts)| {
            let pts: Vec<(i64, f64)> = pts.into_iter().collect();
            (
                (series, start),
                Rollup::from_sorted(series, start, width, &pts).unwrap(),
            )
        })
        .collect();
    (rollups, stats)
}

fn run(
    records: Vec<Vec<Sample>>,
    workers: usize,
) -> (BTreeMap<Key, Rollup>, BTreeMap<Key, Rollup>, LateStats) {
    let records = Arc::new(records);
    let (tx_m, rx_m) = mpsc::channel();
    let (tx_h, rx_h) = mpsc::channel();
    let (tx_l, rx_l) = mpsc::channel();
    let senders = Arc::new(Mutex::new((tx_m, tx_h, tx_l)));
    timely::execute(timely::Config::process(workers), move |worker| {
        let (tx_m, tx_h, tx_l) = senders.lock().unwrap().clone();
        let records = Arc::clone(&records);
        worker.dataflow::<u64, _, _>(move |scope| {
            let cfg = WatermarkConfig {
                out_of_orderness_ms: OOO as u64,
                records_per_activation: 3,
            };
            let samples = watermark_source(scope, "Script", cfg, move |index, peers| Script {
                records,
                next: 0,
                index,
                peers,
            });
            let (minutes, late) = tumbling_rollups(samples, 60_000, LATENESS);
            let (hours, _) = rollup_rollups(minutes.clone(), 3_600_000, LATENESS);
            minutes.capture_into(tx_m);
            hours.capture_into(tx_h);
            late.capture_into(tx_l);
        });
    })
    .unwrap();
    let upserts = |rx: mpsc::Receiver<Event<u64, Vec<Rollup>>>| {
        let mut m = BTreeMap::new();
        for e in rx.try_iter() {
            if let Event::Messages(_, rs) = e {
                for r in rs {
                    m.insert((r.series, r.start), r);
                }
            }
        }
        m
    };
    let mut stats = LateStats::default();
    for e in rx_l.try_iter() {
        if let Event::Messages(_, ls) = e {
            for l in ls {
                stats.accepted += l.accepted;
                stats.dropped += l.dropped;
            }
        }
    }
    (upserts(rx_m), upserts(rx_h), stats)
}

fn close(a: &Rollup, b: &Rollup) -> bool {
    let f = |x: f64, y: f64| (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0);
    a.count == b.count
        && f(a.sum, b.sum)
        && f(a.min, b.min)
        && f(a.max, b.max)
        && f(a.first, b.first)
        && f(a.last, b.last)
        && f(a.increase, b.increase)
}

#[test]
fn rollups_match_the_oracle_at_any_worker_count() {
    for seed in [1u64, 7, 42, 1234, 99_991] {
        let recs = records(seed);
        let (want_m, want_stats) = oracle(&recs, 60_000);
        let (want_h, _) = oracle(&recs, 3_600_000);
        assert!(
            want_stats.dropped > 0 && want_stats.accepted > 0,
            "seed {seed} exercises both paths"
        );
        for workers in [1, 3] {
            let (got_m, got_h, stats) = run(recs.clone(), workers);
            assert_eq!(stats, want_stats, "seed {seed}, {workers} workers");
            assert_eq!(
                got_m.keys().collect::<Vec<_>>(),
                want_m.keys().collect::<Vec<_>>(),
                "seed {seed}, {workers} workers"
            );
            for (k, w) in &want_m {
                assert!(
                    close(&got_m[k], w),
                    "seed {seed}, {workers} workers, minute {k:?}: {:?} vs {w:?}",
                    got_m[k]
                );
            }
            // Hours are combined from the minutes that were kept; compare with the oracle at 1 h.
            assert_eq!(got_h.len(), want_h.len(), "seed {seed}, {workers} workers");
            for (k, w) in &want_h {
                assert!(
                    close(&got_h[k], w),
                    "seed {seed}, {workers} workers, hour {k:?}: {:?} vs {w:?}",
                    got_h[k]
                );
            }
        }
    }
}

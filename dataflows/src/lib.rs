//! Tidemark's timely-dataflow operators: pure, free of network I/O, each doc-tested under
//! `timely::example`.
//!
//! Timely time is event time in milliseconds. A source holds its capability at its watermark
//! (max event time seen minus the out-of-orderness bound) and sends every record at that
//! capability with its true event time inside, so **the timely frontier is the watermark**.
//! Window operators place samples by event time and close windows by the frontier, never by a
//! clock.
//!
//! | module | owns |
//! |---|---|
//! | [`types`] | `Sample`, `Rollup`, `LateStats` |
//! | [`source`] | [`source::watermark_source`]: a pull-based source adapter that turns event times into frontiers, starting at a watermark and moving it on by one at a checkpoint cut |
//! | [`partitioned`] | [`partitioned::partitioned_source`]: per-partition watermarks with idle partitions (Kafka), plus the series definitions the storing process needs |
//! | [`window`] | [`window::tumbling_rollups`] (raw to 1m) and [`window::rollup_rollups`] (1m to 1h), with allowed lateness and corrections; [`window::windows_seeded`] (state restored after a restart) |
//! | [`stored`] | windows whose state is the store: [`stored::sample_rollups_stored`] (raw to 1m with the raw sink inside, read back when a window closes) and [`stored::rollups_from_store`] (1m to 1h reading the minutes back from the sink's store) |
//! | [`sink`] | [`sink::HotSink`] and the operators that apply raw samples and rollups to it |
//! | [`rules`] | [`rules::evaluate_at_ticks`]: rule evaluation at event-time ticks of the sinks' frontier; [`rules::AlertMachine`]: pending/firing/resolved with `for` and `keep_firing_for` |
//! | [`incremental`] | rules kept up to date from the sample stream: [`incremental::leaf_values`] (per-series windows), [`incremental::rule_results`] (aggregations per group member, differential `join` for vector matching), [`incremental::sink_results`] |
//! | [`memory`] | bytes of operator state by component, for `tidemark_memory_bytes` |
//! | [`tier`] | [`tier::sink_tier`]: cold-tier writers sealing partitions on the frontier, holding a capability until their data is durable |

pub mod incremental;
pub mod memory;
pub mod packed;
pub mod partitioned;
pub mod rules;
pub mod sink;
pub mod source;
pub mod stored;
pub mod tier;
pub mod types;
pub mod window;

pub use types::{LateStats, Rollup, Sample};

/// Drains a captured stream (from `Capture::capture`) into `(time, record)` pairs, for tests and
/// doc-tests of streams whose records are not `Ord` (timely's `extract` needs `Ord`).
pub fn captured<T: Clone + Ord + timely::order::TotalOrder, D>(
    rx: std::sync::mpsc::Receiver<timely::dataflow::operators::capture::Event<T, Vec<D>>>,
) -> Vec<(T, D)> {
    use timely::dataflow::operators::capture::Event;
    rx.try_iter()
        .filter_map(|e| match e {
            Event::Messages(t, d) => Some((t.least().cloned()?, d)),
            Event::Progress(_) => None,
        })
        .flat_map(|(t, d): (T, Vec<D>)| d.into_iter().map(move |x| (t.clone(), x)))
        .collect::<Vec<_>>()
}

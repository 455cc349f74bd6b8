//! Bytes the operators' state holds, by component, for `/metrics`
//! (`tidemark_memory_bytes{component="..."}`). Operators add and subtract as their state grows
//! and shrinks; the figures are estimates from lengths and capacities (hash-table slots
//! included), summed over every worker and job of the process.

use std::sync::atomic::{AtomicI64, Ordering};

/// A component whose state the operators account for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// Open 1-minute windows (raw samples per series and window).
    Windows1m,
    /// Open 1-hour windows (folded and still-correctable 1-minute rollups per series).
    Windows1h,
    /// Incremental rule state: per-series windows of the rules' selectors.
    Rules,
    /// Cold-tier writers: the series sets of open partitions and buffered late corrections.
    ColdWriters,
}

static GAUGES: [AtomicI64; 4] = [
    AtomicI64::new(0),
    AtomicI64::new(0),
    AtomicI64::new(0),
    AtomicI64::new(0),
];

impl Component {
    /// Every component, in `/metrics` order.
    pub const ALL: [Component; 4] = [
        Component::Windows1m,
        Component::Windows1h,
        Component::Rules,
        Component::ColdWriters,
    ];

    /// The `component` label value.
    pub fn name(self) -> &'static str {
        match self {
            Component::Windows1m => "windows_1m",
            Component::Windows1h => "windows_1h",
            Component::Rules => "rules",
            Component::ColdWriters => "cold_writers",
        }
    }

    /// Adds `delta` bytes (negative when state shrinks).
    pub fn add(self, delta: i64) {
        if delta != 0 {
            GAUGES[self as usize].fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// Bytes held now.
    pub fn bytes(self) -> i64 {
        GAUGES[self as usize].load(Ordering::Relaxed)
    }
}

/// Estimated bytes of a hash-table entry of `entry` bytes: the slot at hashbrown's 7/8 load
/// plus its control byte.
pub fn hash_slot(entry: usize) -> i64 {
    ((entry + 1) * 8 / 7) as i64
}

/// What one piece of state reported to a component; dropping it takes the bytes back (an
/// operator's state goes with its dataflow).
#[derive(Debug)]
pub struct Reported {
    component: Component,
    bytes: i64,
}

impl Reported {
    /// Nothing reported yet.
    pub fn new(component: Component) -> Self {
        Reported {
            component,
            bytes: 0,
        }
    }

    /// The state holds `bytes` now.
    pub fn set(&mut self, bytes: i64) {
        self.component.add(bytes - self.bytes);
        self.bytes = bytes;
    }
}

impl Drop for Reported {
    fn drop(&mut self) {
        self.component.add(-self.bytes);
    }
}

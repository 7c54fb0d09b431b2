//! What both benchmarks report the same way: the machine and percentiles.

use std::time::Duration;

use serde_json::{Value, json};

/// Cores and memory of this machine, reported with every result.
pub fn machine() -> Value {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    json!({"cores": cores, "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0})
}

/// The `p` quantile (0..=1) of sorted latencies, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

//! The process's own figures, read from Linux's `/proc/self` at each scrape:
//! `agentgate_process_cpu_seconds_total` and `agentgate_process_resident_memory_bytes`
//! (elsewhere both stay at 0).

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The process's CPU time and resident memory, read from `/proc/self` at each scrape.
#[derive(Debug, Default)]
pub(super) struct ProcessMetrics {
    cpu: Counter<f64, AtomicU64>,
    resident: Gauge,
    /// CPU seconds already counted, so the counter only moves forward.
    counted: Mutex<f64>,
}

impl ProcessMetrics {
    /// Creates the process metrics and registers them in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let process = Self::default();
        registry.register(
            "process_cpu_seconds",
            "User and system CPU time of the gateway process (Linux /proc/self/stat)",
            process.cpu.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the gateway process (Linux /proc/self/status VmRSS)",
            process.resident.clone(),
        );
        process
    }

    /// Reads `/proc/self` into the metrics.
    pub(super) fn refresh(&self) {
        if let Some(seconds) = cpu_seconds() {
            let mut counted = self.counted.lock().unwrap_or_else(|e| e.into_inner());
            if seconds > *counted {
                self.cpu.inc_by(seconds - *counted);
                *counted = seconds;
            }
        }
        if let Some(bytes) = resident_bytes() {
            self.resident.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }
}

/// utime + stime of this process, in seconds (fields 14 and 15 of `/proc/self/stat`, in
/// clock ticks of 1/100 s, the fixed USER_HZ of Linux's proc interface).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces; fields are counted after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// VmRSS of this process, in bytes.
pub(super) fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

//! The run's result: hdrhistogram percentiles per measurement, throughput, errors by kind,
//! and the scenario's thresholds checked against them; printed as a table or written as JSON.
//!
//! Latencies are recorded in microseconds (1 µs to 1 hour, 3 significant digits) and
//! reported in milliseconds.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::record::{Collected, Metric, Sample};
use super::run::Outcome;
use super::scenario::Scenario;

/// Highest latency a histogram tracks, in microseconds (one hour); larger values saturate.
const MAX_MICROS: u64 = 3_600_000_000;

/// The summary of a run (the `--json` document).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The gateway that was loaded.
    pub target: String,
    /// Seconds from the first arrival to the end of the last session.
    pub duration_secs: f64,
    /// Whether the scenario's `max_duration_secs` cut the run short.
    pub hit_deadline: bool,
    /// Session counts.
    pub sessions: SessionCounts,
    /// HTTP requests made (init, stream, append, tools, complete).
    pub requests: u64,
    /// Event counts.
    pub events: EventCounts,
    /// What the stream readers went through.
    pub viewers: ViewerCounts,
    /// Rates over the whole run.
    pub throughput: Throughput,
    /// Percentiles of each measurement, in milliseconds, keyed by [`Metric::name`].
    pub latency_ms: BTreeMap<&'static str, Percentiles>,
    /// Error counts by kind (one per failed call; one per lost, duplicated or out-of-order
    /// event; `not_started` for sessions the deadline kept from starting).
    pub errors: BTreeMap<String, u64>,
    /// Share of planned sessions that failed or never started.
    pub error_rate: f64,
    /// Every threshold of the scenario, checked.
    pub thresholds: Vec<ThresholdCheck>,
    /// True when no threshold was breached.
    pub passed: bool,
}

/// How many sessions did what.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SessionCounts {
    /// `run.sessions` of the scenario.
    pub planned: u64,
    /// Sessions started before the deadline.
    pub started: u64,
    /// Sessions that ended without any error.
    pub succeeded: u64,
    /// Sessions with at least one error, or cut by the deadline.
    pub failed: u64,
    /// Planned sessions never started (the deadline came first).
    pub not_started: u64,
    /// Most sessions in flight at once.
    pub peak_concurrent: u64,
}

/// How many events went through.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct EventCounts {
    /// Events sent in append calls, acknowledged or not.
    pub written: u64,
    /// Events appended and acknowledged by the gateway.
    pub appended: u64,
    /// Distinct acknowledged events received by the stream readers.
    pub delivered: u64,
    /// `gap` events received: the gateway telling a reader that events were trimmed
    /// (`store.events_maxlen`) before it read them.
    pub gaps: u64,
    /// Acknowledged events inside those gaps: missed and told, not counted as `event_lost`.
    pub told_missing: u64,
}

/// What the stream readers went through (`session.resume`, `session.stalled_viewers`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ViewerCounts {
    /// Stream readers: `session.viewers` per session started.
    pub streams: u64,
    /// Streams re-established after one was lost.
    pub reconnects: u64,
    /// Reconnect attempts that failed and were tried again.
    pub reconnect_failures: u64,
    /// The longest any non-stalled viewer waited between two events (reconnects included),
    /// in milliseconds.
    pub longest_wait_ms: f64,
}

/// Rates over the whole run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Throughput {
    /// Sessions finished (either way) per second.
    pub sessions_per_sec: f64,
    /// Events delivered to stream readers per second.
    pub events_per_sec: f64,
    /// HTTP requests per second.
    pub requests_per_sec: f64,
}

/// Percentiles of one measurement, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of `samples` (microseconds), with `sigfig` significant digits.
    pub fn of(samples: &[Sample], sigfig: u8) -> Self {
        let Some(histogram) = histogram(samples, sigfig) else {
            return Self::default();
        };
        let ms = |us: u64| round3(us as f64 / 1000.0);
        Self {
            count: histogram.len(),
            mean: round3(histogram.mean() / 1000.0),
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        }
    }
}

/// A histogram of `samples`, `None` when there are none.
fn histogram(samples: &[Sample], sigfig: u8) -> Option<Histogram<u64>> {
    if samples.is_empty() {
        return None;
    }
    let mut h = Histogram::<u64>::new_with_bounds(1, MAX_MICROS, sigfig).ok()?;
    for s in samples {
        h.saturating_record(s.micros.max(1));
    }
    Some(h)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One threshold of the scenario, checked.
#[derive(Debug, Clone, Serialize)]
pub struct ThresholdCheck {
    /// Its key in `[thresholds]`.
    pub name: &'static str,
    /// The limit.
    pub limit: f64,
    /// The measured value; `None` when nothing was measured.
    pub value: Option<f64>,
    /// Whether the value is within the limit.
    pub passed: bool,
}

impl Report {
    /// Aggregates a run.
    pub fn new(target: &str, scenario: &Scenario, outcome: &Outcome, c: &Collected) -> Self {
        let planned = scenario.run.sessions;
        let not_started = planned.saturating_sub(outcome.started);
        let mut errors = c.errors.clone();
        if not_started > 0 {
            errors.insert("not_started".to_owned(), not_started);
        }
        let latency_ms: BTreeMap<_, _> = Metric::ALL
            .iter()
            .map(|m| (m.name(), Percentiles::of(c.samples(*m), 3)))
            .collect();
        let error_rate = (c.failed + not_started) as f64 / planned.max(1) as f64;
        let secs = outcome.elapsed.as_secs_f64().max(1e-9);
        let thresholds: Vec<ThresholdCheck> = scenario
            .thresholds
            .limits()
            .into_iter()
            .map(|(name, limit)| {
                let value = match threshold_metric(name) {
                    Some(metric) => {
                        let p = latency_ms.get(metric.name()).copied().unwrap_or_default();
                        (p.count > 0).then_some(p.p99)
                    }
                    None => Some(error_rate),
                };
                ThresholdCheck {
                    name,
                    limit,
                    value,
                    passed: value.is_some_and(|v| v <= limit),
                }
            })
            .collect();
        Self {
            target: target.to_owned(),
            duration_secs: round3(outcome.elapsed.as_secs_f64()),
            hit_deadline: outcome.hit_deadline,
            sessions: SessionCounts {
                planned,
                started: outcome.started,
                succeeded: c.succeeded,
                failed: c.failed,
                not_started,
                peak_concurrent: c.peak_in_flight,
            },
            requests: c.requests,
            events: EventCounts {
                written: c.written,
                appended: c.appended,
                delivered: c.delivered,
                gaps: c.gaps,
                told_missing: c.told_missing,
            },
            viewers: ViewerCounts {
                streams: outcome.started * scenario.session.viewers,
                reconnects: c.reconnects,
                reconnect_failures: c.reconnect_failures,
                longest_wait_ms: round3(c.longest_wait.as_secs_f64() * 1000.0),
            },
            throughput: Throughput {
                sessions_per_sec: round3((c.succeeded + c.failed) as f64 / secs),
                events_per_sec: round3(c.delivered as f64 / secs),
                requests_per_sec: round3(c.requests as f64 / secs),
            },
            latency_ms,
            errors,
            error_rate: (error_rate * 1e6).round() / 1e6,
            passed: thresholds.iter().all(|t| t.passed),
            thresholds,
        }
    }

    /// The thresholds that were breached.
    pub fn breached(&self) -> impl Iterator<Item = &ThresholdCheck> {
        self.thresholds.iter().filter(|t| !t.passed)
    }
}

/// The measurement a `p99_*` threshold limits; `None` for `max_error_rate`.
fn threshold_metric(name: &str) -> Option<Metric> {
    Some(match name {
        "p99_init_ms" => Metric::Init,
        "p99_sse_connect_ms" => Metric::SseConnect,
        "p99_append_ms" => Metric::Append,
        "p99_delivery_ms" => Metric::Delivery,
        "p99_tool_ms" => Metric::ToolBatch,
        "p99_complete_ms" => Metric::Complete,
        "p99_session_ms" => Metric::Session,
        _ => return None,
    })
}

/// The human-readable table.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.sessions;
        writeln!(
            f,
            "agentgate loadtest against {}: {} of {} sessions started (at most {} at once), {} succeeded, {} failed, in {:.2} s{}",
            self.target,
            s.started,
            s.planned,
            s.peak_concurrent,
            s.succeeded,
            s.failed,
            self.duration_secs,
            if self.hit_deadline {
                " (stopped by max_duration_secs)"
            } else {
                ""
            },
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<20} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "latency (ms)", "count", "mean", "p50", "p90", "p99", "max"
        )?;
        for metric in Metric::ALL {
            let Some(p) = self.latency_ms.get(metric.name()) else {
                continue;
            };
            if p.count == 0 {
                writeln!(f, "{:<20} {:>9} {:>10}", metric.label(), 0, "-")?;
                continue;
            }
            writeln!(
                f,
                "{:<20} {:>9} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
                metric.label(),
                p.count,
                p.mean,
                p.p50,
                p.p90,
                p.p99,
                p.max
            )?;
        }
        writeln!(f)?;
        let t = &self.throughput;
        writeln!(
            f,
            "throughput: {:.1} sessions/s, {:.1} events/s delivered, {:.1} requests/s ({} requests)",
            t.sessions_per_sec, t.events_per_sec, t.requests_per_sec, self.requests
        )?;
        let e = &self.events;
        write!(
            f,
            "events: {} written, {} appended (acknowledged), {} delivered",
            e.written, e.appended, e.delivered
        )?;
        if e.gaps > 0 {
            write!(
                f,
                ", {} missed and told in {} gaps (trimmed by store.events_maxlen)",
                e.told_missing, e.gaps
            )?;
        }
        writeln!(f)?;
        let v = &self.viewers;
        writeln!(
            f,
            "viewers: {} reconnects ({} failed attempts), longest wait between two events {:.1} ms",
            v.reconnects, v.reconnect_failures, v.longest_wait_ms
        )?;
        if self.errors.is_empty() {
            writeln!(f, "errors: none")?;
        } else {
            let mut line = String::new();
            for (kind, n) in &self.errors {
                let hint = match kind.as_str() {
                    "tools_status_404" | "tools_status_501" => {
                        " (no tools endpoint on the target?)"
                    }
                    "tools_status_400" => " (tool not declared on the target?)",
                    _ => "",
                };
                let _ = write!(line, "\n  {kind}: {n}{hint}");
            }
            writeln!(
                f,
                "errors (error rate {:.2}%):{line}",
                self.error_rate * 100.0
            )?;
        }
        if !self.thresholds.is_empty() {
            writeln!(f, "thresholds:")?;
            for t in &self.thresholds {
                let value = t
                    .value
                    .map_or_else(|| "no samples".to_owned(), |v| format!("{v}"));
                writeln!(
                    f,
                    "  {:<20} limit {:<10} measured {:<12} {}",
                    t.name,
                    t.limit,
                    value,
                    if t.passed { "ok" } else { "BREACHED" }
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_milliseconds() {
        let samples: Vec<Sample> = (1..=100)
            .map(|i| Sample {
                at_ms: 0,
                micros: i * 1000,
            })
            .collect();
        let p = Percentiles::of(&samples, 3);
        assert_eq!(p.count, 100);
        assert!(p.p50 >= 50.0 && p.p50 <= 50.1, "{p:?}");
        assert!(p.p99 >= 99.0 && p.p99 <= 99.1, "{p:?}");
        assert!(p.max >= 100.0 && p.max <= 100.1, "{p:?}");
        assert_eq!(Percentiles::of(&[], 3).count, 0);
    }
}

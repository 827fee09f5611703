//! What a run measures, as it happens: latency samples with the time they were taken, error
//! counts by kind, and live counters for the progress bar.
//!
//! Each session collects into its own [`SessionLog`] and hands it to the shared
//! [`Recorder`] once, when it ends, so sessions never contend on a lock per sample.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// A measured latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// `POST /v2/sessions`: request sent to response head received.
    Init,
    /// Stream request sent to its `retry:` frame received (the stream is registered then).
    SseConnect,
    /// One append call, request to response head.
    Append,
    /// An event's append request sent to the event received by the session's stream reader.
    Delivery,
    /// One tool batch call, request to response head (the batch has run by then).
    ToolBatch,
    /// The complete call, request to response head.
    Complete,
    /// A whole session without errors: init sent to `complete` received on its stream.
    Session,
}

impl Metric {
    /// Every metric, in report order.
    pub const ALL: [Metric; 7] = [
        Self::Init,
        Self::SseConnect,
        Self::Append,
        Self::Delivery,
        Self::ToolBatch,
        Self::Complete,
        Self::Session,
    ];

    /// Machine name: the JSON key, the plot file name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Init => "init_ttfb",
            Self::SseConnect => "sse_connect",
            Self::Append => "append",
            Self::Delivery => "delivery",
            Self::ToolBatch => "tool_batch",
            Self::Complete => "complete",
            Self::Session => "session",
        }
    }

    /// Human label for the table and charts.
    pub fn label(self) -> &'static str {
        match self {
            Self::Init => "init (first byte)",
            Self::SseConnect => "SSE connect",
            Self::Append => "append call",
            Self::Delivery => "delivery",
            Self::ToolBatch => "tool batch",
            Self::Complete => "complete call",
            Self::Session => "session end-to-end",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One latency sample: when it was taken (ms since the run started) and its value (µs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Milliseconds from the start of the run to the end of the measured interval.
    pub at_ms: u64,
    /// The latency in microseconds.
    pub micros: u64,
}

/// What one session (or its stream reader) measured.
#[derive(Debug)]
pub struct SessionLog {
    epoch: Instant,
    samples: Vec<(Metric, Sample)>,
    errors: BTreeMap<String, u64>,
    /// Events the agent sent in append calls, acknowledged or not.
    pub written: u64,
    /// Events the agent appended and the gateway acknowledged.
    pub appended: u64,
    /// Distinct events the stream reader received.
    pub delivered: u64,
    /// `gap` events the stream reader got (events trimmed before it read them, told).
    pub gaps: u64,
    /// Acknowledged events inside those gaps: missed, and told so (not `event_lost`).
    pub told_missing: u64,
    /// HTTP requests made.
    pub requests: u64,
    /// Streams a viewer re-established after losing one (`session.resume`).
    pub reconnects: u64,
    /// Reconnect attempts that failed (refused, an error status, no `retry:` frame) and were
    /// tried again.
    pub reconnect_failures: u64,
    /// The longest a (non-stalled) viewer waited between two events, reconnects included.
    pub longest_wait: Duration,
}

impl SessionLog {
    /// An empty log for a run that started at `epoch`.
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            samples: Vec::new(),
            errors: BTreeMap::new(),
            written: 0,
            appended: 0,
            delivered: 0,
            gaps: 0,
            told_missing: 0,
            requests: 0,
            reconnects: 0,
            reconnect_failures: 0,
            longest_wait: Duration::ZERO,
        }
    }

    /// Records `value` for `metric`, measured up to `now`.
    pub fn sample(&mut self, metric: Metric, now: Instant, value: Duration) {
        let at_ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.samples.push((metric, Sample { at_ms, micros }));
    }

    /// Takes in the log of the replay reader (`session.resume`: one more reader from the
    /// start of the log once everything is over): its errors, named `replay_<kind>`
    /// (`replay_event_lost`: acknowledged and no longer in the log), and its requests; its
    /// samples and counts would double the live viewers' figures.
    pub fn absorb_replay(&mut self, replay: SessionLog) {
        for (kind, n) in replay.errors {
            self.error(format!("replay_{kind}"), n);
        }
        self.requests += replay.requests;
    }

    /// Counts `n` errors of `kind`.
    pub fn error(&mut self, kind: impl Into<String>, n: u64) {
        if n > 0 {
            *self.errors.entry(kind.into()).or_default() += n;
        }
    }

    /// True when nothing went wrong.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }

    /// Adds `other`'s samples, errors and counts to this log.
    pub fn absorb(&mut self, other: SessionLog) {
        self.samples.extend(other.samples);
        for (kind, n) in other.errors {
            self.error(kind, n);
        }
        self.written += other.written;
        self.appended += other.appended;
        self.delivered += other.delivered;
        self.gaps += other.gaps;
        self.told_missing += other.told_missing;
        self.requests += other.requests;
        self.reconnects += other.reconnects;
        self.reconnect_failures += other.reconnect_failures;
        self.longest_wait = self.longest_wait.max(other.longest_wait);
    }
}

/// Everything a run recorded.
#[derive(Debug, Default, Clone)]
pub struct Collected {
    /// Samples per metric, indexed by [`Metric::ALL`] order.
    pub samples: [Vec<Sample>; Metric::ALL.len()],
    /// Error counts by kind.
    pub errors: BTreeMap<String, u64>,
    /// Sessions that ended without any error.
    pub succeeded: u64,
    /// Sessions that ended with at least one error (or were cut by the deadline).
    pub failed: u64,
    /// Events sent in append calls, acknowledged or not.
    pub written: u64,
    /// Events appended and acknowledged.
    pub appended: u64,
    /// Distinct events received by stream readers.
    pub delivered: u64,
    /// `gap` events received by stream readers.
    pub gaps: u64,
    /// Acknowledged events the readers missed and were told of (inside gaps).
    pub told_missing: u64,
    /// HTTP requests made.
    pub requests: u64,
    /// Most sessions in flight at once.
    pub peak_in_flight: u64,
    /// Streams re-established by viewers (`session.resume`).
    pub reconnects: u64,
    /// Reconnect attempts that failed and were tried again.
    pub reconnect_failures: u64,
    /// The longest any non-stalled viewer waited between two events.
    pub longest_wait: Duration,
}

impl Collected {
    /// The samples of `metric`.
    pub fn samples(&self, metric: Metric) -> &[Sample] {
        &self.samples[metric.index()]
    }
}

/// The shared sink of a run's session logs, with lock-free counters for progress display.
#[derive(Debug, Default)]
pub struct Recorder {
    collected: Mutex<Collected>,
    finished: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
}

impl Recorder {
    /// Counts a session starting.
    pub fn start_session(&self) {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::Relaxed);
    }

    /// Takes in a finished session's log.
    pub fn finish_session(&self, log: SessionLog) {
        let clean = log.is_clean();
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.finished.fetch_add(1, Ordering::Relaxed);
        if !clean {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        // A poisoned lock only means another session panicked mid-merge; keep counting.
        let mut c = self.collected.lock().unwrap_or_else(|p| p.into_inner());
        if clean {
            c.succeeded += 1;
        } else {
            c.failed += 1;
        }
        for (metric, sample) in log.samples {
            c.samples[metric.index()].push(sample);
        }
        for (kind, n) in log.errors {
            *c.errors.entry(kind).or_default() += n;
        }
        c.written += log.written;
        c.appended += log.appended;
        c.delivered += log.delivered;
        c.gaps += log.gaps;
        c.told_missing += log.told_missing;
        c.requests += log.requests;
        c.reconnects += log.reconnects;
        c.reconnect_failures += log.reconnect_failures;
        c.longest_wait = c.longest_wait.max(log.longest_wait);
    }

    /// Counts a session that ended without its log (cut by the run's deadline).
    pub fn session_cut(&self, kind: &str) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.finished.fetch_add(1, Ordering::Relaxed);
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut c = self.collected.lock().unwrap_or_else(|p| p.into_inner());
        c.failed += 1;
        *c.errors.entry(kind.to_owned()).or_default() += 1;
    }

    /// Sessions finished so far, and how many of them failed.
    pub fn progress(&self) -> (u64, u64) {
        (
            self.finished.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// Everything recorded.
    pub fn into_collected(self) -> Collected {
        let mut collected = self
            .collected
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        collected.peak_in_flight = self.peak_in_flight.into_inner();
        collected
    }
}

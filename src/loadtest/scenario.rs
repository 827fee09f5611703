//! The scenario file: what load to offer and which limits the run must stay within.
//!
//! TOML with four tables, every key documented in `bench/scenarios/smoke.toml`:
//!
//! ```toml
//! [run]          # sessions = 20, concurrency = 20, max_duration_secs = 120, request_timeout_ms
//! [arrival]      # rate_per_sec = 50, or ramp_from_per_sec / ramp_to_per_sec / ramp_secs
//! [session]      # events, batch_size, event_bytes, think_time_ms, tool_batches, tool_calls, tool
//! [thresholds]   # p99_init_ms, p99_delivery_ms, ..., max_error_rate
//! ```
//!
//! Unknown keys are errors, and every error names its key and where it is:
//! `FILE:LINE:COLUMN: run.concurency: unknown field ...`. Syntax and type errors come from
//! `toml`'s spans; the key at the span is found with a span-keeping `toml_edit` parse of the
//! same text; range checks (`Scenario::validate`) are located the same way by key path.

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml_edit::{Document, Item, TableLike};

/// A whole scenario.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// How many sessions, how many at once, and the bounds of the run.
    #[serde(default)]
    pub run: RunSettings,
    /// When sessions start.
    #[serde(default)]
    pub arrival: Arrival,
    /// What each session does.
    #[serde(default)]
    pub session: SessionPlan,
    /// Limits the run must stay within; breaching one makes `agentgate loadtest` exit 3.
    #[serde(default)]
    pub thresholds: Thresholds,
}

/// `[run]`: counts and hard bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSettings {
    /// Sessions started in total. 1 to 1,000,000. Default 10.
    pub sessions: u64,
    /// Most sessions in flight at once; an arrival waits for a free slot. 1 to 100,000.
    /// Default 10.
    pub concurrency: u64,
    /// Hard bound on the whole run in seconds: no session starts after it, and sessions still
    /// running then are cut and counted as `deadline` errors. 1 to 3600. Default 120.
    pub max_duration_secs: u64,
    /// Deadline of one HTTP request (head and body), and of the wait for a stream's
    /// `complete` event once the agent has completed. 1 to 600000. Default 10000.
    pub request_timeout_ms: u64,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self {
            sessions: 10,
            concurrency: 10,
            max_duration_secs: 120,
            request_timeout_ms: 10_000,
        }
    }
}

impl RunSettings {
    /// [`max_duration_secs`](Self::max_duration_secs) as a duration.
    pub fn max_duration(&self) -> Duration {
        Duration::from_secs(self.max_duration_secs)
    }

    /// [`request_timeout_ms`](Self::request_timeout_ms) as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// `[arrival]`: session starts per second, constant or ramped. Nothing set: every session
/// starts as soon as a concurrency slot is free.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arrival {
    /// Constant rate: sessions started per second. Not with the ramp keys.
    pub rate_per_sec: Option<f64>,
    /// Ramp: the rate at the start, per second (may be 0).
    pub ramp_from_per_sec: Option<f64>,
    /// Ramp: the rate reached after `ramp_secs` and kept from then on (more than 0).
    pub ramp_to_per_sec: Option<f64>,
    /// Ramp: seconds over which the rate goes linearly from `ramp_from_per_sec` to
    /// `ramp_to_per_sec` (more than 0).
    pub ramp_secs: Option<f64>,
}

/// `[session]`: what each session does, acting as its agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionPlan {
    /// Events appended per session. 0 to 100,000. Default 10.
    pub events: u64,
    /// Events per append call (the last call may carry fewer). 1 to 1000. Default 5.
    pub batch_size: u64,
    /// Bytes of padding in each event's data, on top of its sequence number and send time.
    /// At most 65536. Default 32.
    pub event_bytes: usize,
    /// Pause before each agent call (append, tool batch, complete), in milliseconds.
    /// At most 60000. Default 0.
    pub think_time_ms: u64,
    /// Tool batches run per session, after the appends. 0 (default) runs none.
    pub tool_batches: u64,
    /// Calls per tool batch. 1 to 1000. Default 2.
    pub tool_calls: u64,
    /// Tool every call names; its input is `{"text": ..}` (the gateway's built-in `sha256`
    /// takes that). Default "sha256".
    pub tool: String,
    /// Stream readers per session, each on its own connection, each checked for exactly-once
    /// delivery. 1 to 100. Default 1.
    pub viewers: u64,
    /// Of those, how many stop reading for `stall_ms` after their first event, holding their
    /// connection open (a stalled browser tab), then read on. Their delivery latencies and
    /// waits are left out of the figures; their exactly-once check is not. 0 to `viewers`.
    /// Default 0.
    pub stalled_viewers: u64,
    /// How long a stalled viewer stops reading, in milliseconds. At most 600000. Default
    /// 60000.
    pub stall_ms: u64,
    /// Ride out faults, as a browser and a careful agent would: a viewer whose stream ends or
    /// fails before `complete` reconnects the way `EventSource` does (after the stream's
    /// `retry:` delay, with `Last-Event-ID`) until it gets `complete`; the agent goes on after
    /// a failed append (its events count as written, not acknowledged) and retries a failed
    /// complete. Off (default): the first failure ends the session as failed.
    pub resume: bool,
    /// With `resume`: retry a failed append (no answer, a timeout, a `5xx`) with the same
    /// `Idempotency-Key` and body until it is acknowledged, instead of going on without it:
    /// every event written is then acknowledged once. Default false.
    pub retry_appends: bool,
    /// A stalled viewer closes its connection for the stall (a browser tab put to sleep)
    /// and reconnects after it with `Last-Event-ID`, instead of holding it open unread.
    /// Default false.
    pub stall_offline: bool,
}

impl Default for SessionPlan {
    fn default() -> Self {
        Self {
            events: 10,
            batch_size: 5,
            event_bytes: 32,
            think_time_ms: 0,
            tool_batches: 0,
            tool_calls: 2,
            tool: "sha256".to_owned(),
            viewers: 1,
            stalled_viewers: 0,
            stall_ms: 60_000,
            resume: false,
            retry_appends: false,
            stall_offline: false,
        }
    }
}

impl SessionPlan {
    /// [`think_time_ms`](Self::think_time_ms) as a duration.
    pub fn think_time(&self) -> Duration {
        Duration::from_millis(self.think_time_ms)
    }

    /// [`stall_ms`](Self::stall_ms) as a duration.
    pub fn stall(&self) -> Duration {
        Duration::from_millis(self.stall_ms)
    }
}

/// `[thresholds]`: each set key is a limit checked after the run. A latency limit on a
/// measurement that got no sample at all counts as breached (nothing proves it was met).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Highest p99 of init time to first byte, in milliseconds.
    pub p99_init_ms: Option<f64>,
    /// Highest p99 of SSE connection establishment (request to the `retry:` frame), ms.
    pub p99_sse_connect_ms: Option<f64>,
    /// Highest p99 of an append call, ms.
    pub p99_append_ms: Option<f64>,
    /// Highest p99 of delivery latency (append sent to event received on the stream), ms.
    pub p99_delivery_ms: Option<f64>,
    /// Highest p99 of a tool batch call, ms.
    pub p99_tool_ms: Option<f64>,
    /// Highest p99 of the complete call, ms.
    pub p99_complete_ms: Option<f64>,
    /// Highest p99 of a whole session (init to `complete` received), ms.
    pub p99_session_ms: Option<f64>,
    /// Highest share of planned sessions that failed or never started, 0.0 to 1.0.
    pub max_error_rate: Option<f64>,
}

impl Thresholds {
    /// The set limits as `(key, limit)`, in file order.
    pub fn limits(&self) -> Vec<(&'static str, f64)> {
        [
            ("p99_init_ms", self.p99_init_ms),
            ("p99_sse_connect_ms", self.p99_sse_connect_ms),
            ("p99_append_ms", self.p99_append_ms),
            ("p99_delivery_ms", self.p99_delivery_ms),
            ("p99_tool_ms", self.p99_tool_ms),
            ("p99_complete_ms", self.p99_complete_ms),
            ("p99_session_ms", self.p99_session_ms),
            ("max_error_rate", self.max_error_rate),
        ]
        .into_iter()
        .filter_map(|(key, limit)| limit.map(|l| (key, l)))
        .collect()
    }
}

/// A scenario error, located in the file when possible.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioError {
    /// Dotted key, e.g. `run.concurrency`.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// 1-based line.
    pub line: Option<usize>,
    /// 1-based column, in characters.
    pub column: Option<usize>,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, "{line}:{column}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ScenarioError {}

/// A key that failed a range check.
struct Invalid {
    key: String,
    message: String,
}

impl Scenario {
    /// Reads and validates a scenario file. Errors are prefixed with nothing: print them as
    /// `FILE:{error}`.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            key: None,
            message: format!("cannot read: {e}"),
            line: None,
            column: None,
        })?;
        Self::from_toml_str(&text)
    }

    /// Parses and validates scenario TOML.
    pub fn from_toml_str(text: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| {
            let source = Source::parse(text);
            let position = e.span().map(|span| source.line_column(span.start));
            ScenarioError {
                key: e.span().and_then(|span| source.key_at(span.start)),
                message: e.message().trim_end().to_owned(),
                line: position.map(|p| p.0),
                column: position.map(|p| p.1),
            }
        })?;
        scenario.validate().map_err(|invalid| {
            let position = Source::parse(text).position_of(&invalid.key);
            ScenarioError {
                key: Some(invalid.key),
                message: invalid.message,
                line: position.map(|p| p.0),
                column: position.map(|p| p.1),
            }
        })?;
        Ok(scenario)
    }

    /// Range and consistency checks, naming the first offending key.
    fn validate(&self) -> Result<(), Invalid> {
        fn check(ok: bool, key: &str, message: &str) -> Result<(), Invalid> {
            if ok {
                Ok(())
            } else {
                Err(Invalid {
                    key: key.to_owned(),
                    message: message.to_owned(),
                })
            }
        }
        let run = &self.run;
        check(
            (1..=1_000_000).contains(&run.sessions),
            "run.sessions",
            "must be 1 to 1000000",
        )?;
        check(
            (1..=100_000).contains(&run.concurrency),
            "run.concurrency",
            "must be 1 to 100000",
        )?;
        check(
            (1..=3600).contains(&run.max_duration_secs),
            "run.max_duration_secs",
            "must be 1 to 3600",
        )?;
        check(
            (1..=600_000).contains(&run.request_timeout_ms),
            "run.request_timeout_ms",
            "must be 1 to 600000",
        )?;

        let a = &self.arrival;
        let ramp =
            a.ramp_from_per_sec.is_some() || a.ramp_to_per_sec.is_some() || a.ramp_secs.is_some();
        if let Some(rate) = a.rate_per_sec {
            check(
                !ramp,
                "arrival.rate_per_sec",
                "set either rate_per_sec or the ramp_* keys, not both",
            )?;
            check(
                rate.is_finite() && rate > 0.0,
                "arrival.rate_per_sec",
                "must be more than 0",
            )?;
        }
        if ramp {
            let (Some(from), Some(to), Some(secs)) =
                (a.ramp_from_per_sec, a.ramp_to_per_sec, a.ramp_secs)
            else {
                return Err(Invalid {
                    key: "arrival".to_owned(),
                    message: "a ramp needs ramp_from_per_sec, ramp_to_per_sec and ramp_secs"
                        .to_owned(),
                });
            };
            check(
                from.is_finite() && from >= 0.0,
                "arrival.ramp_from_per_sec",
                "must be 0 or more",
            )?;
            check(
                to.is_finite() && to > 0.0,
                "arrival.ramp_to_per_sec",
                "must be more than 0",
            )?;
            check(
                secs.is_finite() && secs > 0.0,
                "arrival.ramp_secs",
                "must be more than 0",
            )?;
        }

        let s = &self.session;
        check(
            s.events <= 100_000,
            "session.events",
            "must be at most 100000",
        )?;
        check(
            (1..=1000).contains(&s.batch_size),
            "session.batch_size",
            "must be 1 to 1000 (the gateway's largest batch)",
        )?;
        check(
            s.event_bytes <= 65_536,
            "session.event_bytes",
            "must be at most 65536",
        )?;
        check(
            s.think_time_ms <= 60_000,
            "session.think_time_ms",
            "must be at most 60000",
        )?;
        check(
            s.tool_batches <= 1000,
            "session.tool_batches",
            "must be at most 1000",
        )?;
        check(
            (1..=1000).contains(&s.tool_calls),
            "session.tool_calls",
            "must be 1 to 1000",
        )?;
        check(!s.tool.is_empty(), "session.tool", "must not be empty")?;
        check(
            (1..=100).contains(&s.viewers),
            "session.viewers",
            "must be 1 to 100",
        )?;
        check(
            s.stalled_viewers <= s.viewers,
            "session.stalled_viewers",
            "must be at most session.viewers",
        )?;
        check(
            s.stall_ms <= 600_000,
            "session.stall_ms",
            "must be at most 600000",
        )?;
        check(
            s.resume || !s.retry_appends,
            "session.retry_appends",
            "needs session.resume = true",
        )?;

        let t = &self.thresholds;
        for (key, limit) in t.limits() {
            let key = format!("thresholds.{key}");
            check(limit.is_finite() && limit >= 0.0, &key, "must be 0 or more")?;
        }
        if let Some(rate) = t.max_error_rate {
            check(
                rate <= 1.0,
                "thresholds.max_error_rate",
                "must be 0.0 to 1.0",
            )?;
        }
        Ok(())
    }
}

/// A TOML text parsed again with spans, to turn byte offsets and key paths into positions.
struct Source<'s> {
    text: &'s str,
    /// `None` when the text is not valid TOML (a syntax error): keys are then unknown.
    doc: Option<Document<&'s str>>,
}

impl<'s> Source<'s> {
    fn parse(text: &'s str) -> Self {
        Self {
            text,
            doc: Document::parse(text).ok(),
        }
    }

    /// 1-based line and column (in characters) of byte `offset`.
    fn line_column(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |nl| nl + 1);
        (
            before.matches('\n').count() + 1,
            before[line_start..].chars().count() + 1,
        )
    }

    /// Dotted path of the innermost key whose key or value covers `offset`.
    fn key_at(&self, offset: usize) -> Option<String> {
        let mut path = Vec::new();
        let root = self.doc.as_ref()?.as_table();
        find(root, offset, &mut path).then(|| path.join("."))
    }

    /// Position of the value at dotted `path` (of its key for a table without a span).
    fn position_of(&self, path: &str) -> Option<(usize, usize)> {
        let mut table: &dyn TableLike = self.doc.as_ref()?.as_table();
        let mut span = None;
        for name in path.split('.') {
            let (key, item) = table.get_key_value(name)?;
            span = item.span().or_else(|| key.span());
            if let Some(next) = item.as_table_like() {
                table = next;
            }
        }
        span.map(|s| self.line_column(s.start))
    }
}

fn find(table: &dyn TableLike, offset: usize, path: &mut Vec<String>) -> bool {
    for (name, item) in table.iter() {
        path.push(name.to_owned());
        let on_key = table
            .key(name)
            .and_then(toml_edit::Key::span)
            .is_some_and(|span| covers(&span, offset));
        if on_key {
            return true;
        }
        let inside = match item {
            Item::Table(t) => find(t, offset, path) || t.span().is_some_and(|s| covers(&s, offset)),
            Item::Value(v) => match v.as_inline_table() {
                Some(t) => find(t, offset, path) || v.span().is_some_and(|s| covers(&s, offset)),
                None => v.span().is_some_and(|s| covers(&s, offset)),
            },
            _ => false,
        };
        if inside {
            return true;
        }
        path.pop();
    }
    false
}

fn covers(span: &Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || (span.is_empty() && span.start == offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Scenario::from_toml_str(text)
            .expect_err("should be refused")
            .to_string()
    }

    #[test]
    fn defaults_are_valid() {
        let s = Scenario::from_toml_str("").expect("empty scenario");
        assert_eq!(s.run.sessions, 10);
        assert_eq!(s.session.tool, "sha256");
        assert!(s.thresholds.limits().is_empty());
    }

    #[test]
    fn unknown_keys_name_key_and_line() {
        let e = err("[run]\nsessions = 5\nconcurency = 3\n");
        assert!(e.starts_with("3:1: run.concurency: unknown field"), "{e}");
        let e = err("[sesion]\nevents = 1\n");
        assert!(e.starts_with("1:2: sesion: unknown field"), "{e}");
    }

    #[test]
    fn wrong_types_and_ranges_name_key_and_line() {
        let e = err("[run]\nsessions = \"many\"\n");
        assert!(e.starts_with("2:12: run.sessions: invalid type"), "{e}");
        let e = err("[run]\nsessions = 5\nconcurrency = 0\n");
        assert_eq!(e, "3:15: run.concurrency: must be 1 to 100000");
        let e = err("[arrival]\nrate_per_sec = 5.0\nramp_secs = 3.0\n");
        assert!(
            e.starts_with("2:16: arrival.rate_per_sec: set either"),
            "{e}"
        );
        let e = err("[thresholds]\nmax_error_rate = 2.0\n");
        assert_eq!(e, "2:18: thresholds.max_error_rate: must be 0.0 to 1.0");
    }
}

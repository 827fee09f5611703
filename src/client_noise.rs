//! Connection failures a client causes, counted instead of logged one line each.
//!
//! pingora and rustls log some per-connection failures at ERROR or WARN:
//!
//! | reason | logged by | line |
//! |---|---|---|
//! | `tls_handshake` | `pingora_core::services::listening` | `Downstream handshake error …` / `… timeout` |
//! | `h2_handshake` | `pingora_core::apps` | `H2 handshake error …` (a client that closes before its HTTP/2 preface) |
//! | `sni` | `rustls` | `Illegal SNI …` (an IP address or a malformed name sent as SNI) |
//!
//! Any client can cause one per connection, so at the edge they would let anyone fill the
//! operator's disk (64,761 ERROR lines in one handshake benchmark). [`ClientNoise`], a layer
//! of the global subscriber, counts every one (`agentgate_connection_errors_total{reason}`
//! on `/metrics`) and lets one line per reason through every [`SHOWN_EVERY`], so the log
//! still says that it happens. Counted while logging at their level is on (`RUST_LOG`'s
//! default `info` keeps them on).

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::{Context, Layer};

/// At most one logged line per reason this often; the rest are only counted.
pub const SHOWN_EVERY: Duration = Duration::from_secs(10);

/// The reasons, in the order of [`counts`].
pub const REASONS: [&str; 3] = ["tls_handshake", "h2_handshake", "sni"];

/// Failures counted so far, per reason.
static COUNTED: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
/// Per reason, the time (ms since [`START`]) from which the next line may be shown.
static NEXT_SHOWN: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
static START: OnceLock<Instant> = OnceLock::new();

/// The failures counted so far in this process, per reason of [`REASONS`].
pub fn counts() -> [(&'static str, u64); 3] {
    let mut out = [("", 0); 3];
    for (i, reason) in REASONS.iter().enumerate() {
        out[i] = (reason, COUNTED[i].load(Ordering::Relaxed));
    }
    out
}

/// The subscriber layer that counts client-caused connection failures and keeps all but one
/// line per reason every [`SHOWN_EVERY`] out of the log (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientNoise;

impl<S: Subscriber> Layer<S> for ClientNoise {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let Some(reason) = classify(event) else {
            return true;
        };
        COUNTED[reason].fetch_add(1, Ordering::Relaxed);
        let start = START.get_or_init(Instant::now);
        let now = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = NEXT_SHOWN[reason].load(Ordering::Relaxed);
        let every = u64::try_from(SHOWN_EVERY.as_millis()).unwrap_or(u64::MAX);
        now >= next
            && NEXT_SHOWN[reason]
                .compare_exchange(
                    next,
                    now.saturating_add(every),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

/// The reason (index into [`REASONS`]) of a client-caused failure line, if `event` is one.
fn classify(event: &Event<'_>) -> Option<usize> {
    // `log` records (pingora's, rustls's) arrive with their own target in the fields.
    let normalized = event.normalized_metadata();
    let target = normalized
        .as_ref()
        .map_or_else(|| event.metadata().target(), |meta| meta.target());
    let kind = if target.starts_with("pingora_core::services::listening") {
        0
    } else if target.starts_with("pingora_core::apps") {
        1
    } else if target.starts_with("rustls") {
        2
    } else {
        return None;
    };
    let mut message = Message(String::new());
    event.record(&mut message);
    let text = message.0.as_str();
    let matches = match kind {
        0 => text.starts_with("Downstream handshake"),
        1 => text.starts_with("H2 handshake error"),
        _ => text.starts_with("Illegal SNI"),
    };
    matches.then_some(kind)
}

/// The `message` field of an event.
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// Counts the events every layer let through.
    struct Shown(Arc<AtomicU64>);

    impl<S: Subscriber> Layer<S> for Shown {
        fn on_event(&self, _event: &Event<'_>, _ctx: Context<'_, S>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `log` records sent as pingora and rustls send them: each counted, few shown.
    #[test]
    fn client_failures_are_counted_and_few_shown() {
        let shown = Arc::new(AtomicU64::new(0));
        let subscriber = tracing_subscriber::registry()
            .with(ClientNoise)
            .with(Shown(Arc::clone(&shown)));
        let before = counts();
        let log = |target: &str, level: log::Level, message: fmt::Arguments<'_>| {
            let record = log::Record::builder()
                .target(target)
                .level(level)
                .args(message)
                .build();
            tracing_log::format_trace(&record).expect("a tracing event");
        };
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..100 {
                log(
                    "pingora_core::services::listening",
                    log::Level::Error,
                    format_args!("Downstream handshake error from 127.0.0.1:{i}: broken pipe"),
                );
                log(
                    "pingora_core::apps",
                    log::Level::Error,
                    format_args!("H2 handshake error Broken pipe"),
                );
                log(
                    "rustls::msgs::handshake",
                    log::Level::Warn,
                    format_args!(
                        "Illegal SNI extension: ignoring IP address presented as hostname"
                    ),
                );
            }
            // Anything else from the same targets is logged as usual.
            log(
                "pingora_core::services::listening",
                log::Level::Error,
                format_args!("Accept() failed Too many open files"),
            );
        });
        let after = counts();
        for i in 0..3 {
            assert_eq!(after[i].1 - before[i].1, 100, "{}", REASONS[i]);
        }
        // The first of each reason and the unrelated line; the rest of the 300 are held
        // back (a few more only if this loop outlived SHOWN_EVERY).
        let lines = shown.load(Ordering::Relaxed);
        assert!((4..100).contains(&lines), "{lines} lines shown");
    }
}

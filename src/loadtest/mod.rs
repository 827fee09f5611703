//! The load generator behind `agentgate loadtest`: plays many agent sessions against a
//! running gateway and measures what its users would feel.
//!
//! ```sh
//! agentgate loadtest --target http://127.0.0.1:8080 --api-key dev-api-key-change-me \
//!     --scenario bench/scenarios/smoke.toml --json report.json --plot charts/
//! ```
//!
//! A [`Scenario`] (TOML, documented in `bench/scenarios/smoke.toml`) says how many sessions,
//! how many at once, when they arrive (constant rate or ramp) and what each does: init →
//! open its SSE stream → append events in batches → tool batches → complete, with think
//! times. Every session's stream reader checks that it received every acknowledged event
//! exactly once and in order, then `complete`.
//!
//! Measured (hdrhistogram; p50/p90/p99/max, see [`record::Metric`]): init time to first
//! byte, SSE connection establishment, append calls, delivery latency (append sent → event
//! received on the stream), tool batches, the complete call, whole sessions; throughput;
//! errors by kind (`init_status_503`, `append_timeout`, `event_lost`, `event_duplicated`,
//! ...). Events a reader missed because the gateway trimmed them (`store.events_maxlen`) and
//! told it so with a `gap` event are counted apart (`events.told_missing`, `events.gaps`),
//! not as `event_lost`.
//!
//! The run is bounded: at most `run.sessions` sessions, none started after
//! `run.max_duration_secs` and any still running then cut; every request within
//! `run.request_timeout_ms`. Targets must be loopback addresses unless the caller allows
//! others ([`check_target`]), so a typo cannot load someone else's server.
//!
//! Modules, one per concern: [`scenario`] (the file), [`arrival`] (when sessions start),
//! [`client`] (HTTP and SSE), [`run`](mod@run) (the session driver), [`record`] (samples and
//! errors as they happen), [`report`] (percentiles, table, JSON, thresholds), [`plot`]
//! (SVG charts).

pub mod arrival;
pub mod client;
pub mod plot;
pub mod record;
pub mod report;
pub mod run;
pub mod scenario;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub use record::Collected;
pub use report::Report;
pub use scenario::{Scenario, ScenarioError};

use client::Client;
use record::Recorder;

/// A finished run: the summary and the raw samples (for charts).
#[derive(Debug)]
pub struct Finished {
    /// The summary.
    pub report: Report,
    /// Every sample and error, as recorded.
    pub collected: Collected,
}

/// Checks `target` is an `http://` URL of a loopback host (`127.0.0.0/8`, `::1`,
/// `localhost`), unless `allow_remote`.
///
/// # Errors
///
/// A message naming `--target` and the problem.
pub fn check_target(target: &Uri, allow_remote: bool) -> Result<(), String> {
    if target.scheme_str() != Some("http") {
        return Err("--target: must be an http:// URL (TLS is not supported)".to_owned());
    }
    let host = target
        .host()
        .ok_or("--target: must name a host, e.g. http://127.0.0.1:8080")?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback && !allow_remote {
        return Err(format!(
            "--target: {host} is not a loopback address; pass --allow-remote to load a server \
             you own elsewhere"
        ));
    }
    Ok(())
}

/// Runs `scenario` against `target`, showing a progress bar on a terminal's stderr when
/// `progress`.
///
/// # Errors
///
/// A message when the target or API key cannot be used. Everything that goes wrong during
/// the run is counted in the report instead.
pub async fn run(
    target: &Uri,
    api_key: &str,
    scenario: &Scenario,
    progress: bool,
) -> Result<Finished, String> {
    let client = Client::new(target, api_key, scenario.run.request_timeout())?;
    let recorder = Arc::new(Recorder::default());
    let bar = progress_bar(scenario.run.sessions, progress);
    let on_progress = {
        let (bar, recorder) = (bar.clone(), Arc::clone(&recorder));
        move |started: u64| {
            let (finished, failed) = recorder.progress();
            bar.set_position(finished);
            bar.set_message(format!(
                "{} in flight, {failed} failed",
                started.saturating_sub(finished)
            ));
        }
    };
    let outcome = run::drive(scenario, client, &recorder, &on_progress).await;
    bar.finish_and_clear();
    drop(on_progress); // it holds a reference to the recorder
    let collected = Arc::try_unwrap(recorder)
        .map(Recorder::into_collected)
        .map_err(|_| "internal: a session outlived the run".to_owned())?;
    let target = target.to_string();
    let report = Report::new(target.trim_end_matches('/'), scenario, &outcome, &collected);
    Ok(Finished { report, collected })
}

fn progress_bar(len: u64, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    // Draws only when stderr is a terminal, so pipes and CI logs stay clean.
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} sessions  {msg}",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_unless_allowed() {
        let ok = |t: &str| check_target(&t.parse().expect("uri"), false);
        assert!(ok("http://127.0.0.1:8080").is_ok());
        assert!(ok("http://127.3.0.1:80").is_ok());
        assert!(ok("http://[::1]:8080").is_ok());
        assert!(ok("http://localhost:8080/").is_ok());
        assert!(ok("http://10.0.0.5:8080").is_err());
        assert!(ok("http://example.com").is_err());
        assert!(ok("https://127.0.0.1").is_err());
        assert!(check_target(&"http://10.0.0.5:80".parse().expect("uri"), true).is_ok());
    }
}

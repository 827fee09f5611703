//! `agentgate loadtest` against a real gateway on `127.0.0.1:0` (memory store, no agent
//! dispatch): the engine in-process, and the binary for its exit status, files and errors.
//!
//! No test asserts a duration: counts, error kinds, exit statuses and files only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use agentgate::loadtest::{self, Scenario};
use agentgate::server::Running;
use agentgate_config::Config;
use serde_json::Value;

const KEY: &str = "loadtest-api-key-0123456789";
const SECRET: &str = "loadtest-secret-loadtest-secret-xxxxxx";

/// A scenario of `sessions` sessions of 10 events in batches of 3 (so the last batch is
/// short) and one tool batch of `tool` calls.
fn scenario_toml(sessions: u64, tool: &str) -> String {
    format!(
        r#"
[run]
sessions = {sessions}
concurrency = 10
max_duration_secs = 60
request_timeout_ms = 15000
[session]
events = 10
batch_size = 3
event_bytes = 16
tool_batches = 1
tool_calls = 2
tool = "{tool}"
[thresholds]
max_error_rate = 0.0
"#
    )
}

/// Starts a gateway with the memory store and the built-in `sha256` tool.
async fn gateway() -> Running {
    gateway_with(|_| {}).await
}

/// [`gateway`], its configuration changed by `edit` first.
async fn gateway_with(edit: impl FnOnce(&mut Config)) -> Running {
    let mut config = Config::from_toml_str(&format!(
        r#"
[auth]
api_keys = ["{KEY}"]
stream_token_secret = "{SECRET}"
[store]
kind = "memory"
[agent]
dispatch = "none"
[tools]
workers = 1
[tools.sha256]
kind = "sha256"
"#
    ))
    .expect("valid test config");
    config.server.listen = vec!["127.0.0.1:0".parse().expect("addr")];
    edit(&mut config);
    let app = agentgate::app::App::build(&config)
        .await
        .expect("gateway builds");
    Running::start(config.server.listen[0], app, Duration::from_secs(5))
        .await
        .expect("gateway listens")
}

/// Runs the real binary's `loadtest` with `args` off the async runtime.
async fn cli(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_agentgate"))
            .arg("loadtest")
            .args(args)
            .output()
            .expect("agentgate runs")
    })
    .await
    .expect("join")
}

fn args(target: &str, scenario: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--target".to_owned(),
        target.to_owned(),
        "--api-key".to_owned(),
        KEY.to_owned(),
        "--scenario".to_owned(),
        scenario.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_scenario_runs_clean_with_every_event_delivered_once() {
    let gw = gateway().await;
    let scenario = Scenario::from_toml_str(&scenario_toml(20, "sha256")).expect("scenario");
    let target = format!("http://{}", gw.addr).parse().expect("uri");
    let finished = loadtest::run(&target, KEY, &scenario, false)
        .await
        .expect("run");
    let report = &finished.report;
    assert!(report.errors.is_empty(), "{report}");
    assert!(report.passed, "{report}");
    assert_eq!(report.sessions.planned, 20);
    assert_eq!(report.sessions.started, 20);
    assert_eq!(report.sessions.succeeded, 20);
    assert_eq!(report.sessions.failed, 0);
    assert_eq!(report.events.appended, 200);
    assert_eq!(report.events.delivered, 200);
    // init, stream, 4 appends (3+3+3+1), 1 tool batch, complete.
    assert_eq!(report.requests, 20 * 8);
    let count = |name: &str| report.latency_ms[name].count;
    assert_eq!(count("init_ttfb"), 20);
    assert_eq!(count("sse_connect"), 20);
    assert_eq!(count("append"), 80);
    assert_eq!(count("delivery"), 200);
    assert_eq!(count("tool_batch"), 20);
    assert_eq!(count("complete"), 20);
    assert_eq!(count("session"), 20);
    for (name, p) in &report.latency_ms {
        assert!(
            p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.max,
            "{name}: {p:?}"
        );
    }
    assert_eq!(report.thresholds.len(), 1);
    assert_eq!(report.thresholds[0].value, Some(0.0));
    gw.stop().await.expect("stop");
}

/// Batches of 20 events into logs capped at 5: each append trims 15 of its own events
/// before any reader can get them. The gateway tells every reader with `gap` events, and the
/// report counts those events as missed and told, not as `event_lost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_trimmed_before_delivery_are_told_not_lost() {
    let gw = gateway_with(|config| config.store.events_maxlen = 5).await;
    let toml = scenario_toml(4, "sha256")
        .replace("events = 10", "events = 60")
        .replace("batch_size = 3", "batch_size = 20");
    let scenario = Scenario::from_toml_str(&toml).expect("scenario");
    let target = format!("http://{}", gw.addr).parse().expect("uri");
    let report = loadtest::run(&target, KEY, &scenario, false)
        .await
        .expect("run")
        .report;
    assert!(report.errors.is_empty(), "no event_lost: {report}");
    assert_eq!(report.sessions.succeeded, 4, "{report}");
    let events = report.events;
    assert_eq!(events.appended, 240);
    assert_eq!(events.delivered + events.told_missing, 240, "{report}");
    assert!(events.told_missing >= 4 * 45, "{report}");
    assert!(events.gaps >= 4, "each reader told at least once: {report}");
    assert!(report.to_string().contains("missed and told"), "{report}");
    gw.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_writes_a_json_report_and_svg_charts() {
    let gw = gateway().await;
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("smoke.toml");
    std::fs::write(&scenario, scenario_toml(12, "sha256")).unwrap();
    let json = dir.path().join("report.json");
    let plots = dir.path().join("charts");
    let out = cli(args(
        &format!("http://{}", gw.addr),
        &scenario,
        &[
            "--json",
            json.to_str().unwrap(),
            "--plot",
            plots.to_str().unwrap(),
        ],
    ))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("delivery"), "the table: {stdout}");
    assert!(stdout.contains("errors: none"), "{stdout}");

    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["sessions"]["succeeded"], 12);
    assert_eq!(report["events"]["delivered"], 120);
    assert_eq!(report["latency_ms"]["delivery"]["count"], 120);
    for key in ["p50", "p90", "p99", "max"] {
        assert!(
            report["latency_ms"]["init_ttfb"][key].is_f64(),
            "{key}: {report}"
        );
    }
    assert_eq!(report["passed"], true);

    for name in [
        "init_ttfb",
        "sse_connect",
        "append",
        "delivery",
        "tool_batch",
        "complete",
        "session",
    ] {
        let svg = std::fs::read_to_string(plots.join(format!("{name}.svg")))
            .unwrap_or_else(|e| panic!("{name}.svg: {e}"));
        assert!(svg.starts_with("<svg"), "{name}.svg is not SVG");
        assert!(svg.contains("p99"), "{name}.svg has no p99 line legend");
    }
    gw.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breached_threshold_exits_3_and_is_named() {
    let gw = gateway().await;
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("missing-tool.toml");
    // The gateway refuses a batch naming an undeclared tool (400): every session errs.
    std::fs::write(&scenario, scenario_toml(5, "no_such_tool")).unwrap();
    let json = dir.path().join("report.json");
    let out = cli(args(
        &format!("http://{}", gw.addr),
        &scenario,
        &["--quiet", "--json", json.to_str().unwrap()],
    ))
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("threshold breached: max_error_rate = 1 (limit 0)"),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["errors"]["tools_status_400"], 5, "{report}");
    assert_eq!(report["sessions"]["failed"], 5);
    assert_eq!(report["passed"], false);
    gw.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_is_counted_not_a_crash() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let scenario = Scenario::from_toml_str(&scenario_toml(3, "sha256")).expect("scenario");
    let target = format!("http://127.0.0.1:{port}").parse().expect("uri");
    let finished = loadtest::run(&target, KEY, &scenario, false)
        .await
        .expect("run");
    let report = &finished.report;
    assert_eq!(report.errors.get("init_transport"), Some(&3), "{report}");
    assert_eq!(report.sessions.failed, 3);
    assert!(!report.passed);
}

#[tokio::test]
async fn a_bad_scenario_names_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[run]\nsessions = 3\nconcurency = 2\n").unwrap();
    let out = cli(args("http://127.0.0.1:9", &typo, &[])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("typo.toml:3:1: run.concurency: unknown field `concurency`"),
        "{stderr}"
    );

    let range = dir.path().join("range.toml");
    std::fs::write(&range, "[run]\nsessions = 3\n\n[session]\nbatch_size = 0\n").unwrap();
    let out = cli(args("http://127.0.0.1:9", &range, &[])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("range.toml:5:14: session.batch_size: must be 1 to 1000"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_non_loopback_target_is_refused_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.toml");
    std::fs::write(&scenario, scenario_toml(1, "sha256")).unwrap();
    // TEST-NET-1: refused by the argument check, never contacted.
    let out = cli(args("http://192.0.2.1:8080", &scenario, &[])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a loopback address"), "{stderr}");
}

#[test]
fn the_example_scenarios_are_valid() {
    for file in ["smoke.toml", "1000-sessions.toml", "ab-lifecycle.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("bench/scenarios")
            .join(file);
        let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{file}:{e}"));
        assert!(!scenario.thresholds.limits().is_empty(), "{file}");
    }
    let big = Scenario::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/scenarios/1000-sessions.toml"),
    )
    .unwrap();
    assert_eq!(big.run.sessions, 1000);
    assert_eq!(big.run.concurrency, 1000);
    let smoke =
        Scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/scenarios/smoke.toml"))
            .unwrap();
    assert!(
        smoke
            .thresholds
            .limits()
            .contains(&("p99_complete_ms", 250.0)),
        "smoke.toml documents p99_complete_ms"
    );
}

/// A relay in front of the gateway that cuts every connection once it carries a stream
/// request (`GET`), `400..1900` bytes of response later (a different count each time); a
/// connection that only carries agent calls passes whole. Returns its address.
async fn cutting_relay(gateway: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut n: usize = 0;
        while let Ok((client, _)) = listener.accept().await {
            n += 1;
            let cut = 400 + (n * 397) % 1500;
            tokio::spawn(async move {
                let Ok(upstream) = tokio::net::TcpStream::connect(gateway).await else {
                    return;
                };
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut up_rx, mut up_tx) = upstream.into_split();
                let streaming = Arc::new(AtomicBool::new(false));
                let seen = Arc::clone(&streaming);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 << 10];
                    while let Ok(n @ 1..) = client_rx.read(&mut buf).await {
                        if buf[..n].windows(4).any(|w| w == b"GET ") {
                            seen.store(true, Ordering::SeqCst);
                        }
                        if up_tx.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                let mut buf = vec![0u8; 16 << 10];
                let mut relayed = 0;
                while let Ok(n @ 1..) = up_rx.read(&mut buf).await {
                    let n = if streaming.load(Ordering::SeqCst) {
                        let n = n.min(cut - relayed);
                        relayed += n;
                        n
                    } else {
                        n
                    };
                    if client_tx.write_all(&buf[..n]).await.is_err() || relayed == cut {
                        return; // both halves dropped: the connection is cut
                    }
                }
            });
        }
    });
    addr
}

/// `session.resume`: every stream is cut again and again mid-flight (and an agent call
/// now and then); the viewers reconnect with `Last-Event-ID` as `EventSource` does and still
/// get every event exactly once, a stalled viewer included; the agent retries its cut calls
/// with their `Idempotency-Key` and every event is acknowledged once; the replay reader finds
/// every event in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_viewers_ride_out_cut_streams_exactly_once() {
    let gw = gateway_with(|config| config.sse.retry_ms = 20).await;
    let relay = cutting_relay(gw.addr).await;
    let toml = r#"
[run]
sessions = 5
concurrency = 5
max_duration_secs = 60
request_timeout_ms = 15000
[session]
events = 30
batch_size = 1
event_bytes = 64
think_time_ms = 5
viewers = 2
stalled_viewers = 1
stall_ms = 200
resume = true
retry_appends = true
"#;
    let scenario = Scenario::from_toml_str(toml).expect("scenario");
    let target = format!("http://{relay}").parse().expect("uri");
    let report = loadtest::run(&target, KEY, &scenario, false)
        .await
        .expect("run")
        .report;
    // A pooled connection that carried a stream may carry an agent call later and be cut
    // under it: the agent retries with the same Idempotency-Key, so the call is applied
    // once whether or not the cut attempt was.
    let viewer_errors: Vec<_> = report
        .errors
        .keys()
        .filter(|kind| !kind.starts_with("append_") && !kind.starts_with("complete_"))
        .collect();
    assert!(viewer_errors.is_empty(), "{report}");
    assert_eq!(report.sessions.started, 5);
    assert_eq!(report.events.written, 150);
    assert_eq!(
        report.events.appended, 150,
        "every append retried to its answer"
    );
    // Every viewer, the stalled ones too, got every event exactly once.
    assert_eq!(report.events.delivered, 300, "{report}");
    assert_eq!(report.viewers.streams, 10);
    assert!(report.viewers.reconnects >= 10, "{report}");
    // Only the readers' latencies are figures: at most one per event written.
    let samples = report.latency_ms["delivery"].count;
    assert!(
        samples >= report.events.appended && samples <= 150,
        "{report}"
    );
    gw.stop().await.expect("stop");
}

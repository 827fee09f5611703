//! `POST /v2/sessions/{id}/tools`: dependency graphs, data flow through `$ref`s, failure
//! propagation, parallelism (proven by barriers, not clocks), the CPU worker pool, HTTP
//! tools against a real local server, progress events and their round trips, and
//! rejected batches that run and write nothing.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use agentgate::tools::{Tool, ToolContext, ToolError, ToolRegistry};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::client::{Reply, SseFrame, within};
use crate::gateway::{
    Gateway, KEY, OTHER_KEY, Session, blocking, deltas, memory_config_with, metric,
    redis_config_with,
};
use crate::support::redis_server::RedisServer;

/// The built-in tools, declared as the reference configuration does.
const BUILTINS: &str = r#"
[tools.sha256]
kind = "sha256"
[tools.json_query]
kind = "json_query"
[tools.regex_extract]
kind = "regex_extract"
"#;

/// Posts `{"calls": calls}` to the session's tools endpoint as [`KEY`].
async fn run(gateway: &Gateway, session: &Session, calls: &Value) -> Reply {
    let c = &gateway.client;
    c.send_call(
        c.post(&session.path("tools"))
            .bearer(KEY)
            .json(&json!({ "calls": calls })),
    )
    .await
}

/// Runs `calls` and asserts a 200; returns the reports by call id.
async fn run_ok(gateway: &Gateway, session: &Session, calls: &Value) -> HashMap<String, Value> {
    let reply = run(gateway, session, calls).await;
    assert_eq!(reply.status, StatusCode::OK, "tools: {}", reply.text);
    by_id(&reply.json)
}

fn by_id(body: &Value) -> HashMap<String, Value> {
    body["calls"]
        .as_array()
        .unwrap_or_else(|| panic!("no calls in {body}"))
        .iter()
        .map(|c| (c["id"].as_str().expect("id").to_owned(), c.clone()))
        .collect()
}

/// `(kind, call_id)` of tool event frames.
fn tool_steps(frames: &[SseFrame]) -> Vec<(String, String)> {
    frames
        .iter()
        .map(|f| {
            let data = f.json();
            (
                f.event.clone().expect("event kind"),
                data["call_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn position(steps: &[(String, String)], kind: &str, id: &str) -> usize {
    steps
        .iter()
        .position(|(k, i)| k == kind && i == id)
        .unwrap_or_else(|| panic!("no {kind} for {id} in {steps:?}"))
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---- tools written in Rust for the tests ----

/// Returns its input at once.
pub(crate) struct Echo;

impl Tool for Echo {
    type Input = Value;
    type Output = Value;

    async fn call(&self, input: Value, _: &ToolContext) -> Result<Value, ToolError> {
        Ok(input)
    }
}

/// Counts its calls.
pub(crate) struct Count(pub(crate) Arc<AtomicUsize>);

impl Tool for Count {
    type Input = Value;
    type Output = Value;

    async fn call(&self, _: Value, _: &ToolContext) -> Result<Value, ToolError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Value::Null)
    }
}

/// Waits until every party of the barrier has arrived: run one at a time, the first call
/// waits forever (and the test times out with a message).
struct Meet(Arc<tokio::sync::Barrier>);

impl Tool for Meet {
    type Input = Value;
    type Output = Value;

    async fn call(&self, _: Value, _: &ToolContext) -> Result<Value, ToolError> {
        self.0.wait().await;
        Ok(json!("met"))
    }
}

/// Counts the calls running at once. Each call gives the others a bounded number of turns
/// of the event loop to show up (until three run together), then records the most it saw
/// and finishes: run one at a time, it proceeds alone after its turns.
#[derive(Default)]
struct Concurrency {
    running: AtomicUsize,
    most: AtomicUsize,
}

struct Probe(Arc<Concurrency>);

impl Tool for Probe {
    type Input = Value;
    type Output = Value;

    async fn call(&self, _: Value, _: &ToolContext) -> Result<Value, ToolError> {
        let c = &self.0;
        c.running.fetch_add(1, Ordering::SeqCst);
        for _ in 0..100 {
            if c.running.load(Ordering::SeqCst) >= 3 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let seen = c.running.load(Ordering::SeqCst);
        c.most.fetch_max(seen, Ordering::SeqCst);
        c.running.fetch_sub(1, Ordering::SeqCst);
        Ok(json!({ "seen": seen }))
    }
}

/// A gate blocking OS threads until opened.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// Occupies a CPU worker-pool thread until the gate opens, like a long CPU job; reports
/// the thread it ran on.
struct HoldCpu {
    gate: Arc<Gate>,
    entered: tokio::sync::mpsc::UnboundedSender<()>,
}

impl Tool for HoldCpu {
    type Input = Value;
    type Output = Value;

    async fn call(&self, _: Value, cx: &ToolContext) -> Result<Value, ToolError> {
        let (gate, entered) = (Arc::clone(&self.gate), self.entered.clone());
        let thread = cx
            .run_cpu(move || {
                let _ = entered.send(());
                gate.wait();
                std::thread::current().name().map(str::to_owned)
            })
            .await?;
        Ok(json!({ "thread": thread }))
    }
}

/// Waits (asynchronously) until released, after saying it started.
struct HoldAsync {
    release: tokio::sync::watch::Receiver<bool>,
    entered: tokio::sync::mpsc::UnboundedSender<()>,
}

impl Tool for HoldAsync {
    type Input = Value;
    type Output = Value;

    async fn call(&self, _: Value, _: &ToolContext) -> Result<Value, ToolError> {
        let _ = self.entered.send(());
        let mut release = self.release.clone();
        release
            .wait_for(|open| *open)
            .await
            .map_err(|_| ToolError::new("release dropped"))?;
        Ok(Value::Null)
    }
}

// ---- data flow, order, failures ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diamond_runs_in_dependency_order_and_passes_outputs_along() {
    let gateway = Gateway::start(&memory_config_with(BUILTINS)).await;
    let session = gateway.init().await;
    let mut live = gateway.stream(&session).await;
    let calls = json!([
        {"id": "d", "tool": "json_query", "depends_on": ["b", "c"], "input": {
            "value": {"first": {"$ref": "b#/matches/0/match"}, "hex": {"$ref": "c"}},
            "path": ""
        }},
        {"id": "a", "tool": "sha256", "input": {"text": "agentgate"}},
        {"id": "b", "tool": "regex_extract", "depends_on": ["a"],
         "input": {"pattern": "[0-9]+", "text": {"$ref": "a#/sha256"}}},
        {"id": "c", "tool": "json_query", "depends_on": ["a"],
         "input": {"value": {"$ref": "a"}, "path": "/sha256"}},
    ]);
    let reply = run(&gateway, &session, &calls).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let order: Vec<&str> = reply.json["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["d", "a", "b", "c"], "reports in request order");
    assert_eq!(reply.json["succeeded"], 4);
    assert_eq!(reply.json["failed"], 0);
    let calls = by_id(&reply.json);
    for call in calls.values() {
        assert_eq!(call["status"], "succeeded", "{call}");
        assert!(call["duration_ms"].as_f64().is_some(), "{call}");
    }
    let hex = sha256_hex("agentgate");
    assert_eq!(calls["a"]["output"], json!({ "sha256": hex }));
    assert_eq!(calls["c"]["output"], json!(hex));
    let first_digits = regex::Regex::new("[0-9]+")
        .unwrap()
        .find(&hex)
        .expect("a hex digest of 64 digits has a decimal digit")
        .as_str()
        .to_owned();
    assert_eq!(
        calls["b"]["output"]["matches"][0]["match"],
        json!(first_digits)
    );
    assert_eq!(
        calls["d"]["output"],
        json!({"first": first_digits, "hex": hex})
    );

    // Watchers saw every call start and finish, in dependency order.
    let frames = live.events(8).await;
    let batch = reply.json["batch"].as_str().unwrap();
    for frame in &frames {
        assert_eq!(frame.json()["batch"], batch, "{frame:?}");
    }
    let finished_d = frames
        .iter()
        .find(|f| f.event.as_deref() == Some("tool_finished") && f.json()["call_id"] == "d")
        .unwrap()
        .json();
    assert_eq!(finished_d["status"], "succeeded");
    assert_eq!(finished_d["tool"], "json_query");
    assert!(finished_d["duration_ms"].as_f64().is_some());
    let steps = tool_steps(&frames);
    let at = |kind: &str, id: &str| position(&steps, kind, id);
    for id in ["a", "b", "c", "d"] {
        assert!(
            at("tool_started", id) < at("tool_finished", id),
            "{steps:?}"
        );
    }
    for id in ["b", "c"] {
        assert!(
            at("tool_finished", "a") < at("tool_started", id),
            "{steps:?}"
        );
        assert!(
            at("tool_finished", id) < at("tool_started", "d"),
            "{steps:?}"
        );
    }
    assert_eq!(gateway.state(&session).await["event_count"], 8);

    // Executions and durations are in /metrics, by tool and status.
    let text = gateway.metrics().await;
    for (series, n) in [
        (
            r#"agentgate_tool_executions_total{tool="sha256",status="succeeded"}"#,
            1.0,
        ),
        (
            r#"agentgate_tool_executions_total{tool="json_query",status="succeeded"}"#,
            2.0,
        ),
        (
            r#"agentgate_tool_duration_seconds_count{tool="json_query",status="succeeded"}"#,
            2.0,
        ),
        ("agentgate_tool_pool_queue_depth", 0.0),
    ] {
        assert_eq!(metric(&text, series), Some(n), "{series} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_skips_its_dependents_and_spares_independent_calls() {
    let gateway = Gateway::start(&memory_config_with(BUILTINS)).await;
    let session = gateway.init().await;
    let calls = json!([
        {"id": "bad", "tool": "regex_extract", "input": {"pattern": "(", "text": "x"}},
        {"id": "child", "tool": "sha256", "depends_on": ["bad"], "input": {"text": "x"}},
        {"id": "grandchild", "tool": "sha256", "depends_on": ["child", "ok"], "input": {"text": "x"}},
        {"id": "ok", "tool": "sha256", "input": {"text": "x"}},
        {"id": "ok-child", "tool": "json_query", "depends_on": ["ok"],
         "input": {"value": {"$ref": "ok"}, "path": "/sha256"}},
        {"id": "bad-ref", "tool": "sha256", "depends_on": ["ok"],
         "input": {"text": {"$ref": "ok#/nope"}}},
        {"id": "after-bad-ref", "tool": "sha256", "depends_on": ["bad-ref"], "input": {"text": "x"}},
    ]);
    let reply = run(&gateway, &session, &calls).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        (
            &reply.json["succeeded"],
            &reply.json["failed"],
            &reply.json["skipped"]
        ),
        (&json!(2), &json!(2), &json!(3))
    );
    let calls = by_id(&reply.json);
    let status = |id: &str| calls[id]["status"].as_str().unwrap().to_owned();
    let error = |id: &str| calls[id]["error"].as_str().unwrap_or_default().to_owned();

    assert_eq!(status("bad"), "failed");
    assert!(
        error("bad").starts_with("input.pattern: "),
        "{}",
        error("bad")
    );
    for id in ["child", "grandchild"] {
        assert_eq!(status(id), "skipped", "{id}");
        assert_eq!(calls[id]["cause"], "bad", "{id}");
        assert!(
            error(id).starts_with("dependency \"bad\" failed: input.pattern: "),
            "{id}: {}",
            error(id)
        );
        assert!(calls[id].get("duration_ms").is_none(), "{id} never ran");
    }
    assert_eq!(status("ok"), "succeeded");
    assert_eq!(calls["ok-child"]["output"], json!(sha256_hex("x")));
    // A reference that finds nothing fails its call at run time.
    assert_eq!(status("bad-ref"), "failed");
    assert!(
        error("bad-ref").starts_with(r#"input.text: $ref "ok#/nope": no value"#),
        "{}",
        error("bad-ref")
    );
    assert_eq!(status("after-bad-ref"), "skipped");
    assert_eq!(calls["after-bad-ref"]["cause"], "bad-ref");

    // Skipped calls have a tool_finished (status skipped) and no tool_started.
    let mut replay = gateway.stream(&session).await;
    let count = gateway.state(&session).await["event_count"]
        .as_u64()
        .unwrap();
    let frames = replay.events(count as usize).await;
    let steps = tool_steps(&frames);
    for id in ["child", "grandchild", "after-bad-ref"] {
        assert!(!steps.contains(&("tool_started".into(), id.into())), "{id}");
        let finished = frames
            .iter()
            .find(|f| f.event.as_deref() == Some("tool_finished") && f.json()["call_id"] == id)
            .unwrap_or_else(|| panic!("no tool_finished for {id}"))
            .json();
        assert_eq!(finished["status"], "skipped");
        assert!(finished["cause"].is_string());
    }
    // Everything else started and finished: 4 ran (bad-ref failed before starting).
    assert_eq!(
        steps.iter().filter(|(k, _)| k == "tool_started").count(),
        3,
        "{steps:?}"
    );
    assert_eq!(count, 3 + 7);
    let text = gateway.metrics().await;
    for series in [
        r#"agentgate_tool_executions_total{tool="sha256",status="skipped"}"#,
        r#"agentgate_tool_executions_total{tool="regex_extract",status="failed"}"#,
    ] {
        assert!(metric(&text, series).is_some(), "{series} in\n{text}");
    }
}

// ---- rejected batches ----

/// The session's keys in Redis with their content.
pub(crate) fn redis_state(redis: &RedisServer) -> Vec<(String, String)> {
    blocking(|| redis.dump())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_batches_run_nothing_and_write_nothing() {
    let redis = blocking(RedisServer::start);
    let config = redis_config_with(
        &redis,
        &format!("[tools]\nmax_input_bytes = 1024\n{BUILTINS}"),
    );
    let counter = Arc::new(AtomicUsize::new(0));
    let mut tools = ToolRegistry::new();
    tools
        .register("count", Count(Arc::clone(&counter)))
        .unwrap();
    let gateway = Gateway::start_with_tools(&config, tools).await;
    let session = gateway.init().await;
    let done = gateway.init().await;
    gateway.complete(&done, &json!(null)).await;
    let c = &gateway.client;
    let path = session.path("tools");
    let post = |body: Value| c.post(&path).bearer(KEY).json(&body);
    let calls = |calls: Value| post(json!({ "calls": calls }));
    let valid =
        json!([{"id": "a", "tool": "count"}, {"id": "b", "tool": "count", "depends_on": ["a"]}]);
    let too_many: Vec<Value> = (0..65)
        .map(|i| json!({"id": format!("c{i}"), "tool": "count"}))
        .collect();

    let rows = vec![
        (
            "malformed JSON",
            c.post(&path).bearer(KEY).raw_json(r#"{"calls": ["#),
            400,
            "invalid_body",
            "body: ",
        ),
        (
            "not JSON",
            c.post(&path)
                .bearer(KEY)
                .header("content-type", "text/plain")
                .body("{}"),
            415,
            "unsupported_media_type",
            "content-type: must be application/json",
        ),
        (
            "no calls",
            post(json!({})),
            400,
            "invalid_body",
            "body: missing field `calls`",
        ),
        (
            "unknown field next to calls",
            post(json!({"calls": valid.clone(), "parallel": true})),
            400,
            "invalid_body",
            "body: unknown field `parallel`",
        ),
        (
            "unknown field in a call",
            calls(json!([{"id": "a", "tool": "count", "args": {}}])),
            400,
            "invalid_field",
            "calls[0]: unknown field `args`",
        ),
        (
            "empty batch",
            calls(json!([])),
            400,
            "invalid_field",
            "calls: must hold at least one call",
        ),
        (
            "too many calls",
            calls(json!(too_many)),
            400,
            "invalid_field",
            "calls: at most 64 calls per batch (got 65)",
        ),
        (
            "invalid id",
            calls(json!([{"id": "a#1", "tool": "count"}])),
            400,
            "invalid_field",
            "calls[0].id: must be 1 to 64 characters",
        ),
        (
            "duplicate id",
            calls(json!([{"id": "a", "tool": "count"}, {"id": "a", "tool": "count"}])),
            400,
            "invalid_field",
            "calls[1].id: duplicate id \"a\" (also calls[0].id)",
        ),
        (
            "missing dependency",
            calls(json!([{"id": "a", "tool": "count", "depends_on": ["ghost"]}])),
            400,
            "invalid_field",
            "calls[0].depends_on[0]: no call of this batch has id \"ghost\"",
        ),
        (
            "cycle",
            calls(json!([
                {"id": "root", "tool": "count"},
                {"id": "x", "tool": "count", "depends_on": ["root", "z"]},
                {"id": "y", "tool": "count", "depends_on": ["x"]},
                {"id": "z", "tool": "count", "depends_on": ["y"]},
            ])),
            400,
            "invalid_field",
            "calls: dependency cycle: x → z → y → x",
        ),
        (
            "unknown tool",
            calls(json!([{"id": "a", "tool": "count"}, {"id": "b", "tool": "rm-rf"}])),
            400,
            "invalid_field",
            "calls[1].tool: unknown tool \"rm-rf\" (registered: count, json_query, regex_extract, sha256)",
        ),
        (
            "input too large",
            calls(json!([{"id": "a", "tool": "sha256", "input": {"text": "x".repeat(1100)}}])),
            400,
            "invalid_field",
            "calls[0].input: 1111 bytes of JSON, more than the limit of 1024",
        ),
        (
            "$ref outside depends_on",
            calls(json!([
                {"id": "a", "tool": "sha256", "input": {"text": "x"}},
                {"id": "b", "tool": "sha256", "input": {"text": {"$ref": "a#/sha256"}}},
            ])),
            400,
            "invalid_field",
            "calls[1].input.text: $ref to \"a\", which is not in this call's depends_on",
        ),
        (
            "$ref with a bad pointer",
            calls(json!([
                {"id": "a", "tool": "sha256", "input": {"text": "x"}},
                {"id": "b", "tool": "sha256", "depends_on": ["a"], "input": {"text": {"$ref": "a#sha256"}}},
            ])),
            400,
            "invalid_field",
            "calls[1].input.text: $ref \"a#sha256\": the part after '#' must be a JSON pointer",
        ),
        (
            "$ref next to other members",
            calls(json!([
                {"id": "a", "tool": "count"},
                {"id": "b", "tool": "count", "depends_on": ["a"], "input": {"$ref": "a", "x": 1}},
            ])),
            400,
            "invalid_field",
            "calls[1].input: an object with \"$ref\" must have no other members",
        ),
        (
            "no API key",
            c.post(&path).json(&json!({ "calls": valid.clone() })),
            401,
            "missing_credentials",
            "",
        ),
        (
            "another key's session",
            c.post(&path)
                .bearer(OTHER_KEY)
                .json(&json!({ "calls": valid.clone() })),
            403,
            "forbidden",
            "session belongs to another API key",
        ),
        (
            "unknown session",
            c.post("/v2/sessions/no-such-session/tools")
                .bearer(KEY)
                .json(&json!({ "calls": valid.clone() })),
            404,
            "session_not_found",
            "session not found",
        ),
        (
            "completed session",
            c.post(&done.path("tools"))
                .bearer(KEY)
                .json(&json!({ "calls": valid.clone() })),
            409,
            "session_completed",
            "session already completed",
        ),
    ];
    let initial = redis_state(&redis);
    assert_eq!(
        initial.len(),
        4,
        "two meta keys, one event log and the owner's quota set: {initial:?}"
    );
    for (name, call, status, code, message) in rows {
        let reply = c.send_call(call).await;
        assert_eq!(reply.status.as_u16(), status, "{name}: {}", reply.text);
        assert_eq!(reply.error_code(), code, "{name}: {}", reply.text);
        assert!(
            reply.error_message().starts_with(message),
            "{name}: message {:?} should start with {message:?}",
            reply.error_message()
        );
        assert_eq!(redis_state(&redis), initial, "{name}: Redis changed");
        assert_eq!(counter.load(Ordering::SeqCst), 0, "{name}: a tool ran");
    }
    assert_eq!(gateway.state(&session).await["event_count"], 0);

    // The same batch, accepted: both calls run, four events are written.
    let reply = c.send_call(calls(valid)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(counter.load(Ordering::SeqCst), 2);
    assert_eq!(gateway.state(&session).await["event_count"], 4);
}

// ---- parallelism ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_calls_run_at_once() {
    let concurrency = Arc::new(Concurrency::default());
    let mut tools = ToolRegistry::new();
    tools
        .register("meet", Meet(Arc::new(tokio::sync::Barrier::new(3))))
        .unwrap();
    tools
        .register("probe", Probe(Arc::clone(&concurrency)))
        .unwrap();
    let gateway = Gateway::start_with_tools(&memory_config_with(""), tools).await;
    let session = gateway.init().await;

    // Three calls wait for each other: one at a time, this would never finish.
    let calls = json!([
        {"id": "m1", "tool": "meet"},
        {"id": "m2", "tool": "meet"},
        {"id": "m3", "tool": "meet"},
    ]);
    let reports = within(
        "three calls meeting at a barrier",
        run_ok(&gateway, &session, &calls),
    )
    .await;
    for id in ["m1", "m2", "m3"] {
        assert_eq!(reports[id]["output"], "met", "{id}");
    }

    let calls = json!([
        {"id": "p1", "tool": "probe"},
        {"id": "p2", "tool": "probe"},
        {"id": "p3", "tool": "probe"},
    ]);
    run_ok(&gateway, &session, &calls).await;
    assert_eq!(concurrency.most.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_parallel_tools_off_calls_run_one_at_a_time() {
    let concurrency = Arc::new(Concurrency::default());
    let mut tools = ToolRegistry::new();
    tools
        .register("probe", Probe(Arc::clone(&concurrency)))
        .unwrap();
    let config = memory_config_with("[features]\nparallel_tools = false\n");
    let gateway = Gateway::start_with_tools(&config, tools).await;
    let session = gateway.init().await;
    let mut live = gateway.stream(&session).await;
    let calls = json!([
        {"id": "p1", "tool": "probe"},
        {"id": "p2", "tool": "probe"},
        {"id": "p3", "tool": "probe"},
    ]);
    let reports = run_ok(&gateway, &session, &calls).await;
    for id in ["p1", "p2", "p3"] {
        assert_eq!(reports[id]["output"], json!({"seen": 1}), "{id}");
    }
    assert_eq!(concurrency.most.load(Ordering::SeqCst), 1);
    // Each call starts only after the previous one finished.
    let steps = tool_steps(&live.events(6).await);
    let expected: Vec<(String, String)> = ["p1", "p2", "p3"]
        .iter()
        .flat_map(|id| {
            [
                ("tool_started".to_owned(), (*id).to_owned()),
                ("tool_finished".to_owned(), (*id).to_owned()),
            ]
        })
        .collect();
    assert_eq!(steps, expected);
}

// ---- the CPU worker pool ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_work_on_the_pool_does_not_stall_other_sessions_streams() {
    let gate = Arc::new(Gate::default());
    let (entered_tx, mut entered) = tokio::sync::mpsc::unbounded_channel();
    let mut tools = ToolRegistry::new();
    tools
        .register(
            "hold_cpu",
            HoldCpu {
                gate: Arc::clone(&gate),
                entered: entered_tx,
            },
        )
        .unwrap();
    let config = memory_config_with(&format!("[tools]\nworkers = 2\n{BUILTINS}"));
    let gateway = Gateway::start_with_tools(&config, tools).await;
    let busy = gateway.init().await;
    let other = gateway.init().await;
    let mut other_stream = gateway.stream(&other).await;

    // Two jobs hold both pool threads; a large hash waits in the pool's queue.
    let text = "agentgate ".repeat(5_000);
    let calls = json!([
        {"id": "h1", "tool": "hold_cpu"},
        {"id": "h2", "tool": "hold_cpu"},
        {"id": "hash", "tool": "sha256", "input": {"text": text}},
    ]);
    let batch = tokio::spawn({
        let client = gateway.client.clone();
        let path = busy.path("tools");
        async move {
            client
                .send_call(
                    client
                        .post(&path)
                        .bearer(KEY)
                        .json(&json!({ "calls": calls })),
                )
                .await
        }
    });
    for _ in 0..2 {
        within("a pool job to start", entered.recv()).await.unwrap();
    }
    within("the hash to queue for the pool", async {
        loop {
            let text = gateway.metrics().await;
            if metric(&text, "agentgate_tool_pool_queue_depth") == Some(1.0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;

    // Meanwhile the gateway serves another session, live.
    let ids = gateway.append(&other, &deltas(0, 3)).await;
    let frames = other_stream.events(3).await;
    assert_eq!(crate::gateway::ids(&frames), ids);
    assert!(!batch.is_finished(), "the batch is still held");

    gate.open();
    let reply = within("the batch", batch).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let reports = by_id(&reply.json);
    assert_eq!(
        reports["hash"]["output"],
        json!({ "sha256": sha256_hex(&text) })
    );
    for id in ["h1", "h2"] {
        let thread = reports[id]["output"]["thread"].as_str().unwrap_or_default();
        assert!(
            thread.starts_with("agentgate-tool-"),
            "{id} ran on {thread:?}"
        );
    }
}

// ---- HTTP tools ----

/// A tiny healthy origin: see [`origin_named`].
async fn origin() -> SocketAddr {
    origin_named("origin", true).await
}

/// A tiny origin: `/echo` answers what it got (and `name`), `/fail` 503, `/slow` never,
/// `/text` not JSON, `/healthz` 200 if `healthy`, else 500.
pub(crate) async fn origin_named(name: &'static str, healthy: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                TokioIo::new(stream),
                service_fn(move |req| answer(name, healthy, req)),
            ));
        }
    });
    addr
}

async fn answer(
    name: &'static str,
    healthy: bool,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (session, call) = (header("x-session-id"), header("x-tool-call-id"));
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let (status, body) = match path.as_str() {
        "/echo" => {
            let got: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let reply = json!({
                "got": got, "session": session, "call": call, "method": method, "peer": name
            });
            (StatusCode::OK, reply.to_string())
        }
        "/fail" => (StatusCode::SERVICE_UNAVAILABLE, "overloaded".to_owned()),
        "/slow" => std::future::pending().await,
        "/text" => (StatusCode::OK, "plain words".to_owned()),
        "/healthz" if healthy => (StatusCode::OK, String::new()),
        "/healthz" => (StatusCode::INTERNAL_SERVER_ERROR, String::new()),
        _ => (StatusCode::NOT_FOUND, String::new()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    Ok(response)
}

/// A loopback port nothing listens on.
fn refused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_tools_call_upstream_peers() {
    let origin = origin().await;
    let dead = format!("127.0.0.1:{}", refused_port());
    let config = memory_config_with(&format!(
        r#"
[upstreams.origin]
peers = ["{origin}"]
[upstreams.dead]
peers = ["{dead}"]
retry_connect = false
[upstreams.pair]
peers = ["{dead}", "{origin}"]
retry_connect = true
[tools.echo]
kind = "http"
upstream = "origin"
path = "/echo"
[tools.fail]
kind = "http"
upstream = "origin"
path = "/fail"
[tools.slow]
kind = "http"
upstream = "origin"
path = "/slow"
timeout_ms = 300
[tools.text]
kind = "http"
upstream = "origin"
path = "/text"
[tools.dead]
kind = "http"
upstream = "dead"
path = "/echo"
[tools.pair]
kind = "http"
upstream = "pair"
path = "/echo"
"#
    ));
    let gateway = Gateway::start(&config).await;
    let session = gateway.init().await;
    let calls = json!([
        {"id": "e", "tool": "echo", "input": {"q": "hi"}},
        {"id": "e2", "tool": "echo", "depends_on": ["e"], "input": {"prev": {"$ref": "e#/got/q"}}},
        {"id": "f", "tool": "fail", "input": {}},
        {"id": "s", "tool": "slow", "input": {}},
        {"id": "t", "tool": "text", "input": {}},
        {"id": "d", "tool": "dead", "input": {}},
        {"id": "p1", "tool": "pair", "input": 1},
        {"id": "p2", "tool": "pair", "input": 2},
        {"id": "p3", "tool": "pair", "input": 3},
        {"id": "p4", "tool": "pair", "input": 4},
    ]);
    let reports = run_ok(&gateway, &session, &calls).await;
    let status = |id: &str| reports[id]["status"].as_str().unwrap().to_owned();
    let error = |id: &str| reports[id]["error"].as_str().unwrap_or_default().to_owned();

    assert_eq!(
        reports["e"]["output"],
        json!({"got": {"q": "hi"}, "session": session.id, "call": "e", "method": "POST",
               "peer": "origin"})
    );
    assert_eq!(reports["e2"]["output"]["got"], json!({"prev": "hi"}));
    assert_eq!(status("f"), "failed");
    assert_eq!(
        error("f"),
        "upstream origin answered 503 Service Unavailable: overloaded"
    );
    assert_eq!(status("s"), "timed_out");
    assert_eq!(error("s"), "timed out after 300 ms");
    assert_eq!(status("t"), "failed");
    assert!(error("t").contains("not JSON"), "{}", error("t"));
    assert_eq!(status("d"), "failed");
    assert!(
        error("d").starts_with(&format!("upstream dead ({dead}): ")),
        "{}",
        error("d")
    );
    // Round robin over a dead and a live peer: the refused connections are retried on the
    // live one, so every call succeeds.
    for (i, id) in ["p1", "p2", "p3", "p4"].iter().enumerate() {
        assert_eq!(status(id), "succeeded", "{id}: {}", error(id));
        assert_eq!(reports[*id]["output"]["got"], json!(i + 1));
    }
}

// ---- progress events and their round trips ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wave_of_calls_costs_one_round_trip() {
    let redis = blocking(RedisServer::start);
    let (release_tx, release) = tokio::sync::watch::channel(false);
    let (entered_tx, mut entered) = tokio::sync::mpsc::unbounded_channel();
    let mut tools = ToolRegistry::new();
    tools.register("echo", Echo).unwrap();
    tools
        .register(
            "hold",
            HoldAsync {
                release,
                entered: entered_tx,
            },
        )
        .unwrap();
    let gateway = Gateway::start_with_tools(&redis_config_with(&redis, ""), tools).await;
    let session = gateway.init().await;
    // Warm up: the first append of a fresh Redis loads the script (two round trips, once).
    gateway.append(&session, &deltas(0, 1)).await;
    // No stream is open while counting: its reads would count as round trips too.
    let round_trips = || gateway.stats.snapshot().0;
    let events_key = format!("ag:{{{}}}:events", session.id);
    let xlen = || -> u64 {
        blocking(|| redis.command(&["XLEN", &events_key]))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };

    // Five independent calls: one append for the five starts, one for the five finishes.
    let five: Vec<Value> = (0..5)
        .map(|i| json!({"id": format!("e{i}"), "tool": "echo", "input": i}))
        .collect();
    let before = round_trips();
    run_ok(&gateway, &session, &json!(five)).await;
    assert_eq!(round_trips() - before, 2, "five parallel calls");
    assert_eq!(xlen(), 1 + 10);

    // A diamond: each wave's finishes and the next wave's starts share one append.
    let diamond = json!([
        {"id": "a", "tool": "echo"},
        {"id": "b", "tool": "echo", "depends_on": ["a"]},
        {"id": "c", "tool": "echo", "depends_on": ["a"]},
        {"id": "d", "tool": "echo", "depends_on": ["b", "c"]},
    ]);
    let before = round_trips();
    run_ok(&gateway, &session, &diamond).await;
    assert_eq!(round_trips() - before, 4, "a diamond of instant calls");
    assert_eq!(xlen(), 1 + 10 + 8);

    // While four calls run, their starts have cost exactly one round trip.
    let four: Vec<Value> = (0..4)
        .map(|i| json!({"id": format!("h{i}"), "tool": "hold"}))
        .collect();
    let before = round_trips();
    let batch = tokio::spawn({
        let client = gateway.client.clone();
        let path = session.path("tools");
        async move {
            client
                .send_call(
                    client
                        .post(&path)
                        .bearer(KEY)
                        .json(&json!({ "calls": four })),
                )
                .await
        }
    });
    for _ in 0..4 {
        within("a held call to start", entered.recv())
            .await
            .unwrap();
    }
    assert_eq!(
        round_trips() - before,
        1,
        "the starts of four parallel calls"
    );
    assert_eq!(xlen(), 1 + 10 + 8 + 4);
    release_tx.send(true).unwrap();
    let reply = within("the held batch", batch).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["succeeded"], 4);
    let cost = round_trips() - before;
    assert!(
        (2..=5).contains(&cost),
        "four held calls cost {cost} round trips"
    );

    // Watchers see the waves in order.
    let mut replay = gateway.stream(&session).await;
    let frames = replay.events(1 + 10 + 8 + 8).await;
    let kinds: Vec<&str> = frames
        .iter()
        .map(|f| match f.event.as_deref() {
            Some("tool_started") => "S",
            Some("tool_finished") => "F",
            _ => "-",
        })
        .collect();
    let expected = ["-"]
        .iter()
        .chain(&["S"; 5])
        .chain(&["F"; 5])
        .chain(&["S", "F", "S", "S", "F", "F", "S", "F"])
        .chain(&["S"; 4])
        .chain(&["F"; 4])
        .copied()
        .collect::<Vec<_>>();
    assert_eq!(kinds, expected);

    // The baseline: with parallel_tools off each call is a wave of its own.
    let mut tools = ToolRegistry::new();
    tools.register("echo", Echo).unwrap();
    let sequential = Gateway::start_with_tools(
        &redis_config_with(&redis, "[features]\nparallel_tools = false\n"),
        tools,
    )
    .await;
    let session = sequential.init().await;
    sequential.append(&session, &deltas(0, 1)).await;
    let five: Vec<Value> = (0..5)
        .map(|i| json!({"id": format!("e{i}"), "tool": "echo", "input": i}))
        .collect();
    let before = sequential.stats.snapshot().0;
    run_ok(&sequential, &session, &json!(five)).await;
    assert_eq!(
        sequential.stats.snapshot().0 - before,
        6,
        "five sequential calls"
    );
}

/// http tools pick peers like the proxy does: a peer failing its health checks gets no
/// calls, although it would answer them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_tools_skip_peers_that_fail_health_checks() {
    let well = origin_named("well", true).await;
    let sick = origin_named("sick", false).await;
    let config = memory_config_with(&format!(
        r#"
[upstreams.checked]
peers = ["{well}", "{sick}"]
[upstreams.checked.health_check]
path = "/healthz"
interval_ms = 100
[tools.echo]
kind = "http"
upstream = "checked"
path = "/echo"
"#
    ));
    let gateway = Gateway::start(&config).await;
    let session = gateway.init().await;
    let calls: Vec<Value> = (0..4)
        .map(|i| json!({"id": format!("e{i}"), "tool": "echo", "input": i}))
        .collect();
    let calls = json!(calls);
    // Round robin over two healthy peers would send the sick one two of four calls; once
    // its checks have failed, it gets none.
    within("the sick peer to be taken out", async {
        loop {
            let reports = run_ok(&gateway, &session, &calls).await;
            let peers: Vec<&str> = reports
                .values()
                .map(|r| r["output"]["peer"].as_str().unwrap_or("none"))
                .collect();
            if peers.iter().all(|p| *p == "well") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
}

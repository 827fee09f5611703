//! The memory budget of a tool batch: a small request whose `$ref`s multiply a large output
//! (4,000 references to a 60 KB output are 240 MB, one more level a terabyte) is refused
//! with a 413 naming the call, before the blow-up is built; the real binary's memory is read
//! from `/proc/<pid>/status` to prove it. A batch over `tools.max_batch_bytes` is refused
//! up front (nothing written) or stopped while running (its events close every call).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use agentgate::tools::{Tool, ToolContext, ToolError, ToolRegistry};
use http::StatusCode;
use serde_json::{Value, json};

use crate::client::{Client, Reply};
use crate::gateway::{Gateway, KEY, SECRET, blocking, redis_config_with};
use crate::process::Process;
use crate::support::redis_server::RedisServer;
use crate::tools::{Count, Echo, redis_state};

/// How much the gateway's peak resident memory may grow over its baseline while refusing
/// the attacks (the attack itself asked for 240 MB, and then about 1 TB).
const RSS_BOUND_BYTES: u64 = 64 << 20;

/// `VmRSS` (resident now) and `VmHWM` (peak resident) of process `pid`, in bytes.
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {status}"))
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// `n` references to the whole output of call `to`.
fn refs_to(to: &str, n: usize) -> Vec<Value> {
    vec![json!({ "$ref": to }); n]
}

/// A `json_query` call answering `value` as it is (after its references are resolved).
fn identity(id: &str, value: Value, depends_on: &[&str]) -> Value {
    json!({"id": id, "tool": "json_query", "depends_on": depends_on,
           "input": {"value": value, "path": ""}})
}

/// Bytes of `{"value": <value>, "path": ""}` when `value` is `len` bytes of JSON.
fn identity_input_len(len: usize) -> usize {
    r#"{"value":,"path":""}"#.len() + len
}

/// Bytes of a JSON array of `n` values of `each` bytes.
fn array_len(n: usize, each: usize) -> usize {
    2 + n * each + n.saturating_sub(1)
}

async fn post_calls(client: &Client, path: &str, calls: &Value) -> Reply {
    client
        .send_call(
            client
                .post(path)
                .bearer(KEY)
                .json(&json!({ "calls": calls })),
        )
        .await
}

fn assert_refused(reply: &Reply, message: &str) {
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text.chars().take(300).collect::<String>()
    );
    assert_eq!(reply.error_code(), "tool_budget_exceeded", "{}", reply.text);
    assert_eq!(reply.error_message(), message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ref_blow_up_is_refused_before_it_takes_memory() {
    let gateway = blocking(|| {
        Process::start(&format!(
            r#"
[server]
listen = "127.0.0.1:0"
threads = 1
[auth]
api_keys = ["{KEY}"]
stream_token_secret = "{SECRET}"
[agent]
dispatch = "none"
[tools.json_query]
kind = "json_query"
"#
        ))
    });
    let client = Client::new(gateway.addr);
    let init = client
        .send_call(client.post("/v2/sessions").bearer(KEY).json(&json!({})))
        .await;
    assert_eq!(init.status, StatusCode::CREATED, "{}", init.text);
    let path = format!(
        "/v2/sessions/{}/tools",
        init.json["id"].as_str().expect("id")
    );

    // A legitimate batch with references works (and warms the gateway up).
    let legit = json!([
        identity("a", json!({"items": [1, 2, 3], "name": "n"}), &[]),
        identity(
            "b",
            json!([{"$ref": "a#/items"}, {"$ref": "a#/name"}, {"$ref": "a"}]),
            &["a"]
        ),
        identity(
            "c",
            json!(vec![json!({"$ref": "a#/items/2"}); 1000]),
            &["a"]
        ),
    ]);
    let reply = post_calls(&client, &path, &legit).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["succeeded"], 3, "{}", reply.text);
    assert_eq!(
        reply.json["calls"][1]["output"],
        json!([[1, 2, 3], "n", {"items": [1, 2, 3], "name": "n"}])
    );
    assert_eq!(reply.json["calls"][2]["output"], json!(vec![3; 1000]));
    let (rss_before, peak_before) = memory_of(gateway.pid());

    // The attack: 120 KB of request, 240 MB once resolved.
    let text = "x".repeat(60_000);
    let a = identity("a", json!(text), &[]);
    let b = identity("b", json!(refs_to("a", 4000)), &["a"]);
    let b_len = identity_input_len(array_len(4000, text.len() + 2));
    let b_refused = format!(
        "calls[1] (id \"b\"): input after $ref resolution is {b_len} bytes, over \
         tools.max_input_bytes (65536)"
    );
    let attack = json!([a.clone(), b.clone()]);
    assert!(attack.to_string().len() < 130_000);
    assert_refused(&post_calls(&client, &path, &attack).await, &b_refused);

    // One more level of the same shape (about 1 TB) is refused at the same call.
    let c = identity("c", json!(refs_to("b", 4000)), &["b"]);
    let deeper = json!([a, b, c]);
    assert_refused(&post_calls(&client, &path, &deeper).await, &b_refused);

    // A first level that fits and a second that does not: refused at the second.
    let small = identity("a", json!("x".repeat(10)), &[]);
    let b_fits = identity("b", json!(refs_to("a", 4000)), &["a"]);
    let b_output = array_len(4000, 12);
    assert!(identity_input_len(b_output) <= 65_536);
    let c = identity("c", json!(refs_to("b", 4000)), &["b"]);
    let c_len = identity_input_len(array_len(4000, b_output));
    assert_refused(
        &post_calls(&client, &path, &json!([small, b_fits, c])).await,
        &format!(
            "calls[2] (id \"c\"): input after $ref resolution is {c_len} bytes, over \
             tools.max_input_bytes (65536)"
        ),
    );

    let (rss_after, peak_after) = memory_of(gateway.pid());
    eprintln!(
        "gateway memory: VmRSS {rss_before} -> {rss_after} bytes, VmHWM {peak_before} -> \
         {peak_after} bytes"
    );
    assert!(
        peak_after <= peak_before.max(rss_before + RSS_BOUND_BYTES),
        "peak resident memory rose to {peak_after} bytes from {rss_before} (bound: +{RSS_BOUND_BYTES})"
    );
    assert!(
        rss_after <= rss_before + RSS_BOUND_BYTES,
        "resident memory rose to {rss_after} bytes from {rss_before}"
    );

    // The gateway still serves.
    let reply = post_calls(&client, &path, &legit).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

/// Answers a string of `len` characters, whatever its input.
struct Produce(usize);

impl Tool for Produce {
    type Input = Value;
    type Output = String;

    async fn call(&self, _: Value, _: &ToolContext) -> Result<String, ToolError> {
        Ok("y".repeat(self.0))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_its_budget_is_refused_naming_the_call() {
    let redis = blocking(RedisServer::start);
    let config = redis_config_with(
        &redis,
        "[tools]\nmax_input_bytes = 2048\nmax_batch_bytes = 4096",
    );
    let counter = Arc::new(AtomicUsize::new(0));
    let mut tools = ToolRegistry::new();
    tools.register("echo", Echo).unwrap();
    tools.register("produce", Produce(5000)).unwrap();
    tools
        .register("count", Count(Arc::clone(&counter)))
        .unwrap();
    let gateway = Gateway::start_with_tools(&config, tools).await;
    let session = gateway.init().await;
    let path = session.path("tools");
    let c = &gateway.client;
    let x = "x".repeat(1500);

    // Up front: inputs without references already add up to too much; nothing runs and
    // nothing is written.
    let initial = redis_state(&redis);
    let reply = post_calls(
        c,
        &path,
        &json!([
            {"id": "first", "tool": "count", "input": x},
            {"id": "second", "tool": "count", "input": x},
            {"id": "third", "tool": "count", "input": x},
        ]),
    )
    .await;
    assert_refused(
        &reply,
        "calls[2] (id \"third\"): input (1502 bytes) would bring the batch to 4506 bytes, \
         over tools.max_batch_bytes (4096)",
    );
    assert_eq!(redis_state(&redis), initial, "Redis changed");
    assert_eq!(counter.load(Ordering::SeqCst), 0, "a call ran");
    assert_eq!(gateway.state(&session).await["event_count"], 0);

    // While running: a's input and output, then b's resolved input, go over; b's dependent
    // is skipped, and the events close every call.
    let mut live = gateway.stream(&session).await;
    let reply = post_calls(
        c,
        &path,
        &json!([
            {"id": "a", "tool": "echo", "input": x},
            {"id": "b", "tool": "echo", "input": [{"$ref": "a"}], "depends_on": ["a"]},
            {"id": "after", "tool": "count", "depends_on": ["b"]},
        ]),
    )
    .await;
    let b_refused = "calls[1] (id \"b\"): input (1504 bytes) would bring the batch to 4508 \
                     bytes, over tools.max_batch_bytes (4096)";
    assert_refused(&reply, b_refused);
    assert_eq!(counter.load(Ordering::SeqCst), 0, "a dependent ran");
    let frames = live.events(4).await;
    let steps: Vec<(String, Value)> = frames
        .iter()
        .map(|f| (f.event.clone().expect("kind"), f.json()))
        .collect();
    let kinds: Vec<(&str, &str)> = steps
        .iter()
        .map(|(k, d)| (k.as_str(), d["call_id"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("tool_started", "a"),
            ("tool_finished", "a"),
            ("tool_finished", "b"),
            ("tool_finished", "after"),
        ]
    );
    assert_eq!(steps[1].1["status"], "succeeded");
    assert_eq!(steps[2].1["status"], "failed");
    assert_eq!(steps[2].1["error"], b_refused);
    assert_eq!(steps[3].1["status"], "skipped");
    assert_eq!(steps[3].1["cause"], "b");

    // An output that goes over: the call that produced it is named.
    let reply = post_calls(c, &path, &json!([{"id": "big", "tool": "produce"}])).await;
    assert_refused(
        &reply,
        "calls[0] (id \"big\"): output (5002 bytes) would bring the batch to 5006 bytes, \
         over tools.max_batch_bytes (4096)",
    );

    // Within the budget, references work as before.
    let reply = post_calls(
        c,
        &path,
        &json!([
            {"id": "a", "tool": "echo", "input": {"v": [1, 2]}},
            {"id": "b", "tool": "echo", "input": [{"$ref": "a#/v/1"}, {"$ref": "a"}], "depends_on": ["a"]},
        ]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["calls"][1]["output"], json!([2, {"v": [1, 2]}]));
}

//! Hot reload on the real binary: SIGHUP re-reads the file; routes, upstreams, policies and
//! feature flags change while a stream opened before the reload keeps flowing to its end; a
//! broken file is rejected with its errors (key and line) logged, and the running
//! configuration keeps serving. The admin endpoints show the reloaded configuration.

use http::StatusCode;
use serde_json::{Value, json};

use crate::client::{Client, Reply, within};
use crate::gateway::{KEY, SECRET, blocking};
use crate::process::Process;
use crate::tools::origin_named;

/// The config file: `echo_to` serves `/echo`; `extra` is appended (more routes, features).
fn config(threads: usize, echo_to: &str, a: &str, b: &str, extra: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
threads = {threads}
[auth]
api_keys = ["{KEY}"]
stream_token_secret = "{SECRET}"
[agent]
dispatch = "none"
{extra}
[[routes]]
name = "agent"
path_prefix = "/v2/"
[[routes]]
name = "echo"
kind = "upstream"
path_prefix = "/echo"
upstream = "{echo_to}"
[upstreams.a]
peers = ["{a}"]
[upstreams.b]
peers = ["{b}"]
"#
    )
}

/// Which origin answered `GET /echo` (for `host`), or the refusal.
async fn echo(client: &Client, host: &str) -> Result<String, Reply> {
    let reply = client
        .send_call(client.get("/echo").header("host", host))
        .await;
    match reply.status {
        StatusCode::OK => Ok(reply.json["peer"].as_str().unwrap_or_default().to_owned()),
        _ => Err(reply),
    }
}

async fn post(client: &Client, path: &str, body: &Value) -> Reply {
    let reply = client
        .send_call(client.post(path).bearer(KEY).json(body))
        .await;
    assert!(reply.status.is_success(), "{path}: {}", reply.text);
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_routes_upstreams_policies_and_flags_without_cutting_streams() {
    let (a, b) = (origin_named("a", true).await, origin_named("b", true).await);
    let (a, b) = (a.to_string(), b.to_string());
    let mut gateway = blocking(|| Process::start(&config(1, "a", &a, &b, "")));
    let client = Client::new(gateway.addr);
    assert_eq!(echo(&client, "any").await.ok().as_deref(), Some("a"));
    let admin = Client::new(gateway.admin.expect("the admin listener"));
    let shown = admin.send_call(admin.get("/admin/config")).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.text);
    assert!(!shown.text.contains("limited.example"), "{}", shown.text);

    // A session and its stream, opened on the first configuration (fan-out on).
    let init = post(&client, "/v2/sessions", &json!({})).await;
    let id = init.json["id"].as_str().expect("id").to_owned();
    let token = init.json["stream_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let events = format!("/v2/sessions/{id}/events");
    post(
        &client,
        &events,
        &json!({"kind": "delta", "data": {"n": 1}}),
    )
    .await;
    let stream_path = format!("/v2/sessions/{id}/stream?token={token}");
    let mut stream = client
        .stream(client.get(&stream_path))
        .await
        .unwrap_or_else(|r| panic!("stream refused: {}", r.text));
    let first = within("the event before the reload", stream.next_event()).await;
    assert_eq!(first.map(|f| f.json()["n"].clone()), Some(json!(1)));

    // Reload: /echo to b, a rate-limited host route to a, fan-out off, one more thread.
    let reloaded = config(
        2,
        "b",
        &a,
        &b,
        r#"[features]
sse_fanout = false
[[routes]]
name = "limited"
kind = "upstream"
host = "limited.example"
path_prefix = "/echo"
upstream = "a"
rate_limit = { per_second = 1, burst = 1, key = "global" }"#,
    );
    gateway.rewrite_config(&reloaded);
    gateway.hangup();
    let warning = blocking(|| gateway.line_where(|l| l.contains("until a restart")));
    assert!(warning.contains("server.threads"), "{warning}");
    blocking(|| gateway.line_where(|l| l.contains("configuration reloaded")));

    assert_eq!(echo(&client, "any").await.ok().as_deref(), Some("b"));
    assert_eq!(
        echo(&client, "limited.example").await.ok().as_deref(),
        Some("a")
    );
    // The admin endpoints read the running generation: no update by hand.
    let shown = admin.send_call(admin.get("/admin/config")).await;
    assert!(shown.text.contains("limited.example"), "{}", shown.text);
    let limited = echo(&client, "limited.example")
        .await
        .expect_err("over the limit");
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);

    // The stream opened before the reload still gets every event, then its end.
    post(
        &client,
        &events,
        &json!({"kind": "delta", "data": {"n": 2}}),
    )
    .await;
    let complete = json!({"status": "succeeded", "final_response": {"ok": true}});
    post(&client, &format!("/v2/sessions/{id}/complete"), &complete).await;
    let rest = within("the old stream's remaining events", stream.events_to_end()).await;
    let kinds: Vec<String> = rest
        .iter()
        .map(|f| f.event.clone().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["delta", "complete"], "{rest:?}");
    assert_eq!(rest[0].json()["n"], 2);

    // A new stream is served by the new generation (fan-out off) from the start.
    let mut replay = client
        .stream(client.get(&stream_path))
        .await
        .unwrap_or_else(|r| panic!("stream refused: {}", r.text));
    let all = within("a replay after the reload", replay.events_to_end()).await;
    assert_eq!(all.len(), 3, "{all:?}");

    // A broken file: rejected with key and line, the reloaded configuration keeps serving.
    let broken = reloaded.replace(
        "path_prefix = \"/echo\"\nupstream = \"b\"",
        "path_prefix = \"echo\"\nupstream = \"b\"",
    );
    assert_ne!(broken, reloaded);
    let line = broken
        .lines()
        .position(|l| l == "path_prefix = \"echo\"")
        .map(|i| i + 1)
        .expect("the broken line");
    gateway.rewrite_config(&broken);
    gateway.hangup();
    let rejected = blocking(|| gateway.line_where(|l| l.contains("reload rejected")));
    assert!(rejected.contains("path_prefix"), "{rejected}");
    assert!(
        rejected.contains(&format!(":{line}:")),
        "line {line}: {rejected}"
    );
    assert_eq!(echo(&client, "any").await.ok().as_deref(), Some("b"));
}

//! `[store.quotas]` against the real binary: an API key past its running-session quota gets
//! 429 `session_quota_exceeded` until it completes one; an append past a session's byte
//! quota gets 413 `session_bytes_exceeded` and none of its batch reaches the stream. On the
//! memory engine, a private Redis and a 3-node Redis Cluster.

use http::StatusCode;
use serde_json::{Value, json};

use crate::client::{Client, Reply};
use crate::gateway::{KEY, OTHER_KEY, SECRET, blocking, deltas};
use crate::process::Process;
use crate::support::redis_cluster::RedisCluster;
use crate::support::redis_server::RedisServer;

/// Running sessions per key in these tests.
const MAX_SESSIONS: u64 = 2;
/// Bytes per session in these tests: 8 deltas of 12 bytes (`delta` + `{"n":0}`) fit.
const MAX_BYTES: u64 = 100;

/// The binary's configuration on `store` (the `[store]` keys and tables).
fn config_toml(store: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
threads = 1
[auth]
api_keys = ["{KEY}", "{OTHER_KEY}"]
stream_token_secret = "{SECRET}"
[agent]
dispatch = "none"
[store]
{store}
[store.quotas]
max_active_sessions_per_key = {MAX_SESSIONS}
max_session_bytes = {MAX_BYTES}
"#
    )
}

fn redis_store(urls: &[String], cluster: bool) -> String {
    format!(
        "kind = \"redis\"\n[store.redis]\nurls = {urls:?}\ncluster = {cluster}\ntimeout_ms = 2000\n"
    )
}

async fn post(client: &Client, key: &str, path: &str, body: &Value) -> Reply {
    client
        .send_call(client.post(path).bearer(key).json(body))
        .await
}

/// Init as `key`: the reply.
async fn init(client: &Client, key: &str) -> Reply {
    post(client, key, "/v2/sessions", &json!({})).await
}

fn id_of(reply: &Reply) -> String {
    assert_eq!(reply.status, StatusCode::CREATED, "init: {}", reply.text);
    reply.json["id"].as_str().expect("id").to_owned()
}

fn assert_over_session_quota(reply: &Reply) {
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "init past the quota: {}",
        reply.text
    );
    assert_eq!(
        reply.error_code(),
        "session_quota_exceeded",
        "{}",
        reply.text
    );
    let message = reply.error_message();
    assert!(
        message.contains(&format!("{MAX_SESSIONS} running sessions"))
            && message.contains("store.quotas.max_active_sessions_per_key"),
        "the message names the quota: {message}"
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    // A quota does not free with time: no Retry-After.
    assert_eq!(reply.header("retry-after"), None);
}

/// A key creates sessions up to its quota, is refused past it (another key is not), and
/// completing one of its sessions frees exactly one slot.
async fn session_quota(toml: &str) {
    let gateway = blocking(|| Process::start(toml));
    let client = Client::new(gateway.addr);
    let first = id_of(&init(&client, KEY).await);
    id_of(&init(&client, KEY).await);
    assert_over_session_quota(&init(&client, KEY).await);
    // The quota is per key.
    id_of(&init(&client, OTHER_KEY).await);
    let done = post(
        &client,
        KEY,
        &format!("/v2/sessions/{first}/complete"),
        &json!({"status": "succeeded"}),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "complete: {}", done.text);
    id_of(&init(&client, KEY).await);
    assert_over_session_quota(&init(&client, KEY).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_past_its_session_quota_gets_429_until_it_completes_one_memory() {
    session_quota(&config_toml("kind = \"memory\"")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_past_its_session_quota_gets_429_until_it_completes_one_redis() {
    let redis = blocking(RedisServer::start);
    session_quota(&config_toml(&redis_store(&[redis.url()], false))).await;
    // Nothing half-written: the refused inits left no session behind (2 live and 1
    // completed of KEY, 1 of OTHER_KEY), and no key name carries an API key.
    let keys = blocking(|| redis.keys());
    let metas = keys.iter().filter(|k| k.ends_with(":meta")).count();
    assert_eq!(metas, 4, "sessions in Redis: {keys:?}");
    assert!(
        keys.iter()
            .all(|k| !k.contains(KEY) && !k.contains(OTHER_KEY)),
        "an API key in a key name: {keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_past_its_session_quota_gets_429_until_it_completes_one_redis_cluster() {
    let cluster = blocking(RedisCluster::start);
    session_quota(&config_toml(&redis_store(&cluster.urls(), true))).await;
}

/// Appends up to the byte quota pass; the batch past it is refused whole with 413, and the
/// session's stream shows every accepted event and none of the refused batch.
async fn byte_quota(toml: &str) {
    let gateway = blocking(|| Process::start(toml));
    let client = Client::new(gateway.addr);
    let created = init(&client, KEY).await;
    let id = id_of(&created);
    let token = created.json["stream_token"].as_str().expect("token");
    let events = format!("/v2/sessions/{id}/events");
    let accepted = post(&client, KEY, &events, &json!({ "events": deltas(0, 8) })).await;
    assert_eq!(
        accepted.status,
        StatusCode::OK,
        "96 bytes: {}",
        accepted.text
    );

    let refused_batch = json!({"events": [
        {"kind": "refused", "data": 1},
        {"kind": "refused", "data": 2},
    ]});
    let refused = post(&client, KEY, &events, &refused_batch).await;
    assert_eq!(
        refused.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "past the byte quota: {}",
        refused.text
    );
    assert_eq!(
        refused.error_code(),
        "session_bytes_exceeded",
        "{}",
        refused.text
    );
    let message = refused.error_message();
    assert!(
        message.starts_with("events: ")
            && message.contains(&format!("{MAX_BYTES} bytes"))
            && message.contains("store.quotas.max_session_bytes"),
        "the message names the quota: {message}"
    );
    // Still room for a small one (96 + 4 = 100: the quota is inclusive).
    let last = post(&client, KEY, &events, &json!({"kind": "ok", "data": 12})).await;
    assert_eq!(
        last.status,
        StatusCode::OK,
        "up to the quota: {}",
        last.text
    );

    // A session at its quota still completes; its stream replays what was accepted.
    let done = post(
        &client,
        KEY,
        &format!("/v2/sessions/{id}/complete"),
        &json!({"status": "succeeded"}),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "complete: {}", done.text);
    let mut stream = client
        .stream(client.get(&format!("/v2/sessions/{id}/stream?token={token}")))
        .await
        .unwrap_or_else(|reply| panic!("stream refused: {} {}", reply.status, reply.text));
    stream.expect_retry().await;
    let frames = stream.events_to_end().await;
    let kinds: Vec<&str> = frames.iter().filter_map(|f| f.event.as_deref()).collect();
    let mut expected = vec!["delta"; 8];
    expected.extend(["ok", "complete"]);
    assert_eq!(kinds, expected, "nothing of the refused batch: {frames:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_past_the_byte_quota_get_413_and_write_nothing_memory() {
    byte_quota(&config_toml("kind = \"memory\"")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_past_the_byte_quota_get_413_and_write_nothing_redis() {
    let redis = blocking(RedisServer::start);
    byte_quota(&config_toml(&redis_store(&[redis.url()], false))).await;
}

//! Starting a real gateway on `127.0.0.1:0` (memory or a private Redis) and driving
//! sessions through its API.

use std::time::Duration;

use agentgate::server::Running;
use agentgate::store::StoreStats;
use agentgate::tools::ToolRegistry;
use agentgate_config::Config;
use http::StatusCode;
use serde_json::{Value, json};

use crate::client::{Call, Client, SseStream};
use crate::support::redis_sentinel::{MASTER_NAME, RedisSentinel};
use crate::support::redis_server::RedisServer;

/// The API key most tests use.
pub const KEY: &str = "test-api-key-0123456789";
/// A second, valid API key (owns nothing the first one created).
pub const OTHER_KEY: &str = "other-api-key-0123456789";
/// The stream token secret of every test gateway.
pub const SECRET: &str = "test-secret-test-secret-test-secret-xx";

/// A configuration for the memory engine.
pub fn memory_config() -> Config {
    memory_config_with("")
}

/// A configuration for the memory engine, plus the TOML `extra` (more tables).
pub fn memory_config_with(extra: &str) -> Config {
    config_from(&format!(
        r#"
[auth]
api_keys = ["{KEY}", "{OTHER_KEY}"]
stream_token_secret = "{SECRET}"
[store]
kind = "memory"
{extra}
"#
    ))
}

/// A configuration for the Redis engine on `redis`.
pub fn redis_config(redis: &RedisServer) -> Config {
    redis_config_with(redis, "")
}

/// A configuration for the Redis engine on `redis`, plus the TOML `extra` (more tables).
pub fn redis_config_with(redis: &RedisServer, extra: &str) -> Config {
    redis_store_config(
        &format!("urls = [\"{}\"]", redis.url()),
        &format!("timeout_ms = 2000\n{extra}"),
    )
}

/// A configuration for the Redis engine behind `sentinel`'s Sentinels, plus the TOML
/// `extra` (more `[store.redis]` keys, then more tables).
pub fn sentinel_config_with(sentinel: &RedisSentinel, extra: &str) -> Config {
    let urls: Vec<String> = sentinel.urls().iter().map(|u| format!("{u:?}")).collect();
    let store = format!(
        "urls = [{}]\nsentinel_master = \"{MASTER_NAME}\"",
        urls.join(", ")
    );
    redis_store_config(&store, extra)
}

/// The test keys, `[store] kind = "redis"`, then `[store.redis]` with `store` and `extra`.
fn redis_store_config(store: &str, extra: &str) -> Config {
    config_from(&format!(
        r#"
[auth]
api_keys = ["{KEY}", "{OTHER_KEY}"]
stream_token_secret = "{SECRET}"
[store]
kind = "redis"
[store.redis]
{store}
{extra}
"#
    ))
}

fn config_from(toml: &str) -> Config {
    let mut config = Config::from_toml_str(toml).expect("valid test config");
    config.server.listen = vec!["127.0.0.1:0".parse().expect("addr")];
    config
}

/// The configuration of an `agentgate serve` process ([`crate::process::Process`]) on a free
/// port: the test keys, no agent dispatch, a Redis store whose `[store.redis]` table holds
/// `store_redis`, then `extra` (more tables).
pub fn process_toml(store_redis: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
threads = 1
[auth]
api_keys = ["{KEY}"]
stream_token_secret = "{SECRET}"
[agent]
dispatch = "none"
[store]
kind = "redis"
[store.redis]
{store_redis}
{extra}
"#
    )
}

/// A gateway serving in the background.
pub struct Gateway {
    /// A client of it.
    pub client: Client,
    /// The store's traffic counters.
    pub stats: StoreStats,
    /// The `retry:` every stream must start with.
    retry_ms: u64,
    /// The admin listener, when `server.admin_listen` is set (use port 0).
    pub admin: Option<Client>,
    running: Running,
}

impl Gateway {
    /// Builds and starts a gateway from `config` (its listen address should be port 0),
    /// with a shutdown grace of `grace`.
    pub async fn start_with_grace(config: &Config, grace: Duration) -> Self {
        Self::start_full(config, grace, ToolRegistry::new()).await
    }

    /// Builds and starts a gateway from `config` that also serves the Rust `tools`.
    pub async fn start_with_tools(config: &Config, tools: ToolRegistry) -> Self {
        Self::start_full(config, Duration::from_secs(5), tools).await
    }

    async fn start_full(config: &Config, grace: Duration, tools: ToolRegistry) -> Self {
        let app = agentgate::app::App::build_with_tools(config, tools)
            .await
            .expect("gateway builds");
        let stats = app.api().state().store.stats().clone();
        let admin = match config.server.admin_listen {
            Some(addr) => {
                let admin = std::sync::Arc::new(app.admin());
                let bound = admin
                    .start(addr, app.shutdown.clone())
                    .await
                    .expect("admin listens");
                Some(Client::new(bound))
            }
            None => None,
        };
        let running = Running::start(config.server.listen[0], app, grace)
            .await
            .expect("gateway listens");
        Self {
            client: Client::new(running.addr),
            stats,
            retry_ms: config.sse.retry_ms,
            admin,
            running,
        }
    }

    /// Builds and starts a gateway from `config`.
    pub async fn start(config: &Config) -> Self {
        Self::start_with_grace(config, Duration::from_secs(5)).await
    }

    /// Shuts it down gracefully.
    pub async fn stop(self) {
        self.running.stop().await.expect("graceful stop");
    }

    /// `POST /v2/sessions` with `body`, as [`KEY`]; asserts 201.
    pub async fn init_with(&self, body: &Value) -> Session {
        let reply = self
            .client
            .send_call(self.client.post("/v2/sessions").bearer(KEY).json(body))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "init: {}", reply.text);
        let field = |name: &str| {
            reply.json[name]
                .as_str()
                .unwrap_or_else(|| panic!("init answer lacks {name}: {}", reply.text))
                .to_owned()
        };
        assert_eq!(reply.json["status"], "running");
        assert!(reply.json["stream_token_expires_at"].as_u64().is_some());
        Session {
            id: field("id"),
            token: field("stream_token"),
            stream_url: field("stream_url"),
        }
    }

    /// A new session owned by [`KEY`].
    pub async fn init(&self) -> Session {
        self.init_with(&json!({})).await
    }

    /// Appends `events` (`[{"kind","data"}]`) as one batch; returns their ids.
    pub async fn append(&self, session: &Session, events: &[Value]) -> Vec<String> {
        let reply = self
            .client
            .send_call(
                self.client
                    .post(&session.path("events"))
                    .bearer(KEY)
                    .json(&json!({ "events": events })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "append: {}", reply.text);
        let ids: Vec<String> = reply.json["ids"]
            .as_array()
            .unwrap_or_else(|| panic!("append answer lacks ids: {}", reply.text))
            .iter()
            .map(|v| v.as_str().expect("string id").to_owned())
            .collect();
        assert_eq!(ids.len(), events.len(), "one id per event");
        ids
    }

    /// Completes as `succeeded` with `final_response`; returns the complete event's id.
    pub async fn complete(&self, session: &Session, final_response: &Value) -> String {
        let reply = self
            .client
            .send_call(
                self.client
                    .post(&session.path("complete"))
                    .bearer(KEY)
                    .json(&json!({"status": "succeeded", "final_response": final_response})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "complete: {}", reply.text);
        reply.json["event_id"]
            .as_str()
            .expect("complete answer has event_id")
            .to_owned()
    }

    /// Appends 2000 events of 3 KB (6 MB, more than loopback socket buffers hold) in 8
    /// batches; event `n`'s data is `{"n": n, "pad": pad}`. Returns their ids and the pad.
    pub async fn append_6_mb(&self, session: &Session) -> (Vec<String>, String) {
        let pad = "p".repeat(3000);
        let mut ids = Vec::new();
        for batch in 0..8 {
            let events: Vec<_> = (batch * 250..(batch + 1) * 250)
                .map(|n| json!({"kind": "delta", "data": {"n": n, "pad": pad}}))
                .collect();
            ids.extend(self.append(session, &events).await);
        }
        (ids, pad)
    }

    /// `GET /v2/sessions/{id}` as [`KEY`]; asserts 200.
    pub async fn state(&self, session: &Session) -> Value {
        let reply = self
            .client
            .send_call(
                self.client
                    .get(&format!("/v2/sessions/{}", session.id))
                    .bearer(KEY),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "state: {}", reply.text);
        reply.json
    }

    /// Opens the session's stream with its token (in the query) and reads the `retry:`
    /// frame, so the stream is registered once this returns.
    pub async fn stream(&self, session: &Session) -> SseStream {
        self.open(self.client.get(&session.stream_path())).await
    }

    /// Opens a stream from `call`, asserting 200 and a leading `retry:` frame.
    pub async fn open(&self, call: Call) -> SseStream {
        let mut stream = self
            .client
            .stream(call)
            .await
            .unwrap_or_else(|reply| panic!("stream refused: {} {}", reply.status, reply.text));
        assert_eq!(stream.expect_retry().await, self.retry_ms, "retry: field");
        stream
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let reply = self.client.send_call(self.client.get("/metrics")).await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.text
    }
}

/// The value of an unlabelled metric (or of the series whose name and labels are `series`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A session as init returned it.
#[derive(Debug, Clone)]
pub struct Session {
    /// Session id.
    pub id: String,
    /// Its stream token.
    pub token: String,
    /// Its stream URL (absolute, token in the query).
    pub stream_url: String,
}

impl Session {
    /// `/v2/sessions/{id}/{action}`.
    pub fn path(&self, action: &str) -> String {
        format!("/v2/sessions/{}/{action}", self.id)
    }

    /// `/v2/sessions/{id}/stream?token=..`.
    pub fn stream_path(&self) -> String {
        format!("{}?token={}", self.path("stream"), self.token)
    }
}

/// `n` events `{"kind": "delta", "data": {"n": first + i}}`.
pub fn deltas(first: usize, n: usize) -> Vec<Value> {
    (first..first + n)
        .map(|i| json!({"kind": "delta", "data": {"n": i}}))
        .collect()
}

/// The ids of event frames.
pub fn ids(frames: &[crate::client::SseFrame]) -> Vec<String> {
    frames
        .iter()
        .map(|f| {
            f.id.clone()
                .unwrap_or_else(|| panic!("event without id: {f:?}"))
        })
        .collect()
}

/// The ids of `stream`'s events up to and including `last`; panics if it ends first.
pub async fn ids_until(stream: &mut SseStream, last: &str) -> Vec<String> {
    let mut ids = Vec::new();
    while ids.last().map(String::as_str) != Some(last) {
        let frame = stream.next_event().await.expect("the stream stays open");
        ids.push(frame.id.expect("an event id"));
    }
    ids
}

/// After a failover: what a viewer connected throughout received (`seen`), against a fresh
/// replay (`replay`) of the acknowledged writes (`acked`). Asserts every write that survived
/// reached the viewer exactly once and in order, and nothing never acknowledged did; returns
/// the acknowledged writes that did not survive (replication is asynchronous).
pub fn lost_in_failover<'a>(
    acked: &'a [String],
    seen: &[String],
    replay: &[String],
) -> Vec<&'a String> {
    let key = |id: &str| {
        let (ms, seq) = id.split_once('-').expect("a stream id");
        (
            ms.parse::<u64>().expect("ms"),
            seq.parse::<u64>().expect("seq"),
        )
    };
    assert!(
        seen.windows(2).all(|w| key(&w[0]) < key(&w[1])),
        "the viewer got a duplicate or out of order: {seen:?}"
    );
    let lost: Vec<&String> = acked.iter().filter(|id| !replay.contains(id)).collect();
    for id in replay {
        assert!(seen.contains(id), "the viewer missed {id}");
    }
    for id in seen {
        assert!(
            replay.contains(id) || lost.contains(&id),
            "the viewer got {id}, which was never acknowledged"
        );
    }
    lost
}

/// Runs a blocking harness call (redis-cli, process control) without stalling the runtime.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A tiny deterministic PRNG (xorshift64*), so "random" cut points repeat run to run.
pub struct Prng(pub u64);

impl Prng {
    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform-ish in `1..=n`.
    pub fn between_1_and(&mut self, n: usize) -> usize {
        1 + self.below(n)
    }
}

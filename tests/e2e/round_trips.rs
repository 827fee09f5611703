//! Each agent call costs ONE Redis round trip: init, a batch append, complete — with an
//! `Idempotency-Key` and on its replay too, and with the durable acknowledgement too
//! (`WAIT` pipelined with the write). And the naive
//! baseline (`features.pipelining = false`, with either state layout) costs one round trip
//! per command, each counted as such.

use serde_json::json;

use crate::failover::first_session;
use crate::gateway::{
    Gateway, KEY, blocking, deltas, metric, redis_config, redis_config_with, sentinel_config_with,
};
use crate::support::redis_sentinel::RedisSentinel;
use crate::support::redis_server::RedisServer;

/// The store counters as `/metrics` reports them.
async fn metrics_counters(gateway: &Gateway) -> (u64, u64) {
    let text = gateway.metrics().await;
    let read = |name: &str| {
        metric(&text, name).unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
            as u64
    };
    (
        read("agentgate_store_round_trips_total"),
        read("agentgate_store_commands_total"),
    )
}

/// Measures one step at a time: the gateway's counters, `/metrics` and Redis's own
/// count of script calls.
struct Meter<'a> {
    gateway: &'a Gateway,
    redis: &'a RedisServer,
    counters: (u64, u64),
    evalsha: u64,
}

impl<'a> Meter<'a> {
    async fn new(gateway: &'a Gateway, redis: &'a RedisServer) -> Self {
        let counters = gateway.stats.snapshot();
        assert_eq!(
            metrics_counters(gateway).await,
            counters,
            "/metrics = stats"
        );
        Self {
            gateway,
            redis,
            counters,
            evalsha: blocking(|| redis.command_calls("evalsha")),
        }
    }

    /// Asserts the step since the last call cost exactly one round trip, carrying
    /// `commands` commands (when given), `scripts` of them EVALSHA.
    async fn step(&mut self, what: &str, commands: Option<u64>, scripts: u64) {
        self.step_of(what, 1, commands, scripts).await;
    }

    /// Asserts the step since the last call cost `round_trips` round trips, carrying
    /// `commands` commands (when given), `scripts` of them EVALSHA.
    async fn step_of(&mut self, what: &str, round_trips: u64, commands: Option<u64>, scripts: u64) {
        let now = self.gateway.stats.snapshot();
        assert_eq!(now.0 - self.counters.0, round_trips, "{what}: round trips");
        match commands {
            Some(n) => assert_eq!(now.1 - self.counters.1, n, "{what}: commands"),
            None => assert!(now.1 > self.counters.1, "{what}: commands counted"),
        }
        assert_eq!(
            metrics_counters(self.gateway).await,
            now,
            "{what}: /metrics = stats"
        );
        let calls = blocking(|| self.redis.command_calls("evalsha"));
        assert_eq!(
            calls - self.evalsha,
            scripts,
            "{what}: EVALSHA calls in Redis"
        );
        self.counters = now;
        self.evalsha = calls;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_append_and_complete_take_one_round_trip_each() {
    let redis = blocking(RedisServer::start);
    let gateway = Gateway::start(&redis_config(&redis)).await;

    // Warm up: the first call of each script on a fresh Redis is refused (NOSCRIPT) and
    // retried as EVAL, which caches it: two round trips, once. The steady state follows.
    let before = gateway.stats.snapshot().0;
    let warm = gateway.init().await;
    let cost = gateway.stats.snapshot().0 - before;
    assert_eq!(cost, 2, "first init on a fresh Redis: EVALSHA, then EVAL");
    for (what, call) in [("append", 0), ("complete", 1)] {
        let before = gateway.stats.snapshot().0;
        if call == 0 {
            gateway.append(&warm, &deltas(0, 1)).await;
        } else {
            gateway.complete(&warm, &json!(null)).await;
        }
        let cost = gateway.stats.snapshot().0 - before;
        assert_eq!(cost, 2, "first {what} on a fresh Redis: EVALSHA, then EVAL");
    }

    let mut meter = Meter::new(&gateway, &redis).await;
    let session = gateway.init().await;
    // Init is a script too: the session quota must be checked before anything is written.
    meter.step("init", Some(1), 1).await;
    let ids = gateway.append(&session, &deltas(0, 10)).await;
    assert_eq!(ids.len(), 10);
    meter.step("append of 10 events", Some(1), 1).await;
    gateway.complete(&session, &json!({"ok": true})).await;
    meter.step("complete", Some(1), 1).await;
    // A read for comparison: state is one HGETALL.
    assert_eq!(gateway.state(&session).await["event_count"], 11);
    meter.step("state", Some(1), 0).await;

    // Requests are counted by route and status: two of each write (warm-up and measured).
    let text = gateway.metrics().await;
    for (route, status, n) in [
        ("init", 201, 2.0),
        ("append", 200, 2.0),
        ("complete", 200, 2.0),
        ("state", 200, 1.0),
    ] {
        let series =
            format!(r#"agentgate_http_requests_total{{route="{route}",status="{status}"}}"#);
        assert_eq!(metric(&text, &series), Some(n), "{series} in\n{text}");
    }
    // Commands by name agree with Redis's own statistics.
    for command in ["evalsha", "eval", "hgetall"] {
        let series = format!(
            r#"agentgate_store_commands_by_name_total{{command="{}"}}"#,
            command.to_uppercase()
        );
        let ours = metric(&text, &series).unwrap_or(0.0);
        let redis_says = blocking(|| redis.command_calls(command)) as f64;
        assert_eq!(ours, redis_says, "{series} vs Redis commandstats\n{text}");
    }
}

/// With an `Idempotency-Key`, an append and a complete still cost one round trip each, and
/// so do their replays: the key is checked and recorded inside the write's script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_writes_and_their_replays_take_one_round_trip_each() {
    let redis = blocking(RedisServer::start);
    let gateway = Gateway::start(&redis_config(&redis)).await;
    // Warm up the script cache (the first call of each script is EVALSHA, then EVAL).
    let warm = gateway.init().await;
    gateway.append(&warm, &deltas(0, 1)).await;
    gateway.complete(&warm, &json!(null)).await;

    let mut meter = Meter::new(&gateway, &redis).await;
    let session = gateway.init().await;
    meter.step("init", Some(1), 1).await;
    let c = &gateway.client;
    for (what, path, body) in [
        (
            "append",
            session.path("events"),
            json!({ "events": deltas(0, 10) }),
        ),
        (
            "complete",
            session.path("complete"),
            json!({"final_response": 1}),
        ),
    ] {
        for (attempt, replayed) in [("first", None), ("retry", Some("true"))] {
            let call = c.post(&path).bearer(KEY).header("idempotency-key", what);
            let reply = c.send_call(call.json(&body)).await;
            assert_eq!(reply.status, 200, "{what}: {}", reply.text);
            assert_eq!(reply.header("idempotent-replayed"), replayed);
            meter.step(&format!("{what}, {attempt}"), Some(1), 1).await;
        }
    }
}

/// With `ack_replicas`, each write and its `WAIT` travel in one pipeline: init, append and
/// complete still cost one round trip each, of two commands (the script and `WAIT`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_take_one_round_trip_each() {
    let setup = blocking(RedisSentinel::start);
    // Generous timeouts: a slow replica on a loaded machine must not fail the count.
    let config = sentinel_config_with(
        &setup,
        "timeout_ms = 10000\nack_replicas = 1\nack_timeout_ms = 5000",
    );
    blocking(|| setup.wait_for_replica());
    let gateway = Gateway::start(&config).await;
    // Once the store has found the master (it asks the Sentinels lazily), warm up the
    // script cache (a fresh Redis answers the first EVALSHA of each NOSCRIPT).
    let warm = first_session(&gateway).await;
    gateway.append(&warm, &deltas(0, 1)).await;
    gateway.complete(&warm, &json!(null)).await;

    let mut before = gateway.stats.snapshot();
    let mut step = |what: &str| {
        let now = gateway.stats.snapshot();
        assert_eq!(now.0 - before.0, 1, "{what}: round trips");
        assert_eq!(
            now.1 - before.1,
            2,
            "{what}: commands (the script and WAIT)"
        );
        before = now;
    };
    let session = gateway.init().await;
    step("init");
    gateway.append(&session, &deltas(0, 10)).await;
    step("append of 10 events");
    gateway.complete(&session, &json!({"ok": true})).await;
    step("complete");
}

/// A stream resumed behind the log's cap learns of its gap from its one replay read: no
/// extra command for the gap (the oldest kept entry's `prev` names it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_reads_its_gap_in_the_same_round_trip() {
    let redis = blocking(RedisServer::start);
    let mut config = redis_config(&redis);
    config.store.events_maxlen = 20;
    config.features.existence_cache = false;
    let gateway = Gateway::start(&config).await;
    let session = gateway.init().await;
    let mut ids = Vec::new();
    for n in (0..200).step_by(20) {
        ids.extend(gateway.append(&session, &deltas(n, 20)).await);
    }
    gateway.complete(&session, &json!(null)).await;

    let mut meter = Meter::new(&gateway, &redis).await;
    let xrange = blocking(|| redis.command_calls("xrange"));
    let call = gateway
        .client
        .get(&session.stream_path())
        .header("last-event-id", &ids[0]);
    let frames = gateway.open(call).await.events_to_end().await;
    assert_eq!(frames[0].event.as_deref(), Some("gap"));
    assert_eq!(frames.last().unwrap().event.as_deref(), Some("complete"));
    // The handler's EXISTS, then the replay: the gap and every kept event in one XRANGE.
    meter
        .step_of("stream resumed behind the cap", 2, Some(2), 0)
        .await;
    assert_eq!(blocking(|| redis.command_calls("xrange")) - xrange, 1);
}

/// The naive baseline: every command is its own round trip, and the gateway's count of
/// each agrees with Redis's own.
async fn naive_round_trips(hash_state: bool) {
    let redis = blocking(RedisServer::start);
    let features = format!("[features]\npipelining = false\nhash_state = {hash_state}\n");
    let gateway = Gateway::start(&redis_config_with(&redis, &features)).await;
    // The state update after the XADDs: HINCRBY x2 (events, bytes) + HSET, or one SET of the
    // whole object; after the complete event: HSET + HINCRBY, or one SET.
    let (append_update, complete_update, check, state) = if hash_state {
        (3, 2, "hmget", "hgetall")
    } else {
        (1, 1, "get", "get")
    };

    let mut meter = Meter::new(&gateway, &redis).await;
    let session = gateway.init().await;
    // The quota (ZREMRANGEBYSCORE, ZCARD, ZADD, PEXPIRE), write the state, then PEXPIRE.
    meter.step_of("init", 6, Some(6), 0).await;
    assert_eq!(gateway.append(&session, &deltas(0, 10)).await.len(), 10);
    // Check, the newest id (XREVRANGE: the first entry's `prev`), 10 XADDs, update, PEXPIRE
    // x2, the quota deadline (ZADD XX, PEXPIRE), PUBLISH.
    let append = 1 + 1 + 10 + append_update + 2 + 2 + 1;
    meter
        .step_of("append of 10 events", append, Some(append), 0)
        .await;
    gateway.complete(&session, &json!({"ok": true})).await;
    // Check, the newest id, XADD, the status fields (and the count, with a hash), PEXPIRE x2,
    // PUBLISH, ZREM of the quota slot.
    let complete = 1 + 1 + 1 + complete_update + 2 + 1 + 1;
    meter.step_of("complete", complete, Some(complete), 0).await;
    let state_reply = gateway.state(&session).await;
    assert_eq!(state_reply["event_count"], 11);
    assert_eq!(state_reply["status"], "succeeded");
    meter.step_of("state", 1, Some(1), 0).await;

    let text = gateway.metrics().await;
    let mut names = vec![
        "xadd",
        "xrevrange",
        "pexpire",
        "publish",
        "zremrangebyscore",
        "zcard",
        "zadd",
        "zrem",
        check,
        state,
    ];
    if hash_state {
        names.extend(["hset", "hincrby"]);
    } else {
        names.push("set");
    }
    names.dedup();
    for command in names {
        let series = format!(
            r#"agentgate_store_commands_by_name_total{{command="{}"}}"#,
            command.to_uppercase()
        );
        let ours = metric(&text, &series).unwrap_or(0.0);
        let redis_says = blocking(|| redis.command_calls(command)) as f64;
        assert!(ours > 0.0, "{series} counted\n{text}");
        assert_eq!(ours, redis_says, "{series} vs Redis commandstats\n{text}");
    }
    for unused in ["evalsha", "eval", "multi", "exec"] {
        assert_eq!(blocking(|| redis.command_calls(unused)), 0, "{unused} sent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naive_baseline_sends_one_command_per_round_trip() {
    naive_round_trips(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_writes_with_hash_state_count_every_command() {
    naive_round_trips(true).await;
}

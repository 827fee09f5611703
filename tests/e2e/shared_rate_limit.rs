//! `store = "redis"` rate limits: two gateway *processes* on one private Redis enforce one
//! limit; with Redis down, `on_store_error` decides between letting requests through and
//! `503`; the GCRA script counts exactly on standalone Redis and on a 3-node Cluster; no
//! API key ever appears in a Redis key name or in the gateway's debug output.

use http::StatusCode;

use crate::client::Client;
use crate::gateway::{Gateway, KEY, blocking, process_toml};
use crate::process::Process;
use crate::support::redis_server::RedisServer;

/// `[[routes]]` for every path with a global rate limit of `burst` at once, 1/s, in Redis.
fn limited_routes(burst: u32, on_store_error: &str) -> String {
    format!(
        r#"
[[routes]]
name = "api"
kind = "agent"
path_prefix = "/"
[routes.rate_limit]
per_second = 1
burst = {burst}
key = "global"
store = "redis"
on_store_error = "{on_store_error}"
"#
    )
}

fn config_toml(redis: &RedisServer, routes: &str) -> String {
    process_toml(
        &format!("urls = [\"{}\"]\ntimeout_ms = 500", redis.url()),
        routes,
    )
}

async fn status(client: &Client) -> StatusCode {
    client.send_call(client.get("/healthz")).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_processes_share_one_limit() {
    let redis = blocking(RedisServer::start);
    let toml = config_toml(&redis, &limited_routes(4, "open"));
    let (a, b) = blocking(|| (Process::start(&toml), Process::start(&toml)));
    let (a, b) = (Client::new(a.addr), Client::new(b.addr));

    // Exhaust the one bucket through A, then ask B: with per-process limits B would have a
    // full bucket of its own. A cell comes back every second, so B may be allowed if the
    // refill happens right between the two requests; with per-process buckets B is allowed
    // every time, so three tries tell the two apart.
    let mut b_refused = false;
    for _ in 0..3 {
        let mut passed_a = 0;
        while status(&a).await == StatusCode::OK {
            passed_a += 1;
            assert!(passed_a <= 10, "A is not limited at all");
        }
        let reply = b.send_call(b.get("/healthz")).await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(reply.error_code(), "rate_limited");
            assert_eq!(reply.header("retry-after"), Some("1"));
            b_refused = true;
            break;
        }
    }
    assert!(b_refused, "gateway B never saw the limit gateway A used up");
    // Both processes wrote one bucket, in Redis.
    let keys = blocking(|| redis.keys());
    assert_eq!(keys, ["agentgate:rl:api:global"], "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_api_key_in_redis_key_names_or_debug_logs() {
    let redis = blocking(RedisServer::start);
    // One route keyed by the raw Authorization header, one by the verified API key.
    let routes = r#"
[[routes]]
name = "by-header"
kind = "agent"
path_prefix = "/healthz"
[routes.rate_limit]
per_second = 1
burst = 20
key = "header"
key_header = "authorization"
store = "redis"
[[routes]]
name = "by-key"
kind = "agent"
path_prefix = "/"
[routes.rate_limit]
per_second = 1
burst = 20
key = "api_key"
store = "redis"
"#;
    let toml = config_toml(&redis, routes);
    let mut gateway = blocking(|| Process::start_with_log(&toml, "debug"));
    let client = Client::new(gateway.addr);
    // Each route: its burst allowed, then refused (the refusal is logged at debug). A burst
    // of 20 keeps the buckets in Redis for 20 s: long enough to scan them.
    for path in ["/healthz", "/v2/sessions"] {
        let mut passed = 0;
        let refused = loop {
            let reply = client.send_call(client.get(path).bearer(KEY)).await;
            if reply.status == StatusCode::TOO_MANY_REQUESTS {
                break reply;
            }
            passed += 1;
            assert!(passed <= 25, "{path} is not limited");
        };
        assert_eq!(refused.error_code(), "rate_limited");
    }
    let refusal = |l: &String| l.contains("rate limited (shared)");
    let lines = blocking(|| {
        let mut lines = Vec::new();
        while lines.iter().filter(|l| refusal(l)).count() < 2 {
            lines.extend(gateway.lines_until(|l| l.contains("rate limited (shared)")));
        }
        lines
    });
    // Something that could leak was logged: the refusals name their bucket.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("agentgate:rl:by-header:h:")),
        "{lines:#?}"
    );
    let secret = &KEY[KEY.len() - 12..];
    for line in &lines {
        assert!(!line.contains(secret), "API key in a log line: {line}");
    }
    let keys = blocking(|| redis.keys());
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys.iter()
            .any(|k| k.starts_with("agentgate:rl:by-header:h:")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.starts_with("agentgate:rl:by-key:k:")),
        "{keys:?}"
    );
    for key in &keys {
        assert!(!key.contains(secret), "API key in a Redis key name: {key}");
    }
}

/// Kills Redis under a gateway whose route is limited in Redis with `on_store_error = mode`
/// and returns what a request gets then.
async fn with_redis_down(mode: &str) -> crate::client::Reply {
    let mut redis = blocking(RedisServer::start);
    let mut config = crate::gateway::redis_config(&redis);
    config.routes =
        agentgate_config::Config::from_toml_str(&config_toml(&redis, &limited_routes(100, mode)))
            .expect("valid config")
            .routes;
    let gateway = Gateway::start(&config).await;
    assert_eq!(status(&gateway.client).await, StatusCode::OK);
    blocking(|| redis.kill());
    let reply = gateway
        .client
        .send_call(gateway.client.get("/healthz"))
        .await;
    gateway.stop().await;
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_open_by_default() {
    let reply = with_redis_down("open").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_closed_when_configured() {
    let reply = with_redis_down("closed").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text
    );
    assert_eq!(reply.error_code(), "rate_limit_unavailable");
    assert_eq!(reply.header("retry-after"), Some("1"));
}

/// The GCRA script's arithmetic on a real server: a fresh key gets `burst` requests at once,
/// each reporting what is left, then a refusal whose `retry_after` is at most one interval;
/// a refusal writes nothing.
async fn script_counts_exactly(store: &agentgate::store::redis::RedisStore) {
    use agentgate_middleware::rate_limit::{Quota, Verdict};
    let gcra = store.rate_limiter();
    // One request per 10 s: no refill can happen while the test runs.
    let quota = Quota {
        interval: std::time::Duration::from_secs(10),
        burst: 3,
    };
    for remaining in [2, 1, 0] {
        assert_eq!(
            gcra.check("test:key", quota).await,
            Ok(Verdict::Allowed { remaining })
        );
    }
    for _ in 0..2 {
        match gcra.check("test:key", quota).await {
            Ok(Verdict::Limited { retry_after }) => {
                assert!(retry_after <= quota.interval && !retry_after.is_zero());
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    // Another key has its own bucket.
    assert_eq!(
        gcra.check("test:other", quota).await,
        Ok(Verdict::Allowed { remaining: 2 })
    );
}

async fn redis_store(
    urls: Vec<String>,
    cluster: bool,
) -> std::sync::Arc<agentgate::store::redis::RedisStore> {
    agentgate::store::redis::RedisStore::connect(agentgate::store::redis::RedisSettings {
        urls,
        cluster,
        sentinel_master: None,
        sentinel_master_password: None,
        ack_replicas: 0,
        ack_timeout: std::time::Duration::from_millis(500),
        timeout: std::time::Duration::from_secs(5),
        connect_timeout: std::time::Duration::from_secs(2),
        events_maxlen: 1000,
        retention: std::time::Duration::from_secs(60),
        session_ttl: std::time::Duration::from_secs(60),
        pipelining: true,
        hash_state: true,
        quotas: Default::default(),
        subscribe: Default::default(),
    })
    .await
    .expect("redis store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcra_script_counts_exactly_on_redis() {
    let redis = blocking(RedisServer::start);
    script_counts_exactly(&*redis_store(vec![redis.url()], false).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcra_script_counts_exactly_on_redis_cluster() {
    let cluster = blocking(crate::support::redis_cluster::RedisCluster::start);
    script_counts_exactly(&*redis_store(cluster.urls(), true).await).await;
}

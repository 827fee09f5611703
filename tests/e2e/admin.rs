//! The admin listener: metrics, liveness, readiness that follows Redis and upstream health,
//! and the effective configuration with secrets redacted.

use http::StatusCode;

use crate::gateway::{Gateway, KEY, SECRET, blocking, redis_config, redis_config_with};
use crate::support::redis_server::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_redis_and_upstream_health_and_config_hides_secrets() {
    let mut redis = blocking(RedisServer::start);
    // A route to a group whose only peer is down (a port nobody listens on), health-checked.
    let dead = crate::support::redis_server::free_port();
    let mut config = redis_config_with(
        &redis,
        &format!(
            r#"
[[routes]]
name = "agent"
kind = "agent"
path_prefix = "/v2/"
[[routes]]
name = "web"
kind = "upstream"
path_prefix = "/"
upstream = "web"
[upstreams.web]
peers = ["127.0.0.1:{dead}"]
[upstreams.web.health_check]
path = "/healthz"
interval_ms = 100
unhealthy_threshold = 1
"#
        ),
    );
    config.server.admin_listen = Some("127.0.0.1:0".parse().expect("addr"));
    let gateway = Gateway::start(&config).await;
    let admin = gateway.admin.clone().expect("admin listener");

    let health = admin.send_call(admin.get("/healthz")).await;
    assert_eq!(health.status, StatusCode::OK);
    let metrics = admin.send_call(admin.get("/metrics")).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.text.contains("agentgate_store_round_trips_total"));

    // The dead peer is ejected by its health check: not ready, and the body says why.
    let mut ready = admin.send_call(admin.get("/readyz")).await;
    for _ in 0..100 {
        if ready.status == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        ready = admin.send_call(admin.get("/readyz")).await;
    }
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.text
    );
    assert_eq!(ready.json["checks"]["upstreams"]["web"]["healthy"], 0);
    assert_eq!(ready.json["checks"]["store"], "ok");

    // Redis down: the store check fails too.
    blocking(|| redis.kill());
    let ready = admin.send_call(admin.get("/readyz")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_ne!(ready.json["checks"]["store"], "ok", "{}", ready.text);

    let shown = admin.send_call(admin.get("/admin/config")).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert!(
        !shown.text.contains(KEY) && !shown.text.contains(SECRET),
        "{}",
        shown.text
    );
    assert_eq!(shown.json["routes"][1]["upstream"], "web");
    assert_eq!(
        admin.send_call(admin.get("/nope")).await.status,
        StatusCode::NOT_FOUND
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_when_the_store_answers_and_no_upstream_is_required() {
    let redis = blocking(RedisServer::start);
    let mut config = redis_config(&redis);
    config.server.admin_listen = Some("127.0.0.1:0".parse().expect("addr"));
    let gateway = Gateway::start(&config).await;
    let admin = gateway.admin.clone().expect("admin listener");
    let ready = admin.send_call(admin.get("/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_eq!(ready.json["ready"], true);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_latencies_and_process_figures_move() {
    let mut config = crate::gateway::memory_config();
    config.server.admin_listen = Some("127.0.0.1:0".parse().expect("addr"));
    let gateway = Gateway::start(&config).await;
    let admin = gateway.admin.clone().expect("admin listener");
    let count = |text: &str, route: &str| {
        crate::gateway::metric(
            text,
            &format!("agentgate_http_request_duration_seconds_count{{route=\"{route}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let before = admin.send_call(admin.get("/metrics")).await.text;
    let session = gateway.init().await;
    drop(gateway.stream(&session).await);
    let after = admin.send_call(admin.get("/metrics")).await.text;
    // Init's time to first byte and the stream's connection establishment were observed.
    assert_eq!(
        count(&after, "init") - count(&before, "init"),
        1.0,
        "{after}"
    );
    assert_eq!(
        count(&after, "stream") - count(&before, "stream"),
        1.0,
        "{after}"
    );
    let cpu = crate::gateway::metric(&after, "agentgate_process_cpu_seconds_total");
    assert!(cpu > Some(0.0), "{after}");
    let rss = crate::gateway::metric(&after, "agentgate_process_resident_memory_bytes");
    assert!(rss > Some(1_000_000.0), "{after}");
    gateway.stop().await;
}

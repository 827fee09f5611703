//! The existence cache in the gateway: 1000 concurrent stream connects to one session cost
//! one Redis `EXISTS` with the cache on, and one each with `features.existence_cache = false`;
//! a session Redis expires leaves the cache at once (keyspace events), not after its TTL.

use std::sync::Arc;

use crate::client::within;
use crate::gateway::{Gateway, blocking, redis_config};
use crate::support::redis_server::RedisServer;

const CONNECTS: usize = 1000;

/// Redis `EXISTS` calls caused by CONNECTS concurrent stream connects to one session.
async fn exists_calls_for_concurrent_connects(existence_cache: bool) -> u64 {
    let redis = blocking(RedisServer::start);
    let mut config = redis_config(&redis);
    config.features.existence_cache = existence_cache;
    // Measured alone: with fan-out, joiners of a shared stream would not reach the store.
    config.features.sse_fanout = false;
    let gateway = Gateway::start(&config).await;
    let session = gateway.init().await;
    let before = blocking(|| redis.command_calls("exists"));

    // Every reader holds its stream open until all are connected, so the connects overlap.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(CONNECTS);
    let release = Arc::new(tokio::sync::Notify::new());
    let mut readers = Vec::with_capacity(CONNECTS);
    for _ in 0..CONNECTS {
        let (client, path) = (gateway.client.clone(), session.stream_path());
        let (ready, release) = (ready_tx.clone(), Arc::clone(&release));
        readers.push(tokio::spawn(async move {
            let released = release.notified();
            let mut stream = client
                .stream(client.get(&path))
                .await
                .unwrap_or_else(|r| panic!("stream refused: {} {}", r.status, r.text));
            stream.expect_retry().await;
            ready.send(()).await.expect("test alive");
            released.await;
        }));
    }
    drop(ready_tx);
    for i in 0..CONNECTS {
        within(&format!("stream {i} to connect"), ready_rx.recv())
            .await
            .expect("a reader failed before connecting");
    }
    let after = blocking(|| redis.command_calls("exists"));
    release.notify_waiters();
    for reader in readers {
        within("readers to finish", reader)
            .await
            .expect("reader panicked");
    }
    gateway.stop().await;
    after - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_stream_connects_share_one_exists_with_the_cache_on() {
    assert_eq!(exists_calls_for_concurrent_connects(true).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_connect_asks_redis_with_the_cache_off() {
    assert_eq!(
        exists_calls_for_concurrent_connects(false).await,
        CONNECTS as u64
    );
}

/// Stream connects until one of them asks Redis again (the cached "exists" is gone), and
/// what that connect got. Polls, bounded; with a stale cache it would give up.
async fn connect_until_checked_again(
    gateway: &Gateway,
    session: &crate::gateway::Session,
    redis: &RedisServer,
    checked: u64,
) -> http::StatusCode {
    for _ in 0..300 {
        let status = match gateway
            .client
            .stream(gateway.client.get(&session.stream_path()))
            .await
        {
            Ok(_) => http::StatusCode::OK,
            Err(reply) => reply.status,
        };
        if blocking(|| redis.command_calls("exists")) > checked {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the cached answer outlived the session's expiry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_leaves_the_cache() {
    // Redis announces expirations; the cache would otherwise trust "exists" for an hour.
    let redis = blocking(|| RedisServer::start_with(&["--notify-keyspace-events", "Ex"]));
    let mut config = redis_config(&redis);
    config.existence_cache.positive_ttl_ms = 3_600_000;
    let gateway = Gateway::start(&config).await;
    let session = gateway.init().await;
    let before = blocking(|| redis.command_calls("exists"));
    for _ in 0..2 {
        drop(gateway.stream(&session).await);
    }
    assert_eq!(blocking(|| redis.command_calls("exists")), before + 1);

    // The session expires in Redis (as an idle session does after store.session_ttl_secs).
    let meta = format!("ag:{{{}}}:meta", session.id);
    blocking(|| redis.command(&["PEXPIRE", &meta, "1"]));
    let status = connect_until_checked_again(&gateway, &session, &redis, before + 1).await;
    assert_eq!(status, http::StatusCode::NOT_FOUND);
    gateway.stop().await;
}

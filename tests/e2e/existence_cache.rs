//! The existence cache in the gateway: 1000 concurrent stream connects to one session cost
//! one Redis `EXISTS` with the cache on, and one each with `features.existence_cache = false`.

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

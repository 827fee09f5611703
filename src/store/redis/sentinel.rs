//! Redis Sentinel (`store.redis.sentinel_master`): where the master is, kept current.
//!
//! One task per store asks the Sentinels (`store.redis.urls`) for the master of the
//! configured name (`SENTINEL MASTERS`, then `ROLE` on the node they name, so a demoted
//! master is never taken for the new one) and publishes a [`Master`]: the client and the
//! lazily connecting command connections to it. It asks again at once when a command through
//! it fails (the master is gone, or answers `READONLY` because it was demoted), at most every
//! [`RETRY_GAP`], and every [`POLL`] regardless, so a failover that breaks nothing the
//! gateway notices (a master silently unreachable) is still followed. A new address
//! replaces the connections; the notifier ([`super::notifier`]) watches the same value and
//! resubscribes on the new master, which wakes every reader to re-read.
//!
//! Until the first answer, and while the Sentinels name a master that does not answer,
//! commands fail as unavailable (503 with `Retry-After`), never waiting past
//! `store.redis.timeout_ms`.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{ProtocolVersion, RedisConnectionInfo};
use tokio::sync::{Notify, watch};

use super::RedisSettings;
use super::connection::{ACK_LANES, manager_config};

/// How often the Sentinels are asked even when nothing failed.
const POLL: Duration = Duration::from_secs(1);
/// The least time between two questions, however many commands fail meanwhile.
const RETRY_GAP: Duration = Duration::from_millis(100);

/// The master as the Sentinels last named it: its client and connections.
pub(super) struct Master {
    /// `host:port`, for logs and to tell one master from the next.
    pub(super) addr: String,
    /// A client for the master (the notifier derives its RESP3 connection from it).
    pub(super) client: redis::Client,
    /// The multiplexed command connection.
    pub(super) commands: ConnectionManager,
    /// The connections of writes that wait for replicas (`store.redis.ack_replicas`),
    /// [`ACK_LANES`] of them.
    pub(super) acked: Vec<ConnectionManager>,
}

/// A handle on the followed master; clones share the one following task, which ends when
/// the last handle is dropped.
#[derive(Clone)]
pub(super) struct SentinelMaster {
    current: watch::Receiver<Option<Arc<Master>>>,
    failed: Arc<Notify>,
}

impl SentinelMaster {
    /// Starts following the master named `master_name` through the Sentinels at
    /// `settings.urls` (their URLs carry their own credentials and TLS). Fails only on a
    /// malformed URL.
    pub(super) fn follow(settings: &RedisSettings, master_name: &str) -> redis::RedisResult<Self> {
        let sentinel = Sentinel::build(settings.urls.clone())?;
        let mut redis = RedisConnectionInfo::default();
        if let Some(password) = &settings.sentinel_master_password {
            redis = redis.set_password(password);
        }
        let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(redis);
        let (publish, current) = watch::channel(None);
        let failed = Arc::new(Notify::new());
        tokio::spawn(follow_master(
            sentinel,
            master_name.to_owned(),
            node,
            settings.clone(),
            publish,
            Arc::clone(&failed),
        ));
        Ok(Self { current, failed })
    }

    /// The master as last named, if any yet.
    pub(super) fn current(&self) -> Option<Arc<Master>> {
        self.current.borrow().clone()
    }

    /// Tells the follower a command failed: the master may have moved.
    pub(super) fn failed(&self) {
        self.failed.notify_one();
    }

    /// Waits until another master is named (forever once the follower has ended).
    pub(super) async fn changed(&mut self) {
        if self.current.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Master {
    /// A RESP3 client for the master (pub/sub pushes on a regular connection).
    pub(super) fn resp3_client(&self) -> redis::RedisResult<redis::Client> {
        let info = self.client.get_connection_info().clone();
        let redis = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        redis::Client::open(info.set_redis_settings(redis))
    }
}

/// The following task: asks, publishes a changed master, waits for a failure or [`POLL`].
async fn follow_master(
    mut sentinel: Sentinel,
    name: String,
    node: SentinelNodeConnectionInfo,
    settings: RedisSettings,
    publish: watch::Sender<Option<Arc<Master>>>,
    failed: Arc<Notify>,
) {
    // Each Sentinel connects and answers, then the named master is checked with ROLE.
    let deadline = settings.connect_timeout * 2 + settings.timeout;
    while !publish.is_closed() {
        match tokio::time::timeout(deadline, sentinel.async_master_for(&name, Some(&node))).await {
            Ok(Ok(client)) => {
                let addr = client.get_connection_info().addr().to_string();
                let known = publish.borrow().as_ref().map(|m| m.addr.clone());
                if known.as_deref() != Some(addr.as_str()) {
                    match open_master(client, addr, &settings) {
                        Ok(master) => {
                            tracing::info!(master = %master.addr, name, "redis sentinel: following master");
                            publish.send_replace(Some(Arc::new(master)));
                        }
                        Err(e) => tracing::warn!(error = %e, "redis sentinel: master unusable"),
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, name, "redis sentinel: no master"),
            Err(_) => tracing::warn!(name, "redis sentinel: no answer in time"),
        }
        tokio::select! {
            () = failed.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
        tokio::time::sleep(RETRY_GAP).await;
    }
}

/// The connections to a newly named master (they connect on first use).
fn open_master(
    client: redis::Client,
    addr: String,
    settings: &RedisSettings,
) -> redis::RedisResult<Master> {
    let connection =
        || ConnectionManager::new_lazy_with_config(client.clone(), manager_config(settings));
    Ok(Master {
        commands: connection()?,
        acked: (0..ACK_LANES)
            .map(|_| connection())
            .collect::<redis::RedisResult<_>>()?,
        addr,
        client,
    })
}

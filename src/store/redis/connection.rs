//! The store's command connection: one multiplexed connection (standalone, reconnecting by
//! itself), one Cluster handle, or the connection to the master the Sentinels name
//! ([`super::sentinel`], following failovers), wrapped so that every round trip and every
//! command sent through it is counted in [`StoreStats`] (the `agentgate_store_*` metrics
//! the benchmark reads). The shared rate limiter uses the same connection, so its calls
//! count too.
//!
//! Writes that wait for replicas (`store.redis.ack_replicas`) go through connections of their
//! own, [`ACK_LANES`] of them ([`CountedConnection::acked`]): Redis runs nothing else of a
//! connection while its `WAIT` blocks, so reads must not queue behind it, and acknowledged
//! writes on one connection would wait for each other's replication.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::RedisSettings;
use super::sentinel::SentinelMaster;
use crate::store::{StoreError, StoreStats};

/// A command connection (standalone or Cluster) that counts round trips and commands.
#[derive(Clone)]
pub(super) struct CountedConnection {
    backend: Backend,
    stats: StoreStats,
}

/// The connection under the counting.
#[derive(Clone)]
enum Backend {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
    /// The master the Sentinels name, on the given connection of it.
    Sentinel(SentinelMaster, Lane),
}

/// Connections for acknowledged writes (`ack_replicas > 0`): up to this many `WAIT`s block
/// at once, each on its own connection.
pub(super) const ACK_LANES: usize = 4;

/// Which of the master's connections a [`Backend::Sentinel`] uses.
#[derive(Clone, Copy)]
enum Lane {
    Commands,
    /// One of the [`ACK_LANES`] connections of acknowledged writes.
    Acked(usize),
}

impl CountedConnection {
    /// Opens the command connection; standalone connects lazily (see
    /// [`RedisStore::connect`](super::RedisStore::connect)). Fails on a malformed URL, and on
    /// Cluster when no seed node answers.
    pub(super) async fn open(
        settings: &RedisSettings,
        stats: StoreStats,
    ) -> Result<Self, StoreError> {
        let bad_url = |e: redis::RedisError| StoreError::Unavailable(format!("redis url: {e}"));
        let backend = if settings.cluster {
            let client = ClusterClient::builder(settings.urls.clone())
                .connection_timeout(settings.connect_timeout)
                .response_timeout(settings.timeout)
                .build()
                .map_err(bad_url)?;
            let conn = client
                .get_async_connection()
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            Backend::Cluster(conn)
        } else if let Some(name) = &settings.sentinel_master {
            Backend::Sentinel(
                SentinelMaster::follow(settings, name).map_err(bad_url)?,
                Lane::Commands,
            )
        } else {
            let url = settings
                .urls
                .first()
                .ok_or_else(|| StoreError::Unavailable("no redis url configured".to_owned()))?;
            let client = redis::Client::open(url.as_str()).map_err(bad_url)?;
            let conn = ConnectionManager::new_lazy_with_config(client, manager_config(settings))
                .map_err(bad_url)?;
            Backend::Standalone(conn)
        };
        Ok(Self { backend, stats })
    }

    /// [`ACK_LANES`] more connections to the same node, for writes followed by `WAIT`
    /// (which blocks the connection it runs on); `None` on Cluster, where acknowledged writes
    /// are not offered.
    pub(super) fn acked(&self, settings: &RedisSettings) -> Result<Option<Vec<Self>>, StoreError> {
        let bad_url = |e: redis::RedisError| StoreError::Unavailable(format!("redis url: {e}"));
        (0..ACK_LANES)
            .map(|lane| {
                let backend = match &self.backend {
                    Backend::Cluster(_) => return Ok(None),
                    Backend::Sentinel(master, _) => {
                        Backend::Sentinel(master.clone(), Lane::Acked(lane))
                    }
                    Backend::Standalone(_) => {
                        let url = settings.urls.first().map_or("", String::as_str);
                        let client = redis::Client::open(url).map_err(bad_url)?;
                        let config = manager_config(settings);
                        Backend::Standalone(
                            ConnectionManager::new_lazy_with_config(client, config)
                                .map_err(bad_url)?,
                        )
                    }
                };
                Ok(Some(Self {
                    backend,
                    stats: self.stats.clone(),
                }))
            })
            .collect()
    }

    /// The followed Sentinel master, when the store uses Sentinel.
    pub(super) fn sentinel(&self) -> Option<SentinelMaster> {
        match &self.backend {
            Backend::Sentinel(master, _) => Some(master.clone()),
            _ => None,
        }
    }

    /// The same connection, its traffic counted in a throwaway [`StoreStats`]: for work that
    /// is not the requests' cost (memory sampling).
    pub(super) fn uncounted(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            stats: StoreStats::default(),
        }
    }
}

impl ConnectionLike for CountedConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.stats.record(1);
        record_name(&self.stats, cmd);
        match &mut self.backend {
            Backend::Standalone(c) => c.req_packed_command(cmd),
            Backend::Cluster(c) => c.req_packed_command(cmd),
            Backend::Sentinel(master, lane) => {
                let (master, lane) = (master.clone(), *lane);
                Box::pin(async move {
                    let mut conn = master_connection(&master, lane)?;
                    let reply = conn.send_packed_command(cmd).await;
                    if reply.is_err() {
                        master.failed();
                    }
                    reply
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.stats.record(pipeline.len());
        for cmd in pipeline.cmd_iter() {
            record_name(&self.stats, cmd);
        }
        match &mut self.backend {
            Backend::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Backend::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Backend::Sentinel(master, lane) => {
                let (master, lane) = (master.clone(), *lane);
                Box::pin(async move {
                    let mut conn = master_connection(&master, lane)?;
                    let reply = conn.send_packed_commands(pipeline, offset, count).await;
                    if reply.is_err() {
                        master.failed();
                    }
                    reply
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.backend {
            Backend::Standalone(c) => c.get_db(),
            Backend::Cluster(c) => c.get_db(),
            Backend::Sentinel(..) => 0,
        }
    }
}

/// The connection of `lane` to the master the Sentinels last named; an error (the call
/// fails as unavailable) until they have named one.
fn master_connection(master: &SentinelMaster, lane: Lane) -> redis::RedisResult<ConnectionManager> {
    let current = master.current().ok_or_else(|| {
        master.failed();
        redis::RedisError::from((redis::ErrorKind::Io, "no master named by the sentinels yet"))
    })?;
    Ok(match lane {
        Lane::Commands => current.commands.clone(),
        Lane::Acked(lane) => current.acked[lane % current.acked.len()].clone(),
    })
}

/// Counts `cmd` under its name (its first argument).
fn record_name(stats: &StoreStats, cmd: &Cmd) {
    if let Some(redis::Arg::Simple(name)) = cmd.args_iter().next() {
        stats.record_command(name);
    }
}

/// Timeouts and reconnect policy of a standalone connection (commands and notifications).
pub(super) fn manager_config(settings: &RedisSettings) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.timeout))
        // Reconnect attempts are cheap and bounded; a call never waits past `timeout`.
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
}

//! The notifier: how a gateway node hears of writes, on a fixed, small number of connections
//! however many readers are connected, and wakes the local readers of a session
//! ([`WatchRegistry`]) with the events a notice carries, so a reader that keeps up reads
//! nothing.
//!
//! Two modes (`store.redis.subscribe`):
//!
//! - `per_session` (default): the node subscribes to a session's channel when its first
//!   local reader arrives and unsubscribes once the last has been gone for a second
//!   ([`LINGER`]), so its notification traffic follows its own readers, not the whole
//!   cluster's writes. Subscribes go out as soon as they are queued, unsubscribes once per
//!   [`LINGER`], each in batches ([`BATCH`] channels per command). On Cluster it uses
//!   sharded pub/sub (`SSUBSCRIBE`; the scripts `SPUBLISH`, Redis 7 or newer): a notice
//!   travels only within the shard owning the session's slot, and the Cluster connection
//!   keeps each subscription on the node owning its slot, moving it after a failover or a
//!   slot migration (a subscription the server drops is renewed here). Standalone and
//!   Sentinel use classic `SUBSCRIBE`/`PUBLISH`: with one master the two deliver the same,
//!   and redis-rs restores classic subscriptions after a reconnect by itself.
//! - `pattern`: one `PSUBSCRIBE ag:*:notify`; the node hears every write and drops those it
//!   has no reader for (on Cluster, classic `PUBLISH` is broadcast to every Redis node).
//!   The baseline `bench/cluster.sh` measures against.
//!
//! Readers wait for their session's subscription to be confirmed before they read
//! ([`Watch::subscribed`](crate::store::watch::Watch::subscribed)), and every confirmation
//! (the first, or one after a reconnect or failover) wakes the session's readers to re-read,
//! so a write is never missed between subscribing and reading, nor while disconnected.
//!
//! Expired sessions end streams and caches ([`PresenceFeed`]): the node pattern-subscribes to
//! expired-key events. Keyspace events are per Redis node, so on Cluster it holds one
//! connection per master (from `CLUSTER SLOTS`, asked every second, following failovers and
//! new masters); elsewhere the notification connection carries them. On Sentinel everything
//! is opened on the master last named ([`super::sentinel`]) and moves with it: a failover is
//! one more reconnect, after which every watched session is subscribed again.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::join_all;
use redis::aio::ConnectionManager;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{ConnectionAddr, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::Notify;
use tokio_util::task::AbortOnDropHandle;

use super::connection::manager_config;
use super::keys::{
    EXPIRED_PATTERN, NOTIFY_PATTERN, notify_channel, session_of_channel, session_of_meta_key,
};
use super::sentinel::{Master, SentinelMaster};
use super::{RedisSettings, SubscribeMode, parse_id};
use crate::store::watch::{Batch, WatchRegistry};
use crate::store::{Event, PresenceFeed, SessionId, StoreStats};

/// How long a session stays subscribed after its last local reader left (and how often
/// unsubscribes are sent, batched): a reader that comes back within it costs nothing.
const LINGER: Duration = Duration::from_secs(1);
/// Most channels named in one `SUBSCRIBE`/`UNSUBSCRIBE` (standalone), or subscribed
/// concurrently (Cluster: one `SSUBSCRIBE` per channel, pipelined on the node's socket).
const BATCH: usize = 512;

/// Holds the process's notification connection(s) and keeps the subscriptions in step with
/// the readers. Pings every second so a dropped connection is noticed and re-established
/// even when no message flows. `stats.connections` is kept at the number of connections the
/// store holds; `stats.subscriptions`, `notifications` and `notification_bytes` too.
pub(super) async fn run_notifier(
    settings: RedisSettings,
    mut sentinel: Option<SentinelMaster>,
    watches: Arc<WatchRegistry>,
    presence: PresenceFeed,
    stats: StoreStats,
) {
    let dropped = Arc::new(Dropped::default());
    let on_push = {
        let (watches, presence, stats, dropped) = (
            Arc::clone(&watches),
            presence.clone(),
            stats.clone(),
            Arc::clone(&dropped),
        );
        move |push: PushInfo| -> Result<(), redis::aio::SendError> {
            on_notification(&push, &watches, &presence, &stats, &dropped);
            Ok(())
        }
    };
    let per_session = settings.subscribe == SubscribeMode::PerSession;
    let mut tick = tokio::time::interval(LINGER);
    let mut conn = None;
    // The patterns of the notification connection are subscribed.
    let mut patterns_subscribed = false;
    // Sessions subscribed (sent and not unsubscribed since), and those that lost their
    // last reader and are unsubscribed at the next tick if still without one.
    let mut held: HashSet<SessionId> = HashSet::new();
    let mut leaving: HashSet<SessionId> = HashSet::new();
    // On Cluster: the masters' expired-key-events connections, followed by a task of their
    // own (a master that does not answer never delays a subscription), ended with this one.
    let masters_connected = Arc::new(AtomicI64::new(0));
    let _masters = settings.cluster.then(|| {
        AbortOnDropHandle::new(tokio::spawn(follow_masters(
            settings.clone(),
            presence.clone(),
            Arc::clone(&masters_connected),
        )))
    });
    // On Sentinel: the master `conn` is (to be) opened to.
    let mut master: Option<Arc<Master>> = None;
    let mut ticked = true;
    loop {
        if let Some(named) = sentinel.as_ref().map(SentinelMaster::current) {
            let moved = match (&named, &master) {
                (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
                (a, b) => a.is_some() != b.is_some(),
            };
            if moved {
                (conn, patterns_subscribed, master) = (None, false, named);
                // The old connection's subscriptions went with it.
                held.clear();
                leaving.clear();
                watches.requeue_all();
            }
        }
        let wait_for_master = sentinel.is_some() && master.is_none();
        if conn.is_none() && !wait_for_master {
            match open_notifier(&settings, master.as_deref(), on_push.clone()).await {
                Ok(c) => conn = Some(c),
                Err(e) => tracing::warn!(error = %e, "redis notification connection failed"),
            }
        }
        let mut answering = false;
        if let Some(c) = &mut conn {
            let result = if patterns_subscribed {
                if ticked { c.ping().await } else { Ok(()) }
            } else {
                let patterns: &[&str] = match (per_session, settings.cluster) {
                    (true, true) => &[],
                    (true, false) => &[EXPIRED_PATTERN],
                    // Cluster: expiry events come from every master (`masters`).
                    (false, true) => &[NOTIFY_PATTERN],
                    (false, false) => &[NOTIFY_PATTERN, EXPIRED_PATTERN],
                };
                c.psubscribe(patterns)
                    .await
                    .map(|()| patterns_subscribed = true)
            };
            if let Err(e) = &result {
                tracing::debug!(error = %e, "redis notification connection not ready");
            }
            answering = result.is_ok();
            if per_session {
                for id in dropped.take() {
                    // Our own unsubscribe, or the server's (slot moved): look again.
                    held.remove(&id);
                    watches.requeue([id]);
                }
                sync_subscriptions(c, &watches, &mut held, &mut leaving, ticked).await;
                stats
                    .subscriptions
                    .set(i64::try_from(held.len()).unwrap_or(i64::MAX));
            }
        }
        // The command connection, the notification connection while it answers, and on
        // Cluster one expiry-events connection per master.
        stats
            .connections
            .set(1 + i64::from(answering) + masters_connected.load(Ordering::Relaxed));
        ticked = false;
        tokio::select! {
            _ = tick.tick() => ticked = true,
            () = master_moved(&mut sentinel) => {}
            () = watches.interest_changed() => {}
            () = dropped.wake.notified() => {}
        }
    }
}

/// Hands one push message to whom it concerns.
fn on_notification(
    push: &PushInfo,
    watches: &WatchRegistry,
    presence: &PresenceFeed,
    stats: &StoreStats,
    dropped: &Dropped,
) {
    let text = |i: usize| match push.data.get(i) {
        Some(Value::BulkString(b)) => Some(b.as_slice()),
        _ => None,
    };
    match push.kind {
        PushKind::Message | PushKind::SMessage => {
            // data: channel, payload
            if let (Some(channel), Some(payload)) = (text(0), push.data.get(1)) {
                deliver(channel, payload, watches, stats);
            }
        }
        PushKind::PMessage => {
            // data: pattern, channel, payload
            if let (Some(channel), Some(payload)) = (text(1), push.data.get(2)) {
                if session_of_channel(channel).is_some() {
                    deliver(channel, payload, watches, stats);
                } else if let Some(id) = text(2).and_then(session_of_meta_key) {
                    // A keyspace event: the payload is the expired key.
                    presence.changed(&id);
                }
            }
        }
        PushKind::Subscribe | PushKind::SSubscribe => {
            // (Re)subscribed: whatever was written before was not heard.
            if let Some(id) = text(0).and_then(session_of_channel) {
                watches.subscribed(&id);
            }
        }
        PushKind::Unsubscribe | PushKind::SUnsubscribe => {
            if let Some(id) = text(0).and_then(session_of_channel) {
                dropped.add(id);
            }
        }
        PushKind::PSubscribe => {
            // (Re)subscribed: whatever happened meanwhile was not heard.
            if text(0) == Some(NOTIFY_PATTERN.as_bytes()) {
                watches.subscribed_all();
            } else {
                presence.unknown();
            }
        }
        _ => {}
    }
}

/// Counts one session notification and wakes the session's readers with its events.
fn deliver(channel: &[u8], payload: &Value, watches: &WatchRegistry, stats: &StoreStats) {
    let Some(id) = session_of_channel(channel) else {
        return;
    };
    stats.notifications.inc();
    let size = match payload {
        Value::BulkString(p) => p.len(),
        _ => 0,
    };
    stats
        .notification_bytes
        .inc_by(u64::try_from(channel.len() + size).unwrap_or(u64::MAX));
    watches.notify_with(&id, || notice_batch(payload));
}

/// Sessions whose subscription ended (our unsubscribe, or the server's after a slot moved),
/// for the loop to look at again; a set, so bounded by the sessions subscribed.
#[derive(Default)]
struct Dropped {
    ids: Mutex<HashSet<SessionId>>,
    wake: Notify,
}

impl Dropped {
    fn add(&self, id: SessionId) {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id);
        self.wake.notify_one();
    }

    fn take(&self) -> HashSet<SessionId> {
        std::mem::take(&mut *self.ids.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Brings the subscriptions in step with the readers: subscribes the sessions that gained a
/// reader (their confirmation wakes the readers), and on a tick unsubscribes those without
/// one since the last tick. What fails is queued again and retried at the next tick.
async fn sync_subscriptions(
    conn: &mut NotifyConnection,
    watches: &WatchRegistry,
    held: &mut HashSet<SessionId>,
    leaving: &mut HashSet<SessionId>,
    ticked: bool,
) {
    let mut join = Vec::new();
    for id in watches.take_changes() {
        if !watches.is_watched(&id) {
            if held.contains(&id) {
                leaving.insert(id);
            }
        } else if held.contains(&id) {
            // A reader came back before the unsubscribe: still subscribed.
            leaving.remove(&id);
            watches.subscribed(&id);
        } else {
            join.push(id);
        }
    }
    for batch in join.chunks(BATCH) {
        let failed = conn.subscribe(batch).await;
        held.extend(batch.iter().filter(|id| !failed.contains(id)).cloned());
        if !failed.is_empty() {
            tracing::debug!(sessions = failed.len(), "redis subscribe failed; retrying");
            watches.requeue(failed);
        }
    }
    if !ticked || leaving.is_empty() {
        return;
    }
    let leave: Vec<SessionId> = leaving
        .drain()
        .filter(|id| !watches.is_watched(id) && held.contains(id))
        .collect();
    for batch in leave.chunks(BATCH) {
        let failed = conn.unsubscribe(batch).await;
        for id in batch {
            if failed.contains(id) {
                leaving.insert(id.clone());
            } else {
                held.remove(id);
            }
        }
    }
}

/// Waits until the Sentinels name another master (forever without Sentinel).
async fn master_moved(sentinel: &mut Option<SentinelMaster>) {
    match sentinel {
        Some(s) => s.changed().await,
        None => std::future::pending().await,
    }
}

/// The events a notification payload carries (`None` for a bare id or anything unexpected:
/// readers then read).
fn notice_batch(payload: &Value) -> Option<Batch> {
    let Value::BulkString(payload) = payload else {
        return None;
    };
    if payload.first() != Some(&b'{') {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Notice {
        a: String,
        e: Vec<(String, String, String)>,
    }
    let notice: Notice = serde_json::from_slice(payload).ok()?;
    let after = match notice.a.as_str() {
        "" => None,
        id => Some(parse_id(id).ok()?),
    };
    let events = notice
        .e
        .into_iter()
        .map(|(id, kind, data)| {
            Some(Event {
                id: parse_id(&id).ok()?,
                kind,
                data,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    (!events.is_empty()).then_some(Batch { after, events })
}

/// The notification connection: RESP3 (pub/sub on a regular connection), resubscribing by
/// itself after a reconnect (and on Cluster, moving each sharded subscription to the node
/// that owns its slot).
enum NotifyConnection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl NotifyConnection {
    async fn psubscribe(&mut self, patterns: &[&str]) -> redis::RedisResult<()> {
        if patterns.is_empty() {
            return Ok(());
        }
        match self {
            Self::Standalone(c) => c.psubscribe(patterns).await,
            Self::Cluster(c) => c.psubscribe(patterns).await,
        }
    }

    /// Subscribes to the sessions' channels (standalone: one `SUBSCRIBE`; Cluster: one
    /// `SSUBSCRIBE` per channel, sent concurrently, each to its slot's node). Returns the
    /// sessions that failed.
    async fn subscribe(&mut self, ids: &[SessionId]) -> Vec<SessionId> {
        self.each(ids, true).await
    }

    /// Unsubscribes from the sessions' channels; returns the sessions that failed.
    async fn unsubscribe(&mut self, ids: &[SessionId]) -> Vec<SessionId> {
        self.each(ids, false).await
    }

    async fn each(&mut self, ids: &[SessionId], subscribe: bool) -> Vec<SessionId> {
        match self {
            Self::Standalone(c) => {
                let channels: Vec<String> = ids.iter().map(notify_channel).collect();
                let result = if subscribe {
                    c.subscribe(&channels).await
                } else {
                    c.unsubscribe(&channels).await
                };
                match result {
                    Ok(()) => Vec::new(),
                    Err(e) => {
                        tracing::debug!(error = %e, "redis (un)subscribe failed");
                        ids.to_vec()
                    }
                }
            }
            Self::Cluster(c) => {
                let calls = ids.iter().map(|id| {
                    let mut c = c.clone();
                    async move {
                        let channel = notify_channel(id);
                        let result = if subscribe {
                            c.ssubscribe(&channel).await
                        } else {
                            c.sunsubscribe(&channel).await
                        };
                        result.err().map(|e| {
                            tracing::debug!(error = %e, "redis sharded (un)subscribe failed");
                            id.clone()
                        })
                    }
                });
                join_all(calls).await.into_iter().flatten().collect()
            }
        }
    }

    async fn ping(&mut self) -> redis::RedisResult<()> {
        let ping = redis::cmd("PING");
        match self {
            Self::Standalone(c) => ping.query_async(c).await,
            Self::Cluster(c) => ping.query_async(c).await,
        }
    }
}

/// Appends `protocol=resp3` to a Redis URL.
fn resp3(url: &String) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}protocol=resp3")
}

/// Opens the notification connection (RESP3), handing every push message to `on_push`: to
/// `master` on Sentinel, else to the configured URLs.
async fn open_notifier(
    settings: &RedisSettings,
    master: Option<&Master>,
    on_push: impl redis::aio::AsyncPushSender + Clone,
) -> redis::RedisResult<NotifyConnection> {
    if settings.cluster {
        let client = ClusterClient::builder(settings.urls.iter().map(resp3))
            .connection_timeout(settings.connect_timeout)
            .response_timeout(settings.timeout)
            .push_sender(on_push)
            .build()?;
        Ok(NotifyConnection::Cluster(
            client.get_async_connection().await?,
        ))
    } else {
        let client = match master {
            Some(master) => master.resp3_client()?,
            None => redis::Client::open(settings.urls.first().map(resp3).unwrap_or_default())?,
        };
        let config = manager_config(settings)
            .set_push_sender(on_push)
            .set_automatic_resubscription();
        Ok(NotifyConnection::Standalone(
            ConnectionManager::new_lazy_with_config(client, config)?,
        ))
    }
}

/// On Cluster: asks the cluster for its masters every second (`CLUSTER SLOTS`, on a Cluster
/// connection of its own) and keeps one expired-key-events connection per master;
/// `connected` is kept at the number of them subscribed and answering.
async fn follow_masters(
    settings: RedisSettings,
    presence: PresenceFeed,
    connected: Arc<AtomicI64>,
) {
    let mut masters = ClusterMasters::default();
    let mut cluster = None;
    let mut tick = tokio::time::interval(LINGER);
    loop {
        tick.tick().await;
        if cluster.is_none() {
            let client = ClusterClient::builder(settings.urls.clone())
                .connection_timeout(settings.connect_timeout)
                .response_timeout(settings.timeout)
                .build();
            let opened = match client {
                Ok(client) => client.get_async_connection().await,
                Err(e) => Err(e),
            };
            match opened {
                Ok(c) => cluster = Some(c),
                Err(e) => tracing::debug!(error = %e, "redis cluster connection failed"),
            }
        }
        if let Some(c) = &mut cluster {
            masters.refresh(c, &settings, &presence).await;
        }
        connected.store(masters.connected(), Ordering::Relaxed);
    }
}

/// One expired-key-events connection per master, keyed by `host:port`.
#[derive(Default)]
struct ClusterMasters {
    nodes: HashMap<(String, u16), MasterEvents>,
}

/// One master's expired-key-events connection.
struct MasterEvents {
    conn: ConnectionManager,
    subscribed: bool,
}

impl ClusterMasters {
    /// Asks the cluster for its masters; opens a connection to each new one and
    /// pattern-subscribes it to expired-key events, closes those of nodes no longer masters,
    /// and retries what failed.
    async fn refresh(
        &mut self,
        cluster: &mut ClusterConnection,
        settings: &RedisSettings,
        presence: &PresenceFeed,
    ) {
        let slots: redis::RedisResult<Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(cluster)
            .await;
        let masters = match slots {
            Ok(slots) => masters_of(&slots),
            Err(e) => {
                tracing::debug!(error = %e, "redis CLUSTER SLOTS failed");
                return;
            }
        };
        if masters.is_empty() {
            return;
        }
        self.nodes.retain(|addr, _| masters.contains(addr));
        for addr in masters {
            if let Entry::Vacant(entry) = self.nodes.entry(addr) {
                match open_master_events(settings, entry.key(), presence.clone()) {
                    Ok(conn) => {
                        entry.insert(MasterEvents {
                            conn,
                            subscribed: false,
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "redis master events connection failed"),
                }
            }
        }
        // Concurrently: a master that does not answer delays none of the others.
        join_all(self.nodes.values_mut().map(|node| async move {
            let result = if node.subscribed {
                redis::cmd("PING").query_async(&mut node.conn).await
            } else {
                node.conn.psubscribe(EXPIRED_PATTERN).await
            };
            node.subscribed = result.is_ok();
        }))
        .await;
    }

    /// Connections subscribed and answering at the last refresh.
    fn connected(&self) -> i64 {
        let n = self.nodes.values().filter(|n| n.subscribed).count();
        i64::try_from(n).unwrap_or(i64::MAX)
    }
}

/// The masters' addresses in a `CLUSTER SLOTS` reply (each range: start, end, master, ...;
/// a node: host, port, id, ...).
fn masters_of(slots: &Value) -> HashSet<(String, u16)> {
    let Value::Array(ranges) = slots else {
        return HashSet::new();
    };
    ranges
        .iter()
        .filter_map(|range| {
            let Value::Array(range) = range else {
                return None;
            };
            let Some(Value::Array(node)) = range.get(2) else {
                return None;
            };
            let host = match node.first()? {
                Value::BulkString(h) => String::from_utf8(h.clone()).ok()?,
                Value::SimpleString(h) => h.clone(),
                _ => return None,
            };
            let Value::Int(port) = node.get(1)? else {
                return None;
            };
            Some((host, u16::try_from(*port).ok()?))
        })
        .collect()
}

/// A RESP3 connection to one master (its address from `CLUSTER SLOTS`, credentials and
/// TLS from the first seed URL), handing expired-key events to `presence`.
fn open_master_events(
    settings: &RedisSettings,
    (host, port): &(String, u16),
    presence: PresenceFeed,
) -> redis::RedisResult<ConnectionManager> {
    let seed = settings
        .urls
        .first()
        .map(String::as_str)
        .unwrap_or_default()
        .into_connection_info()?;
    let addr = match seed.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.clone(),
            port: *port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host.clone(), *port),
    };
    let redis = seed
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let client = redis::Client::open(seed.set_addr(addr).set_redis_settings(redis))?;
    let on_push = move |push: PushInfo| -> Result<(), redis::aio::SendError> {
        match push.kind {
            PushKind::PMessage => {
                if let Some(Value::BulkString(key)) = push.data.get(2)
                    && let Some(id) = session_of_meta_key(key)
                {
                    presence.changed(&id);
                }
            }
            PushKind::PSubscribe => presence.unknown(),
            _ => {}
        }
        Ok(())
    };
    let config = manager_config(settings)
        .set_push_sender(on_push)
        .set_automatic_resubscription();
    ConnectionManager::new_lazy_with_config(client, config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_carry_their_events_and_anything_else_means_read() {
        let notice = |text: &str| notice_batch(&Value::BulkString(text.as_bytes().to_vec()));
        let batch = notice(r#"{"a":"1-0","e":[["2-0","delta","{\"n\":1}"],["2-1","delta","{}"]]}"#)
            .expect("a notice");
        assert_eq!(batch.after, Some("1-0".parse().unwrap()));
        assert_eq!(batch.events.len(), 2);
        assert_eq!(batch.events[0].data, r#"{"n":1}"#);
        assert_eq!(
            notice(r#"{"a":"","e":[["1-0","complete","{}"]]}"#).map(|b| b.after),
            Some(None)
        );
        for bad in [
            "1700000000000-0",                         // a bare id
            r#"{"a":"1-0","e":[]}"#,                   // nothing carried
            r#"{"a":"x","e":[["2-0","delta","{}"]]}"#, // bad id before
            r#"{"a":"1-0","e":[["y","delta","{}"]]}"#, // bad event id
            r#"{"a":"1-0","e":[["2-0","delta"]]}"#,    // short entry
            "{not json",
        ] {
            assert_eq!(notice(bad), None, "{bad}");
        }
        assert_eq!(notice_batch(&Value::Int(1)), None);
    }

    #[test]
    fn the_masters_are_read_from_cluster_slots() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let range = |start: i64, end: i64, master: Value, replica: Value| {
            Value::Array(vec![Value::Int(start), Value::Int(end), master, replica])
        };
        let slots = Value::Array(vec![
            range(0, 5460, node("127.0.0.1", 7000), node("127.0.0.1", 7003)),
            range(
                5461,
                10922,
                node("127.0.0.1", 7001),
                node("127.0.0.1", 7004),
            ),
            range(
                10923,
                16383,
                node("127.0.0.1", 7000),
                node("127.0.0.1", 7003),
            ),
        ]);
        let masters = masters_of(&slots);
        assert_eq!(masters.len(), 2);
        assert!(masters.contains(&("127.0.0.1".to_owned(), 7001)));
        assert!(masters_of(&Value::Nil).is_empty());
    }
}

//! The Redis engine: many gateway nodes share sessions through Redis (standalone or Cluster).
//!
//! Data model (every key of a session carries the `{<sid>}` hash tag, so a session lives in
//! one Cluster slot and one call can touch all its keys):
//!
//! - `ag:{<sid>}:meta` — HASH: `status`, `created_at`, `updated_at`, `completed_at`,
//!   `final_response`, `owner`, `metadata`, `event_count`.
//! - `ag:{<sid>}:events` — STREAM of entries with fields `kind` and `data`, capped with
//!   `XADD MAXLEN ~`.
//! - `ag:{<sid>}:notify` — pub/sub channel; every write publishes on it a notice
//!   `{"a": <id before>, "e": [[id, kind, data], ...]}` (the events it wrote and the id they
//!   follow, `""` for an empty log) when their data totals at most 8 KiB, else the newest id.
//!
//! and, per owner (API key fingerprint; tagged `{<fingerprint>}`, so another slot):
//!
//! - `ag:owner:{<fingerprint>}:sessions` — ZSET of the owner's running session ids scored by
//!   expiry deadline, the per-key session quota ([`super::quota`]).
//!
//! With the default `[features]`, every handler call is ONE round trip: init, append and
//! complete are Lua scripts (EVALSHA, `redis/lua/*.lua`), because they must refuse to write
//! when the owner is over its session quota, or to a session that is missing, owned by
//! another key, completed or over its byte quota, and a pipeline (or MULTI/EXEC without a
//! WATCH round trip) cannot make its writes conditional. A script is atomic, so a refused or
//! failed call leaves nothing half-written. On Cluster the owner's quota set is in another
//! slot, so init and complete take a second round trip to it ([`super::quota`] says how).
//!
//! Two `[features]` switches turn this into the naive baseline the benchmark (`bench/ab.sh`)
//! measures against, held to the same conformance suite:
//!
//! - `pipelining = false` (`redis::sequential`): one command per round trip, each awaited
//!   before the next, no pipeline, no script; not atomic.
//! - `hash_state = false` (`redis::json_state`): the state is one JSON string at
//!   `ag:{<sid>}:meta`, read, modified and written back whole on every change.
//!
//! Live tailing uses ONE extra connection per process however many readers are connected:
//! it pattern-subscribes to `ag:*:notify` and wakes the local readers of a session
//! ([`WatchRegistry`]). A reader whose cursor is the notice's "before" id takes the events
//! from the notice — no read at all; any other reader (behind, or woken by a bare id)
//! `XRANGE`s from its own cursor on the shared multiplexed connection. After a reconnect the
//! subscription is restored and every reader re-reads, so notifications lost while
//! disconnected cost nothing.
//!
//! Figures ([`StoreStats`]): live sessions are this node's view ([`Census`]); memory per
//! session is `MEMORY USAGE` of the meta hash plus the event stream of up to 8 of those
//! sessions, averaged, every 5 seconds (those commands are not counted as the store's
//! traffic); connections held are the multiplexed command connection plus the notification
//! connection while it is subscribed (on Cluster each is one handle with a socket per node).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use agentgate_middleware::rate_limit::{RedisGcra, SharedGcra};
use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, ErrorKind, Pipeline, PushInfo, PushKind, RedisFuture, Script, ServerErrorKind, Value,
};

use super::census::Census;
mod json_state;
mod sequential;

use self::json_state::JsonState;
use super::watch::{Batch, WatchRegistry};
use super::{
    Completion, Event, EventId, NewEvent, NewSession, PresenceFeed, Quotas, RUNNING, SessionId,
    SessionState, SessionStore, StoreError, StoreStats, Watch, now_ms,
};

/// Settings of the Redis engine.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URLs: one for standalone, the seed nodes for Cluster.
    pub urls: Vec<String>,
    /// Use the Cluster protocol.
    pub cluster: bool,
    /// Longest a store call may take before it fails as unavailable.
    pub timeout: Duration,
    /// Longest a connection attempt may take.
    pub connect_timeout: Duration,
    /// `XADD MAXLEN ~` cap of each event log.
    pub events_maxlen: u64,
    /// TTL of a completed session.
    pub retention: Duration,
    /// TTL of an unfinished session, refreshed on every write.
    pub session_ttl: Duration,
    /// `features.pipelining`: each write is one round trip (a Lua script).
    /// Off: one command per round trip, awaited in turn (`redis::sequential`).
    pub pipelining: bool,
    /// `features.hash_state`: the state is a HASH. Off: one JSON string (`redis::json_state`).
    pub hash_state: bool,
    /// Running sessions per owner, bytes per session (`[store.quotas]`).
    pub quotas: Quotas,
}

/// Pattern matching every session's notification channel.
const NOTIFY_PATTERN: &str = "ag:*:notify";
/// Keyspace events of expired keys, in every database (sent only if the server's
/// `notify-keyspace-events` has `Ex`): a session's meta hash expiring ends the session.
const EXPIRED_PATTERN: &str = "__keyevent@*__:expired";

fn meta_key(id: &SessionId) -> String {
    format!("ag:{{{id}}}:meta")
}

fn events_key(id: &SessionId) -> String {
    format!("ag:{{{id}}}:events")
}

fn notify_channel(id: &SessionId) -> String {
    format!("ag:{{{id}}}:notify")
}

/// The owner's quota set. `owner` is the API key's fingerprint, never the key.
fn owner_key(owner: &str) -> String {
    format!("ag:owner:{{{owner}}}:sessions")
}

/// The session id inside a notification channel name, if it is one of ours.
/// The session whose meta hash `key` is (`ag:{<sid>}:meta`).
fn session_of_meta_key(key: &[u8]) -> Option<SessionId> {
    let s = std::str::from_utf8(key).ok()?;
    s.strip_prefix("ag:{")?.strip_suffix("}:meta")?.parse().ok()
}

fn session_of_channel(channel: &[u8]) -> Option<SessionId> {
    let s = std::str::from_utf8(channel).ok()?;
    s.strip_prefix("ag:{")?
        .strip_suffix("}:notify")?
        .parse()
        .ok()
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

/// The write scripts of one state layout, and the Cluster-only quota scripts.
struct Scripts {
    init: LuaScript,
    append: LuaScript,
    complete: LuaScript,
    owner_reserve: LuaScript,
    owner_refresh: LuaScript,
}

/// Prepends the quota functions (`lua/quota.lua`) to the script file `$file`.
macro_rules! with_quota {
    ($file:literal) => {
        concat!(include_str!("redis/lua/quota.lua"), include_str!($file))
    };
}

impl Scripts {
    fn new(hash_state: bool) -> Self {
        let (init, append, complete) = if hash_state {
            (
                with_quota!("redis/lua/init.lua"),
                with_quota!("redis/lua/append.lua"),
                include_str!("redis/lua/complete.lua"),
            )
        } else {
            (
                with_quota!("redis/lua/json_init.lua"),
                with_quota!("redis/lua/json_append.lua"),
                include_str!("redis/lua/json_complete.lua"),
            )
        };
        Self {
            init: LuaScript::new(init),
            append: LuaScript::new(append),
            complete: LuaScript::new(complete),
            owner_reserve: LuaScript::new(with_quota!("redis/lua/owner_reserve.lua")),
            owner_refresh: LuaScript::new(with_quota!("redis/lua/owner_refresh.lua")),
        }
    }
}

/// A Lua script and its SHA1, for EVALSHA.
struct LuaScript {
    code: &'static str,
    hash: String,
}

impl LuaScript {
    fn new(code: &'static str) -> Self {
        Self {
            code,
            hash: Script::new(code).get_hash().to_owned(),
        }
    }
}

/// A command connection (standalone or Cluster) that counts round trips and commands.
#[derive(Clone)]
struct CountedConnection {
    backend: Backend,
    stats: StoreStats,
}

#[derive(Clone)]
enum Backend {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for CountedConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.stats.record(1);
        record_name(&self.stats, cmd);
        match &mut self.backend {
            Backend::Standalone(c) => c.req_packed_command(cmd),
            Backend::Cluster(c) => c.req_packed_command(cmd),
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
        }
    }

    fn get_db(&self) -> i64 {
        match &self.backend {
            Backend::Standalone(c) => c.get_db(),
            Backend::Cluster(c) => c.get_db(),
        }
    }
}

/// Counts `cmd` under its name (its first argument).
fn record_name(stats: &StoreStats, cmd: &Cmd) {
    if let Some(redis::Arg::Simple(name)) = cmd.args_iter().next() {
        stats.record_command(name);
    }
}

/// The Redis [`SessionStore`].
pub struct RedisStore {
    conn: CountedConnection,
    settings: RedisSettings,
    scripts: Scripts,
    watches: Arc<WatchRegistry>,
    stats: StoreStats,
    presence: PresenceFeed,
    notifier: tokio::task::JoinHandle<()>,
    census: Census,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.notifier.abort();
    }
}

impl RedisStore {
    /// Connects lazily: the gateway starts even while Redis is down (calls then fail as
    /// [`StoreError::Unavailable`] until it is back). Fails only on a malformed URL.
    /// Must be called inside the tokio runtime that will serve requests: the connections'
    /// drivers and the notification task live on it.
    pub async fn connect(settings: RedisSettings) -> Result<Arc<Self>, StoreError> {
        let stats = StoreStats::default();
        let watches = Arc::new(WatchRegistry::default());
        let backend = open_backend(&settings).await?;
        let presence = PresenceFeed::default();
        let notifier = tokio::spawn(run_notifier(
            settings.clone(),
            Arc::clone(&watches),
            presence.clone(),
            stats.connections.clone(),
        ));
        let census = Census::new(stats.live_sessions.clone());
        let scripts = Scripts::new(settings.hash_state);
        let store = Arc::new(Self {
            conn: CountedConnection {
                backend,
                stats: stats.clone(),
            },
            settings,
            scripts,
            watches,
            stats,
            presence,
            notifier,
            census,
        });
        tokio::spawn(run_census(Arc::downgrade(&store)));
        Ok(store)
    }

    /// A GCRA rate limiter over this store's connection (no extra connection; its calls
    /// count as the store's round trips), for `[routes.rate_limit] store = "redis"`.
    pub fn rate_limiter(&self) -> Arc<dyn SharedGcra> {
        Arc::new(RedisGcra::new(self.conn.clone(), self.settings.timeout))
    }

    /// Runs one backend call under the configured timeout.
    async fn call<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        self.timed(call)
            .await?
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// Sends one command and waits for its answer: one round trip.
    async fn one<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        self.call(cmd.query_async(&mut conn)).await
    }

    /// Like [`call`](Self::call), but hands Redis's own error back for the caller to inspect.
    async fn timed<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<redis::RedisResult<T>, StoreError> {
        tokio::time::timeout(self.settings.timeout, call)
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "no answer within {} ms",
                    self.settings.timeout.as_millis()
                ))
            })
    }

    /// Runs a write script on `keys`: EVALSHA, one round trip. Only when Redis does not
    /// know the script yet (first call after it started) does it fall back to EVAL, which
    /// also caches it: two round trips once, never three. The reply's first word is `ok` or
    /// why the script refused (it then wrote nothing).
    async fn script_write(
        &self,
        script: &LuaScript,
        keys: &[String],
        args: &[&str],
    ) -> Result<Vec<String>, StoreError> {
        let invoke = |command: &str, script_arg: &str| {
            let mut cmd = redis::cmd(command);
            cmd.arg(script_arg).arg(keys.len()).arg(keys).arg(args);
            cmd
        };
        let mut conn = self.conn.clone();
        let evalsha = invoke("EVALSHA", &script.hash);
        let reply: Vec<String> = match self.timed(evalsha.query_async(&mut conn)).await? {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let eval = invoke("EVAL", script.code);
                self.call(eval.query_async(&mut conn)).await?
            }
            other => other.map_err(|e| StoreError::Unavailable(e.to_string()))?,
        };
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(reply),
            Some("not_found") => Err(StoreError::NotFound),
            Some("forbidden") => Err(StoreError::Forbidden),
            Some("completed") => Err(StoreError::Completed),
            Some("quota") => Err(StoreError::SessionQuotaExceeded {
                limit: self.settings.quotas.max_active_sessions_per_key,
            }),
            Some("too_large") => Err(StoreError::SessionBytesExceeded {
                limit: self.settings.quotas.max_session_bytes,
            }),
            _ => Err(StoreError::Protocol(format!(
                "unexpected script reply {reply:?}"
            ))),
        }
    }
}

fn parse_id(raw: &str) -> Result<EventId, StoreError> {
    raw.parse()
        .map_err(|_| StoreError::Protocol(format!("bad stream id {raw:?}")))
}

fn millis(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

async fn open_backend(settings: &RedisSettings) -> Result<Backend, StoreError> {
    let bad_url = |e: redis::RedisError| StoreError::Unavailable(format!("redis url: {e}"));
    if settings.cluster {
        let client = ClusterClient::builder(settings.urls.clone())
            .connection_timeout(settings.connect_timeout)
            .response_timeout(settings.timeout)
            .build()
            .map_err(bad_url)?;
        let conn = client
            .get_async_connection()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Backend::Cluster(conn))
    } else {
        let url = settings
            .urls
            .first()
            .ok_or_else(|| StoreError::Unavailable("no redis url configured".to_owned()))?;
        let client = redis::Client::open(url.as_str()).map_err(bad_url)?;
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config(settings))
            .map_err(bad_url)?;
        Ok(Backend::Standalone(conn))
    }
}

fn manager_config(settings: &RedisSettings) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.timeout))
        // Reconnect attempts are cheap and bounded; a call never waits past `timeout`.
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
}

/// Holds the process's one notification connection: pattern-subscribes to every session's
/// channel and wakes local readers. Pings every second so a dropped connection is noticed
/// and re-established even when no message flows; the subscription confirmation that
/// follows every (re)subscribe wakes all readers to re-read what they may have missed.
async fn run_notifier(
    settings: RedisSettings,
    watches: Arc<WatchRegistry>,
    presence: PresenceFeed,
    connections: prometheus_client::metrics::gauge::Gauge,
) {
    let on_push = {
        let watches = Arc::clone(&watches);
        move |push: PushInfo| -> Result<(), redis::aio::SendError> {
            match push.kind {
                PushKind::PMessage => {
                    // data: pattern, channel, payload
                    if let Some(Value::BulkString(channel)) = push.data.get(1)
                        && let Some(id) = session_of_channel(channel)
                    {
                        watches.notify_with(&id, || push.data.get(2).and_then(notice_batch));
                    } else if let Some(Value::BulkString(key)) = push.data.get(2)
                        && let Some(id) = session_of_meta_key(key)
                    {
                        // A keyspace event: the payload is the expired key.
                        presence.changed(&id);
                    }
                }
                PushKind::PSubscribe => {
                    // (Re)subscribed: whatever happened meanwhile was not heard.
                    watches.notify_all();
                    presence.unknown();
                }
                _ => {}
            }
            Ok(())
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut subscribed = false;
    let mut conn = None;
    loop {
        if conn.is_none() {
            match open_notifier(&settings, on_push.clone()).await {
                Ok(c) => conn = Some(c),
                Err(e) => tracing::warn!(error = %e, "redis notification connection failed"),
            }
        }
        if let Some(c) = &mut conn {
            let result = if subscribed {
                c.ping().await
            } else {
                match c.psubscribe(NOTIFY_PATTERN).await {
                    Ok(()) => c.psubscribe(EXPIRED_PATTERN).await,
                    Err(e) => Err(e),
                }
                .map(|()| subscribed = true)
            };
            if let Err(e) = &result {
                tracing::debug!(error = %e, "redis notification connection not ready");
            }
            // The command connection, plus this one while it is subscribed and answering.
            connections.set(1 + i64::from(result.is_ok() && subscribed));
        } else {
            connections.set(1);
        }
        tick.tick().await;
    }
}

/// The notification connection: RESP3 (pub/sub on a regular connection), resubscribing by
/// itself after a reconnect.
enum NotifyConnection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl NotifyConnection {
    async fn psubscribe(&mut self, pattern: &str) -> redis::RedisResult<()> {
        match self {
            Self::Standalone(c) => c.psubscribe(pattern).await,
            Self::Cluster(c) => c.psubscribe(pattern).await,
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

async fn open_notifier(
    settings: &RedisSettings,
    on_push: impl redis::aio::AsyncPushSender + Clone,
) -> redis::RedisResult<NotifyConnection> {
    let resp3 = |url: &String| {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}protocol=resp3")
    };
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
        let url = settings.urls.first().map(resp3).unwrap_or_default();
        let client = redis::Client::open(url)?;
        let config = manager_config(settings)
            .set_push_sender(on_push)
            .set_automatic_resubscription();
        Ok(NotifyConnection::Standalone(
            ConnectionManager::new_lazy_with_config(client, config)?,
        ))
    }
}

/// Sessions whose `MEMORY USAGE` is sampled.
const MEMORY_SAMPLE: usize = 8;
/// How often memory per session is sampled.
const MEMORY_SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Keeps the census current (every second) and samples memory per session, until the store
/// is dropped.
async fn run_census(store: Weak<RedisStore>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_sample: Option<tokio::time::Instant> = None;
    loop {
        tick.tick().await;
        let Some(store) = store.upgrade() else { return };
        store.census.sweep();
        let due = last_sample.is_none_or(|at| at.elapsed() >= MEMORY_SAMPLE_EVERY);
        if due && !store.census.is_empty() {
            last_sample = Some(tokio::time::Instant::now());
            if let Some(bytes) = store.sample_memory().await {
                store.stats.session_memory_bytes.set(bytes);
            }
        }
    }
}

impl RedisStore {
    /// Average `MEMORY USAGE` (meta hash plus event stream) of a few live sessions, in
    /// bytes; `None` when none could be measured.
    async fn sample_memory(&self) -> Option<i64> {
        // A connection whose traffic is not counted: sampling is not the requests' cost.
        let mut conn = CountedConnection {
            backend: self.conn.backend.clone(),
            stats: StoreStats::default(),
        };
        let (mut total, mut measured) = (0_i64, 0_i64);
        for id in self.census.some(MEMORY_SAMPLE) {
            let mut session = 0_i64;
            for key in [meta_key(&id), events_key(&id)] {
                let usage = redis::cmd("MEMORY").arg("USAGE").arg(&key).clone();
                let bytes: Option<i64> = self.call(usage.query_async(&mut conn)).await.ok()?;
                session += bytes.unwrap_or(0);
            }
            if session > 0 {
                total += session;
                measured += 1;
            }
        }
        (measured > 0).then(|| total / measured)
    }
}

impl RedisStore {
    /// The keys a session write script touches: the session's, and on standalone Redis the
    /// owner's quota set (on Cluster it is in another slot; the caller handles it apart).
    fn script_keys(&self, id: &SessionId, owner: &str, events: bool) -> Vec<String> {
        let mut keys = vec![meta_key(id)];
        if events {
            keys.push(events_key(id));
        }
        if !self.settings.cluster {
            keys.push(owner_key(owner));
        }
        keys
    }

    /// Create as one script call (atomic; one round trip), the owner's quota checked inside.
    /// On Cluster: a reservation in the owner's set first, then the create.
    async fn create_scripted(&self, id: &SessionId, session: NewSession) -> Result<(), StoreError> {
        let now = now_ms();
        let (ttl, max) = (
            millis(self.settings.session_ttl),
            self.settings.quotas.max_active_sessions_per_key.to_string(),
        );
        let state = if self.settings.hash_state {
            vec![session.owner.clone(), session.metadata, now.to_string()]
        } else {
            vec![new_json_state(&session.owner, session.metadata, now).to_json()]
        };
        let mut args = vec![ttl.as_str(), id.as_str(), max.as_str()];
        args.extend(state.iter().map(String::as_str));
        let keys = self.script_keys(id, &session.owner, false);
        if !self.settings.cluster {
            return self
                .script_write(&self.scripts.init, &keys, &args)
                .await
                .map(drop);
        }
        let owners = [owner_key(&session.owner)];
        self.script_write(&self.scripts.owner_reserve, &owners, &args[..3])
            .await?;
        let created = self.script_write(&self.scripts.init, &keys, &args).await;
        if created.is_err() {
            // Best effort: a reservation left behind frees itself at its deadline.
            let mut zrem = redis::cmd("ZREM");
            zrem.arg(&owners[0]).arg(id.as_str());
            let _ = self.one::<i64>(&zrem).await;
        }
        created.map(drop)
    }

    /// Append as one script call (atomic; one round trip), the byte quota checked inside.
    /// On Cluster the owner's quota deadline is refreshed by a second script, concurrently.
    async fn append_scripted(
        &self,
        id: &SessionId,
        owner: &str,
        events: &[NewEvent],
    ) -> Result<Vec<EventId>, StoreError> {
        let (maxlen, ttl, now, channel, max_bytes) = (
            self.settings.events_maxlen.to_string(),
            millis(self.settings.session_ttl),
            now_ms().to_string(),
            notify_channel(id),
            self.settings.quotas.max_session_bytes.to_string(),
        );
        let mut args = vec![
            owner,
            &maxlen,
            &ttl,
            &now,
            &channel,
            &max_bytes,
            id.as_str(),
        ];
        for e in events {
            args.push(&e.kind);
            args.push(&e.data);
        }
        let keys = self.script_keys(id, owner, true);
        let append = self.script_write(&self.scripts.append, &keys, &args);
        let reply = if self.settings.cluster {
            let owners = [owner_key(owner)];
            let refresh_args = [&*ttl, id.as_str()];
            let refresh = self.script_write(&self.scripts.owner_refresh, &owners, &refresh_args);
            let (reply, refreshed) = tokio::join!(append, refresh);
            if let Err(e) = refreshed {
                // The slot then frees at its older deadline: the quota undercounts, briefly.
                tracing::debug!(error = %e, "session quota deadline not refreshed");
            }
            reply?
        } else {
            append.await?
        };
        reply[1..].iter().map(|raw| parse_id(raw)).collect()
    }

    /// Complete as one script call (atomic; one round trip) that frees the owner's quota
    /// slot (on Cluster, a second call after it); the event id and the session's
    /// `created_at` (0 if unknown).
    async fn complete_scripted(
        &self,
        id: &SessionId,
        owner: &str,
        completion: &Completion,
    ) -> Result<(EventId, u64), StoreError> {
        let (maxlen, retention, now, channel, data) = (
            self.settings.events_maxlen.to_string(),
            millis(self.settings.retention),
            now_ms().to_string(),
            notify_channel(id),
            completion.event_data(),
        );
        let args = [
            owner,
            &maxlen,
            &retention,
            &now,
            &channel,
            &completion.status,
            &completion.final_response,
            &data,
            id.as_str(),
        ];
        let keys = self.script_keys(id, owner, true);
        let reply = self
            .script_write(&self.scripts.complete, &keys, &args)
            .await?;
        if self.settings.cluster {
            let mut zrem = redis::cmd("ZREM");
            zrem.arg(owner_key(owner)).arg(id.as_str());
            if let Err(e) = self.one::<i64>(&zrem).await {
                // Completed all the same; the slot frees at its deadline.
                tracing::warn!(error = %e, "session quota slot not freed on completion");
            }
        }
        let created_at = reply.get(2).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok((
            parse_id(reply.get(1).map_or("", String::as_str))?,
            created_at,
        ))
    }
}

/// The JSON-layout state of a session just created.
fn new_json_state(owner: &str, metadata: String, now: u64) -> JsonState {
    JsonState {
        status: RUNNING.to_owned(),
        created_at: now,
        updated_at: now,
        completed_at: None,
        owner: owner.to_owned(),
        metadata,
        final_response: None,
        event_count: 0,
        bytes: 0,
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(&self, id: &SessionId, session: NewSession) -> Result<(), StoreError> {
        if self.settings.pipelining {
            self.create_scripted(id, session).await?;
        } else {
            self.create_sequential(id, session).await?;
        }
        self.presence.changed(id);
        self.census.created(id, self.settings.session_ttl);
        Ok(())
    }

    async fn append(
        &self,
        id: &SessionId,
        owner: &str,
        events: &[NewEvent],
    ) -> Result<Vec<EventId>, StoreError> {
        let ids = if self.settings.pipelining {
            self.append_scripted(id, owner, events).await?
        } else {
            self.append_sequential(id, owner, events).await?
        };
        self.census.written(id, self.settings.session_ttl);
        Ok(ids)
    }

    async fn complete(
        &self,
        id: &SessionId,
        owner: &str,
        completion: Completion,
    ) -> Result<EventId, StoreError> {
        let (event, created_at) = if self.settings.pipelining {
            self.complete_scripted(id, owner, &completion).await?
        } else {
            self.complete_sequential(id, owner, &completion).await?
        };
        self.census.completed(id);
        if created_at > 0 {
            self.stats.session_completed(created_at, now_ms());
        }
        Ok(event)
    }

    async fn state(&self, id: &SessionId) -> Result<Option<SessionState>, StoreError> {
        if !self.settings.hash_state {
            let mut get = redis::cmd("GET");
            get.arg(meta_key(id));
            let raw: Option<String> = self.one(&get).await?;
            return raw
                .map(|raw| JsonState::parse(&raw).map(JsonState::into_state))
                .transpose();
        }
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> = self
            .call(
                redis::cmd("HGETALL")
                    .arg(meta_key(id))
                    .query_async(&mut conn),
            )
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let text = |k: &str| fields.get(k).cloned();
        let number = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok());
        Ok(Some(SessionState {
            status: text("status").unwrap_or_else(|| RUNNING.to_owned()),
            created_at: number("created_at").unwrap_or(0),
            updated_at: number("updated_at").unwrap_or(0),
            completed_at: number("completed_at"),
            owner: text("owner").unwrap_or_default(),
            metadata: text("metadata").unwrap_or_else(|| "null".to_owned()),
            final_response: text("final_response"),
            event_count: number("event_count").unwrap_or(0),
        }))
    }

    async fn exists(&self, id: &SessionId) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        self.call(
            redis::cmd("EXISTS")
                .arg(meta_key(id))
                .query_async(&mut conn),
        )
        .await
    }

    async fn read(
        &self,
        id: &SessionId,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let start = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let mut conn = self.conn.clone();
        let entries: Vec<(String, Vec<(String, String)>)> = self
            .call(
                redis::cmd("XRANGE")
                    .arg(events_key(id))
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit)
                    .query_async(&mut conn),
            )
            .await?;
        entries
            .into_iter()
            .map(|(raw_id, fields)| {
                let mut event = Event {
                    id: parse_id(&raw_id)?,
                    kind: String::new(),
                    data: String::new(),
                };
                for (field, value) in fields {
                    match field.as_str() {
                        "kind" => event.kind = value,
                        "data" => event.data = value,
                        _ => {}
                    }
                }
                Ok(event)
            })
            .collect()
    }

    fn watch(&self, id: &SessionId) -> Watch {
        self.watches.watch(id)
    }

    fn stats(&self) -> &StoreStats {
        &self.stats
    }

    fn presence(&self) -> &PresenceFeed {
        &self.presence
    }
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
    fn keys_share_the_session_hash_tag() {
        let id: SessionId = "abc".parse().unwrap();
        assert_eq!(meta_key(&id), "ag:{abc}:meta");
        assert_eq!(events_key(&id), "ag:{abc}:events");
        assert_eq!(session_of_channel(notify_channel(&id).as_bytes()), Some(id));
        assert_eq!(session_of_channel(b"ag:{a b}:notify"), None);
        assert_eq!(session_of_channel(b"other"), None);
    }

    #[test]
    fn the_quota_set_is_tagged_by_owner_and_is_no_session_key() {
        let owners = owner_key("0123456789abcdef");
        assert_eq!(owners, "ag:owner:{0123456789abcdef}:sessions");
        assert_eq!(session_of_meta_key(owners.as_bytes()), None);
        assert_eq!(session_of_channel(owners.as_bytes()), None);
    }
}

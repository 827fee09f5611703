//! [`RedisStore`]: the [`SessionStore`] over Redis. It owns the counted command connection,
//! the notifier and census tasks, and the reads (`HGETALL`/`GET`, `EXISTS`, `XRANGE`, whose
//! first entry's `prev` field tells a trimmed [`Gap`]); each
//! write goes to the scripted engine (`scripts`) or, with `pipelining = false`, to the
//! sequential one (`sequential`).

use std::collections::HashMap;
use std::sync::Arc;

use agentgate_middleware::rate_limit::{RedisGcra, SharedGcra};
use async_trait::async_trait;
use redis::Cmd;

use super::ack::AckLanes;
use super::census::run_census;
use super::connection::CountedConnection;
use super::json_state::JsonState;
use super::keys::{events_key, meta_key};
use super::notifier::run_notifier;
use super::scripts::Scripts;
use super::{RedisSettings, SubscribeMode, parse_id};
use crate::store::census::Census;
use crate::store::watch::WatchRegistry;
use crate::store::{
    Applied, Completion, Event, EventId, Gap, IdempotencyKey, NewEvent, NewSession, PresenceFeed,
    RUNNING, Replay, SessionId, SessionState, SessionStore, StoreError, StoreStats, Watch, now_ms,
};

/// The Redis [`SessionStore`].
pub struct RedisStore {
    pub(super) conn: CountedConnection,
    /// The connections of writes that wait for replicas, when `ack_replicas > 0`.
    pub(super) acked: Option<AckLanes>,
    pub(super) settings: RedisSettings,
    pub(super) scripts: Scripts,
    watches: Arc<WatchRegistry>,
    pub(super) stats: StoreStats,
    presence: PresenceFeed,
    notifier: tokio::task::JoinHandle<()>,
    pub(super) census: Census,
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
        let watches = Arc::new(match settings.subscribe {
            SubscribeMode::PerSession => WatchRegistry::per_session(),
            SubscribeMode::Pattern => WatchRegistry::until_subscribed(),
        });
        let conn = CountedConnection::open(&settings, stats.clone()).await?;
        let acked = if settings.ack_replicas > 0 {
            conn.acked(&settings)?.map(AckLanes::new)
        } else {
            None
        };
        let presence = PresenceFeed::default();
        let notifier = tokio::spawn(run_notifier(
            settings.clone(),
            conn.sentinel(),
            Arc::clone(&watches),
            presence.clone(),
            stats.clone(),
        ));
        let census = Census::new(stats.live_sessions.clone());
        let scripts = Scripts::new(settings.hash_state, settings.publish_command());
        let store = Arc::new(Self {
            conn,
            acked,
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
    pub(super) async fn call<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        self.timed(call)
            .await?
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// Sends one command and waits for its answer: one round trip.
    pub(super) async fn one<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        self.call(cmd.query_async(&mut conn)).await
    }

    /// Like [`call`](Self::call), but hands Redis's own error back for the caller to inspect.
    pub(super) async fn timed<T>(
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

    async fn append_idempotent(
        &self,
        id: &SessionId,
        owner: &str,
        events: &[NewEvent],
        key: Option<&IdempotencyKey>,
    ) -> Result<Applied<Vec<EventId>>, StoreError> {
        let applied = if self.settings.pipelining {
            self.append_scripted(id, owner, events, key).await?
        } else {
            self.append_sequential(id, owner, events, key).await?
        };
        if !applied.replayed {
            self.census.written(id, self.settings.session_ttl);
        }
        Ok(applied)
    }

    async fn complete_idempotent(
        &self,
        id: &SessionId,
        owner: &str,
        completion: Completion,
        key: Option<&IdempotencyKey>,
    ) -> Result<Applied<EventId>, StoreError> {
        let (applied, created_at) = if self.settings.pipelining {
            self.complete_scripted(id, owner, &completion, key).await?
        } else {
            self.complete_sequential(id, owner, &completion, key)
                .await?
        };
        if applied.replayed {
            return Ok(applied);
        }
        self.census.completed(id);
        if created_at > 0 {
            self.stats.session_completed(created_at, now_ms());
        }
        Ok(applied)
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
    ) -> Result<Replay, StoreError> {
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
        let mut replay = Replay::default();
        for (raw_id, fields) in entries {
            let mut event = Event {
                id: parse_id(&raw_id)?,
                kind: String::new(),
                data: String::new(),
            };
            for (field, value) in fields {
                match field.as_str() {
                    "kind" => event.kind = value,
                    "data" => event.data = value,
                    // The first entry's predecessor: past the cursor, it was trimmed.
                    "prev" if replay.events.is_empty() && !value.is_empty() => {
                        replay.gap = Gap::between(after, Some(parse_id(&value)?));
                    }
                    _ => {}
                }
            }
            replay.events.push(event);
        }
        Ok(replay)
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

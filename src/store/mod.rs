//! Session storage: the [`SessionStore`] trait and its two engines.
//!
//! - [`memory::MemoryStore`]: the embedded default, one process, no Redis.
//! - [`redis::RedisStore`]: production; many gateway nodes share one Redis (standalone or
//!   Cluster).
//!
//! Both keep the same model: a session's state (status, timestamps, owner, metadata, final
//! response, event count) and an append-only event log whose ids ([`EventId`]) are ordered,
//! so a reader can resume after any id with no gap and no duplicate. Both engines pass the
//! same conformance suite (`tests/store_conformance.rs`).
//!
//! The log is capped (`events_maxlen`): the oldest events are trimmed. A reader whose cursor
//! falls behind the trimming cannot get what was trimmed, but it is never left unaware: a
//! read reports the [`Gap`] before its events, named exactly by each engine's own
//! bookkeeping (the memory engine remembers the newest id it trimmed; every Redis entry
//! carries the id of the entry before it, so the oldest one kept names what went before it).
//!
//! Live tailing goes through [`Watch`]: a reader registers a watch *before* reading, then
//! waits on it whenever it has caught up. An append bumps the session's watch, so nothing
//! appended after the read can be missed (see [`watch`]).
//!
//! Writes can be made exactly-once: append and complete take an optional
//! [`IdempotencyKey`]; a retry with the same key returns the first call's result and writes
//! nothing (see [`idempotency`]).

pub mod census;
pub mod durable;
pub mod id;
pub mod idempotency;
pub mod memory;
pub mod presence;
pub mod quota;
pub mod redis;
pub mod watch;

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

pub use id::{EventId, SessionId};
pub use idempotency::{Applied, IdempotencyKey};
pub use presence::{Presence, PresenceFeed};
pub use quota::Quotas;
pub use watch::Watch;

/// The `kind` of the event that [`SessionStore::complete`] appends; agents may not append it.
pub const COMPLETE_KIND: &str = "complete";

/// One event as an agent appends it: a kind (becomes the SSE `event:` field) and JSON data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Event kind, already validated (see `api::events`).
    pub kind: String,
    /// Compact JSON text.
    pub data: String,
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in the session's log; strictly increasing.
    pub id: EventId,
    /// Event kind.
    pub kind: String,
    /// Compact JSON text.
    pub data: String,
}

/// Events trimmed from the log (`events_maxlen`) that a reader never got: every id after
/// `after` up to and including `last`. The reader's next event follows `last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The reader's cursor (`None`: it read from the start of the log).
    pub after: Option<EventId>,
    /// The newest trimmed id; the first event the reader gets next is the one after it.
    pub last: EventId,
}

impl Gap {
    /// The gap between a reader's cursor `after` and the oldest event kept, when `before` is
    /// the id of the event that preceded the oldest one kept (`None`: nothing did): events
    /// are missing only when that predecessor is past the cursor.
    pub fn between(after: Option<EventId>, before: Option<EventId>) -> Option<Self> {
        let last = before?;
        (after < Some(last)).then_some(Self { after, last })
    }
}

/// What [`SessionStore::read`] returns: the events after the cursor, and the [`Gap`] before
/// them when trimming took events the reader never got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// Events trimmed between the cursor and `events` (`None`: `events` follow the cursor).
    pub gap: Option<Gap>,
    /// The events, in order.
    pub events: Vec<Event>,
}

/// What init stores about a new session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// Fingerprint of the API key that created the session; only it may write.
    pub owner: String,
    /// Caller-supplied metadata, compact JSON text.
    pub metadata: String,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Terminal status: `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// Final response, compact JSON text.
    pub final_response: String,
}

impl Completion {
    /// The `data` of the `complete` event: `{"status":..,"final_response":..}`.
    pub fn event_data(&self) -> String {
        // `final_response` is already compact JSON; `status` is a validated word.
        format!(
            r#"{{"status":"{}","final_response":{}}}"#,
            self.status, self.final_response
        )
    }
}

/// A session's state as `GET /v2/sessions/{id}` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    /// `running` until completed, then the completion status.
    pub status: String,
    /// Unix milliseconds.
    pub created_at: u64,
    /// Unix milliseconds of the last write.
    pub updated_at: u64,
    /// Unix milliseconds, once completed.
    pub completed_at: Option<u64>,
    /// Fingerprint of the API key that created the session.
    pub owner: String,
    /// Caller-supplied metadata (compact JSON text).
    pub metadata: String,
    /// Final response (compact JSON text), once completed.
    pub final_response: Option<String>,
    /// Events appended so far, the complete event included (trimmed ones too).
    pub event_count: u64,
}

/// Status of a session that has not completed.
pub const RUNNING: &str = "running";

impl SessionState {
    /// True once the session has completed.
    pub fn is_completed(&self) -> bool {
        self.status != RUNNING
    }
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such session (never created, or expired).
    #[error("session not found")]
    NotFound,
    /// The session has already completed.
    #[error("session already completed")]
    Completed,
    /// The caller's API key does not own the session.
    #[error("session belongs to another API key")]
    Forbidden,
    /// The owner already holds `limit` running sessions (`max_active_sessions_per_key`);
    /// nothing was created.
    #[error("the API key already holds {limit} running sessions, its quota")]
    SessionQuotaExceeded {
        /// The quota.
        limit: u64,
    },
    /// The batch would take the bytes appended to the session past `limit`
    /// (`max_session_bytes`); nothing was appended.
    #[error("the batch would take the session past {limit} bytes of events")]
    SessionBytesExceeded {
        /// The quota.
        limit: u64,
    },
    /// The backend did not answer in time or is unreachable; retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The write was applied on the Redis master, but only `acked` of the `wanted` replicas
    /// (`store.redis.ack_replicas`) confirmed it in time: a failover may still lose it, and
    /// a retry may apply it twice, unless it carries the same [`IdempotencyKey`].
    #[error("the write reached {acked} of the {wanted} replicas required")]
    NotReplicated {
        /// Replicas required.
        wanted: u32,
        /// Replicas that confirmed the write.
        acked: u32,
    },
    /// The call's [`IdempotencyKey`] was recorded with another request (other events, or
    /// another endpoint); nothing was written.
    #[error("the idempotency key was used for another request")]
    IdempotencyKeyReused,
    /// The backend answered something the store cannot interpret.
    #[error("store protocol error: {0}")]
    Protocol(String),
}

/// Figures a store keeps about its backend traffic and its sessions (Redis round trips and
/// commands, live sessions, memory per session, completion times, connections).
///
/// Cheap to clone (the metrics are shared), so the metrics registry holds the same ones.
#[derive(Debug, Clone)]
pub struct StoreStats {
    /// Requests sent to the backend (a pipeline or a script call counts once).
    pub round_trips: Counter,
    /// Commands sent (a pipeline of n commands counts n).
    pub commands: Counter,
    /// Commands sent, by command name (`EVALSHA`, `XRANGE`, ...; unknown ones as `other`).
    pub by_command: Family<CommandLabel, Counter>,
    /// Sessions live now: created, neither completed nor expired. The memory engine counts
    /// every session exactly; the Redis engine counts this node's view ([`census`]).
    pub live_sessions: Gauge,
    /// Estimated bytes one session costs the backend, averaged over the sessions it measures:
    /// the memory engine adds up the data each session holds (strings, events, fixed
    /// overheads); the Redis engine samples `MEMORY USAGE` of a few live sessions' keys.
    pub session_memory_bytes: Gauge,
    /// Seconds from a session's creation (`created_at`, kept by the store, so the session may
    /// have been created on another node) to its completion, observed by the store that
    /// completes it.
    pub session_duration: Histogram,
    /// Connections the store holds to its backend now (none for the memory engine).
    pub connections: Gauge,
    /// Sessions whose notification channel this node subscribes to now (Redis with
    /// `subscribe = "per_session"`; 0 otherwise).
    pub subscriptions: Gauge,
    /// Write notifications this node received from the backend, for any session (Redis).
    pub notifications: Counter,
    /// Bytes of those notifications (channel name plus payload).
    pub notification_bytes: Counter,
}

/// 10 ms to about 1.5 hours, doubling.
fn session_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 20))
}

impl Default for StoreStats {
    fn default() -> Self {
        Self {
            round_trips: Counter::default(),
            commands: Counter::default(),
            by_command: Family::default(),
            live_sessions: Gauge::default(),
            session_memory_bytes: Gauge::default(),
            session_duration: session_duration_histogram(),
            connections: Gauge::default(),
            subscriptions: Gauge::default(),
            notifications: Counter::default(),
            notification_bytes: Counter::default(),
        }
    }
}

/// The label of [`StoreStats::by_command`].
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabel {
    /// Upper-case command name.
    pub command: &'static str,
}

/// Names of the commands the Redis engine sends, for the `command` label without allocating.
const COMMANDS: [&str; 27] = [
    "EVALSHA",
    "EVAL",
    "SCRIPT",
    "HSET",
    "HGETALL",
    "PEXPIRE",
    "XRANGE",
    "XREVRANGE",
    "EXISTS",
    "MULTI",
    "EXEC",
    "PING",
    "GET",
    "SET",
    "PSUBSCRIBE",
    "HMGET",
    "HINCRBY",
    "XADD",
    "PUBLISH",
    "ZREMRANGEBYSCORE",
    "ZCARD",
    "ZADD",
    "ZREM",
    "HGET",
    "RPUSH",
    "LPOP",
    "HDEL",
];

impl StoreStats {
    /// Records one round trip carrying `commands` commands.
    pub fn record(&self, commands: usize) {
        self.round_trips.inc();
        self.commands.inc_by(commands as u64);
    }

    /// Counts one command named `name` (case-insensitive).
    pub fn record_command(&self, name: &[u8]) {
        let command = COMMANDS
            .iter()
            .find(|c| c.as_bytes().eq_ignore_ascii_case(name))
            .copied()
            .unwrap_or("other");
        self.by_command
            .get_or_create(&CommandLabel { command })
            .inc();
    }

    /// `(round_trips, commands)` so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (self.round_trips.get(), self.commands.get())
    }

    /// Observes the completion of a session created at `created_at_ms` and completed at
    /// `completed_at_ms` (Unix milliseconds; a clock step backwards counts as zero).
    pub fn session_completed(&self, created_at_ms: u64, completed_at_ms: u64) {
        let took = completed_at_ms.saturating_sub(created_at_ms);
        #[allow(clippy::cast_precision_loss)] // milliseconds fit f64 exactly for 285k years
        self.session_duration.observe(took as f64 / 1000.0);
    }
}

/// Storage for sessions and their event logs.
///
/// Every method that writes does so in one backend round trip and atomically: a call that
/// fails leaves nothing behind. (The one exception is the Redis engine's naive baseline,
/// `features.pipelining = false`: one command per round trip, not atomic; see
/// `store::redis::sequential`.)
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Creates a session in state `running`, unless its owner already holds its quota of
    /// running sessions ([`StoreError::SessionQuotaExceeded`]).
    async fn create(&self, id: &SessionId, session: NewSession) -> Result<(), StoreError>;

    /// Appends events to a running session owned by `owner`; returns their ids in order.
    /// All or nothing: a batch that would take the session past its byte quota is refused
    /// whole ([`StoreError::SessionBytesExceeded`]).
    async fn append(
        &self,
        id: &SessionId,
        owner: &str,
        events: &[NewEvent],
    ) -> Result<Vec<EventId>, StoreError> {
        let applied = self.append_idempotent(id, owner, events, None).await?;
        Ok(applied.value)
    }

    /// [`append`](Self::append), exactly once per `key` ([`idempotency`]): with a key
    /// recorded for the same events, returns their original ids and writes nothing, even
    /// once the session has completed; recorded for another request, fails as
    /// [`StoreError::IdempotencyKeyReused`]. The key is checked and recorded in the same
    /// atomic write as the events.
    async fn append_idempotent(
        &self,
        id: &SessionId,
        owner: &str,
        events: &[NewEvent],
        key: Option<&IdempotencyKey>,
    ) -> Result<Applied<Vec<EventId>>, StoreError>;

    /// Completes a running session owned by `owner`: sets the terminal status, appends the
    /// `complete` event (not counted in the byte quota), starts the retention TTL and frees
    /// the session's slot in its owner's quota. Returns the complete event's id.
    async fn complete(
        &self,
        id: &SessionId,
        owner: &str,
        completion: Completion,
    ) -> Result<EventId, StoreError> {
        let applied = self
            .complete_idempotent(id, owner, completion, None)
            .await?;
        Ok(applied.value)
    }

    /// [`complete`](Self::complete), exactly once per `key`, as
    /// [`append_idempotent`](Self::append_idempotent): a retry with the same key and
    /// completion gets the original complete event's id.
    async fn complete_idempotent(
        &self,
        id: &SessionId,
        owner: &str,
        completion: Completion,
        key: Option<&IdempotencyKey>,
    ) -> Result<Applied<EventId>, StoreError>;

    /// The session's state, or `None` if it does not exist.
    async fn state(&self, id: &SessionId) -> Result<Option<SessionState>, StoreError>;

    /// Whether the session exists (one cheap backend command).
    async fn exists(&self, id: &SessionId) -> Result<bool, StoreError>;

    /// Up to `limit` events with ids greater than `after` (all events when `None`), in order,
    /// and the [`Gap`] before them when the log was trimmed past `after`. Nothing more is
    /// read for the gap: it is known from what the read returns (one backend command).
    async fn read(
        &self,
        id: &SessionId,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Replay, StoreError>;

    /// Registers interest in the session's new events. Register before reading; then
    /// [`Watch::changed`] resolves after any append that follows the registration.
    fn watch(&self, id: &SessionId) -> Watch;

    /// Backend traffic counters.
    fn stats(&self) -> &StoreStats;

    /// Sessions this store saw appear or disappear (created here, expired), for caches of
    /// "does this session exist".
    fn presence(&self) -> &PresenceFeed;
}

/// A store as the existence cache's backend: "does this session exist?" (one `EXISTS`).
#[derive(Clone)]
pub struct StoreExistence(pub std::sync::Arc<dyn SessionStore>);

impl agentgate_middleware::existence_cache::ExistenceCheck<SessionId> for StoreExistence {
    type Error = StoreError;

    async fn exists(&self, key: &SessionId) -> Result<bool, StoreError> {
        self.0.exists(key).await
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

//! The Redis engine: many gateway nodes share sessions through Redis (standalone, Cluster,
//! or a master and its replicas watched by Sentinel, followed across failovers).
//!
//! Data model (every key of a session carries the `{<sid>}` hash tag, so a session lives in
//! one Cluster slot and one call can touch all its keys):
//!
//! - `ag:{<sid>}:meta` — HASH: `status`, `created_at`, `updated_at`, `completed_at`,
//!   `final_response`, `owner`, `metadata`, `event_count`.
//! - `ag:{<sid>}:events` — STREAM of entries with fields `kind`, `data` and `prev` (the id of
//!   the entry before, `""` for the first), capped with `XADD MAXLEN ~`. `prev` is the
//!   trimming bookkeeping: a read whose first entry's `prev` is past its cursor knows
//!   exactly which events it missed ([`Gap`](crate::store::Gap)), from the one `XRANGE` it
//!   made. Redis's own (`XINFO STREAM`) cannot say it: `max-deleted-entry-id` counts `XDEL`
//!   only (it stays `0-0` under `MAXLEN` trimming, Redis 7.0), and the oldest entry's id
//!   alone cannot tell a cursor on the newest trimmed entry (nothing missed) from one
//!   before it. Entries written without `prev` (before it existed) report no gap.
//! - `ag:{<sid>}:idem` — HASH of the session's idempotency keys (a 128-bit SHA-256 prefix of
//!   each, never the key) to `<request digest> <id> <id>...`, and `ag:{<sid>}:idem:order`
//!   — LIST of those names, oldest first, so the oldest past the bound is evicted
//!   ([`crate::store::idempotency`]); both with the session's TTL, written by the append
//!   and complete scripts.
//! - `ag:{<sid>}:notify` — pub/sub channel (sharded on Cluster with per-session
//!   subscriptions: `SPUBLISH`); every write publishes on it a notice
//!   `{"a": <id before>, "e": [[id, kind, data], ...]}` (the events it wrote and the id they
//!   follow, `""` for an empty log) when their data totals at most 8 KiB, else the newest id.
//!
//! and, per owner (API key fingerprint; tagged `{<fingerprint>}`, so another slot):
//!
//! - `ag:owner:{<fingerprint>}:sessions` — ZSET of the owner's running session ids scored by
//!   expiry deadline, the per-key session quota ([`super::quota`]).
//!
//! With the default `[features]`, every handler call is ONE round trip: init, append and
//! complete are Lua scripts (EVALSHA, `lua/*.lua`), because they must refuse to write
//! when the owner is over its session quota, or to a session that is missing, owned by
//! another key, completed or over its byte quota, and a pipeline (or MULTI/EXEC without a
//! WATCH round trip) cannot make its writes conditional. A script is atomic, so a refused or
//! failed call leaves nothing half-written. On Cluster the owner's quota set is in another
//! slot, so init and complete take a second round trip to it ([`super::quota`] says how).
//!
//! With `ack_replicas = N` (standalone or Sentinel), each of those write scripts is pipelined
//! with `WAIT N ack_timeout_ms` in the same round trip, and a write fewer replicas confirmed
//! fails as [`StoreError::NotReplicated`] (it may have been applied all the same).
//!
//! Two `[features]` switches turn this into the naive baseline the benchmark (`bench/ab.sh`)
//! measures against, held to the same conformance suite:
//!
//! - `pipelining = false` (`redis::sequential`): one command per round trip, each awaited
//!   before the next, no pipeline, no script; not atomic.
//! - `hash_state = false` (`redis::json_state`): the state is one JSON string at
//!   `ag:{<sid>}:meta`, read, modified and written back whole on every change.
//!
//! Live tailing uses ONE extra connection per process however many readers are connected
//! (`notifier`): it subscribes to the channels of the sessions this node has readers for
//! (`store.redis.subscribe = "per_session"`; sharded pub/sub on Cluster, so a notice stays in
//! its session's shard) or to all of them with one pattern (`"pattern"`), and wakes the
//! local readers of a session ([`WatchRegistry`](crate::store::watch::WatchRegistry)). A
//! reader whose cursor is the notice's "before" id takes the events from the notice — no
//! read at all; any other reader (behind, or woken by a bare id) `XRANGE`s from its own
//! cursor on the shared multiplexed connection. A new reader reads once its session's
//! subscription is confirmed, and every (re)confirmation makes the readers re-read, so
//! notifications lost before it or while disconnected cost nothing. On Cluster, one more
//! connection per master hears expired keys (keyspace events are per node).
//!
//! Figures ([`StoreStats`](crate::store::StoreStats)): live sessions are this node's view
//! ([`Census`](crate::store::census::Census)); memory per session is `MEMORY USAGE` of the
//! meta hash, the event stream and the idempotency records of up to 8 of those sessions,
//! averaged, every 5 seconds
//! (those commands are not counted as the store's traffic); connections held are the multiplexed command connection plus the notification
//! connection while it answers (on Cluster each is one handle with a socket per node, plus the
//! expired-key-events connection of each master).
//!
//! The parts, one file each:
//!
//! - `keys`: key and channel names, and the session a name belongs to;
//! - `connection`: the command connection that counts round trips and commands;
//! - `sentinel`: the master the Sentinels name, followed across failovers;
//! - `ack`: sending a write, with `WAIT` for replicas when `ack_replicas` asks for it;
//! - `scripts`: the Lua write scripts (`lua/*.lua`) and the scripted writes;
//! - `sequential`, `json_state`: the naive baselines above;
//! - `notifier`: the notification connection, the subscriptions it keeps in step with the
//!   readers, and the loop that wakes them;
//! - `census`: the census sweep and the memory sampling;
//! - `store`: [`RedisStore`] itself: connecting, reads, and the [`SessionStore`] calls.
//!
//! [`SessionStore`]: crate::store::SessionStore

use std::time::Duration;

pub use agentgate_config::SubscribeMode;

use super::{EventId, Quotas, StoreError};

mod ack;
mod census;
mod connection;
mod json_state;
mod keys;
mod notifier;
mod scripts;
mod sentinel;
mod sequential;
mod store;
mod streams;

pub use self::store::RedisStore;
pub use self::streams::RedisStreams;

/// Settings of the Redis engine.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URLs: one for standalone, the seed nodes for Cluster.
    pub urls: Vec<String>,
    /// Use the Cluster protocol.
    pub cluster: bool,
    /// `urls` are Sentinels; the store follows the master of this name.
    pub sentinel_master: Option<String>,
    /// The password of the master and replicas found through the Sentinels.
    pub sentinel_master_password: Option<String>,
    /// Replicas that must confirm each write (`WAIT`) before it is acknowledged; 0: none.
    pub ack_replicas: u32,
    /// Longest a write waits for those replicas.
    pub ack_timeout: Duration,
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
    /// How nodes hear of writes (`store.redis.subscribe`): per watched session, or one
    /// pattern for all.
    pub subscribe: SubscribeMode,
}

impl RedisSettings {
    /// The command that publishes a session's notices: `SPUBLISH` (sharded) on Cluster with
    /// per-session subscriptions, else `PUBLISH`.
    pub(super) fn publish_command(&self) -> &'static str {
        if self.cluster && self.subscribe == SubscribeMode::PerSession {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }
}

/// A stream id as Redis wrote it.
fn parse_id(raw: &str) -> Result<EventId, StoreError> {
    raw.parse()
        .map_err(|_| StoreError::Protocol(format!("bad stream id {raw:?}")))
}

/// A duration as the millisecond count `PEXPIRE` takes (at least 1).
fn millis(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

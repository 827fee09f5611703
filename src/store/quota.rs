//! Quotas: what one API key and one session may hold (`[store.quotas]`, [`Quotas`]).
//!
//! - **Running sessions per API key** (`max_active_sessions_per_key`). Each engine keeps, per
//!   owner (the API key's fingerprint, never the key), the ids of its running sessions with
//!   their expiry deadline. Init drops the entries whose deadline has passed, refuses when
//!   the owner still holds the maximum, else adds the new session; every append pushes the
//!   session's deadline back (as it does the session's own TTL); complete removes it. So a
//!   session that is never completed frees its slot when it expires, without any sweeper.
//!   Redis: a sorted set `ag:owner:{<fingerprint>}:sessions`, scored by deadline in
//!   milliseconds of the Redis server's clock (`TIME` inside the scripts), expiring itself
//!   `session_ttl` after its last change.
//! - **Bytes per session** (`max_session_bytes`): a counter of the bytes appended over the
//!   session's life ([`batch_bytes`]: each event's kind plus its data), checked before
//!   anything of the batch is written. Trimming (`events_maxlen`) does not lower it. The
//!   `complete` event is not counted, so a session at its cap can still complete and free
//!   its slot.
//!
//! Both checks run inside the write they guard (the memory engine's locks; the Redis
//! engine's init, append and complete scripts), so a refused call writes nothing.
//!
//! **Redis Cluster.** A session's keys carry the `{<sid>}` hash tag and the owner's set the
//! `{<fingerprint>}` tag: they live in different slots, and one script cannot touch both.
//! Tagging sessions by owner instead would put all of a key's traffic on one node. So on
//! Cluster the owner's set is a separate call on its own node: init reserves the slot first
//! (refused: nothing is created) and creates the session second (two round trips; if the
//! create fails, the reservation is released, or else frees itself at its deadline);
//! append refreshes the deadline concurrently with the append script (same latency, two
//! requests); complete releases the slot after the complete script succeeded. On
//! standalone Redis everything is one script and one round trip.

use super::NewEvent;

pub use agentgate_config::QuotasConfig as Quotas;

/// Bytes `events` add to a session's count: each event's kind plus its (compact JSON) data,
/// as the Redis scripts count them (`#kind + #data`).
pub fn batch_bytes(events: &[NewEvent]) -> u64 {
    events
        .iter()
        .map(|e| (e.kind.len() + e.data.len()) as u64)
        .sum()
}

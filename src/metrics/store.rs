//! The session store's figures (`agentgate_store_*`, `agentgate_sessions_active`,
//! `agentgate_session_memory_bytes`, `agentgate_session_duration_seconds`): the store keeps
//! them in its [`StoreStats`]; this registers them.

use prometheus_client::registry::Registry;

use crate::store::StoreStats;

/// Registers the store's figures in `registry`.
pub(super) fn register(registry: &mut Registry, store: &StoreStats) {
    registry.register(
        "store_round_trips",
        "Round trips to the session store backend (a pipeline or script counts once)",
        store.round_trips.clone(),
    );
    registry.register(
        "store_commands",
        "Commands sent to the session store backend",
        store.commands.clone(),
    );
    registry.register(
        "store_commands_by_name",
        "Commands sent to the session store backend, by command",
        store.by_command.clone(),
    );
    registry.register(
        "store_connections",
        "Connections the session store holds to its backend (Redis: the multiplexed \
         command connection plus the notification connection while subscribed, however \
         many streams are open; on Cluster each is a handle with a socket per node; \
         memory: 0)",
        store.connections.clone(),
    );
    registry.register(
        "store_subscriptions",
        "Sessions whose notification channel this node subscribes to (Redis with \
         subscribe = \"per_session\": the sessions it has stream readers for, kept a second \
         after the last leaves; 0 with subscribe = \"pattern\", which hears every session)",
        store.subscriptions.clone(),
    );
    registry.register(
        "store_notifications",
        "Write notifications this node received from Redis, for any session (with \
         subscribe = \"pattern\" every write of every node; per_session: only the \
         sessions it has readers for)",
        store.notifications.clone(),
    );
    registry.register(
        "store_notification_bytes",
        "Bytes of the write notifications this node received from Redis (channel name \
         plus payload)",
        store.notification_bytes.clone(),
    );
    registry.register(
        "sessions_active",
        "Sessions created and neither completed nor expired. Memory store: every session, \
         exactly. Redis: this node's view, the sessions created through this node until \
         completed through it or idle past the session TTL (sum over nodes for a total)",
        store.live_sessions.clone(),
    );
    registry.register(
        "session_memory_bytes",
        "Estimated bytes the store spends per session. Memory store: the data each held \
         session keeps (strings, events, idempotency records) plus fixed structure sizes, \
         averaged, a lower bound. Redis: MEMORY USAGE of the meta hash, the event stream \
         and the idempotency records, averaged over up to 8 live sessions sampled every 5 s",
        store.session_memory_bytes.clone(),
    );
    registry.register(
        "session_duration_seconds",
        "End-to-end session time, from creation (the store's created_at) to completion, \
         observed when a session completes through this gateway",
        store.session_duration.clone(),
    );
}

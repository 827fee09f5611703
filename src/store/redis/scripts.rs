//! `features.pipelining = true` (the default): every write is ONE Lua script call (EVALSHA),
//! atomic, so a refused or failed call leaves nothing half-written. Scripts, not pipelines,
//! because the writes are conditional: init refuses when the owner is over its session
//! quota; append and complete refuse a session that is missing, owned by another key,
//! completed or over its byte quota. A pipeline (or MULTI/EXEC without a WATCH round trip)
//! cannot make its writes conditional.
//!
//! The Lua lives in `lua/*.lua`: `init`, `append`, `complete` for the HASH layout,
//! `json_*` for the JSON layout (`hash_state = false`), `quota.lua` (the quota functions,
//! prepended to the scripts that need them), `idempotency.lua` (the idempotency key
//! functions, prepended to append and complete: a recorded key is answered, and a fresh
//! one recorded, inside the same script as the write) and, for Cluster only, `owner_reserve` and
//! `owner_refresh`: there the owner's quota set is in another slot than the session, so init
//! and append/complete touch it in a second call ([`crate::store::quota`] says how).
//!
//! The scripts that notify publish with `PUBLISH`, a name each script is prefixed with:
//! `SPUBLISH` on Cluster with `subscribe = "per_session"` (sharded pub/sub: the notice
//! stays in the session's shard), else the classic `PUBLISH` ([`super::notifier`] says why).
//! On Cluster the channel carries the session's hash tag, so it hashes to the script's slot.

use super::keys::{events_key, idem_key, idem_order_key, meta_key, notify_channel, owner_key};
use super::{RedisStore, millis, parse_id};
use crate::store::idempotency::{MAX_KEYS_PER_SESSION, append_digest, complete_digest};
use crate::store::redis::json_state::JsonState;
use crate::store::{
    Applied, Completion, EventId, IdempotencyKey, NewEvent, NewSession, SessionId, StoreError,
    now_ms,
};
use redis::{ErrorKind, Script, ServerErrorKind};

/// The write scripts of one state layout, and the Cluster-only quota scripts.
pub(super) struct Scripts {
    init: LuaScript,
    append: LuaScript,
    complete: LuaScript,
    owner_reserve: LuaScript,
    owner_refresh: LuaScript,
}

/// Prepends the quota functions (`lua/quota.lua`) to the script file `$file`.
macro_rules! with_quota {
    ($file:literal) => {
        concat!(include_str!("lua/quota.lua"), include_str!($file))
    };
}

/// Prepends the idempotency key functions (`lua/idempotency.lua`) to the script `$code`.
macro_rules! with_idempotency {
    ($code:expr) => {
        concat!(include_str!("lua/idempotency.lua"), $code)
    };
}

impl Scripts {
    /// The scripts of the HASH layout (`hash_state`) or of the JSON one, notifying with
    /// `publish` (`PUBLISH` or `SPUBLISH`).
    pub(super) fn new(hash_state: bool, publish: &str) -> Self {
        let (init, append, complete) = if hash_state {
            (
                with_quota!("lua/init.lua"),
                with_idempotency!(with_quota!("lua/append.lua")),
                with_idempotency!(include_str!("lua/complete.lua")),
            )
        } else {
            (
                with_quota!("lua/json_init.lua"),
                with_idempotency!(with_quota!("lua/json_append.lua")),
                with_idempotency!(include_str!("lua/json_complete.lua")),
            )
        };
        let notifying = |code: &str| LuaScript::new(format!("local PUBLISH = '{publish}'\n{code}"));
        Self {
            init: notifying(init),
            append: notifying(append),
            complete: notifying(complete),
            owner_reserve: LuaScript::new(with_quota!("lua/owner_reserve.lua").to_owned()),
            owner_refresh: LuaScript::new(with_quota!("lua/owner_refresh.lua").to_owned()),
        }
    }
}

/// A Lua script and its SHA1, for EVALSHA.
struct LuaScript {
    code: String,
    hash: String,
}

impl LuaScript {
    fn new(code: String) -> Self {
        Self {
            hash: Script::new(&code).get_hash().to_owned(),
            code,
        }
    }
}

impl RedisStore {
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
        let evalsha = invoke("EVALSHA", &script.hash);
        let reply: Vec<String> = match self.send_write(&evalsha).await? {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let eval = invoke("EVAL", &script.code);
                self.send_write(&eval)
                    .await?
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?
            }
            other => other.map_err(|e| StoreError::Unavailable(e.to_string()))?,
        };
        match reply.first().map(String::as_str) {
            Some("ok" | "replayed") => Ok(reply),
            Some("key_reused") => Err(StoreError::IdempotencyKeyReused),
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

    /// The keys a session write script touches: the session's (with `events`: its log and
    /// its idempotency records too), and on standalone Redis the owner's quota set (on
    /// Cluster it is in another slot; the caller handles it apart).
    fn script_keys(&self, id: &SessionId, owner: &str, events: bool) -> Vec<String> {
        let mut keys = vec![meta_key(id)];
        if events {
            keys.extend([events_key(id), idem_key(id), idem_order_key(id)]);
        }
        if !self.settings.cluster {
            keys.push(owner_key(owner));
        }
        keys
    }

    /// Create as one script call (atomic; one round trip), the owner's quota checked inside.
    /// On Cluster: a reservation in the owner's set first, then the create.
    pub(super) async fn create_scripted(
        &self,
        id: &SessionId,
        session: NewSession,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let (ttl, max) = (
            millis(self.settings.session_ttl),
            self.settings.quotas.max_active_sessions_per_key.to_string(),
        );
        let state = if self.settings.hash_state {
            vec![session.owner.clone(), session.metadata, now.to_string()]
        } else {
            vec![JsonState::created(&session.owner, session.metadata, now).to_json()]
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

    /// Append as one script call (atomic; one round trip), the byte quota and the
    /// idempotency key checked inside. On Cluster the owner's quota deadline is refreshed by
    /// a second script, concurrently.
    pub(super) async fn append_scripted(
        &self,
        id: &SessionId,
        owner: &str,
        events: &[NewEvent],
        key: Option<&IdempotencyKey>,
    ) -> Result<Applied<Vec<EventId>>, StoreError> {
        let (maxlen, ttl, now, channel, max_bytes) = (
            self.settings.events_maxlen.to_string(),
            millis(self.settings.session_ttl),
            now_ms().to_string(),
            notify_channel(id),
            self.settings.quotas.max_session_bytes.to_string(),
        );
        let digest = key.map(|_| append_digest(events)).unwrap_or_default();
        let max_keys = MAX_KEYS_PER_SESSION.to_string();
        let mut args = vec![
            owner,
            &maxlen,
            &ttl,
            &now,
            &channel,
            &max_bytes,
            id.as_str(),
            key.map_or("", IdempotencyKey::field),
            &digest,
            &max_keys,
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
        Ok(Applied {
            value: reply[1..]
                .iter()
                .map(|raw| parse_id(raw))
                .collect::<Result<_, _>>()?,
            replayed: reply[0] == "replayed",
        })
    }

    /// Complete as one script call (atomic; one round trip; the idempotency key checked
    /// inside) that frees the owner's quota slot (on Cluster, a second call after it); the
    /// event id and the session's `created_at` (0 if unknown, or replayed).
    pub(super) async fn complete_scripted(
        &self,
        id: &SessionId,
        owner: &str,
        completion: &Completion,
        key: Option<&IdempotencyKey>,
    ) -> Result<(Applied<EventId>, u64), StoreError> {
        let (maxlen, retention, now, channel, data) = (
            self.settings.events_maxlen.to_string(),
            millis(self.settings.retention),
            now_ms().to_string(),
            notify_channel(id),
            completion.event_data(),
        );
        let digest = key.map(|_| complete_digest(completion)).unwrap_or_default();
        let max_keys = MAX_KEYS_PER_SESSION.to_string();
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
            key.map_or("", IdempotencyKey::field),
            &digest,
            &max_keys,
        ];
        let keys = self.script_keys(id, owner, true);
        let reply = self
            .script_write(&self.scripts.complete, &keys, &args)
            .await?;
        let replayed = reply[0] == "replayed";
        if self.settings.cluster && !replayed {
            let mut zrem = redis::cmd("ZREM");
            zrem.arg(owner_key(owner)).arg(id.as_str());
            if let Err(e) = self.one::<i64>(&zrem).await {
                // Completed all the same; the slot frees at its deadline.
                tracing::warn!(error = %e, "session quota slot not freed on completion");
            }
        }
        let created_at = reply.get(2).and_then(|c| c.parse().ok()).unwrap_or(0);
        let value = parse_id(reply.get(1).map_or("", String::as_str))?;
        Ok((Applied { value, replayed }, created_at))
    }
}

//! `features.pipelining = false`: the naive writes the benchmark compares against. Every
//! Redis command is its own round trip, awaited before the next one is sent.
//!
//! - init: drop the owner's expired sessions from its quota set (`ZREMRANGEBYSCORE`), count
//!   them (`ZCARD`), add the new one (`ZADD`, `PEXPIRE` of the set), write the state (`HSET`,
//!   or `SET` of the JSON object), then `PEXPIRE`;
//! - append: read owner, status and bytes (`HMGET`, or `GET` of the whole JSON object), the
//!   newest id (`XREVRANGE`, each entry's `prev`), one `XADD` per event, update the state (`HINCRBY` x2 + `HSET`, or `SET` of the modified
//!   object), `PEXPIRE` both keys, push the quota deadline back (`ZADD XX`, `PEXPIRE` of the
//!   set), `PUBLISH`;
//! - complete: the same check, the newest id, `XADD` of the complete event, the state update, `PEXPIRE`
//!   both keys, `PUBLISH`, free the quota slot (`ZREM`).
//! - with an idempotency key, after the owner check: the record (`HGET`), and after a fresh
//!   write, recording it (`HSET`, `RPUSH` of its name, `LPOP` + `HDEL` of the oldest past
//!   the bound, `PEXPIRE` of both). Calls without a key touch no record, so records keep
//!   the TTL of the last write that had a key (the session's or its retention) rather
//!   than following the session's.
//!
//! From one caller's point of view the results and errors are those of the pipelined
//! engine: refused writes (over the session quota, missing session, other owner, completed,
//! over the byte quota) are refused before anything is written. But nothing is atomic:
//! concurrent writers may interleave between the check and the writes (two completes may
//! both pass the check; two inits of one key may both pass the quota count, two appends the
//! byte count; with the JSON layout a writer writes back a stale object: two appends lose
//! one's `event_count`, an append racing a complete may put `running` back; two appends'
//! first entries may name the same `prev`, so when the earlier one is trimmed a reader just
//! before it is not told), and a failure
//! half-way leaves the commands before it applied. Quota deadlines are on the gateway's
//! clock, not Redis's. Two calls with one idempotency key may both miss the record and both
//! write. That is part of what makes it the naive baseline. Each command gets
//! the store's whole `timeout`.

use super::json_state::JsonState;
use super::keys::{events_key, idem_key, idem_order_key, meta_key, notify_channel, owner_key};
use super::{RedisStore, millis, parse_id};
use crate::store::idempotency::{MAX_KEYS_PER_SESSION, append_digest, complete_digest};
use crate::store::quota::batch_bytes;
use crate::store::{
    Applied, Completion, EventId, IdempotencyKey, NewEvent, NewSession, RUNNING, SessionId,
    StoreError, now_ms,
};

/// What [`RedisStore::check_writable`] read: the JSON state to write back (JSON layout),
/// `created_at`, and the bytes appended so far.
struct Writable {
    json: Option<JsonState>,
    created_at: u64,
    bytes: u64,
}

/// What [`RedisStore::check_writable`] found: a session to write, or the result an
/// idempotency key recorded.
enum Checked {
    Write(Writable),
    Replay(Vec<EventId>),
}

impl RedisStore {
    /// Refuses a write to a session that is missing, owned by someone else or completed;
    /// between the owner and the status, answers a recorded idempotency `key` (with the
    /// request's digest). With the JSON layout, returns the state it read, to be modified
    /// and written back.
    async fn check_writable(
        &self,
        id: &SessionId,
        owner: &str,
        key: Option<(&IdempotencyKey, &str)>,
    ) -> Result<Checked, StoreError> {
        let (status, writable) = self.read_writable(id, owner).await?;
        if let Some((key, digest)) = key
            && let Some(ids) = self.recorded(id, key, digest).await?
        {
            return Ok(Checked::Replay(ids));
        }
        if status != RUNNING {
            return Err(StoreError::Completed);
        }
        Ok(Checked::Write(writable))
    }

    /// Reads what a write needs; refuses a session that is missing or owned by someone
    /// else. Returns its status too.
    async fn read_writable(
        &self,
        id: &SessionId,
        owner: &str,
    ) -> Result<(String, Writable), StoreError> {
        if self.settings.hash_state {
            let mut hmget = redis::cmd("HMGET");
            hmget
                .arg(meta_key(id))
                .arg("status")
                .arg("owner")
                .arg("created_at")
                .arg("bytes");
            let (status, stored_owner, created_at, bytes): (
                Option<String>,
                Option<String>,
                Option<u64>,
                Option<u64>,
            ) = self.one(&hmget).await?;
            let status = owned(status, stored_owner.as_deref(), owner)?;
            let writable = Writable {
                json: None,
                created_at: created_at.unwrap_or(0),
                bytes: bytes.unwrap_or(0),
            };
            Ok((status, writable))
        } else {
            let mut get = redis::cmd("GET");
            get.arg(meta_key(id));
            let raw: Option<String> = self.one(&get).await?;
            let state = JsonState::parse(&raw.ok_or(StoreError::NotFound)?)?;
            let status = owned(Some(state.status.clone()), Some(&state.owner), owner)?;
            let writable = Writable {
                created_at: state.created_at,
                bytes: state.bytes,
                json: Some(state),
            };
            Ok((status, writable))
        }
    }

    /// What `key` recorded in the session (`HGET`): the ids, if it recorded the request
    /// `digest`; refused if it recorded another request.
    async fn recorded(
        &self,
        id: &SessionId,
        key: &IdempotencyKey,
        digest: &str,
    ) -> Result<Option<Vec<EventId>>, StoreError> {
        let mut hget = redis::cmd("HGET");
        hget.arg(idem_key(id)).arg(key.field());
        let Some(record): Option<String> = self.one(&hget).await? else {
            return Ok(None);
        };
        let mut words = record.split(' ');
        if words.next() != Some(digest) {
            return Err(StoreError::IdempotencyKeyReused);
        }
        words.map(parse_id).collect::<Result<_, _>>().map(Some)
    }

    /// Records `ids` as the result of `digest` under `key`, as `lua/idempotency.lua` does,
    /// one command at a time, with `ttl`.
    async fn record(
        &self,
        id: &SessionId,
        key: &IdempotencyKey,
        digest: &str,
        ids: &[String],
        ttl: std::time::Duration,
    ) -> Result<(), StoreError> {
        let (records, order) = (idem_key(id), idem_order_key(id));
        let mut hset = redis::cmd("HSET");
        hset.arg(&records)
            .arg(key.field())
            .arg(format!("{digest} {}", ids.join(" ")));
        self.one::<()>(&hset).await?;
        let mut rpush = redis::cmd("RPUSH");
        rpush.arg(&order).arg(key.field());
        let names: usize = self.one(&rpush).await?;
        if names > MAX_KEYS_PER_SESSION {
            let mut lpop = redis::cmd("LPOP");
            lpop.arg(&order);
            let oldest: Option<String> = self.one(&lpop).await?;
            let mut hdel = redis::cmd("HDEL");
            hdel.arg(&records).arg(oldest.unwrap_or_default());
            self.one::<()>(&hdel).await?;
        }
        self.expire(&records, ttl).await?;
        self.expire(&order, ttl).await
    }

    /// [`SessionStore::create`](crate::store::SessionStore::create), one command at a time:
    /// the quota count, then the state.
    pub(super) async fn create_sequential(
        &self,
        id: &SessionId,
        session: NewSession,
    ) -> Result<(), StoreError> {
        let (now, ttl) = (now_ms(), self.settings.session_ttl);
        let owners = owner_key(&session.owner);
        let mut prune = redis::cmd("ZREMRANGEBYSCORE");
        prune.arg(&owners).arg("-inf").arg(format!("({now}"));
        self.one::<()>(&prune).await?;
        let mut count = redis::cmd("ZCARD");
        count.arg(&owners);
        let running: u64 = self.one(&count).await?;
        let limit = self.settings.quotas.max_active_sessions_per_key;
        if running >= limit {
            return Err(StoreError::SessionQuotaExceeded { limit });
        }
        let mut add = redis::cmd("ZADD");
        add.arg(&owners)
            .arg(now + ttl.as_millis() as u64)
            .arg(id.as_str());
        self.one::<()>(&add).await?;
        self.expire(&owners, ttl).await?;
        let meta = meta_key(id);
        let write = if self.settings.hash_state {
            let mut hset = redis::cmd("HSET");
            hset.arg(&meta)
                .arg("status")
                .arg(RUNNING)
                .arg("created_at")
                .arg(now)
                .arg("updated_at")
                .arg(now)
                .arg("owner")
                .arg(&session.owner)
                .arg("metadata")
                .arg(&session.metadata)
                .arg("event_count")
                .arg(0);
            hset
        } else {
            let mut set = redis::cmd("SET");
            set.arg(&meta)
                .arg(JsonState::created(&session.owner, session.metadata, now).to_json());
            set
        };
        self.one::<()>(&write).await?;
        self.expire(&meta, ttl).await
    }

    /// `PEXPIRE key ttl`: one round trip.
    async fn expire(&self, key: &str, ttl: std::time::Duration) -> Result<(), StoreError> {
        let mut pexpire = redis::cmd("PEXPIRE");
        pexpire.arg(key).arg(millis(ttl));
        self.one(&pexpire).await
    }

    /// The newest id of the session's log (`""` when it is empty): `XREVRANGE + - COUNT 1`,
    /// one round trip. The `prev` of the next entry.
    async fn newest_id(&self, id: &SessionId) -> Result<String, StoreError> {
        let mut xrevrange = redis::cmd("XREVRANGE");
        xrevrange
            .arg(events_key(id))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        let newest: Vec<(String, redis::Value)> = self.one(&xrevrange).await?;
        Ok(newest
            .into_iter()
            .next()
            .map(|(id, _)| id)
            .unwrap_or_default())
    }

    /// `XADD` of one event after the entry `prev`: one round trip.
    async fn add_event(
        &self,
        id: &SessionId,
        prev: &str,
        kind: &str,
        data: &str,
    ) -> Result<String, StoreError> {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(events_key(id))
            .arg("MAXLEN")
            .arg("~")
            .arg(self.settings.events_maxlen)
            .arg("*")
            .arg("kind")
            .arg(kind)
            .arg("data")
            .arg(data)
            .arg("prev")
            .arg(prev);
        self.one(&xadd).await
    }

    /// The notification of the newest id.
    async fn publish(&self, id: &SessionId, newest: Option<&str>) -> Result<(), StoreError> {
        if let Some(newest) = newest {
            let mut publish = redis::cmd(self.settings.publish_command());
            publish.arg(notify_channel(id)).arg(newest);
            self.one::<()>(&publish).await?;
        }
        Ok(())
    }

    /// [`SessionStore::append_idempotent`](crate::store::SessionStore::append_idempotent),
    /// one command at a time.
    pub(super) async fn append_sequential(
        &self,
        id: &SessionId,
        owner: &str,
        events: &[NewEvent],
        key: Option<&IdempotencyKey>,
    ) -> Result<Applied<Vec<EventId>>, StoreError> {
        let digest = key.map(|_| append_digest(events)).unwrap_or_default();
        let key = key.map(|key| (key, digest.as_str()));
        let Writable { json, bytes, .. } = match self.check_writable(id, owner, key).await? {
            Checked::Write(writable) => writable,
            Checked::Replay(ids) => {
                return Ok(Applied {
                    value: ids,
                    replayed: true,
                });
            }
        };
        let (size, limit) = (batch_bytes(events), self.settings.quotas.max_session_bytes);
        if bytes.saturating_add(size) > limit {
            return Err(StoreError::SessionBytesExceeded { limit });
        }
        let mut prev = self.newest_id(id).await?;
        let mut raw_ids = Vec::with_capacity(events.len());
        for e in events {
            prev = self.add_event(id, &prev, &e.kind, &e.data).await?;
            raw_ids.push(prev.clone());
        }
        let ids = raw_ids
            .iter()
            .map(|raw| parse_id(raw))
            .collect::<Result<Vec<_>, _>>()?;
        let (now, added) = (now_ms(), events.len() as u64);
        match json {
            None => {
                let mut count = redis::cmd("HINCRBY");
                count.arg(meta_key(id)).arg("event_count").arg(added);
                self.one::<()>(&count).await?;
                let mut appended = redis::cmd("HINCRBY");
                appended.arg(meta_key(id)).arg("bytes").arg(size);
                self.one::<()>(&appended).await?;
                let mut updated = redis::cmd("HSET");
                updated.arg(meta_key(id)).arg("updated_at").arg(now);
                self.one::<()>(&updated).await?;
            }
            Some(mut state) => {
                state.event_count += added;
                state.bytes += size;
                state.updated_at = now;
                self.set_json(id, &state).await?;
            }
        }
        let ttl = self.settings.session_ttl;
        for key in [meta_key(id), events_key(id)] {
            self.expire(&key, ttl).await?;
        }
        // Push the quota deadline back (only if the session is still counted: XX).
        let owners = owner_key(owner);
        let mut deadline = redis::cmd("ZADD");
        deadline
            .arg(&owners)
            .arg("XX")
            .arg(now + ttl.as_millis() as u64)
            .arg(id.as_str());
        self.one::<()>(&deadline).await?;
        self.expire(&owners, ttl).await?;
        if let Some((key, digest)) = key {
            self.record(id, key, digest, &raw_ids, ttl).await?;
        }
        self.publish(id, raw_ids.last().map(String::as_str)).await?;
        Ok(Applied::fresh(ids))
    }

    /// [`SessionStore::complete_idempotent`](crate::store::SessionStore::complete_idempotent),
    /// one command at a time; the event id and `created_at` (0 when replayed).
    pub(super) async fn complete_sequential(
        &self,
        id: &SessionId,
        owner: &str,
        completion: &Completion,
        key: Option<&IdempotencyKey>,
    ) -> Result<(Applied<EventId>, u64), StoreError> {
        let digest = key.map(|_| complete_digest(completion)).unwrap_or_default();
        let key = key.map(|key| (key, digest.as_str()));
        let Writable {
            json, created_at, ..
        } = match self.check_writable(id, owner, key).await? {
            Checked::Write(writable) => writable,
            Checked::Replay(ids) => {
                let value = ids.first().copied().ok_or_else(|| {
                    StoreError::Protocol("a complete recorded no event id".to_owned())
                })?;
                return Ok((
                    Applied {
                        value,
                        replayed: true,
                    },
                    0,
                ));
            }
        };
        let prev = self.newest_id(id).await?;
        let raw_id = self
            .add_event(
                id,
                &prev,
                crate::store::COMPLETE_KIND,
                &completion.event_data(),
            )
            .await?;
        let event = parse_id(&raw_id)?;
        let now = now_ms();
        match json {
            None => {
                let mut fields = redis::cmd("HSET");
                fields
                    .arg(meta_key(id))
                    .arg("status")
                    .arg(&completion.status)
                    .arg("completed_at")
                    .arg(now)
                    .arg("updated_at")
                    .arg(now)
                    .arg("final_response")
                    .arg(&completion.final_response);
                self.one::<()>(&fields).await?;
                let mut count = redis::cmd("HINCRBY");
                count.arg(meta_key(id)).arg("event_count").arg(1);
                self.one::<()>(&count).await?;
            }
            Some(mut state) => {
                state.status.clone_from(&completion.status);
                state.completed_at = Some(now);
                state.updated_at = now;
                state.final_response = Some(completion.final_response.clone());
                state.event_count += 1;
                self.set_json(id, &state).await?;
            }
        }
        for key in [meta_key(id), events_key(id)] {
            self.expire(&key, self.settings.retention).await?;
        }
        if let Some((key, digest)) = key {
            let ids = [raw_id.clone()];
            self.record(id, key, digest, &ids, self.settings.retention)
                .await?;
        }
        self.publish(id, Some(&raw_id)).await?;
        let mut release = redis::cmd("ZREM");
        release.arg(owner_key(owner)).arg(id.as_str());
        self.one::<()>(&release).await?;
        Ok((Applied::fresh(event), created_at))
    }

    /// Writes the whole JSON state back (`SET` clears the TTL; the caller's `PEXPIRE`
    /// that follows restores it).
    async fn set_json(&self, id: &SessionId, state: &JsonState) -> Result<(), StoreError> {
        let mut set = redis::cmd("SET");
        set.arg(meta_key(id)).arg(state.to_json());
        self.one(&set).await
    }
}

/// The first write checks, in the scripts' order: missing, then owner. Returns the status
/// (checked after the idempotency key, as the scripts do).
fn owned(
    status: Option<String>,
    stored_owner: Option<&str>,
    owner: &str,
) -> Result<String, StoreError> {
    let Some(status) = status else {
        return Err(StoreError::NotFound);
    };
    if stored_owner != Some(owner) {
        return Err(StoreError::Forbidden);
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_in_the_scripts_order() {
        assert!(matches!(owned(None, None, "o"), Err(StoreError::NotFound)));
        assert!(matches!(
            owned(Some("succeeded".into()), Some("x"), "o"),
            Err(StoreError::Forbidden)
        ));
        assert_eq!(
            owned(Some(RUNNING.into()), Some("o"), "o").unwrap(),
            RUNNING
        );
    }
}

//! `features.pipelining = false`: the naive writes the benchmark compares against. Every
//! Redis command is its own round trip, awaited before the next one is sent.
//!
//! - init: write the state (`HSET`, or `SET` of the JSON object), then `PEXPIRE`;
//! - append: read owner and status (`HMGET`, or `GET` of the whole JSON object), one `XADD`
//!   per event, update the state (`HINCRBY` + `HSET`, or `SET` of the modified object),
//!   `PEXPIRE` both keys, `PUBLISH`;
//! - complete: the same check, `XADD` of the complete event, the state update, `PEXPIRE`
//!   both keys, `PUBLISH`.
//!
//! From one caller's point of view the results and errors are those of the pipelined
//! engine: refused writes (missing session, other owner, completed) are refused before
//! anything is written. But nothing is atomic: concurrent writers to one session may
//! interleave between the check and the writes (two completes may both pass the check;
//! with the JSON layout a writer writes back a stale object: two appends lose one's
//! `event_count`, an append racing a complete may put `running` back), and a
//! failure half-way leaves the commands before it applied. That is part of what makes it
//! the naive baseline. Each command gets the store's whole `timeout`.

use super::json_state::JsonState;
use super::{RedisStore, events_key, meta_key, millis, notify_channel, parse_id};
use crate::store::{Completion, EventId, NewEvent, RUNNING, SessionId, StoreError, now_ms};

impl RedisStore {
    /// Refuses a write to a session that is missing, owned by someone else or completed.
    /// With the JSON layout, returns the state it read, to be modified and written back.
    async fn check_writable(
        &self,
        id: &SessionId,
        owner: &str,
    ) -> Result<(Option<JsonState>, u64), StoreError> {
        if self.settings.hash_state {
            let mut hmget = redis::cmd("HMGET");
            hmget
                .arg(meta_key(id))
                .arg("status")
                .arg("owner")
                .arg("created_at");
            let (status, stored_owner, created_at): (Option<String>, Option<String>, Option<u64>) =
                self.one(&hmget).await?;
            writable(status.as_deref(), stored_owner.as_deref(), owner)?;
            Ok((None, created_at.unwrap_or(0)))
        } else {
            let mut get = redis::cmd("GET");
            get.arg(meta_key(id));
            let raw: Option<String> = self.one(&get).await?;
            let state = JsonState::parse(&raw.ok_or(StoreError::NotFound)?)?;
            writable(Some(&state.status), Some(&state.owner), owner)?;
            let created_at = state.created_at;
            Ok((Some(state), created_at))
        }
    }

    /// `XADD` of one event: one round trip.
    async fn add_event(
        &self,
        id: &SessionId,
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
            .arg(data);
        self.one(&xadd).await
    }

    /// The end of every write: both keys' TTL, then the notification of the newest id.
    async fn expire_and_publish(
        &self,
        id: &SessionId,
        ttl: std::time::Duration,
        newest: Option<&str>,
    ) -> Result<(), StoreError> {
        for key in [meta_key(id), events_key(id)] {
            let mut pexpire = redis::cmd("PEXPIRE");
            pexpire.arg(key).arg(millis(ttl));
            self.one::<()>(&pexpire).await?;
        }
        if let Some(newest) = newest {
            let mut publish = redis::cmd("PUBLISH");
            publish.arg(notify_channel(id)).arg(newest);
            self.one::<()>(&publish).await?;
        }
        Ok(())
    }

    /// [`SessionStore::append`](crate::store::SessionStore::append), one command at a time.
    pub(super) async fn append_sequential(
        &self,
        id: &SessionId,
        owner: &str,
        events: &[NewEvent],
    ) -> Result<Vec<EventId>, StoreError> {
        let (json, _) = self.check_writable(id, owner).await?;
        let mut raw_ids = Vec::with_capacity(events.len());
        for e in events {
            raw_ids.push(self.add_event(id, &e.kind, &e.data).await?);
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
                let mut updated = redis::cmd("HSET");
                updated.arg(meta_key(id)).arg("updated_at").arg(now);
                self.one::<()>(&updated).await?;
            }
            Some(mut state) => {
                state.event_count += added;
                state.updated_at = now;
                self.set_json(id, &state).await?;
            }
        }
        self.expire_and_publish(
            id,
            self.settings.session_ttl,
            raw_ids.last().map(String::as_str),
        )
        .await?;
        Ok(ids)
    }

    /// [`SessionStore::complete`](crate::store::SessionStore::complete), one command at a
    /// time.
    pub(super) async fn complete_sequential(
        &self,
        id: &SessionId,
        owner: &str,
        completion: &Completion,
    ) -> Result<(EventId, u64), StoreError> {
        let (json, created_at) = self.check_writable(id, owner).await?;
        let raw_id = self
            .add_event(id, crate::store::COMPLETE_KIND, &completion.event_data())
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
        self.expire_and_publish(id, self.settings.retention, Some(&raw_id))
            .await?;
        Ok((event, created_at))
    }

    /// Writes the whole JSON state back (`SET` clears the TTL; the caller's `PEXPIRE`
    /// that follows restores it).
    async fn set_json(&self, id: &SessionId, state: &JsonState) -> Result<(), StoreError> {
        let mut set = redis::cmd("SET");
        set.arg(meta_key(id)).arg(state.to_json());
        self.one(&set).await
    }
}

/// The write checks, in the scripts' order: missing, then owner, then status.
fn writable(
    status: Option<&str>,
    stored_owner: Option<&str>,
    owner: &str,
) -> Result<(), StoreError> {
    let Some(status) = status else {
        return Err(StoreError::NotFound);
    };
    if stored_owner != Some(owner) {
        return Err(StoreError::Forbidden);
    }
    if status != RUNNING {
        return Err(StoreError::Completed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_in_the_scripts_order() {
        assert!(matches!(
            writable(None, None, "o"),
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            writable(Some("succeeded"), Some("x"), "o"),
            Err(StoreError::Forbidden)
        ));
        assert!(matches!(
            writable(Some("succeeded"), Some("o"), "o"),
            Err(StoreError::Completed)
        ));
        assert!(writable(Some(RUNNING), Some("o"), "o").is_ok());
    }
}

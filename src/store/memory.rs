//! The embedded engine: sessions and event logs in process memory.
//!
//! Same semantics as the Redis engine (atomic writes, capped logs with their gaps reported,
//! expiry of idle and of completed sessions, blocking tail through [`Watch`]) so the whole gateway runs as one
//! process for the quick start and for tests. It is held to the same conformance suite.
//! State is not shared between processes: scale out with the Redis engine.
//!
//! Its figures are exact: it counts every live session, and it knows what each session holds,
//! so the memory per session it reports is the sum of the session's data (strings, events)
//! and the fixed sizes of its structures; allocator overhead and spare capacity are not
//! counted, so it is a lower bound.
//!
//! Quotas ([`super::quota`]): a map from owner to its running sessions and their deadlines
//! (the same deadlines as the sessions' own), checked and updated under the owner's entry
//! lock, so concurrent inits of one key cannot pass the cap together; each session counts
//! the bytes appended to it under its own lock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;

use super::idempotency::{Recorded, Records, append_digest, complete_digest};
use super::quota::{Quotas, batch_bytes};
use super::watch::WatchRegistry;
use super::{
    Applied, COMPLETE_KIND, Completion, Event, EventId, Gap, IdempotencyKey, NewEvent, NewSession,
    PresenceFeed, RUNNING, Replay, SessionId, SessionState, SessionStore, StoreError, StoreStats,
    Watch, now_ms,
};

/// Limits the memory engine enforces (the same keys configure Redis).
#[derive(Debug, Clone, Copy)]
pub struct MemoryLimits {
    /// Newest events kept per session.
    pub events_maxlen: usize,
    /// How long a completed session stays readable.
    pub retention: Duration,
    /// How long an unfinished session lives without a write.
    pub session_ttl: Duration,
    /// Running sessions per owner, bytes per session.
    pub quotas: Quotas,
}

#[derive(Debug)]
struct Session {
    state: SessionState,
    events: VecDeque<Event>,
    last_id: Option<EventId>,
    /// The newest event trimmed from `events` (`events_maxlen`): a reader behind it has a
    /// [`Gap`].
    trimmed: Option<EventId>,
    expires_at: Instant,
    /// Estimated bytes this session holds (see [`Session::base_bytes`], [`event_bytes`]).
    bytes: usize,
    /// Bytes appended over the session's life, for the byte quota ([`batch_bytes`]).
    appended: u64,
    /// Idempotency keys recorded with their results ([`super::idempotency`]).
    records: Records,
}

impl Session {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at > now
    }

    /// Bytes of the session without its events: its structures (the map entry, the shared
    /// lock, the session itself) and the strings of its state.
    fn base_bytes(id: &SessionId, state: &SessionState) -> usize {
        std::mem::size_of::<(SessionId, Arc<Mutex<Session>>)>()
            + std::mem::size_of::<Mutex<Session>>()
            + 2 * std::mem::size_of::<usize>() // Arc's counts
            + id.as_str().len()
            + state.status.len()
            + state.owner.len()
            + state.metadata.len()
            + state.final_response.as_ref().map_or(0, String::len)
    }
}

/// Bytes one stored event holds.
fn event_bytes(kind: &str, data: &str) -> usize {
    std::mem::size_of::<Event>() + kind.len() + data.len()
}

/// The embedded [`SessionStore`].
#[derive(Debug)]
pub struct MemoryStore {
    sessions: DashMap<SessionId, Arc<Mutex<Session>>>,
    /// Each owner's running sessions and their expiry deadlines (the quota's count).
    owners: DashMap<String, HashMap<SessionId, Instant>>,
    limits: MemoryLimits,
    watches: Arc<WatchRegistry>,
    stats: StoreStats,
    presence: PresenceFeed,
}

impl MemoryStore {
    /// An empty store. Must be called inside a tokio runtime: it starts a sweeper task that
    /// drops expired sessions (it stops when the store is dropped).
    pub fn new(limits: MemoryLimits) -> Arc<Self> {
        let store = Arc::new(Self {
            sessions: DashMap::new(),
            owners: DashMap::new(),
            limits,
            watches: Arc::default(),
            stats: StoreStats::default(),
            presence: PresenceFeed::default(),
        });
        tokio::spawn(sweep(Arc::downgrade(&store)));
        store
    }

    /// The live session, if any (an expired one is treated as absent).
    fn session(&self, id: &SessionId) -> Option<Arc<Mutex<Session>>> {
        let session = self.sessions.get(id)?.value().clone();
        let live = lock(&session).is_live(Instant::now());
        live.then_some(session)
    }

    /// Runs `write` on the session if it is live, running and owned by `owner`; readers are
    /// woken if it succeeds. With an idempotency `key` (and the request's `digest`), a key
    /// the session recorded answers first, whatever its status (nothing is written, nobody
    /// woken), and a fresh write's ids are recorded under it.
    fn write(
        &self,
        id: &SessionId,
        owner: &str,
        key: Option<(&IdempotencyKey, String)>,
        write: impl FnOnce(&mut Session, u64) -> Result<Vec<EventId>, StoreError>,
    ) -> Result<Applied<Vec<EventId>>, StoreError> {
        let session = self.session(id).ok_or(StoreError::NotFound)?;
        let out = {
            let mut s = lock(&session);
            if !s.is_live(Instant::now()) {
                return Err(StoreError::NotFound);
            }
            if s.state.owner != owner {
                return Err(StoreError::Forbidden);
            }
            if let Some((key, digest)) = &key {
                match s.records.lookup(key, digest) {
                    Some(Recorded::Same(ids)) => {
                        return Ok(Applied {
                            value: ids,
                            replayed: true,
                        });
                    }
                    Some(Recorded::Reused) => return Err(StoreError::IdempotencyKeyReused),
                    None => {}
                }
            }
            if s.state.is_completed() {
                return Err(StoreError::Completed);
            }
            let ids = write(&mut s, now_ms())?;
            if let Some((key, digest)) = key {
                s.records.record(key, digest, ids.clone());
            }
            ids
        };
        self.watches.notify(id);
        Ok(Applied::fresh(out))
    }

    /// Counts `id` among `owner`'s running sessions until `deadline`, unless the owner
    /// already holds its quota of them (expired ones do not count).
    fn reserve(&self, owner: &str, id: &SessionId, deadline: Instant) -> Result<(), StoreError> {
        let limit = self.limits.quotas.max_active_sessions_per_key;
        let mut running = self.owners.entry(owner.to_owned()).or_default();
        let now = Instant::now();
        running.retain(|_, until| *until > now);
        if running.len() as u64 >= limit {
            return Err(StoreError::SessionQuotaExceeded { limit });
        }
        running.insert(id.clone(), deadline);
        Ok(())
    }

    /// Moves `id`'s deadline in its owner's count, if it is still counted.
    fn refresh(&self, owner: &str, id: &SessionId, deadline: Instant) {
        if let Some(mut running) = self.owners.get_mut(owner)
            && let Some(until) = running.get_mut(id)
        {
            *until = deadline;
        }
    }

    /// Stops counting `id` among `owner`'s running sessions.
    fn release(&self, owner: &str, id: &SessionId) {
        if let Some(mut running) = self.owners.get_mut(owner) {
            running.remove(id);
        }
        self.owners
            .remove_if(owner, |_, running| running.is_empty());
    }

    fn push(&self, s: &mut Session, kind: &str, data: &str, now: u64) -> EventId {
        let id = EventId::next_after(s.last_id, now);
        s.last_id = Some(id);
        s.events.push_back(Event {
            id,
            kind: kind.to_owned(),
            data: data.to_owned(),
        });
        s.bytes += event_bytes(kind, data);
        while s.events.len() > self.limits.events_maxlen {
            if let Some(dropped) = s.events.pop_front() {
                s.bytes -= event_bytes(&dropped.kind, &dropped.data);
                s.trimmed = Some(dropped.id);
            }
        }
        s.state.event_count += 1;
        s.state.updated_at = now;
        id
    }
}

fn lock(session: &Mutex<Session>) -> std::sync::MutexGuard<'_, Session> {
    // A panic while holding the lock cannot leave a session half-written (every write
    // completes before it can panic), so a poisoned lock is still consistent.
    session.lock().unwrap_or_else(|e| e.into_inner())
}

async fn sweep(store: Weak<MemoryStore>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(store) = store.upgrade() else { return };
        let now = Instant::now();
        let (mut held, mut bytes) = (0_usize, 0_usize);
        store.sessions.retain(|id, s| {
            let s = lock(s);
            let live = s.is_live(now);
            if live {
                held += 1;
                bytes += s.bytes + s.records.bytes();
            } else {
                store.presence.changed(id);
                if !s.state.is_completed() {
                    store.stats.live_sessions.dec(); // expired unfinished
                }
            }
            live
        });
        // Owners' counts forget what expired, and owners with nothing running.
        store.owners.retain(|_, running| {
            running.retain(|_, until| *until > now);
            !running.is_empty()
        });
        let per_session = bytes.checked_div(held).unwrap_or(0);
        store
            .stats
            .session_memory_bytes
            .set(i64::try_from(per_session).unwrap_or(i64::MAX));
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, id: &SessionId, session: NewSession) -> Result<(), StoreError> {
        let expires_at = Instant::now() + self.limits.session_ttl;
        self.reserve(&session.owner, id, expires_at)?;
        let now = now_ms();
        let mut fresh = Session {
            state: SessionState {
                status: RUNNING.to_owned(),
                created_at: now,
                updated_at: now,
                completed_at: None,
                owner: session.owner,
                metadata: session.metadata,
                final_response: None,
                event_count: 0,
            },
            events: VecDeque::new(),
            last_id: None,
            trimmed: None,
            expires_at,
            bytes: 0,
            appended: 0,
            records: Records::default(),
        };
        fresh.bytes = Session::base_bytes(id, &fresh.state);
        let replaced = self
            .sessions
            .insert(id.clone(), Arc::new(Mutex::new(fresh)));
        // Ids are generated and unique; a replaced running session would be counted twice.
        if !replaced.is_some_and(|old| {
            let old = lock(&old);
            old.is_live(Instant::now()) && !old.state.is_completed()
        }) {
            self.stats.live_sessions.inc();
        }
        self.presence.changed(id);
        Ok(())
    }

    async fn append_idempotent(
        &self,
        id: &SessionId,
        owner: &str,
        events: &[NewEvent],
        key: Option<&IdempotencyKey>,
    ) -> Result<Applied<Vec<EventId>>, StoreError> {
        let expires_at = Instant::now() + self.limits.session_ttl;
        let limit = self.limits.quotas.max_session_bytes;
        let size = batch_bytes(events);
        let key = key.map(|key| (key, append_digest(events)));
        let applied = self.write(id, owner, key, |s, now| {
            if s.appended.saturating_add(size) > limit {
                return Err(StoreError::SessionBytesExceeded { limit });
            }
            s.appended += size;
            s.expires_at = expires_at;
            Ok(events
                .iter()
                .map(|e| self.push(s, &e.kind, &e.data, now))
                .collect())
        })?;
        if !applied.replayed {
            self.refresh(owner, id, expires_at);
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
        let key = key.map(|key| (key, complete_digest(&completion)));
        let applied = self.write(id, owner, key, |s, now| {
            let data = completion.event_data();
            let event_id = self.push(s, COMPLETE_KIND, &data, now);
            s.bytes += completion.final_response.len();
            s.state.status = completion.status;
            s.state.completed_at = Some(now);
            s.state.final_response = Some(completion.final_response);
            s.expires_at = Instant::now() + self.limits.retention;
            self.stats.live_sessions.dec();
            self.stats.session_completed(s.state.created_at, now);
            Ok(vec![event_id])
        })?;
        if !applied.replayed {
            self.release(owner, id);
        }
        let event_id =
            applied.value.first().copied().ok_or_else(|| {
                StoreError::Protocol("a complete recorded no event id".to_owned())
            })?;
        Ok(Applied {
            value: event_id,
            replayed: applied.replayed,
        })
    }

    async fn state(&self, id: &SessionId) -> Result<Option<SessionState>, StoreError> {
        Ok(self.session(id).map(|s| lock(&s).state.clone()))
    }

    async fn exists(&self, id: &SessionId) -> Result<bool, StoreError> {
        Ok(self.session(id).is_some())
    }

    async fn read(
        &self,
        id: &SessionId,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Replay, StoreError> {
        let Some(session) = self.session(id) else {
            return Ok(Replay::default());
        };
        let s = lock(&session);
        // Ids are sorted, so binary-search the first one past the cursor.
        let start = after.map_or(0, |after| s.events.partition_point(|e| e.id <= after));
        Ok(Replay {
            gap: Gap::between(after, s.trimmed),
            events: s.events.range(start..).take(limit).cloned().collect(),
        })
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

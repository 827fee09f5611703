//! Live-tail notification: which sessions have local readers, and waking them.
//!
//! A [`Watch`] is registered per reader *before* it reads; an engine calls
//! [`WatchRegistry::notify`] after every append it learns of (the memory store directly, the
//! Redis store from one pub/sub connection). A reader that has caught up awaits
//! [`Watch::changed`]; since a notification after registration is never lost, the
//! replay-then-live handoff has no gap. Readers re-read from their own cursor, so a
//! spurious wake-up costs one read and never a duplicate.
//!
//! A notification may carry the events it announces with the id they follow
//! ([`Batch`]): a reader whose cursor is exactly that id takes them as they are and skips
//! the read; any other reader (behind, or a notification it missed since its last read —
//! the channel keeps only the newest) reads from its cursor as before.
//!
//! Subscriptions: an engine that hears of writes only for the sessions it subscribed to
//! (Redis, `subscribe = "per_session"`) builds the registry with
//! [`WatchRegistry::per_session`]: a session's first reader and the departure of its last
//! are queued as interest changes ([`WatchRegistry::take_changes`]) for the engine's
//! subscriber to act on in batches, and a new session's readers wait ([`Watch::subscribed`])
//! until the engine confirms the subscription ([`WatchRegistry::subscribed`]), so a write
//! between registering and reading is never missed. Every confirmation also wakes the
//! session's readers to re-read, so a reader that stopped waiting (bounded) or a
//! resubscription after a reconnect loses nothing either.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::{Notify, watch};

use super::{Event, EventId, SessionId};

/// Events a notification carries: every event of the session after `after` (`None`: the
/// log was empty), in order, as one write produced them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The newest event before these; `None` when there was none.
    pub after: Option<EventId>,
    /// The new events.
    pub events: Vec<Event>,
}

/// The newest notification of a session: a counter, what the last one carried, and whether
/// the engine hears of the session's writes yet.
#[derive(Debug, Default)]
struct Notice {
    seq: u64,
    batch: Option<Arc<Batch>>,
    subscribed: bool,
}

/// Sessions with at least one local reader, each with its newest notification.
#[derive(Debug)]
pub struct WatchRegistry {
    sessions: DashMap<SessionId, watch::Sender<Notice>>,
    /// Whether a session's first reader finds it subscribed already (the engine hears of
    /// every write: memory, or a confirmed pattern subscription).
    all_subscribed: AtomicBool,
    /// With per-session subscriptions: the sessions whose first reader came or last left
    /// since the subscriber last looked (a set: bounded by the sessions with readers plus
    /// those that just lost them).
    changes: Option<Changes>,
}

/// Interest changes waiting for the subscriber.
#[derive(Debug, Default)]
struct Changes {
    sessions: Mutex<HashSet<SessionId>>,
    wake: Notify,
}

impl Default for WatchRegistry {
    /// A registry whose engine hears of every write from the start (the memory store).
    fn default() -> Self {
        Self {
            sessions: DashMap::new(),
            all_subscribed: AtomicBool::new(true),
            changes: None,
        }
    }
}

impl WatchRegistry {
    /// A registry whose engine hears of every write once one subscription (a pattern) is
    /// confirmed ([`subscribed_all`](Self::subscribed_all)); readers wait for it.
    pub fn until_subscribed() -> Self {
        Self {
            all_subscribed: AtomicBool::new(false),
            ..Self::default()
        }
    }

    /// A registry whose engine subscribes to each session with readers: interest changes
    /// are queued for it ([`take_changes`](Self::take_changes)) and readers of a new session
    /// wait for its confirmation ([`subscribed`](Self::subscribed)).
    pub fn per_session() -> Self {
        Self {
            all_subscribed: AtomicBool::new(false),
            changes: Some(Changes::default()),
            ..Self::default()
        }
    }

    /// Registers a reader of `id`.
    pub fn watch(self: &Arc<Self>, id: &SessionId) -> Watch {
        let rx = match self.sessions.entry(id.clone()) {
            Entry::Occupied(entry) => entry.get().subscribe(),
            Entry::Vacant(entry) => {
                // Read under the entry's lock: `subscribed_all` either sees this entry or
                // has set the flag before.
                let notice = Notice {
                    subscribed: self.all_subscribed.load(Ordering::SeqCst),
                    ..Notice::default()
                };
                let rx = entry.insert(watch::channel(notice).0).subscribe();
                self.changed(id);
                rx
            }
        };
        Watch {
            rx,
            id: id.clone(),
            registry: Arc::clone(self),
        }
    }

    /// Queues an interest change of `id` for the subscriber (per-session engines only).
    fn changed(&self, id: &SessionId) {
        if let Some(changes) = &self.changes {
            changes
                .sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id.clone());
            changes.wake.notify_one();
        }
    }

    /// The sessions whose interest changed since the last call (see
    /// [`is_watched`](Self::is_watched) for which way); empty without per-session
    /// subscriptions.
    pub fn take_changes(&self) -> HashSet<SessionId> {
        self.changes
            .as_ref()
            .map(|c| {
                std::mem::take(&mut *c.sessions.lock().unwrap_or_else(PoisonError::into_inner))
            })
            .unwrap_or_default()
    }

    /// Queues `ids` again (a subscription that failed, or was lost and must be renewed),
    /// without waking the subscriber: it retries on its own schedule.
    pub fn requeue(&self, ids: impl IntoIterator<Item = SessionId>) {
        if let Some(changes) = &self.changes {
            changes
                .sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(ids);
        }
    }

    /// Queues every watched session (after the subscriptions were lost with their
    /// connection, e.g. the Sentinel master moved).
    pub fn requeue_all(&self) {
        self.requeue(self.sessions.iter().map(|e| e.key().clone()));
    }

    /// Resolves when an interest change was queued since the last call (pends forever
    /// without per-session subscriptions).
    pub async fn interest_changed(&self) {
        match &self.changes {
            Some(changes) => changes.wake.notified().await,
            None => std::future::pending().await,
        }
    }

    /// Whether `id` has a local reader now.
    pub fn is_watched(&self, id: &SessionId) -> bool {
        self.sessions.contains_key(id)
    }

    /// The engine hears of `id`'s writes now (a subscription confirmed): readers waiting
    /// for that go on, and every reader of `id` re-reads, since writes before the
    /// confirmation were not heard.
    pub fn subscribed(&self, id: &SessionId) {
        if let Some(tx) = self.sessions.get(id) {
            tx.send_modify(|n| {
                n.seq = n.seq.wrapping_add(1);
                n.batch = None;
                n.subscribed = true;
            });
        }
    }

    /// The engine hears of every session's writes now (a pattern subscription confirmed,
    /// again after a reconnect): every reader re-reads, and new sessions' readers no
    /// longer wait.
    pub fn subscribed_all(&self) {
        self.all_subscribed.store(true, Ordering::SeqCst);
        for tx in self.sessions.iter() {
            tx.send_modify(|n| {
                n.seq = n.seq.wrapping_add(1);
                n.batch = None;
                n.subscribed = true;
            });
        }
    }

    /// Wakes every reader of `id` (no-op when it has none).
    pub fn notify(&self, id: &SessionId) {
        self.notify_with(id, || None);
    }

    /// Wakes every reader of `id` with the events of one write, which `batch` makes —
    /// only when `id` has local readers (a notification for anyone else is not decoded).
    pub fn notify_with(&self, id: &SessionId, batch: impl FnOnce() -> Option<Batch>) {
        if let Some(tx) = self.sessions.get(id) {
            let batch = batch().map(Arc::new);
            tx.send_modify(|n| {
                n.seq = n.seq.wrapping_add(1);
                n.batch = batch;
            });
        }
    }

    /// Number of sessions with local readers.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when no session has a local reader.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

/// One reader's registration; dropping it unregisters.
#[derive(Debug)]
pub struct Watch {
    rx: watch::Receiver<Notice>,
    id: SessionId,
    registry: Arc<WatchRegistry>,
}

impl Watch {
    /// Resolves once the engine hears of this session's writes (at once unless its
    /// subscription is still being made). A reader awaits this before its first read, so a
    /// write after that read is announced; what came before, the read returns. Marks the
    /// confirmation's wake-up as seen: the read that follows covers it.
    pub async fn subscribed(&mut self) {
        if self.rx.wait_for(|n| n.subscribed).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves after an append notified since the last call (or since registration).
    pub async fn changed(&mut self) {
        // The sender lives in the registry for as long as this receiver exists, so an error
        // (sender dropped) cannot happen; pend rather than spin if it ever did.
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// The events of the newest notification if they follow `cursor` exactly (so nothing
    /// between the reader's position and them is missing); else `None`: read instead.
    pub fn events_after(&self, cursor: Option<EventId>) -> Option<Vec<Event>> {
        let notice = self.rx.borrow();
        let batch = notice.batch.as_ref()?;
        (batch.after == cursor).then(|| batch.events.clone())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // This receiver is still alive here, so "only me left" is a count of 1.
        let removed = self
            .registry
            .sessions
            .remove_if(&self.id, |_, tx| tx.receiver_count() <= 1);
        if removed.is_some() {
            self.registry.changed(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notify_after_registration_is_never_lost() {
        let registry = Arc::new(WatchRegistry::default());
        let id: SessionId = "s1".parse().unwrap();
        let mut w = registry.watch(&id);
        registry.notify(&id);
        w.changed().await; // resolves: the notification came after registration
        let w2 = registry.watch(&id);
        assert_eq!(registry.len(), 1);
        drop(w);
        assert_eq!(registry.len(), 1);
        drop(w2);
        assert!(registry.is_empty());
    }

    fn event(id: &str) -> Event {
        Event {
            id: id.parse().unwrap(),
            kind: "delta".to_owned(),
            data: "{}".to_owned(),
        }
    }

    #[tokio::test]
    async fn a_batch_serves_only_the_reader_whose_cursor_it_follows() {
        let registry = Arc::new(WatchRegistry::default());
        let id: SessionId = "s1".parse().unwrap();
        let mut w = registry.watch(&id);
        let at = |s: &str| Some(s.parse::<EventId>().unwrap());
        registry.notify_with(&id, || {
            Some(Batch {
                after: at("1-0"),
                events: vec![event("2-0"), event("3-0")],
            })
        });
        w.changed().await;
        assert_eq!(
            w.events_after(at("1-0")),
            Some(vec![event("2-0"), event("3-0")])
        );
        assert_eq!(w.events_after(at("0-1")), None, "behind: must read");
        assert_eq!(w.events_after(None), None);
        // A plain notification carries nothing: everyone reads.
        registry.notify(&id);
        w.changed().await;
        assert_eq!(w.events_after(at("1-0")), None);
        // First events of an empty log follow "nothing".
        registry.notify_with(&id, || {
            Some(Batch {
                after: None,
                events: vec![event("1-0")],
            })
        });
        w.changed().await;
        assert_eq!(w.events_after(None), Some(vec![event("1-0")]));
    }

    #[tokio::test]
    async fn per_session_interest_is_queued_and_readers_wait_for_the_confirmation() {
        let registry = Arc::new(WatchRegistry::per_session());
        let id: SessionId = "s1".parse().unwrap();
        let mut first = registry.watch(&id);
        let second = registry.watch(&id);
        // One change for the first reader; the second joins.
        assert_eq!(registry.take_changes(), HashSet::from([id.clone()]));
        assert!(registry.is_watched(&id));
        // Not subscribed yet: the reader waits; the confirmation lets it go and wakes it.
        let waiting = tokio::spawn(async move {
            first.subscribed().await;
            first
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        registry.subscribed(&id);
        let mut first = waiting.await.unwrap();
        // The confirmation's wake-up was seen by `subscribed`; the next append wakes.
        registry.notify(&id);
        first.changed().await;
        // A reader joining a confirmed subscription does not wait.
        let mut third = registry.watch(&id);
        third.subscribed().await;
        // The last reader leaving is one more change.
        drop((first, second, third));
        assert!(!registry.is_watched(&id));
        assert_eq!(registry.take_changes(), HashSet::from([id.clone()]));
        assert!(registry.take_changes().is_empty());
    }

    #[tokio::test]
    async fn a_pattern_subscription_covers_every_session_once_confirmed() {
        let registry = Arc::new(WatchRegistry::until_subscribed());
        let (a, b): (SessionId, SessionId) = ("a".parse().unwrap(), "b".parse().unwrap());
        let mut early = registry.watch(&a);
        registry.subscribed_all();
        early.subscribed().await;
        let mut late = registry.watch(&b);
        late.subscribed().await;
        assert!(
            registry.take_changes().is_empty(),
            "no per-session interest"
        );
    }
}

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

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::watch;

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

/// The newest notification of a session: a counter, and what the last one carried.
#[derive(Debug, Default)]
struct Notice {
    seq: u64,
    batch: Option<Arc<Batch>>,
}

/// Sessions with at least one local reader, each with its newest notification.
#[derive(Debug, Default)]
pub struct WatchRegistry {
    sessions: DashMap<SessionId, watch::Sender<Notice>>,
}

impl WatchRegistry {
    /// Registers a reader of `id`.
    pub fn watch(self: &Arc<Self>, id: &SessionId) -> Watch {
        let rx = self
            .sessions
            .entry(id.clone())
            .or_insert_with(|| watch::channel(Notice::default()).0)
            .subscribe();
        Watch {
            rx,
            id: id.clone(),
            registry: Arc::clone(self),
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

    /// Wakes every reader of every session (after a notification channel was re-established,
    /// when notifications may have been missed).
    pub fn notify_all(&self) {
        for tx in self.sessions.iter() {
            tx.send_modify(|n| {
                n.seq = n.seq.wrapping_add(1);
                n.batch = None;
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
        self.registry
            .sessions
            .remove_if(&self.id, |_, tx| tx.receiver_count() <= 1);
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
}

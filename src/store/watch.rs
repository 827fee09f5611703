//! Live-tail notification: which sessions have local readers, and waking them.
//!
//! A [`Watch`] is registered per reader *before* it reads; an engine calls
//! [`WatchRegistry::notify`] after every append it learns of (the memory store directly, the
//! Redis store from one pub/sub connection). A reader that has caught up awaits
//! [`Watch::changed`]; since a notification after registration is never lost, the
//! replay-then-live handoff has no gap. Readers re-read from their own cursor, so a
//! spurious wake-up costs one read and never a duplicate.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::watch;

use super::SessionId;

/// Sessions with at least one local reader, each with a change counter.
#[derive(Debug, Default)]
pub struct WatchRegistry {
    sessions: DashMap<SessionId, watch::Sender<u64>>,
}

impl WatchRegistry {
    /// Registers a reader of `id`.
    pub fn watch(self: &Arc<Self>, id: &SessionId) -> Watch {
        let rx = self
            .sessions
            .entry(id.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Watch {
            rx,
            id: id.clone(),
            registry: Arc::clone(self),
        }
    }

    /// Wakes every reader of `id` (no-op when it has none).
    pub fn notify(&self, id: &SessionId) {
        if let Some(tx) = self.sessions.get(id) {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Wakes every reader of every session (after a notification channel was re-established,
    /// when notifications may have been missed).
    pub fn notify_all(&self) {
        for tx in self.sessions.iter() {
            tx.send_modify(|n| *n = n.wrapping_add(1));
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
    rx: watch::Receiver<u64>,
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
}

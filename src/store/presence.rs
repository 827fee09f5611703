//! [`PresenceFeed`]: which sessions a store saw appear or disappear, so caches of "does this
//! session exist" (the existence cache in front of stream connects) can forget them.
//!
//! What each engine knows:
//! - memory: every create, and every expiry (its sweeper drops expired sessions);
//! - Redis: the creates made through this gateway, and expirations Redis announces as
//!   keyspace events (`__keyevent@<db>__:expired`) — only if the server has
//!   `notify-keyspace-events` including `Ex` (e.g. `CONFIG SET notify-keyspace-events Ex`;
//!   agentgate does not change server settings). On Cluster the events of the node the
//!   notification connection is on arrive. Creates made by other gateways are not seen:
//!   a cached "missing" there lasts its (short) negative TTL.
//!
//! Changes may be missed (a lagging subscriber, a notification connection that
//! reconnects); the feed then says [`Presence::Unknown`], and a cache should forget
//! everything.

use tokio::sync::broadcast;

use super::SessionId;

/// A change of what exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    /// The session was created, or expired or was removed.
    Changed(SessionId),
    /// Changes may have been missed.
    Unknown,
}

/// Broadcasts [`Presence`] changes; cheap to clone. Sending with no subscriber costs next to
/// nothing.
#[derive(Debug, Clone)]
pub struct PresenceFeed(broadcast::Sender<Presence>);

/// Changes buffered per subscriber before it lags (and gets [`Presence::Unknown`]).
const CAPACITY: usize = 1024;

impl Default for PresenceFeed {
    fn default() -> Self {
        Self(broadcast::channel(CAPACITY).0)
    }
}

impl PresenceFeed {
    /// Tells subscribers that `id` appeared or disappeared.
    pub fn changed(&self, id: &SessionId) {
        if self.0.receiver_count() > 0 {
            // No subscriber is not an error.
            let _ = self.0.send(Presence::Changed(id.clone()));
        }
    }

    /// Tells subscribers that changes may have been missed.
    pub fn unknown(&self) {
        let _ = self.0.send(Presence::Unknown);
    }

    /// A subscription to changes from now on.
    pub fn subscribe(&self) -> PresenceReceiver {
        PresenceReceiver(self.0.subscribe())
    }
}

/// Receives [`Presence`] changes.
#[derive(Debug)]
pub struct PresenceReceiver(broadcast::Receiver<Presence>);

impl PresenceReceiver {
    /// The next change; [`Presence::Unknown`] if this subscriber fell behind; `None` once
    /// the store is gone.
    pub async fn next(&mut self) -> Option<Presence> {
        match self.0.recv().await {
            Ok(change) => Some(change),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Presence::Unknown),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

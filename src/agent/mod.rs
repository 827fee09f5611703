//! Who runs a session once init has created it.
//!
//! With `[agent] dispatch = "none"` nobody in the gateway does: an external agent drives the
//! API. With `"demo"`, [`demo::DemoAgent`] plays a scripted run so a newcomer sees a live
//! stream at once.

pub mod demo;

use crate::store::SessionId;

/// Starts the agent run for a freshly created session.
pub trait Dispatch: Send + Sync + 'static {
    /// Called once per session, right after it is created, with the owner's fingerprint.
    /// Must not block: start the run in the background.
    fn dispatch(&self, session: &SessionId, owner: &str);
}

//! The demo agent: a scripted run written through the same store the API uses.
//!
//! For each new session it appends `deltas` `delta` events (`{"text": "<word> "}`) at the
//! configured pace, one `message` event with the whole answer, then completes the session
//! with the answer as final response.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Dispatch;
use crate::store::{Completion, NewEvent, SessionId, SessionStore};

/// Words the demo answer is made of, cycled to the configured length.
const WORDS: [&str; 12] = [
    "Streaming",
    "agent",
    "sessions",
    "through",
    "agentgate:",
    "every",
    "event",
    "is",
    "resumable",
    "from",
    "its",
    "id.",
];

/// Plays scripted runs.
pub struct DemoAgent {
    store: Arc<dyn SessionStore>,
    pace: Duration,
    deltas: usize,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl std::fmt::Debug for DemoAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoAgent")
            .field("pace", &self.pace)
            .field("deltas", &self.deltas)
            .finish_non_exhaustive()
    }
}

impl DemoAgent {
    /// A demo agent writing to `store`; runs stop when `shutdown` is cancelled.
    pub fn new(
        store: Arc<dyn SessionStore>,
        pace: Duration,
        deltas: usize,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store,
            pace,
            deltas,
            shutdown,
            tasks: TaskTracker::new(),
        }
    }

    /// Runs still in progress.
    pub fn running(&self) -> usize {
        self.tasks.len()
    }

    async fn run(
        store: Arc<dyn SessionStore>,
        id: SessionId,
        owner: String,
        pace: Duration,
        deltas: usize,
    ) {
        let words: Vec<&str> = WORDS.iter().cycle().take(deltas).copied().collect();
        let event = |kind: &str, data: serde_json::Value| NewEvent {
            kind: kind.to_owned(),
            data: data.to_string(),
        };
        for word in &words {
            tokio::time::sleep(pace).await;
            let delta = event("delta", serde_json::json!({ "text": format!("{word} ") }));
            if let Err(e) = store.append(&id, &owner, &[delta]).await {
                tracing::warn!(session = %id, error = %e, "demo agent stopped");
                return;
            }
        }
        let answer = words.join(" ");
        tokio::time::sleep(pace).await;
        let message = event(
            "message",
            serde_json::json!({ "role": "assistant", "content": answer }),
        );
        let completion = Completion {
            status: "succeeded".to_owned(),
            final_response: serde_json::json!({ "text": answer }).to_string(),
        };
        let result = match store.append(&id, &owner, &[message]).await {
            Ok(_) => store.complete(&id, &owner, completion).await.map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(session = %id, error = %e, "demo agent could not finish");
        }
    }
}

impl Dispatch for DemoAgent {
    fn dispatch(&self, session: &SessionId, owner: &str) {
        let run = Self::run(
            Arc::clone(&self.store),
            session.clone(),
            owner.to_owned(),
            self.pace,
            self.deltas,
        );
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = run => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

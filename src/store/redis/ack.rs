//! Sending a write script call, and with `store.redis.ack_replicas = N` making the
//! acknowledgement durable: the call is pipelined with `WAIT N ack_timeout_ms` in the same
//! round trip, on one of the connections kept for such writes ([`AckLanes`]: `WAIT` blocks
//! the connection it runs on; reads must not queue behind it, and writes on one connection
//! would each wait for the replication of the ones before). A write the script refused wrote nothing, so its
//! reply stands whatever `WAIT` says; a write it applied that fewer than N replicas confirmed
//! fails as [`StoreError::NotReplicated`]. The write is not undone: the caller cannot tell
//! whether a later failover keeps it. A retry with the same idempotency key replays it
//! (`lua/idempotency.lua`), and its own `WAIT` then tells whether the replicas have it now.

use std::sync::atomic::{AtomicUsize, Ordering};

use redis::Cmd;

use super::connection::CountedConnection;
use super::{RedisStore, millis};
use crate::store::StoreError;

/// The connections of acknowledged writes, taken in turn.
pub(super) struct AckLanes {
    lanes: Vec<CountedConnection>,
    next: AtomicUsize,
}

impl AckLanes {
    pub(super) fn new(lanes: Vec<CountedConnection>) -> Self {
        Self {
            lanes,
            next: AtomicUsize::new(0),
        }
    }

    /// The next connection in turn (`None` only for an empty set, which is never built).
    fn next(&self) -> Option<CountedConnection> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.lanes.get(n % self.lanes.len().max(1)).cloned()
    }
}

impl RedisStore {
    /// Sends `call` (one round trip, with its `WAIT` when acknowledgement is on); Redis's
    /// own error is handed back for the caller to inspect (`NOSCRIPT`).
    pub(super) async fn send_write(
        &self,
        call: &Cmd,
    ) -> Result<redis::RedisResult<Vec<String>>, StoreError> {
        let Some(mut conn) = self.acked.as_ref().and_then(AckLanes::next) else {
            let mut conn = self.conn.clone();
            return self.timed(call.query_async(&mut conn)).await;
        };
        let wanted = self.settings.ack_replicas;
        let mut pipe = redis::pipe();
        pipe.add_command(call.clone())
            .cmd("WAIT")
            .arg(wanted)
            .arg(millis(self.settings.ack_timeout));
        let (reply, confirmed): (Vec<String>, u32) =
            match self.timed(pipe.query_async(&mut conn)).await? {
                Ok(both) => both,
                Err(e) => return Ok(Err(e)),
            };
        // A replayed idempotent write rewrote its record, so WAIT covers the original too.
        let written = matches!(reply.first().map(String::as_str), Some("ok" | "replayed"));
        if written && confirmed < wanted {
            return Err(StoreError::NotReplicated {
                wanted,
                acked: confirmed,
            });
        }
        Ok(Ok(reply))
    }
}

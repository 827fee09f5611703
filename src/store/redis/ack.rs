//! Sending a write script call, and with `store.redis.ack_replicas = N` making the
//! acknowledgement durable: the call is pipelined with `WAIT N ack_timeout_ms` in the same
//! round trip, on the connection kept for such writes (`WAIT` blocks the connection it runs
//! on; reads must not queue behind it). A write the script refused wrote nothing, so its
//! reply stands whatever `WAIT` says; a write it applied that fewer than N replicas confirmed
//! fails as [`StoreError::NotReplicated`]. The write is not undone: the caller cannot tell
//! whether a later failover keeps it. A retry with the same idempotency key replays it
//! (`lua/idempotency.lua`), and its own `WAIT` then tells whether the replicas have it now.

use redis::Cmd;

use super::{RedisStore, millis};
use crate::store::StoreError;

impl RedisStore {
    /// Sends `call` (one round trip, with its `WAIT` when acknowledgement is on); Redis's
    /// own error is handed back for the caller to inspect (`NOSCRIPT`).
    pub(super) async fn send_write(
        &self,
        call: &Cmd,
    ) -> Result<redis::RedisResult<Vec<String>>, StoreError> {
        let Some(acked) = &self.acked else {
            let mut conn = self.conn.clone();
            return self.timed(call.query_async(&mut conn)).await;
        };
        let wanted = self.settings.ack_replicas;
        let mut pipe = redis::pipe();
        pipe.add_command(call.clone())
            .cmd("WAIT")
            .arg(wanted)
            .arg(millis(self.settings.ack_timeout));
        let mut conn = acked.clone();
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

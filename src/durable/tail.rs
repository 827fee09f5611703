//! [`SharedReads`]: live readers of one stream on this node share one store read per
//! change.
//!
//! Every live reader (long-poll, SSE) of a stream waits on the store's one notification
//! path; on a change they all wake at once, and most sit at the same offset (the tail they
//! were sent). Instead of one store read each (a Redis round trip each, for every append),
//! readers asking for the same stream, offset and size share the read in flight.
//!
//! A joined read may have started before the change that woke the reader, and so miss it.
//! The readers therefore trust "nothing new" only from a read that started after they woke
//! ([`SharedReads::read`] says when its read started; with `not_before` it joins only such
//! a read), and after sending what a read found they read again before waiting: a reader
//! never waits for a notice that already came. Per change, the readers of a stream at one
//! offset thus cost about two store reads, however many they are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use tokio::time::Instant;

use crate::store::StoreError;
use crate::store::durable::{Offset, Read, StreamKey, StreamStore};

type SharedRead = Shared<BoxFuture<'static, Result<Option<Read>, Arc<StoreError>>>>;

/// Which read: the stream's tag, the offset read after, the byte bound.
type Slot = (String, Offset, u64);

/// Store reads in flight, by stream, offset and byte bound (see the module docs). Holds
/// one entry per distinct read in flight; each is removed when it completes.
#[derive(Default)]
pub struct SharedReads {
    inflight: Mutex<HashMap<Slot, (Instant, SharedRead)>>,
}

impl std::fmt::Debug for SharedReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedReads").finish_non_exhaustive()
    }
}

impl SharedReads {
    /// `store.read(key, after, max_bytes)`, joined with an identical read in flight (with
    /// `not_before`, only one that started then or later); also returns when the read it
    /// got started.
    pub async fn read(
        &self,
        store: &Arc<dyn StreamStore>,
        key: &StreamKey,
        after: Offset,
        max_bytes: u64,
        not_before: Option<Instant>,
    ) -> Result<(Option<Read>, Instant), StoreError> {
        let slot = (key.tag().to_owned(), after, max_bytes);
        let (started, read) = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match inflight.get(&slot) {
                Some((started, read)) if not_before.is_none_or(|t| *started >= t) => {
                    (*started, read.clone())
                }
                _ => {
                    let store = Arc::clone(store);
                    let key = key.clone();
                    let read =
                        async move { store.read(&key, after, max_bytes).await.map_err(Arc::new) }
                            .boxed()
                            .shared();
                    let started = Instant::now();
                    inflight.insert(slot.clone(), (started, read.clone()));
                    (started, read)
                }
            }
        };
        let result = read.await;
        {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            if inflight.get(&slot).is_some_and(|(s, _)| *s == started) {
                inflight.remove(&slot);
            }
        }
        result
            .map(|read| (read, started))
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// What a reader woken at `woke` reads at `after`: a shared read, and if that found
    /// nothing new but started before `woke`, one that started after it.
    pub async fn after_wake(
        &self,
        store: &Arc<dyn StreamStore>,
        key: &StreamKey,
        after: Offset,
        max_bytes: u64,
        woke: Instant,
    ) -> Result<Option<Read>, StoreError> {
        let (read, started) = self.read(store, key, after, max_bytes, None).await?;
        if started >= woke || read.as_ref().is_some_and(|r| !r.messages.is_empty()) {
            return Ok(read);
        }
        Ok(self.read(store, key, after, max_bytes, Some(woke)).await?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::durable::memory::MemoryStreams;
    use crate::store::durable::{Create, StreamLimits};

    #[tokio::test]
    async fn readers_share_a_read_started_after_they_woke_and_never_an_older_one() {
        let store: Arc<dyn StreamStore> = Arc::new(MemoryStreams::new());
        let key = StreamKey::new("/s");
        let limits = StreamLimits {
            max_stream_bytes: 1 << 20,
            max_streams: 10,
            max_producers: 10,
        };
        let create = Create {
            content_type: Some("text/plain".into()),
            expiry: Default::default(),
            closed: false,
            data: Some(bytes::Bytes::from_static(b"a")),
            fork: None,
        };
        store.create(&key, create, &limits).await.unwrap();
        let shared = SharedReads::default();
        let slot = (key.tag().to_owned(), Offset::START, 100);
        // A read in flight (held until `release` fires), started at `t0`.
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let t0 = Instant::now();
        let in_flight = {
            let store = Arc::clone(&store);
            let key = key.clone();
            async move {
                let _ = held.await;
                store.read(&key, Offset::START, 100).await.map_err(Arc::new)
            }
            .boxed()
            .shared()
        };
        shared
            .inflight
            .lock()
            .unwrap()
            .insert(slot.clone(), (t0, in_flight.clone()));
        let joined = tokio::spawn({
            let shared = Arc::new(shared);
            let store = Arc::clone(&store);
            let key = key.clone();
            let handle = Arc::clone(&shared);
            async move {
                let out = handle
                    .read(&store, &key, Offset::START, 100, Some(t0))
                    .await;
                (out, shared)
            }
        });
        release.send(()).unwrap();
        let (out, shared) = joined.await.unwrap();
        let (read, started) = out.unwrap();
        assert_eq!(started, t0, "joined the read in flight");
        assert_eq!(read.unwrap().messages.len(), 1);
        assert!(
            shared.inflight.lock().unwrap().is_empty(),
            "the entry went with its read"
        );
        // One that started before the reader woke is joined only without `not_before`.
        let old = Instant::now();
        let stale = in_flight.clone();
        shared
            .inflight
            .lock()
            .unwrap()
            .insert(slot.clone(), (old, stale.clone()));
        let (_, started) = shared
            .read(&store, &key, Offset::START, 100, None)
            .await
            .unwrap();
        assert_eq!(started, old, "joined without not_before");
        shared
            .inflight
            .lock()
            .unwrap()
            .insert(slot.clone(), (old, stale));
        let woke = old + std::time::Duration::from_millis(1);
        let (read, started) = shared
            .read(&store, &key, Offset::START, 100, Some(woke))
            .await
            .unwrap();
        assert_ne!(started, old, "a read of its own");
        assert_eq!(read.unwrap().messages.len(), 1);
        assert!(
            shared.inflight.lock().unwrap().is_empty(),
            "its own entry replaced the stale one, then went"
        );
    }
}

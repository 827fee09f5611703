//! [`Hub`]: the shared streams by key, each a [`Channel`] fed by one pump task.
//!
//! A channel's state sits behind one mutex: the pump appends to the replay ring and offers
//! the frame to every subscriber under it, and a joiner copies its backlog from the ring and
//! registers under it. So a joiner sees every event exactly once: those before it joined
//! from the backlog, those after from its queue.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use bytes::Bytes;
use http::{HeaderMap, StatusCode, Version};
use http_body::Body;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::FanoutStats;
use super::queue::{self, Receiver, Sender, TrySendError};
use crate::policy::FanoutPolicy;
use crate::sse::{Frame, Item, Parser};

/// The response head every joiner of a channel gets.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    /// The leader's [`REPLAYED_HEADERS`](super::REPLAYED_HEADERS) only.
    pub(crate) headers: HeaderMap,
}

/// Where a channel's inner call is.
#[derive(Debug, Clone)]
pub(crate) enum Phase {
    /// The leader is waiting for the inner response.
    Starting,
    /// Streaming; subscribers may join.
    Open(Arc<Head>),
    /// The inner response was not a stream to share, or the stream ended: whoever waits
    /// makes their own call.
    Closed,
}

/// A subscriber's end of the channel.
#[derive(Debug)]
pub(crate) struct Subscription {
    /// Frames before the join point that the subscriber must get first.
    pub(crate) backlog: VecDeque<Bytes>,
    pub(crate) rx: Receiver,
    /// Set when the pump detached the subscriber: the cursor to continue from.
    pub(crate) detached: Arc<OnceLock<Option<String>>>,
    pub(crate) _leave: Leave,
}

/// Tells the channel the subscriber is gone, when dropped.
#[derive(Debug)]
pub(crate) struct Leave {
    channel: Arc<Channel>,
    id: u64,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.channel.leave(self.id);
    }
}

struct Subscriber {
    tx: Sender,
    /// Id of the last event handed to this subscriber (its resume cursor).
    last_id: Option<String>,
    detached: Arc<OnceLock<Option<String>>>,
}

struct Entry {
    id: Option<String>,
    frame: Bytes,
}

struct State {
    /// The cursor right before the ring's first entry: joining there misses nothing.
    /// `None` once an id-less event has been dropped from the ring (no cursor names it).
    base: Option<Option<String>>,
    ring: VecDeque<Entry>,
    /// The stream's latest `retry:` frame, sent first to every joiner.
    retry: Option<Bytes>,
    subscribers: HashMap<u64, Subscriber>,
    next_id: u64,
    /// Since when nobody follows the stream.
    idle_since: Option<Instant>,
    ended: bool,
}

/// One shared stream.
pub(crate) struct Channel {
    state: Mutex<State>,
    phase: watch::Sender<Phase>,
    /// Woken when the last subscriber leaves.
    idle: Notify,
    policy: Arc<FanoutPolicy>,
    stats: Arc<FanoutStats>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code that can panic runs under these locks' critical sections.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Channel {
    fn new(start: Option<String>, policy: Arc<FanoutPolicy>, stats: Arc<FanoutStats>) -> Self {
        Self {
            state: Mutex::new(State {
                base: Some(start),
                ring: VecDeque::new(),
                retry: None,
                subscribers: HashMap::new(),
                next_id: 0,
                idle_since: Some(Instant::now()),
                ended: false,
            }),
            phase: watch::channel(Phase::Starting).0,
            idle: Notify::new(),
            policy,
            stats,
        }
    }

    /// Waits until the leader knows whether the stream is shared.
    pub(crate) async fn opened(&self) -> Option<Arc<Head>> {
        let mut phase = self.phase.subscribe();
        loop {
            match &*phase.borrow_and_update() {
                Phase::Starting => {}
                Phase::Open(head) => return Some(Arc::clone(head)),
                Phase::Closed => return None,
            }
            if phase.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Subscribes after `cursor` (`None`: from the stream's start), if the ring still holds
    /// everything after it; `None` otherwise (and once the stream has ended).
    pub(crate) fn join(self: &Arc<Self>, cursor: Option<&str>) -> Option<Subscription> {
        let mut state = lock(&self.state);
        if state.ended {
            return None;
        }
        let from = match &state.base {
            Some(base) if base.as_deref() == cursor => 0,
            _ => {
                let cursor = cursor?;
                let at = state
                    .ring
                    .iter()
                    .position(|e| e.id.as_deref() == Some(cursor))?;
                at + 1
            }
        };
        let mut backlog: VecDeque<Bytes> = state.retry.iter().cloned().collect();
        let mut last_id = cursor.map(str::to_owned);
        for entry in state.ring.iter().skip(from) {
            backlog.push_back(entry.frame.clone());
            if entry.id.is_some() {
                last_id.clone_from(&entry.id);
            }
        }
        let (tx, rx) = queue::queue(self.policy.subscriber_queue);
        let detached = Arc::new(OnceLock::new());
        let id = state.next_id;
        state.next_id += 1;
        state.subscribers.insert(
            id,
            Subscriber {
                tx,
                last_id,
                detached: Arc::clone(&detached),
            },
        );
        state.idle_since = None;
        drop(state);
        self.stats.subscribers.fetch_add(1, Ordering::Relaxed);
        self.stats.joined.fetch_add(1, Ordering::Relaxed);
        Some(Subscription {
            backlog,
            rx,
            detached,
            _leave: Leave {
                channel: Arc::clone(self),
                id,
            },
        })
    }

    fn leave(&self, id: u64) {
        let mut state = lock(&self.state);
        if state.subscribers.remove(&id).is_some() {
            self.stats.subscribers.fetch_sub(1, Ordering::Relaxed);
        }
        if state.subscribers.is_empty() && state.idle_since.is_none() {
            state.idle_since = Some(Instant::now());
            drop(state);
            self.idle.notify_one();
        }
    }

    /// Hands one parsed item to the ring and every subscriber.
    fn publish(&self, item: Item) {
        // Events (and id-only blocks, which move a browser's Last-Event-ID) are kept in the
        // ring and must reach every subscriber; comments and `retry:` may be skipped by a
        // subscriber whose queue is full.
        let (id, frame, kept) = match item {
            Item::Event(event) => (event.id.clone(), event.encode(), true),
            Item::Id(id) => {
                let frame = Bytes::from(format!("id: {id}\n\n"));
                (Some(id), frame, true)
            }
            Item::Comment(text) => (None, Frame::comment(&text).encode(), false),
            Item::Retry(ms) => {
                let frame = Frame::retry(ms).encode();
                lock(&self.state).retry = Some(frame.clone());
                (None, frame, false)
            }
        };
        let mut state = lock(&self.state);
        if kept {
            state.ring.push_back(Entry {
                id: id.clone(),
                frame: frame.clone(),
            });
            while state.ring.len() > self.policy.replay_ring {
                if let Some(old) = state.ring.pop_front() {
                    state.base = old.id.map(Some);
                }
            }
        }
        let mut detach = Vec::new();
        for (sub_id, sub) in &mut state.subscribers {
            match sub.tx.try_send(frame.clone()) {
                Ok(()) => {
                    if id.is_some() {
                        sub.last_id.clone_from(&id);
                    }
                }
                Err(TrySendError::Full) if kept => detach.push(*sub_id),
                Err(TrySendError::Full) => {}
                // Its body is being dropped; `leave` is on its way.
                Err(TrySendError::Closed) => {}
            }
        }
        for sub_id in detach {
            if let Some(sub) = state.subscribers.remove(&sub_id) {
                // Set before the sender drops: the body sees it once its queue is drained.
                let _ = sub.detached.set(sub.last_id);
                self.stats.subscribers.fetch_sub(1, Ordering::Relaxed);
                self.stats.detached.fetch_add(1, Ordering::Relaxed);
            }
        }
        if state.subscribers.is_empty() && state.idle_since.is_none() {
            state.idle_since = Some(Instant::now());
            drop(state);
            self.idle.notify_one();
        }
    }

    /// Ends the stream: subscribers drain their queues and end; joiners make their own call.
    fn end(&self) {
        let mut state = lock(&self.state);
        state.ended = true;
        let gone = state.subscribers.len();
        state.subscribers.clear();
        drop(state);
        self.stats
            .subscribers
            .fetch_sub(gone as u64, Ordering::Relaxed);
        self.phase.send_replace(Phase::Closed);
    }

    /// Resolves once nobody has followed the stream for the linger time.
    async fn abandoned(&self) {
        let linger = self.policy.linger();
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let idle_since = lock(&self.state).idle_since;
            match idle_since {
                Some(since) if since + linger <= Instant::now() => return,
                Some(since) => tokio::time::sleep_until(since + linger).await,
                None => notified.await,
            }
        }
    }
}

/// The shared streams of one layer, by key.
pub(crate) struct Hub<K> {
    channels: Mutex<HashMap<K, Arc<Channel>>>,
    pub(crate) policy: Arc<FanoutPolicy>,
    pub(crate) stats: Arc<FanoutStats>,
}

impl<K: Clone + Eq + Hash + Send + 'static> Hub<K> {
    pub(crate) fn new(policy: FanoutPolicy) -> Self {
        Self {
            channels: Mutex::new(HashMap::new()),
            policy: Arc::new(policy),
            stats: Arc::new(FanoutStats::default()),
        }
    }

    /// The channel of `key`, and whether the caller created it (and must start it).
    pub(crate) fn channel(&self, key: &K, start: Option<&str>) -> (Arc<Channel>, bool) {
        let mut channels = lock(&self.channels);
        if let Some(channel) = channels.get(key) {
            return (Arc::clone(channel), false);
        }
        let channel = Arc::new(Channel::new(
            start.map(str::to_owned),
            Arc::clone(&self.policy),
            Arc::clone(&self.stats),
        ));
        channels.insert(key.clone(), Arc::clone(&channel));
        (channel, true)
    }

    /// Forgets `channel` (if it is still the one under `key`) and closes it.
    pub(crate) fn close(&self, key: &K, channel: &Arc<Channel>) {
        let mut channels = lock(&self.channels);
        if channels
            .get(key)
            .is_some_and(|current| Arc::ptr_eq(current, channel))
        {
            channels.remove(key);
        }
        drop(channels);
        channel.end();
    }

    /// Shared streams open now.
    pub(crate) fn len(&self) -> usize {
        lock(&self.channels).len()
    }
}

/// Opens `channel` with `head` and feeds it from `body` until the body ends, fails, or
/// nobody has followed it for the linger time; then closes it.
pub(crate) fn start_pump<K, B>(hub: Arc<Hub<K>>, key: K, channel: Arc<Channel>, head: Head, body: B)
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    channel.phase.send_replace(Phase::Open(Arc::new(head)));
    hub.stats.streams.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        let mut body = Box::pin(body);
        let mut parser = Parser::new();
        // One watcher for the whole stream (it re-reads the idle state whenever woken),
        // not a new one (and a lock) per frame.
        let abandoned = channel.abandoned();
        tokio::pin!(abandoned);
        loop {
            let frame = tokio::select! {
                frame = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)) => frame,
                () = &mut abandoned => break,
            };
            let data = match frame {
                None => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "sse fan-out: inner stream failed");
                    break;
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue, // trailers
                },
            };
            if let Err(e) = parser.feed(&data) {
                tracing::warn!(error = %e, "sse fan-out: inner stream is not valid SSE");
                break;
            }
            while let Some(item) = parser.next_item() {
                channel.publish(item);
            }
        }
        hub.close(&key, &channel);
        hub.stats.streams.fetch_sub(1, Ordering::Relaxed);
    });
}

//! [`queue`]: one subscriber's bounded frame queue. The pump offers frames without ever
//! waiting ([`Sender::try_send`]); the subscriber's body takes them ([`Receiver::poll_recv`]).
//!
//! Why not tokio's `mpsc`: a channel allocates its shared state (cache-line padded) and a
//! first block of 32 slots when it is made, about 1.5 KB, which every idle viewer pays for
//! as long as it watches. This queue is one small allocation; its buffer grows only while
//! frames are waiting and is given back when a backlog has drained.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

/// A drained buffer with more room than this many frames gives it back.
const KEEP_CAPACITY: usize = 16;

/// A queue of at most `capacity` frames.
pub(crate) fn queue(capacity: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            frames: VecDeque::new(),
            waker: None,
            sender_gone: false,
            receiver_gone: false,
        }),
        capacity,
    });
    (Sender(Arc::clone(&shared)), Receiver(shared))
}

struct Shared {
    state: Mutex<State>,
    capacity: usize,
}

struct State {
    frames: VecDeque<Bytes>,
    /// The receiver waiting for a frame (or the end).
    waker: Option<Waker>,
    sender_gone: bool,
    receiver_gone: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code that can panic runs while it is held.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why [`Sender::try_send`] did not queue a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TrySendError {
    /// The queue holds `capacity` frames.
    Full,
    /// The receiver is gone.
    Closed,
}

/// The pump's end. Dropping it ends the queue once the receiver has drained it.
pub(crate) struct Sender(Arc<Shared>);

impl Sender {
    /// Queues `frame` unless the queue is full or the receiver is gone; never waits.
    pub(crate) fn try_send(&self, frame: Bytes) -> Result<(), TrySendError> {
        let mut state = self.0.lock();
        if state.receiver_gone {
            return Err(TrySendError::Closed);
        }
        if state.frames.len() >= self.0.capacity {
            return Err(TrySendError::Full);
        }
        state.frames.push_back(frame);
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.sender_gone = true;
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The subscriber's end.
pub(crate) struct Receiver(Arc<Shared>);

impl Receiver {
    /// The next frame; `None` once the sender is gone and every frame has been taken.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut state = self.0.lock();
        if let Some(frame) = state.frames.pop_front() {
            if state.frames.is_empty() && state.frames.capacity() > KEEP_CAPACITY {
                state.frames = VecDeque::new();
            }
            return Poll::Ready(Some(frame));
        }
        if state.sender_gone {
            return Poll::Ready(None);
        }
        match &mut state.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_gone = true;
        state.frames.clear();
    }
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    #[tokio::test]
    async fn frames_come_in_order_then_the_end() {
        let (tx, mut rx) = queue(2);
        tx.try_send(frame(1)).unwrap();
        tx.try_send(frame(2)).unwrap();
        assert_eq!(tx.try_send(frame(3)), Err(TrySendError::Full));
        assert_eq!(poll_fn(|cx| rx.poll_recv(cx)).await, Some(frame(1)));
        tx.try_send(frame(3)).unwrap();
        drop(tx);
        assert_eq!(poll_fn(|cx| rx.poll_recv(cx)).await, Some(frame(2)));
        assert_eq!(poll_fn(|cx| rx.poll_recv(cx)).await, Some(frame(3)));
        assert_eq!(poll_fn(|cx| rx.poll_recv(cx)).await, None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_frame_and_by_the_end() {
        let (tx, mut rx) = queue(4);
        let waiting = tokio::spawn(async move {
            let first = poll_fn(|cx| rx.poll_recv(cx)).await;
            let end = poll_fn(|cx| rx.poll_recv(cx)).await;
            (first, end)
        });
        tokio::task::yield_now().await;
        tx.try_send(frame(7)).unwrap();
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(waiting.await.unwrap(), (Some(frame(7)), None));
    }

    #[test]
    fn a_gone_receiver_closes_the_queue() {
        let (tx, rx) = queue(4);
        drop(rx);
        assert_eq!(tx.try_send(frame(1)), Err(TrySendError::Closed));
    }

    #[tokio::test]
    async fn a_drained_backlog_gives_its_buffer_back() {
        let (tx, mut rx) = queue(256);
        for n in 0..100 {
            tx.try_send(frame(n)).unwrap();
        }
        for _ in 0..100 {
            poll_fn(|cx| rx.poll_recv(cx)).await;
        }
        assert_eq!(rx.0.lock().frames.capacity(), 0);
    }
}

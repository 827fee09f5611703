//! [`Queue`]: slots in flight and the waiters, per budget, behind one mutex.
//!
//! A released slot is handed straight to the best waiter (its count never drops), so a
//! request arriving at that moment cannot take it first.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::error::OverloadReason;
use super::observe::QueueObserver;
use crate::policy::PriorityQueuePolicy;

/// Which budget a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// `max_in_flight`.
    Main = 0,
    /// `stream_budget`.
    Stream = 1,
}

/// Waiters in order: highest priority first, then oldest first. The last entry is the
/// newest of the lowest class, the one evicted.
type WaitKey = (Reverse<u8>, u64);

#[derive(Debug)]
struct Budget {
    limit: usize,
    in_flight: usize,
    waiters: BTreeMap<WaitKey, oneshot::Sender<Permit>>,
}

#[derive(Debug)]
struct State {
    budgets: [Budget; 2],
    next_seq: u64,
}

/// What the layer and all its services share.
#[derive(Debug)]
pub(crate) struct Queue {
    max_queue: usize,
    pub(crate) max_wait: Duration,
    /// Streams draw from `Lane::Stream` only if it has slots.
    separate_streams: bool,
    state: Mutex<State>,
    observer: Arc<dyn QueueObserver>,
}

impl std::fmt::Debug for dyn QueueObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueueObserver")
    }
}

/// What [`Queue::admit`] decided.
pub(crate) enum Admission {
    /// A slot is free: run now.
    Run(Permit),
    /// Wait for a slot.
    Wait(Waiter),
    /// The queue is full of requests at least as important.
    Full,
}

impl Queue {
    pub(crate) fn new(policy: &PriorityQueuePolicy, observer: Arc<dyn QueueObserver>) -> Self {
        let budget = |limit| Budget {
            limit,
            in_flight: 0,
            waiters: BTreeMap::new(),
        };
        Self {
            max_queue: policy.max_queue,
            max_wait: policy.max_wait(),
            separate_streams: policy.stream_budget > 0,
            state: Mutex::new(State {
                budgets: [budget(policy.max_in_flight), budget(policy.stream_budget)],
                next_seq: 0,
            }),
            observer,
        }
    }

    /// The lane a request draws from.
    pub(crate) fn lane(&self, is_stream: bool) -> Lane {
        if is_stream && self.separate_streams {
            Lane::Stream
        } else {
            Lane::Main
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No user code runs under the lock, so a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot, queues the request, or turns it away (evicting a waiter if the
    /// request is more important than the least important one).
    pub(crate) fn admit(self: &Arc<Self>, lane: Lane, priority: u8) -> Admission {
        let mut state = self.lock();
        let seq = state.next_seq;
        state.next_seq += 1;
        let budget = &mut state.budgets[lane as usize];
        if budget.in_flight < budget.limit && budget.waiters.is_empty() {
            budget.in_flight += 1;
            return Admission::Run(Permit::new(self.clone(), lane));
        }
        let mut evicted = None;
        if budget.waiters.len() >= self.max_queue {
            match budget.waiters.last_key_value() {
                Some((&(Reverse(lowest), _), _)) if priority > lowest => {
                    // Dropping the sender tells the evicted waiter.
                    budget.waiters.pop_last();
                    evicted = Some(lowest);
                }
                _ => {
                    drop(state);
                    self.observer.shed(priority, OverloadReason::QueueFull);
                    return Admission::Full;
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        let key = (Reverse(priority), seq);
        budget.waiters.insert(key, tx);
        drop(state);
        if let Some(lowest) = evicted {
            self.observer.shed(lowest, OverloadReason::Evicted);
        }
        self.observer.depth(priority, 1);
        Admission::Wait(Waiter {
            queue: self.clone(),
            lane,
            key,
            since: Instant::now(),
            rx,
        })
    }

    /// Gives a finished request's slot to the best waiter, or frees it.
    fn release(self: &Arc<Self>, lane: Lane) {
        loop {
            let tx = {
                let mut state = self.lock();
                let budget = &mut state.budgets[lane as usize];
                match budget.waiters.pop_first() {
                    Some((_, tx)) => tx,
                    None => {
                        budget.in_flight -= 1;
                        return;
                    }
                }
            };
            // Sent outside the lock: a failed send hands back a permit to disarm.
            match tx.send(Permit::new(self.clone(), lane)) {
                Ok(()) => return,
                Err(mut permit) => permit.armed = false,
            }
        }
    }

    fn leave(&self, lane: Lane, key: WaitKey) {
        self.lock().budgets[lane as usize].waiters.remove(&key);
    }

    /// Requests running now, per lane (main, stream).
    pub(crate) fn in_flight(&self) -> (usize, usize) {
        let state = self.lock();
        (state.budgets[0].in_flight, state.budgets[1].in_flight)
    }

    /// Requests waiting now, per lane (main, stream).
    pub(crate) fn queued(&self) -> (usize, usize) {
        let state = self.lock();
        (
            state.budgets[0].waiters.len(),
            state.budgets[1].waiters.len(),
        )
    }
}

/// A slot in flight; given back (to the best waiter) when dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    queue: Arc<Queue>,
    lane: Lane,
    /// False for a permit that never reached its waiter: the slot went on to the next.
    armed: bool,
}

impl Permit {
    fn new(queue: Arc<Queue>, lane: Lane) -> Self {
        Self {
            queue,
            lane,
            armed: true,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.armed {
            self.queue.release(self.lane);
        }
    }
}

/// A queued request; leaves the queue when dropped (a permit already sent to it is
/// dropped with the receiver, and so passed on).
#[derive(Debug)]
pub(crate) struct Waiter {
    queue: Arc<Queue>,
    lane: Lane,
    key: WaitKey,
    since: Instant,
    pub(crate) rx: oneshot::Receiver<Permit>,
}

impl Waiter {
    /// Longest this request may wait.
    pub(crate) fn max_wait(&self) -> Duration {
        self.queue.max_wait
    }

    fn priority(&self) -> u8 {
        let (Reverse(priority), _) = self.key;
        priority
    }

    /// The request got its slot.
    pub(crate) fn admitted(&self) {
        self.queue
            .observer
            .waited(self.priority(), self.since.elapsed());
    }

    /// The request was turned away (evictions are reported when they happen).
    pub(crate) fn timed_out(&self) {
        self.queue
            .observer
            .shed(self.priority(), OverloadReason::TimedOut);
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.queue.leave(self.lane, self.key);
        self.queue.observer.depth(self.priority(), -1);
    }
}

//! The CPU worker pool: a fixed set of OS threads that run CPU-bound tool work, so hashing
//! a large text or running a regex never occupies a thread of the proxy's event loops.
//!
//! [`WorkerPool::run`] queues a closure and awaits its result. The queue is bounded: a job
//! that finds `queue_capacity` jobs already waiting is rejected at once
//! ([`PoolError::Full`]) rather than waiting, so an overloaded gateway sheds tool work
//! instead of piling it up. The number of waiting jobs is the
//! `agentgate_tool_pool_queue_depth` gauge.
//!
//! A job whose caller has gone (its deadline passed, the client left) before a thread picks
//! it up is skipped. Once running, a job cannot be interrupted: CPU work runs to its end,
//! and its result is dropped. A job that panics fails its call ([`PoolError::Panicked`]);
//! the thread survives.
//!
//! # Example
//!
//! ```
//! use agentgate::tools::WorkerPool;
//! use prometheus_client::metrics::gauge::Gauge;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = WorkerPool::new(2, 16, Gauge::default());
//! let sum = pool.run(|| (1..=100u64).sum::<u64>()).await.expect("ran");
//! assert_eq!(sum, 5050);
//! # }
//! ```

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::oneshot;

/// Why a job did not produce a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// `queue_capacity` jobs were already waiting for a thread.
    #[error("worker pool queue is full ({0} jobs waiting)")]
    Full(usize),
    /// The job panicked.
    #[error("tool panicked")]
    Panicked,
    /// The pool's threads are gone (the process is shutting down).
    #[error("worker pool is shut down")]
    Closed,
}

type Job = Box<dyn FnOnce() + Send>;

struct Shared {
    sender: Mutex<mpsc::Sender<Job>>,
    /// Jobs queued and not yet picked up by a thread.
    waiting: AtomicUsize,
    capacity: usize,
    depth: Gauge,
    threads: usize,
}

/// A fixed set of worker threads with a bounded queue. Cheap to clone (shared).
///
/// The threads end once every clone is dropped and the queue is drained.
#[derive(Clone)]
pub struct WorkerPool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("threads", &self.shared.threads)
            .field("capacity", &self.shared.capacity)
            .field("waiting", &self.queue_depth())
            .finish()
    }
}

impl WorkerPool {
    /// Starts `threads` worker threads (at least one) named `agentgate-tool-<n>`, accepting
    /// at most `queue_capacity` waiting jobs (at least one); `depth` tracks the waiting jobs.
    ///
    /// # Panics
    ///
    /// If the OS refuses to start a thread (as `std::thread::spawn` does), at startup.
    pub fn new(threads: usize, queue_capacity: usize, depth: Gauge) -> Self {
        let threads = threads.max(1);
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let shared = Arc::new(Shared {
            sender: Mutex::new(sender),
            waiting: AtomicUsize::new(0),
            capacity: queue_capacity.max(1),
            depth,
            threads,
        });
        for n in 0..threads {
            let receiver = Arc::clone(&receiver);
            let shared = Arc::downgrade(&shared);
            std::thread::Builder::new()
                .name(format!("agentgate-tool-{n}"))
                .spawn(move || work(&receiver, &shared))
                .unwrap_or_else(|e| panic!("cannot start tool worker thread: {e}"));
        }
        Self { shared }
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.shared.threads
    }

    /// Jobs waiting for a thread right now.
    pub fn queue_depth(&self) -> usize {
        self.shared.waiting.load(Ordering::Acquire)
    }

    /// Runs `work` on a worker thread and returns its result.
    pub async fn run<T, F>(&self, work: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let shared = &self.shared;
        // Reserve a queue slot, or shed.
        let reserved = shared
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < shared.capacity).then_some(n + 1)
            });
        if reserved.is_err() {
            return Err(PoolError::Full(shared.capacity));
        }
        shared.depth.inc();
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            if tx.is_closed() {
                return; // the caller is gone: skip the work
            }
            let result = catch_unwind(AssertUnwindSafe(work)).map_err(|_| PoolError::Panicked);
            let _ = tx.send(result);
        });
        let sent = shared
            .sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job);
        if sent.is_err() {
            shared.waiting.fetch_sub(1, Ordering::AcqRel);
            shared.depth.dec();
            return Err(PoolError::Closed);
        }
        rx.await.map_err(|_| PoolError::Closed)?
    }
}

/// A worker thread's loop: take the next job, run it, until the pool is dropped.
fn work(receiver: &Mutex<mpsc::Receiver<Job>>, shared: &std::sync::Weak<Shared>) {
    loop {
        // Only the waiting thread holds the lock; the others queue on it.
        let job = match receiver.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return, // every sender dropped: the pool is gone
        };
        if let Some(shared) = shared.upgrade() {
            shared.waiting.fetch_sub(1, Ordering::AcqRel);
            shared.depth.dec();
        }
        job();
    }
}

/// Test helper: occupies a thread of `pool` until the returned sender is used (or dropped),
/// and returns once the job is running.
#[cfg(test)]
pub(crate) async fn hold_only_thread(
    pool: &WorkerPool,
) -> (
    tokio::task::JoinHandle<Result<(), PoolError>>,
    std::sync::mpsc::Sender<()>,
) {
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = tokio::spawn({
        let pool = pool.clone();
        async move {
            pool.run(move || {
                let _ = started_tx.send(());
                let _ = release_rx.recv();
            })
            .await
        }
    });
    let started = tokio::task::spawn_blocking(move || started_rx.recv()).await;
    assert!(matches!(started, Ok(Ok(()))), "the holder started");
    (holder, release_tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_survives_panics() {
        let pool = WorkerPool::new(2, 8, Gauge::default());
        assert_eq!(pool.run(|| 2 + 2).await, Ok(4));
        let name = pool
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .expect("ran");
        assert!(
            name.is_some_and(|n| n.starts_with("agentgate-tool-")),
            "ran on a pool thread"
        );
        let panicked = pool.run(|| -> u8 { panic!("boom") }).await;
        assert_eq!(panicked, Err(PoolError::Panicked));
        assert_eq!(pool.run(|| "still alive").await, Ok("still alive"));
        assert_eq!(pool.queue_depth(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_sheds_and_the_gauge_counts_waiting_jobs() {
        let depth = Gauge::default();
        let pool = WorkerPool::new(1, 1, depth.clone());
        // Hold the only thread.
        let (holder, release_tx) = hold_only_thread(&pool).await;
        // One job may wait; it is queued, not run.
        let queued = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(|| 7).await }
        });
        while pool.queue_depth() < 1 {
            tokio::task::yield_now().await;
        }
        assert_eq!(depth.get(), 1);
        // A second waiting job is shed.
        assert_eq!(pool.run(|| 8).await, Err(PoolError::Full(1)));
        release_tx.send(()).expect("holder waits");
        assert_eq!(holder.await.expect("joined"), Ok(()));
        assert_eq!(queued.await.expect("joined"), Ok(7));
        assert_eq!(depth.get(), 0);
    }

    #[tokio::test]
    async fn a_job_whose_caller_left_is_skipped() {
        let pool = WorkerPool::new(1, 4, Gauge::default());
        let (holder, release_tx) = hold_only_thread(&pool).await;
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let abandoned = tokio::spawn({
            let (pool, ran) = (pool.clone(), Arc::clone(&ran));
            async move { pool.run(move || ran.store(true, Ordering::SeqCst)).await }
        });
        while pool.queue_depth() < 1 {
            tokio::task::yield_now().await;
        }
        abandoned.abort();
        let _ = abandoned.await;
        release_tx.send(()).expect("holder waits");
        holder.await.expect("joined").expect("ran");
        // The queue is FIFO with one thread: this job runs after the abandoned one.
        assert_eq!(pool.run(|| ()).await, Ok(()));
        assert!(!ran.load(Ordering::SeqCst), "an abandoned job was run");
    }
}

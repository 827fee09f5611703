//! [`Cache`]: the bounded TTL map and the single-flight bookkeeping.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::ExistenceCheck;
use crate::policy::ExistenceCachePolicy;

/// One check's outcome, shared by every request that waited for it.
pub(crate) type Outcome = Result<bool, String>;

struct Entry {
    exists: bool,
    expires: Instant,
}

struct State<K> {
    entries: HashMap<K, Entry>,
    /// Insertion order, for evicting the oldest entries when full.
    order: VecDeque<K>,
    /// Checks in progress: later requests for the key await the same cell.
    in_flight: HashMap<K, Arc<OnceCell<Outcome>>>,
}

/// The cache behind an [`ExistenceCacheLayer`](super::ExistenceCacheLayer); clone it to keep a
/// handle for [`invalidate`](Self::invalidate).
pub struct Cache<K, C> {
    state: Arc<Mutex<State<K>>>,
    check: Arc<C>,
    policy: Arc<ExistenceCachePolicy>,
}

impl<K, C> Clone for Cache<K, C> {
    fn clone(&self) -> Self {
        Self {
            state: Arc::clone(&self.state),
            check: Arc::clone(&self.check),
            policy: Arc::clone(&self.policy),
        }
    }
}

impl<K, C> std::fmt::Debug for Cache<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<K, C> Cache<K, C>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    C: ExistenceCheck<K>,
{
    /// An empty cache over `check`.
    pub fn new(check: C, policy: ExistenceCachePolicy) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                entries: HashMap::new(),
                order: VecDeque::new(),
                in_flight: HashMap::new(),
            })),
            check: Arc::new(check),
            policy: Arc::new(policy),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &ExistenceCachePolicy {
        &self.policy
    }

    /// Forgets `key` (the application deleted it or saw it expire).
    pub fn invalidate(&self, key: &K) {
        self.lock().entries.remove(key);
    }

    /// Forgets every key (the application may have missed changes, e.g. while its
    /// notification connection was down).
    pub fn clear(&self) {
        let mut state = self.lock();
        state.entries.clear();
        state.order.clear();
    }

    /// Cached keys now (expired ones included until they are looked up or evicted).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key` exists: from the cache, or from one check shared by every concurrent
    /// caller for the same key.
    pub(crate) async fn lookup(&self, key: &K) -> Outcome {
        let cell = {
            let mut state = self.lock();
            if let Some(entry) = state.entries.get(key) {
                if entry.expires > Instant::now() {
                    return Ok(entry.exists);
                }
                state.entries.remove(key);
            }
            Arc::clone(state.in_flight.entry(key.clone()).or_default())
        };
        let outcome = cell
            .get_or_init(|| async {
                let outcome = self.check.exists(key).await.map_err(|e| e.to_string());
                self.settle(key, &outcome);
                outcome
            })
            .await;
        outcome.clone()
    }

    /// Records a finished check: cache the answer (errors are not cached) and retire the
    /// in-flight cell so the next miss checks again.
    fn settle(&self, key: &K, outcome: &Outcome) {
        let mut state = self.lock();
        state.in_flight.remove(key);
        let ttl = match outcome {
            Ok(true) => self.policy.positive_ttl(),
            Ok(false) => self.policy.negative_ttl(),
            Err(_) => return,
        };
        if ttl.is_zero() || self.policy.max_entries == 0 {
            return;
        }
        let entry = Entry {
            exists: matches!(outcome, Ok(true)),
            expires: Instant::now() + ttl,
        };
        if state.entries.insert(key.clone(), entry).is_none() {
            state.order.push_back(key.clone());
        }
        // Evict the oldest until within bounds; `order` may hold keys already gone.
        while state.entries.len() > self.policy.max_entries {
            match state.order.pop_front() {
                Some(old) => {
                    state.entries.remove(&old);
                }
                None => break,
            }
        }
        if state.order.len() > 2 * self.policy.max_entries.max(1) {
            let State { entries, order, .. } = &mut *state;
            order.retain(|k| entries.contains_key(k));
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<K>> {
        // Every critical section leaves the maps consistent, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

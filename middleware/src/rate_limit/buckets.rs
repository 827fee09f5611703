//! [`BucketMap`]: the local limiter's buckets, one per key, at most `max_keys` of them.
//!
//! governor's own keyed stores grow with every distinct key until pruned, so a client
//! sending random keys grows the map as fast as it can send requests. This store holds at
//! most `max_keys`: a new key arriving at a full map first evicts the idlest keys. A bucket
//! is its GCRA *theoretical arrival time* (TAT); the smaller the TAT, the sooner the bucket
//! is full again, so evicting the smallest TATs drops full buckets (indistinguishable from
//! new keys) first, then those closest to full — keys seen least recently and least heavily
//! — and keeps the ones that are over their limit now.
//!
//! Eviction scans the map, so it removes a sixteenth of `max_keys` at once: a flood of new
//! keys costs one scan per `max_keys / 16` keys, not one per request.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::ShrinkableKeyedStateStore;

/// How many keys the local buckets hold and have evicted; shared with whoever reports them
/// ([`RateLimitLayer::stats`](super::RateLimitLayer::stats)).
#[derive(Debug, Default)]
pub struct BucketStats {
    keys: AtomicUsize,
    evicted: AtomicU64,
}

impl BucketStats {
    /// Keys holding a bucket now.
    pub fn keys(&self) -> usize {
        self.keys.load(Ordering::Relaxed)
    }

    /// Keys evicted to make room so far (not counting [`prune`](super::RateLimitLayer::prune)).
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }
}

/// A governor state store holding at most `max_keys` buckets; see the [module docs](self).
pub(crate) struct BucketMap<K: Eq + Hash> {
    /// TAT in nanoseconds since the limiter started; 0 is "no state yet", as in governor.
    buckets: DashMap<K, AtomicU64>,
    max_keys: usize,
    stats: Arc<BucketStats>,
    /// Serialises inserting new keys, so the bound holds under concurrent inserts.
    inserting: Mutex<()>,
}

impl<K: Eq + Hash + Clone> BucketMap<K> {
    /// An empty map of at most `max_keys` (at least 1) buckets.
    pub(crate) fn new(max_keys: usize) -> Self {
        Self {
            buckets: DashMap::new(),
            max_keys: max_keys.max(1),
            stats: Arc::default(),
            inserting: Mutex::new(()),
        }
    }

    pub(crate) fn stats(&self) -> &Arc<BucketStats> {
        &self.stats
    }

    /// Removes the keys with the smallest TATs until `target` keys are left.
    fn evict_down_to(&self, target: usize) {
        let excess = self.buckets.len().saturating_sub(target);
        if excess == 0 {
            return;
        }
        let mut tats: Vec<u64> = self
            .buckets
            .iter()
            .map(|bucket| bucket.value().load(Ordering::Relaxed))
            .collect();
        if tats.is_empty() {
            return;
        }
        let index = (excess - 1).min(tats.len() - 1);
        let (_, threshold, _) = tats.select_nth_unstable(index);
        let threshold = *threshold;
        let mut removed = 0;
        self.buckets.retain(|_, tat| {
            let evict = removed < excess && tat.load(Ordering::Relaxed) <= threshold;
            removed += usize::from(evict);
            !evict
        });
        self.stats.keys.fetch_sub(removed, Ordering::Relaxed);
        let evicted = u64::try_from(removed).unwrap_or(u64::MAX);
        self.stats.evicted.fetch_add(evicted, Ordering::Relaxed);
        tracing::debug!(
            evicted = removed,
            max_keys = self.max_keys,
            "rate limit: key map full, evicted idle keys"
        );
    }
}

/// governor's compare-and-swap update of one bucket.
fn update<T, E>(
    tat: &AtomicU64,
    f: impl Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
) -> Result<T, E> {
    let mut prev = tat.load(Ordering::Acquire);
    loop {
        let (result, next) = f((prev != 0).then(|| Nanos::from(prev)))?;
        match tat.compare_exchange_weak(prev, next.into(), Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return Ok(result),
            Err(current) => prev = current,
        }
    }
}

impl<K: Eq + Hash + Clone> StateStore for BucketMap<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(tat) = self.buckets.get(key) {
            return update(&tat, f);
        }
        let one_at_a_time = self.inserting.lock().unwrap_or_else(|e| e.into_inner());
        if self.buckets.len() >= self.max_keys {
            let batch = (self.max_keys / 16).max(1);
            self.evict_down_to(self.max_keys - batch);
        }
        let tat = match self.buckets.entry(key.clone()) {
            Entry::Occupied(tat) => tat.into_ref(),
            Entry::Vacant(place) => {
                self.stats.keys.fetch_add(1, Ordering::Relaxed);
                place.insert(AtomicU64::new(0))
            }
        };
        drop(one_at_a_time);
        update(&tat, f)
    }
}

impl<K: Eq + Hash + Clone> ShrinkableKeyedStateStore<K> for BucketMap<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        let drop_below = u64::from(drop_below);
        let mut removed = 0;
        self.buckets.retain(|_, tat| {
            let keep = tat.load(Ordering::Relaxed) > drop_below;
            removed += usize::from(!keep);
            keep
        });
        self.stats.keys.fetch_sub(removed, Ordering::Relaxed);
    }

    fn shrink_to_fit(&self) {
        self.buckets.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.buckets.len()
    }

    fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets `key`'s TAT to `tat`, as a limiter decision would.
    fn set(map: &BucketMap<u32>, key: u32, tat: u64) {
        let _ = map.measure_and_replace(&key, |_| Ok::<_, ()>(((), Nanos::from(tat))));
    }

    #[test]
    fn never_holds_more_than_max_keys_and_evicts_the_idlest_first() {
        let map = BucketMap::new(32);
        // Key 0 is busy (far-future TAT); the rest are idle, older keys idler.
        set(&map, 0, 1_000_000);
        for key in 1..=31 {
            set(&map, key, u64::from(key));
        }
        assert_eq!((map.len(), map.stats().keys()), (32, 32));
        // A full map: the next key evicts 32 / 16 = 2 keys, the idlest (1 and 2).
        set(&map, 100, 500);
        assert_eq!((map.len(), map.stats().keys()), (31, 31));
        assert_eq!(map.stats().evicted(), 2);
        assert!(!map.buckets.contains_key(&1) && !map.buckets.contains_key(&2));
        assert!(map.buckets.contains_key(&0) && map.buckets.contains_key(&3));
        // A flood of new keys never grows the map past 32, and the busy key survives it.
        for key in 1_000..2_000 {
            set(&map, key, 10);
            assert!(map.len() <= 32);
        }
        assert!(map.buckets.contains_key(&0), "the busy key was evicted");
        assert_eq!(map.stats().keys(), map.len());
    }

    #[test]
    fn a_known_key_never_evicts() {
        let map = BucketMap::new(2);
        set(&map, 1, 5);
        set(&map, 2, 6);
        set(&map, 1, 7);
        assert_eq!((map.len(), map.stats().evicted()), (2, 0));
    }

    #[test]
    fn retain_recent_keeps_the_count() {
        let map = BucketMap::new(10);
        for key in 1..=4 {
            set(&map, key, u64::from(key) * 10);
        }
        map.retain_recent(Nanos::from(20));
        assert_eq!((map.len(), map.stats().keys()), (2, 2));
    }
}

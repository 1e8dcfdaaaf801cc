//! Budgets in this process: one GCRA timestamp per client, in a bounded map
//! split into shards so worker threads rarely meet on a lock. When
//! `max_keys` clients are known, the least recently seen is forgotten; a
//! forgotten client starts again with a whole budget, which only matters
//! for one that was idle while `max_keys` others were active.

use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Instant;

use lru::LruCache;

use super::{Decision, Gcra};

const SHARDS: usize = 16;

pub struct LocalStore {
    shards: Vec<Mutex<LruCache<Box<str>, u64>>>,
    hasher: RandomState,
    /// The clock's zero: timestamps are nanoseconds since.
    origin: Instant,
}

impl LocalStore {
    pub fn new(max_keys: usize) -> Self {
        let per_shard = NonZeroUsize::new(max_keys.div_ceil(SHARDS)).unwrap_or(NonZeroUsize::MIN);
        LocalStore {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per_shard)))
                .collect(),
            hasher: RandomState::new(),
            origin: Instant::now(),
        }
    }

    pub fn decide(&self, key: &str, gcra: &Gcra) -> Decision {
        let now = self.origin.elapsed().as_nanos() as u64;
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        // A known client is updated in place: no allocation on the hot path.
        if let Some(stored) = shard.get_mut(key) {
            let (decision, new_tat) = gcra.decide(Some(*stored), now);
            if let Some(tat) = new_tat {
                *stored = tat;
            }
            return decision;
        }
        let (decision, new_tat) = gcra.decide(None, now);
        if let Some(tat) = new_tat {
            shard.put(key.into(), tat);
        }
        decision
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn clients_have_separate_budgets_and_memory_stays_bounded() {
        let store = LocalStore::new(64);
        let gcra = Gcra::new(1, Duration::from_secs(3600), 2);
        assert!(store.decide("a", &gcra).allowed);
        assert!(store.decide("a", &gcra).allowed);
        assert!(!store.decide("a", &gcra).allowed);
        assert!(store.decide("b", &gcra).allowed);
        for i in 0..10_000 {
            store.decide(&format!("flood-{i}"), &gcra);
        }
        assert!(store.len() <= 64, "{}", store.len());
    }
}

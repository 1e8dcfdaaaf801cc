//! A bounded map from string keys, least recently used out first, split
//! into shards so worker threads rarely meet on a lock. The verified-token
//! cache and the local rate-limit store both keep one.

use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroUsize;
use std::sync::{Mutex, PoisonError};

use lru::LruCache;

const SHARDS: usize = 16;

pub struct ShardedLru<V> {
    shards: Vec<Mutex<LruCache<Box<str>, V>>>,
    hasher: RandomState,
}

impl<V> ShardedLru<V> {
    /// At most `capacity` entries (rounded up to a multiple of the shard
    /// count); `None` when it is 0.
    pub fn new(capacity: usize) -> Option<Self> {
        let per_shard = NonZeroUsize::new(capacity.div_ceil(SHARDS))?;
        Some(ShardedLru {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per_shard)))
                .collect(),
            hasher: RandomState::new(),
        })
    }

    /// Keeps at most `capacity` entries from now on (the least recently
    /// used go first); 0 keeps one per shard.
    pub fn resize(&self, capacity: usize) {
        let per_shard = NonZeroUsize::new(capacity.div_ceil(SHARDS)).unwrap_or(NonZeroUsize::MIN);
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .resize(per_shard);
        }
    }

    /// Runs `f` on the shard that holds `key`, under its lock.
    pub fn with_shard<R>(&self, key: &str, f: impl FnOnce(&mut LruCache<Box<str>, V>) -> R) -> R {
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        f(&mut shard.lock().unwrap_or_else(PoisonError::into_inner))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

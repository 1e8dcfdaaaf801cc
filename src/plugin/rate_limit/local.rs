//! Budgets in this process: one GCRA timestamp per client, in a bounded map.
//! When
//! `max_keys` clients are known, the least recently seen is forgotten; a
//! forgotten client starts again with a whole budget, which only matters
//! for one that was idle while `max_keys` others were active.

use std::time::Instant;

use super::{Decision, Gcra};
use crate::sharded_lru::ShardedLru;

pub struct LocalStore {
    budgets: ShardedLru<u64>,
    /// The clock's zero: timestamps are nanoseconds since.
    origin: Instant,
}

impl LocalStore {
    /// `max_keys` is validated to be more than zero.
    pub fn new(max_keys: usize) -> Self {
        LocalStore {
            budgets: ShardedLru::new(max_keys.max(1)).expect("a capacity"),
            origin: Instant::now(),
        }
    }

    /// A reload with another `max_keys` keeps the budgets that still fit.
    pub fn resize(&self, max_keys: usize) {
        self.budgets.resize(max_keys);
    }

    pub fn decide(&self, key: &str, gcra: &Gcra) -> Decision {
        let now = self.origin.elapsed().as_nanos() as u64;
        self.budgets.with_shard(key, |shard| {
            // A known client is updated in place: no allocation per request.
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
        })
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
        assert!(store.budgets.len() <= 64, "{}", store.budgets.len());
    }
}

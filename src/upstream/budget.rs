//! The retry budget of an upstream: over the last 10 seconds, retries may be
//! at most a share of the requests (20% by default) plus a small floor, so
//! an upstream that fails every request gets about 1.2 times the client
//! load, never a multiple of it.
//!
//! A sliding window of ten one-second slots, counted with atomics: a slot is
//! claimed for its second by whoever first finds it stale, and a count that
//! races with that reset can be lost, which only makes the budget a little
//! more generous for that second.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use crate::config::RetryBudget;

const SLOTS: usize = 10;

pub struct Budget {
    settings: RetryBudget,
    origin: Instant,
    slots: [Slot; SLOTS],
}

#[derive(Default)]
struct Slot {
    /// The second (since `origin`) the counts are for.
    second: AtomicU64,
    requests: AtomicU32,
    retries: AtomicU32,
}

impl Budget {
    pub fn new(settings: RetryBudget) -> Self {
        Budget {
            settings,
            origin: Instant::now(),
            slots: Default::default(),
        }
    }

    fn now(&self) -> u64 {
        // From 1, so no slot's initial 0 passes for a second of the window.
        self.origin.elapsed().as_secs() + 1
    }

    fn slot(&self, second: u64) -> &Slot {
        let slot = &self.slots[(second % SLOTS as u64) as usize];
        let seen = slot.second.load(Ordering::Relaxed);
        if seen != second
            && slot
                .second
                .compare_exchange(seen, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            slot.requests.store(0, Ordering::Relaxed);
            slot.retries.store(0, Ordering::Relaxed);
        }
        slot
    }

    /// A request came for this upstream.
    pub fn request(&self) {
        self.slot(self.now())
            .requests
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Whether one more retry fits; if so it is counted.
    pub fn try_retry(&self) -> bool {
        let now = self.now();
        let (mut requests, mut retries) = (0u64, 0u64);
        for slot in &self.slots {
            let second = slot.second.load(Ordering::Relaxed);
            if second + (SLOTS as u64) > now {
                requests += u64::from(slot.requests.load(Ordering::Relaxed));
                retries += u64::from(slot.retries.load(Ordering::Relaxed));
            }
        }
        let allowed = requests * u64::from(self.settings.percent) / 100
            + u64::from(self.settings.min_retries);
        if retries >= allowed {
            return false;
        }
        self.slot(now).retries.fetch_add(1, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_a_share_of_requests_plus_a_floor() {
        let budget = Budget::new(RetryBudget {
            percent: 20,
            min_retries: 3,
        });
        for _ in 0..100 {
            budget.request();
        }
        let granted = (0..100).filter(|_| budget.try_retry()).count();
        assert_eq!(granted, 20 + 3);
    }

    #[test]
    fn without_requests_only_the_floor_is_granted() {
        let budget = Budget::new(RetryBudget {
            percent: 20,
            min_retries: 2,
        });
        assert!(budget.try_retry());
        assert!(budget.try_retry());
        assert!(!budget.try_retry());
    }
}

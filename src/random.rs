//! Fast random numbers for choices that need no secrecy: which two
//! instances `least_request` compares, trace and span ids, sampling.
//! Request ids, which clients may see and quote, come from `uuid` instead.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};

/// A per-thread xorshift* generator, seeded once per thread from the
/// standard library's random hasher keys.
pub fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(0u64) | 1);
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_differ_and_spread() {
        let draws: Vec<u64> = (0..1000).map(|_| random()).collect();
        let distinct: std::collections::HashSet<_> = draws.iter().collect();
        assert_eq!(distinct.len(), 1000);
        let high = draws.iter().filter(|&&x| x > u64::MAX / 2).count();
        assert!((400..600).contains(&high), "{high}");
    }
}

//! Recently verified tokens, so that a client sending the same token on
//! every request pays for its signature check once: an RS256 verification
//! costs about 16 µs, an ES256 one 36 µs, a lookup here about 0.3.
//!
//! Keyed by the whole token (never a hash of it, so no collision can pass
//! one token off as another). An entry lives until the token's `exp` or for
//! `ttl`, whichever comes first; the `ttl` bounds how long a key removed
//! from a JWKS keeps its tokens alive. Bounded in entries, least recently
//! used out first.

use std::sync::Arc;
use std::time::Duration;

use super::Claims;
use crate::sharded_lru::ShardedLru;

pub struct TokenCache {
    entries: ShardedLru<Entry>,
    ttl: u64,
}

struct Entry {
    claims: Arc<Claims>,
    /// Unix seconds after which the entry is not used.
    expires: u64,
}

impl TokenCache {
    /// `None` when `capacity` is 0: caching off.
    pub fn new(capacity: usize, ttl: Duration) -> Option<Self> {
        Some(TokenCache {
            entries: ShardedLru::new(capacity)?,
            ttl: ttl.as_secs(),
        })
    }

    pub fn get(&self, token: &str, now: u64) -> Option<Arc<Claims>> {
        self.entries
            .with_shard(token, |shard| match shard.get(token) {
                Some(entry) if entry.expires > now => Some(entry.claims.clone()),
                Some(_) => {
                    shard.pop(token);
                    None
                }
                None => None,
            })
    }

    /// Remembers a token that just passed every check.
    pub fn put(&self, token: &str, claims: Arc<Claims>, now: u64) {
        let exp = claims.get("exp").and_then(|e| e.as_f64()).map(|e| e as u64);
        // Saturating: `cache_ttl` has no upper bound, and a wrapped sum
        // would lie in the past and quietly turn the cache off.
        let until = now.saturating_add(self.ttl);
        let expires = exp.map_or(until, |exp| exp.min(until));
        if expires <= now {
            return;
        }
        self.entries.with_shard(token, |shard| {
            shard.put(token.into(), Entry { claims, expires })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: serde_json::Value) -> Arc<Claims> {
        Arc::new(value.as_object().unwrap().clone())
    }

    #[test]
    fn entries_expire_at_exp_or_ttl_whichever_is_first() {
        let cache = TokenCache::new(100, Duration::from_secs(60)).unwrap();
        cache.put("soon", claims(json!({"exp": 1010})), 1000);
        cache.put("late", claims(json!({"exp": 5000})), 1000);
        cache.put("no-exp", claims(json!({})), 1000);
        cache.put("expired", claims(json!({"exp": 999})), 1000);
        assert!(cache.get("soon", 1009).is_some());
        assert!(cache.get("soon", 1010).is_none());
        assert!(cache.get("late", 1059).is_some());
        assert!(cache.get("late", 1060).is_none());
        assert!(cache.get("no-exp", 1059).is_some());
        assert!(cache.get("expired", 1000).is_none());
        assert!(cache.get("never-put", 1000).is_none());
    }

    #[test]
    fn the_longest_ttl_still_caches() {
        // Found with fuzz/fuzz_targets/jwt_token.rs: `now + ttl` overflowed
        // for `cache_ttl: 18446744073709551615s`, which config accepts.
        let cache = TokenCache::new(100, Duration::from_secs(u64::MAX)).unwrap();
        cache.put("no-exp", claims(json!({})), 1000);
        cache.put("exp", claims(json!({"exp": 5000})), 1000);
        assert!(cache.get("no-exp", u64::MAX - 1).is_some());
        assert!(cache.get("exp", 4999).is_some());
        assert!(cache.get("exp", 5000).is_none());
    }

    #[test]
    fn it_stays_bounded() {
        let cache = TokenCache::new(32, Duration::from_secs(60)).unwrap();
        for i in 0..10_000 {
            cache.put(&format!("t{i}"), claims(json!({})), 1000);
        }
        assert!(cache.entries.len() <= 32, "{}", cache.entries.len());
        assert!(TokenCache::new(0, Duration::from_secs(60)).is_none());
    }
}

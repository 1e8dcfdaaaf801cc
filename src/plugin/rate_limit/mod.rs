//! The rate-limit plugin: each request spends one unit of its client's
//! budget, kept by GCRA (the generic cell rate algorithm, a token bucket
//! stored as one timestamp), which is smooth: unlike a fixed window it
//! never lets twice the limit through around a window boundary.
//!
//! Budgets live in a store: `local` (this process, bounded) or `redis` (one
//! budget for every gateway instance, decided by an atomic script on the
//! Redis server's clock). The client is its address (the TCP peer, or the
//! forwarded address only behind `trusted_proxies`), a token claim, or a
//! header; a request without the claim or header falls back to its
//! address, never to "unlimited".
//!
//! Its YAML and the conversion into policies are in `config.rs`.

pub mod config;
pub mod local;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora_prometheus::prometheus::IntCounterVec;

use super::{Flow, Plugin};
use crate::context::{Finished, RequestCtx};
use crate::error::GatewayError;
use crate::forwarded::IpText;
use crate::metrics::Metrics;
use config::{FailureMode, KeySource, RateLimitPolicy};
use local::LocalStore;
use redis::RedisStore;

const NAME: &str = "rate_limit";
/// The refusal of a request over its budget (not of one Redis could not
/// decide under `fail_closed`).
const OVER_LIMIT: &str = "over_limit";

// As `&'static str`: Pingora keeps each header's spelling, and a static
// name saves it building a title-cased copy of a `HeaderName` per response.
const RATELIMIT_LIMIT: &str = "RateLimit-Limit";
const RATELIMIT_REMAINING: &str = "RateLimit-Remaining";
const RATELIMIT_RESET: &str = "RateLimit-Reset";

/// GCRA's two numbers, in nanoseconds: the time one request "costs", and
/// how far ahead of now the budget may be spent (the burst).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    pub interval: u64,
    pub tolerance: u64,
}

impl Gcra {
    pub fn new(requests: u64, per: Duration, burst: u64) -> Self {
        let interval = (per.as_nanos() / u128::from(requests)) as u64;
        Gcra {
            interval,
            tolerance: interval * (burst - 1),
        }
    }

    /// The verdict for a request at `now` on a budget whose theoretical
    /// arrival time is `tat` (`None`: untouched), and the `tat` to store
    /// when it is allowed.
    pub fn decide(&self, tat: Option<u64>, now: u64) -> (Decision, Option<u64>) {
        let tat = tat.unwrap_or(now).max(now);
        let ahead = tat - now;
        if ahead > self.tolerance {
            let decision = Decision {
                allowed: false,
                remaining: 0,
                reset: Duration::from_nanos(ahead),
                retry_after: Duration::from_nanos(ahead - self.tolerance),
            };
            return (decision, None);
        }
        let new_tat = tat + self.interval;
        let used = new_tat - now;
        let decision = Decision {
            allowed: true,
            remaining: (self.tolerance + self.interval - used) / self.interval,
            reset: Duration::from_nanos(used),
            retry_after: Duration::ZERO,
        };
        (decision, Some(new_tat))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests that could still be made right now.
    pub remaining: u64,
    /// Until the budget is whole again.
    pub reset: Duration,
    /// Until the next request is allowed (zero when this one was).
    pub retry_after: Duration,
}

/// Where budgets are kept; shared by every route that uses it.
#[derive(Clone)]
pub enum Store {
    Local(Arc<LocalStore>),
    Redis(Arc<RedisStore>),
}

pub struct RateLimit {
    policy: RateLimitPolicy,
    gcra: Gcra,
    store: Store,
    limit_header: HeaderValue,
    /// `gateway_rate_limited_total{route}`, when metrics are on.
    limited: Option<IntCounterVec>,
}

impl RateLimit {
    pub fn new(policy: RateLimitPolicy, store: Store, metrics: Option<&Metrics>) -> Self {
        RateLimit {
            gcra: Gcra::new(policy.requests, policy.per, policy.burst),
            limit_header: HeaderValue::from(policy.requests),
            policy,
            store,
            limited: metrics.map(|m| {
                m.counter_vec(
                    "gateway_rate_limited_total",
                    "Requests refused by a rate limit, by route",
                    &["route"],
                )
            }),
        }
    }

    /// `scope|kind:value`: budgets of different policies and key kinds
    /// never mix.
    pub fn key(&self, req: &RequestHeader, ctx: &RequestCtx) -> String {
        let by_ip = || {
            let ip = ctx.client_ip.map(IpText::new);
            let ip = ip.as_ref().map_or("unknown", IpText::as_str);
            [self.policy.scope.as_str(), "|ip:", ip].concat()
        };
        match &self.policy.key {
            KeySource::Ip => by_ip(),
            KeySource::Claim(name) => match ctx.claims.as_ref().and_then(|c| c.get(name)) {
                Some(serde_json::Value::String(s)) => format!("{}|claim:{s}", self.policy.scope),
                Some(value) if !value.is_null() => format!("{}|claim:{value}", self.policy.scope),
                _ => by_ip(),
            },
            KeySource::Header(name) => match req.headers.get(name).map(|v| v.as_bytes()) {
                Some(value) if !value.is_empty() => match std::str::from_utf8(value) {
                    Ok(text) => format!("{}|header:{text}", self.policy.scope),
                    // A lossy conversion would turn every invalid byte
                    // into the same U+FFFD, so that clients sending
                    // different bytes would share one budget.
                    Err(_) => format!("{}|header-hex:{}", self.policy.scope, hex(value)),
                },
                _ => by_ip(),
            },
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0x0f)]])
        .map(char::from)
        .collect()
}

#[async_trait]
impl Plugin for RateLimit {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn request(&self, req: &RequestHeader, ctx: &mut RequestCtx) -> Flow {
        let key = self.key(req, ctx);
        let decision = match &self.store {
            Store::Local(store) => Some(store.decide(&key, &self.gcra)),
            Store::Redis(store) => store.decide(&key, &self.gcra).await,
        };
        let Some(decision) = decision else {
            // Redis could not decide; its store counts and logs this.
            return match self.store_failure_mode() {
                FailureMode::FailOpen => Flow::Continue,
                FailureMode::FailClosed => Flow::Refuse {
                    reason: "store_unavailable",
                    error: GatewayError::TooManyRequests(1),
                },
            };
        };
        // On every answer, allowed or not: clients pace themselves by them.
        ctx.response_headers.extend([
            (RATELIMIT_LIMIT, self.limit_header.clone()),
            (RATELIMIT_REMAINING, HeaderValue::from(decision.remaining)),
            (
                RATELIMIT_RESET,
                HeaderValue::from(whole_seconds(decision.reset)),
            ),
        ]);
        if decision.allowed {
            Flow::Continue
        } else {
            Flow::Refuse {
                reason: OVER_LIMIT,
                error: GatewayError::TooManyRequests(whole_seconds(decision.retry_after).max(1)),
            }
        }
    }

    fn finished(&self, done: &Finished) {
        let ours = done
            .ctx
            .refusal
            .is_some_and(|r| r.plugin == NAME && r.reason == OVER_LIMIT);
        if let Some(counter) = self.limited.as_ref().filter(|_| ours) {
            counter.with_label_values(&[done.route]).inc();
        }
    }
}

impl RateLimit {
    fn store_failure_mode(&self) -> FailureMode {
        match &self.store {
            Store::Local(_) => FailureMode::FailOpen,
            Store::Redis(store) => store.on_failure(),
        }
    }
}

/// Rounded up: a client told "0" would retry too early.
fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_burst_then_the_steady_rate() {
        // 10 per second (one per 100 ms), 3 at once.
        let gcra = Gcra::new(10, Duration::from_secs(1), 3);
        let mut tat = None;
        let mut at = |now: u64| {
            let (decision, new_tat) = gcra.decide(tat, now);
            if let Some(t) = new_tat {
                tat = Some(t);
            }
            decision
        };
        let first = at(0);
        assert!(first.allowed);
        assert_eq!(first.remaining, 2);
        assert_eq!(first.reset, Duration::from_millis(100));
        assert_eq!(at(0).remaining, 1);
        assert_eq!(at(0).remaining, 0);
        let refused = at(0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        assert_eq!(refused.reset, Duration::from_millis(300));
        // One interval later exactly one more fits.
        assert!(at(100 * MS).allowed);
        assert!(!at(100 * MS).allowed);
        // After a quiet second the whole burst is back.
        for _ in 0..3 {
            assert!(at(1500 * MS).allowed);
        }
        assert!(!at(1500 * MS).allowed);
    }

    #[test]
    fn no_window_boundary_lets_twice_the_limit_through() {
        // 100 per second with a burst of 100: in any one-second span at
        // most 100 + 100 * 1 s / 1 s = 200 could pass only if the bucket
        // were refilled twice; GCRA lets through the burst plus what the
        // rate earns during the span, no more.
        let gcra = Gcra::new(100, Duration::from_secs(1), 100);
        let mut tat = None;
        let mut allowed = 0;
        // A client hammering every millisecond from 0.9 s to 1.1 s.
        for ms in 900..1100 {
            let (decision, new_tat) = gcra.decide(tat, ms * MS);
            if decision.allowed {
                allowed += 1;
                tat = new_tat;
            }
        }
        // The burst (100) plus 0.2 s at 100/s (20).
        assert!((100..=121).contains(&allowed), "{allowed}");
    }

    fn header_limit() -> RateLimit {
        let policy = RateLimitPolicy {
            requests: 5,
            per: Duration::from_secs(1),
            burst: 5,
            key: KeySource::Header(http::HeaderName::from_static("x-api-key")),
            backend: config::BackendKind::Local,
            scope: "route:/x@5/1s/5/header:x-api-key".into(),
        };
        RateLimit::new(policy, Store::Local(Arc::new(LocalStore::new(16))), None)
    }

    fn key_for(limit: &RateLimit, value: &[u8]) -> String {
        let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
        req.insert_header("x-api-key", HeaderValue::from_bytes(value).unwrap())
            .unwrap();
        limit.key(&req, &RequestCtx::default())
    }

    #[test]
    fn header_keys_keep_every_byte() {
        // Found by fuzz/fuzz_targets/rate_limit_key.rs: both values used to
        // become `\u{fffd}` and one budget.
        let limit = header_limit();
        assert_ne!(key_for(&limit, b"k\xff"), key_for(&limit, b"k\xfe"));
        assert_eq!(
            key_for(&limit, b"k\xff"),
            "route:/x@5/1s/5/header:x-api-key|header-hex:6bff"
        );
        assert_eq!(
            key_for(&limit, "clé-1".as_bytes()),
            "route:/x@5/1s/5/header:x-api-key|header:clé-1"
        );
        // A text value that spells out another's hex is another kind of key.
        assert_ne!(key_for(&limit, b"6bff"), key_for(&limit, b"k\xff"));
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(2)), 2);
        assert_eq!(whole_seconds(Duration::ZERO), 0);
    }
}

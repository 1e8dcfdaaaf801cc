//! The rate-limit plugin's part of the YAML: the `rate_limit` sections
//! (global and per route) and `rate_limit_backends`, validated into policies
//! the plugin applies without parsing anything per request.
//!
//! Keys in errors are relative to the section; the caller says where the
//! section sits (`rate_limit`, `routes[2].rate_limit`).

use std::time::Duration;

use http::HeaderName;
use serde::Deserialize;

use crate::yaml::values::duration;
use crate::yaml::Invalid;

/// A smooth limit (GCRA): `requests` per `per` on average, up to `burst`
/// at once.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub requests: Option<u64>,
    #[serde(default = "default_per", with = "duration")]
    pub per: Duration,
    /// Default: `requests`.
    pub burst: Option<u64>,
    #[serde(default)]
    pub key: RawRateKey,
    #[serde(default)]
    pub backend: BackendKind,
}

fn yes() -> bool {
    true
}

fn default_per() -> Duration {
    Duration::from_secs(1)
}

/// Whose budget a request spends.
#[derive(Debug, Default, Deserialize)]
#[serde(tag = "by", rename_all = "lowercase", deny_unknown_fields)]
pub enum RawRateKey {
    /// The client address (behind `trusted_proxies`, the forwarded one).
    #[default]
    Ip,
    /// A claim of the verified token; anonymous requests by address.
    Claim {
        #[serde(default = "default_claim")]
        name: String,
    },
    /// A request header (an API key); requests without it by address.
    Header { name: String },
}

fn default_claim() -> String {
    "sub".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// In this process: each gateway instance has its own budgets.
    #[default]
    Local,
    /// In Redis: one budget shared by every instance.
    Redis,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBackends {
    pub local: RawLocalBackend,
    pub redis: Option<RawRedisBackend>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLocalBackend {
    /// Clients remembered at most; the least recently seen go first.
    pub max_keys: usize,
}

impl Default for RawLocalBackend {
    fn default() -> Self {
        RawLocalBackend { max_keys: 100_000 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedisBackend {
    /// `redis://host:port[/db]`, usually `${REDIS_URL}`.
    pub url: String,
    /// Longest wait for one decision before `on_failure` applies.
    #[serde(default = "default_redis_timeout", with = "duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub on_failure: FailureMode,
}

fn default_redis_timeout() -> Duration {
    Duration::from_millis(50)
}

/// What a request gets when Redis cannot decide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Let it through: Redis trouble does not take the API down.
    #[default]
    FailOpen,
    /// Refuse it with 429.
    FailClosed,
}

#[derive(Debug, Clone)]
pub struct RateLimitPolicy {
    pub requests: u64,
    pub per: Duration,
    /// How many requests may come at once, after a quiet spell.
    pub burst: u64,
    pub key: KeySource,
    pub backend: BackendKind,
    /// Budgets are kept per scope: where the policy applies (`global`, one
    /// budget per client across the routes that use it, or the route) and
    /// what it allows (`route:/users@5/1s/5/ip`). So a reload that keeps a
    /// policy keeps its budgets, and one that changes it starts afresh.
    pub scope: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Ip,
    Claim(String),
    Header(HeaderName),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backends {
    pub local_max_keys: usize,
    pub redis: Option<RedisSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub url: String,
    pub timeout: Duration,
    pub on_failure: FailureMode,
}

impl TryFrom<RawBackends> for Backends {
    type Error = Invalid;

    fn try_from(raw: RawBackends) -> Result<Self, Invalid> {
        if raw.local.max_keys == 0 {
            return Err(Invalid::at("local.max_keys", "must be more than zero"));
        }
        let redis = match raw.redis {
            Some(redis) => {
                if let Err(e) = redis::Client::open(redis.url.as_str()) {
                    return Err(Invalid::at(
                        "redis.url",
                        format!(
                            "`{}` is not a Redis URL ({e}); write e.g. redis://127.0.0.1:6379",
                            redis.url
                        ),
                    ));
                }
                if redis.timeout.is_zero() {
                    return Err(Invalid::at("redis.timeout", "must be more than zero"));
                }
                Some(RedisSettings {
                    url: redis.url,
                    timeout: redis.timeout,
                    on_failure: redis.on_failure,
                })
            }
            None => None,
        };
        Ok(Backends {
            local_max_keys: raw.local.max_keys,
            redis,
        })
    }
}

/// How long a budget spent to the last request takes to be whole again, at
/// most: far beyond any useful limit, and far below what GCRA's u64
/// nanoseconds can hold.
const MAX_BURST_WINDOW: Duration = Duration::from_secs(10 * 365 * 86_400);

impl RateLimitPolicy {
    /// A section with `enabled: true` (the caller leaves out the others)
    /// for the place `applies_to` (`global`, `route:/users`).
    pub fn from_raw(
        raw: RawRateLimit,
        applies_to: &str,
        backends: &Backends,
    ) -> Result<Self, Invalid> {
        let requests = match raw.requests {
            Some(n) if n > 0 => n,
            _ => {
                return Err(Invalid::at(
                    "requests",
                    "give the number of requests allowed per `per` (more than zero)",
                ))
            }
        };
        // GCRA counts in u64 nanoseconds (`Gcra::new`): one request's
        // interval must not round to zero, which it divides by, and a whole
        // burst must fit with room to spare for the clock it is added to.
        let interval = raw.per.as_nanos() / u128::from(requests);
        if interval < Duration::from_micros(1).as_nanos() {
            return Err(Invalid::at(
                "per",
                "too short for that many requests (at most one per microsecond)",
            ));
        }
        let burst = raw.burst.unwrap_or(requests);
        if burst == 0 {
            return Err(Invalid::at("burst", "must be at least 1"));
        }
        let window = interval.checked_mul(u128::from(burst));
        if window.is_none_or(|w| w > MAX_BURST_WINDOW.as_nanos()) {
            return Err(Invalid::at(
                if raw.burst.is_some() { "burst" } else { "per" },
                "a whole burst must be earned back within 10 years (burst × per / requests)",
            ));
        }
        let key = match raw.key {
            RawRateKey::Ip => KeySource::Ip,
            RawRateKey::Claim { name } if !name.is_empty() => KeySource::Claim(name),
            RawRateKey::Claim { .. } => {
                return Err(Invalid::at("key.name", "name the claim, e.g. sub"))
            }
            RawRateKey::Header { name } => {
                KeySource::Header(HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    Invalid::at("key.name", format!("`{name}` is not a header name"))
                })?)
            }
        };
        if raw.backend == BackendKind::Redis && backends.redis.is_none() {
            return Err(Invalid::at(
                "backend",
                "redis needs rate_limit_backends.redis.url (e.g. \"${REDIS_URL}\")",
            ));
        }
        let key_text = match &key {
            KeySource::Ip => "ip".to_string(),
            KeySource::Claim(name) => format!("claim:{name}"),
            KeySource::Header(name) => format!("header:{name}"),
        };
        let per = humantime::format_duration(raw.per);
        Ok(RateLimitPolicy {
            scope: format!("{applies_to}@{requests}/{per}/{burst}/{key_text}"),
            requests,
            per: raw.per,
            burst,
            key,
            backend: raw.backend,
        })
    }

    /// A limit keyed by a claim needs the verified token, so it runs after
    /// token checks.
    pub fn needs_claims(&self) -> bool {
        matches!(self.key, KeySource::Claim(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{assert_errors, parsed, with_route};
    use crate::plugin::chain::PluginConfig;

    #[test]
    fn routes_inherit_the_global_policy_or_get_their_own_scope() {
        let c = parsed(&with_route(
            "rate_limit: {requests: 100, per: 1m}",
            "rate_limit: {requests: 5, key: {by: header, name: X-Api-Key}}",
        ));
        let Some(PluginConfig::RateLimit(own)) = c.routing.routes[0].plugins.last() else {
            panic!("no rate limit on the route");
        };
        assert_eq!((own.requests, own.burst), (5, 5));
        assert_eq!(own.per, Duration::from_secs(1));
        assert_eq!(own.scope, "route:/users@5/1s/5/header:x-api-key");
        assert_eq!(
            own.key,
            KeySource::Header(HeaderName::from_static("x-api-key"))
        );
        let Some(PluginConfig::RateLimit(global)) = c.routing.unmatched_plugins.last() else {
            panic!("no default rate limit");
        };
        assert_eq!(
            (global.requests, global.scope.as_str()),
            (100, "global@100/1m/100/ip")
        );
        assert!(
            c.routing.plugins.rate_limits.redis.is_none(),
            "no policy uses redis"
        );
    }

    #[test]
    fn the_widest_limits_gcra_can_count_are_accepted() {
        for (section, interval_ns) in [
            // One request per microsecond, the shortest interval.
            ("{requests: 1000000, per: 1s}", 1_000),
            // More requests than a u32 holds: the interval is still exact.
            (
                "{requests: 10000000000000, per: 10000000s, burst: 1000}",
                1_000,
            ),
            // A burst earned back in exactly 10 years.
            ("{requests: 1, per: 1d, burst: 3650}", 86_400_000_000_000),
        ] {
            let c = parsed(&with_route(&format!("rate_limit: {section}"), ""));
            let Some(PluginConfig::RateLimit(limit)) = c.routing.unmatched_plugins.last() else {
                panic!("no rate limit for {section}");
            };
            let gcra = crate::plugin::rate_limit::Gcra::new(limit.requests, limit.per, limit.burst);
            assert_eq!(gcra.interval, interval_ns, "{section}");
            let (decision, _) = gcra.decide(None, 0);
            assert!(decision.allowed);
        }
    }

    #[test]
    fn bad_rate_limits_name_key_and_reason() {
        let cases: Vec<(String, &str)> = vec![
            (
                with_route("rate_limit: {per: 1s}", ""),
                "rate_limit.requests: give the number of requests",
            ),
            (
                with_route("rate_limit: {requests: 0}", ""),
                "rate_limit.requests: give the number of requests",
            ),
            (
                with_route("", "rate_limit: {requests: 10, burst: 0}"),
                "routes[0].rate_limit.burst: must be at least 1",
            ),
            (
                with_route("rate_limit: {requests: 10, per: 0s}", ""),
                "rate_limit.per: too short",
            ),
            // The next three used to pass and then panic in `Gcra` (found
            // by fuzz/fuzz_targets/rate_limit_key.rs): an interval of 0
            // divided by, and tolerances that overflow u64 nanoseconds.
            (
                with_route("rate_limit: {requests: 9223372036854775807, per: 2h}", ""),
                "rate_limit.per: too short",
            ),
            (
                with_route("rate_limit: {requests: 10, per: 14444444444440s}", ""),
                "rate_limit.per: a whole burst must be earned back within 10 years",
            ),
            (
                with_route("", "rate_limit: {requests: 1, burst: 100000000000}"),
                "routes[0].rate_limit.burst: a whole burst must be earned back",
            ),
            (
                with_route("rate_limit: {requests: 10, key: {by: cookie}}", ""),
                "rate_limit.key.by: unknown variant `cookie`",
            ),
            (
                with_route(
                    "rate_limit: {requests: 10, key: {by: header, name: 'a b'}}",
                    "",
                ),
                "rate_limit.key.name: `a b` is not a header name",
            ),
            (
                with_route("rate_limit: {requests: 10, backend: redis}", ""),
                "rate_limit.backend: redis needs rate_limit_backends.redis.url",
            ),
            (
                with_route("rate_limit_backends: {redis: {url: 'http://x'}}", ""),
                "rate_limit_backends.redis.url: `http://x` is not a Redis URL",
            ),
            (
                with_route(
                    "rate_limit_backends: {redis: {url: 'redis://x', on_failure: maybe}}",
                    "",
                ),
                "rate_limit_backends.redis.on_failure: unknown variant `maybe`",
            ),
            (
                with_route("rate_limit_backends: {local: {max_keys: 0}}", ""),
                "rate_limit_backends.local.max_keys: must be more than zero",
            ),
        ];
        assert_errors(&cases);
    }
}

//! The `rate_limit` sections (global and per route) and
//! `rate_limit_backends`, validated into policies the rate-limit plugin can
//! apply without parsing anything per request.

use std::time::Duration;

use http::HeaderName;

use super::raw::{RawRateLimit, RawRateLimitBackends};
use super::{problem, Problem};

pub use super::raw::{FailureMode, RateBackend};

#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub requests: u64,
    pub per: Duration,
    /// How many requests may come at once, after a quiet spell.
    pub burst: u64,
    pub key: RateKeySource,
    pub backend: RateBackend,
    /// Budgets are kept per scope: `global` for the global policy (one
    /// budget per client across the routes that use it), the route for a
    /// route's own policy.
    pub scope: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKeySource {
    Ip,
    Claim(String),
    Header(HeaderName),
}

#[derive(Debug, Clone)]
pub struct RateLimitBackends {
    pub local_max_keys: usize,
    pub redis: Option<RedisSettings>,
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    pub timeout: Duration,
    pub on_failure: FailureMode,
}

pub(super) fn validate_backends(raw: RawRateLimitBackends) -> Result<RateLimitBackends, Problem> {
    if raw.local.max_keys == 0 {
        return Err(problem(
            "rate_limit_backends.local.max_keys",
            "must be more than zero",
        ));
    }
    let redis = match raw.redis {
        Some(redis) => {
            if let Err(e) = redis::Client::open(redis.url.as_str()) {
                return Err(problem(
                    "rate_limit_backends.redis.url",
                    format!(
                        "`{}` is not a Redis URL ({e}); write e.g. redis://127.0.0.1:6379",
                        redis.url
                    ),
                ));
            }
            if redis.timeout.is_zero() {
                return Err(problem(
                    "rate_limit_backends.redis.timeout",
                    "must be more than zero",
                ));
            }
            Some(RedisSettings {
                url: redis.url,
                timeout: redis.timeout,
                on_failure: redis.on_failure,
            })
        }
        None => None,
    };
    Ok(RateLimitBackends {
        local_max_keys: raw.local.max_keys,
        redis,
    })
}

/// `Ok(None)` for `enabled: false`.
pub(super) fn validate_rate_limit(
    at: &str,
    raw: RawRateLimit,
    scope: String,
    backends: &RateLimitBackends,
) -> Result<Option<RateLimitSettings>, Problem> {
    if !raw.enabled {
        return Ok(None);
    }
    let requests = match raw.requests {
        Some(n) if n > 0 => n,
        _ => {
            return Err(problem(
                format!("{at}.requests"),
                "give the number of requests allowed per `per` (more than zero)",
            ))
        }
    };
    if raw.per.is_zero()
        || raw.per / u32::try_from(requests).unwrap_or(u32::MAX) < Duration::from_micros(1)
    {
        return Err(problem(
            format!("{at}.per"),
            "too short for that many requests (at most one per microsecond)",
        ));
    }
    let burst = raw.burst.unwrap_or(requests);
    if burst == 0 {
        return Err(problem(format!("{at}.burst"), "must be at least 1"));
    }
    let key = match raw.key {
        super::raw::RateKey::Ip => RateKeySource::Ip,
        super::raw::RateKey::Claim { name } if !name.is_empty() => RateKeySource::Claim(name),
        super::raw::RateKey::Claim { .. } => {
            return Err(problem(
                format!("{at}.key.name"),
                "name the claim, e.g. sub",
            ))
        }
        super::raw::RateKey::Header { name } => {
            RateKeySource::Header(HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                problem(
                    format!("{at}.key.name"),
                    format!("`{name}` is not a header name"),
                )
            })?)
        }
    };
    if raw.backend == RateBackend::Redis && backends.redis.is_none() {
        return Err(problem(
            format!("{at}.backend"),
            "redis needs rate_limit_backends.redis.url (e.g. \"${REDIS_URL}\")",
        ));
    }
    Ok(Some(RateLimitSettings {
        requests,
        per: raw.per,
        burst,
        key,
        backend: raw.backend,
        scope,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_errors, env, with_route};
    use super::super::{parse, PluginConfig};
    use super::*;

    #[test]
    fn routes_inherit_the_global_policy_or_get_their_own_scope() {
        let c = parse(
            &with_route(
                "rate_limit: {requests: 100, per: 1m}",
                "rate_limit: {requests: 5, key: {by: header, name: X-Api-Key}}",
            ),
            &env,
        )
        .unwrap();
        let Some(PluginConfig::RateLimit(own)) = c.routes[0].plugins.last() else {
            panic!("no rate limit on the route");
        };
        assert_eq!((own.requests, own.burst), (5, 5));
        assert_eq!(own.per, Duration::from_secs(1));
        assert_eq!(own.scope, "route:/users");
        assert_eq!(
            own.key,
            RateKeySource::Header(HeaderName::from_static("x-api-key"))
        );
        let Some(PluginConfig::RateLimit(global)) = c.default_plugins.last() else {
            panic!("no default rate limit");
        };
        assert_eq!((global.requests, global.scope.as_str()), (100, "global"));
        assert!(c.redis_in_use().is_none());
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

//! The `routes:` list, validated: prefixes canonical, upstreams resolved to
//! their index, rewrites and hosts parsed, names given and unique, and each
//! route's plugins settled (its own sections, else the global ones).

use std::collections::HashMap;
use std::time::Duration;

use http::Method;

use super::raw::{RawRetry, RawRetryOn, RawRoute, RetryCondition};
use super::upstreams::UpstreamSettings;
use crate::host::HostPattern;
use crate::path;
use crate::plugin::chain::PluginConfig;
use crate::plugin::cors::CorsPolicy;
use crate::plugin::jwt_auth::config::RoutePolicy;
use crate::plugin::rate_limit::config::{Backends, RateLimitPolicy};
use crate::yaml::Invalid;

/// What metrics and the log call requests that matched no route; no route
/// may take it.
pub const UNMATCHED: &str = "none";

#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// Unique; the route's label in metrics and the access log.
    pub name: String,
    pub prefix: String,
    pub host: Option<HostPattern>,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    pub rewrite: Rewrite,
    pub preserve_host: bool,
    pub retry: RetryPolicy,
    /// The longest a request waits for its response to begin, over all its
    /// tries; then 504.
    pub timeout: Option<Duration>,
    /// The route's per-request features, in no particular order: the chain
    /// builder orders them.
    pub plugins: Vec<PluginConfig>,
}

/// The most tries a route may give a request (Pingora's own ceiling is set
/// to it).
pub const MAX_ATTEMPTS: u8 = 5;

/// When a failed try is tried again, on another instance where there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included; 1: no retries.
    pub attempts: u8,
    pub on_connect_failure: bool,
    /// The connection broke before any response byte came.
    pub on_reset: bool,
    /// No response byte within the try's read timeout.
    pub on_timeout: bool,
    /// Upstream statuses that are tried again, sorted.
    pub on_statuses: Vec<u16>,
    /// Methods retried after the request was sent; a connect failure is
    /// retried for any method, since nothing was sent.
    pub methods: Vec<Method>,
    /// How long one try waits for response bytes, below the upstream's
    /// read timeout.
    pub per_try_timeout: Option<Duration>,
}

/// What happens to the matched prefix before the request goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    Keep,
    Strip,
    Replace(String),
}

/// What a route without its own settings inherits.
pub struct Defaults<'a> {
    pub has_jwt: bool,
    pub cors: Option<&'a CorsPolicy>,
    pub rate_limit: Option<&'a RateLimitPolicy>,
    pub backends: &'a Backends,
}

/// Every route, in config order; keys in errors are absolute
/// (`routes[2].upstream`).
pub fn validate_routes(
    raw: Vec<RawRoute>,
    upstreams: &[UpstreamSettings],
    defaults: &Defaults,
) -> Result<Vec<RouteSettings>, Invalid> {
    let mut routes: Vec<RouteSettings> = Vec::with_capacity(raw.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, raw) in raw.into_iter().enumerate() {
        let at = format!("routes[{i}]");
        let explicit_name = raw.name.is_some();
        let route = RouteSettings::from_raw(raw, upstreams, defaults).map_err(|e| e.under(&at))?;
        if routes
            .iter()
            .any(|r| r.host == route.host && r.prefix == route.prefix)
        {
            return Err(Invalid::at(
                format!("{at}.prefix"),
                format!(
                    "another route already has prefix `{}` for the same host",
                    route.prefix
                ),
            ));
        }
        if let Some(other) = names.insert(route.name.clone(), i) {
            let key = if explicit_name { "name" } else { "prefix" };
            return Err(Invalid::at(
                format!("{at}.{key}"),
                format!("`{}` is already the name of routes[{other}]", route.name),
            ));
        }
        routes.push(route);
    }
    Ok(routes)
}

impl RouteSettings {
    fn from_raw(
        raw: RawRoute,
        upstreams: &[UpstreamSettings],
        defaults: &Defaults,
    ) -> Result<Self, Invalid> {
        let prefix = raw.prefix;
        let canonical =
            path::normalize(&prefix).map_err(|e| Invalid::at("prefix", e.to_string()))?;
        if canonical != prefix || (prefix.len() > 1 && prefix.ends_with('/')) {
            let suggestion = match canonical.trim_end_matches('/') {
                "" => "/",
                trimmed => trimmed,
            };
            return Err(Invalid::at(
                "prefix",
                format!("`{prefix}` is not a normalized path prefix; write `{suggestion}`"),
            ));
        }

        let upstream = upstreams
            .iter()
            .position(|u| u.name == raw.upstream)
            .ok_or_else(|| {
                let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
                Invalid::at(
                    "upstream",
                    format!(
                        "unknown upstream `{}` (defined: {})",
                        raw.upstream,
                        known.join(", ")
                    ),
                )
            })?;

        let rewrite = match (raw.strip_prefix, raw.replace_prefix) {
            (false, Some(_)) => {
                return Err(Invalid::at(
                    "replace_prefix",
                    "replace_prefix replaces the prefix, which strip_prefix: false keeps; set one of them",
                ));
            }
            (true, Some(replacement)) => {
                if path::normalize(&replacement).ok().as_ref() != Some(&replacement) {
                    return Err(Invalid::at(
                        "replace_prefix",
                        format!("`{replacement}` must be a normalized path starting with /"),
                    ));
                }
                Rewrite::Replace(replacement.trim_end_matches('/').to_string())
            }
            (true, None) => Rewrite::Strip,
            (false, None) => Rewrite::Keep,
        };

        let host = raw
            .host
            .as_deref()
            .map(HostPattern::parse)
            .transpose()
            .map_err(|reason| Invalid::at("host", reason))?;

        let name = match raw.name {
            Some(name) => check_name(name)?,
            None => match &host {
                Some(host) => format!("{host}{prefix}"),
                None => prefix.clone(),
            },
        };

        let mut plugins = Vec::new();
        let cors = match raw.cors {
            Some(section) if section.enabled => {
                Some(CorsPolicy::try_from(section).map_err(|e| e.under("cors"))?)
            }
            Some(_) => None,
            None => defaults.cors.cloned(),
        };
        plugins.extend(cors.map(PluginConfig::Cors));
        let applies_to = format!(
            "route:{}{prefix}",
            host.as_ref()
                .map(HostPattern::to_string)
                .unwrap_or_default()
        );
        let rate_limit = match raw.rate_limit {
            Some(section) if section.enabled => Some(
                RateLimitPolicy::from_raw(section, &applies_to, defaults.backends)
                    .map_err(|e| e.under("rate_limit"))?,
            ),
            Some(_) => None,
            None => defaults.rate_limit.cloned(),
        };
        plugins.extend(rate_limit.map(PluginConfig::RateLimit));
        let retry = RetryPolicy::try_from(raw.retry).map_err(|e| e.under("retry"))?;
        if raw.timeout.is_some_and(|t| t.is_zero()) {
            return Err(Invalid::at(
                "timeout",
                "must be more than zero (or left out)",
            ));
        }
        let auth = RoutePolicy::from_raw(
            raw.auth,
            raw.require,
            raw.auth_overrides,
            &prefix,
            defaults.has_jwt,
        )?;
        if defaults.has_jwt {
            plugins.push(PluginConfig::JwtAuth(auth));
        }

        Ok(RouteSettings {
            name,
            prefix,
            host,
            upstream,
            rewrite,
            preserve_host: raw.preserve_host,
            retry,
            timeout: raw.timeout,
            plugins,
        })
    }
}

impl Default for RetryPolicy {
    /// A failed connect goes once more, to another instance.
    fn default() -> Self {
        RetryPolicy::try_from(RawRetry::default()).expect("the default policy is valid")
    }
}

impl TryFrom<RawRetry> for RetryPolicy {
    type Error = Invalid;

    fn try_from(raw: RawRetry) -> Result<Self, Invalid> {
        if !(1..=MAX_ATTEMPTS).contains(&raw.attempts) {
            return Err(Invalid::at(
                "attempts",
                format!("1 (no retries) to {MAX_ATTEMPTS}"),
            ));
        }
        let condition = |c| raw.on.contains(&RawRetryOn::Condition(c));
        let mut on_statuses = Vec::new();
        for (i, on) in raw.on.iter().enumerate() {
            if let RawRetryOn::Status(status) = on {
                if !(500..=599).contains(status) {
                    return Err(Invalid::at(
                        format!("on[{i}]"),
                        format!("{status}: only 5xx statuses are tried again"),
                    ));
                }
                on_statuses.push(*status);
            }
        }
        on_statuses.sort_unstable();
        if raw.per_try_timeout.is_some_and(|t| t.is_zero()) {
            return Err(Invalid::at(
                "per_try_timeout",
                "must be more than zero (or left out)",
            ));
        }
        Ok(RetryPolicy {
            attempts: raw.attempts,
            on_connect_failure: condition(RetryCondition::ConnectFailure),
            on_reset: condition(RetryCondition::Reset),
            on_timeout: condition(RetryCondition::Timeout),
            on_statuses,
            methods: match raw.methods {
                Some(methods) => methods.into_iter().map(|m| m.0).collect(),
                None => [
                    Method::GET,
                    Method::HEAD,
                    Method::OPTIONS,
                    Method::PUT,
                    Method::DELETE,
                ]
                .to_vec(),
            },
            per_try_timeout: raw.per_try_timeout,
        })
    }
}

/// Names are labels in metrics and log lines: short, and plain enough to
/// need no quoting anywhere.
fn check_name(name: String) -> Result<String, Invalid> {
    let plain = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./*:".contains(&b));
    if !plain {
        return Err(Invalid::at(
            "name",
            format!("`{name}` is not a route name: 1-128 characters of A-Z a-z 0-9 - _ . / * :"),
        ));
    }
    if name == UNMATCHED {
        return Err(Invalid::at(
            "name",
            format!("`{UNMATCHED}` names the requests that match no route"),
        ));
    }
    Ok(name)
}

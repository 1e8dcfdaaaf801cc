//! The `upstreams:` map, validated: each service's instance URLs parsed,
//! its timeouts and health check checked, so the pools are built from
//! settings that cannot fail.

use std::time::Duration;

use http::Uri;

use http::HeaderName;

use super::raw::{
    BalancePolicy, RawHashKey, RawHealthCheck, RawInstance, RawOutlier, RawRetryBudget,
    RawTimeouts, RawUpstream,
};
use crate::yaml::Invalid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub name: String,
    pub instances: Vec<InstanceUrl>,
    pub timeouts: Timeouts,
    pub health_check: Option<HealthCheck>,
    pub resolve_interval: Duration,
    pub balance: Balance,
    /// `None`: no passive health checks.
    pub outlier: Option<OutlierSettings>,
    pub retry_budget: RetryBudget,
    /// Requests in flight at most; `None`: no limit.
    pub max_in_flight: Option<u32>,
}

/// How an instance is chosen for each try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    /// Power of two choices: of two instances picked at random, the one
    /// with fewer requests in flight for its weight.
    LeastRequest,
    /// The same key to the same instance, on a ring; a request without the
    /// key goes round robin.
    ConsistentHash(HashKey),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    Header(HeaderName),
    Cookie(String),
    ClientIp,
    Claim(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierSettings {
    /// Failures in a row (connect failures, resets, timeouts, failure
    /// statuses) that eject an instance.
    pub consecutive_failures: u32,
    /// Sorted.
    pub failure_statuses: Vec<u16>,
    /// The first ejection's length; each further one adds as much.
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    /// Never more than this share of the pool is ejected at once.
    pub max_ejected_percent: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudget {
    /// Retries at most this share of the requests of the last 10 s...
    pub percent: u32,
    /// ...or this many, whichever is more.
    pub min_retries: u32,
}

/// One `http://host:port` instance of an upstream service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// What the upstream gets as `Host` (and TLS SNI): `host`, plus `:port`
    /// when it is not the scheme's default, as a browser would send it.
    pub authority: String,
    /// Its share of the traffic against the other instances' (default 1).
    pub weight: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect plus TLS handshake; then 502.
    pub connect: Duration,
    /// Longest wait for the next bytes of the response; then 504.
    pub read: Duration,
    pub write: Duration,
    /// How long an unused keep-alive connection stays in the pool.
    pub idle: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `GET` this path; 200 is healthy.
    pub path: http::uri::PathAndQuery,
    pub interval: Duration,
    pub timeout: Duration,
}

impl UpstreamSettings {
    /// `upstreams.<name>`; keys in errors are relative to it.
    pub fn from_raw(name: String, raw: RawUpstream) -> Result<Self, Invalid> {
        if raw.instances.is_empty() {
            return Err(Invalid::at(
                "instances",
                "at least one instance URL is needed",
            ));
        }
        let instances = raw
            .instances
            .iter()
            .enumerate()
            .map(|(i, instance)| {
                let (url, weight) = match instance {
                    RawInstance::Url(url) => (url, 1),
                    RawInstance::Weighted(w) => (&w.url, w.weight),
                };
                let at = format!("instances[{i}]");
                if weight == 0 {
                    return Err(Invalid::at(format!("{at}.weight"), "must be at least 1"));
                }
                let mut parsed =
                    InstanceUrl::parse(url).map_err(|reason| Invalid::at(&at, reason))?;
                parsed.weight = weight;
                Ok(parsed)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let timeouts = Timeouts::try_from(raw.timeouts).map_err(|e| e.under("timeouts"))?;
        let health_check = raw
            .health_check
            .map(|hc| HealthCheck::try_from(hc).map_err(|e| e.under("health_check")))
            .transpose()?;
        if raw.resolve_interval.is_zero() {
            return Err(Invalid::at("resolve_interval", "must be more than zero"));
        }
        let balance = match (raw.load_balancing, raw.hash_on) {
            (BalancePolicy::ConsistentHash, Some(key)) => {
                Balance::ConsistentHash(HashKey::try_from(key).map_err(|e| e.under("hash_on"))?)
            }
            (BalancePolicy::ConsistentHash, None) => {
                return Err(Invalid::at(
                    "hash_on",
                    "consistent_hash needs a key, e.g. {by: header, name: X-Cart-Id}",
                ))
            }
            (_, Some(_)) => {
                return Err(Invalid::at(
                    "hash_on",
                    "only goes with load_balancing: consistent_hash",
                ))
            }
            (BalancePolicy::RoundRobin, None) => Balance::RoundRobin,
            (BalancePolicy::LeastRequest, None) => Balance::LeastRequest,
        };
        let outlier = raw
            .outlier_detection
            .map(|o| OutlierSettings::try_from(o).map_err(|e| e.under("outlier_detection")))
            .transpose()?;
        let retry_budget =
            RetryBudget::try_from(raw.retry_budget).map_err(|e| e.under("retry_budget"))?;
        if raw.max_in_flight == Some(0) {
            return Err(Invalid::at(
                "max_in_flight",
                "must be at least 1 (or left out)",
            ));
        }
        Ok(UpstreamSettings {
            name,
            instances,
            timeouts,
            health_check,
            resolve_interval: raw.resolve_interval,
            balance,
            outlier,
            retry_budget,
            max_in_flight: raw.max_in_flight,
        })
    }
}

impl TryFrom<RawHashKey> for HashKey {
    type Error = Invalid;

    fn try_from(raw: RawHashKey) -> Result<Self, Invalid> {
        let named = |name: &str| {
            if name.is_empty() {
                Err(Invalid::at("name", "must not be empty"))
            } else {
                Ok(name.to_string())
            }
        };
        Ok(match raw {
            RawHashKey::Header { name } => HashKey::Header(
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| Invalid::at("name", format!("`{name}` is not a header name")))?,
            ),
            RawHashKey::Cookie { name } => HashKey::Cookie(named(&name)?),
            RawHashKey::Ip => HashKey::ClientIp,
            RawHashKey::Claim { name } => HashKey::Claim(named(&name)?),
        })
    }
}

impl TryFrom<RawOutlier> for OutlierSettings {
    type Error = Invalid;

    fn try_from(raw: RawOutlier) -> Result<Self, Invalid> {
        if raw.consecutive_failures == 0 {
            return Err(Invalid::at("consecutive_failures", "must be at least 1"));
        }
        let mut statuses = raw
            .failure_statuses
            .unwrap_or_else(|| (500..=599).collect());
        if let Some(bad) = statuses.iter().find(|s| !(100..=599).contains(*s)) {
            return Err(Invalid::at(
                "failure_statuses",
                format!("{bad} is not an HTTP status"),
            ));
        }
        statuses.sort_unstable();
        if raw.base_ejection_time.is_zero() {
            return Err(Invalid::at("base_ejection_time", "must be more than zero"));
        }
        if raw.max_ejection_time < raw.base_ejection_time {
            return Err(Invalid::at(
                "max_ejection_time",
                "must be at least base_ejection_time",
            ));
        }
        if raw.max_ejected_percent > 100 {
            return Err(Invalid::at("max_ejected_percent", "at most 100"));
        }
        Ok(OutlierSettings {
            consecutive_failures: raw.consecutive_failures,
            failure_statuses: statuses,
            base_ejection_time: raw.base_ejection_time,
            max_ejection_time: raw.max_ejection_time,
            max_ejected_percent: raw.max_ejected_percent,
        })
    }
}

impl TryFrom<RawRetryBudget> for RetryBudget {
    type Error = Invalid;

    fn try_from(raw: RawRetryBudget) -> Result<Self, Invalid> {
        if raw.percent > 100 {
            return Err(Invalid::at("percent", "at most 100"));
        }
        Ok(RetryBudget {
            percent: raw.percent,
            min_retries: raw.min_retries,
        })
    }
}

impl TryFrom<RawTimeouts> for Timeouts {
    type Error = Invalid;

    fn try_from(raw: RawTimeouts) -> Result<Self, Invalid> {
        for (field, value) in [
            ("connect", raw.connect),
            ("read", raw.read),
            ("write", raw.write),
            ("idle", raw.idle),
        ] {
            if value.is_zero() {
                return Err(Invalid::at(field, "must be more than zero"));
            }
        }
        Ok(Timeouts {
            connect: raw.connect,
            read: raw.read,
            write: raw.write,
            idle: raw.idle,
        })
    }
}

impl TryFrom<RawHealthCheck> for HealthCheck {
    type Error = Invalid;

    fn try_from(raw: RawHealthCheck) -> Result<Self, Invalid> {
        let path = raw
            .path
            .starts_with('/')
            .then(|| raw.path.parse().ok())
            .flatten()
            .ok_or_else(|| Invalid::at("path", "must start with /"))?;
        if raw.interval.is_zero() || raw.timeout.is_zero() {
            return Err(Invalid::here("interval and timeout must be more than zero"));
        }
        Ok(HealthCheck {
            path,
            interval: raw.interval,
            timeout: raw.timeout,
        })
    }
}

impl InstanceUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|_| format!("`{url}` is not a URL (e.g. http://user-service:3001)"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("`{url}`: the scheme must be http or https")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("`{url}` has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("`{url}`: credentials in the URL are not supported"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "`{url}`: an instance URL has no path or query; use the route's replace_prefix"
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let default_port = if tls { 443 } else { 80 };
        let port = authority.port_u16().unwrap_or(default_port);
        let authority = if port == default_port {
            authority.host().to_ascii_lowercase()
        } else {
            format!("{}:{port}", authority.host().to_ascii_lowercase())
        };
        Ok(InstanceUrl {
            tls,
            host,
            port,
            authority,
            weight: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_urls() {
        let u = InstanceUrl::parse("https://API.example.com").unwrap();
        assert_eq!(
            (u.tls, u.port, u.authority.as_str()),
            (true, 443, "api.example.com")
        );
        let u = InstanceUrl::parse("http://[::1]:8080/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.authority.as_str()),
            ("::1", 8080, "[::1]:8080")
        );
    }
}

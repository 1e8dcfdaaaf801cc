//! The `upstreams:` map, validated: each service's instance URLs parsed,
//! its timeouts and health check checked, so the pools are built from
//! settings that cannot fail.

use std::time::Duration;

use http::Uri;

use super::raw::{RawHealthCheck, RawTimeouts, RawUpstream};
use crate::yaml::Invalid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub name: String,
    pub instances: Vec<InstanceUrl>,
    pub timeouts: Timeouts,
    pub health_check: Option<HealthCheck>,
    pub resolve_interval: Duration,
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
            .map(|(i, url)| {
                InstanceUrl::parse(url)
                    .map_err(|reason| Invalid::at(format!("instances[{i}]"), reason))
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
        Ok(UpstreamSettings {
            name,
            instances,
            timeouts,
            health_check,
            resolve_interval: raw.resolve_interval,
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

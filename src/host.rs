//! Host names as the gateway matches them: a request's `Host` without its
//! port, a route's host pattern (exact, or `*.domain` for its subdomains),
//! and the subdomain test that those patterns and CORS origin patterns
//! share, so both refuse `evilshop.example` for `*.shop.example` alike.

use std::fmt;

/// A route's `host`: `api.example.com`, or `*.example.com` for any
/// subdomain of it. Stored in lower case; matched case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.shop.example` stored as `.shop.example`.
    Subdomains(String),
}

impl HostPattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let name = pattern.strip_prefix("*.").unwrap_or(pattern);
        let ok = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !ok {
            return Err(format!(
                "`{pattern}` is not a host name (e.g. api.example.com or *.example.com)"
            ));
        }
        let lower = pattern.to_ascii_lowercase();
        Ok(match lower.strip_prefix('*') {
            Some(suffix) => HostPattern::Subdomains(suffix.to_string()),
            None => HostPattern::Exact(lower),
        })
    }

    /// `host` is the request's, without its port.
    #[inline]
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => name.eq_ignore_ascii_case(host),
            HostPattern::Subdomains(suffix) => subdomain_of(host, suffix).is_some(),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Subdomains(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// The non-empty part of `host` in front of `suffix` (`.shop.example`,
/// compared case-insensitively): `eu` for `eu.shop.example`; `None` for
/// `shop.example` itself and for `evilshop.example`.
#[inline]
pub fn subdomain_of<'h>(host: &'h str, suffix: &str) -> Option<&'h str> {
    let at = host.len().checked_sub(suffix.len())?;
    let matches = at > 0 && host.is_char_boundary(at) && host[at..].eq_ignore_ascii_case(suffix);
    matches.then(|| &host[..at])
}

/// `api.example.com:8080` → `api.example.com`; `[::1]:3000` → `::1`.
#[inline]
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(v6, _)| &v6[1..]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_and_match_whole_names() {
        let exact = HostPattern::parse("API.shop.example").unwrap();
        assert_eq!(exact.to_string(), "api.shop.example");
        assert!(exact.matches("api.SHOP.example"));
        assert!(!exact.matches("x.api.shop.example"));

        let any = HostPattern::parse("*.shop.example").unwrap();
        assert_eq!(any.to_string(), "*.shop.example");
        assert!(any.matches("eu.shop.example"));
        assert!(any.matches("a.b.Shop.Example"));
        assert!(!any.matches("shop.example"));
        assert!(!any.matches("evilshop.example"));

        for bad in ["bad host", "", "*.", "a..b", "*.*.x", "x_y.example"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subdomains_need_a_label_in_front() {
        assert_eq!(subdomain_of("eu.shop.example", ".shop.example"), Some("eu"));
        assert_eq!(subdomain_of("shop.example", ".shop.example"), None);
        assert_eq!(subdomain_of(".shop.example", ".shop.example"), None);
        assert_eq!(subdomain_of("évilshop.example", ".shop.example"), None);
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("api.example.com:8080"), "api.example.com");
        assert_eq!(strip_port("api.example.com"), "api.example.com");
        assert_eq!(strip_port("[::1]:3000"), "::1");
        assert_eq!(strip_port("[::1]"), "::1");
    }
}

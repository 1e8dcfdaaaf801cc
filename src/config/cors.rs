//! The `cors:` sections (global and per route), validated into a policy
//! whose header values are built once: only the parts that depend on the
//! request (the echoed origin, reflected request headers) are left for
//! request time.

use std::time::Duration;

use http::{HeaderValue, Method};

use super::raw::RawCors;
use super::{parse_methods, problem, Problem};

#[derive(Debug, Clone)]
pub struct CorsSettings {
    pub origins: Origins,
    /// `null` listed in `allow_origins`: sandboxed frames and `file:` pages.
    pub allow_null: bool,
    pub methods: Vec<Method>,
    pub methods_header: HeaderValue,
    pub headers: AllowHeaders,
    pub expose_header: Option<HeaderValue>,
    pub credentials: bool,
    pub max_age: Option<HeaderValue>,
}

#[derive(Debug, Clone)]
pub enum Origins {
    /// `*`: answered with `Access-Control-Allow-Origin: *`.
    Any,
    Listed(Vec<OriginPattern>),
}

/// An allowed origin, matched against the whole `Origin` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// `https://shop.example`, lower case.
    Exact(String),
    /// `https://*.shop.example[:port]`: any subdomain, same scheme and port.
    Subdomains {
        scheme: String,
        /// `.shop.example`
        suffix: String,
        port: Option<u16>,
    },
}

#[derive(Debug, Clone)]
pub enum AllowHeaders {
    /// Whatever `Access-Control-Request-Headers` asks for, as `cors` does
    /// by default.
    Reflect,
    Listed(HeaderValue),
}

/// `Ok(None)` when the section says `enabled: false`.
pub(super) fn validate_cors(at: &str, raw: RawCors) -> Result<Option<CorsSettings>, Problem> {
    if !raw.enabled {
        return Ok(None);
    }
    let mut allow_null = false;
    let mut any = false;
    let mut patterns = Vec::new();
    for (i, origin) in raw.allow_origins.iter().enumerate() {
        match origin.as_str() {
            "*" => any = true,
            "null" => allow_null = true,
            _ => patterns.push(
                parse_origin(origin)
                    .map_err(|reason| problem(format!("{at}.allow_origins[{i}]"), reason))?,
            ),
        }
    }
    if any && raw.allow_credentials {
        return Err(problem(
            format!("{at}.allow_credentials"),
            "credentials cannot be allowed for any origin (`*`); list the origins instead",
        ));
    }
    if raw.allow_origins.is_empty() {
        return Err(problem(
            format!("{at}.allow_origins"),
            "list at least one origin, or set enabled: false",
        ));
    }

    let methods = parse_methods(&format!("{at}.allow_methods"), &raw.allow_methods)?;

    let headers = if raw.allow_headers == ["*"] {
        AllowHeaders::Reflect
    } else {
        AllowHeaders::Listed(header_list(
            &format!("{at}.allow_headers"),
            &raw.allow_headers,
        )?)
    };
    let expose_header = match raw.expose_headers.as_slice() {
        [] => None,
        [star] if star == "*" && raw.allow_credentials => {
            return Err(problem(
                format!("{at}.expose_headers"),
                "`*` exposes nothing to requests with credentials; list the headers",
            ))
        }
        [star] if star == "*" => Some(HeaderValue::from_static("*")),
        names => Some(header_list(&format!("{at}.expose_headers"), names)?),
    };
    let max_age = raw
        .max_age
        .map(|age| HeaderValue::from(age.as_secs()))
        .filter(|_| raw.max_age != Some(Duration::ZERO));

    Ok(Some(CorsSettings {
        origins: if any {
            Origins::Any
        } else {
            Origins::Listed(patterns)
        },
        allow_null,
        methods_header: HeaderValue::from_str(&raw.allow_methods.join(", "))
            .expect("validated methods"),
        methods,
        headers,
        expose_header,
        credentials: raw.allow_credentials,
        max_age,
    }))
}

/// Header names, checked, joined into one value.
fn header_list(at: &str, names: &[String]) -> Result<HeaderValue, Problem> {
    for (i, name) in names.iter().enumerate() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(problem(
                format!("{at}[{i}]"),
                format!("`{name}` is not a header name"),
            ));
        }
    }
    Ok(HeaderValue::from_str(&names.join(", ")).expect("validated header names"))
}

/// `scheme://host[:port]` with nothing after, the host possibly `*.` plus
/// a domain.
fn parse_origin(origin: &str) -> Result<OriginPattern, String> {
    let bad = || {
        format!(
            "`{origin}` is not an origin: write scheme://host[:port] with no path, e.g. https://shop.example or https://*.shop.example"
        )
    };
    let (scheme, rest) = origin.split_once("://").ok_or_else(bad)?;
    let scheme_ok = !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_ok || rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return Err(bad());
    }
    let parse_port = |p: &str| p.parse::<u16>().map_err(|_| bad());
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) = v6.split_once(']').ok_or_else(bad)?;
            let host = &rest[..addr.len() + 2];
            match after.strip_prefix(':') {
                Some(p) => (host, Some(parse_port(p)?)),
                None if after.is_empty() => (host, None),
                None => return Err(bad()),
            }
        }
        None => match rest.split_once(':') {
            Some((host, p)) => (host, Some(parse_port(p)?)),
            None => (rest, None),
        },
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let scheme = scheme.to_ascii_lowercase();
    match host.strip_prefix("*.") {
        Some(domain) => {
            if !domain.split('.').all(label_ok) {
                return Err(bad());
            }
            Ok(OriginPattern::Subdomains {
                scheme,
                suffix: format!(".{}", domain.to_ascii_lowercase()),
                port,
            })
        }
        None => {
            let is_ipv6 = host.starts_with('[') && host.ends_with(']');
            if !is_ipv6 && !host.split('.').all(label_ok) {
                return Err(bad());
            }
            Ok(OriginPattern::Exact(origin.to_ascii_lowercase()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_into_exact_and_subdomain_patterns() {
        assert_eq!(
            parse_origin("https://Shop.Example").unwrap(),
            OriginPattern::Exact("https://shop.example".into())
        );
        assert_eq!(
            parse_origin("http://localhost:5173").unwrap(),
            OriginPattern::Exact("http://localhost:5173".into())
        );
        assert_eq!(
            parse_origin("http://[::1]:8080").unwrap(),
            OriginPattern::Exact("http://[::1]:8080".into())
        );
        assert_eq!(
            parse_origin("https://*.shop.example:8443").unwrap(),
            OriginPattern::Subdomains {
                scheme: "https".into(),
                suffix: ".shop.example".into(),
                port: Some(8443)
            }
        );
        for bad in [
            "shop.example",
            "https://shop.example/",
            "https://shop.example/path",
            "https://*",
            "https://shop.*.example",
            "https://*shop.example",
            "https://shop.example:port",
            "https://user@shop.example",
            "://shop.example",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}

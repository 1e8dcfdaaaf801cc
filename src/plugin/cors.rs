//! The CORS plugin: preflights are answered here and never reach a service,
//! and every response to an allowed cross-origin request carries the CORS
//! headers, the gateway's own errors included, since a browser hides from
//! the page any response without them.
//!
//! The gateway owns CORS: a service's own `Access-Control-*` headers are
//! removed, so they are replaced, never duplicated or left to contradict the
//! policy. An origin is allowed only by a whole-origin match (exact, or a
//! subdomain of a listed `*.` domain with the same scheme and port), and
//! `Origin: null` only when `null` is listed.
//!
//! The `cors:` section (global, or a route's own) is validated here into a
//! policy whose header values are built once: only what depends on the
//! request (the echoed origin, reflected request headers) is left for
//! request time.

use std::time::Duration;

use async_trait::async_trait;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderName, HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;
use serde::Deserialize;

use super::{is_preflight, Flow, Plugin};
use crate::context::RequestCtx;
use crate::error::Answer;
use crate::host::subdomain_of;
use crate::yaml::values::{duration, MethodName};
use crate::yaml::Invalid;

/// Cross-origin access, as the `cors` Express middleware does it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCors {
    /// `false` turns CORS handling off (on a route, under a global policy).
    pub enabled: bool,
    /// Exact origins, `*`, `https://*.shop.example`, or `null`.
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<MethodName>,
    /// `["*"]`: allow whatever the preflight asks for.
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub allow_credentials: bool,
    #[serde(with = "duration::option")]
    pub max_age: Option<Duration>,
}

impl Default for RawCors {
    fn default() -> Self {
        RawCors {
            enabled: true,
            allow_origins: vec!["*".into()],
            allow_methods: [
                Method::GET,
                Method::HEAD,
                Method::PUT,
                Method::PATCH,
                Method::POST,
                Method::DELETE,
            ]
            .map(MethodName)
            .to_vec(),
            allow_headers: vec!["*".into()],
            expose_headers: Vec::new(),
            allow_credentials: false,
            max_age: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CorsPolicy {
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

/// A section with `enabled: true`; the caller leaves out the others.
impl TryFrom<RawCors> for CorsPolicy {
    type Error = Invalid;

    fn try_from(raw: RawCors) -> Result<Self, Invalid> {
        let mut allow_null = false;
        let mut any = false;
        let mut patterns = Vec::new();
        for (i, origin) in raw.allow_origins.iter().enumerate() {
            match origin.as_str() {
                "*" => any = true,
                "null" => allow_null = true,
                _ => patterns.push(
                    parse_origin(origin)
                        .map_err(|reason| Invalid::at(format!("allow_origins[{i}]"), reason))?,
                ),
            }
        }
        if any && raw.allow_credentials {
            return Err(Invalid::at(
                "allow_credentials",
                "credentials cannot be allowed for any origin (`*`); list the origins instead",
            ));
        }
        if raw.allow_origins.is_empty() {
            return Err(Invalid::at(
                "allow_origins",
                "list at least one origin, or set enabled: false",
            ));
        }

        let methods: Vec<Method> = raw.allow_methods.into_iter().map(|m| m.0).collect();

        let headers = if raw.allow_headers == ["*"] {
            AllowHeaders::Reflect
        } else {
            AllowHeaders::Listed(header_list("allow_headers", &raw.allow_headers)?)
        };
        let expose_header = match raw.expose_headers.as_slice() {
            [] => None,
            [star] if star == "*" && raw.allow_credentials => {
                return Err(Invalid::at(
                    "expose_headers",
                    "`*` exposes nothing to requests with credentials; list the headers",
                ))
            }
            [star] if star == "*" => Some(HeaderValue::from_static("*")),
            names => Some(header_list("expose_headers", names)?),
        };
        let max_age = raw
            .max_age
            .map(|age| HeaderValue::from(age.as_secs()))
            .filter(|_| raw.max_age != Some(Duration::ZERO));

        Ok(CorsPolicy {
            origins: if any {
                Origins::Any
            } else {
                Origins::Listed(patterns)
            },
            allow_null,
            methods_header: HeaderValue::from_str(&method_names(&methods))
                .expect("validated methods"),
            methods,
            headers,
            expose_header,
            credentials: raw.allow_credentials,
            max_age,
        })
    }
}

/// Header names, checked, joined into one value.
fn header_list(at: &str, names: &[String]) -> Result<HeaderValue, Invalid> {
    for (i, name) in names.iter().enumerate() {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(Invalid::at(
                format!("{at}[{i}]"),
                format!("`{name}` is not a header name"),
            ));
        }
    }
    Ok(HeaderValue::from_str(&names.join(", ")).expect("validated header names"))
}

fn method_names(methods: &[Method]) -> String {
    let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
    names.join(", ")
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

pub struct Cors {
    policy: CorsPolicy,
}

impl Cors {
    pub fn new(policy: CorsPolicy) -> Self {
        Cors { policy }
    }

    /// The `Access-Control-Allow-Origin` value for this request, if its
    /// origin is allowed.
    fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        let origin = origin?;
        if origin.as_bytes() == b"null" {
            return self.policy.allow_null.then(|| origin.clone());
        }
        match &self.policy.origins {
            Origins::Any => Some(HeaderValue::from_static("*")),
            Origins::Listed(patterns) => {
                let text = origin.to_str().ok()?;
                patterns
                    .iter()
                    .any(|p| origin_matches(p, text))
                    .then(|| origin.clone())
            }
        }
    }

    fn preflight_headers(&self, req: &RequestHeader, resp: &mut ResponseHeader) -> Result<()> {
        resp.insert_header(
            ACCESS_CONTROL_ALLOW_METHODS,
            self.policy.methods_header.clone(),
        )?;
        match &self.policy.headers {
            AllowHeaders::Listed(list) => {
                resp.insert_header(ACCESS_CONTROL_ALLOW_HEADERS, list.clone())?;
            }
            AllowHeaders::Reflect => {
                resp.append_header(VARY, "Access-Control-Request-Headers")?;
                if let Some(asked) = req.headers.get(ACCESS_CONTROL_REQUEST_HEADERS) {
                    resp.insert_header(ACCESS_CONTROL_ALLOW_HEADERS, asked.clone())?;
                }
            }
        }
        if let Some(max_age) = &self.policy.max_age {
            resp.insert_header(ACCESS_CONTROL_MAX_AGE, max_age.clone())?;
        }
        Ok(())
    }
}

#[async_trait]
impl Plugin for Cors {
    fn name(&self) -> &'static str {
        "cors"
    }

    async fn request(&self, req: &RequestHeader, _ctx: &mut RequestCtx) -> Flow {
        if is_preflight(req) {
            Flow::Respond(Answer::Preflight)
        } else {
            Flow::Continue
        }
    }

    fn response(
        &self,
        req: &RequestHeader,
        resp: &mut ResponseHeader,
        _ctx: &RequestCtx,
    ) -> Result<()> {
        remove_cors_headers(resp);
        if !matches!(self.policy.origins, Origins::Any) {
            resp.append_header(VARY, "Origin")?;
        }
        let Some(allow_origin) = self.allow_origin(req.headers.get(ORIGIN)) else {
            return Ok(());
        };
        // This plugin answers every preflight itself, so a preflight here
        // is that answer.
        let preflight = is_preflight(req);
        if preflight && !self.method_allowed(req) {
            return Ok(());
        }
        resp.insert_header(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin)?;
        if self.policy.credentials {
            resp.insert_header(ACCESS_CONTROL_ALLOW_CREDENTIALS, "true")?;
        }
        if preflight {
            self.preflight_headers(req, resp)?;
        } else if let Some(expose) = &self.policy.expose_header {
            resp.insert_header(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone())?;
        }
        Ok(())
    }
}

impl Cors {
    fn method_allowed(&self, req: &RequestHeader) -> bool {
        req.headers
            .get(ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .is_some_and(|m| self.policy.methods.contains(&m))
    }
}

fn remove_cors_headers(resp: &mut ResponseHeader) {
    let theirs: Vec<HeaderName> = resp
        .headers
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in theirs {
        resp.remove_header(&name);
    }
}

/// Whole-origin matching: never a substring, so `https://shop.example` does
/// not allow `https://shop.example.evil` and `*.shop.example` does not allow
/// `https://evilshop.example`.
fn origin_matches(pattern: &OriginPattern, origin: &str) -> bool {
    match pattern {
        OriginPattern::Exact(allowed) => allowed.eq_ignore_ascii_case(origin),
        OriginPattern::Subdomains {
            scheme,
            suffix,
            port,
        } => {
            let Some((their_scheme, rest)) = origin.split_once("://") else {
                return false;
            };
            let (host, their_port) = match rest.split_once(':') {
                Some((host, p)) => match p.parse::<u16>() {
                    Ok(p) => (host, Some(p)),
                    Err(_) => return false,
                },
                None => (rest, None),
            };
            let Some(sub) = subdomain_of(host, suffix) else {
                return false;
            };
            their_scheme.eq_ignore_ascii_case(scheme)
                && their_port == *port
                && sub.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy(origins: Origins, credentials: bool) -> Cors {
        Cors::new(CorsPolicy {
            origins,
            allow_null: false,
            methods: vec![Method::GET, Method::POST],
            methods_header: HeaderValue::from_static("GET, POST"),
            headers: AllowHeaders::Reflect,
            expose_header: Some(HeaderValue::from_static("X-Request-Id")),
            credentials,
            max_age: Some(HeaderValue::from(Duration::from_secs(600).as_secs())),
        })
    }

    fn request(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build(method, b"/x", None).unwrap();
        for (name, value) in headers {
            req.insert_header(name.to_string(), *value).unwrap();
        }
        req
    }

    /// The response headers the plugin leaves on a 200 from a service that
    /// set its own `Access-Control-Allow-Origin: *`.
    fn answer(cors: &Cors, req: &RequestHeader) -> Vec<(String, String)> {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("access-control-allow-origin", "*")
            .unwrap();
        cors.response(req, &mut resp, &RequestCtx::default())
            .unwrap();
        let mut headers: Vec<(String, String)> = resp
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        headers.sort();
        headers
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn listed_origins_are_echoed_with_vary_and_credentials() {
        let cors = policy(
            Origins::Listed(vec![OriginPattern::Exact("https://shop.example".into())]),
            true,
        );
        let req = request("GET", &[("origin", "https://shop.example")]);
        assert_eq!(
            answer(&cors, &req),
            pairs(&[
                ("access-control-allow-credentials", "true"),
                ("access-control-allow-origin", "https://shop.example"),
                ("access-control-expose-headers", "X-Request-Id"),
                ("vary", "Origin"),
            ])
        );
        let stranger = request("GET", &[("origin", "https://evil.example")]);
        assert_eq!(answer(&cors, &stranger), pairs(&[("vary", "Origin")]));
        assert_eq!(
            answer(&cors, &request("GET", &[])),
            pairs(&[("vary", "Origin")])
        );
    }

    #[test]
    fn any_origin_is_a_star_without_vary_but_not_for_null() {
        let cors = policy(Origins::Any, false);
        let req = request("GET", &[("origin", "https://anyone.example")]);
        assert_eq!(
            answer(&cors, &req),
            pairs(&[
                ("access-control-allow-origin", "*"),
                ("access-control-expose-headers", "X-Request-Id"),
            ])
        );
        assert_eq!(answer(&cors, &request("GET", &[("origin", "null")])), []);
    }

    #[test]
    fn preflights_get_methods_reflected_headers_and_max_age_only_when_allowed() {
        let cors = policy(Origins::Any, false);
        let asked = |method: &str| {
            request(
                "OPTIONS",
                &[
                    ("origin", "https://shop.example"),
                    ("access-control-request-method", method),
                    ("access-control-request-headers", "authorization"),
                ],
            )
        };
        assert!(is_preflight(&asked("POST")));
        assert_eq!(
            answer(&cors, &asked("POST")),
            pairs(&[
                ("access-control-allow-headers", "authorization"),
                ("access-control-allow-methods", "GET, POST"),
                ("access-control-allow-origin", "*"),
                ("access-control-max-age", "600"),
                ("vary", "Access-Control-Request-Headers"),
            ])
        );
        assert_eq!(answer(&cors, &asked("DELETE")), []);
        assert!(!is_preflight(&request(
            "OPTIONS",
            &[("origin", "https://a.example")]
        )));
    }

    fn sub(scheme: &str, suffix: &str, port: Option<u16>) -> OriginPattern {
        OriginPattern::Subdomains {
            scheme: scheme.into(),
            suffix: suffix.into(),
            port,
        }
    }

    #[test]
    fn origins_match_whole_never_as_substrings() {
        let exact = OriginPattern::Exact("https://shop.example".into());
        assert!(origin_matches(&exact, "https://shop.example"));
        assert!(origin_matches(&exact, "https://SHOP.example"));
        assert!(!origin_matches(&exact, "https://shop.example.evil"));
        assert!(!origin_matches(&exact, "https://evilshop.example"));
        assert!(!origin_matches(&exact, "http://shop.example"));
        assert!(!origin_matches(&exact, "https://shop.example:8443"));

        let wild = sub("https", ".shop.example", None);
        assert!(origin_matches(&wild, "https://eu.shop.example"));
        assert!(origin_matches(&wild, "https://a.b.shop.example"));
        assert!(!origin_matches(&wild, "https://shop.example"));
        assert!(!origin_matches(&wild, "https://evilshop.example"));
        assert!(!origin_matches(&wild, "https://eu.shop.example.evil"));
        assert!(!origin_matches(&wild, "http://eu.shop.example"));
        assert!(!origin_matches(&wild, "https://eu.shop.example:444"));
        assert!(!origin_matches(&wild, "https://.shop.example"));
        assert!(!origin_matches(&wild, "https://x/y.shop.example"));

        let with_port = sub("http", ".localhost", Some(5173));
        assert!(origin_matches(&with_port, "http://app.localhost:5173"));
        assert!(!origin_matches(&with_port, "http://app.localhost"));
    }

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

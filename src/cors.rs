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

use async_trait::async_trait;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderName, HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;

use crate::config::{AllowHeaders, CorsSettings, OriginPattern, Origins};
use crate::context::RequestCtx;
use crate::error::Answer;
use crate::plugin::{Flow, Plugin};

pub struct Cors {
    policy: CorsSettings,
}

impl Cors {
    pub fn new(policy: CorsSettings) -> Self {
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

pub fn is_preflight(req: &RequestHeader) -> bool {
    req.method == Method::OPTIONS
        && req.headers.contains_key(ORIGIN)
        && req.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
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
            let Some(sub) = host
                .len()
                .checked_sub(suffix.len())
                .filter(|&at| host.is_char_boundary(at))
                .filter(|&at| host[at..].eq_ignore_ascii_case(suffix))
                .map(|at| &host[..at])
            else {
                return false;
            };
            their_scheme.eq_ignore_ascii_case(scheme)
                && their_port == *port
                && !sub.is_empty()
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
        Cors::new(CorsSettings {
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
}

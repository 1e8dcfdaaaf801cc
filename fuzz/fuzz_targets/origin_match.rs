//! Origin matching: the CORS plugin's `allow_origins` patterns against a
//! request's `Origin` (`api_gateway::plugin::cors`), and route host
//! patterns against a `Host` (`api_gateway::host`), which share the
//! subdomain test.
//!
//! The input is text: every line but the last is a pattern, the last line
//! is what the request sends. The patterns go through the plugin's own
//! config validation; a set it refuses is not fuzzed further.
//!
//! Beyond "no panic": the plugin allows exactly what a plain reading of the
//! patterns allows (compared with a model written here, independently of
//! the plugin's code), and answers a preflight for an allowed method with
//! the same origin as the request itself.

#![no_main]

use api_gateway::context::RequestCtx;
use api_gateway::host::{strip_port, HostPattern};
use api_gateway::plugin::cors::{Cors, CorsPolicy, RawCors};
use api_gateway::plugin::Plugin;
use http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN};
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use pingora_http::{RequestHeader, ResponseHeader};

fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The model: `*` allows any origin but `null`, `null` allows `null`,
/// `scheme://*.domain[:port]` any origin of that scheme and port whose host
/// is one or more labels in front of `.domain`, anything else exactly that
/// origin, case aside.
fn model_allows(patterns: &[String], origin: &str) -> bool {
    if origin == "null" {
        return patterns.iter().any(|p| p == "null");
    }
    patterns.iter().any(|pattern| {
        match pattern.as_str() {
            "*" => return true,
            // The opaque origin is spelled exactly so; `NULL` is no host.
            "null" => return false,
            _ => {}
        }
        let pattern = pattern.to_ascii_lowercase();
        let origin = origin.to_ascii_lowercase();
        let Some((scheme, wild)) = pattern.split_once("://*.") else {
            return pattern == origin;
        };
        let (domain, port) = match wild.rsplit_once(':') {
            Some((domain, port)) => (domain, port.parse::<u16>().ok()),
            None => (wild, None),
        };
        let Some(rest) = origin.strip_prefix(&format!("{scheme}://")) else {
            return false;
        };
        let (host, their_port) = match rest.rsplit_once(':') {
            Some((host, p)) => match p.parse::<u16>() {
                Ok(p) => (host, Some(p)),
                Err(_) => return false,
            },
            None => (rest, None),
        };
        let Some(sub) = host.strip_suffix(&format!(".{domain}")) else {
            return false;
        };
        their_port == port && sub.split('.').all(is_label)
    })
}

fn allow_origin(cors: &Cors, req: &RequestHeader) -> Option<HeaderValue> {
    let mut resp = ResponseHeader::build(200, None).unwrap();
    cors.response(req, &mut resp, &RequestCtx::default())
        .expect("the plugin's headers are valid");
    resp.headers.get(ACCESS_CONTROL_ALLOW_ORIGIN).cloned()
}

fn check_hosts(patterns: &[String], host: &str) {
    let host = strip_port(host);
    for text in patterns {
        let Ok(pattern) = HostPattern::parse(text) else {
            continue;
        };
        // What the config shows is what it reads back as.
        assert_eq!(
            HostPattern::parse(&pattern.to_string()),
            Ok(pattern.clone())
        );
        let matched = pattern.matches(host);
        let expected = match text.strip_prefix("*.") {
            Some(domain) => {
                let host = host.to_ascii_lowercase();
                let suffix = format!(".{}", domain.to_ascii_lowercase());
                host.len() > suffix.len() && host.ends_with(&suffix)
            }
            None => text.eq_ignore_ascii_case(host),
        };
        assert_eq!(matched, expected, "{text:?} for host {host:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines: Vec<&str> = text.split('\n').collect();
    let Some(sent) = lines.pop() else {
        return;
    };
    let patterns: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    check_hosts(&patterns, sent);

    let raw = RawCors {
        allow_origins: patterns.clone(),
        ..RawCors::default()
    };
    let Ok(policy) = CorsPolicy::try_from(raw) else {
        return;
    };
    let cors = Cors::new(policy);
    let Ok(origin) = HeaderValue::from_str(sent) else {
        return;
    };

    let mut req = RequestHeader::build("GET", b"/", None).unwrap();
    req.insert_header(ORIGIN, origin.clone()).unwrap();
    let allowed = allow_origin(&cors, &req);
    let any = patterns.iter().any(|p| p == "*");
    let expected = model_allows(&patterns, sent).then(|| {
        if any && sent != "null" {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    });
    assert_eq!(allowed, expected, "origin {sent:?} for {patterns:?}");

    let mut preflight = RequestHeader::build("OPTIONS", b"/", None).unwrap();
    preflight.insert_header(ORIGIN, origin).unwrap();
    preflight
        .insert_header(ACCESS_CONTROL_REQUEST_METHOD, "GET")
        .unwrap();
    assert_eq!(allow_origin(&cors, &preflight), allowed, "preflight");
});

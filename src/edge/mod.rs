//! The edge: what the gateway does about a client before a request gets a
//! route. `check_head` holds each request head to the `client` limits, so
//! that an oversized head is answered (414 or 431) and never forwarded;
//! `connections` counts and caps each listener's connections and sets the
//! wait for a new connection's first head (the proxy sets the body and
//! keep-alive waits on each request).
//!
//! Pingora's own parser sits in front of both: it refuses heads over 1 MiB
//! or with more than 256 fields, and malformed ones (a space before a
//! colon, obs-fold), with a plain 400 that no phase of the gateway sees.

pub mod connections;

use pingora::http::RequestHeader;

use crate::config::HeadLimits;
use crate::error::GatewayError;

/// `": "` and CRLF around each field; a space twice and CRLF around the
/// request line.
const FIELD_OVERHEAD: usize = 4;
const REQUEST_LINE_OVERHEAD: usize = 4;
/// `HTTP/1.1`.
const VERSION_LENGTH: usize = 8;

/// Whether `req` is within `limits`: the request-target and each field no
/// longer than `max_line`, at most `max_fields` fields, and the head as
/// sent on HTTP/1.1 no bigger than `max_size`.
pub fn check_head(req: &RequestHeader, limits: &HeadLimits) -> Result<(), GatewayError> {
    let target = req.raw_path().len();
    if target > limits.max_line {
        return Err(GatewayError::UriTooLong);
    }
    if req.headers.len() > limits.max_fields {
        return Err(GatewayError::HeadersTooLarge);
    }
    let mut size = req.method.as_str().len() + target + VERSION_LENGTH + REQUEST_LINE_OVERHEAD;
    for (name, value) in &req.headers {
        let field = name.as_str().len() + value.len() + FIELD_OVERHEAD;
        // The limit counts a field as its line, without the CRLF.
        if field - 2 > limits.max_line {
            return Err(GatewayError::HeadersTooLarge);
        }
        size += field;
    }
    if size > limits.max_size {
        return Err(GatewayError::HeadersTooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_size: 200,
        max_line: 60,
        max_fields: 4,
    };

    fn request(target: &str, fields: &[(&str, String)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        for (name, value) in fields {
            req.append_header(name.to_string(), value.as_str()).unwrap();
        }
        req
    }

    #[test]
    fn a_head_within_the_limits_passes() {
        let req = request("/users/me", &[("host", "shop.example".into())]);
        assert_eq!(check_head(&req, &LIMITS), Ok(()));
    }

    #[test]
    fn a_long_target_is_414() {
        let long = format!("/{}", "a".repeat(60));
        assert_eq!(
            check_head(&request(&long, &[]), &LIMITS),
            Err(GatewayError::UriTooLong)
        );
        let exact = format!("/{}", "a".repeat(59));
        assert_eq!(check_head(&request(&exact, &[]), &LIMITS), Ok(()));
    }

    #[test]
    fn a_long_field_is_431_at_one_byte_over() {
        // "x-a: " + value: a line of exactly 60 bytes passes, 61 does not.
        let fits = request("/", &[("x-a", "v".repeat(55))]);
        assert_eq!(check_head(&fits, &LIMITS), Ok(()));
        let over = request("/", &[("x-a", "v".repeat(56))]);
        assert_eq!(
            check_head(&over, &LIMITS),
            Err(GatewayError::HeadersTooLarge)
        );
    }

    #[test]
    fn too_many_fields_or_too_big_a_head_is_431() {
        let five: Vec<(&str, String)> = (0..5).map(|_| ("x-a", "1".to_string())).collect();
        assert_eq!(
            check_head(&request("/", &five), &LIMITS),
            Err(GatewayError::HeadersTooLarge)
        );
        // Four fields of 50 bytes each: every line fits, the head does not.
        let four: Vec<(&str, String)> = (0..4).map(|_| ("x-a", "v".repeat(45))).collect();
        assert_eq!(
            check_head(&request("/", &four), &LIMITS),
            Err(GatewayError::HeadersTooLarge)
        );
    }
}

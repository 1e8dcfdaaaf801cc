//! The answers the gateway gives itself instead of an upstream's, and how a
//! Pingora error maps onto them.
//!
//! Every such answer is JSON, `{"error": "...", "request_id": "..."}`, so a
//! client can always parse it and quote the id to whoever reads the logs.

use http::HeaderValue;
use pingora::{Error, ErrorSource, ErrorType};

/// A response the gateway writes without asking an upstream.
pub enum Answer {
    /// `GET /`: the seed's liveness text.
    Running,
    /// `GET /healthz`.
    Healthy,
    /// An allowed CORS preflight: 204, headers added by the CORS plugin.
    Preflight,
    /// A plain-HTTP request on a `redirect_to_https` listener: 308 to here.
    Redirect(String),
    Error(GatewayError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    BadRequest(String),
    /// A route that requires a token got none.
    MissingToken,
    /// The token failed verification; the reason names the check, never a
    /// key or the token itself.
    InvalidToken(&'static str),
    /// A valid token without the scope, role or claim the route requires.
    InsufficientScope,
    /// Over the rate limit; seconds until the next request is allowed.
    TooManyRequests(u64),
    NotFound,
    PayloadTooLarge,
    /// The client sent no more of its body for `client.body_timeout`.
    RequestTimeout,
    /// The request-target is longer than `client.max_header_line`.
    UriTooLong,
    /// A header field, their number or the whole head is over the
    /// `client` limits.
    HeadersTooLarge,
    /// No instance of the upstream could be reached.
    BadGateway,
    /// The upstream has `max_in_flight` requests already.
    Overloaded,
    /// The upstream took longer than its read or write timeout.
    GatewayTimeout,
    Internal,
}

impl GatewayError {
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::BadRequest(_) => 400,
            GatewayError::MissingToken | GatewayError::InvalidToken(_) => 401,
            GatewayError::InsufficientScope => 403,
            GatewayError::TooManyRequests(_) => 429,
            GatewayError::NotFound => 404,
            GatewayError::PayloadTooLarge => 413,
            GatewayError::RequestTimeout => 408,
            GatewayError::UriTooLong => 414,
            GatewayError::HeadersTooLarge => 431,
            GatewayError::BadGateway => 502,
            GatewayError::Overloaded => 503,
            GatewayError::GatewayTimeout => 504,
            GatewayError::Internal => 500,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            GatewayError::BadRequest(reason) => reason,
            GatewayError::MissingToken => "Missing token",
            GatewayError::InvalidToken(_) => "Invalid token",
            GatewayError::InsufficientScope => "Insufficient scope",
            GatewayError::TooManyRequests(_) => "Too many requests",
            GatewayError::NotFound => "Not found",
            GatewayError::PayloadTooLarge => "Request body too large",
            GatewayError::RequestTimeout => "Request timeout",
            GatewayError::UriTooLong => "URI too long",
            GatewayError::HeadersTooLarge => "Request header fields too large",
            GatewayError::BadGateway => "Upstream unavailable",
            GatewayError::Overloaded => "Upstream busy",
            GatewayError::GatewayTimeout => "Upstream timed out",
            GatewayError::Internal => "Internal gateway error",
        }
    }

    pub fn json_body(&self, request_id: &str) -> String {
        let mut body = serde_json::json!({ "error": self.message(), "request_id": request_id });
        if let GatewayError::InvalidToken(reason) = self {
            body["reason"] = (*reason).into();
        }
        body.to_string()
    }

    /// The header the status calls for: the challenge RFC 6750 asks for on
    /// 401 and 403 answers to bearer token requests, `Retry-After` on 429.
    pub fn extra_header(&self) -> Option<(&'static str, HeaderValue)> {
        match self {
            GatewayError::MissingToken | GatewayError::InvalidToken(_) => Some((
                "www-authenticate",
                HeaderValue::from_static(r#"Bearer realm="api-gateway", error="invalid_token""#),
            )),
            GatewayError::InsufficientScope => Some((
                "www-authenticate",
                HeaderValue::from_static(
                    r#"Bearer realm="api-gateway", error="insufficient_scope""#,
                ),
            )),
            GatewayError::TooManyRequests(seconds) => {
                Some(("retry-after", HeaderValue::from(*seconds)))
            }
            GatewayError::Overloaded => Some(("retry-after", HeaderValue::from_static("1"))),
            _ => None,
        }
    }

    /// Which answer a failed proxy attempt gets; `None` when the client is
    /// gone and nobody is left to answer.
    pub fn from_proxy_error(e: &Error) -> Option<GatewayError> {
        use ErrorType::*;
        if let HTTPStatus(code) = e.etype() {
            return Some(match code {
                400 => GatewayError::BadRequest("Bad request".into()),
                413 => GatewayError::PayloadTooLarge,
                504 => GatewayError::GatewayTimeout,
                _ => GatewayError::BadGateway,
            });
        }
        match e.esource() {
            ErrorSource::Upstream => Some(match e.etype() {
                ReadTimedout | WriteTimedout => GatewayError::GatewayTimeout,
                _ => GatewayError::BadGateway,
            }),
            ErrorSource::Downstream => match e.etype() {
                WriteError | ReadError | ConnectionClosed | WriteTimedout => None,
                // The client stopped sending its body: it may still read.
                ReadTimedout => Some(GatewayError::RequestTimeout),
                _ => Some(GatewayError::BadRequest("Malformed request".into())),
            },
            ErrorSource::Internal | ErrorSource::Unset => Some(GatewayError::Internal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(etype: ErrorType) -> Box<Error> {
        let mut e = Error::new(etype);
        e.as_up();
        e
    }

    #[test]
    fn proxy_errors_map_to_gateway_answers() {
        let cases = [
            (upstream(ErrorType::ConnectRefused), Some(502)),
            (upstream(ErrorType::ConnectTimedout), Some(502)),
            (upstream(ErrorType::ReadTimedout), Some(504)),
            (upstream(ErrorType::WriteTimedout), Some(504)),
            (upstream(ErrorType::InvalidHTTPHeader), Some(502)),
            (Error::new(ErrorType::HTTPStatus(413)), Some(413)),
            (Error::new(ErrorType::InternalError), Some(500)),
        ];
        for (e, status) in cases {
            assert_eq!(
                GatewayError::from_proxy_error(&e).map(|g| g.status()),
                status,
                "{e}"
            );
        }
        let mut gone = Error::new(ErrorType::ConnectionClosed);
        gone.as_down();
        assert_eq!(GatewayError::from_proxy_error(&gone), None);
        let mut stalled = Error::new(ErrorType::ReadTimedout);
        stalled.as_down();
        assert_eq!(
            GatewayError::from_proxy_error(&stalled),
            Some(GatewayError::RequestTimeout)
        );
    }

    #[test]
    fn bodies_are_json_with_the_request_id() {
        let body: serde_json::Value =
            serde_json::from_str(&GatewayError::NotFound.json_body("id-1")).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "Not found", "request_id": "id-1"})
        );
        let body: serde_json::Value =
            serde_json::from_str(&GatewayError::InvalidToken("expired").json_body("id-2")).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "Invalid token", "reason": "expired", "request_id": "id-2"})
        );
    }
}

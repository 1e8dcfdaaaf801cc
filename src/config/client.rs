//! The `client:` section: how long the gateway waits on a client, and how
//! big a request head may be. The defaults are in the range NGINX and Envoy
//! ship with, so that one client cannot hold a connection open for nothing
//! or have a huge head forwarded to a service.

use std::time::Duration;

use serde::Deserialize;

use crate::yaml::values::{duration, ByteSize};
use crate::yaml::Invalid;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawClient {
    /// The wait for each read of a new connection's first request head.
    #[serde(with = "duration")]
    pub header_timeout: Duration,
    /// How long a kept-alive connection may sit idle between requests.
    #[serde(with = "duration")]
    pub keepalive_timeout: Duration,
    /// The wait for each read of a request body.
    #[serde(with = "duration")]
    pub body_timeout: Duration,
    /// The request head as a whole: request line and header fields.
    pub max_header_size: ByteSize,
    /// One header field (name and value), and the request-target.
    pub max_header_line: ByteSize,
    /// Header fields in one request.
    pub max_headers: usize,
}

impl Default for RawClient {
    fn default() -> Self {
        RawClient {
            header_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            // NGINX allows 4 buffers of 8 KiB (32 KiB), a line of at most
            // one buffer; Envoy 60 KiB and 100 fields.
            max_header_size: ByteSize(32 << 10),
            max_header_line: ByteSize(8 << 10),
            max_headers: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    pub header_timeout: Duration,
    /// Whole seconds: what Pingora's keep-alive takes.
    pub keepalive_timeout_secs: u64,
    pub body_timeout: Duration,
    pub limits: HeadLimits,
}

/// What a request head may hold; see `edge::check_head`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    pub max_size: usize,
    pub max_line: usize,
    pub max_fields: usize,
}

/// Pingora's HTTP/1 parser refuses more than 256 fields (with a plain 400)
/// and heads over 1 MiB before the gateway sees them.
const PINGORA_MAX_FIELDS: usize = 256;
const PINGORA_MAX_HEAD: u64 = 1 << 20;

impl TryFrom<RawClient> for ClientSettings {
    type Error = Invalid;

    fn try_from(raw: RawClient) -> Result<Self, Invalid> {
        let positive = |key: &str, d: Duration| {
            if d.is_zero() {
                Err(Invalid::at(key, "must be more than 0"))
            } else {
                Ok(d)
            }
        };
        let header_timeout = positive("header_timeout", raw.header_timeout)?;
        let body_timeout = positive("body_timeout", raw.body_timeout)?;
        let keepalive = positive("keepalive_timeout", raw.keepalive_timeout)?;
        if keepalive.subsec_nanos() != 0 {
            return Err(Invalid::at(
                "keepalive_timeout",
                "must be whole seconds (e.g. 75s)",
            ));
        }
        if !(1..=PINGORA_MAX_FIELDS).contains(&raw.max_headers) {
            return Err(Invalid::at(
                "max_headers",
                format!("must be 1 to {PINGORA_MAX_FIELDS}"),
            ));
        }
        let size = |key: &str, ByteSize(n): ByteSize| {
            if (1..=PINGORA_MAX_HEAD).contains(&n) {
                Ok(n as usize)
            } else {
                Err(Invalid::at(key, "must be 1 byte to 1 MiB"))
            }
        };
        let max_size = size("max_header_size", raw.max_header_size)?;
        let max_line = size("max_header_line", raw.max_header_line)?;
        if max_line > max_size {
            return Err(Invalid::at(
                "max_header_line",
                "must not be more than max_header_size",
            ));
        }
        Ok(ClientSettings {
            header_timeout,
            keepalive_timeout_secs: keepalive.as_secs(),
            body_timeout,
            limits: HeadLimits {
                max_size,
                max_line,
                max_fields: raw.max_headers,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{assert_errors, parsed, BASE};

    #[test]
    fn defaults_are_nginx_like() {
        let c = parsed(BASE).routing.client;
        assert_eq!(c.header_timeout, Duration::from_secs(30));
        assert_eq!(c.keepalive_timeout_secs, 60);
        assert_eq!(c.body_timeout, Duration::from_secs(60));
        assert_eq!(
            c.limits,
            HeadLimits {
                max_size: 32 << 10,
                max_line: 8 << 10,
                max_fields: 100
            }
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: Vec<(String, &str)> = [
            ("{max_headers: 0}", "client.max_headers: must be 1 to 256"),
            ("{max_headers: 300}", "client.max_headers: must be 1 to 256"),
            (
                "{max_header_size: 2MiB}",
                "client.max_header_size: must be 1 byte to 1 MiB",
            ),
            (
                "{max_header_size: 4KiB, max_header_line: 8KiB}",
                "client.max_header_line: must not be more than max_header_size",
            ),
            (
                "{keepalive_timeout: 1500ms}",
                "client.keepalive_timeout: must be whole seconds",
            ),
            (
                "{body_timeout: 0s}",
                "client.body_timeout: must be more than 0",
            ),
            ("{header_timout: 5s}", "unknown field `header_timout`"),
        ]
        .into_iter()
        .map(|(section, expected)| (format!("{BASE}client: {section}\n"), expected))
        .collect();
        assert_errors(&cases);
    }
}

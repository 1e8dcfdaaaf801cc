//! What one request has learned so far, handed from phase to phase and to
//! the plugins, and the summary of it once its response is done.
//!
//! Nothing here belongs to one plugin: a plugin records what the others or
//! the core may use in neutral terms (the verified claims, headers for the
//! answer, a refusal), so a new plugin needs no field of its own.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Uri};

use crate::jwt::Claims;

pub struct RequestCtx {
    pub started: Instant,
    pub request_id: String,
    pub peer: Option<IpAddr>,
    /// The port of the listener the request came in on.
    pub local_port: Option<u16>,
    pub client_ip: Option<IpAddr>,
    /// The Host the client asked for, without changes.
    pub client_host: Option<String>,
    /// The normalized request path, which routing and plugins decide on.
    pub path: String,
    /// What the upstream is asked for: the rewritten path and the
    /// untouched query, built once the route is known and taken by the
    /// first attempt.
    pub upstream_uri: Option<Uri>,
    /// The claims of a verified token, when a plugin checked one: claim
    /// headers and rate limits by claim read them.
    pub claims: Option<Arc<Claims>>,
    /// Headers a plugin decided on while admitting the request, for the
    /// answer it gets (the upstream's or the gateway's own).
    pub response_headers: Vec<(&'static str, HeaderValue)>,
    /// Which plugin refused the request, and why.
    pub refusal: Option<Refusal>,
    pub body_bytes: u64,
    pub attempts: u8,
    /// For the metrics: counted in `gateway_requests_in_flight`.
    pub in_flight: bool,
    pub connect_failures: u8,
    pub timed_out: bool,
    /// The instance of the latest attempt.
    pub upstream_addr: Option<SocketAddr>,
}

/// A plugin's refusal, as metrics and logs label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub plugin: &'static str,
    pub reason: &'static str,
}

impl Default for RequestCtx {
    fn default() -> Self {
        RequestCtx {
            started: Instant::now(),
            request_id: String::new(),
            peer: None,
            local_port: None,
            client_ip: None,
            client_host: None,
            path: String::new(),
            upstream_uri: None,
            claims: None,
            response_headers: Vec::new(),
            refusal: None,
            body_bytes: 0,
            attempts: 0,
            in_flight: false,
            connect_failures: 0,
            timed_out: false,
            upstream_addr: None,
        }
    }
}

/// A request whose response is done, as the metrics and the plugins
/// observe it.
pub struct Finished<'a> {
    /// The route's name; `none` when no route matched.
    pub route: &'a str,
    pub upstream: Option<&'a str>,
    pub method: &'a str,
    /// 0 when nothing was answered; 499 when the client left first.
    pub status: u16,
    pub duration: Duration,
    pub ctx: &'a RequestCtx,
}

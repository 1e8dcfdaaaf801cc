//! What one request has learned so far, handed from phase to phase and to
//! the plugins.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::config::InstanceUrl;
use crate::jwt::Claims;
use crate::rate_limit::Decision;

pub struct RequestCtx {
    pub started: Instant,
    pub request_id: String,
    pub peer: Option<IpAddr>,
    /// The port of the listener the request came in on.
    pub local_port: Option<u16>,
    pub client_ip: Option<IpAddr>,
    /// The Host the client asked for, without changes.
    pub client_host: Option<String>,
    /// The normalized request path, which routing and auth decide on.
    pub path: String,
    /// Index of the route in config order.
    pub route: Option<usize>,
    /// Normalized, rewritten path plus the untouched query.
    pub upstream_uri: String,
    /// The verified token's claims, when the route's auth checked one.
    pub claims: Option<Arc<Claims>>,
    /// The rate limiter's verdict, for the `RateLimit-*` headers.
    pub rate_limit: Option<Decision>,
    pub body_bytes: u64,
    pub attempts: u8,
    /// For the metrics: counted in `gateway_requests_in_flight`.
    pub in_flight: bool,
    pub connect_failures: u8,
    pub timed_out: bool,
    /// The auth plugin's refusal, as a metric label.
    pub jwt_rejection: Option<&'static str>,
    pub upstream_addr: Option<SocketAddr>,
    pub failed_addr: Option<SocketAddr>,
    pub instance: Option<Arc<InstanceUrl>>,
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
            route: None,
            upstream_uri: String::new(),
            claims: None,
            rate_limit: None,
            body_bytes: 0,
            attempts: 0,
            in_flight: false,
            connect_failures: 0,
            timed_out: false,
            jwt_rejection: None,
            upstream_addr: None,
            failed_addr: None,
            instance: None,
        }
    }
}

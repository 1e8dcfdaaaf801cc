//! The shape every per-request feature plugs in with: a request hook that
//! lets the request go on, answers it, or refuses it; hooks that adjust what
//! goes upstream and what comes back; and one that sees the finished
//! request.
//!
//! The core (`proxy.rs`) runs a route's chain without knowing which plugins
//! are in it. Each plugin lives in its own file or folder here with its
//! config section, its conversion into a validated policy, its code and its
//! tests; `chain.rs` is the one place that names them all. A plugin keeps
//! its state (keys, budgets) in its own struct, and what it learns about one
//! request in the neutral fields of the `RequestCtx` (the verified claims,
//! headers for the answer, a refusal).

pub mod chain;
pub mod cors;
pub mod jwt_auth;
pub mod rate_limit;

use async_trait::async_trait;
use http::header::{ACCESS_CONTROL_REQUEST_METHOD, ORIGIN};
use http::Method;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;

use crate::context::{Finished, RequestCtx};
use crate::error::{Answer, GatewayError};

pub enum Flow {
    Continue,
    /// Answer now, as a success (a CORS preflight); nothing reaches the
    /// upstream.
    Respond(Answer),
    /// Refuse the request with `error`. `reason` is a short stable label
    /// (`missing_token`, `over_limit`) that metrics, logs and traces record
    /// next to the plugin's name.
    Refuse {
        reason: &'static str,
        error: GatewayError,
    },
}

#[async_trait]
pub trait Plugin: Send + Sync {
    /// A short stable name: the `plugin` label of its refusals.
    fn name(&self) -> &'static str;

    /// Runs once the route is known, in chain order; the first answer or
    /// refusal ends the chain.
    async fn request(&self, req: &RequestHeader, ctx: &mut RequestCtx) -> Flow;

    /// Adjusts the request the upstream receives.
    fn upstream_request(&self, _req: &mut RequestHeader, _ctx: &RequestCtx) -> Result<()> {
        Ok(())
    }

    /// Adjusts every response: the upstream's and the gateway's own, even
    /// when the request hooks never ran (a malformed request).
    fn response(
        &self,
        _req: &RequestHeader,
        _resp: &mut ResponseHeader,
        _ctx: &RequestCtx,
    ) -> Result<()> {
        Ok(())
    }

    /// Sees every request of its chain once it is done, whoever answered
    /// it: per-plugin metrics, traces.
    fn finished(&self, _done: &Finished) {}
}

/// One route's plugins, in the order they run.
pub type Chain = Vec<Box<dyn Plugin>>;

/// A CORS preflight: the `OPTIONS` a browser sends, with its `Origin`,
/// before a cross-origin call it may not make unasked. It never carries
/// credentials, so no plugin may demand them of it; one predicate for all.
pub fn is_preflight(req: &RequestHeader) -> bool {
    req.method == Method::OPTIONS
        && req.headers.contains_key(ORIGIN)
        && req.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, headers: &[&str]) -> RequestHeader {
        let mut req = RequestHeader::build(method, b"/x", None).unwrap();
        for name in headers {
            req.insert_header(name.to_string(), "x").unwrap();
        }
        req
    }

    #[test]
    fn a_preflight_has_an_origin_and_asks_for_a_method() {
        let both = ["origin", "access-control-request-method"];
        assert!(is_preflight(&request("OPTIONS", &both)));
        assert!(!is_preflight(&request("GET", &both)));
        assert!(!is_preflight(&request("OPTIONS", &["origin"])));
        assert!(!is_preflight(&request(
            "OPTIONS",
            &["access-control-request-method"]
        )));
    }
}

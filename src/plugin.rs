//! The shape every per-request feature plugs in with (CORS, auth, rate
//! limiting): a request hook that lets the request go on or
//! answers it, and hooks that adjust what goes upstream and what comes back.
//!
//! Each route gets its own chain, built once at startup from the route's
//! `PluginConfig` list; a plugin keeps its state (keys, budgets) in its own
//! struct, and what it learns about one request in the `RequestCtx`.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;

use crate::auth::{Auth, JwtAuth};
use crate::config::{PluginConfig, RateBackend};
use crate::context::RequestCtx;
use crate::cors::Cors;
use crate::error::Answer;
use crate::rate_limit::{RateLimit, Store};

pub enum Flow {
    Continue,
    /// Answer now; nothing reaches the upstream.
    Respond(Answer),
}

#[async_trait]
pub trait Plugin: Send + Sync {
    /// Runs once the route is known, in chain order; the first `Respond`
    /// ends the chain.
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
}

pub type Chain = Vec<Box<dyn Plugin>>;

/// What plugins of different routes share: built once, handed to each.
pub struct Shared {
    pub jwt: Option<Arc<JwtAuth>>,
    pub local_limits: Store,
    /// When `rate_limit_backends.redis` is configured.
    pub redis_limits: Option<Store>,
}

pub fn build_chain(configs: &[PluginConfig], shared: &Shared) -> Chain {
    configs
        .iter()
        .map(|config| -> Box<dyn Plugin> {
            match config {
                PluginConfig::Cors(policy) => Box::new(Cors::new(policy.clone())),
                PluginConfig::RateLimit(policy) => {
                    let store = match policy.backend {
                        RateBackend::Local => shared.local_limits.clone(),
                        RateBackend::Redis => shared
                            .redis_limits
                            .clone()
                            .expect("config validation demands a redis backend"),
                    };
                    Box::new(RateLimit::new(policy.clone(), store))
                }
                PluginConfig::Auth(policy) => Box::new(Auth::new(
                    shared
                        .jwt
                        .clone()
                        .expect("config validation demands a jwt section for auth"),
                    policy.clone(),
                )),
            }
        })
        .collect()
}

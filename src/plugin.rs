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

use pingora::server::Server;
use pingora::services::background::background_service;

use crate::auth::{Auth, JwtAuth};
use crate::config::{Config, PluginConfig, RateBackend};
use crate::context::RequestCtx;
use crate::cors::Cors;
use crate::error::Answer;
use crate::jwt::jwks::{JwksRefresher, RemoteJwks};
use crate::rate_limit::local::LocalStore;
use crate::rate_limit::redis::{RedisConnector, RedisStore};
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
    jwt: Option<Arc<JwtAuth>>,
    local_limits: Store,
    /// When some policy keeps its budgets in Redis.
    redis_limits: Option<Store>,
}

impl Shared {
    /// Builds the shared parts, adds the background services that keep them
    /// fresh (JWKS refresh, Redis connection) to `server`, and fetches JWKS
    /// URLs once so that tokens verify from the first request.
    pub fn build(config: &mut Config, server: &mut Server) -> Result<Self, String> {
        let jwt = config
            .jwt
            .take()
            .map(JwtAuth::new)
            .transpose()?
            .map(Arc::new);
        if let Some(jwt) = &jwt {
            let sources = jwt.verifier.remote_sources().to_vec();
            if !sources.is_empty() {
                fetch_before_listening(&sources);
                server.add_service(background_service(
                    "jwks refresh",
                    JwksRefresher { sources },
                ));
            }
        }
        let redis_limits = match config.redis_in_use() {
            Some(settings) => {
                let store = Arc::new(
                    RedisStore::new(settings.clone())
                        .map_err(|e| format!("rate_limit_backends.redis: {e}"))?,
                );
                let connector = RedisConnector {
                    store: store.clone(),
                };
                server.add_service(background_service("redis connector", connector));
                Some(Store::Redis(store))
            }
            None => None,
        };
        Ok(Shared {
            jwt,
            local_limits: Store::Local(Arc::new(LocalStore::new(
                config.rate_limit_backends.local_max_keys,
            ))),
            redis_limits,
        })
    }
}

/// Pingora's runtimes do not exist yet, hence a short-lived one.
fn fetch_before_listening(sources: &[Arc<RemoteJwks>]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the JWKS fetch");
    runtime.block_on(async {
        for source in sources {
            source.initial_fetch().await;
        }
    });
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

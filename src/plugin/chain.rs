//! Which plugins a route runs, in which order, and what they share: the one
//! place that names every plugin. A new plugin is a variant of
//! `PluginConfig`, its stage, and one arm in `Shared::chain`.
//!
//! Order matters and is decided here, not by the order of the YAML: CORS
//! first, so preflights are answered before anything else and every later
//! answer carries the CORS headers; rate limits before token checks, so a
//! flood of bad tokens is limited before it costs signature checks; a limit
//! keyed by a claim after them, since it needs the verified token.

use std::sync::Arc;

use super::cors::{Cors, CorsPolicy};
use super::jwt_auth::config::{JwtSettings, RoutePolicy};
use super::jwt_auth::{JwtAuth, JwtShared};
use super::rate_limit::config::{BackendKind, Backends, RateLimitPolicy};
use super::rate_limit::local::LocalStore;
use super::rate_limit::redis::{self, RedisStore};
use super::rate_limit::{RateLimit, Store};
use super::Chain;
use crate::background::Task;
use crate::jwt::jwks;
use crate::metrics::Metrics;
use crate::yaml::Invalid;

/// One plugin of one route, validated.
#[derive(Debug, Clone)]
pub enum PluginConfig {
    Cors(CorsPolicy),
    /// On every route once a `jwt:` section exists, even with `auth: off`:
    /// it also removes client-sent copies of the claim headers.
    JwtAuth(RoutePolicy),
    RateLimit(RateLimitPolicy),
}

impl PluginConfig {
    fn stage(&self) -> u8 {
        match self {
            PluginConfig::Cors(_) => 0,
            PluginConfig::RateLimit(limit) if !limit.needs_claims() => 1,
            PluginConfig::JwtAuth(_) => 2,
            PluginConfig::RateLimit(_) => 3,
        }
    }
}

/// What the plugins of every route share, as configured: the `jwt:`
/// section and the rate-limit backends.
#[derive(Debug)]
pub struct SharedSettings {
    pub jwt: Option<JwtSettings>,
    /// `redis` is set only when some policy keeps its budgets there, so a
    /// configured but unused Redis is never connected to.
    pub rate_limits: Backends,
}

/// What the plugins of every route share, built once from
/// `SharedSettings`: the verifier, the budget stores.
pub struct Shared {
    jwt: Option<Arc<JwtShared>>,
    local_limits: Store,
    redis_limits: Option<Store>,
    metrics: Option<Arc<Metrics>>,
}

impl Shared {
    /// Also returns the tasks that keep the shared parts fresh, to be run
    /// once the server's runtimes are up.
    pub fn new(
        settings: SharedSettings,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<(Self, Vec<Task>), Invalid> {
        let mut tasks: Vec<Task> = Vec::new();
        let jwt = settings
            .jwt
            .map(|jwt| Arc::new(JwtShared::new(jwt, metrics.as_deref())));
        for source in jwt.iter().flat_map(|j| j.verifier.remote_sources()) {
            tasks.push(Box::pin(jwks::keep_fresh(Arc::downgrade(source))));
        }
        let redis_limits = match settings.rate_limits.redis {
            Some(redis) => {
                let store = RedisStore::new(redis)
                    .map_err(|e| Invalid::at("rate_limit_backends.redis.url", e))?;
                let store = Arc::new(store);
                tasks.push(Box::pin(redis::keep_connected(Arc::downgrade(&store))));
                Some(Store::Redis(store))
            }
            None => None,
        };
        let shared = Shared {
            jwt,
            local_limits: Store::Local(Arc::new(LocalStore::new(
                settings.rate_limits.local_max_keys,
            ))),
            redis_limits,
            metrics,
        };
        Ok((shared, tasks))
    }

    /// Fetches every JWKS URL once, so that tokens verify from the first
    /// request (a failed fetch is logged; its refresh task retries).
    pub async fn prepare(&self) {
        for source in self.jwt.iter().flat_map(|j| j.verifier.remote_sources()) {
            source.initial_fetch().await;
        }
    }

    /// The chain for one route (or for requests that match no route).
    pub fn chain(&self, configs: &[PluginConfig]) -> Chain {
        let mut configs: Vec<&PluginConfig> = configs.iter().collect();
        configs.sort_by_key(|c| c.stage());
        let metrics = self.metrics.as_deref();
        configs
            .into_iter()
            .map(|config| -> Box<dyn super::Plugin> {
                match config {
                    PluginConfig::Cors(policy) => Box::new(Cors::new(policy.clone())),
                    PluginConfig::RateLimit(policy) => {
                        let store = match policy.backend {
                            BackendKind::Local => self.local_limits.clone(),
                            BackendKind::Redis => self
                                .redis_limits
                                .clone()
                                .expect("config validation demands a redis backend"),
                        };
                        Box::new(RateLimit::new(policy.clone(), store, metrics))
                    }
                    PluginConfig::JwtAuth(policy) => Box::new(JwtAuth::new(
                        self.jwt
                            .clone()
                            .expect("config validation demands a jwt section for auth"),
                        policy.clone(),
                    )),
                }
            })
            .collect()
    }
}

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
use crate::jwt::jwks::{self, RemoteJwks};
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

/// What the plugins of every route share, built from `SharedSettings`:
/// the verifier, the budget stores.
pub struct Shared {
    jwt: Option<Arc<JwtShared>>,
    local_limits: Arc<LocalStore>,
    /// The `max_keys` of `local_limits` once this `Shared` serves; a store
    /// taken over keeps its old size until [`Shared::commit`].
    local_max_keys: usize,
    redis_limits: Option<Arc<RedisStore>>,
    metrics: Option<Arc<Metrics>>,
}

/// What a new `Shared` does not take over from the one it replaces: to be
/// fetched before it serves, and the background work it needs once it does.
pub struct Fresh {
    pub jwks: Vec<Arc<RemoteJwks>>,
    pub tasks: Vec<Task>,
}

impl Shared {
    /// Keeps from `previous` (what a reload replaces) the parts whose
    /// settings did not change: the local budgets (resized by
    /// [`Shared::commit`]), a Redis store and its connection, fetched JWKS
    /// and verified tokens. Changes nothing `previous` serves with.
    pub fn new(
        settings: SharedSettings,
        metrics: Option<Arc<Metrics>>,
        previous: Option<&Shared>,
    ) -> Result<(Self, Fresh), Invalid> {
        let mut fresh = Fresh {
            jwks: Vec::new(),
            tasks: Vec::new(),
        };
        let jwt = settings.jwt.map(|jwt| {
            let before = previous.and_then(|p| p.jwt.as_deref());
            Arc::new(JwtShared::new(jwt, metrics.as_deref(), before))
        });
        let known = |source: &Arc<RemoteJwks>| {
            previous.and_then(|p| p.jwt.as_deref()).is_some_and(|j| {
                j.verifier
                    .remote_sources()
                    .iter()
                    .any(|r| Arc::ptr_eq(r, source))
            })
        };
        for source in jwt.iter().flat_map(|j| j.verifier.remote_sources()) {
            if !known(source) {
                fresh
                    .tasks
                    .push(Box::pin(jwks::keep_fresh(Arc::downgrade(source))));
                fresh.jwks.push(source.clone());
            }
        }

        let redis_limits = match settings.rate_limits.redis {
            Some(redis) => match previous.and_then(|p| p.redis_limits.clone()) {
                Some(store) if *store.settings() == redis => Some(store),
                _ => {
                    let store = RedisStore::new(redis)
                        .map_err(|e| Invalid::at("rate_limit_backends.redis.url", e))?;
                    let store = Arc::new(store);
                    fresh
                        .tasks
                        .push(Box::pin(redis::keep_connected(Arc::downgrade(&store))));
                    Some(store)
                }
            },
            None => None,
        };
        let max_keys = settings.rate_limits.local_max_keys;
        let local_limits = match previous {
            Some(p) => p.local_limits.clone(),
            None => Arc::new(LocalStore::new(max_keys)),
        };
        let shared = Shared {
            jwt,
            local_limits,
            local_max_keys: max_keys,
            redis_limits,
            metrics,
        };
        Ok((shared, fresh))
    }

    /// Applies what this `Shared` changes in the parts it shares with the
    /// one it replaces: the local store's `max_keys`. Only once it is
    /// certain to serve, since a shrink forgets budgets, and a reload
    /// refused after `new` must leave the running ones as they were.
    pub fn commit(&self) {
        self.local_limits.resize(self.local_max_keys);
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
                            BackendKind::Local => Store::Local(self.local_limits.clone()),
                            BackendKind::Redis => Store::Redis(
                                self.redis_limits
                                    .clone()
                                    .expect("config validation demands a redis backend"),
                            ),
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

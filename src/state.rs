//! What a request is served from: the route table, whose entries carry
//! each route together with its plugin chain and its upstream, the plugins
//! of requests that match no route, and the limits every request gets.
//! Built whole from one config's routing settings and never changed
//! afterwards; the proxy serves each request from the state that was
//! current when it arrived.

use std::sync::Arc;

use crate::background::Task;
use crate::config::RoutingSettings;
use crate::forwarded::TrustedProxies;
use crate::metrics::Metrics;
use crate::plugin::chain::Shared;
use crate::plugin::Chain;
use crate::routing::{Entry, Route, RouteTable};
use crate::upstream::Upstream;
use crate::yaml::Invalid;

/// Where a matched request goes: through its route's plugins to its
/// route's upstream.
pub struct Target {
    pub chain: Chain,
    pub upstream: Arc<Upstream>,
}

/// Everything a request is served from, built whole from one config and
/// never changed afterwards.
pub struct State {
    pub routes: RouteTable<Target>,
    /// The plugins of requests that match no route.
    pub unmatched: Chain,
    pub trusted_proxies: TrustedProxies,
    pub max_body_size: u64,
    upstreams: Vec<Arc<Upstream>>,
    /// Kept so the plugins' stores and verifier live as long as the state.
    _shared: Shared,
}

impl State {
    /// Builds the state `settings` describe, and the background tasks its
    /// new parts need. Nothing is fetched or resolved yet: see
    /// [`State::prepare`].
    pub fn build(
        settings: RoutingSettings,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<(State, Vec<Task>), Invalid> {
        let (shared, mut tasks) = Shared::new(settings.plugins, metrics)?;
        let upstreams: Vec<Arc<Upstream>> = settings
            .upstreams
            .iter()
            .map(|settings| {
                let (upstream, refresh) = Upstream::new(settings);
                tasks.extend(refresh);
                Arc::new(upstream)
            })
            .collect();
        let entries = settings
            .routes
            .iter()
            .map(|route| Entry {
                route: Route::new(route),
                target: Target {
                    chain: shared.chain(&route.plugins),
                    upstream: upstreams[route.upstream].clone(),
                },
            })
            .collect();
        let state = State {
            routes: RouteTable::new(entries),
            unmatched: shared.chain(&settings.unmatched_plugins),
            trusted_proxies: TrustedProxies::new(settings.trusted_proxies),
            max_body_size: settings.max_body_size,
            upstreams,
            _shared: shared,
        };
        Ok((state, tasks))
    }

    /// What the first request needs done first: every upstream resolved,
    /// every JWKS URL fetched.
    pub async fn prepare(&self) {
        for upstream in &self.upstreams {
            upstream.prepare().await;
        }
        self._shared.prepare().await;
    }

    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// The upstream of the route at `route`.
    pub fn upstream(&self, route: Option<usize>) -> Option<&Upstream> {
        route.map(|i| &*self.routes.get(i).target.upstream)
    }

    /// The chain of the route at `route`, or of requests that match none.
    pub fn chain(&self, route: Option<usize>) -> &Chain {
        match route {
            Some(i) => &self.routes.get(i).target.chain,
            None => &self.unmatched,
        }
    }
}

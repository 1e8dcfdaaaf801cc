//! What a request is served from: the route table, whose entries carry
//! each route together with its plugin chain and its upstream, the plugins
//! of requests that match no route, and the limits every request gets.
//! Built whole from one config's routing settings and never changed
//! afterwards; the proxy serves each request from the state that was
//! current when it arrived.

use std::sync::Arc;

use log::warn;

use crate::background::Task;
use crate::config::{ClientSettings, RoutingSettings};
use crate::forwarded::TrustedProxies;
use crate::jwt::jwks::RemoteJwks;
use crate::metrics::Metrics;
use crate::plugin::chain::Shared;
use crate::plugin::Chain;
use crate::routing::{Entry, Route, RouteTable};
use crate::trace::Tracer;
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
    /// Client timeouts and request head limits.
    pub client: ClientSettings,
    /// `None`: tracing is off.
    pub tracer: Option<Arc<Tracer>>,
    upstreams: Vec<Arc<Upstream>>,
    /// What the plugins of all routes share; a reload's new state takes
    /// over what still applies.
    shared: Shared,
}

/// What a new state does not share with the one it replaces: to be
/// resolved and fetched before it serves, and the background work its new
/// parts need once it does.
pub struct Fresh {
    upstreams: Vec<Arc<Upstream>>,
    jwks: Vec<Arc<RemoteJwks>>,
    tasks: Vec<Task>,
}

impl State {
    /// Builds the state `settings` describe. From `previous` (the state a
    /// reload replaces) it keeps each upstream whose settings are unchanged,
    /// with its health and pooled connections, and what the plugins can
    /// keep; everything else is new and in `Fresh`, resolved and fetched by
    /// [`Fresh::prepare`].
    pub fn build(
        settings: RoutingSettings,
        metrics: Option<Arc<Metrics>>,
        previous: Option<&State>,
    ) -> Result<(State, Fresh), Invalid> {
        let (shared, plugins) = Shared::new(
            settings.plugins,
            metrics.clone(),
            previous.map(|p| &p.shared),
        )?;
        let mut fresh = Fresh {
            upstreams: Vec::new(),
            jwks: plugins.jwks,
            tasks: plugins.tasks,
        };
        // An unchanged tracer keeps its queue and its exporter.
        let tracer = settings.tracing.map(|wanted| {
            let kept = previous.and_then(|p| p.tracer.clone());
            match kept.filter(|t| *t.settings() == wanted) {
                Some(tracer) => tracer,
                None => {
                    let (tracer, export) = Tracer::new(wanted, metrics.clone());
                    fresh.tasks.push(export);
                    tracer
                }
            }
        });
        let upstreams: Vec<Arc<Upstream>> = settings
            .upstreams
            .iter()
            .map(|settings| {
                let kept = previous
                    .iter()
                    .flat_map(|p| &p.upstreams)
                    .find(|u| u.settings == *settings);
                if let Some(kept) = kept {
                    return kept.clone();
                }
                let (upstream, refresh) = Upstream::new(settings, metrics.clone());
                let upstream = Arc::new(upstream);
                fresh.tasks.extend(refresh);
                fresh.upstreams.push(upstream.clone());
                upstream
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
            client: settings.client,
            tracer,
            upstreams,
            shared,
        };
        Ok((state, fresh))
    }

    /// Makes the changes this state has in store for what it shares with
    /// the one it replaces (see [`Shared::commit`]); called by a reload once
    /// nothing can refuse it any more, right before the swap.
    pub fn commit(&self) {
        self.shared.commit();
    }

    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// The upstream of the route at `route`.
    pub fn upstream(&self, route: Option<usize>) -> Option<&Arc<Upstream>> {
        route.map(|i| &self.routes.get(i).target.upstream)
    }

    /// The chain of the route at `route`, or of requests that match none.
    pub fn chain(&self, route: Option<usize>) -> &Chain {
        match route {
            Some(i) => &self.routes.get(i).target.chain,
            None => &self.unmatched,
        }
    }
}

impl Fresh {
    /// What the first request to the new parts needs: every new upstream
    /// resolved, every new JWKS URL fetched. `strict` (a reload) refuses a
    /// host name that resolves to nothing and a JWKS URL that cannot be
    /// fetched; at startup both are logged and retried in the background,
    /// since what they name may not be up yet. Returns the background work
    /// the new parts need, to be started once the new state serves.
    pub async fn prepare(self, strict: bool) -> Result<Vec<Task>, Invalid> {
        for upstream in &self.upstreams {
            upstream.prepare(strict).await?;
        }
        for source in &self.jwks {
            if let Err(e) = source.refresh().await {
                let url = &source.settings().url;
                if strict {
                    return Err(Invalid::at(
                        &source.settings().key,
                        format!("`{url}` cannot be fetched: {e}"),
                    ));
                }
                warn!(
                    "JWKS {url}: unreachable at startup; starting anyway, tokens for its keys are refused until a fetch succeeds"
                );
            }
        }
        Ok(self.tasks)
    }
}

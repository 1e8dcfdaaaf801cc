//! Upstream services: a round-robin pool of instances per service, kept
//! current by DNS re-resolution and optional active HTTP health checks.
//!
//! Pingora's `HttpPeer::new` resolves names with blocking DNS and panics when
//! that fails, so names are resolved here, by a `ServiceDiscovery` that keeps
//! the last good addresses of a name whose lookup fails (a restarting DNS or
//! a container that is not up yet must not empty the pool). Peers are then
//! built from socket addresses only.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use log::warn;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::health_check::HttpHealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::upstreams::peer::HttpPeer;

use crate::background::Task;
use crate::config::{InstanceUrl, UpstreamSettings};
use crate::yaml::Invalid;

type Pool = LoadBalancer<RoundRobin>;

/// One upstream service as the proxy sees it.
pub struct Upstream {
    pub name: String,
    /// What it was built from: a reload keeps an upstream (its health and
    /// its pooled connections) whose settings did not change.
    pub settings: UpstreamSettings,
    pool: Arc<Pool>,
}

/// The chosen instance for one attempt.
pub struct Selected {
    pub addr: SocketAddr,
    pub instance: Arc<InstanceUrl>,
    pub peer: Box<HttpPeer>,
}

impl Upstream {
    /// Builds the pool, still empty until [`Upstream::prepare`] resolves it,
    /// and the tasks that keep it fresh (re-resolving host names, running
    /// health checks) for as long as the upstream is in use.
    pub fn new(settings: &UpstreamSettings) -> (Upstream, Vec<Task>) {
        let discovery = Dns::new(&settings.instances);
        let resolve_every = discovery.has_names().then_some(settings.resolve_interval);
        let mut pool = Pool::from_backends(Backends::new(Box::new(discovery)));
        let check_every = settings.health_check.as_ref().map(|hc| {
            // One Host header for the whole service: its instances are
            // replicas of one service, addressed by the first URL's name.
            let first = &settings.instances[0];
            let mut check = HttpHealthCheck::new(&first.authority, first.tls);
            check.req.set_uri(hc.path.clone().into());
            check.peer_template.options.connection_timeout = Some(hc.timeout);
            check.peer_template.options.read_timeout = Some(hc.timeout);
            pool.set_health_check(Box::new(check));
            hc.interval
        });
        let pool = Arc::new(pool);
        let mut tasks: Vec<Task> = Vec::new();
        if let Some(every) = resolve_every {
            tasks.push(Box::pin(keep_resolved(Arc::downgrade(&pool), every)));
        }
        if let Some(every) = check_every {
            tasks.push(Box::pin(keep_checked(Arc::downgrade(&pool), every)));
        }
        let upstream = Upstream {
            name: settings.name.clone(),
            settings: settings.clone(),
            pool,
        };
        (upstream, tasks)
    }

    /// The first resolution, so the first request already has instances.
    /// `strict` (a reload) refuses an instance whose host name resolves to
    /// nothing; at startup that is only logged, and the name is picked up
    /// once it resolves (a container may not be up yet).
    pub async fn prepare(&self, strict: bool) -> Result<(), Invalid> {
        if strict {
            for (i, instance) in self.settings.instances.iter().enumerate() {
                if instance.host.parse::<IpAddr>().is_ok() {
                    continue;
                }
                let target = format!("{}:{}", instance.host, instance.port);
                let found = tokio::net::lookup_host(target.as_str())
                    .await
                    .map(|mut addrs| addrs.next().is_some());
                if !matches!(found, Ok(true)) {
                    let why = found
                        .err()
                        .map_or("no address".to_string(), |e| e.to_string());
                    return Err(Invalid::at(
                        format!("upstreams.{}.instances[{i}]", self.name),
                        format!("`{}` does not resolve: {why}", instance.host),
                    ));
                }
            }
        }
        if let Err(e) = self.pool.update().await {
            warn!("upstream {}: first resolution failed: {e}", self.name);
        }
        Ok(())
    }

    /// Each instance's address and whether it is healthy (true without
    /// health checks), for the metrics.
    pub fn health(&self) -> Vec<(SocketAddr, bool)> {
        let backends = self.pool.backends();
        backends
            .get_backend()
            .iter()
            .filter_map(|b| Some((*b.addr.as_inet()?, backends.ready(b))))
            .collect()
    }

    /// Whether a retry has another instance to go to.
    pub fn has_alternatives(&self) -> bool {
        self.settings.instances.len() > 1 || self.pool.backends().get_backend().len() > 1
    }

    /// The next instance in round-robin order, skipping `avoid` (the one
    /// that just refused a connection) and unhealthy ones. When every
    /// instance is marked unhealthy it still picks one rather than failing
    /// without trying: a health check can be wrong, a connect attempt is not.
    pub fn select(&self, avoid: Option<SocketAddr>) -> Option<Selected> {
        let usable = |b: &Backend| avoid.is_none_or(|a| b.addr.as_inet() != Some(&a));
        let backend = self
            .pool
            .select_with(b"", 256, |b, healthy| healthy && usable(b))
            .or_else(|| self.pool.select_with(b"", 256, |b, _| usable(b)))
            .or_else(|| self.pool.select(b"", 256))?;
        let addr = *backend.addr.as_inet()?;
        let instance = backend.ext.get::<Arc<InstanceUrl>>()?.clone();
        Some(Selected {
            addr,
            peer: self.peer(addr, &instance),
            instance,
        })
    }

    fn peer(&self, addr: SocketAddr, instance: &InstanceUrl) -> Box<HttpPeer> {
        let sni = if instance.tls {
            instance.host.clone()
        } else {
            String::new()
        };
        let mut peer = HttpPeer::new(addr, instance.tls, sni);
        let options = &mut peer.options;
        let timeouts = &self.settings.timeouts;
        // Pingora leaves every upstream timeout unset (wait forever).
        options.connection_timeout = Some(timeouts.connect);
        options.total_connection_timeout = Some(timeouts.connect);
        options.read_timeout = Some(timeouts.read);
        options.write_timeout = Some(timeouts.write);
        options.idle_timeout = Some(timeouts.idle);
        Box::new(peer)
    }
}

/// Resolves the pool's host names again every `every`.
async fn keep_resolved(pool: Weak<Pool>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        // A failed lookup keeps the last good addresses (see `Dns`).
        let _ = pool.update().await;
    }
}

/// Health-checks every instance now and then every `every`.
async fn keep_checked(pool: Weak<Pool>, every: Duration) {
    loop {
        let Some(strong) = pool.upgrade() else { return };
        strong.backends().run_health_check(true).await;
        drop(strong);
        tokio::time::sleep(every).await;
    }
}

/// Resolves each instance URL to socket addresses, remembering the last
/// good answer per name.
struct Dns {
    instances: Vec<Arc<InstanceUrl>>,
    last_good: Mutex<HashMap<String, Vec<SocketAddr>>>,
}

impl Dns {
    fn new(instances: &[InstanceUrl]) -> Self {
        Dns {
            instances: instances.iter().cloned().map(Arc::new).collect(),
            last_good: Mutex::new(HashMap::new()),
        }
    }

    fn has_names(&self) -> bool {
        self.instances
            .iter()
            .any(|i| i.host.parse::<IpAddr>().is_err())
    }

    async fn resolve(&self, instance: &InstanceUrl) -> Vec<SocketAddr> {
        if let Ok(ip) = instance.host.parse::<IpAddr>() {
            return vec![SocketAddr::new(ip, instance.port)];
        }
        let key = format!("{}:{}", instance.host, instance.port);
        let answer = tokio::net::lookup_host(key.as_str())
            .await
            .map(|addrs| addrs.collect::<Vec<_>>());
        let mut last_good = self
            .last_good
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match answer {
            Ok(addrs) => {
                last_good.insert(key, addrs.clone());
                addrs
            }
            Err(e) => {
                let previous = last_good.get(&key).cloned().unwrap_or_default();
                warn!(
                    "cannot resolve upstream instance {key}: {e}; keeping {} known address(es)",
                    previous.len()
                );
                previous
            }
        }
    }
}

#[async_trait]
impl ServiceDiscovery for Dns {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut backends = BTreeSet::new();
        for instance in &self.instances {
            for addr in self.resolve(instance).await {
                let mut backend = Backend {
                    addr: PingoraAddr::Inet(addr),
                    weight: 1,
                    ext: Default::default(),
                };
                backend.ext.insert(instance.clone());
                backends.insert(backend);
            }
        }
        Ok((backends, HashMap::new()))
    }
}

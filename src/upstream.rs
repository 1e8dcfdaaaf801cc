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
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use log::warn;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::health_check::HttpHealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::services::background::{background_service, GenBackgroundService};
use pingora::upstreams::peer::HttpPeer;

use crate::config::{InstanceUrl, Timeouts, UpstreamSettings};

/// One upstream service as the proxy sees it.
pub struct Upstream {
    pub name: String,
    pool: Arc<LoadBalancer<RoundRobin>>,
    timeouts: Timeouts,
    /// How many configured instances there are; a retry only makes sense
    /// when there is another one to try.
    instance_count: usize,
}

/// The chosen instance for one attempt.
pub struct Selected {
    pub addr: SocketAddr,
    pub instance: Arc<InstanceUrl>,
    pub peer: Box<HttpPeer>,
}

impl Upstream {
    /// Builds the pool and resolves it once, so the first request already has
    /// instances. Returns the background service that keeps the pool fresh
    /// when it has anything to do (host names to re-resolve or health checks).
    pub fn build(
        settings: &UpstreamSettings,
    ) -> (
        Upstream,
        Option<GenBackgroundService<LoadBalancer<RoundRobin>>>,
    ) {
        let discovery = Dns::new(&settings.instances);
        let needs_refresh = discovery.has_names();
        let mut pool =
            LoadBalancer::<RoundRobin>::from_backends(Backends::new(Box::new(discovery)));
        pool.parallel_health_check = true;
        if needs_refresh {
            pool.update_frequency = Some(settings.resolve_interval);
        }
        if let Some(hc) = &settings.health_check {
            // One Host header for the whole service: its instances are
            // replicas of one service, addressed by the first URL's name.
            let first = &settings.instances[0];
            let mut check = HttpHealthCheck::new(&first.authority, first.tls);
            check
                .req
                .set_uri(hc.path.parse().expect("validated health check path"));
            check.peer_template.options.connection_timeout = Some(hc.timeout);
            check.peer_template.options.read_timeout = Some(hc.timeout);
            pool.set_health_check(Box::new(check));
            pool.health_check_frequency = Some(hc.interval);
        }

        initial_resolve(&pool, &settings.name);

        let (pool, background) = if needs_refresh || settings.health_check.is_some() {
            let service = background_service(&format!("upstream {}", settings.name), pool);
            (service.task(), Some(service))
        } else {
            (Arc::new(pool), None)
        };
        let upstream = Upstream {
            name: settings.name.clone(),
            pool,
            timeouts: settings.timeouts.clone(),
            instance_count: settings.instances.len(),
        };
        (upstream, background)
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

    pub fn has_alternatives(&self) -> bool {
        self.instance_count > 1 || self.pool.backends().get_backend().len() > 1
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
        // Pingora leaves every upstream timeout unset (wait forever).
        options.connection_timeout = Some(self.timeouts.connect);
        options.total_connection_timeout = Some(self.timeouts.connect);
        options.read_timeout = Some(self.timeouts.read);
        options.write_timeout = Some(self.timeouts.write);
        options.idle_timeout = Some(self.timeouts.idle);
        Box::new(peer)
    }
}

/// Startup runs before Pingora's runtimes exist, so the first resolution
/// gets a small runtime of its own.
fn initial_resolve(pool: &LoadBalancer<RoundRobin>, name: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for startup");
    if let Err(e) = runtime.block_on(pool.update()) {
        warn!("upstream {name}: first resolution failed: {e}");
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
        match answer {
            Ok(addrs) => {
                self.last_good.lock().unwrap().insert(key, addrs.clone());
                addrs
            }
            Err(e) => {
                let previous = self
                    .last_good
                    .lock()
                    .unwrap()
                    .get(&key)
                    .cloned()
                    .unwrap_or_default();
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

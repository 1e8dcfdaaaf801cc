//! Instance URLs resolved to addresses, for Pingora's `Backends`.
//!
//! Pingora's `HttpPeer::new` resolves names with blocking DNS and panics when
//! that fails, so names are resolved here, keeping the last good addresses
//! of a name whose lookup fails (a restarting DNS or a container that is not
//! up yet must not empty the pool). Each address keeps one `Instance` for as
//! long as it stays in the pool, so its load and passive health survive
//! every refresh.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use log::warn;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::Backend;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;

use super::instance::Instance;
use crate::config::InstanceUrl;
use crate::metrics::Metrics;

pub struct Dns {
    upstream: String,
    urls: Vec<Arc<InstanceUrl>>,
    metrics: Option<Arc<Metrics>>,
    /// The last good answer per `host:port`.
    last_good: Mutex<HashMap<String, Vec<SocketAddr>>>,
    /// The instances of the addresses now in the pool.
    instances: Mutex<HashMap<SocketAddr, Arc<Instance>>>,
}

impl Dns {
    pub fn new(upstream: &str, urls: &[InstanceUrl], metrics: Option<Arc<Metrics>>) -> Self {
        Dns {
            upstream: upstream.to_string(),
            urls: urls.iter().cloned().map(Arc::new).collect(),
            metrics,
            last_good: Mutex::new(HashMap::new()),
            instances: Mutex::new(HashMap::new()),
        }
    }

    pub fn has_names(&self) -> bool {
        self.urls.iter().any(|u| u.host.parse::<IpAddr>().is_err())
    }

    async fn resolve(&self, url: &InstanceUrl) -> Vec<SocketAddr> {
        if let Ok(ip) = url.host.parse::<IpAddr>() {
            return vec![SocketAddr::new(ip, url.port)];
        }
        let key = format!("{}:{}", url.host, url.port);
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
        let mut resolved = Vec::new();
        for url in &self.urls {
            for addr in self.resolve(url).await {
                resolved.push((addr, url.clone()));
            }
        }
        let mut instances = self
            .instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut current = HashMap::new();
        let mut backends = BTreeSet::new();
        for (addr, url) in resolved {
            let instance = instances.get(&addr).cloned().unwrap_or_else(|| {
                let metrics = self
                    .metrics
                    .as_ref()
                    .map(|m| m.instance(&self.upstream, addr));
                Arc::new(Instance::new(addr, url.clone(), metrics))
            });
            let mut backend = Backend {
                addr: PingoraAddr::Inet(addr),
                weight: usize::from(url.weight),
                ext: Default::default(),
            };
            backend.ext.insert(instance.clone());
            backends.insert(backend);
            current.insert(addr, instance);
        }
        *instances = current;
        Ok((backends, HashMap::new()))
    }
}

//! Upstream services: a pool of instances per service, kept current by DNS
//! re-resolution and optional active health checks, and followed from
//! request to request: which instance a try goes to (`balance.rs`), which
//! instances keep failing and are ejected for a while (outlier detection,
//! `instance.rs`), how many retries the service may still get (`budget.rs`),
//! and how many requests it has in flight at most.

mod balance;
mod budget;
mod discovery;
mod instance;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use log::{info, warn};
use pingora::lb::health_check::HttpHealthCheck;
use pingora::lb::Backends;
use pingora::upstreams::peer::HttpPeer;

pub use balance::request_key;
pub use instance::{Failure, InFlight};

use crate::background::Task;
use crate::config::{Balance, InstanceUrl, UpstreamSettings};
use crate::metrics::{InstanceState, Metrics, UpstreamMetrics};
use crate::yaml::Invalid;
use balance::{Member, Picker};
use budget::Budget;
use discovery::Dns;

/// One upstream service as the proxy sees it.
pub struct Upstream {
    pub name: String,
    /// What it was built from: a reload keeps an upstream (its health, its
    /// instances' state and its pooled connections) whose settings did not
    /// change.
    pub settings: UpstreamSettings,
    pool: Arc<Pool>,
    budget: Budget,
    /// Requests in flight, for `max_in_flight`.
    in_flight: AtomicU32,
    /// The clock ejections are measured on.
    origin: Instant,
    metrics: Option<UpstreamMetrics>,
}

/// The instances, as discovery and the active health checks keep them.
struct Pool {
    backends: Backends,
    picker: ArcSwap<Picker>,
    balance: Balance,
    /// Without active checks every instance counts as healthy, and the
    /// check's lookup is skipped.
    health_checked: bool,
}

/// The instance chosen for one try, counted in its load until dropped.
pub struct Selected {
    pub addr: SocketAddr,
    pub url: Arc<InstanceUrl>,
    pub peer: Box<HttpPeer>,
    pub attempt: InFlight,
}

/// A request admitted under the upstream's `max_in_flight`, counted until
/// dropped.
pub struct Admitted(Arc<Upstream>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstream {
    /// Builds the pool, still empty until [`Upstream::prepare`] resolves it,
    /// and the tasks that keep it fresh (re-resolving host names, running
    /// health checks) for as long as the upstream is in use.
    pub fn new(
        settings: &UpstreamSettings,
        metrics: Option<Arc<Metrics>>,
    ) -> (Upstream, Vec<Task>) {
        let discovery = Dns::new(&settings.name, &settings.instances, metrics.clone());
        let resolve_every = discovery.has_names().then_some(settings.resolve_interval);
        let mut backends = Backends::new(Box::new(discovery));
        let check_every = settings.health_check.as_ref().map(|hc| {
            // One Host header for the whole service: its instances are
            // replicas of one service, addressed by the first URL's name.
            let first = &settings.instances[0];
            let mut check = HttpHealthCheck::new(&first.authority, first.tls);
            check.req.set_uri(hc.path.clone().into());
            check.peer_template.options.connection_timeout = Some(hc.timeout);
            check.peer_template.options.read_timeout = Some(hc.timeout);
            backends.set_health_check(Box::new(check));
            hc.interval
        });
        let pool = Arc::new(Pool {
            backends,
            picker: ArcSwap::from_pointee(Picker::build(&Default::default(), &settings.balance)),
            balance: settings.balance.clone(),
            health_checked: check_every.is_some(),
        });
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
            budget: Budget::new(settings.retry_budget),
            in_flight: AtomicU32::new(0),
            origin: Instant::now(),
            metrics: metrics.map(|m| m.upstream(&settings.name)),
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
                if instance.host.parse::<std::net::IpAddr>().is_ok() {
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

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Each instance's state, and the requests in flight, for the gauges.
    pub fn report(&self) -> (u32, Vec<InstanceState>) {
        let now = self.now_ms();
        let picker = self.pool.picker.load();
        let instances = picker
            .members()
            .iter()
            .map(|m| InstanceState {
                addr: m.instance.addr,
                healthy: self.pool.healthy(m),
                ejected: m.instance.is_ejected(now),
                in_flight: m.instance.in_flight(),
            })
            .collect();
        (self.in_flight.load(Ordering::Relaxed), instances)
    }

    /// Counts the request against `max_in_flight`; `None` when the upstream
    /// is at its limit (and the refusal is counted).
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let admitted = Admitted(self.clone());
        if self.settings.max_in_flight.is_some_and(|max| now >= max) {
            if let Some(m) = &self.metrics {
                m.overloaded();
            }
            return None;
        }
        self.budget.request();
        Some(admitted)
    }

    /// The instance for a try: by the upstream's balancing, skipping those
    /// in `tried`, unhealthy and ejected ones. When every instance is out it
    /// still picks one rather than failing without trying: a health check
    /// can be wrong, a connect attempt is not. `limit` caps the try's
    /// timeouts (a per-try timeout, what is left of a deadline).
    pub fn select(
        &self,
        key: Option<&[u8]>,
        tried: &[SocketAddr],
        limit: Option<Duration>,
    ) -> Option<Selected> {
        let picker = self.pool.picker.load();
        let now = self.now_ms();
        let fresh = |m: &Member| !tried.contains(&m.instance.addr);
        let balance = &self.pool.balance;
        let first = tried.is_empty();
        let member = picker
            .pick(balance, key, first, &|m| {
                fresh(m) && !m.instance.is_ejected(now) && self.pool.healthy(m)
            })
            .or_else(|| picker.pick(balance, key, false, &fresh))
            .or_else(|| picker.pick(balance, key, false, &|_| true))?;
        let instance = member.instance.clone();
        Some(Selected {
            addr: instance.addr,
            url: instance.url.clone(),
            peer: self.peer(&instance, limit),
            attempt: InFlight::start(instance),
        })
    }

    /// The outcome of a try: `Err` is a failure, and enough of them in a
    /// row eject the instance, while no more than the allowed share of the
    /// pool is out.
    pub fn record(&self, attempt: &InFlight, outcome: Result<(), Failure>) {
        let instance = attempt.instance();
        let failure = match outcome {
            Ok(()) => return instance.succeeded(),
            Err(failure) => failure,
        };
        let in_a_row = instance.failed(failure);
        let Some(outlier) = &self.settings.outlier else {
            return;
        };
        let now = self.now_ms();
        if in_a_row < outlier.consecutive_failures || instance.is_ejected(now) {
            return;
        }
        let picker = self.pool.picker.load();
        let members = picker.members();
        let ejected = members
            .iter()
            .filter(|m| m.instance.is_ejected(now))
            .count();
        if (ejected + 1) * 100 > usize::from(outlier.max_ejected_percent) * members.len() {
            return;
        }
        let length = instance.eject(now, outlier);
        info!(
            "upstream {}: {} ejected for {length:?} after {in_a_row} failures in a row",
            self.name, instance.addr
        );
    }

    /// Whether `status` from an instance counts against it.
    pub fn is_failure_status(&self, status: u16) -> bool {
        self.settings
            .outlier
            .as_ref()
            .is_some_and(|o| o.failure_statuses.binary_search(&status).is_ok())
    }

    /// Whether the retry budget allows one more retry (spent and counted if
    /// so).
    pub fn try_retry(&self, failure: Failure) -> bool {
        let granted = self.budget.try_retry();
        if granted {
            self.retried(failure);
        } else if let Some(m) = &self.metrics {
            m.budget_exhausted();
        }
        granted
    }

    /// Counts a retry: `try_retry` for those the budget granted, the proxy
    /// for those that need none, so every retry shows in the metrics.
    pub fn retried(&self, failure: Failure) {
        if let Some(m) = &self.metrics {
            m.retried(failure.kind());
        }
    }

    fn peer(&self, instance: &instance::Instance, limit: Option<Duration>) -> Box<HttpPeer> {
        let url = &instance.url;
        let sni = if url.tls {
            url.host.clone()
        } else {
            String::new()
        };
        let mut peer = HttpPeer::new(instance.addr, url.tls, sni);
        let timeouts = &self.settings.timeouts;
        let capped = |t: Duration| Some(limit.map_or(t, |l| t.min(l)));
        let options = &mut peer.options;
        // Pingora leaves every upstream timeout unset (wait forever).
        options.connection_timeout = capped(timeouts.connect);
        options.total_connection_timeout = capped(timeouts.connect);
        options.read_timeout = capped(timeouts.read);
        options.write_timeout = capped(timeouts.write);
        options.idle_timeout = Some(timeouts.idle);
        Box::new(peer)
    }
}

impl Pool {
    /// Resolves the instances again, and rebuilds the picker if they changed.
    async fn update(&self) -> pingora::Result<()> {
        self.backends
            .update(|backends| {
                self.picker
                    .store(Arc::new(Picker::build(&backends, &self.balance)))
            })
            .await
    }

    fn healthy(&self, member: &Member) -> bool {
        !self.health_checked || self.backends.ready(&member.backend)
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
        strong.backends.run_health_check(true).await;
        drop(strong);
        tokio::time::sleep(every).await;
    }
}

//! One instance of an upstream as the gateway follows it from request to
//! request: how many requests it has in flight (what `least_request` and
//! bounded hashing weigh), and its passive health, counted from real
//! traffic: failures in a row, and whether it is ejected, until when.
//!
//! The state lives as long as the instance's address is in the pool, across
//! DNS refreshes and reloads that keep the upstream.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{InstanceUrl, OutlierSettings};
use crate::metrics::InstanceMetrics;

/// How one try failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Connect,
    /// The connection broke before any response byte.
    Reset,
    Timeout,
    Status(u16),
}

impl Failure {
    /// A label for metrics.
    pub fn kind(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Reset => "reset",
            Failure::Timeout => "timeout",
            Failure::Status(_) => "status",
        }
    }
}

pub struct Instance {
    pub addr: SocketAddr,
    pub url: Arc<InstanceUrl>,
    in_flight: AtomicU32,
    /// Failures since the last success.
    failures: AtomicU32,
    /// Milliseconds on the pool's clock until which it is ejected; 0: not
    /// ejected.
    ejected_until: AtomicU64,
    /// How many ejections in a row: each lasts one `base_ejection_time`
    /// more than the one before.
    ejections: AtomicU32,
    metrics: Option<InstanceMetrics>,
}

impl Instance {
    pub fn new(addr: SocketAddr, url: Arc<InstanceUrl>, metrics: Option<InstanceMetrics>) -> Self {
        Instance {
            addr,
            url,
            in_flight: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            metrics,
        }
    }

    pub fn weight(&self) -> u32 {
        u32::from(self.url.weight)
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ms
    }

    /// A try reached it and it answered well.
    pub fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// A try failed; returns the failures in a row so far.
    pub fn failed(&self, failure: Failure) -> u32 {
        if let Some(m) = &self.metrics {
            m.failure(failure.kind());
        }
        self.failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Ejects it from `now_ms` for one base time more than last time (at
    /// most the maximum); returns for how long. An instance that stayed in
    /// for a whole base time since its last ejection has one step taken off.
    pub fn eject(&self, now_ms: u64, settings: &OutlierSettings) -> Duration {
        let base = settings.base_ejection_time.as_millis() as u64;
        let ended = self.ejected_until.load(Ordering::Relaxed);
        let steps_back = if ended == 0 {
            0
        } else {
            now_ms.saturating_sub(ended) / base
        };
        let previous = u64::from(self.ejections.load(Ordering::Relaxed)).saturating_sub(steps_back);
        let times = previous + 1;
        let length = (base * times).min(settings.max_ejection_time.as_millis() as u64);
        self.ejections.store(times as u32, Ordering::Relaxed);
        self.ejected_until.store(now_ms + length, Ordering::Relaxed);
        // Back from ejection, it has to fail anew to be ejected again.
        self.failures.store(0, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.ejected();
        }
        Duration::from_millis(length)
    }
}

/// A try in progress on an instance: counted in its requests in flight
/// until dropped.
pub struct InFlight(Arc<Instance>);

impl InFlight {
    pub fn start(instance: Arc<Instance>) -> Self {
        instance.in_flight.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &instance.metrics {
            m.started();
        }
        InFlight(instance)
    }

    pub fn instance(&self) -> &Arc<Instance> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance() -> Instance {
        let url = InstanceUrl::parse("http://127.0.0.1:3001").unwrap();
        Instance::new("127.0.0.1:3001".parse().unwrap(), Arc::new(url), None)
    }

    fn settings() -> OutlierSettings {
        OutlierSettings {
            consecutive_failures: 3,
            failure_statuses: vec![503],
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(80),
            max_ejected_percent: 50,
        }
    }

    #[test]
    fn failures_count_in_a_row_until_a_success() {
        let i = instance();
        assert_eq!(i.failed(Failure::Connect), 1);
        assert_eq!(i.failed(Failure::Status(503)), 2);
        i.succeeded();
        assert_eq!(i.failed(Failure::Reset), 1);
    }

    #[test]
    fn ejections_grow_with_repeats_up_to_the_maximum_and_decay_while_in() {
        let i = instance();
        let s = settings();
        assert_eq!(i.eject(0, &s), Duration::from_secs(30));
        assert!(i.is_ejected(29_999));
        assert!(!i.is_ejected(30_000));
        // Failed again right after coming back: longer.
        assert_eq!(i.eject(30_000, &s), Duration::from_secs(60));
        // Then capped.
        assert_eq!(i.eject(90_000, &s), Duration::from_secs(80));
        // In for two base times since: two of the three steps are taken
        // off, so this is the second in a row.
        assert_eq!(i.eject(170_000 + 60_000, &s), Duration::from_secs(60));
    }

    #[test]
    fn in_flight_counts_live_tries() {
        let i = Arc::new(instance());
        let a = InFlight::start(i.clone());
        let b = InFlight::start(i.clone());
        assert_eq!(i.in_flight(), 2);
        drop(a);
        assert_eq!(i.in_flight(), 1);
        drop(b);
        assert_eq!(i.in_flight(), 0);
    }
}

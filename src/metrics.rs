//! Prometheus metrics, served by Pingora's Prometheus service on the admin
//! listener (never the public one). The metric handles live in `Metrics`,
//! registered once into the `prometheus` crate's default registry, which is
//! the one that service exposes.
//!
//! The core counts what every request has (route, method, status, duration,
//! upstream failures, which plugin refused it and why). A plugin that wants
//! a metric of its own asks for it with [`Metrics::counter_vec`] and counts
//! it when it observes a finished request, so this file names no plugin.
//!
//! Labels are bounded: the route is its name (`none` when no route
//! matched), the method one of the standard ones (`OTHER` otherwise), the
//! status its class (`2xx`), a refusal's reason one its plugin defines.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use pingora_prometheus::prometheus::{
    self, register_gauge, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge, register_int_gauge_vec, Gauge, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts,
};

use crate::context::Finished;

pub struct Metrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    pub in_flight: IntGauge,
    upstream_errors: IntCounterVec,
    refusals: IntCounterVec,
    instance_healthy: IntGaugeVec,
    instance_ejected: IntGaugeVec,
    instance_in_flight: IntGaugeVec,
    upstream_in_flight: IntGaugeVec,
    upstream_requests: IntCounterVec,
    upstream_failures: IntCounterVec,
    ejections: IntCounterVec,
    retries: IntCounterVec,
    budget_exhausted: IntCounterVec,
    overloaded: IntCounterVec,
    spans_exported: IntCounter,
    spans_dropped: IntCounterVec,
    reloads: IntCounterVec,
    last_load: Gauge,
    config_info: IntGaugeVec,
    client_connections: IntGaugeVec,
    connections_refused: IntCounterVec,
    /// Plugins' own counters, by name: registered once per process, however
    /// often the plugins are built again.
    plugin_counters: Mutex<HashMap<&'static str, IntCounterVec>>,
}

impl Metrics {
    /// The open-connections gauge and the refusals counter of `listener`,
    /// looked up once rather than per connection.
    pub fn listener(&self, listener: &str) -> (IntGauge, IntCounter) {
        (
            self.client_connections.with_label_values(&[listener]),
            self.connections_refused.with_label_values(&[listener]),
        )
    }

    /// Registers every metric; fails if called twice in one process.
    pub fn register() -> Result<Self, String> {
        let e = |e: prometheus::Error| e.to_string();
        Ok(Metrics {
            requests: register_int_counter_vec!(
                "gateway_requests_total",
                "Requests answered, by route, method and status class",
                &["route", "method", "status"]
            )
            .map_err(e)?,
            duration: register_histogram_vec!(
                "gateway_request_duration_seconds",
                "Time from request to the end of the response, by route",
                &["route"],
                vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
            )
            .map_err(e)?,
            client_connections: register_int_gauge_vec!(
                "gateway_client_connections",
                "Client connections open, by listener",
                &["listener"]
            )
            .map_err(e)?,
            connections_refused: register_int_counter_vec!(
                "gateway_client_connections_refused_total",
                "Client connections closed at once: their listener had max_connections open",
                &["listener"]
            )
            .map_err(e)?,
            in_flight: register_int_gauge!(
                "gateway_requests_in_flight",
                "Requests being handled right now"
            )
            .map_err(e)?,
            upstream_errors: register_int_counter_vec!(
                "gateway_upstream_errors_total",
                "Failed connects and timeouts, by upstream service",
                &["upstream", "kind"]
            )
            .map_err(e)?,
            refusals: register_int_counter_vec!(
                "gateway_refusals_total",
                "Requests a plugin refused, by plugin and reason",
                &["plugin", "reason"]
            )
            .map_err(e)?,
            instance_healthy: register_int_gauge_vec!(
                "gateway_upstream_instance_healthy",
                "1 when the instance passes its health check (or has none)",
                &["upstream", "instance"]
            )
            .map_err(e)?,
            instance_ejected: register_int_gauge_vec!(
                "gateway_upstream_instance_ejected",
                "1 while outlier detection keeps the instance out",
                &["upstream", "instance"]
            )
            .map_err(e)?,
            instance_in_flight: register_int_gauge_vec!(
                "gateway_upstream_instance_in_flight",
                "Tries in progress on the instance",
                &["upstream", "instance"]
            )
            .map_err(e)?,
            upstream_in_flight: register_int_gauge_vec!(
                "gateway_upstream_in_flight",
                "Requests in progress to the upstream (what max_in_flight limits)",
                &["upstream"]
            )
            .map_err(e)?,
            upstream_requests: register_int_counter_vec!(
                "gateway_upstream_requests_total",
                "Tries sent to an instance, retries included",
                &["upstream", "instance"]
            )
            .map_err(e)?,
            upstream_failures: register_int_counter_vec!(
                "gateway_upstream_failures_total",
                "Failed tries, by instance and kind (connect, reset, timeout, status)",
                &["upstream", "instance", "kind"]
            )
            .map_err(e)?,
            ejections: register_int_counter_vec!(
                "gateway_upstream_ejections_total",
                "Times outlier detection ejected the instance",
                &["upstream", "instance"]
            )
            .map_err(e)?,
            retries: register_int_counter_vec!(
                "gateway_upstream_retries_total",
                "Retries, by what failed (connect, reset, timeout, status)",
                &["upstream", "reason"]
            )
            .map_err(e)?,
            budget_exhausted: register_int_counter_vec!(
                "gateway_upstream_retry_budget_exhausted_total",
                "Retries refused because the upstream's retry budget was spent",
                &["upstream"]
            )
            .map_err(e)?,
            overloaded: register_int_counter_vec!(
                "gateway_upstream_overloaded_total",
                "Requests answered 503 because max_in_flight was reached",
                &["upstream"]
            )
            .map_err(e)?,
            spans_exported: register_int_counter!(
                "gateway_trace_spans_exported_total",
                "Spans the collector accepted"
            )
            .map_err(e)?,
            spans_dropped: register_int_counter_vec!(
                "gateway_trace_spans_dropped_total",
                "Spans lost, by reason (queue_full, export_failed)",
                &["reason"]
            )
            .map_err(e)?,
            reloads: register_int_counter_vec!(
                "gateway_config_reloads_total",
                "Config reloads in the running process, by result (ok, error)",
                &["result"]
            )
            .map_err(e)?,
            last_load: register_gauge!(
                "gateway_config_last_reload_success_timestamp_seconds",
                "When the running config was loaded, at startup or by a reload (Unix time)"
            )
            .map_err(e)?,
            config_info: register_int_gauge_vec!(
                "gateway_config_info",
                "1, labelled with the SHA-256 of the running config file",
                &["sha256"]
            )
            .map_err(e)?,
            plugin_counters: Mutex::new(HashMap::new()),
        })
    }

    /// Drops every upstream gauge, before they are set for a new state.
    pub fn forget_upstreams(&self) {
        self.instance_healthy.reset();
        self.instance_ejected.reset();
        self.instance_in_flight.reset();
        self.upstream_in_flight.reset();
    }

    /// The config with this SHA-256 serves from now on; `reloaded` when a
    /// reload (not startup) loaded it.
    pub fn config_loaded(&self, sha256: &str, reloaded: bool) {
        if reloaded {
            self.reloads.with_label_values(&["ok"]).inc();
        } else {
            // Both results exist from the start, so a rate can be taken.
            self.reloads.with_label_values(&["ok"]);
            self.reloads.with_label_values(&["error"]);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.last_load.set(now.as_secs_f64());
        self.config_info.reset();
        self.config_info.with_label_values(&[sha256]).set(1);
    }

    pub fn spans_exported(&self, count: u64) {
        self.spans_exported.inc_by(count);
    }

    pub fn spans_dropped(&self, reason: &str, count: u64) {
        self.spans_dropped
            .with_label_values(&[reason])
            .inc_by(count);
    }

    /// A reload was refused; the running config keeps serving.
    pub fn reload_refused(&self) {
        self.reloads.with_label_values(&["error"]).inc();
    }

    /// A counter of a plugin's own, registered the first time it is asked
    /// for; later calls return the same counter. Called when chains are
    /// built, never per request.
    pub fn counter_vec(&self, name: &'static str, help: &str, labels: &[&str]) -> IntCounterVec {
        let mut counters = self
            .plugin_counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counters
            .entry(name)
            .or_insert_with(|| {
                let counter = IntCounterVec::new(Opts::new(name, help), labels)
                    .expect("a valid metric name and labels");
                prometheus::register(Box::new(counter.clone()))
                    .expect("plugin metric names are unique");
                counter
            })
            .clone()
    }

    pub fn observe(&self, done: &Finished) {
        self.requests
            .with_label_values(&[
                done.route,
                method_label(done.method),
                status_class(done.status),
            ])
            .inc();
        self.duration
            .with_label_values(&[done.route])
            .observe(done.duration.as_secs_f64());
        let ctx = done.ctx;
        if let Some(upstream) = done.upstream {
            if ctx.connect_failures > 0 {
                self.upstream_errors
                    .with_label_values(&[upstream, "connect"])
                    .inc_by(u64::from(ctx.connect_failures));
            }
            if ctx.timed_out {
                self.upstream_errors
                    .with_label_values(&[upstream, "timeout"])
                    .inc();
            }
        }
        if let Some(refusal) = ctx.refusal {
            self.refusals
                .with_label_values(&[refusal.plugin, refusal.reason])
                .inc();
        }
    }

    /// The counters of one upstream, resolved once.
    pub fn upstream(&self, upstream: &str) -> UpstreamMetrics {
        let retried = |reason| self.retries.with_label_values(&[upstream, reason]);
        UpstreamMetrics {
            retries: FAILURE_KINDS.map(retried),
            budget_exhausted: self.budget_exhausted.with_label_values(&[upstream]),
            overloaded: self.overloaded.with_label_values(&[upstream]),
        }
    }

    /// The counters of one instance, resolved once.
    pub fn instance(&self, upstream: &str, addr: SocketAddr) -> InstanceMetrics {
        let instance = addr.to_string();
        let failed = |kind| {
            self.upstream_failures
                .with_label_values(&[upstream, &instance, kind])
        };
        InstanceMetrics {
            requests: self
                .upstream_requests
                .with_label_values(&[upstream, &instance]),
            failures: FAILURE_KINDS.map(failed),
            ejections: self.ejections.with_label_values(&[upstream, &instance]),
        }
    }

    /// Copies an upstream's state into its gauges; once a second.
    pub fn record_upstream(&self, upstream: &str, in_flight: u32, instances: &[InstanceState]) {
        self.upstream_in_flight
            .with_label_values(&[upstream])
            .set(i64::from(in_flight));
        for i in instances {
            let labels = [upstream, &i.addr.to_string()];
            self.instance_healthy
                .with_label_values(&labels)
                .set(i64::from(i.healthy));
            self.instance_ejected
                .with_label_values(&labels)
                .set(i64::from(i.ejected));
            self.instance_in_flight
                .with_label_values(&labels)
                .set(i64::from(i.in_flight));
        }
    }
}

/// The kinds of failed tries, in the order `UpstreamMetrics` and
/// `InstanceMetrics` keep their counters.
const FAILURE_KINDS: [&str; 4] = ["connect", "reset", "timeout", "status"];

fn failure_index(kind: &str) -> usize {
    FAILURE_KINDS.iter().position(|k| *k == kind).unwrap_or(0)
}

pub struct UpstreamMetrics {
    retries: [IntCounter; 4],
    budget_exhausted: IntCounter,
    overloaded: IntCounter,
}

impl UpstreamMetrics {
    pub fn retried(&self, kind: &str) {
        self.retries[failure_index(kind)].inc();
    }

    pub fn budget_exhausted(&self) {
        self.budget_exhausted.inc();
    }

    pub fn overloaded(&self) {
        self.overloaded.inc();
    }
}

pub struct InstanceMetrics {
    requests: IntCounter,
    failures: [IntCounter; 4],
    ejections: IntCounter,
}

impl InstanceMetrics {
    pub fn started(&self) {
        self.requests.inc();
    }

    pub fn failure(&self, kind: &str) {
        self.failures[failure_index(kind)].inc();
    }

    pub fn ejected(&self) {
        self.ejections.inc();
    }
}

/// One instance as the gauges show it.
pub struct InstanceState {
    pub addr: SocketAddr,
    pub healthy: bool,
    pub ejected: bool,
    pub in_flight: u32,
}

fn method_label(method: &str) -> &str {
    match method {
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => method,
        _ => "OTHER",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_bounded() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("BREW"), "OTHER");
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(499), "4xx");
        assert_eq!(status_class(0), "none");
    }
}

//! Prometheus metrics, served by Pingora's Prometheus service on the admin
//! listener (never the public one). The metric handles live in `Metrics`,
//! registered once into the `prometheus` crate's default registry, which is
//! the one that service exposes.
//!
//! Labels are bounded: the route is its configured prefix (`none` when no
//! route matched), the method one of the standard ones (`OTHER` otherwise),
//! the status its class (`2xx`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora_prometheus::prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge, register_int_gauge_vec,
    HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
};

use crate::upstream::Upstream;

pub struct Metrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    pub in_flight: IntGauge,
    upstream_errors: IntCounterVec,
    jwt_rejections: IntCounterVec,
    rate_limited: IntCounterVec,
    instance_healthy: IntGaugeVec,
}

/// What one finished request contributes.
pub struct Observation<'a> {
    pub route: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub method: &'a str,
    pub status: u16,
    pub duration: Duration,
    pub connect_failures: u8,
    pub timed_out: bool,
    pub jwt_rejection: Option<&'static str>,
    pub rate_limited: bool,
}

impl Metrics {
    /// Registers every metric; fails if called twice in one process.
    pub fn register() -> Result<Self, String> {
        let e = |e: pingora_prometheus::prometheus::Error| e.to_string();
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
            jwt_rejections: register_int_counter_vec!(
                "gateway_jwt_rejections_total",
                "Requests refused by JWT auth, by reason",
                &["reason"]
            )
            .map_err(e)?,
            rate_limited: register_int_counter_vec!(
                "gateway_rate_limited_total",
                "Requests refused by a rate limit, by route",
                &["route"]
            )
            .map_err(e)?,
            instance_healthy: register_int_gauge_vec!(
                "gateway_upstream_instance_healthy",
                "1 when the instance passes its health check (or has none)",
                &["upstream", "instance"]
            )
            .map_err(e)?,
        })
    }

    pub fn observe(&self, o: &Observation) {
        let route = o.route.unwrap_or("none");
        self.requests
            .with_label_values(&[route, method_label(o.method), status_class(o.status)])
            .inc();
        self.duration
            .with_label_values(&[route])
            .observe(o.duration.as_secs_f64());
        if let Some(upstream) = o.upstream {
            if o.connect_failures > 0 {
                self.upstream_errors
                    .with_label_values(&[upstream, "connect"])
                    .inc_by(u64::from(o.connect_failures));
            }
            if o.timed_out {
                self.upstream_errors
                    .with_label_values(&[upstream, "timeout"])
                    .inc();
            }
        }
        if let Some(reason) = o.jwt_rejection {
            self.jwt_rejections.with_label_values(&[reason]).inc();
        }
        if o.rate_limited {
            self.rate_limited.with_label_values(&[route]).inc();
        }
    }
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

/// Copies each instance's health into its gauge once a second.
pub struct HealthGauges {
    pub metrics: Arc<Metrics>,
    pub upstreams: Vec<Arc<Upstream>>,
}

#[async_trait]
impl BackgroundService for HealthGauges {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            for upstream in &self.upstreams {
                for (addr, healthy) in upstream.health() {
                    self.metrics
                        .instance_healthy
                        .with_label_values(&[upstream.name.as_str(), &addr.to_string()])
                        .set(i64::from(healthy));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
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

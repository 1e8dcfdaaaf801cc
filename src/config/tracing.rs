//! The `tracing:` section: where spans are exported (OTLP over HTTP with
//! protobuf), whether a client's trace is continued, how many new traces are
//! sampled, and what the exporter's queue and batches may hold.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::yaml::values::duration;
use crate::yaml::Invalid;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    /// The collector's OTLP/HTTP traces URL, e.g.
    /// `http://otel-collector:4318/v1/traces`.
    pub endpoint: String,
    #[serde(default)]
    pub propagation: Propagation,
    /// The share of new traces recorded; a continued one follows its parent.
    #[serde(default = "one")]
    pub sampling_ratio: f64,
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// More resource attributes, e.g. `deployment.environment: prod`.
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, String>,
    /// Spans waiting for export at most; more are dropped and counted.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    #[serde(default = "default_interval", with = "duration")]
    pub export_interval: Duration,
    #[serde(default = "default_timeout", with = "duration")]
    pub export_timeout: Duration,
}

fn one() -> f64 {
    1.0
}

fn default_service_name() -> String {
    "api-gateway".into()
}

fn default_max_queue() -> usize {
    2048
}

fn default_max_batch() -> usize {
    512
}

fn default_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// What the gateway does with a client's `traceparent`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Propagation {
    /// Continue the client's trace, and follow its sampling decision.
    #[default]
    Continue,
    /// Start every trace at the gateway, for clients that are not trusted
    /// to pick trace ids or sampling.
    Restart,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    pub endpoint: String,
    pub propagation: Propagation,
    pub sampling_ratio: f64,
    /// `service.name` first, then the configured attributes.
    pub resource: Vec<(String, String)>,
    pub max_queue: usize,
    pub max_batch: usize,
    pub export_interval: Duration,
    pub export_timeout: Duration,
}

impl TryFrom<RawTracing> for TracingSettings {
    type Error = Invalid;

    fn try_from(raw: RawTracing) -> Result<Self, Invalid> {
        let uri: http::Uri = raw
            .endpoint
            .parse()
            .map_err(|_| Invalid::at("endpoint", format!("`{}` is not a URL", raw.endpoint)))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(Invalid::at(
                "endpoint",
                format!(
                    "`{}` is not an http(s) URL (OTLP/HTTP, e.g. http://127.0.0.1:4318/v1/traces)",
                    raw.endpoint
                ),
            ));
        }
        if !(0.0..=1.0).contains(&raw.sampling_ratio) {
            return Err(Invalid::at("sampling_ratio", "from 0 to 1"));
        }
        if raw.service_name.is_empty() {
            return Err(Invalid::at("service_name", "must not be empty"));
        }
        if raw.resource_attributes.contains_key("service.name") {
            return Err(Invalid::at(
                "resource_attributes",
                "`service.name` is set by `service_name`",
            ));
        }
        if raw.max_queue == 0 || raw.max_batch == 0 || raw.max_batch > raw.max_queue {
            return Err(Invalid::at(
                "max_batch",
                "max_queue and max_batch must be at least 1, and max_batch at most max_queue",
            ));
        }
        for (key, value) in [
            ("export_interval", raw.export_interval),
            ("export_timeout", raw.export_timeout),
        ] {
            if value.is_zero() {
                return Err(Invalid::at(key, "must be more than zero"));
            }
        }
        let mut resource = vec![("service.name".to_string(), raw.service_name)];
        resource.extend(raw.resource_attributes);
        Ok(TracingSettings {
            endpoint: raw.endpoint,
            propagation: raw.propagation,
            sampling_ratio: raw.sampling_ratio,
            resource,
            max_queue: raw.max_queue,
            max_batch: raw.max_batch,
            export_interval: raw.export_interval,
            export_timeout: raw.export_timeout,
        })
    }
}

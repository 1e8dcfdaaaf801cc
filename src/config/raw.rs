//! The YAML file exactly as written, before any checking beyond its shape:
//! the core sections here, each plugin's own section in the plugin's folder.
//!
//! Every struct denies unknown fields, so a typo (`routez:`, `stip_prefix:`)
//! stops startup instead of being silently ignored the way Pingora's own
//! `ServerConf` parser would. Defaults live here, next to the key they belong
//! to; `README.md` lists the same keys and defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::client::RawClient;
use super::tracing::RawTracing;
use crate::access_log::Format;
use crate::plugin::cors::RawCors;
use crate::plugin::jwt_auth::config::{Mode, RawAuthOverride, RawJwt, RawRequire};
use crate::plugin::rate_limit::config::{RawBackends, RawRateLimit};
use crate::yaml::values::{duration, ByteSize, MethodName};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default = "default_max_body_size")]
    pub max_body_size: ByteSize,
    #[serde(default)]
    pub client: RawClient,
    #[serde(default)]
    pub access_log: RawAccessLog,
    pub jwt: Option<RawJwt>,
    /// Prometheus metrics at `/metrics` on their own listener.
    pub admin: Option<RawAdmin>,
    /// For every route that does not have its own, and for requests that
    /// match no route.
    pub cors: Option<RawCors>,
    /// The default policy of every route without its own, and of requests
    /// that match no route.
    pub rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    pub rate_limit_backends: RawBackends,
    /// OpenTelemetry traces over OTLP/HTTP; absent: off.
    pub tracing: Option<RawTracing>,
    pub upstreams: BTreeMap<String, RawUpstream>,
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Keep it off the public network, e.g. 127.0.0.1:9090.
    pub address: String,
}

/// Pingora's own settings; `ServerConf` is built from these in code.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Worker threads; 0 means one per CPU core.
    pub threads: usize,
    pub work_stealing: bool,
    pub pid_file: String,
    pub upgrade_sock: String,
    /// Only used with `-d`: where the daemon writes Pingora's error log.
    pub error_log: Option<String>,
    /// PEM bundle that verifies `https://` upstreams instead of the system
    /// store, for services with certificates from a private CA.
    pub ca_file: Option<String>,
    #[serde(with = "duration")]
    pub grace_period: Duration,
    #[serde(with = "duration")]
    pub graceful_shutdown_timeout: Duration,
    pub upstream_keepalive_pool_size: usize,
    /// HTTP/2 without TLS (prior knowledge) on the plain listeners.
    pub h2c: bool,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            threads: 0,
            work_stealing: true,
            pid_file: "/tmp/api-gateway.pid".into(),
            upgrade_sock: "/tmp/api-gateway-upgrade.sock".into(),
            error_log: None,
            ca_file: None,
            // Pingora's 300 s default keeps an old process around for five
            // minutes after every reload; in-flight API calls finish far sooner.
            grace_period: Duration::from_secs(10),
            graceful_shutdown_timeout: Duration::from_secs(5),
            upstream_keepalive_pool_size: 128,
            h2c: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub address: String,
    /// HTTPS with these files; absent: plain HTTP.
    pub tls: Option<RawTls>,
    /// With TLS: offer HTTP/2 by ALPN next to HTTP/1.1.
    #[serde(default = "yes")]
    pub http2: bool,
    /// Plain listener only: answer every request with a 308 to the same
    /// URL on the first TLS listener.
    #[serde(default)]
    pub redirect_to_https: bool,
    /// Client connections open at once; more are closed as they come.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_max_connections() -> usize {
    10_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain, leaf first.
    pub cert_file: String,
    /// PEM private key.
    pub key_file: String,
}

fn default_max_body_size() -> ByteSize {
    ByteSize(10 * 1024 * 1024)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAccessLog {
    pub format: Format,
    pub output: String,
}

impl Default for RawAccessLog {
    fn default() -> Self {
        RawAccessLog {
            format: Format::Dev,
            output: "stdout".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub instances: Vec<RawInstance>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    pub health_check: Option<RawHealthCheck>,
    /// How often host names in `instances` are resolved again.
    #[serde(default = "default_resolve_interval", with = "duration")]
    pub resolve_interval: Duration,
    #[serde(default)]
    pub load_balancing: BalancePolicy,
    /// With `consistent_hash`: what a request is hashed on.
    pub hash_on: Option<RawHashKey>,
    /// Passive health: instances that keep failing are ejected for a while.
    pub outlier_detection: Option<RawOutlier>,
    #[serde(default)]
    pub retry_budget: RawRetryBudget,
    /// Requests in flight to the upstream at most; past it, 503 at once.
    pub max_in_flight: Option<u32>,
}

/// An instance URL, or a URL with a weight.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "an instance URL, or {url: ..., weight: N}")]
pub enum RawInstance {
    Url(String),
    Weighted(RawWeightedInstance),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeightedInstance {
    pub url: String,
    pub weight: u16,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalancePolicy {
    #[default]
    RoundRobin,
    /// The less busy of two instances picked at random.
    LeastRequest,
    /// The same key to the same instance (`hash_on`).
    ConsistentHash,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "by", rename_all = "lowercase", deny_unknown_fields)]
pub enum RawHashKey {
    Header {
        name: String,
    },
    Cookie {
        name: String,
    },
    Ip,
    /// A claim of the verified token.
    Claim {
        name: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOutlier {
    pub consecutive_failures: u32,
    /// Upstream statuses that count as failures; default every 5xx.
    pub failure_statuses: Option<Vec<u16>>,
    #[serde(with = "duration")]
    pub base_ejection_time: Duration,
    #[serde(with = "duration")]
    pub max_ejection_time: Duration,
    pub max_ejected_percent: u8,
}

impl Default for RawOutlier {
    fn default() -> Self {
        RawOutlier {
            consecutive_failures: 5,
            failure_statuses: None,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// Retries allowed, as a share of requests over the last 10 s, plus a floor.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetryBudget {
    pub percent: u32,
    pub min_retries: u32,
}

impl Default for RawRetryBudget {
    fn default() -> Self {
        RawRetryBudget {
            percent: 20,
            min_retries: 3,
        }
    }
}

fn default_resolve_interval() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTimeouts {
    /// TCP connect plus TLS handshake.
    #[serde(with = "duration")]
    pub connect: Duration,
    /// Longest wait for the next bytes of the upstream's response.
    #[serde(with = "duration")]
    pub read: Duration,
    #[serde(with = "duration")]
    pub write: Duration,
    /// How long an unused keep-alive connection stays in the pool.
    #[serde(with = "duration")]
    pub idle: Duration,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        RawTimeouts {
            connect: Duration::from_secs(3),
            read: Duration::from_secs(60),
            write: Duration::from_secs(60),
            idle: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_health_interval", with = "duration")]
    pub interval: Duration,
    #[serde(default = "default_health_timeout", with = "duration")]
    pub timeout: Duration,
}

fn default_health_path() -> String {
    "/health".into()
}

fn default_health_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_health_timeout() -> Duration {
    Duration::from_secs(1)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Names the route in metrics and the access log; default: its host
    /// and prefix.
    pub name: Option<String>,
    pub prefix: String,
    pub upstream: String,
    pub host: Option<String>,
    #[serde(default = "yes")]
    pub strip_prefix: bool,
    pub replace_prefix: Option<String>,
    #[serde(default)]
    pub preserve_host: bool,
    /// Whether the JWT plugin asks for a token.
    #[serde(default)]
    pub auth: Mode,
    #[serde(default)]
    pub require: RawRequire,
    /// Replaces the global `cors` for this route.
    pub cors: Option<RawCors>,
    /// Replaces the global `rate_limit` for this route, with its own budget.
    pub rate_limit: Option<RawRateLimit>,
    /// Per method and path inside the route; the first match replaces the
    /// route's `auth` and `require`.
    #[serde(default)]
    pub auth_overrides: Vec<RawAuthOverride>,
    #[serde(default)]
    pub retry: RawRetry,
    /// The longest a request waits for its response to begin, over all its
    /// tries; then 504.
    #[serde(default, with = "duration::option")]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetry {
    /// Tries in all, the first included.
    pub attempts: u8,
    pub on: Vec<RawRetryOn>,
    /// Default: the idempotent ones. A connect failure is retried for any
    /// method: nothing was sent.
    pub methods: Option<Vec<MethodName>>,
    #[serde(with = "duration::option")]
    pub per_try_timeout: Option<Duration>,
}

impl Default for RawRetry {
    fn default() -> Self {
        RawRetry {
            attempts: 2,
            on: vec![RawRetryOn::Condition(RetryCondition::ConnectFailure)],
            methods: None,
            per_try_timeout: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "connect_failure, reset, timeout, or a status such as 503"
)]
pub enum RawRetryOn {
    Status(u16),
    Condition(RetryCondition),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryCondition {
    ConnectFailure,
    /// The connection broke before any response byte.
    Reset,
    /// No response within `per_try_timeout` (or the read timeout).
    Timeout,
}

fn yes() -> bool {
    true
}

//! The YAML file exactly as written, before any checking beyond its shape.
//!
//! Every struct denies unknown fields, so a typo (`routez:`, `stip_prefix:`)
//! stops startup instead of being silently ignored the way Pingora's own
//! `ServerConf` parser would. Defaults live here, next to the key they belong
//! to; `README.md` lists the same keys and defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::units::{duration, ByteSize};

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
    pub access_log: RawAccessLog,
    pub upstreams: BTreeMap<String, RawUpstream>,
    pub routes: Vec<RawRoute>,
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
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub address: String,
}

fn default_max_body_size() -> ByteSize {
    ByteSize(10 * 1024 * 1024)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAccessLog {
    pub format: LogFormat,
    pub output: String,
}

impl Default for RawAccessLog {
    fn default() -> Self {
        RawAccessLog {
            format: LogFormat::Dev,
            output: "stdout".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// morgan's `dev`: `GET /users/me 200 1.234 ms - 56`.
    Dev,
    /// One JSON object per line, for log shippers.
    Json,
    Off,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub instances: Vec<String>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    pub health_check: Option<RawHealthCheck>,
    /// How often host names in `instances` are resolved again.
    #[serde(default = "default_resolve_interval", with = "duration")]
    pub resolve_interval: Duration,
}

fn default_resolve_interval() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
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
    pub prefix: String,
    pub upstream: String,
    pub host: Option<String>,
    #[serde(default = "yes")]
    pub strip_prefix: bool,
    pub replace_prefix: Option<String>,
    #[serde(default)]
    pub preserve_host: bool,
}

fn yes() -> bool {
    true
}

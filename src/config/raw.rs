//! The YAML file exactly as written, before any checking beyond its shape.
//!
//! Every struct denies unknown fields, so a typo (`routez:`, `stip_prefix:`)
//! stops startup instead of being silently ignored the way Pingora's own
//! `ServerConf` parser would. Defaults live here, next to the key they belong
//! to; `README.md` lists the same keys and defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use jsonwebtoken::Algorithm;
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
    pub rate_limit_backends: RawRateLimitBackends,
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
    #[serde(default)]
    pub auth: AuthMode,
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
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No token needed, none verified.
    #[default]
    Off,
    /// A valid token is used, no token passes, an invalid one is refused.
    Optional,
    Required,
}

/// What a valid token must also carry, else 403.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRequire {
    /// All of these, from `scope` (space-separated) or `scp`.
    pub scopes: Vec<String>,
    /// At least one of these, from the `roles` claim.
    pub roles: Vec<String>,
    /// Each claim equal to (or, for a list claim, containing) the value.
    pub claims: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthOverride {
    /// Empty: every method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// The whole (normalized) request path, e.g. `/users/login`.
    pub path: Option<String>,
    /// Or a path prefix, matched on segment boundaries.
    pub prefix: Option<String>,
    pub auth: AuthMode,
    #[serde(default)]
    pub require: RawRequire,
}

/// A smooth limit (GCRA): `requests` per `per` on average, up to `burst`
/// at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub requests: Option<u64>,
    #[serde(default = "default_per", with = "duration")]
    pub per: Duration,
    /// Default: `requests`.
    pub burst: Option<u64>,
    #[serde(default)]
    pub key: RateKey,
    #[serde(default)]
    pub backend: RateBackend,
}

fn default_per() -> Duration {
    Duration::from_secs(1)
}

/// Whose budget a request spends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "by", rename_all = "lowercase", deny_unknown_fields)]
pub enum RateKey {
    /// The client address (behind `trusted_proxies`, the forwarded one).
    #[default]
    Ip,
    /// A claim of the verified token; anonymous requests by address.
    Claim {
        #[serde(default = "default_claim")]
        name: String,
    },
    /// A request header (an API key); requests without it by address.
    Header { name: String },
}

fn default_claim() -> String {
    "sub".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateBackend {
    /// In this process: each gateway instance has its own budgets.
    #[default]
    Local,
    /// In Redis: one budget shared by every instance.
    Redis,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRateLimitBackends {
    pub local: RawLocalBackend,
    pub redis: Option<RawRedisBackend>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLocalBackend {
    /// Clients remembered at most; the least recently seen go first.
    pub max_keys: usize,
}

impl Default for RawLocalBackend {
    fn default() -> Self {
        RawLocalBackend { max_keys: 100_000 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedisBackend {
    /// `redis://host:port[/db]`, usually `${REDIS_URL}`.
    pub url: String,
    /// Longest wait for one decision before `on_failure` applies.
    #[serde(default = "default_redis_timeout", with = "duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub on_failure: FailureMode,
}

fn default_redis_timeout() -> Duration {
    Duration::from_millis(50)
}

/// What a request gets when Redis cannot decide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Let it through: Redis trouble does not take the API down.
    #[default]
    FailOpen,
    /// Refuse it with 429.
    FailClosed,
}

/// Cross-origin access, as the `cors` Express middleware does it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCors {
    /// `false` turns CORS handling off (on a route, under a global policy).
    pub enabled: bool,
    /// Exact origins, `*`, `https://*.shop.example`, or `null`.
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    /// `["*"]`: allow whatever the preflight asks for.
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub allow_credentials: bool,
    #[serde(with = "duration::option")]
    pub max_age: Option<Duration>,
}

impl Default for RawCors {
    fn default() -> Self {
        RawCors {
            enabled: true,
            allow_origins: vec!["*".into()],
            allow_methods: ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE"]
                .map(String::from)
                .to_vec(),
            allow_headers: vec!["*".into()],
            expose_headers: Vec::new(),
            allow_credentials: false,
            max_age: None,
        }
    }
}

/// Token verification, shared by every route whose `auth` is not `off`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    pub keys: Vec<RawJwtKey>,
    /// Accepted `iss` values; empty: not checked.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Accepted `aud` values; empty: not checked.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway", with = "duration")]
    pub leeway: Duration,
    #[serde(default = "yes")]
    pub require_exp: bool,
    /// Also look for the token in this cookie when there is no bearer token.
    pub cookie: Option<String>,
    /// Pass the client's `Authorization` header on unchanged.
    #[serde(default = "yes")]
    pub forward_authorization: bool,
    /// Claim name to request header, e.g. `sub: X-User-Id`.
    #[serde(default)]
    pub claim_headers: BTreeMap<String, String>,
    /// Verified tokens remembered (0: none), each until its `exp` or for
    /// `cache_ttl`, whichever is first.
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
    #[serde(default = "default_cache_ttl", with = "duration")]
    pub cache_ttl: Duration,
}

fn default_cache_size() -> usize {
    10_000
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(60)
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

/// One key source: exactly one of `secret`, `public_key_file`, `jwks_file`
/// and `jwks_url`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwtKey {
    pub kid: Option<String>,
    pub algorithms: Option<Vec<Algorithm>>,
    pub secret: Option<String>,
    pub public_key_file: Option<String>,
    pub jwks_file: Option<String>,
    pub jwks_url: Option<String>,
    /// Only with `jwks_url`.
    pub jwks: Option<RawJwksFetch>,
}

/// How a `jwks_url` is kept fresh.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawJwksFetch {
    #[serde(with = "duration")]
    pub refresh_interval: Duration,
    /// Least time between fetches caused by an unknown `kid`, and between
    /// retries while the URL fails.
    #[serde(with = "duration")]
    pub refetch_cooldown: Duration,
    #[serde(with = "duration")]
    pub timeout: Duration,
}

impl Default for RawJwksFetch {
    fn default() -> Self {
        RawJwksFetch {
            refresh_interval: Duration::from_secs(600),
            refetch_cooldown: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
        }
    }
}

fn yes() -> bool {
    true
}

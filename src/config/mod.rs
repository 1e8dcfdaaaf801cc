//! Loading `conf/gateway.yaml`: read, expand `${VAR}` and parse into the
//! raw shape (`yaml/`, `raw.rs`), then validate once into the model the
//! gateway runs on. The core sections are validated here; each plugin
//! converts its own section, in its own folder.
//!
//! Everything that can be checked or computed before the first request is
//! done here, so a bad file stops startup (or is refused by a reload) with
//! one message naming the file, the key path (`routes[2].upstream`) and the
//! reason, and request handling never looks anything up by string.

mod client;
mod env;
mod listeners;
mod raw;
mod routes;
mod server;
mod tracing;
mod upstreams;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;

pub use client::{ClientSettings, HeadLimits};
pub use listeners::{ListenerSettings, TlsFiles};
pub use routes::{RetryPolicy, Rewrite, RouteSettings, MAX_ATTEMPTS, UNMATCHED};
pub use server::ServerSettings;
pub use tracing::{Propagation, TracingSettings};
pub use upstreams::{
    Balance, HashKey, HealthCheck, InstanceUrl, OutlierSettings, RetryBudget, Timeouts,
    UpstreamSettings,
};

use crate::access_log;
use crate::plugin::chain::{PluginConfig, SharedSettings};
use crate::plugin::cors::CorsPolicy;
use crate::plugin::jwt_auth::config::JwtSettings;
use crate::plugin::rate_limit::config::{BackendKind, Backends, RateLimitPolicy};
use crate::yaml::{self, Invalid};
use env::Env;
use raw::RawConfig;

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    pub server: ServerSettings,
    pub listeners: Vec<ListenerSettings>,
    /// Where Prometheus metrics are served; `None`: not at all.
    pub admin: Option<SocketAddr>,
    pub access_log: access_log::Settings,
    pub routing: RoutingSettings,
    /// Usable but probably unintended settings, for the log.
    pub warnings: Vec<String>,
    /// The SHA-256 of the file as read (before `${VAR}` expansion), in hex:
    /// which file a running gateway was loaded from.
    pub sha256: String,
}

/// What requests are served by: the routes, their upstreams and plugins,
/// and the limits every request gets.
#[derive(Debug)]
pub struct RoutingSettings {
    pub trusted_proxies: Vec<IpNet>,
    pub max_body_size: u64,
    pub client: ClientSettings,
    pub upstreams: Vec<UpstreamSettings>,
    pub routes: Vec<RouteSettings>,
    /// The plugins for requests that match no route (CORS on their 404s,
    /// the global rate limit).
    pub unmatched_plugins: Vec<PluginConfig>,
    /// What the plugins of all routes share.
    pub plugins: SharedSettings,
    /// `None`: no tracing.
    pub tracing: Option<TracingSettings>,
}

/// A configuration that cannot be used, and where exactly.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problem: Invalid,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates the file, taking `${VAR}` values from the process
/// environment and the `.env` file in the working directory.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let dotenv = Path::new(".env");
    let env = Env::load(dotenv).map_err(|reason| ConfigError {
        file: dotenv.to_path_buf(),
        problem: Invalid::here(reason),
    })?;
    let error = |problem| ConfigError {
        file: file.to_path_buf(),
        problem,
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| error(Invalid::here(format!("cannot read: {e}"))))?;
    let mut config = parse(&text, &|name| env.get(name)).map_err(error)?;
    config.sha256 = sha256_hex(text.as_bytes());
    Ok(config)
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Validates a file's text, taking `${VAR}` values from `env`: `load`
/// without the file system, for tests and the fuzz targets.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Invalid> {
    Config::try_from(yaml::parse::<RawConfig>(text, env)?)
}

impl TryFrom<RawConfig> for Config {
    type Error = Invalid;

    fn try_from(raw: RawConfig) -> Result<Self, Invalid> {
        let server = ServerSettings::try_from(raw.server).map_err(|e| e.under("server"))?;
        let listeners = listeners::validate_listeners(raw.listeners)?;
        let client = ClientSettings::try_from(raw.client).map_err(|e| e.under("client"))?;

        let trusted_proxies = raw
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, text)| {
                parse_cidr(text)
                    .map_err(|reason| Invalid::at(format!("trusted_proxies[{i}]"), reason))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let access_log = access_log::Settings {
            format: raw.access_log.format,
            output: match raw.access_log.output.as_str() {
                "stdout" => access_log::Output::Stdout,
                "stderr" => access_log::Output::Stderr,
                "" => {
                    return Err(Invalid::at(
                        "access_log.output",
                        "write stdout, stderr or a file path",
                    ))
                }
                path => access_log::Output::File(PathBuf::from(path)),
            },
        };

        let admin = raw
            .admin
            .map(|admin| admin_address(&admin.address, &listeners))
            .transpose()
            .map_err(|reason| Invalid::at("admin.address", reason))?;

        let mut warnings = Vec::new();
        let jwt = raw
            .jwt
            .map(|jwt| JwtSettings::from_raw(jwt, &server.ca_roots, &mut warnings))
            .transpose()
            .map_err(|e| e.under("jwt"))?;

        let cors = match raw.cors {
            Some(section) if section.enabled => {
                Some(CorsPolicy::try_from(section).map_err(|e| e.under("cors"))?)
            }
            _ => None,
        };
        let mut backends = Backends::try_from(raw.rate_limit_backends)
            .map_err(|e| e.under("rate_limit_backends"))?;
        let rate_limit = match raw.rate_limit {
            Some(section) if section.enabled => Some(
                RateLimitPolicy::from_raw(section, "global", &backends)
                    .map_err(|e| e.under("rate_limit"))?,
            ),
            _ => None,
        };

        let tracing = raw
            .tracing
            .map(|t| TracingSettings::try_from(t).map_err(|e| e.under("tracing")))
            .transpose()?;

        let upstreams = raw
            .upstreams
            .into_iter()
            .map(|(name, up)| {
                let at = format!("upstreams.{name}");
                UpstreamSettings::from_raw(name, up).map_err(|e| e.under(&at))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let defaults = routes::Defaults {
            has_jwt: jwt.is_some(),
            cors: cors.as_ref(),
            rate_limit: rate_limit.as_ref(),
            backends: &backends,
        };
        let routes = routes::validate_routes(raw.routes, &upstreams, &defaults)?;
        let unmatched_plugins: Vec<PluginConfig> = cors
            .map(PluginConfig::Cors)
            .into_iter()
            .chain(rate_limit.map(PluginConfig::RateLimit))
            .collect();

        // Redis is connected to only when some policy keeps budgets there.
        let redis_used = routes
            .iter()
            .flat_map(|r| &r.plugins)
            .chain(&unmatched_plugins)
            .any(|p| matches!(p, PluginConfig::RateLimit(l) if l.backend == BackendKind::Redis));
        if !redis_used {
            backends.redis = None;
        }

        Ok(Config {
            server,
            listeners,
            admin,
            access_log,
            routing: RoutingSettings {
                trusted_proxies,
                max_body_size: raw.max_body_size.0,
                client,
                upstreams,
                routes,
                unmatched_plugins,
                plugins: SharedSettings {
                    jwt,
                    rate_limits: backends,
                },
                tracing,
            },
            warnings,
            sha256: String::new(),
        })
    }
}

fn parse_cidr(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{text}` is not an IP address or CIDR (e.g. 10.0.0.0/8)"))
}

fn admin_address(text: &str, listeners: &[ListenerSettings]) -> Result<SocketAddr, String> {
    let address: SocketAddr = text
        .parse()
        .map_err(|_| format!("`{text}` is not an IP:port address (e.g. 127.0.0.1:9090)"))?;
    if listeners.iter().any(|l| l.address.port() == address.port()) {
        return Err("metrics need a port of their own, not a public listener's".into());
    }
    Ok(address)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;

    /// A listener and one upstream, `users`: what every test config needs.
    const HEAD: &str = "
listeners: [{address: '127.0.0.1:3000'}]
upstreams:
  users: {instances: ['http://127.0.0.1:3001']}
";

    pub(crate) const BASE: &str = "
listeners: [{address: '127.0.0.1:3000'}]
upstreams:
  users: {instances: ['http://127.0.0.1:3001']}
routes:
  - {prefix: /users, upstream: users}
";

    /// `HEAD`, then `top` (top-level sections), then one `/users` route
    /// with the extra `route` keys.
    pub(crate) fn with_route(top: &str, route: &str) -> String {
        format!("{HEAD}{top}\nroutes:\n  - {{prefix: /users, upstream: users, {route}}}\n")
    }

    /// The config `yaml` describes, which must be valid.
    pub(crate) fn parsed(yaml: &str) -> Config {
        parse(yaml, &env).unwrap_or_else(|e| panic!("{e} for\n{yaml}"))
    }

    /// Each document fails with a message containing its expected text.
    pub(crate) fn assert_errors(cases: &[(String, &str)]) {
        for (yaml, expected) in cases {
            let message = error_of(yaml);
            assert!(
                message.contains(expected),
                "for\n{yaml}\nexpected `{expected}` in `{message}`"
            );
        }
    }

    /// The environment every config test runs with.
    fn env(name: &str) -> Option<String> {
        match name {
            "USER_SERVICE_URL" => Some("http://user-service:3001".into()),
            "JWT_SECRET" => Some("s3cret".into()),
            _ => None,
        }
    }

    /// `key: reason` of the error `yaml` must cause.
    fn error_of(yaml: &str) -> String {
        match parse(yaml, &env) {
            Ok(_) => panic!("expected an error for:\n{yaml}"),
            Err(e) => format!("{}: {}", e.key.unwrap_or_default(), e.reason),
        }
    }

    #[test]
    fn the_minimal_config_gets_defaults() {
        let c = parsed(BASE);
        assert_eq!(c.routing.max_body_size, 10 << 20);
        assert_eq!(c.access_log.format, access_log::Format::Dev);
        assert_eq!(c.access_log.output, access_log::Output::Stdout);
        assert!(c.server.threads >= 1);
        assert_eq!(c.routing.routes[0].rewrite, Rewrite::Strip);
        assert_eq!(
            c.routing.upstreams[0].timeouts.connect,
            Duration::from_secs(3)
        );
        assert!(c.routing.trusted_proxies.is_empty());
    }

    #[test]
    fn the_shipped_config_is_valid() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/gateway.yaml"))
                .unwrap();
        let c = parsed(&text);
        assert_eq!(c.listeners[0].address, "0.0.0.0:3000".parse().unwrap());
        assert_eq!(c.listeners[0].tls, None);
        let users = &c.routing.upstreams[c.routing.routes[0].upstream];
        assert_eq!(users.instances[0].authority, "user-service:3001");
        let prefixes: Vec<&str> = c.routing.routes.iter().map(|r| r.prefix.as_str()).collect();
        assert_eq!(prefixes, ["/users", "/products", "/orders", "/notify"]);
    }

    #[test]
    fn routes_are_named_by_host_and_prefix_unless_named() {
        let c = parsed(&format!(
            "{BASE}  - {{prefix: /users, host: api.shop.example, upstream: users}}
  - {{prefix: /carts, host: '*.shop.example', upstream: users}}
  - {{prefix: /orders, upstream: users, name: orders-v1}}
"
        ));
        let names: Vec<&str> = c.routing.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "/users",
                "api.shop.example/users",
                "*.shop.example/carts",
                "orders-v1"
            ]
        );
    }

    #[test]
    fn bad_configs_name_key_and_reason() {
        let extra_route =
            |extra: &str| format!("{BASE}  - {{prefix: /x, upstream: users, {extra}}}\n");
        let cases: Vec<(String, &str)> = vec![
            ("listeners: [".into(), "invalid YAML"),
            (
                format!("{BASE}routez: []\n"),
                "routez: unknown field `routez`",
            ),
            (
                BASE.replace("listeners", "listenerz"),
                "unknown field `listenerz`",
            ),
            (
                BASE.replace("127.0.0.1:3000", "localhost"),
                "listeners[0].address: `localhost` is not an IP:port",
            ),
            (
                extra_route("stip_prefix: false"),
                "routes[1].stip_prefix: unknown field `stip_prefix`",
            ),
            (
                BASE.replace("upstream: users", "upstream: nobody"),
                "routes[0].upstream: unknown upstream `nobody` (defined: users)",
            ),
            (
                BASE.replace("http://127.0.0.1:3001", "ftp://x"),
                "upstreams.users.instances[0]: `ftp://x`: the scheme must be http or https",
            ),
            (
                BASE.replace("http://127.0.0.1:3001", "http://x/api"),
                "upstreams.users.instances[0]: `http://x/api`: an instance URL has no path",
            ),
            (
                BASE.replace("['http://127.0.0.1:3001']", "[]"),
                "upstreams.users.instances: at least one instance",
            ),
            (
                BASE.replace("http://127.0.0.1:3001", "${NOPE_NOT_SET}"),
                "upstreams.users.instances[0]: environment variable NOPE_NOT_SET is not set",
            ),
            (
                BASE.replace("/users,", "users,"),
                "routes[0].prefix: path must start with '/'",
            ),
            (
                BASE.replace("/users,", "/users/,"),
                "routes[0].prefix: `/users/` is not a normalized path prefix; write `/users`",
            ),
            (
                BASE.replace("/users,", "/a/../users,"),
                "routes[0].prefix: `/a/../users` is not a normalized path prefix; write `/users`",
            ),
            (
                extra_route("prefix: /users"),
                "routes[1]: duplicate entry with key \"prefix\" at line 7",
            ),
            (
                format!("{BASE}  - {{prefix: /users, upstream: users}}\n"),
                "routes[1].prefix: another route already has prefix `/users`",
            ),
            (
                extra_route("strip_prefix: false, replace_prefix: /v1"),
                "routes[1].replace_prefix: replace_prefix replaces the prefix",
            ),
            (
                extra_route("replace_prefix: v1"),
                "routes[1].replace_prefix: `v1` must be a normalized path",
            ),
            (
                extra_route("host: 'bad host'"),
                "routes[1].host: `bad host` is not a host name",
            ),
            (
                format!("{BASE}max_body_size: lots\n"),
                "max_body_size: invalid size `lots`",
            ),
            (
                format!("{BASE}trusted_proxies: [10.0.0.0/33]\n"),
                "trusted_proxies[0]: `10.0.0.0/33` is not an IP address or CIDR",
            ),
            (
                format!("{BASE}access_log: {{format: xml}}\n"),
                "access_log.format: unknown variant `xml`",
            ),
            (
                format!("{BASE}server: {{grace_period: soon}}\n"),
                "server.grace_period: invalid duration `soon`",
            ),
            (
                format!("{BASE}server: {{treads: 4}}\n"),
                "server.treads: unknown field `treads`",
            ),
            (
                format!("{BASE}server: {{ca_file: /nonexistent/ca.pem}}\n"),
                "server.ca_file: cannot read /nonexistent/ca.pem",
            ),
            (
                BASE.replace(
                    "['http://127.0.0.1:3001']}",
                    "['http://127.0.0.1:3001'], timeouts: {connect: 0s}}",
                ),
                "upstreams.users.timeouts.connect: must be more than zero",
            ),
            (
                BASE.replace(
                    "['http://127.0.0.1:3001']}",
                    "['http://127.0.0.1:3001'], health_check: {path: health}}",
                ),
                "upstreams.users.health_check.path: must start with /",
            ),
            (
                "listeners: []\nupstreams: {}\nroutes: []\n".into(),
                "listeners: at least one listener",
            ),
            (
                "upstreams: {}\nroutes: []\n".into(),
                "missing field `listeners`",
            ),
            (
                BASE.replace(
                    "['http://127.0.0.1:3001']}",
                    "['http://127.0.0.1:3001'], load_balancing: consistent_hash}",
                ),
                "upstreams.users.hash_on: consistent_hash needs a key",
            ),
            (
                BASE.replace(
                    "['http://127.0.0.1:3001']}",
                    "['http://127.0.0.1:3001'], hash_on: {by: ip}}",
                ),
                "upstreams.users.hash_on: only goes with load_balancing: consistent_hash",
            ),
            (
                BASE.replace(
                    "['http://127.0.0.1:3001']",
                    "[{url: 'http://127.0.0.1:3001', weight: 0}]",
                ),
                "upstreams.users.instances[0].weight: must be at least 1",
            ),
            (
                BASE.replace(
                    "['http://127.0.0.1:3001']}",
                    "['http://127.0.0.1:3001'], outlier_detection: {max_ejected_percent: 101}}",
                ),
                "upstreams.users.outlier_detection.max_ejected_percent: at most 100",
            ),
            (
                extra_route("retry: {attempts: 9}"),
                "routes[1].retry.attempts: 1 (no retries) to 5",
            ),
            (
                extra_route("retry: {on: [connect_failure, 404]}"),
                "routes[1].retry.on[1]: 404: only 5xx statuses are tried again",
            ),
            (
                extra_route("retry: {on: [sometimes]}"),
                "routes[1].retry.on[0]: connect_failure, reset, timeout, or a status",
            ),
            (
                extra_route("timeout: 0s"),
                "routes[1].timeout: must be more than zero",
            ),
            (
                extra_route("name: 'a b'"),
                "routes[1].name: `a b` is not a route name",
            ),
            (
                extra_route("name: none"),
                "routes[1].name: `none` names the requests that match no route",
            ),
            (
                extra_route("name: /users"),
                "routes[1].name: `/users` is already the name of routes[0]",
            ),
        ];
        assert_errors(&cases);
    }

    #[test]
    fn the_file_is_identified_by_its_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_message_names_the_file() {
        let err = load(Path::new("/nonexistent/gateway.yaml")).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("/nonexistent/gateway.yaml: cannot read"));
    }
}

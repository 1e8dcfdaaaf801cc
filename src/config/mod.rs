//! Loading `conf/gateway.yaml`: read, expand `${VAR}`, parse into the raw
//! shape (`raw.rs`), then validate once into the model the gateway runs on.
//!
//! Everything that can be checked or computed before the first request is
//! done here, so a bad file stops startup with one message naming the file,
//! the key path (`routes[2].upstream`) and the reason, and request handling
//! never looks anything up by string.

mod auth;
mod cors;
mod expand;
mod listeners;
mod rate_limit;
mod raw;
mod units;

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;
use pingora::server::configuration::ServerConf;
use serde_yaml::Value;

pub use auth::{
    AuthMode, AuthOverride, AuthRule, ClaimHeader, JwksUrlSettings, JwtSettings, PathMatch,
    Requirements, RouteAuth,
};
pub use cors::{AllowHeaders, CorsSettings, OriginPattern, Origins};
pub use listeners::{ListenerSettings, TlsFiles};
pub use rate_limit::{
    FailureMode, RateBackend, RateKeySource, RateLimitBackends, RateLimitSettings, RedisSettings,
};
pub use raw::{
    LogFormat, RawHealthCheck as HealthCheckSettings, RawServer as ServerSettings,
    RawTimeouts as Timeouts,
};

use crate::path;
use raw::{RawConfig, RawRoute, RawUpstream};

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    pub server: ServerSettings,
    pub listeners: Vec<ListenerSettings>,
    pub trusted_proxies: Vec<IpNet>,
    pub max_body_size: u64,
    pub access_log: AccessLogSettings,
    pub jwt: Option<JwtSettings>,
    /// Where Prometheus metrics are served; `None`: not at all.
    pub admin: Option<SocketAddr>,
    pub upstreams: Vec<UpstreamSettings>,
    pub routes: Vec<RouteSettings>,
    /// The plugins for requests that match no route (CORS on their 404s).
    pub default_plugins: Vec<PluginConfig>,
    pub rate_limit_backends: RateLimitBackends,
    /// Usable but probably unintended settings, for the startup log.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogSettings {
    pub format: LogFormat,
    pub output: LogOutput,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOutput {
    Stdout,
    Stderr,
    File(PathBuf),
}

#[derive(Debug)]
pub struct UpstreamSettings {
    pub name: String,
    pub instances: Vec<InstanceUrl>,
    pub timeouts: Timeouts,
    pub health_check: Option<HealthCheckSettings>,
    pub resolve_interval: Duration,
}

/// One `http://host:port` instance of an upstream service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// What the upstream gets as `Host` (and TLS SNI): `host`, plus `:port`
    /// when it is not the scheme's default, as a browser would send it.
    pub authority: String,
}

#[derive(Debug, Clone)]
pub struct RouteSettings {
    pub prefix: String,
    pub host: Option<String>,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    pub rewrite: Rewrite,
    pub preserve_host: bool,
    /// The route's per-request features, in the order they run.
    pub plugins: Vec<PluginConfig>,
}

#[derive(Debug, Clone)]
pub enum PluginConfig {
    /// First, so that preflights are answered before anything else and
    /// every later answer gets the CORS headers.
    Cors(CorsSettings),
    /// On every route once a `jwt:` section exists, even with `auth: off`:
    /// it also removes client-sent copies of the claim headers.
    Auth(RouteAuth),
    /// Before auth, or after it when budgets are kept per token claim.
    RateLimit(RateLimitSettings),
}

/// What happens to the matched prefix before the request goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    Keep,
    Strip,
    Replace(String),
}

impl Config {
    /// The Redis backend, when some policy keeps its budgets there: only
    /// then is it connected to.
    pub fn redis_in_use(&self) -> Option<&RedisSettings> {
        let used = self
            .routes
            .iter()
            .flat_map(|r| &r.plugins)
            .chain(&self.default_plugins)
            .any(|p| matches!(p, PluginConfig::RateLimit(l) if l.backend == RateBackend::Redis));
        self.rate_limit_backends.redis.as_ref().filter(|_| used)
    }
}

impl ServerSettings {
    /// Pingora's own configuration, built in code so that the gateway's
    /// file is the only one and its keys are checked.
    pub fn pingora_conf(&self) -> ServerConf {
        ServerConf {
            threads: self.threads,
            work_stealing: self.work_stealing,
            pid_file: self.pid_file.clone(),
            upgrade_sock: self.upgrade_sock.clone(),
            error_log: self.error_log.clone(),
            ca_file: self.ca_file.clone(),
            grace_period_seconds: Some(self.grace_period.as_secs()),
            graceful_shutdown_timeout_seconds: Some(self.graceful_shutdown_timeout.as_secs()),
            upstream_keepalive_pool_size: self.upstream_keepalive_pool_size,
            // Retries are decided per request in `fail_to_connect`; this is
            // only the ceiling.
            max_retries: 2,
            ..ServerConf::default()
        }
    }
}

/// A configuration that cannot be used, and where exactly.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Key path such as `routes[2].upstream`; `None` for whole-file problems.
    pub key: Option<String>,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}: {}: {}", self.file.display(), key, self.reason),
            None => write!(f, "{}: {}", self.file.display(), self.reason),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates the file, taking `${VAR}` values from the process
/// environment.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        key: None,
        reason: format!("cannot read: {e}"),
    })?;
    parse(&text, &|name| std::env::var(name).ok()).map_err(|(key, reason)| ConfigError {
        file: file.to_path_buf(),
        key,
        reason,
    })
}

type Problem = (Option<String>, String);

fn problem(key: impl Into<String>, reason: impl Into<String>) -> Problem {
    (Some(key.into()), reason.into())
}

/// The whole pipeline on text, separate from file reading so tests can feed
/// it a table of documents and a fake environment.
fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Problem> {
    let mut doc: Value =
        serde_yaml::from_str(text).map_err(|e| (None, format!("invalid YAML: {e}")))?;
    expand::expand_env(&mut doc, env).map_err(|(key, reason)| (Some(key), reason))?;
    let raw: RawConfig = serde_path_to_error::deserialize(doc).map_err(|e| {
        let key = e.path().to_string();
        let key = (key != ".").then_some(key);
        (key, e.into_inner().to_string())
    })?;
    validate(raw)
}

fn validate(raw: RawConfig) -> Result<Config, Problem> {
    let mut server = raw.server;
    if server.threads == 0 {
        server.threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    }

    if let Some(ca_file) = &server.ca_file {
        std::fs::File::open(ca_file)
            .map_err(|e| problem("server.ca_file", format!("cannot read {ca_file}: {e}")))?;
    }

    let listeners = listeners::validate_listeners(raw.listeners)?;

    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .enumerate()
        .map(|(i, text)| {
            parse_cidr(text).map_err(|reason| problem(format!("trusted_proxies[{i}]"), reason))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let access_log = AccessLogSettings {
        format: raw.access_log.format,
        output: match raw.access_log.output.as_str() {
            "stdout" => LogOutput::Stdout,
            "stderr" => LogOutput::Stderr,
            "" => {
                return Err(problem(
                    "access_log.output",
                    "write stdout, stderr or a file path",
                ))
            }
            path => LogOutput::File(PathBuf::from(path)),
        },
    };

    let admin = match raw.admin {
        Some(admin) => {
            let address: SocketAddr = admin.address.parse().map_err(|_| {
                problem(
                    "admin.address",
                    format!(
                        "`{}` is not an IP:port address (e.g. 127.0.0.1:9090)",
                        admin.address
                    ),
                )
            })?;
            if listeners.iter().any(|l| l.address.port() == address.port()) {
                return Err(problem(
                    "admin.address",
                    "metrics need a port of their own, not a public listener's",
                ));
            }
            Some(address)
        }
        None => None,
    };

    let mut warnings = Vec::new();
    let jwt = raw
        .jwt
        .map(|jwt| auth::validate_jwt(jwt, server.ca_file.as_deref(), &mut warnings))
        .transpose()?;

    let cors = match raw.cors {
        Some(section) => cors::validate_cors("cors", section)?,
        None => None,
    };
    let rate_limit_backends = rate_limit::validate_backends(raw.rate_limit_backends)?;
    let rate_limit = match raw.rate_limit {
        Some(section) => rate_limit::validate_rate_limit(
            "rate_limit",
            section,
            "global".into(),
            &rate_limit_backends,
        )?,
        None => None,
    };

    let upstreams = raw
        .upstreams
        .into_iter()
        .map(|(name, up)| validate_upstream(name, up))
        .collect::<Result<Vec<_>, _>>()?;

    let mut seen = HashSet::new();
    let routes = raw
        .routes
        .into_iter()
        .enumerate()
        .map(|(i, route)| {
            let defaults = RouteDefaults {
                has_jwt: jwt.is_some(),
                cors: cors.as_ref(),
                rate_limit: rate_limit.as_ref(),
                backends: &rate_limit_backends,
            };
            let route = validate_route(i, route, &upstreams, &defaults)?;
            if !seen.insert((route.host.clone(), route.prefix.clone())) {
                return Err(problem(
                    format!("routes[{i}].prefix"),
                    format!(
                        "another route already has prefix `{}` for the same host",
                        route.prefix
                    ),
                ));
            }
            Ok(route)
        })
        .collect::<Result<Vec<_>, _>>()?;

    Ok(Config {
        server,
        listeners,
        trusted_proxies,
        max_body_size: raw.max_body_size.0,
        access_log,
        jwt,
        admin,
        upstreams,
        routes,
        default_plugins: cors
            .map(PluginConfig::Cors)
            .into_iter()
            .chain(rate_limit.map(PluginConfig::RateLimit))
            .collect(),
        rate_limit_backends,
        warnings,
    })
}

fn parse_cidr(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{text}` is not an IP address or CIDR (e.g. 10.0.0.0/8)"))
}

fn validate_upstream(name: String, up: RawUpstream) -> Result<UpstreamSettings, Problem> {
    let key = format!("upstreams.{name}");
    if up.instances.is_empty() {
        return Err(problem(
            format!("{key}.instances"),
            "at least one instance URL is needed",
        ));
    }
    let instances = up
        .instances
        .iter()
        .enumerate()
        .map(|(i, url)| {
            parse_instance(url).map_err(|reason| problem(format!("{key}.instances[{i}]"), reason))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let t = &up.timeouts;
    for (field, value) in [
        ("connect", t.connect),
        ("read", t.read),
        ("write", t.write),
        ("idle", t.idle),
    ] {
        if value.is_zero() {
            return Err(problem(
                format!("{key}.timeouts.{field}"),
                "must be more than zero",
            ));
        }
    }
    if let Some(hc) = &up.health_check {
        if !hc.path.starts_with('/') {
            return Err(problem(
                format!("{key}.health_check.path"),
                "must start with /",
            ));
        }
        if hc.interval.is_zero() || hc.timeout.is_zero() {
            return Err(problem(
                format!("{key}.health_check"),
                "interval and timeout must be more than zero",
            ));
        }
    }
    if up.resolve_interval.is_zero() {
        return Err(problem(
            format!("{key}.resolve_interval"),
            "must be more than zero",
        ));
    }
    Ok(UpstreamSettings {
        name,
        instances,
        timeouts: up.timeouts,
        health_check: up.health_check,
        resolve_interval: up.resolve_interval,
    })
}

fn parse_instance(url: &str) -> Result<InstanceUrl, String> {
    let uri: Uri = url
        .parse()
        .map_err(|_| format!("`{url}` is not a URL (e.g. http://user-service:3001)"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(format!("`{url}`: the scheme must be http or https")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("`{url}` has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("`{url}`: credentials in the URL are not supported"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "`{url}`: an instance URL has no path or query; use the route's replace_prefix"
        ));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let default_port = if tls { 443 } else { 80 };
    let port = authority.port_u16().unwrap_or(default_port);
    let authority = if port == default_port {
        authority.host().to_ascii_lowercase()
    } else {
        format!("{}:{port}", authority.host().to_ascii_lowercase())
    };
    Ok(InstanceUrl {
        tls,
        host,
        port,
        authority,
    })
}

/// What a route without its own settings inherits.
struct RouteDefaults<'a> {
    has_jwt: bool,
    cors: Option<&'a CorsSettings>,
    rate_limit: Option<&'a RateLimitSettings>,
    backends: &'a RateLimitBackends,
}

fn validate_route(
    i: usize,
    mut route: RawRoute,
    upstreams: &[UpstreamSettings],
    defaults: &RouteDefaults,
) -> Result<RouteSettings, Problem> {
    let key = format!("routes[{i}]");
    let prefix = &route.prefix;
    let canonical =
        path::normalize(prefix).map_err(|e| problem(format!("{key}.prefix"), e.to_string()))?;
    if canonical != *prefix || (prefix.len() > 1 && prefix.ends_with('/')) {
        let suggestion = canonical.trim_end_matches('/');
        return Err(problem(
            format!("{key}.prefix"),
            format!(
                "`{prefix}` is not a normalized path prefix; write `{}`",
                if suggestion.is_empty() {
                    "/"
                } else {
                    suggestion
                }
            ),
        ));
    }

    let upstream = upstreams
        .iter()
        .position(|u| u.name == route.upstream)
        .ok_or_else(|| {
            let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            problem(
                format!("{key}.upstream"),
                format!(
                    "unknown upstream `{}` (defined: {})",
                    route.upstream,
                    known.join(", ")
                ),
            )
        })?;

    let rewrite = match (route.strip_prefix, route.replace_prefix.take()) {
        (false, Some(_)) => {
            return Err(problem(
                format!("{key}.replace_prefix"),
                "replace_prefix replaces the prefix, which strip_prefix: false keeps; set one of them",
            ));
        }
        (true, Some(replacement)) => {
            let ok = path::normalize(&replacement).is_ok_and(|n| n == replacement);
            if !ok {
                return Err(problem(
                    format!("{key}.replace_prefix"),
                    format!("`{replacement}` must be a normalized path starting with /"),
                ));
            }
            Rewrite::Replace(replacement.trim_end_matches('/').to_string())
        }
        (true, None) => Rewrite::Strip,
        (false, None) => Rewrite::Keep,
    };

    let host = match route.host.take() {
        Some(host) => {
            Some(validate_host(&host).map_err(|reason| problem(format!("{key}.host"), reason))?)
        }
        None => None,
    };

    let cors = match route.cors.take() {
        Some(section) => cors::validate_cors(&format!("{key}.cors"), section)?,
        None => defaults.cors.cloned(),
    };
    let scope = format!("route:{}{}", host.as_deref().unwrap_or(""), route.prefix);
    let rate_limit = match route.rate_limit.take() {
        Some(section) => rate_limit::validate_rate_limit(
            &format!("{key}.rate_limit"),
            section,
            scope,
            defaults.backends,
        )?,
        None => defaults.rate_limit.cloned(),
    };
    let auth = auth::validate_route_auth(i, &mut route, defaults.has_jwt)?;
    // A limit keyed by a claim needs the verified token, so it runs after
    // auth; any other runs before it, so a flood of bad tokens is limited
    // before any of them costs a signature check.
    let (limit_first, limit_last) = match rate_limit {
        Some(l) if matches!(l.key, RateKeySource::Claim(_)) => (None, Some(l)),
        other => (other, None),
    };
    let mut plugins: Vec<PluginConfig> = cors.into_iter().map(PluginConfig::Cors).collect();
    plugins.extend(limit_first.map(PluginConfig::RateLimit));
    if defaults.has_jwt {
        plugins.push(PluginConfig::Auth(auth));
    }
    plugins.extend(limit_last.map(PluginConfig::RateLimit));
    Ok(RouteSettings {
        prefix: route.prefix,
        host,
        upstream,
        rewrite,
        preserve_host: route.preserve_host,
        plugins,
    })
}

/// HTTP methods as written in the YAML: upper case, as they are matched.
fn parse_methods(at: &str, names: &[String]) -> Result<Vec<http::Method>, Problem> {
    names
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let valid = !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase());
            valid
                .then(|| http::Method::from_bytes(m.as_bytes()).ok())
                .flatten()
                .ok_or_else(|| {
                    problem(
                        format!("{at}[{i}]"),
                        format!("`{m}` is not an HTTP method in upper case (e.g. POST)"),
                    )
                })
        })
        .collect()
}

/// A host name, or `*.example.com` for any subdomain of it.
fn validate_host(host: &str) -> Result<String, String> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    let ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(host.to_ascii_lowercase())
    } else {
        Err(format!(
            "`{host}` is not a host name (e.g. api.example.com or *.example.com)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener and one upstream, `users`: what every test config needs.
    const HEAD: &str = "
listeners: [{address: '127.0.0.1:3000'}]
upstreams:
  users: {instances: ['http://127.0.0.1:3001']}
";

    const BASE: &str = "
listeners: [{address: '127.0.0.1:3000'}]
upstreams:
  users: {instances: ['http://127.0.0.1:3001']}
routes:
  - {prefix: /users, upstream: users}
";

    /// `HEAD`, then `top` (top-level sections), then one `/users` route
    /// with the extra `route` keys.
    pub(super) fn with_route(top: &str, route: &str) -> String {
        format!("{HEAD}{top}\nroutes:\n  - {{prefix: /users, upstream: users, {route}}}\n")
    }

    /// Each document fails with a message containing its expected text.
    pub(super) fn assert_errors(cases: &[(String, &str)]) {
        for (yaml, expected) in cases {
            let message = error_of(yaml);
            assert!(
                message.contains(expected),
                "for\n{yaml}\nexpected `{expected}` in `{message}`"
            );
        }
    }

    /// The environment every config test runs with.
    pub(super) fn env(name: &str) -> Option<String> {
        match name {
            "USER_SERVICE_URL" => Some("http://user-service:3001".into()),
            "JWT_SECRET" => Some("s3cret".into()),
            _ => None,
        }
    }

    /// `key: reason` of the error `yaml` must cause.
    pub(super) fn error_of(yaml: &str) -> String {
        match parse(yaml, &env) {
            Ok(_) => panic!("expected an error for:\n{yaml}"),
            Err((key, reason)) => format!("{}: {reason}", key.unwrap_or_default()),
        }
    }

    #[test]
    fn the_minimal_config_gets_defaults() {
        let c = parse(BASE, &env).unwrap();
        assert_eq!(c.max_body_size, 10 << 20);
        assert_eq!(c.access_log.format, LogFormat::Dev);
        assert_eq!(c.access_log.output, LogOutput::Stdout);
        assert!(c.server.threads >= 1);
        assert_eq!(c.routes[0].rewrite, Rewrite::Strip);
        assert_eq!(c.upstreams[0].timeouts.connect, Duration::from_secs(3));
        assert!(c.trusted_proxies.is_empty());
    }

    #[test]
    fn the_shipped_config_is_valid() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/gateway.yaml"))
                .unwrap();
        let c = parse(&text, &env).unwrap();
        assert_eq!(c.listeners[0].address, "0.0.0.0:3000".parse().unwrap());
        assert_eq!(c.listeners[0].tls, None);
        let users = &c.upstreams[c.routes[0].upstream];
        assert_eq!(users.instances[0].authority, "user-service:3001");
        let prefixes: Vec<&str> = c.routes.iter().map(|r| r.prefix.as_str()).collect();
        assert_eq!(prefixes, ["/users", "/products", "/orders", "/notify"]);
    }

    #[test]
    fn instance_urls() {
        let u = parse_instance("https://API.example.com").unwrap();
        assert_eq!(
            (u.tls, u.port, u.authority.as_str()),
            (true, 443, "api.example.com")
        );
        let u = parse_instance("http://[::1]:8080/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.authority.as_str()),
            ("::1", 8080, "[::1]:8080")
        );
    }

    #[test]
    fn bad_configs_name_key_and_reason() {
        let with_route =
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
                with_route("stip_prefix: false"),
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
                with_route("prefix: /users"),
                "routes[1]: duplicate entry with key \"prefix\" at line 7",
            ),
            (
                format!("{BASE}  - {{prefix: /users, upstream: users}}\n"),
                "routes[1].prefix: another route already has prefix `/users`",
            ),
            (
                with_route("strip_prefix: false, replace_prefix: /v1"),
                "routes[1].replace_prefix: replace_prefix replaces the prefix",
            ),
            (
                with_route("replace_prefix: v1"),
                "routes[1].replace_prefix: `v1` must be a normalized path",
            ),
            (
                with_route("host: 'bad host'"),
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
        ];
        assert_errors(&cases);
    }

    #[test]
    fn the_message_names_the_file() {
        let err = load(Path::new("/nonexistent/gateway.yaml")).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("/nonexistent/gateway.yaml: cannot read"));
    }
}

//! The JWT plugin's part of the YAML: the `jwt:` section, and each route's
//! `auth`, `require` and `auth_overrides`. Validated here into the verifier's
//! settings (keys parsed and pinned to their algorithms) and the plugin's
//! policies (header names checked, methods and paths parsed), so nothing
//! about auth is looked up by string per request.
//!
//! Keys in errors are relative to the section (`keys[0].algorithms`, or
//! `auth_overrides[1].path` of a route); the caller says where the section
//! sits.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{HeaderName, Method};
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::jwt::jwks::{JwksFetch, JwksSource};
use crate::jwt::keys::{parse_jwks, VerifyingKey};
use crate::jwt::Settings;
use crate::path;
use crate::yaml::values::{duration, MethodName};
use crate::yaml::Invalid;

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

fn yes() -> bool {
    true
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawJwksFetch {
    #[serde(with = "duration")]
    pub refresh_interval: Duration,
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

/// A route's `auth:` (or an override's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No token needed, none verified.
    #[default]
    Off,
    /// A valid token is used, no token passes, an invalid one is refused.
    Optional,
    Required,
}

/// What a valid token must also carry, else 403.
#[derive(Debug, Default, Deserialize)]
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
    pub methods: Vec<MethodName>,
    /// The whole (normalized) request path, e.g. `/users/login`.
    pub path: Option<String>,
    /// Or a path prefix, matched on segment boundaries.
    pub prefix: Option<String>,
    pub auth: Mode,
    #[serde(default)]
    pub require: RawRequire,
}

/// The `jwt:` section, validated: what the verifier checks, and how the
/// plugin handles headers.
#[derive(Debug)]
pub struct JwtSettings {
    pub verifier: Settings,
    pub cookie: Option<String>,
    pub forward_authorization: bool,
    pub claim_headers: Vec<ClaimHeader>,
}

#[derive(Debug, Clone)]
pub struct ClaimHeader {
    pub claim: String,
    pub header: HeaderName,
}

/// A route's auth policy: its own rule, and overrides for some methods and
/// paths, of which the first match wins.
#[derive(Debug, Clone, Default)]
pub struct RoutePolicy {
    pub rule: Rule,
    pub overrides: Vec<Override>,
}

#[derive(Debug, Clone, Default)]
pub struct Rule {
    pub mode: Mode,
    pub require: Requirements,
}

#[derive(Debug, Clone, Default)]
pub struct Requirements {
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    pub claims: Vec<(String, serde_json::Value)>,
}

#[derive(Debug, Clone)]
pub struct Override {
    /// Empty: every method.
    pub methods: Vec<Method>,
    pub path: PathMatch,
    pub rule: Rule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    /// Segment-boundary prefix, like a route's.
    Prefix(String),
}

/// Headers a claim may never be copied into: they change how the request
/// is framed, routed or authenticated.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "content-length",
    "cookie",
    "host",
    "transfer-encoding",
    "upgrade",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

impl JwtSettings {
    /// `ca_roots` verify `https://` JWKS URLs (from `server.ca_file`; empty:
    /// the web's roots). Usable but probably unintended settings (an empty
    /// secret) are added to `warnings`.
    pub fn from_raw(
        raw: RawJwt,
        ca_roots: &[reqwest::Certificate],
        warnings: &mut Vec<String>,
    ) -> Result<Self, Invalid> {
        let mut keys = Vec::new();
        let mut jwks_urls = Vec::new();
        for (i, key) in raw.keys.into_iter().enumerate() {
            let at = format!("keys[{i}]");
            match KeySource::from_raw(key, &at, ca_roots).map_err(|e| e.under(&at))? {
                KeySource::Keys(mut parsed) => keys.append(&mut parsed),
                KeySource::Url(url) => jwks_urls.push(url),
                KeySource::EmptySecret => warnings.push(format!(
                    "jwt.{at}.secret is empty (is JWT_SECRET set?): tokens signed with a secret are refused"
                )),
            }
        }
        if keys.is_empty() && jwks_urls.is_empty() {
            warnings.push("jwt: no usable key: every token is refused".into());
        }

        if raw.cache_size > 0 && raw.cache_ttl.is_zero() {
            return Err(Invalid::at(
                "cache_ttl",
                "must be more than zero (or set cache_size: 0)",
            ));
        }
        if raw.leeway > Duration::from_secs(300) {
            return Err(Invalid::at("leeway", "at most 5m"));
        }
        if let Some(cookie) = &raw.cookie {
            let name_ok = !cookie.is_empty()
                && cookie
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"=;,\"".contains(&b));
            if !name_ok {
                return Err(Invalid::at(
                    "cookie",
                    format!("`{cookie}` is not a cookie name"),
                ));
            }
        }
        let claim_headers = raw
            .claim_headers
            .into_iter()
            .map(|(claim, header)| claim_header(claim, &header))
            .collect::<Result<Vec<_>, _>>()?;

        Ok(JwtSettings {
            verifier: Settings {
                keys,
                jwks_urls,
                issuers: raw.issuers,
                audiences: raw.audiences,
                leeway: raw.leeway,
                require_exp: raw.require_exp,
                cache_size: raw.cache_size,
                cache_ttl: raw.cache_ttl,
            },
            cookie: raw.cookie,
            forward_authorization: raw.forward_authorization,
            claim_headers,
        })
    }
}

fn claim_header(claim: String, header: &str) -> Result<ClaimHeader, Invalid> {
    let at = format!("claim_headers.{claim}");
    let name = HeaderName::from_bytes(header.as_bytes())
        .map_err(|_| Invalid::at(&at, format!("`{header}` is not a header name")))?;
    if RESERVED_HEADERS.contains(&name.as_str()) || name.as_str().contains('_') {
        return Err(Invalid::at(
            &at,
            format!("`{header}` cannot carry a claim; pick a name like X-User-Id"),
        ));
    }
    Ok(ClaimHeader {
        claim,
        header: name,
    })
}

enum KeySource {
    Keys(Vec<VerifyingKey>),
    Url(JwksSource),
    /// `secret: "${JWT_SECRET:-}"` with the variable unset: a warning, not
    /// an error, so the gateway can still serve its open routes.
    EmptySecret,
}

impl KeySource {
    /// `at` is where the key sits in the `jwt:` section (`keys[2]`).
    fn from_raw(
        key: RawJwtKey,
        at: &str,
        ca_roots: &[reqwest::Certificate],
    ) -> Result<Self, Invalid> {
        let given = [
            key.secret.is_some(),
            key.public_key_file.is_some(),
            key.jwks_file.is_some(),
            key.jwks_url.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(Invalid::here(
                "give exactly one of secret, public_key_file, jwks_file, jwks_url",
            ));
        }
        if key.jwks.is_some() && key.jwks_url.is_none() {
            return Err(Invalid::at("jwks", "only goes with jwks_url"));
        }
        if key.kid.is_some() && (key.jwks_file.is_some() || key.jwks_url.is_some()) {
            return Err(Invalid::at(
                "kid",
                "a JWKS names its own keys; kid goes with secret or public_key_file",
            ));
        }
        let algorithms = match (key.algorithms, &key.secret) {
            (Some(list), _) => list,
            (None, Some(_)) => vec![Algorithm::HS256],
            (None, None) => {
                return Err(Invalid::at(
                    "algorithms",
                    "list the algorithms this key verifies, e.g. [RS256]",
                ))
            }
        };

        if let Some(secret) = key.secret {
            if secret.is_empty() {
                return Ok(KeySource::EmptySecret);
            }
            let parsed = VerifyingKey::from_secret(secret.as_bytes(), algorithms, key.kid)
                .map_err(|e| Invalid::at("algorithms", e))?;
            return Ok(KeySource::Keys(vec![parsed]));
        }
        if let Some(file) = key.public_key_file {
            let at = "public_key_file";
            let pem = std::fs::read(&file)
                .map_err(|e| Invalid::at(at, format!("cannot read {file}: {e}")))?;
            let parsed = VerifyingKey::from_pem(&pem, algorithms, key.kid)
                .map_err(|e| Invalid::at(at, format!("{file}: {e}")))?;
            return Ok(KeySource::Keys(vec![parsed]));
        }
        if let Some(file) = key.jwks_file {
            let at = "jwks_file";
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Invalid::at(at, format!("cannot read {file}: {e}")))?;
            let (parsed, skipped) = parse_jwks(&text, &algorithms)
                .map_err(|e| Invalid::at(at, format!("{file}: {e}")))?;
            if parsed.is_empty() {
                return Err(Invalid::at(
                    at,
                    format!(
                        "{file}: no key fits {algorithms:?} ({})",
                        skipped.join("; ")
                    ),
                ));
            }
            return Ok(KeySource::Keys(parsed));
        }

        let url = key.jwks_url.unwrap_or_default();
        let uri: http::Uri = url
            .parse()
            .map_err(|_| Invalid::at("jwks_url", format!("`{url}` is not a URL")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(Invalid::at(
                "jwks_url",
                format!("`{url}` is not an http(s) URL"),
            ));
        }
        let fetch = key.jwks.unwrap_or_default();
        for (name, value) in [
            ("refresh_interval", fetch.refresh_interval),
            ("refetch_cooldown", fetch.refetch_cooldown),
            ("timeout", fetch.timeout),
        ] {
            if value.is_zero() {
                return Err(Invalid::at(
                    format!("jwks.{name}"),
                    "must be more than zero",
                ));
            }
        }
        Ok(KeySource::Url(JwksSource {
            key: format!("jwt.{at}.jwks_url"),
            url,
            algorithms,
            fetch: JwksFetch {
                refresh_interval: fetch.refresh_interval,
                refetch_cooldown: fetch.refetch_cooldown,
                timeout: fetch.timeout,
            },
            roots: ca_roots.to_vec(),
        }))
    }
}

impl RoutePolicy {
    /// The auth policy of a route with prefix `route_prefix` (already
    /// validated), from its `auth`, `require` and `auth_overrides`.
    pub fn from_raw(
        mode: Mode,
        require: RawRequire,
        overrides: Vec<RawAuthOverride>,
        route_prefix: &str,
        has_jwt: bool,
    ) -> Result<Self, Invalid> {
        let rule = Rule::from_raw(mode, require, has_jwt)?;
        let overrides = overrides
            .into_iter()
            .enumerate()
            .map(|(j, o)| {
                Override::from_raw(o, route_prefix, has_jwt)
                    .map_err(|e| e.under(&format!("auth_overrides[{j}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RoutePolicy { rule, overrides })
    }
}

impl Rule {
    fn from_raw(mode: Mode, require: RawRequire, has_jwt: bool) -> Result<Self, Invalid> {
        if mode != Mode::Off && !has_jwt {
            return Err(Invalid::at(
                "auth",
                "verifying tokens needs a `jwt:` section with keys",
            ));
        }
        let require = Requirements {
            scopes: require.scopes,
            roles: require.roles,
            claims: require.claims.into_iter().collect(),
        };
        let demands =
            !require.scopes.is_empty() || !require.roles.is_empty() || !require.claims.is_empty();
        if demands && mode != Mode::Required {
            return Err(Invalid::at("require", "only applies with `auth: required`"));
        }
        Ok(Rule { mode, require })
    }
}

impl Override {
    fn from_raw(raw: RawAuthOverride, route_prefix: &str, has_jwt: bool) -> Result<Self, Invalid> {
        let (key, path) = match (raw.path, raw.prefix) {
            (Some(p), None) => ("path", PathMatch::Exact(p)),
            (None, Some(p)) => ("prefix", PathMatch::Prefix(p)),
            _ => return Err(Invalid::here("give exactly one of path, prefix")),
        };
        let text = match &path {
            PathMatch::Exact(p) | PathMatch::Prefix(p) => p.as_str(),
        };
        if path::normalize(text).ok().as_deref() != Some(text) {
            return Err(Invalid::at(
                key,
                format!("`{text}` is not a normalized path"),
            ));
        }
        if !path::is_within(text, route_prefix) {
            return Err(Invalid::at(
                key,
                format!("`{text}` is outside the route's prefix `{route_prefix}` (write the whole client path)"),
            ));
        }
        Ok(Override {
            methods: raw.methods.into_iter().map(|m| m.0).collect(),
            path,
            rule: Rule::from_raw(raw.auth, raw.require, has_jwt)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{assert_errors, parsed, with_route};
    use crate::plugin::chain::PluginConfig;

    const JWT: &str = "jwt: {keys: [{secret: '${JWT_SECRET}'}]}\n";

    #[test]
    fn a_secret_defaults_to_hs256_and_routes_get_their_policy() {
        let c = parsed(&with_route(
            JWT,
            "auth: required, require: {scopes: [a]}, auth_overrides: [{methods: [POST], path: /users/login, auth: off}]",
        ));
        let jwt = c.routing.plugins.jwt.unwrap();
        assert_eq!(jwt.verifier.keys[0].algorithms, [Algorithm::HS256]);
        assert_eq!(jwt.verifier.leeway, Duration::from_secs(30));
        let Some(PluginConfig::JwtAuth(auth)) = c.routing.routes[0].plugins.first() else {
            panic!("no auth plugin");
        };
        assert_eq!(auth.rule.mode, Mode::Required);
        assert_eq!(auth.rule.require.scopes, ["a"]);
        assert_eq!(auth.overrides[0].methods, [Method::POST]);
        assert_eq!(auth.overrides[0].rule.mode, Mode::Off);
        assert_eq!(
            auth.overrides[0].path,
            PathMatch::Exact("/users/login".into())
        );
    }

    #[test]
    fn an_empty_secret_is_a_warning_not_an_error() {
        let c = parsed(&with_route(
            "jwt: {keys: [{secret: '${NOT_SET:-}'}]}\n",
            "auth: required",
        ));
        assert!(c.routing.plugins.jwt.unwrap().verifier.keys.is_empty());
        assert!(
            c.warnings[0].contains("jwt.keys[0].secret is empty"),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn without_a_jwt_section_routes_have_no_auth_plugin() {
        let c = parsed(&with_route("", "auth: off"));
        assert!(c.routing.routes[0].plugins.is_empty());
    }

    #[test]
    fn bad_auth_configs_name_key_and_reason() {
        let cases: Vec<(String, &str)> = vec![
            (
                with_route("", "auth: required"),
                "routes[0].auth: verifying tokens needs a `jwt:` section",
            ),
            (with_route(JWT, "auth: maybe"), "routes[0].auth: unknown variant `maybe`"),
            (
                with_route(JWT, "auth: optional, require: {roles: [admin]}"),
                "routes[0].require: only applies with `auth: required`",
            ),
            (
                with_route(JWT, "auth_overrides: [{path: /orders/x, auth: off}]"),
                "routes[0].auth_overrides[0].path: `/orders/x` is outside the route's prefix `/users`",
            ),
            (
                with_route(JWT, "auth_overrides: [{path: /users/../x, auth: off}]"),
                "routes[0].auth_overrides[0].path: `/users/../x` is not a normalized path",
            ),
            (
                with_route(JWT, "auth_overrides: [{auth: off}]"),
                "routes[0].auth_overrides[0]: give exactly one of path, prefix",
            ),
            (
                with_route(JWT, "auth_overrides: [{methods: [post], path: /users/login, auth: off}]"),
                "routes[0].auth_overrides[0].methods[0]: `post` is not an HTTP method in upper case",
            ),
            (
                with_route("jwt: {keys: [{secret: x, algorithms: [RS256]}]}\n", ""),
                "jwt.keys[0].algorithms: a secret verifies HS256, HS384 or HS512 only",
            ),
            (
                with_route("jwt: {keys: [{secret: x, algorithms: [HS257]}]}\n", ""),
                "jwt.keys[0].algorithms[0]: unknown variant `HS257`",
            ),
            (
                with_route("jwt: {keys: [{algorithms: [none]}]}\n", ""),
                "jwt.keys[0].algorithms[0]: unknown variant `none`",
            ),
            (
                with_route("jwt: {keys: [{secret: x, public_key_file: /k.pem}]}\n", ""),
                "jwt.keys[0]: give exactly one of secret, public_key_file, jwks_file, jwks_url",
            ),
            (
                with_route("jwt: {keys: [{public_key_file: /nonexistent.pem}]}\n", ""),
                "jwt.keys[0].algorithms: list the algorithms this key verifies",
            ),
            (
                with_route("jwt: {keys: [{public_key_file: /nonexistent.pem, algorithms: [RS256]}]}\n", ""),
                "jwt.keys[0].public_key_file: cannot read /nonexistent.pem",
            ),
            (
                with_route("jwt: {keys: [{public_key_file: /etc/hostname, algorithms: [ES256]}]}\n", ""),
                "jwt.keys[0].public_key_file: /etc/hostname: not an EC public key in PEM",
            ),
            (
                with_route("jwt: {keys: [{jwks_url: 'ftp://idp/keys', algorithms: [RS256]}]}\n", ""),
                "jwt.keys[0].jwks_url: `ftp://idp/keys` is not an http(s) URL",
            ),
            (
                with_route("jwt: {keys: [{secret: x, jwks: {timeout: 1s}}]}\n", ""),
                "jwt.keys[0].jwks: only goes with jwks_url",
            ),
            (
                with_route(
                    "jwt: {keys: [{jwks_url: 'http://idp/k', algorithms: [RS256], jwks: {timeout: 0s}}]}\n",
                    "",
                ),
                "jwt.keys[0].jwks.timeout: must be more than zero",
            ),
            (
                with_route("jwt: {keys: [{secret: x}], claim_headers: {sub: Authorization}}\n", ""),
                "jwt.claim_headers.sub: `Authorization` cannot carry a claim",
            ),
            (
                with_route("jwt: {keys: [{secret: x}], claim_headers: {sub: 'X User'}}\n", ""),
                "jwt.claim_headers.sub: `X User` is not a header name",
            ),
            (
                with_route("jwt: {keys: [{secret: x}], leeway: 1h}\n", ""),
                "jwt.leeway: at most 5m",
            ),
            (
                with_route("jwt: {keys: [{secret: x}], cookie: 'a;b'}\n", ""),
                "jwt.cookie: `a;b` is not a cookie name",
            ),
            (
                with_route("jwt: {keys: [{secret: x}], issuer: me}\n", ""),
                "jwt.issuer: unknown field `issuer`",
            ),
        ];
        assert_errors(&cases);
    }
}

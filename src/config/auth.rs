//! The `jwt:` section and each route's `auth`, `require` and
//! `auth_overrides`, validated into the model the auth plugin runs on: keys
//! parsed and pinned to their algorithms, header names checked, methods and
//! paths parsed, so nothing about auth is looked up by string per request.

use std::time::Duration;

use http::{HeaderName, Method};
use jsonwebtoken::Algorithm;

use super::raw::{RawAuthOverride, RawJwt, RawJwtKey, RawRequire, RawRoute};
use super::{parse_methods, problem, Problem};
use crate::jwt::keys::{parse_jwks, VerifyingKey};
use crate::path;

pub use super::raw::{AuthMode, RawJwksFetch as JwksFetch};

#[derive(Debug)]
pub struct JwtSettings {
    /// From `secret`, `public_key_file` and `jwks_file`: fixed for the
    /// process's life.
    pub keys: Vec<VerifyingKey>,
    pub jwks_urls: Vec<JwksUrlSettings>,
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    pub leeway: Duration,
    pub require_exp: bool,
    pub cookie: Option<String>,
    pub forward_authorization: bool,
    pub claim_headers: Vec<ClaimHeader>,
    pub cache_size: usize,
    pub cache_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct JwksUrlSettings {
    pub url: String,
    pub algorithms: Vec<Algorithm>,
    pub fetch: JwksFetch,
    /// `server.ca_file`: as for `https://` upstreams, it replaces the
    /// system roots when verifying the identity provider.
    pub ca_file: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ClaimHeader {
    pub claim: String,
    pub header: HeaderName,
}

/// A route's auth policy: its own rule, and overrides for some methods and
/// paths, of which the first match wins.
#[derive(Debug, Clone, Default)]
pub struct RouteAuth {
    pub rule: AuthRule,
    pub overrides: Vec<AuthOverride>,
}

#[derive(Debug, Clone, Default)]
pub struct AuthRule {
    pub mode: AuthMode,
    pub require: Requirements,
}

#[derive(Debug, Clone, Default)]
pub struct Requirements {
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    pub claims: Vec<(String, serde_json::Value)>,
}

#[derive(Debug, Clone)]
pub struct AuthOverride {
    /// Empty: every method.
    pub methods: Vec<Method>,
    pub path: PathMatch,
    pub rule: AuthRule,
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

pub(super) fn validate_jwt(
    raw: RawJwt,
    ca_file: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<JwtSettings, Problem> {
    let mut keys = Vec::new();
    let mut jwks_urls = Vec::new();
    for (i, key) in raw.keys.into_iter().enumerate() {
        let at = format!("jwt.keys[{i}]");
        match validate_key(&at, key, ca_file)? {
            KeySource::Keys(mut parsed) => keys.append(&mut parsed),
            KeySource::Url(url) => jwks_urls.push(url),
            KeySource::EmptySecret => warnings.push(format!(
                "{at}.secret is empty (is JWT_SECRET set?): tokens signed with a secret are refused"
            )),
        }
    }
    if keys.is_empty() && jwks_urls.is_empty() {
        warnings.push("jwt: no usable key: every token is refused".into());
    }

    if raw.cache_size > 0 && raw.cache_ttl.is_zero() {
        return Err(problem(
            "jwt.cache_ttl",
            "must be more than zero (or set cache_size: 0)",
        ));
    }
    if raw.leeway > Duration::from_secs(300) {
        return Err(problem("jwt.leeway", "at most 5m"));
    }
    if let Some(cookie) = &raw.cookie {
        if cookie.is_empty()
            || !cookie
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"=;,\"".contains(&b))
        {
            return Err(problem(
                "jwt.cookie",
                format!("`{cookie}` is not a cookie name"),
            ));
        }
    }

    let claim_headers = raw
        .claim_headers
        .into_iter()
        .map(|(claim, header)| {
            let at = format!("jwt.claim_headers.{claim}");
            let name = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| problem(&at, format!("`{header}` is not a header name")))?;
            if RESERVED_HEADERS.contains(&name.as_str()) || name.as_str().contains('_') {
                return Err(problem(
                    &at,
                    format!("`{header}` cannot carry a claim; pick a name like X-User-Id"),
                ));
            }
            Ok(ClaimHeader {
                claim,
                header: name,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    Ok(JwtSettings {
        keys,
        jwks_urls,
        issuers: raw.issuers,
        audiences: raw.audiences,
        leeway: raw.leeway,
        require_exp: raw.require_exp,
        cookie: raw.cookie,
        forward_authorization: raw.forward_authorization,
        claim_headers,
        cache_size: raw.cache_size,
        cache_ttl: raw.cache_ttl,
    })
}

enum KeySource {
    Keys(Vec<VerifyingKey>),
    Url(JwksUrlSettings),
    /// `secret: "${JWT_SECRET:-}"` with the variable unset: a warning, not
    /// an error, so the gateway can still serve its open routes.
    EmptySecret,
}

fn validate_key(at: &str, key: RawJwtKey, ca_file: Option<&str>) -> Result<KeySource, Problem> {
    let given = [
        key.secret.is_some(),
        key.public_key_file.is_some(),
        key.jwks_file.is_some(),
        key.jwks_url.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(problem(
            at,
            "give exactly one of secret, public_key_file, jwks_file, jwks_url",
        ));
    }
    if key.jwks.is_some() && key.jwks_url.is_none() {
        return Err(problem(format!("{at}.jwks"), "only goes with jwks_url"));
    }
    if key.kid.is_some() && (key.jwks_file.is_some() || key.jwks_url.is_some()) {
        return Err(problem(
            format!("{at}.kid"),
            "a JWKS names its own keys; kid goes with secret or public_key_file",
        ));
    }
    let algorithms = match (key.algorithms, &key.secret) {
        (Some(list), _) => list,
        (None, Some(_)) => vec![Algorithm::HS256],
        (None, None) => {
            return Err(problem(
                format!("{at}.algorithms"),
                "list the algorithms this key verifies, e.g. [RS256]",
            ))
        }
    };
    let algorithms_at = format!("{at}.algorithms");

    if let Some(secret) = key.secret {
        if secret.is_empty() {
            return Ok(KeySource::EmptySecret);
        }
        let parsed = VerifyingKey::from_secret(secret.as_bytes(), algorithms, key.kid)
            .map_err(|e| problem(&algorithms_at, e))?;
        return Ok(KeySource::Keys(vec![parsed]));
    }
    if let Some(file) = key.public_key_file {
        let at = format!("{at}.public_key_file");
        let pem =
            std::fs::read(&file).map_err(|e| problem(&at, format!("cannot read {file}: {e}")))?;
        let parsed = VerifyingKey::from_pem(&pem, algorithms, key.kid)
            .map_err(|e| problem(&at, format!("{file}: {e}")))?;
        return Ok(KeySource::Keys(vec![parsed]));
    }
    if let Some(file) = key.jwks_file {
        let at = format!("{at}.jwks_file");
        let text = std::fs::read_to_string(&file)
            .map_err(|e| problem(&at, format!("cannot read {file}: {e}")))?;
        let (parsed, skipped) =
            parse_jwks(&text, &algorithms).map_err(|e| problem(&at, format!("{file}: {e}")))?;
        if parsed.is_empty() {
            return Err(problem(
                &at,
                format!(
                    "{file}: no key fits {algorithms:?} ({})",
                    skipped.join("; ")
                ),
            ));
        }
        return Ok(KeySource::Keys(parsed));
    }

    let url = key.jwks_url.unwrap_or_default();
    let at_url = format!("{at}.jwks_url");
    let uri: http::Uri = url
        .parse()
        .map_err(|_| problem(&at_url, format!("`{url}` is not a URL")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(problem(&at_url, format!("`{url}` is not an http(s) URL")));
    }
    let fetch = key.jwks.unwrap_or_default();
    for (name, value) in [
        ("refresh_interval", fetch.refresh_interval),
        ("refetch_cooldown", fetch.refetch_cooldown),
        ("timeout", fetch.timeout),
    ] {
        if value.is_zero() {
            return Err(problem(
                format!("{at}.jwks.{name}"),
                "must be more than zero",
            ));
        }
    }
    Ok(KeySource::Url(JwksUrlSettings {
        url,
        algorithms,
        fetch,
        ca_file: ca_file.map(str::to_string),
    }))
}

/// The auth policy of `routes[i]`, whose prefix is already validated.
pub(super) fn validate_route_auth(
    i: usize,
    route: &mut RawRoute,
    has_jwt: bool,
) -> Result<RouteAuth, Problem> {
    let at = format!("routes[{i}]");
    let rule = validate_rule(&at, route.auth, std::mem::take(&mut route.require), has_jwt)?;
    let overrides = std::mem::take(&mut route.auth_overrides)
        .into_iter()
        .enumerate()
        .map(|(j, o)| {
            validate_override(
                &format!("{at}.auth_overrides[{j}]"),
                o,
                &route.prefix,
                has_jwt,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RouteAuth { rule, overrides })
}

fn validate_rule(
    at: &str,
    mode: AuthMode,
    require: RawRequire,
    has_jwt: bool,
) -> Result<AuthRule, Problem> {
    if mode != AuthMode::Off && !has_jwt {
        return Err(problem(
            format!("{at}.auth"),
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
    if demands && mode != AuthMode::Required {
        return Err(problem(
            format!("{at}.require"),
            "only applies with `auth: required`",
        ));
    }
    Ok(AuthRule { mode, require })
}

fn validate_override(
    at: &str,
    raw: RawAuthOverride,
    route_prefix: &str,
    has_jwt: bool,
) -> Result<AuthOverride, Problem> {
    let methods = parse_methods(&format!("{at}.methods"), &raw.methods)?;

    let (key, path) = match (raw.path, raw.prefix) {
        (Some(p), None) => ("path", PathMatch::Exact(p)),
        (None, Some(p)) => ("prefix", PathMatch::Prefix(p)),
        _ => return Err(problem(at, "give exactly one of path, prefix")),
    };
    let text = match &path {
        PathMatch::Exact(p) | PathMatch::Prefix(p) => p.as_str(),
    };
    let key = format!("{at}.{key}");
    if path::normalize(text).ok().as_deref() != Some(text) {
        return Err(problem(&key, format!("`{text}` is not a normalized path")));
    }
    let under_route = route_prefix == "/"
        || text
            .strip_prefix(route_prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    if !under_route {
        return Err(problem(
            &key,
            format!("`{text}` is outside the route's prefix `{route_prefix}` (write the whole client path)"),
        ));
    }

    let rule = validate_rule(at, raw.auth, raw.require, has_jwt)?;
    Ok(AuthOverride {
        methods,
        path,
        rule,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_errors, env, with_route};
    use super::super::{parse, Config, PluginConfig};
    use super::*;

    fn ok(yaml: &str) -> Config {
        parse(yaml, &env).unwrap_or_else(|e| panic!("{e:?} for\n{yaml}"))
    }

    const JWT: &str = "jwt: {keys: [{secret: '${JWT_SECRET}'}]}\n";

    #[test]
    fn a_secret_defaults_to_hs256_and_routes_get_their_policy() {
        let c = ok(&with_route(
            JWT,
            "auth: required, require: {scopes: [a]}, auth_overrides: [{methods: [POST], path: /users/login, auth: off}]",
        ));
        let jwt = c.jwt.unwrap();
        assert_eq!(jwt.keys[0].algorithms, [Algorithm::HS256]);
        assert_eq!(jwt.leeway, Duration::from_secs(30));
        let Some(PluginConfig::Auth(auth)) = c.routes[0].plugins.first() else {
            panic!("no auth plugin");
        };
        assert_eq!(auth.rule.mode, AuthMode::Required);
        assert_eq!(auth.rule.require.scopes, ["a"]);
        assert_eq!(auth.overrides[0].methods, [Method::POST]);
        assert_eq!(auth.overrides[0].rule.mode, AuthMode::Off);
        assert_eq!(
            auth.overrides[0].path,
            PathMatch::Exact("/users/login".into())
        );
    }

    #[test]
    fn an_empty_secret_is_a_warning_not_an_error() {
        let c = ok(&with_route(
            "jwt: {keys: [{secret: '${NOT_SET:-}'}]}\n",
            "auth: required",
        ));
        assert!(c.jwt.unwrap().keys.is_empty());
        assert!(
            c.warnings[0].contains("jwt.keys[0].secret is empty"),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn without_a_jwt_section_routes_have_no_auth_plugin() {
        let c = ok(&with_route("", "auth: off"));
        assert!(c.routes[0].plugins.is_empty());
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

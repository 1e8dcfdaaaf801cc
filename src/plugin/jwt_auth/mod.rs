//! The JWT auth plugin: does this request need a token, is the one it
//! brings good enough, and what do the upstream services learn from it.
//!
//! The decision uses the normalized path, so `/users/../orders/1` is judged
//! as `/orders/1`. CORS preflights never need a token (a browser cannot
//! attach one). Every other request shape, `Upgrade` included, gets its
//! route's policy. The client's `Authorization` header goes on unchanged
//! (services verify again) unless configured otherwise, and the claim
//! headers the gateway manages are always removed from the client's request
//! first, in any spelling, so they can only come from a verified token.
//!
//! Its YAML (`jwt:` and each route's `auth`, `require`, `auth_overrides`)
//! and the conversion into policies are in `config.rs`; the verification
//! itself is `crate::jwt`.

pub mod config;

use std::sync::Arc;

use async_trait::async_trait;
use http::{HeaderName, HeaderValue, Method};
use pingora::http::RequestHeader;
use pingora::Result;
use pingora_prometheus::prometheus::IntCounterVec;
use serde_json::Value;

use super::{is_preflight, Flow, Plugin};
use crate::context::{Finished, RequestCtx};
use crate::error::GatewayError;
use crate::headers;
use crate::jwt::{Claims, Verifier};
use crate::metrics::Metrics;
use crate::path;
use config::{
    ClaimHeader, JwtSettings, Mode, Override, PathMatch, Requirements, RoutePolicy, Rule,
};

const NAME: &str = "jwt";

/// What every route's JWT auth shares: the verifier and the header policy.
pub struct JwtShared {
    pub verifier: Verifier,
    cookie: Option<String>,
    forward_authorization: bool,
    claim_headers: Vec<ClaimHeader>,
    /// `gateway_jwt_rejections_total{reason}`, when metrics are on.
    rejections: Option<IntCounterVec>,
}

impl JwtShared {
    /// `previous` is the one a reload replaces, whose fetched keys and
    /// verified tokens the new verifier may keep.
    pub fn new(
        settings: JwtSettings,
        metrics: Option<&Metrics>,
        previous: Option<&JwtShared>,
    ) -> Self {
        JwtShared {
            verifier: Verifier::new(settings.verifier, previous.map(|p| &p.verifier)),
            cookie: settings.cookie,
            forward_authorization: settings.forward_authorization,
            claim_headers: settings.claim_headers,
            rejections: metrics.map(|m| {
                m.counter_vec(
                    "gateway_jwt_rejections_total",
                    "Requests refused by JWT auth, by reason",
                    &["reason"],
                )
            }),
        }
    }

    /// The bearer token (scheme matched case-insensitively), else the
    /// configured cookie.
    fn token<'r>(&self, req: &'r RequestHeader) -> Option<&'r str> {
        let bearer = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        bearer.or_else(|| headers::cookie(req, self.cookie.as_deref()?))
    }

    /// Whether `name` (lower case, as stored) is one of the claim headers,
    /// spelled with `-` or `_`.
    fn is_managed(&self, name: &str) -> bool {
        self.claim_headers.iter().any(|c| {
            let managed = c.header.as_str().as_bytes();
            name.len() == managed.len()
                && name
                    .bytes()
                    .zip(managed)
                    .all(|(a, &b)| a == b || (a == b'_' && b == b'-'))
        })
    }
}

/// One route's JWT auth: the shared verifier and the route's policy.
pub struct JwtAuth {
    shared: Arc<JwtShared>,
    policy: RoutePolicy,
}

impl JwtAuth {
    pub fn new(shared: Arc<JwtShared>, policy: RoutePolicy) -> Self {
        JwtAuth { shared, policy }
    }
}

#[async_trait]
impl Plugin for JwtAuth {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn request(&self, req: &RequestHeader, ctx: &mut RequestCtx) -> Flow {
        if is_preflight(req) {
            return Flow::Continue;
        }
        let rule = rule_for(&self.policy, &req.method, &ctx.path);
        if rule.mode == Mode::Off {
            return Flow::Continue;
        }
        let Some(token) = self.shared.token(req) else {
            if rule.mode != Mode::Required {
                return Flow::Continue;
            }
            return Flow::Refuse {
                reason: "missing_token",
                error: GatewayError::MissingToken,
            };
        };
        match self.shared.verifier.verify(token).await {
            Err(e) => Flow::Refuse {
                reason: e.code(),
                error: GatewayError::InvalidToken(e.reason()),
            },
            Ok(claims) if satisfies(&rule.require, &claims) => {
                ctx.claims = Some(claims);
                Flow::Continue
            }
            Ok(_) => Flow::Refuse {
                reason: "insufficient_scope",
                error: GatewayError::InsufficientScope,
            },
        }
    }

    fn upstream_request(&self, req: &mut RequestHeader, ctx: &RequestCtx) -> Result<()> {
        let forged: Vec<HeaderName> = req
            .headers
            .keys()
            .filter(|name| self.shared.is_managed(name.as_str()))
            .cloned()
            .collect();
        for name in forged {
            req.remove_header(&name);
        }
        if !self.shared.forward_authorization {
            req.remove_header(&http::header::AUTHORIZATION);
        }
        if let Some(claims) = &ctx.claims {
            for mapping in &self.shared.claim_headers {
                if let Some(value) = claims.get(&mapping.claim).and_then(header_value) {
                    req.insert_header(mapping.header.clone(), value)?;
                }
            }
        }
        Ok(())
    }

    fn finished(&self, done: &Finished) {
        if let (Some(counter), Some(refusal)) = (&self.shared.rejections, done.ctx.refusal) {
            if refusal.plugin == NAME {
                counter.with_label_values(&[refusal.reason]).inc();
            }
        }
    }
}

/// The first override matching the method and path, else the route's rule.
fn rule_for<'a>(policy: &'a RoutePolicy, method: &Method, path: &str) -> &'a Rule {
    policy
        .overrides
        .iter()
        .find(|o| applies(o, method, path))
        .map_or(&policy.rule, |o| &o.rule)
}

fn applies(o: &Override, method: &Method, path: &str) -> bool {
    let path_matches = match &o.path {
        PathMatch::Exact(p) => p == path,
        PathMatch::Prefix(p) => path::is_within(path, p),
    };
    path_matches && (o.methods.is_empty() || o.methods.contains(method))
}

fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Scopes: all of the required ones, from `scope` (space-separated) or
/// `scp` (list or space-separated). Roles: at least one, from `roles`.
/// Claims: each equal to the value, or containing it when a list.
fn satisfies(require: &Requirements, claims: &Claims) -> bool {
    let granted = |name: &str| -> Vec<&str> {
        match claims.get(name) {
            Some(Value::String(s)) => s.split_whitespace().collect(),
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    };
    let scopes_ok = require.scopes.is_empty() || {
        let mut have = granted("scope");
        have.extend(granted("scp"));
        require.scopes.iter().all(|s| have.contains(&s.as_str()))
    };
    let roles_ok = require.roles.is_empty() || {
        let have = granted("roles");
        require.roles.iter().any(|r| have.contains(&r.as_str()))
    };
    let claims_ok = require
        .claims
        .iter()
        .all(|(name, want)| match claims.get(name) {
            Some(Value::Array(items)) => items.contains(want),
            Some(value) => value == want,
            None => false,
        });
    scopes_ok && roles_ok && claims_ok
}

/// A claim as a header value: scalars as text, lists of scalars joined by
/// commas; objects, nulls and anything a header cannot carry are left out.
fn header_value(claim: &Value) -> Option<HeaderValue> {
    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    let text = match claim {
        Value::Array(items) => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()?
            .join(","),
        other => scalar(other)?,
    };
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Claims {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_a_token() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("BEARER abc"), Some("abc"));
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Basic dXNlcjpwdw=="), None);
    }

    #[test]
    fn the_first_matching_override_wins() {
        let rule = |mode| Rule {
            mode,
            require: Requirements::default(),
        };
        let policy = RoutePolicy {
            rule: rule(Mode::Required),
            overrides: vec![
                Override {
                    methods: vec![Method::POST],
                    path: PathMatch::Exact("/users/login".into()),
                    rule: rule(Mode::Off),
                },
                Override {
                    methods: vec![],
                    path: PathMatch::Prefix("/users/public".into()),
                    rule: rule(Mode::Optional),
                },
            ],
        };
        let mode = |m: Method, p: &str| rule_for(&policy, &m, p).mode;
        assert_eq!(mode(Method::POST, "/users/login"), Mode::Off);
        assert_eq!(mode(Method::GET, "/users/login"), Mode::Required);
        assert_eq!(mode(Method::POST, "/users/login/x"), Mode::Required);
        assert_eq!(mode(Method::GET, "/users/public"), Mode::Optional);
        assert_eq!(mode(Method::PUT, "/users/public/a"), Mode::Optional);
        assert_eq!(mode(Method::GET, "/users/publicity"), Mode::Required);
        assert_eq!(mode(Method::GET, "/users/me"), Mode::Required);
    }

    #[test]
    fn requirements_read_scope_scp_roles_and_claims() {
        let need = |scopes: &[&str], roles: &[&str], claims: &[(&str, Value)]| Requirements {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            claims: claims
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        let token = claims(json!({
            "scope": "orders:read orders:write",
            "scp": ["admin:view"],
            "roles": ["staff"],
            "tenant": "acme",
            "groups": ["a", "b"],
        }));
        assert!(satisfies(&need(&[], &[], &[]), &token));
        assert!(satisfies(
            &need(&["orders:read", "admin:view"], &[], &[]),
            &token
        ));
        assert!(!satisfies(
            &need(&["orders:read", "orders:delete"], &[], &[]),
            &token
        ));
        assert!(satisfies(&need(&[], &["admin", "staff"], &[]), &token));
        assert!(!satisfies(&need(&[], &["admin"], &[]), &token));
        assert!(satisfies(
            &need(
                &[],
                &[],
                &[("tenant", json!("acme")), ("groups", json!("b"))]
            ),
            &token
        ));
        assert!(!satisfies(
            &need(&[], &[], &[("tenant", json!("other"))]),
            &token
        ));
        assert!(!satisfies(
            &need(&[], &[], &[("missing", json!("x"))]),
            &token
        ));
        // A single role given as a string.
        assert!(satisfies(
            &need(&[], &["admin"], &[]),
            &claims(json!({"roles": "admin"}))
        ));
    }

    #[test]
    fn claims_become_header_values() {
        let text = |v: Value| header_value(&v).map(|h| h.to_str().unwrap().to_string());
        assert_eq!(text(json!("u-1")), Some("u-1".into()));
        assert_eq!(text(json!(42)), Some("42".into()));
        assert_eq!(text(json!(true)), Some("true".into()));
        assert_eq!(text(json!(["a", "b"])), Some("a,b".into()));
        assert_eq!(text(json!({"a": 1})), None);
        assert_eq!(text(json!(null)), None);
        assert_eq!(text(json!("line\r\nbreak")), None);
    }
}

//! JWT authentication at the edge, against the real binary and a real echo
//! upstream on 127.0.0.1. Tokens and JWKs are minted by PyJWT from keys made
//! by openssl, never by the crate that verifies them.

mod support;

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use support::jwt::*;
use support::*;

const SECRET: &str = "a-test-secret-of-reasonable-length";
const CHALLENGE: &str = r#"Bearer realm="api-gateway", error="invalid_token""#;

/// What the echo upstream saw: the x-seen-headers JSON.
fn seen(r: &Response) -> Value {
    serde_json::from_str(header(r, "x-seen-headers")).unwrap_or(Value::Null)
}

/// A gateway with `jwt` (YAML lines under `jwt:`) in front of `upstream`
/// on `/users` (with `users_auth`) and an open `/public`.
async fn gateway(upstream: &Upstream, jwt: &str, users_auth: &str) -> Gateway {
    Gateway::start(&format!(
        "listeners: [{{address: '127.0.0.1:{{port}}'}}]
jwt:
{jwt}
upstreams:
  svc: {{instances: ['{}']}}
routes:
  - {{prefix: /users, upstream: svc, {users_auth}}}
  - {{prefix: /public, upstream: svc}}
",
        upstream.url()
    ))
    .await
}

fn hs256_jwt() -> String {
    format!(
        "  keys: [{{secret: '{SECRET}'}}]
  claim_headers: {{sub: X-User-Id, role: X-User-Role}}"
    )
}

async fn get(gw: &Gateway, path: &str, token: Option<&str>) -> Response {
    let mut request = client().get(gw.url(path));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.send().await.unwrap()
}

/// Asserts a 401 with the reason (None: missing token) and the challenge.
async fn assert_refused(r: Response, reason: Option<&str>) {
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&r, "www-authenticate"), CHALLENGE);
    assert!(!header(&r, "x-request-id").is_empty());
    assert!(header(&r, "content-type").starts_with("application/json"));
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    match reason {
        None => assert_eq!(body["error"], "Missing token", "{body}"),
        Some(reason) => {
            assert_eq!(body["error"], "Invalid token", "{body}");
            assert_eq!(body["reason"], reason, "{body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hs256_tokens_missing_bad_and_good() {
    let upstream = Upstream::start("svc").await;
    let gw = gateway(&upstream, &hs256_jwt(), "auth: required").await;
    let t = now();
    let tokens = tool(&[
        mint("HS256", SECRET, claims("u-1", json!({"role": "admin"}))),
        mint("HS256", "some-other-secret", claims("u-1", json!({}))),
        mint("HS256", SECRET, claims("u-1", json!({"exp": t - 3600}))),
        mint("HS256", SECRET, claims("u-1", json!({"nbf": t + 3600}))),
        mint("HS256", SECRET, claims("u-1", json!({"iat": t + 3600}))),
        mint("HS256", SECRET, json!({"sub": "u-1"})),
        json!({"op": "mint", "alg": "none", "claims": claims("u-1", json!({}))}),
        mint("HS512", SECRET, claims("u-1", json!({}))),
    ]);
    let [good, wrong_secret, expired, not_yet, future_iat, no_exp, alg_none, hs512] =
        <[String; 8]>::try_from(tokens).unwrap();

    assert_refused(get(&gw, "/users/me", None).await, None).await;
    let basic = client()
        .get(gw.url("/users/me"))
        .header("authorization", "Basic dXNlcjpwdw==")
        .send()
        .await
        .unwrap();
    assert_refused(basic, None).await;
    for (token, reason) in [
        ("not-a-token", "malformed token"),
        ("a.b.c", "malformed token"),
        (wrong_secret.as_str(), "bad signature"),
        (expired.as_str(), "token expired"),
        (not_yet.as_str(), "token not yet valid"),
        (future_iat.as_str(), "token issued in the future"),
        (no_exp.as_str(), "missing a required claim"),
        (alg_none.as_str(), "malformed token"),
        // The key is pinned to HS256: HS512 is not accepted with it.
        (hs512.as_str(), "no key for this token's algorithm and kid"),
    ] {
        assert_refused(get(&gw, "/users/me", Some(token)).await, Some(reason)).await;
    }
    assert_eq!(
        upstream.hits(),
        0,
        "refused requests never reach the service"
    );

    let r = get(&gw, "/users/me", Some(&good)).await;
    assert_eq!(r.status(), 200);
    let seen = seen(&r);
    assert_eq!(seen["authorization"], format!("Bearer {good}"));
    assert_eq!(seen["x-user-id"], "u-1");
    assert_eq!(seen["x-user-role"], "admin");

    // The scheme is case-insensitive.
    let r = client()
        .get(gw.url("/users/me"))
        .header("authorization", format!("bEaReR {good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A HEAD gets the status and challenge without a body.
    let r = client().head(gw.url("/users/me")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "www-authenticate"), CHALLENGE);
}

#[tokio::test(flavor = "multi_thread")]
async fn leeway_applies_at_both_edges() {
    let upstream = Upstream::start("svc").await;
    let jwt = format!("  keys: [{{secret: '{SECRET}'}}]\n  leeway: 30s");
    let gw = gateway(&upstream, &jwt, "auth: required").await;
    let t = now();
    let tokens = tool(&[
        mint("HS256", SECRET, claims("u", json!({"exp": t - 10}))),
        mint("HS256", SECRET, claims("u", json!({"exp": t - 60}))),
        mint("HS256", SECRET, claims("u", json!({"nbf": t + 10}))),
        mint("HS256", SECRET, claims("u", json!({"nbf": t + 60}))),
        mint("HS256", SECRET, claims("u", json!({"iat": t + 10}))),
    ]);
    assert_eq!(get(&gw, "/users/x", Some(&tokens[0])).await.status(), 200);
    assert_refused(
        get(&gw, "/users/x", Some(&tokens[1])).await,
        Some("token expired"),
    )
    .await;
    assert_eq!(get(&gw, "/users/x", Some(&tokens[2])).await.status(), 200);
    assert_refused(
        get(&gw, "/users/x", Some(&tokens[3])).await,
        Some("token not yet valid"),
    )
    .await;
    assert_eq!(get(&gw, "/users/x", Some(&tokens[4])).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn issuer_and_audience_when_configured() {
    let upstream = Upstream::start("svc").await;
    let jwt = format!(
        "  keys: [{{secret: '{SECRET}'}}]\n  issuers: [https://idp.shop]\n  audiences: [shop-api]"
    );
    let gw = gateway(&upstream, &jwt, "auth: required").await;
    let tokens = tool(&[
        mint(
            "HS256",
            SECRET,
            claims("u", json!({"iss": "https://idp.shop", "aud": "shop-api"})),
        ),
        mint(
            "HS256",
            SECRET,
            claims(
                "u",
                json!({"iss": "https://idp.shop", "aud": ["other", "shop-api"]}),
            ),
        ),
        mint(
            "HS256",
            SECRET,
            claims("u", json!({"iss": "https://evil", "aud": "shop-api"})),
        ),
        mint("HS256", SECRET, claims("u", json!({"aud": "shop-api"}))),
        mint(
            "HS256",
            SECRET,
            claims("u", json!({"iss": "https://idp.shop", "aud": "other"})),
        ),
        mint(
            "HS256",
            SECRET,
            claims("u", json!({"iss": "https://idp.shop"})),
        ),
    ]);
    assert_eq!(get(&gw, "/users/x", Some(&tokens[0])).await.status(), 200);
    assert_eq!(get(&gw, "/users/x", Some(&tokens[1])).await.status(), 200);
    assert_refused(
        get(&gw, "/users/x", Some(&tokens[2])).await,
        Some("wrong issuer"),
    )
    .await;
    assert_refused(
        get(&gw, "/users/x", Some(&tokens[3])).await,
        Some("missing a required claim"),
    )
    .await;
    assert_refused(
        get(&gw, "/users/x", Some(&tokens[4])).await,
        Some("wrong audience"),
    )
    .await;
    assert_refused(
        get(&gw, "/users/x", Some(&tokens[5])).await,
        Some("missing a required claim"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_algorithm_family_with_pem_keys_and_no_confusion() {
    let keys = Keys::generate();
    let upstream = Upstream::start("svc").await;
    let jwt = format!(
        "  keys:
    - {{secret: '{SECRET}', algorithms: [HS256, HS384, HS512]}}
    - {{public_key_file: '{}', algorithms: [RS256, RS384, RS512, PS256, PS384, PS512]}}
    - {{public_key_file: '{}', algorithms: [ES256]}}
    - {{public_key_file: '{}', algorithms: [ES384]}}
    - {{public_key_file: '{}', algorithms: [EdDSA]}}",
        keys.rsa.public_file.display(),
        keys.ec256.public_file.display(),
        keys.ec384.public_file.display(),
        keys.ed.public_file.display(),
    );
    let gw = gateway(&upstream, &jwt, "auth: required").await;

    let mut jobs = Vec::new();
    for alg in ["HS256", "HS384", "HS512"] {
        jobs.push((alg, mint(alg, SECRET, claims(alg, json!({})))));
    }
    for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
        jobs.push((alg, mint(alg, &keys.rsa.private, claims(alg, json!({})))));
    }
    jobs.push((
        "ES256",
        mint("ES256", &keys.ec256.private, claims("ES256", json!({}))),
    ));
    jobs.push((
        "ES384",
        mint("ES384", &keys.ec384.private, claims("ES384", json!({}))),
    ));
    jobs.push((
        "EdDSA",
        mint("EdDSA", &keys.ed.private, claims("EdDSA", json!({}))),
    ));
    let tokens = tool(&jobs.iter().map(|(_, j)| j.clone()).collect::<Vec<_>>());
    for ((alg, _), token) in jobs.iter().zip(&tokens) {
        let r = get(&gw, "/users/me", Some(token)).await;
        assert_eq!(r.status(), 200, "{alg}");
        assert_eq!(
            seen(&r)["authorization"],
            format!("Bearer {token}"),
            "{alg}"
        );
    }

    let attacks = tool(&[
        // RS256 signed by a key the gateway does not have.
        mint("RS256", &keys.rsa_other.private, claims("u", json!({}))),
        // The RS256→HS256 confusion: HMAC keyed with the public key's PEM.
        json!({"op": "hmac_with", "key": keys.rsa.public, "claims": claims("u", json!({}))}),
    ]);
    assert_refused(
        get(&gw, "/users/me", Some(&attacks[0])).await,
        Some("bad signature"),
    )
    .await;
    assert_refused(
        get(&gw, "/users/me", Some(&attacks[1])).await,
        Some("bad signature"),
    )
    .await;

    // Without an HMAC key configured, the confusion token finds no key at all.
    let jwt = format!(
        "  keys: [{{public_key_file: '{}', algorithms: [RS256]}}]",
        keys.rsa.public_file.display()
    );
    let gw = gateway(&upstream, &jwt, "auth: required").await;
    assert_refused(
        get(&gw, "/users/me", Some(&attacks[1])).await,
        Some("no key for this token's algorithm and kid"),
    )
    .await;
}

#[test]
fn an_rsa_key_under_2048_bits_fails_the_config_check() {
    let keys = Keys::generate();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("weak.yaml");
    let yaml = format!(
        "listeners: [{{address: '127.0.0.1:1'}}]
jwt:
  keys: [{{public_key_file: '{}', algorithms: [RS256]}}]
upstreams: {{svc: {{instances: ['http://127.0.0.1:2']}}}}
routes: [{{prefix: /users, upstream: svc, auth: required}}]
",
        keys.rsa_weak.public_file.display()
    );
    std::fs::write(&conf, yaml).unwrap();
    // `-t` loads the keys as startup does, and exits whatever it finds.
    let out = run_binary(&["-t", "-c", conf.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted a 1024-bit key");
    assert!(
        stderr.contains(conf.to_str().unwrap())
            && stderr.contains("jwt.keys[0].public_key_file")
            && stderr.contains("1024 bits"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kid_selects_among_configured_keys_and_jku_is_ignored() {
    let upstream = Upstream::start("svc").await;
    let attacker = JwksServer::start("{}").await;
    let jwt = "  keys:
    - {secret: 'first-secret-0123456789', kid: one}
    - {secret: 'second-secret-0123456789', kid: two}";
    let gw = gateway(&upstream, jwt, "auth: required").await;
    // jku, x5u and an embedded jwk all point at keys the attacker controls.
    let h = |kid: &str| {
        json!({"kid": kid, "jku": attacker.url(), "x5u": attacker.url(),
               "jwk": {"kty": "oct", "k": "YXR0YWNrZXI"}})
    };
    let tokens = tool(&[
        mint_with_headers(
            "HS256",
            "first-secret-0123456789",
            claims("u", json!({})),
            h("one"),
        ),
        mint_with_headers(
            "HS256",
            "second-secret-0123456789",
            claims("u", json!({})),
            h("two"),
        ),
        mint_with_headers(
            "HS256",
            "first-secret-0123456789",
            claims("u", json!({})),
            h("two"),
        ),
        mint_with_headers(
            "HS256",
            "first-secret-0123456789",
            claims("u", json!({})),
            h("three"),
        ),
        mint("HS256", "second-secret-0123456789", claims("u", json!({}))),
    ]);
    assert_eq!(get(&gw, "/users/a", Some(&tokens[0])).await.status(), 200);
    assert_eq!(get(&gw, "/users/a", Some(&tokens[1])).await.status(), 200);
    assert_refused(
        get(&gw, "/users/a", Some(&tokens[2])).await,
        Some("bad signature"),
    )
    .await;
    assert_refused(
        get(&gw, "/users/a", Some(&tokens[3])).await,
        Some("no key for this token's algorithm and kid"),
    )
    .await;
    // No kid: every configured key is tried.
    assert_eq!(get(&gw, "/users/a", Some(&tokens[4])).await.status(), 200);
    assert_eq!(attacker.hits(), 0, "jku/x5u must never be fetched");
}

#[tokio::test(flavor = "multi_thread")]
async fn jwks_rotation_refetch_cooldown_and_outage() {
    let keys = Keys::generate();
    let upstream = Upstream::start("svc").await;
    let idp = JwksServer::start(&jwks(&[(&keys.rsa.public, "a", "RS256")])).await;
    let jwt = format!(
        "  keys: [{{jwks_url: '{}', algorithms: [RS256, ES256], jwks: {{refresh_interval: 1h, refetch_cooldown: 2s}}}}]\n  cache_ttl: 1s",
        idp.url()
    );
    let gw = gateway(&upstream, &jwt, "auth: required").await;
    assert_eq!(idp.hits(), 1, "fetched once before listening");

    let kid = |k: &str| json!({"kid": k});
    let tokens = tool(&[
        mint_with_headers("RS256", &keys.rsa.private, claims("u", json!({})), kid("a")),
        mint_with_headers(
            "ES256",
            &keys.ec256.private,
            claims("u", json!({})),
            kid("b"),
        ),
    ]);
    let (token_a, token_b) = (&tokens[0], &tokens[1]);
    assert_eq!(get(&gw, "/users/a", Some(token_a)).await.status(), 200);
    assert_eq!(idp.hits(), 1);

    // The provider rotates: b replaces a. The first token with kid b makes
    // the gateway refetch (the cooldown since startup may have to pass).
    idp.set(200, &jwks(&[(&keys.ec256.public, "b", "ES256")]));
    wait_until(Duration::from_secs(10), "kid b to be accepted", || async {
        get(&gw, "/users/b", Some(token_b)).await.status() == 200
    })
    .await;
    let hits_after_rotation = idp.hits();
    assert!(hits_after_rotation >= 2);

    // A flood of unknown kids costs at most one fetch per cooldown (2 s).
    let started = std::time::Instant::now();
    let flood: Vec<Value> = (0..40)
        .map(|i| {
            mint_with_headers(
                "RS256",
                &keys.rsa.private,
                claims("u", json!({})),
                kid(&format!("random-{i}")),
            )
        })
        .collect();
    for token in tool(&flood) {
        assert_eq!(get(&gw, "/users/x", Some(&token)).await.status(), 401);
    }
    let allowed = 1 + started.elapsed().as_secs() as usize / 2 + 1;
    let fetched = idp.hits() - hits_after_rotation;
    assert!(fetched <= allowed, "{fetched} fetches for 40 unknown kids");

    // a was rotated out: refused once its verified tokens leave the cache
    // (cache_ttl, 1 s here).
    wait_until(Duration::from_secs(5), "token a to be refused", || async {
        get(&gw, "/users/a", Some(token_a)).await.status() == 401
    })
    .await;

    // The provider goes down (first answering 500, then not at all): the
    // last good key set keeps serving.
    idp.set(500, "oops");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let unknown = one(mint_with_headers(
        "RS256",
        &keys.rsa.private,
        claims("u", json!({})),
        kid("zzz"),
    ));
    let before = idp.hits();
    assert_eq!(get(&gw, "/users/x", Some(&unknown)).await.status(), 401);
    assert_eq!(idp.hits(), before + 1, "the unknown kid caused one fetch");
    idp.stop();
    assert_eq!(get(&gw, "/users/b", Some(token_b)).await.status(), 200);
    assert!(gw.stderr().contains("fetch failed"), "{}", gw.stderr());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_jwks_at_startup_is_retried() {
    let keys = Keys::generate();
    let upstream = Upstream::start("svc").await;
    let idp_port = free_port();
    let jwt = format!(
        "  keys: [{{jwks_url: 'http://127.0.0.1:{idp_port}/jwks.json', algorithms: [RS256], jwks: {{refetch_cooldown: 1s}}}}]"
    );
    let gw = gateway(&upstream, &jwt, "auth: required").await;
    assert!(
        gw.stderr().contains("unreachable at startup"),
        "{}",
        gw.stderr()
    );
    let token = one(mint_with_headers(
        "RS256",
        &keys.rsa.private,
        claims("u", json!({})),
        json!({"kid": "k"}),
    ));
    assert_eq!(get(&gw, "/users/me", Some(&token)).await.status(), 401);
    assert_eq!(get(&gw, "/public/x", None).await.status(), 200);

    let idp = JwksServer::start_on(idp_port, &jwks(&[(&keys.rsa.public, "k", "RS256")])).await;
    wait_until(
        Duration::from_secs(10),
        "the JWKS to be fetched",
        || async { get(&gw, "/users/me", Some(&token)).await.status() == 200 },
    )
    .await;
    assert!(idp.hits() >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn claim_headers_cannot_be_forged() {
    let upstream = Upstream::start("svc").await;
    let gw = gateway(&upstream, &hs256_jwt(), "auth: optional").await;
    let token = one(mint("HS256", SECRET, claims("real-user", json!({}))));
    let forged = |path: &str, token: Option<&str>| {
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-User-Id: evil\r\nx_user_id: evil2\r\nX-USER_ROLE: admin\r\n"
        );
        if let Some(token) = token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        request + "\r\n"
    };
    for (path, token, expected_id) in [
        ("/users/me", Some(token.as_str()), Some("real-user")),
        ("/users/me", None, None),
        ("/public/x", None, None),
    ] {
        let r = raw_request(gw.port(), &forged(path, token)).await;
        assert_eq!(r.status, 200, "{path}");
        let seen: Value = serde_json::from_str(r.header("x-seen-headers").unwrap()).unwrap();
        assert_eq!(
            seen.get("x-user-id").and_then(Value::as_str),
            expected_id,
            "{seen}"
        );
        for name in ["x_user_id", "x-user_role", "x-user-role", "x_user_role"] {
            assert!(
                seen.get(name).is_none(),
                "{name} reached the upstream: {seen}"
            );
        }
    }

    // forward_authorization: false keeps the token at the edge.
    let jwt = format!("{}\n  forward_authorization: false", hs256_jwt());
    let gw = gateway(&upstream, &jwt, "auth: required").await;
    let r = get(&gw, "/users/me", Some(&token)).await;
    assert_eq!(r.status(), 200);
    assert!(seen(&r).get("authorization").is_none());
    assert_eq!(seen(&r)["x-user-id"], "real-user");
}

#[tokio::test(flavor = "multi_thread")]
async fn optional_auth_and_the_token_cookie() {
    let upstream = Upstream::start("svc").await;
    let jwt = format!("{}\n  cookie: session", hs256_jwt());
    let gw = gateway(&upstream, &jwt, "auth: optional").await;
    let token = one(mint("HS256", SECRET, claims("u-7", json!({}))));

    let r = get(&gw, "/users/me", None).await;
    assert_eq!(r.status(), 200);
    assert!(seen(&r).get("x-user-id").is_none());
    let r = get(&gw, "/users/me", Some(&token)).await;
    assert_eq!(seen(&r)["x-user-id"], "u-7");
    assert_refused(
        get(&gw, "/users/me", Some("bad.token.here")).await,
        Some("malformed token"),
    )
    .await;

    let r = client()
        .get(gw.url("/users/me"))
        .header("cookie", format!("theme=dark; session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(seen(&r)["x-user-id"], "u-7");
}

#[tokio::test(flavor = "multi_thread")]
async fn scopes_roles_and_claims_give_403_when_missing() {
    let upstream = Upstream::start("svc").await;
    let gw = gateway(
        &upstream,
        &hs256_jwt(),
        "auth: required, require: {scopes: [orders:write], roles: [admin, staff], claims: {tenant: acme}}",
    )
    .await;
    let ok = json!({"scope": "orders:read orders:write", "roles": ["staff"], "tenant": "acme"});
    let mut no_scope = ok.clone();
    no_scope["scope"] = "orders:read".into();
    let mut scp = ok.clone();
    scp.as_object_mut().unwrap().remove("scope");
    scp["scp"] = json!(["orders:write"]);
    let mut no_role = ok.clone();
    no_role["roles"] = json!(["customer"]);
    let mut other_tenant = ok.clone();
    other_tenant["tenant"] = "globex".into();
    let tokens = tool(
        &[ok, scp, no_scope, no_role, other_tenant]
            .into_iter()
            .map(|extra| mint("HS256", SECRET, claims("u", extra)))
            .collect::<Vec<_>>(),
    );
    assert_eq!(get(&gw, "/users/x", Some(&tokens[0])).await.status(), 200);
    assert_eq!(get(&gw, "/users/x", Some(&tokens[1])).await.status(), 200);
    for token in &tokens[2..] {
        let r = get(&gw, "/users/x", Some(token)).await;
        assert_eq!(r.status(), 403);
        assert_eq!(
            header(&r, "www-authenticate"),
            r#"Bearer realm="api-gateway", error="insufficient_scope""#
        );
        let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(body["error"], "Insufficient scope");
    }
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_follows_the_normalized_path_and_method() {
    let upstream = Upstream::start("svc").await;
    let gw = gateway(
        &upstream,
        &hs256_jwt(),
        "auth: required, auth_overrides: [{methods: [POST], path: /users/login, auth: off}]",
    )
    .await;
    let post = |target: &str| {
        format!(
            "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    };
    // The open exceptions.
    assert_eq!(
        raw_request(gw.port(), &post("/users/login")).await.status,
        200
    );
    assert_eq!(raw_get(gw.port(), "/public/../public/x").await.status, 200);
    // Traversal into protected paths is judged on where it lands.
    for target in [
        "/public/../users/me",
        "/public/%2e%2e/users/me",
        "//users/me",
        "/public/./../users",
        "/users/login/../me",
    ] {
        let r = raw_get(gw.port(), target).await;
        assert_eq!(r.status, 401, "{target}");
        assert_eq!(r.json()["error"], "Missing token", "{target}");
    }
    for target in [
        "/users/login/../me",
        "/users/login/",
        "/users/login/x",
        "/public/../users/login/../me",
    ] {
        assert_eq!(
            raw_request(gw.port(), &post(target)).await.status,
            401,
            "{target}"
        );
    }
    // A GET of the login path is not the exception.
    assert_eq!(raw_get(gw.port(), "/users/login").await.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn preflights_need_no_token_and_other_shapes_do() {
    let upstream = Upstream::start("svc").await;
    let gw = gateway(&upstream, &hs256_jwt(), "auth: required").await;
    let preflight = "OPTIONS /users/me HTTP/1.1\r\nHost: x\r\nOrigin: http://shop.test\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization\r\nConnection: close\r\n\r\n";
    assert_ne!(raw_request(gw.port(), preflight).await.status, 401);
    let plain_options = "OPTIONS /users/me HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_request(gw.port(), plain_options).await.status, 401);
    // A preflight always has an Origin: without one it is a plain OPTIONS,
    // the same predicate the CORS plugin answers preflights by.
    let no_origin = "OPTIONS /users/me HTTP/1.1\r\nHost: x\r\nAccess-Control-Request-Method: POST\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_request(gw.port(), no_origin).await.status, 401);
    let upgrade = "GET /users/me HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let r = raw_request(gw.port(), upgrade).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "Missing token");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_config_protects_routes_with_jwt_secret() {
    let services = four_services().await;
    let gw = Gateway::start_shipped(&services, SECRET).await;
    let token = one(mint(
        "HS256",
        SECRET,
        claims("u-1", json!({"role": "customer"})),
    ));

    for path in ["/users/me", "/products", "/orders/7", "/notify"] {
        assert_refused(get(&gw, path, None).await, None).await;
        let r = get(&gw, path, Some(&token)).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(seen(&r)["x-user-id"], "u-1");
        assert_eq!(seen(&r)["x-user-role"], "customer");
    }
    for path in ["/users/login", "/users/register"] {
        let r = client().post(gw.url(path)).body("{}").send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(header(&r, "x-seen-uri"), &path["/users".len()..]);
    }
    assert_eq!(get(&gw, "/users/login", None).await.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn jwks_files_and_the_background_refresh() {
    let keys = Keys::generate();
    let upstream = Upstream::start("svc").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    std::fs::write(
        &file,
        jwks(&[
            (&keys.rsa.public, "f1", "RS256"),
            (&keys.ec256.public, "f2", "ES256"),
        ]),
    )
    .unwrap();
    let idp = JwksServer::start(&jwks(&[(&keys.ed.public, "a", "EdDSA")])).await;
    // A cooldown of an hour: only the 1 s refresh can bring new keys in.
    let jwt = format!(
        "  keys:
    - {{jwks_file: '{}', algorithms: [RS256, ES256]}}
    - {{jwks_url: '{}', algorithms: [RS256, EdDSA], jwks: {{refresh_interval: 1s, refetch_cooldown: 1h}}}}
  cache_size: 0",
        file.display(),
        idp.url()
    );
    let gw = gateway(&upstream, &jwt, "auth: required").await;
    let kid = |k: &str| json!({"kid": k});
    let tokens = tool(&[
        mint_with_headers(
            "RS256",
            &keys.rsa.private,
            claims("u", json!({})),
            kid("f1"),
        ),
        mint_with_headers(
            "ES256",
            &keys.ec256.private,
            claims("u", json!({})),
            kid("f2"),
        ),
        mint_with_headers("EdDSA", &keys.ed.private, claims("u", json!({})), kid("a")),
        // The provider's next key, published under the same kid.
        mint_with_headers(
            "RS256",
            &keys.rsa_other.private,
            claims("u", json!({})),
            kid("a"),
        ),
    ]);
    for token in &tokens[..3] {
        assert_eq!(get(&gw, "/users/me", Some(token)).await.status(), 200);
    }
    // Kid a is still the Ed25519 key, and the hour's cooldown allows no
    // early fetch.
    assert_refused(
        get(&gw, "/users/me", Some(&tokens[3])).await,
        Some("no key for this token's algorithm and kid"),
    )
    .await;
    let hits = idp.hits();

    idp.set(200, &jwks(&[(&keys.rsa_other.public, "a", "RS256")]));
    wait_until(
        Duration::from_secs(10),
        "the background refresh",
        || async { get(&gw, "/users/me", Some(&tokens[3])).await.status() == 200 },
    )
    .await;
    assert!(idp.hits() > hits);
    assert_eq!(get(&gw, "/users/me", Some(&tokens[2])).await.status(), 401);
    // The file's keys are unaffected.
    assert_eq!(get(&gw, "/users/me", Some(&tokens[0])).await.status(), 200);
}

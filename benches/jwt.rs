//! What one token verification costs, per algorithm family.
//!
//! Every request on a route that needs a token goes through
//! `api_gateway::jwt::Verifier::verify`, on the hot path, so this measures
//! that call alone: a valid HS256, RS256 (2048-bit), ES256 and EdDSA token
//! (`sub`, `iat`, `exp` an hour ahead) against one static key, plus an HS256
//! token with a bad signature (the rejected path), all with the verified-
//! token cache off; then RS256 again with it on (the second request of a
//! client that repeats its token). The numbers show how the per-request cost
//! of each algorithm family compares, and what the cache saves.
//!
//! Keys are generated at start with the `openssl` command-line tool.
//!
//! Run with: `cargo bench --bench jwt`

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use api_gateway::jwt::keys::VerifyingKey;
use api_gateway::jwt::{Settings, TokenError, Verifier};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

/// A fresh key pair from `openssl genpkey <args>`: the private key (PKCS#8,
/// as jsonwebtoken wants it) and the public key, both PEM.
fn keypair(dir: &Path, name: &str, args: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "openssl {args:?} failed: {stderr}");
    };
    let (private_s, public_s) = (private.to_str().unwrap(), public.to_str().unwrap());
    run(&[&["genpkey"], args, &["-out", private_s]].concat());
    run(&["pkey", "-in", private_s, "-pubout", "-out", public_s]);
    (
        std::fs::read(&private).unwrap(),
        std::fs::read(&public).unwrap(),
    )
}

/// A token valid for an hour.
fn mint(alg: Algorithm, key: &EncodingKey) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({ "sub": "user-42", "iat": now, "exp": now + 3600 });
    encode(&Header::new(alg), &claims, key).unwrap()
}

fn verifier(key: VerifyingKey, cache_size: usize) -> Verifier {
    Verifier::new(
        Settings {
            keys: vec![key],
            jwks_urls: vec![],
            issuers: vec![],
            audiences: vec![],
            leeway: Duration::from_secs(30),
            require_exp: true,
            cache_size,
            cache_ttl: Duration::from_secs(60),
        },
        None,
    )
}

fn verify(c: &mut Criterion) {
    // Already installed is fine.
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();

    let secret = b"the secret of the HS256 benchmark";
    let hmac = || VerifyingKey::from_secret(secret, vec![Algorithm::HS256], None).unwrap();
    let pem = |alg, args: &[&str]| {
        let (private, public) = keypair(dir.path(), &format!("{alg:?}"), args);
        let encoding = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&private),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&private),
            _ => EncodingKey::from_ed_pem(&private),
        };
        let token = mint(alg, &encoding.unwrap());
        let key = || VerifyingKey::from_pem(&public, vec![alg], None).unwrap();
        (verifier(key(), 0), verifier(key(), 100), token)
    };

    let (rs256, rs256_cached, rs256_token) = pem(
        Algorithm::RS256,
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let (es256, _, es256_token) = pem(
        Algorithm::ES256,
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let (eddsa, _, eddsa_token) = pem(Algorithm::EdDSA, &["-algorithm", "ED25519"]);
    let cases = [
        (
            "HS256",
            verifier(hmac(), 0),
            mint(Algorithm::HS256, &EncodingKey::from_secret(secret)),
            None,
        ),
        ("RS256", rs256, rs256_token.clone(), None),
        ("RS256 cache hit", rs256_cached, rs256_token, None),
        ("ES256", es256, es256_token, None),
        ("EdDSA", eddsa, eddsa_token, None),
        (
            "HS256 bad signature",
            verifier(hmac(), 0),
            mint(
                Algorithm::HS256,
                &EncodingKey::from_secret(b"some other secret"),
            ),
            Some(TokenError::BadSignature),
        ),
    ];

    let mut group = c.benchmark_group("verify");
    for (name, verifier, token, expected_error) in &cases {
        // Measure the path we mean to: accepted, or refused for its signature.
        let outcome = rt.block_on(verifier.verify(token));
        assert_eq!(outcome.err(), *expected_error, "{name}");
        group.bench_function(*name, |b| {
            b.iter(|| rt.block_on(verifier.verify(black_box(token))))
        });
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);

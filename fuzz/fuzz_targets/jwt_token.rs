//! JWT handling (`api_gateway::jwt`): the header read before any signature
//! check (which key, for which `alg` and `kid`), then the claim checks and
//! the verified-token cache, which only a correctly signed token reaches.
//!
//! The input is text. Line 1 sets the verifier up as the `jwt:` section
//! could: words `exp` (require it), `iss`, `aud`, `cache=<seconds>`,
//! `leeway=<seconds>`. Then either one line, a raw token, or two lines, a
//! header and claims as JSON, which this target signs with the HMAC secret
//! the header's `kid` names, so that arbitrary claims pass the signature
//! check and reach the claim checks.
//!
//! Beyond "no panic": a token that verifies meets every configured check,
//! and asking again (from the cache, if on) gives the same answer.

#![no_main]

use std::future::Future;
use std::pin::pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use api_gateway::jwt::keys::VerifyingKey;
use api_gateway::jwt::{Claims, Settings, TokenError, Verifier};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const SECRET: &[u8] = b"fuzz-secret-main";
const OLD_SECRET: &[u8] = b"fuzz-secret-old";
const ISSUER: &str = "https://issuer.example";
const AUDIENCES: [&str; 2] = ["api", "web"];

const EC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEOOsh0adoZjyzH60TvbJqycw1Oxg9
EQu52GMlNyO60Q+GdfpYWp4VpNNFNTwfLNe9P5chT5dTeNCSfM6n3UuOew==
-----END PUBLIC KEY-----
";
const RSA_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAlyKnvjNZopipO/Snh5f3
81hjiDzUgN9hi+Tg5GHqMG94fI5i3qEAmO3A2PsuGOzHGYFA9nrDqJ8aHkIl8Cni
9U1ZkZj6o1xpn35IrHshThY9miabIToFeYObTyhXxjwO6T9MTtwHktUGwIiOTOBf
QfWNZ2jim4TRhfUSWzDs3oxYx0anITuUSOOYsLGGWk9RoPcZq3pR3NYBTc8DG13N
+J2o1IyXrR3xcKAY992iaHClmfY9Fcd6ZpMBwp9xuyZh1mD71K+Hls+e/42V/4Mu
iGEpAGog4OOmpzc3WU+mULZCpXoevqwDo3iN818NTuTw9ZLQ/L10dLmsIUefupwu
XQIDAQAB
-----END PUBLIC KEY-----
";
const ED_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAUcc15kw4A1PdRk0fRWt3K+UjSRJqs2IIpxio0nlduQo=
-----END PUBLIC KEY-----
";

/// One key of each family, the HMAC ones with and without a `kid`, as a
/// configuration with a rotation in progress would have them. Parsed once:
/// PEM parsing is not what is fuzzed here.
fn keys() -> Vec<VerifyingKey> {
    static PEM_KEYS: OnceLock<Vec<VerifyingKey>> = OnceLock::new();
    let pem = PEM_KEYS.get_or_init(|| {
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        vec![
            VerifyingKey::from_pem(
                EC_PEM.as_bytes(),
                vec![Algorithm::ES256],
                Some("ec1".into()),
            )
            .unwrap(),
            VerifyingKey::from_pem(
                RSA_PEM.as_bytes(),
                vec![Algorithm::RS256, Algorithm::PS256],
                None,
            )
            .unwrap(),
            VerifyingKey::from_pem(ED_PEM.as_bytes(), vec![Algorithm::EdDSA], Some("ed".into()))
                .unwrap(),
        ]
    });
    let hs = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
    let mut keys = vec![
        VerifyingKey::from_secret(SECRET, hs.to_vec(), None).unwrap(),
        VerifyingKey::from_secret(OLD_SECRET, vec![Algorithm::HS256], Some("old".into())).unwrap(),
    ];
    keys.extend(pem.iter().map(|k| VerifyingKey {
        kid: k.kid.clone(),
        algorithms: k.algorithms.clone(),
        key: k.key.clone(),
    }));
    keys
}

fn settings(line: &str) -> Settings {
    let mut settings = Settings {
        keys: keys(),
        jwks_urls: Vec::new(),
        issuers: Vec::new(),
        audiences: Vec::new(),
        leeway: Duration::from_secs(30),
        require_exp: false,
        cache_size: 0,
        cache_ttl: Duration::from_secs(1),
    };
    for word in line.split_whitespace() {
        let number = |value: &str| value.parse::<u64>().ok();
        match word.split_once('=') {
            None if word == "exp" => settings.require_exp = true,
            None if word == "iss" => settings.issuers = vec![ISSUER.into()],
            None if word == "aud" => settings.audiences = AUDIENCES.map(String::from).to_vec(),
            // What config validation lets through: a ttl above zero, a
            // leeway of at most 5 minutes.
            Some(("cache", ttl)) => {
                if let Some(ttl) = number(ttl).filter(|&t| t > 0) {
                    settings.cache_size = 16;
                    settings.cache_ttl = Duration::from_secs(ttl);
                }
            }
            Some(("leeway", secs)) => {
                if let Some(secs) = number(secs).filter(|&s| s <= 300) {
                    settings.leeway = Duration::from_secs(secs);
                }
            }
            _ => {}
        }
    }
    settings
}

/// `header.claims.signature`, signed with the HMAC secret of the key the
/// header's `kid` names, by the header's `alg` when it is an HMAC one.
fn sign(header: &str, claims: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(header).ok();
    let field = |name| parsed.as_ref()?.get(name)?.as_str().map(str::to_owned);
    let alg = match field("alg").as_deref() {
        Some("HS384") => Algorithm::HS384,
        Some("HS512") => Algorithm::HS512,
        _ => Algorithm::HS256,
    };
    let secret = if field("kid").as_deref() == Some("old") {
        OLD_SECRET
    } else {
        SECRET
    };
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &EncodingKey::from_secret(secret), alg)
            .expect("HMAC signing");
    format!("{message}.{signature}")
}

/// Verification awaits only a JWKS fetch, and there are no JWKS URLs here.
fn ready<T>(future: impl Future<Output = T>) -> T {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("verification waited with no JWKS URL"),
    }
}

fn number(claims: &Claims, name: &str) -> Option<f64> {
    claims.get(name).and_then(Value::as_f64)
}

/// What every configured check promises of a token that passed.
fn check_verified(settings: &Settings, claims: &Claims) {
    let now = jsonwebtoken::get_current_timestamp() as f64;
    // A second of slack either way: the verifier read the clock earlier.
    let leeway = settings.leeway.as_secs() as f64 + 1.0;
    if settings.require_exp {
        assert!(number(claims, "exp").is_some(), "no exp: {claims:?}");
    }
    if let Some(exp) = number(claims, "exp") {
        assert!(exp >= now - leeway, "expired: {claims:?}");
    }
    if let Some(nbf) = number(claims, "nbf") {
        assert!(nbf <= now + leeway, "not yet valid: {claims:?}");
    }
    if let Some(iat) = number(claims, "iat") {
        assert!(iat <= now + leeway, "issued in the future: {claims:?}");
    }
    if !settings.issuers.is_empty() {
        let iss = claims.get("iss").and_then(Value::as_str);
        assert!(
            iss.is_some_and(|i| settings.issuers.iter().any(|s| s == i)),
            "wrong issuer: {claims:?}"
        );
    }
    if !settings.audiences.is_empty() {
        let wanted = |a: &Value| {
            a.as_str()
                .is_some_and(|a| settings.audiences.iter().any(|s| s == a))
        };
        let ok = match claims.get("aud") {
            Some(Value::Array(list)) => list.iter().any(wanted),
            Some(one) => wanted(one),
            None => false,
        };
        assert!(ok, "wrong audience: {claims:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let setup = lines.next().unwrap_or_default();
    let token = match (lines.next(), lines.next()) {
        (Some(header), Some(claims)) => sign(header, claims),
        (Some(raw), None) => raw.to_owned(),
        _ => return,
    };
    let verifier = Verifier::new(settings(setup), None);
    let wanted = settings(setup);

    let first: Result<_, TokenError> = ready(verifier.verify(&token));
    // To see what a seed gets: FUZZ_VERBOSE=1, then run the target on it.
    if std::env::var_os("FUZZ_VERBOSE").is_some() {
        eprintln!("{token}: {first:?}");
    }
    if let Ok(claims) = &first {
        check_verified(&wanted, claims);
    }
    let second = ready(verifier.verify(&token));
    match (&first, &second) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        // An expiry can fall between the two; anything else is a change
        // of mind.
        (Ok(_), Err(TokenError::Expired)) => {}
        _ => assert_eq!(first.as_ref().err(), second.as_ref().err()),
    }
});

//! JWT verification: which key checks a token, and what makes a token
//! valid. Routes decide whether they need one (the JWT auth plugin); this
//! module only answers "are these claims genuine and current, and if not,
//! why not", from settings of its own that the plugin's config fills in.
//!
//! jsonwebtoken does the signature and the registered-claim checks, with its
//! defaults tightened: `nbf` is checked, the leeway is ours (30 s unless
//! configured, not its 60 s), `iss`/`aud` are required when configured (it
//! would pass a token that simply leaves them out), and `iat` in the future
//! is refused.

pub mod cache;
pub mod jwks;
pub mod keys;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Algorithm, AlgorithmFamily, Validation};
use serde_json::Value;

use cache::TokenCache;
use jwks::{JwksSource, RemoteJwks};
use keys::VerifyingKey;

pub type Claims = serde_json::Map<String, Value>;

/// What a verifier checks tokens with, validated.
#[derive(Debug)]
pub struct Settings {
    /// From `secret`, `public_key_file` and `jwks_file`, read when the
    /// config is.
    pub keys: Vec<VerifyingKey>,
    pub jwks_urls: Vec<JwksSource>,
    /// Accepted `iss` values; empty: not checked.
    pub issuers: Vec<String>,
    /// Accepted `aud` values; empty: not checked.
    pub audiences: Vec<String>,
    pub leeway: Duration,
    pub require_exp: bool,
    /// Verified tokens remembered; 0: none.
    pub cache_size: usize,
    pub cache_ttl: Duration,
}

impl Settings {
    /// Identifies the key material and the claim checks: a reload that
    /// changes none of them may keep the tokens already verified.
    fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        for key in &self.keys {
            key.hash_into(&mut h);
        }
        for source in &self.jwks_urls {
            (&source.url, &source.algorithms).hash(&mut h);
        }
        (
            &self.issuers,
            &self.audiences,
            self.leeway,
            self.require_exp,
        )
            .hash(&mut h);
        h.finish()
    }
}

/// Why a token was refused. The reason goes to the client, so it names the
/// failed check and nothing about keys or the token's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    /// No configured key fits the token's `alg` and `kid`.
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    IssuedInFuture,
    WrongIssuer,
    WrongAudience,
    MissingClaim,
}

impl TokenError {
    /// A short label for the metrics.
    pub fn code(self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::UnknownKey => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::IssuedInFuture => "issued_in_future",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::MissingClaim => "missing_claim",
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed token",
            TokenError::UnknownKey => "no key for this token's algorithm and kid",
            TokenError::BadSignature => "bad signature",
            TokenError::Expired => "token expired",
            TokenError::NotYetValid => "token not yet valid",
            TokenError::IssuedInFuture => "token issued in the future",
            TokenError::WrongIssuer => "wrong issuer",
            TokenError::WrongAudience => "wrong audience",
            TokenError::MissingClaim => "missing a required claim",
        }
    }
}

pub struct Verifier {
    keys: Vec<VerifyingKey>,
    remote: Vec<Arc<RemoteJwks>>,
    /// One per key family: jsonwebtoken insists that every algorithm a
    /// `Validation` allows belongs to the key's family.
    validations: [(AlgorithmFamily, Validation); 4],
    leeway: u64,
    cache: Option<Arc<TokenCache>>,
    /// What the cache was filled under: fingerprint, size and lifetime.
    cache_basis: (u64, usize, Duration),
}

impl Verifier {
    /// A verifier for `settings`, keeping what `previous` (the one a reload
    /// replaces) has that still applies: the JWKS already fetched from an
    /// unchanged URL, and the verified tokens if keys and checks are the
    /// same.
    pub fn new(settings: Settings, previous: Option<&Verifier>) -> Self {
        // Each key is pinned to its own algorithms before decode is called,
        // so here its whole family may pass.
        let validation = |family| (family, claim_checks(family, &settings));
        let cache_basis = (
            settings.fingerprint(),
            settings.cache_size,
            settings.cache_ttl,
        );
        Verifier {
            validations: [
                validation(AlgorithmFamily::Hmac),
                validation(AlgorithmFamily::Rsa),
                validation(AlgorithmFamily::Ec),
                validation(AlgorithmFamily::Ed),
            ],
            remote: settings
                .jwks_urls
                .iter()
                .map(|source| {
                    let kept = previous
                        .iter()
                        .flat_map(|p| &p.remote)
                        .find(|r| r.settings().same_as(source));
                    kept.cloned()
                        .unwrap_or_else(|| Arc::new(RemoteJwks::new(source.clone())))
                })
                .collect(),
            leeway: settings.leeway.as_secs(),
            cache: match previous {
                Some(p) if p.cache_basis == cache_basis => p.cache.clone(),
                _ => TokenCache::new(settings.cache_size, settings.cache_ttl).map(Arc::new),
            },
            cache_basis,
            keys: settings.keys,
        }
    }

    /// The JWKS URLs, for the startup fetch and the background refresher.
    pub fn remote_sources(&self) -> &[Arc<RemoteJwks>] {
        &self.remote
    }

    pub async fn verify(&self, token: &str) -> Result<Arc<Claims>, TokenError> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(claims) = self.cache.as_ref().and_then(|c| c.get(token, now)) {
            return Ok(claims);
        }
        let claims = Arc::new(self.verify_uncached(token).await?);
        if let Some(cache) = &self.cache {
            cache.put(token, claims.clone(), now);
        }
        Ok(claims)
    }

    async fn verify_uncached(&self, token: &str) -> Result<Claims, TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
        let kid = header.kid.as_deref();
        if let Some(result) = self.try_keys(token, header.alg, kid) {
            return result;
        }
        // A kid nobody knows may be a key the provider just rotated in.
        if kid.is_some() && !self.remote.is_empty() {
            for source in &self.remote {
                source.refetch().await;
            }
            if let Some(result) = self.try_keys(token, header.alg, kid) {
                return result;
            }
        }
        Err(TokenError::UnknownKey)
    }

    /// `None` when no key accepts this `alg` and `kid`. Several keys may
    /// (two secrets during a rotation, keys without a kid): a bad signature
    /// moves on to the next, any other verdict is final because the
    /// signature was good.
    fn try_keys(
        &self,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Option<Result<Claims, TokenError>> {
        let mut verdict = None;
        let mut try_key = |key: &VerifyingKey| {
            if !key.accepts(alg, kid) {
                return None;
            }
            match self.check(token, key) {
                Err(TokenError::BadSignature) => {
                    verdict = Some(Err(TokenError::BadSignature));
                    None
                }
                result => Some(result),
            }
        };
        if let Some(result) = self.keys.iter().find_map(&mut try_key) {
            return Some(result);
        }
        for source in &self.remote {
            if let Some(result) = source.keys().iter().find_map(&mut try_key) {
                return Some(result);
            }
        }
        verdict
    }

    fn check(&self, token: &str, key: &VerifyingKey) -> Result<Claims, TokenError> {
        let family = key.key.family();
        let (_, validation) = self
            .validations
            .iter()
            .find(|(f, _)| *f == family)
            .expect("a validation per family");
        let data = decode::<Claims>(token, &key.key, validation).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
            ErrorKind::InvalidAudience => TokenError::WrongAudience,
            ErrorKind::MissingRequiredClaim(_) => TokenError::MissingClaim,
            _ => TokenError::Malformed,
        })?;
        if let Some(iat) = data.claims.get("iat") {
            let iat = iat.as_f64().ok_or(TokenError::Malformed)?;
            let now = jsonwebtoken::get_current_timestamp() + self.leeway;
            if iat > now as f64 {
                return Err(TokenError::IssuedInFuture);
            }
        }
        Ok(data.claims)
    }
}

/// The registered-claim checks, the same for every key family.
fn claim_checks(family: AlgorithmFamily, settings: &Settings) -> Validation {
    let mut validation = Validation::new_for_family(family);
    validation.leeway = settings.leeway.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    let mut required = Vec::new();
    if settings.require_exp {
        required.push("exp");
    }
    if !settings.issuers.is_empty() {
        validation.set_issuer(&settings.issuers);
        required.push("iss");
    }
    if settings.audiences.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(&settings.audiences);
        required.push("aud");
    }
    validation.set_required_spec_claims(&required);
    validation
}

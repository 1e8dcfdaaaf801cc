//! Verification keys, each pinned to the algorithms the configuration allows
//! for it.
//!
//! The token's `alg` header only ever narrows the choice: a key is used for a
//! token when the configuration lists that algorithm for the key *and* the
//! key's own family (HMAC, RSA, EC, Ed) matches it. So an RSA public key can
//! never be turned into an HMAC secret by a token that says `HS256`, and
//! `alg: none` (which jsonwebtoken does not even parse) has no key at all.
//! Keys are parsed here once, at startup or when a JWKS is fetched.

use std::hash::{Hash, Hasher};

use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};

pub struct VerifyingKey {
    /// Matches the token's `kid` when both have one.
    pub kid: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material, not even a secret's length.
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// An HMAC secret (HS256/384/512 only).
    pub fn from_secret(
        secret: &[u8],
        algorithms: Vec<Algorithm>,
        kid: Option<String>,
    ) -> Result<Self, String> {
        if one_family(&algorithms)? != AlgorithmFamily::Hmac {
            return Err("a secret verifies HS256, HS384 or HS512 only".into());
        }
        Ok(VerifyingKey {
            kid,
            algorithms,
            key: DecodingKey::from_secret(secret),
        })
    }

    /// A PEM public key whose type follows the configured algorithms: RSA
    /// for RS*/PS*, EC for ES*, Ed25519 for EdDSA.
    pub fn from_pem(
        pem: &[u8],
        algorithms: Vec<Algorithm>,
        kid: Option<String>,
    ) -> Result<Self, String> {
        let key = match one_family(&algorithms)? {
            AlgorithmFamily::Hmac => {
                return Err("HS* algorithms take a `secret`, not a public key".into())
            }
            AlgorithmFamily::Rsa => {
                let key = DecodingKey::from_rsa_pem(pem)
                    .map_err(|e| format!("not an RSA public key in PEM: {e}"))?;
                check_rsa_size(&key)?;
                key
            }
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem)
                .map_err(|e| format!("not an EC public key in PEM: {e}"))?,
            AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem)
                .map_err(|e| format!("not an Ed25519 public key in PEM: {e}"))?,
        };
        Ok(VerifyingKey {
            kid,
            algorithms,
            key,
        })
    }

    /// Feeds what identifies this key (its kid, algorithms and material) to
    /// `h`; never printed, only compared.
    pub fn hash_into(&self, h: &mut impl Hasher) {
        (&self.kid, &self.algorithms).hash(h);
        match self.key.kind() {
            DecodingKeyKind::SecretOrDer(bytes) => bytes.hash(h),
            DecodingKeyKind::RsaModulusExponent { n, e } => (n, e).hash(h),
        }
    }

    /// Whether this key may verify a token with this header.
    pub fn accepts(&self, alg: Algorithm, kid: Option<&str>) -> bool {
        let kid_matches = match (&self.kid, kid) {
            (Some(mine), Some(theirs)) => mine == theirs,
            _ => true,
        };
        kid_matches && self.algorithms.contains(&alg) && self.key.family() == alg.family()
    }
}

/// All algorithms of one key must share a family: one key is one kind of
/// key material.
fn one_family(algorithms: &[Algorithm]) -> Result<AlgorithmFamily, String> {
    let family = algorithms
        .first()
        .ok_or("list at least one algorithm")?
        .family();
    if algorithms.iter().any(|a| a.family() != family) {
        return Err(
            "all algorithms of one key must be of one family (HS*, RS*/PS*, ES* or EdDSA)".into(),
        );
    }
    Ok(family)
}

/// aws-lc, jsonwebtoken's crypto backend here, verifies RSA signatures
/// only for moduli of 2048 to 8192 bits; with any other key every token
/// would fail as a bad signature, so such a key is refused when it is read.
fn check_rsa_size(key: &DecodingKey) -> Result<(), String> {
    if key.family() != AlgorithmFamily::Rsa {
        return Ok(());
    }
    let modulus = match key.kind() {
        DecodingKeyKind::RsaModulusExponent { n, .. } => Some(n.as_slice()),
        DecodingKeyKind::SecretOrDer(der) => pkcs1_modulus(der),
    };
    let bits = modulus.map_or(0, unsigned_bits);
    if (2048..=8192).contains(&bits) {
        Ok(())
    } else {
        Err(format!(
            "an RSA key of {bits} bits: RS*/PS* keys must have 2048 to 8192"
        ))
    }
}

/// The modulus of a DER `RSAPublicKey ::= SEQUENCE { modulus INTEGER,
/// publicExponent INTEGER }`, which is what jsonwebtoken keeps of a PEM key.
fn pkcs1_modulus(der: &[u8]) -> Option<&[u8]> {
    let (0x30, sequence) = der_item(der)? else {
        return None;
    };
    let (0x02, modulus) = der_item(sequence)? else {
        return None;
    };
    Some(modulus)
}

/// The tag and contents of the first DER item of `input`.
fn der_item(input: &[u8]) -> Option<(u8, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let size = usize::from(first & 0x7f);
        if size == 0 || size > 4 || rest.len() < size {
            return None;
        }
        let (len, rest) = rest.split_at(size);
        (len.iter().fold(0, |n, &b| n << 8 | usize::from(b)), rest)
    };
    Some((tag, rest.get(..len)?))
}

/// The bit length of a big-endian unsigned integer.
fn unsigned_bits(n: &[u8]) -> usize {
    match n.iter().position(|&b| b != 0) {
        Some(i) => (n.len() - i) * 8 - n[i].leading_zeros() as usize,
        None => 0,
    }
}

/// The usable keys of a JWKS document. A key is kept for the configured
/// algorithms that fit its type and, when it names one, its own `alg`;
/// encryption keys and keys that fit none are skipped and described in the
/// second list, for the log.
pub fn parse_jwks(
    text: &str,
    algorithms: &[Algorithm],
) -> Result<(Vec<VerifyingKey>, Vec<String>), String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let name = match &jwk.common.key_id {
            Some(kid) => format!("kid `{kid}`"),
            None => format!("key {i}"),
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            skipped.push(format!("{name}: an encryption key"));
            continue;
        }
        let key = match DecodingKey::from_jwk(jwk) {
            Ok(key) => key,
            Err(e) => {
                skipped.push(format!("{name}: {e}"));
                continue;
            }
        };
        if let Err(e) = check_rsa_size(&key) {
            skipped.push(format!("{name}: {e}"));
            continue;
        }
        let own_alg = jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse::<Algorithm>().ok());
        let usable: Vec<Algorithm> = algorithms
            .iter()
            .copied()
            .filter(|a| a.family() == key.family() && own_alg.is_none_or(|own| own == *a))
            .collect();
        if usable.is_empty() {
            skipped.push(format!("{name}: fits none of the configured algorithms"));
            continue;
        }
        keys.push(VerifyingKey {
            kid: jwk.common.key_id.clone(),
            algorithms: usable,
            key,
        });
    }
    Ok((keys, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_JWK: &str = r#"{"kty":"RSA","kid":"r1","alg":"RS256","use":"sig","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}"#;

    #[test]
    fn a_key_only_accepts_its_pinned_algorithms_and_kid() {
        let key =
            VerifyingKey::from_secret(b"s", vec![Algorithm::HS256], Some("k1".into())).unwrap();
        assert!(key.accepts(Algorithm::HS256, Some("k1")));
        assert!(key.accepts(Algorithm::HS256, None));
        assert!(!key.accepts(Algorithm::HS256, Some("k2")));
        assert!(!key.accepts(Algorithm::HS512, Some("k1")));
        assert!(!key.accepts(Algorithm::RS256, Some("k1")));
    }

    #[test]
    fn key_families_are_checked_at_startup() {
        let err = VerifyingKey::from_secret(b"s", vec![Algorithm::RS256], None).unwrap_err();
        assert!(err.contains("HS256, HS384 or HS512 only"), "{err}");
        let err = VerifyingKey::from_secret(b"s", vec![Algorithm::HS256, Algorithm::RS256], None)
            .unwrap_err();
        assert!(err.contains("one family"), "{err}");
        let err = VerifyingKey::from_pem(b"junk", vec![Algorithm::RS256], None).unwrap_err();
        assert!(err.contains("not an RSA public key"), "{err}");
        let err = VerifyingKey::from_pem(b"junk", vec![Algorithm::HS256], None).unwrap_err();
        assert!(err.contains("take a `secret`"), "{err}");
        let err = VerifyingKey::from_secret(b"s", vec![], None).unwrap_err();
        assert!(err.contains("at least one algorithm"), "{err}");
    }

    /// A 1024-bit RSA public key, which aws-lc would never verify with.
    const RSA_1024_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCym450TMU/1CKvnFQxpyCdXEs2
hAMXE8q2Z4hQgBX6JxxTT14hB5olrjI6md8OOYJkMBusVJXkkeaaoCs/Tgkc1HNw
v/Eaxqa5tbjdvVg66sjePqqTTh9VxluzQgVmvwyy4uKk4f3lNl/hN0ornyVzn/5z
mqw71jm0DjnSSutfKQIDAQAB
-----END PUBLIC KEY-----
";
    const RSA_1024_N: &str = "spuOdEzFP9Qir5xUMacgnVxLNoQDFxPKtmeIUIAV-iccU09eIQeaJa4yOpnfDjmCZDAbrFSV5JHmmqArP04JHNRzcL_xGsamubW43b1YOurI3j6qk04fVcZbs0IFZr8MsuLipOH95TZf4TdKK58lc5_-c5qsO9Y5tA450krrXyk";

    #[test]
    fn rsa_keys_outside_2048_to_8192_bits_are_refused_when_read() {
        let err = VerifyingKey::from_pem(RSA_1024_PEM.as_bytes(), vec![Algorithm::RS256], None)
            .unwrap_err();
        assert!(err.contains("1024 bits"), "{err}");

        let text = format!(
            r#"{{"keys":[{RSA_JWK}, {{"kty":"RSA","kid":"small","n":"{RSA_1024_N}","e":"AQAB"}}]}}"#
        );
        let (keys, skipped) = parse_jwks(&text, &[Algorithm::RS256]).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("r1"));
        assert!(
            skipped[0].contains("small") && skipped[0].contains("1024 bits"),
            "{skipped:?}"
        );
    }

    #[test]
    fn bit_lengths_of_big_endian_integers() {
        assert_eq!(unsigned_bits(&[]), 0);
        assert_eq!(unsigned_bits(&[0, 0]), 0);
        assert_eq!(unsigned_bits(&[0, 0x80, 0]), 16);
        assert_eq!(unsigned_bits(&[0x01, 0xff]), 9);
    }

    #[test]
    fn jwks_keys_keep_only_algorithms_that_fit_them() {
        let text = format!(
            r#"{{"keys":[{RSA_JWK},
               {{"kty":"oct","kid":"h1","k":"c2VjcmV0"}},
               {{"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"}}]}}"#
        );
        let (keys, skipped) = parse_jwks(
            &text,
            &[Algorithm::RS256, Algorithm::RS512, Algorithm::ES256],
        )
        .unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("r1"));
        // The JWK says RS256, so RS512 is not used for it.
        assert_eq!(keys[0].algorithms, [Algorithm::RS256]);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[0].contains("h1"), "{skipped:?}");
        assert!(skipped[1].contains("encryption"), "{skipped:?}");

        assert!(parse_jwks("{}", &[Algorithm::RS256]).is_err());
    }
}

//! Verification of compact JWS against published JWKs.
//!
//! jsonwebtoken verifies the six algorithms it knows; ES512 (which it lacks) is verified
//! with aws-lc-rs, the same backend. The key decides the algorithm: a token whose header
//! names another `alg` is refused before any signature check, and so is a token whose
//! header carries `crit` (RFC 7515 §4.1.11: critical extensions not understood must be
//! refused, and none is understood here).

use aws_lc_rs::signature::{ECDSA_P521_SHA512_FIXED, UnparsedPublicKey};
use base64::Engine;
use serde_json::Value;

use super::{Jwk, SigningAlgorithm};

/// Why a token did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("the token is not a compact JWS")]
    Malformed,
    #[error("the token's header names algorithm {found:?}, the key is {expected}")]
    AlgorithmMismatch { expected: SigningAlgorithm, found: String },
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the JWK is not a usable {0} public key")]
    BadKey(String),
    #[error("the token's header has a crit member; no critical extension is understood here")]
    Critical,
}

/// A public key, decoded once from its JWK, that verifies tokens of its algorithm.
pub struct VerifyingKey {
    kid: String,
    alg: SigningAlgorithm,
    key: Decoder,
}

enum Decoder {
    Jwt(Box<jsonwebtoken::DecodingKey>),
    P521(Vec<u8>),
}

fn b64url_decode(s: &str) -> Result<Vec<u8>, JwsError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).map_err(|_| JwsError::Malformed)
}

impl VerifyingKey {
    /// Decodes a JWK of one of the seven algorithms.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, JwsError> {
        let alg = SigningAlgorithm::from_name(&jwk.alg).ok_or_else(|| JwsError::BadKey(jwk.alg.clone()))?;
        let bad = || JwsError::BadKey(alg.to_string());
        let key = if alg == SigningAlgorithm::ES512 {
            let (x, y) = (jwk.x.as_deref().ok_or_else(bad)?, jwk.y.as_deref().ok_or_else(bad)?);
            let mut point = vec![4u8];
            point.extend(b64url_decode(x).map_err(|_| bad())?);
            point.extend(b64url_decode(y).map_err(|_| bad())?);
            Decoder::P521(point)
        } else {
            let text = serde_json::to_string(jwk).map_err(|_| bad())?;
            let parsed: jsonwebtoken::jwk::Jwk = serde_json::from_str(&text).map_err(|_| bad())?;
            Decoder::Jwt(Box::new(jsonwebtoken::DecodingKey::from_jwk(&parsed).map_err(|_| bad())?))
        };
        Ok(Self { kid: jwk.kid.clone(), alg, key })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> SigningAlgorithm {
        self.alg
    }

    /// Checks the signature and returns `(header, claims)`. Claims (exp, iss, aud, ...) are
    /// the caller's to judge.
    pub fn verify(&self, token: &str) -> Result<(Value, Value), JwsError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(JwsError::Malformed);
        };
        let header: Value = serde_json::from_slice(&b64url_decode(h)?).map_err(|_| JwsError::Malformed)?;
        if header.get("crit").is_some() {
            return Err(JwsError::Critical);
        }
        let found = header.get("alg").and_then(Value::as_str).unwrap_or_default();
        if found != self.alg.as_str() {
            return Err(JwsError::AlgorithmMismatch { expected: self.alg, found: found.to_owned() });
        }
        let message = &token.as_bytes()[..h.len() + 1 + p.len()];
        let signature = b64url_decode(s)?;
        let ok = match &self.key {
            Decoder::P521(point) => {
                UnparsedPublicKey::new(&ECDSA_P521_SHA512_FIXED, point).verify(message, &signature).is_ok()
            }
            Decoder::Jwt(key) => jsonwebtoken::crypto::verify(s, message, key, jwt_alg(self.alg)).unwrap_or(false),
        };
        if !ok {
            return Err(JwsError::BadSignature);
        }
        let claims: Value = serde_json::from_slice(&b64url_decode(p)?).map_err(|_| JwsError::Malformed)?;
        Ok((header, claims))
    }
}

fn jwt_alg(alg: SigningAlgorithm) -> jsonwebtoken::Algorithm {
    match alg {
        SigningAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        SigningAlgorithm::RS384 => jsonwebtoken::Algorithm::RS384,
        SigningAlgorithm::RS512 => jsonwebtoken::Algorithm::RS512,
        SigningAlgorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        SigningAlgorithm::ES384 => jsonwebtoken::Algorithm::ES384,
        // ES512 never reaches jsonwebtoken (see `Decoder::P521`).
        SigningAlgorithm::ES512 | SigningAlgorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyVersion;

    #[test]
    fn every_algorithm_signs_and_verifies_through_its_jwk() {
        for alg in SigningAlgorithm::ALL {
            let version = KeyVersion::generate(alg, 1_700_000_000).unwrap();
            let key = version.parse().unwrap();
            let jwk = key.jwk().clone();
            assert_eq!(
                (jwk.alg.as_str(), jwk.use_.as_str(), jwk.kid.as_str()),
                (alg.as_str(), "sig", version.kid.as_str())
            );
            match alg {
                SigningAlgorithm::RS256 | SigningAlgorithm::RS384 | SigningAlgorithm::RS512 => {
                    assert_eq!(jwk.kty, "RSA");
                    assert_eq!(b64url_decode(jwk.n.as_deref().unwrap()).unwrap().len(), 256, "RSA 2048");
                    assert_eq!(jwk.e.as_deref(), Some("AQAB"));
                }
                SigningAlgorithm::EdDSA => {
                    assert_eq!((jwk.kty.as_str(), jwk.crv.as_deref()), ("OKP", Some("Ed25519")));
                    assert_eq!(b64url_decode(jwk.x.as_deref().unwrap()).unwrap().len(), 32);
                    assert!(jwk.y.is_none() && jwk.n.is_none());
                }
                _ => {
                    let (crv, len) = match alg {
                        SigningAlgorithm::ES256 => ("P-256", 32),
                        SigningAlgorithm::ES384 => ("P-384", 48),
                        _ => ("P-521", 66),
                    };
                    assert_eq!((jwk.kty.as_str(), jwk.crv.as_deref()), ("EC", Some(crv)));
                    assert_eq!(b64url_decode(jwk.x.as_deref().unwrap()).unwrap().len(), len);
                    assert_eq!(b64url_decode(jwk.y.as_deref().unwrap()).unwrap().len(), len);
                }
            }
            let claims = serde_json::json!({"sub": "s", "n": 1});
            let token = key.sign_jwt(&claims).unwrap();
            let verifier = VerifyingKey::from_jwk(&jwk).unwrap();
            let (header, got) = verifier.verify(&token).unwrap();
            assert_eq!(got, claims);
            assert_eq!(header["kid"], version.kid.as_str());
            assert_eq!(header["alg"], alg.as_str());

            // A flipped payload bit must fail.
            let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
            parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"t","n":1}"#);
            assert_eq!(verifier.verify(&parts.join(".")).unwrap_err(), JwsError::BadSignature, "{alg}");

            // A token signed by another key of the same algorithm must fail.
            let other = KeyVersion::generate(alg, 0).unwrap().parse().unwrap().sign_jwt(&claims).unwrap();
            assert_eq!(verifier.verify(&other).unwrap_err(), JwsError::BadSignature, "{alg}");
        }
    }

    #[test]
    fn header_algorithm_must_match_the_key() {
        let key = KeyVersion::generate(SigningAlgorithm::ES256, 0).unwrap().parse().unwrap();
        let verifier = VerifyingKey::from_jwk(key.jwk()).unwrap();
        let none = format!(
            "{}.{}.",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#)
        );
        assert!(matches!(verifier.verify(&none), Err(JwsError::AlgorithmMismatch { .. })));
        assert_eq!(verifier.verify("a.b").unwrap_err(), JwsError::Malformed);
    }

    #[test]
    fn a_crit_header_is_refused_even_when_the_signature_verifies() {
        let key = KeyVersion::generate(SigningAlgorithm::EdDSA, 0).unwrap().parse().unwrap();
        let verifier = VerifyingKey::from_jwk(key.jwk()).unwrap();
        let token = key.sign_jwt(&serde_json::json!({"sub": "x"})).unwrap();
        assert!(verifier.verify(&token).is_ok());
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        for crit in [r#"["exp"]"#, "[]", r#""exp""#, "null"] {
            let header = format!(r#"{{"alg":"EdDSA","kid":"{}","crit":{crit}}}"#, key.jwk().kid);
            let input = format!("{}.{}", b64(header.as_bytes()), b64(br#"{"sub":"x"}"#));
            let signed = format!("{input}.{}", b64(&key.sign_raw(input.as_bytes()).unwrap()));
            assert_eq!(verifier.verify(&signed).unwrap_err(), JwsError::Critical, "{crit}");
        }
    }

    #[test]
    fn stored_form_round_trips_and_hides_the_private_key() {
        let v = KeyVersion::generate(SigningAlgorithm::EdDSA, 5).unwrap();
        let json = serde_json::to_string(&v).unwrap();
        let back: KeyVersion = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
        assert!(!format!("{v:?}").contains(&base64::engine::general_purpose::STANDARD.encode(&v.pkcs8)));
    }
}

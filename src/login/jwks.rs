//! An external issuer's published keys: which JWKs may verify a login JWT, and the
//! signature check against them. Pure: the shell (`external`) fetches, this decides.

use serde_json::Value;

use crate::keys::{Jwk, JwsError, SigningAlgorithm, VerifyingKey};

/// Keys tried for a token without `kid`.
pub const MAX_KEYS_WITHOUT_KID: usize = 10;

/// One external public key with the algorithms it may verify.
pub struct ExternalKey {
    pub jwk: Jwk,
    /// Verifiers by algorithm, made once when the JWKS is fetched.
    verifiers: Vec<VerifyingKey>,
}

impl ExternalKey {
    /// The key of a JWKS entry, if it is a signature-verification key this server can use.
    ///
    /// A key that says it is for something else is ignored rather than guessed at: `use`
    /// other than `"sig"`, `key_ops` without `"verify"`, or an `alg` that is not one of the
    /// signing algorithms (`RSA-OAEP`, `ECDH-ES`, `HS256`, an unknown name). Only a key that
    /// declares no `alg` gets the algorithms its type allows (RSA keys RS256/384/512), as
    /// RFC 7517 makes `alg` optional; a declared `alg` must fit the key's type and curve. A
    /// member of the wrong JSON type counts as a refusal.
    pub fn new(raw: &Value) -> Option<Self> {
        let kty = raw.get("kty")?.as_str()?;
        if raw.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
            return None;
        }
        if let Some(ops) = raw.get("key_ops") {
            let ops = ops.as_array()?;
            if !ops.iter().any(|o| o.as_str() == Some("verify")) {
                return None;
            }
        }
        let declared = match raw.get("alg") {
            None => None,
            Some(alg) => Some(SigningAlgorithm::from_name(alg.as_str()?)?),
        };
        let by_type: &[SigningAlgorithm] = match (kty, raw.get("crv").and_then(Value::as_str)) {
            ("RSA", _) => &[SigningAlgorithm::RS256, SigningAlgorithm::RS384, SigningAlgorithm::RS512],
            ("EC", Some("P-256")) => &[SigningAlgorithm::ES256],
            ("EC", Some("P-384")) => &[SigningAlgorithm::ES384],
            ("EC", Some("P-521")) => &[SigningAlgorithm::ES512],
            ("OKP", Some("Ed25519")) => &[SigningAlgorithm::EdDSA],
            _ => return None,
        };
        // A declared alg must fit the key (ES384 on a P-256 key is no key at all).
        let candidates: Vec<SigningAlgorithm> = match declared {
            Some(a) if by_type.contains(&a) => vec![a],
            Some(_) => return None,
            None => by_type.to_vec(),
        };
        let text = |k: &str| raw.get(k).and_then(Value::as_str).map(str::to_owned);
        let base = Jwk {
            kty: kty.to_owned(),
            kid: text("kid").unwrap_or_default(),
            alg: String::new(),
            use_: "sig".into(),
            n: text("n"),
            e: text("e"),
            crv: text("crv"),
            x: text("x"),
            y: text("y"),
        };
        let verifiers: Vec<VerifyingKey> = candidates
            .into_iter()
            .filter_map(|alg| VerifyingKey::from_jwk(&Jwk { alg: alg.as_str().into(), ..base.clone() }).ok())
            .collect();
        (!verifiers.is_empty()).then_some(Self { jwk: base, verifiers })
    }

    /// The verifier of this key for `alg`, if the key can verify it.
    pub fn verifier(&self, alg: SigningAlgorithm) -> Option<&VerifyingKey> {
        self.verifiers.iter().find(|v| v.algorithm() == alg)
    }
}

/// What an issuer published, as last fetched.
pub struct IssuerKeys {
    /// The discovery document's `issuer`.
    pub issuer: String,
    pub keys: Vec<ExternalKey>,
    pub fetched_at: i64,
}

impl IssuerKeys {
    /// The usable keys of a JWKS document (`{"keys": [...]}`); `None` without a `keys` array.
    pub fn from_jwks(issuer: String, jwks: &Value, fetched_at: i64) -> Option<Self> {
        let raw = jwks.get("keys")?.as_array()?;
        Some(Self { issuer, keys: raw.iter().filter_map(ExternalKey::new).collect(), fetched_at })
    }

    pub fn by_kid(&self, kid: &str) -> Option<&ExternalKey> {
        self.keys.iter().find(|k| k.jwk.kid == kid)
    }
}

/// Verifies a token's signature against an issuer's keys: by `kid`, or, without one, against
/// at most [`MAX_KEYS_WITHOUT_KID`] keys (as Infisical does).
pub fn verify_signature(
    keys: &IssuerKeys,
    alg: SigningAlgorithm,
    kid: Option<&str>,
    token: &str,
) -> Result<Value, SignatureError> {
    match kid {
        Some(kid) => {
            let key = keys.by_kid(kid).ok_or(SignatureError::UnknownKid)?;
            let v = key.verifier(alg).ok_or(SignatureError::AlgorithmMismatch)?;
            v.verify(token).map(|(_, claims)| claims).map_err(SignatureError::from)
        }
        None => {
            let mut tried = 0;
            for key in &keys.keys {
                let Some(v) = key.verifier(alg) else { continue };
                if tried == MAX_KEYS_WITHOUT_KID {
                    break;
                }
                tried += 1;
                if let Ok((_, claims)) = v.verify(token) {
                    return Ok(claims);
                }
            }
            Err(SignatureError::BadSignature)
        }
    }
}

/// Why a signature check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    UnknownKid,
    AlgorithmMismatch,
    BadSignature,
    Malformed,
}

impl From<JwsError> for SignatureError {
    fn from(e: JwsError) -> Self {
        match e {
            JwsError::Malformed | JwsError::Critical => Self::Malformed,
            JwsError::AlgorithmMismatch { .. } | JwsError::BadKey(_) => Self::AlgorithmMismatch,
            JwsError::BadSignature => Self::BadSignature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyVersion;
    use serde_json::json;

    fn public_jwk(alg: SigningAlgorithm) -> (Value, crate::keys::SigningKey) {
        let key = KeyVersion::generate(alg, 0).unwrap().parse().unwrap();
        (serde_json::to_value(key.jwk()).unwrap(), key)
    }

    fn with(jwk: &Value, extra: Value) -> Value {
        let mut j = jwk.clone();
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                j.as_object_mut().unwrap().remove(k);
            } else {
                j[k] = v.clone();
            }
        }
        j
    }

    #[test]
    fn keys_not_for_verifying_signatures_are_ignored() {
        let (rsa, _) = public_jwk(SigningAlgorithm::RS256);
        let (ec, _) = public_jwk(SigningAlgorithm::ES256);
        assert!(ExternalKey::new(&rsa).is_some());
        assert!(ExternalKey::new(&ec).is_some());
        let refused = [
            with(&rsa, json!({"use": "enc"})),
            with(&rsa, json!({"use": ["sig"]})),
            with(&rsa, json!({"key_ops": ["encrypt", "wrapKey"]})),
            with(&rsa, json!({"key_ops": []})),
            with(&rsa, json!({"key_ops": "verify"})),
            with(&rsa, json!({"alg": "RSA-OAEP", "use": null})),
            with(&rsa, json!({"alg": "RSA-OAEP-256", "use": null})),
            with(&rsa, json!({"alg": "PS256"})),
            with(&rsa, json!({"alg": "rs256"})),
            with(&rsa, json!({"alg": 256})),
            with(&rsa, json!({"alg": "HS256"})),
            with(&ec, json!({"alg": "ECDH-ES", "use": null})),
            with(&ec, json!({"key_ops": ["deriveKey"], "use": null})),
            with(&ec, json!({"alg": "ES384"})),
            with(&rsa, json!({"kty": "oct"})),
        ];
        for jwk in &refused {
            assert!(ExternalKey::new(jwk).is_none(), "{jwk}");
        }
        // Absent use/alg and key_ops naming verify are fine; an RSA key without alg may verify RS*.
        let bare = with(&rsa, json!({"use": null, "alg": null, "key_ops": ["verify"]}));
        let key = ExternalKey::new(&bare).unwrap();
        for alg in [SigningAlgorithm::RS256, SigningAlgorithm::RS384, SigningAlgorithm::RS512] {
            assert!(key.verifier(alg).is_some(), "{alg}");
        }
        assert!(key.verifier(SigningAlgorithm::ES256).is_none());
        let declared = ExternalKey::new(&with(&rsa, json!({"alg": "RS512"}))).unwrap();
        assert!(declared.verifier(SigningAlgorithm::RS256).is_none(), "a declared alg is the only one");
    }

    #[test]
    fn a_token_signed_by_an_ignored_key_is_refused_even_with_its_kid() {
        let (jwk, signer) = public_jwk(SigningAlgorithm::RS256);
        let kid = signer.jwk().kid.clone();
        let token = signer.sign_jwt(&json!({"sub": "s"})).unwrap();
        let good = IssuerKeys::from_jwks("i".into(), &json!({"keys": [jwk.clone()]}), 0).unwrap();
        assert!(verify_signature(&good, SigningAlgorithm::RS256, Some(&kid), &token).is_ok());
        for bad in [json!({"use": "enc"}), json!({"key_ops": ["encrypt"]}), json!({"alg": "RSA-OAEP", "use": null})] {
            let keys = IssuerKeys::from_jwks("i".into(), &json!({"keys": [with(&jwk, bad.clone())]}), 0).unwrap();
            assert_eq!(
                verify_signature(&keys, SigningAlgorithm::RS256, Some(&kid), &token).err(),
                Some(SignatureError::UnknownKid),
                "{bad}"
            );
            assert_eq!(
                verify_signature(&keys, SigningAlgorithm::RS256, None, &token).err(),
                Some(SignatureError::BadSignature),
                "{bad}"
            );
        }
        assert!(IssuerKeys::from_jwks("i".into(), &json!({"keys": {}}), 0).is_none());
    }
}

//! An external issuer's published keys: which JWKs may verify a login JWT, and the
//! signature check against them. Pure: the shell (`external`) fetches, this decides.

use aws_lc_rs::signature::{self as lc, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine;
use serde_json::Value;

use crate::keys::{Jwk, JwsError, SigningAlgorithm, VerifyingKey};

/// Keys tried for a token without `kid`.
pub const MAX_KEYS_WITHOUT_KID: usize = 10;

/// One external public key with the algorithms it may verify.
pub struct ExternalKey {
    pub jwk: Jwk,
    /// Verifiers by algorithm, made once when the JWKS is fetched.
    verifiers: Vec<VerifyingKey>,
    /// RSA keys parsed once, by algorithm. A [`VerifyingKey`] builds the RSA key from its
    /// modulus at every verification (and re-reads the JWT header): that, not the
    /// signature math, was most of an RS256 login's verification cost.
    rsa: Vec<(SigningAlgorithm, ParsedPublicKey)>,
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
        let rsa = verifiers.iter().filter_map(|v| Some((v.algorithm(), parsed_rsa(&base, v.algorithm())?))).collect();
        (!verifiers.is_empty()).then_some(Self { jwk: base, verifiers, rsa })
    }

    /// Whether the public key itself parses (an EC point on its curve, an Ed25519 point, an
    /// RSA key of 2048 to 8192 bits): what a registered client key must pass before it is
    /// served, since the verifiers decode EC and OKP keys only when they verify.
    pub fn parses(&self) -> bool {
        let decode = |v: &Option<String>| v.as_deref().and_then(|t| b64(t).ok());
        match (self.jwk.kty.as_str(), self.jwk.crv.as_deref()) {
            ("RSA", _) => !self.rsa.is_empty(),
            ("EC", Some(crv)) => {
                let alg: &'static dyn lc::VerificationAlgorithm = match crv {
                    "P-256" => &lc::ECDSA_P256_SHA256_FIXED,
                    "P-384" => &lc::ECDSA_P384_SHA384_FIXED,
                    _ => &lc::ECDSA_P521_SHA512_FIXED,
                };
                let (Some(x), Some(y)) = (decode(&self.jwk.x), decode(&self.jwk.y)) else { return false };
                let point: Vec<u8> = [&[4u8][..], &x, &y].concat();
                ParsedPublicKey::new(alg, point).is_ok()
            }
            ("OKP", _) => decode(&self.jwk.x).is_some_and(|x| ParsedPublicKey::new(&lc::ED25519, x).is_ok()),
            _ => false,
        }
    }

    /// The verifier of this key for `alg`, if the key can verify it.
    pub fn verifier(&self, alg: SigningAlgorithm) -> Option<&VerifyingKey> {
        self.verifiers.iter().find(|v| v.algorithm() == alg)
    }

    /// Verifies `token`, whose header [`check_header`](super::checks::check_header) read as
    /// `alg`, and returns its claims.
    pub fn verify(&self, alg: SigningAlgorithm, token: &str) -> Result<Value, SignatureError> {
        match self.rsa.iter().find(|(a, _)| *a == alg) {
            Some((_, parsed)) => verify_parsed(parsed, token),
            None => {
                let v = self.verifier(alg).ok_or(SignatureError::AlgorithmMismatch)?;
                v.verify(token).map(|(_, claims)| claims).map_err(SignatureError::from)
            }
        }
    }
}

/// The RSA key of a JWK parsed for `alg` (RS256/384/512; keys of 2048 to 8192 bits, as
/// [`VerifyingKey`] accepts), or `None` for other algorithms.
fn parsed_rsa(jwk: &Jwk, alg: SigningAlgorithm) -> Option<ParsedPublicKey> {
    let params = match alg {
        SigningAlgorithm::RS256 => &lc::RSA_PKCS1_2048_8192_SHA256,
        SigningAlgorithm::RS384 => &lc::RSA_PKCS1_2048_8192_SHA384,
        SigningAlgorithm::RS512 => &lc::RSA_PKCS1_2048_8192_SHA512,
        _ => return None,
    };
    let decode = |v: &Option<String>| b64(v.as_deref()?).ok();
    let (n, e) = (decode(&jwk.n)?, decode(&jwk.e)?);
    RsaPublicKeyComponents { n: n.as_slice(), e: e.as_slice() }.to_parsed_public_key(params).ok()
}

fn b64(text: &str) -> Result<Vec<u8>, SignatureError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).map_err(|_| SignatureError::Malformed)
}

/// The signature of a compact JWS over its first two parts, then its payload as JSON. The
/// header was read (shape, `crit`, `alg`) by `check_header` before.
fn verify_parsed(key: &ParsedPublicKey, token: &str) -> Result<Value, SignatureError> {
    let (message, signature) = token.rsplit_once('.').ok_or(SignatureError::Malformed)?;
    let (_, payload) = message.split_once('.').ok_or(SignatureError::Malformed)?;
    key.verify_sig(message.as_bytes(), &b64(signature)?).map_err(|_| SignatureError::BadSignature)?;
    serde_json::from_slice(&b64(payload)?).map_err(|_| SignatureError::Malformed)
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
/// at most [`MAX_KEYS_WITHOUT_KID`] keys (as Infisical does). The token's header must have
/// passed `check_header`, which read `alg` and `kid` from it.
pub fn verify_signature(
    keys: &IssuerKeys,
    alg: SigningAlgorithm,
    kid: Option<&str>,
    token: &str,
) -> Result<Value, SignatureError> {
    match kid {
        Some(kid) => {
            let key = keys.by_kid(kid).ok_or(SignatureError::UnknownKid)?;
            key.verify(alg, token)
        }
        None => keys
            .keys
            .iter()
            .filter(|k| k.verifier(alg).is_some())
            .take(MAX_KEYS_WITHOUT_KID)
            .find_map(|key| key.verify(alg, token).ok())
            .ok_or(SignatureError::BadSignature),
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

    #[test]
    fn rsa_keys_parsed_once_decide_as_the_verifier_does() {
        for alg in [SigningAlgorithm::RS256, SigningAlgorithm::RS384, SigningAlgorithm::RS512] {
            let (jwk, signer) = public_jwk(alg);
            let kid = signer.jwk().kid.clone();
            let keys = IssuerKeys::from_jwks("i".into(), &json!({"keys": [jwk.clone()]}), 0).unwrap();
            assert_eq!(keys.keys[0].rsa.len(), 1, "{alg}: parsed once");
            let token = signer.sign_jwt(&json!({"sub": "s", "n": 1})).unwrap();
            let claims = verify_signature(&keys, alg, Some(&kid), &token).unwrap();
            assert_eq!(claims, keys.keys[0].verifier(alg).unwrap().verify(&token).unwrap().1);
            assert_eq!(verify_signature(&keys, alg, None, &token).unwrap(), claims);
            // A flipped signature bit, another payload, a broken part: refused like the verifier.
            let (message, sig) = token.rsplit_once('.').unwrap();
            let mut raw = b64(sig).unwrap();
            raw[10] ^= 1;
            let flipped = format!("{message}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw));
            let (header, _) = message.split_once('.').unwrap();
            let other = format!("{header}.{}.{sig}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("{}"));
            for bad in [flipped, other, format!("{message}.!!"), format!("{message}.")] {
                assert!(verify_signature(&keys, alg, Some(&kid), &bad).is_err(), "{alg}: {bad}");
                assert!(keys.keys[0].verifier(alg).unwrap().verify(&bad).is_err(), "{alg}: {bad}");
            }
        }
    }
}

//! `private_key_jwt` client assertions (RFC 7523 §2.2 and §3, OpenID Connect Core §9): the
//! pure checks of a JWT a client signed with one of its registered keys. Keys, audiences,
//! the lifetime cap and the time are parameters; the single use of its `jti` is the store's
//! ([`crate::sessions::SessionStore::spend_assertion`]).

use base64::Engine;
use serde_json::Value;

use super::OAuthError;
use crate::login::checks::{JwtHeader, LEEWAY};
use crate::login::jwks::{IssuerKeys, SignatureError};

/// The one `client_assertion_type` (RFC 7523 §2.2).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Longest lifetime of an assertion, in seconds, by default
/// (`--max-client-assertion-lifetime`): what common client libraries sign (authlib's
/// `PrivateKeyJWT` signs assertions valid for exactly one hour). Its `jti` record is kept
/// that long at most.
pub const DEFAULT_MAX_LIFETIME: i64 = 3600;

/// Longest `jti` accepted, in bytes.
pub const MAX_JTI_BYTES: usize = 256;

/// What a verified assertion leaves to the store: its `jti`, spent until `spent_until`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub jti: String,
    pub spent_until: i64,
}

fn refused(why: impl Into<String>) -> OAuthError {
    OAuthError::InvalidClient(format!("client_assertion refused: {}", why.into()))
}

/// The claims of a compact JWS, unverified: only to choose how to verify it (own keys or a
/// federated identity) and to read the `client_id` a request leaves out.
pub fn unverified_claims(jwt: &str) -> Result<Value, OAuthError> {
    let payload = jwt.split('.').nth(1).ok_or_else(|| refused("not a compact JWS"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| refused("its payload is not base64url"))?;
    let claims: Value = serde_json::from_slice(&bytes).map_err(|_| refused("its payload is not JSON"))?;
    if !claims.is_object() {
        return Err(refused("its payload is not a JSON object"));
    }
    Ok(claims)
}

/// The signature with the client's key chosen by `kid`, or, without a `kid`, the one key of
/// the header's algorithm (several would make the choice a guess).
fn check_signature(keys: &IssuerKeys, header: &JwtHeader, jwt: &str) -> Result<Value, OAuthError> {
    let key = match &header.kid {
        Some(kid) => keys.by_kid(kid).ok_or_else(|| refused("no registered key of the client has its kid"))?,
        None => {
            let mut of_alg = keys.keys.iter().filter(|k| k.verifier(header.alg).is_some());
            match (of_alg.next(), of_alg.next()) {
                (Some(key), None) => key,
                (None, _) => return Err(refused(format!("no registered key of the client is {}", header.alg))),
                (Some(_), Some(_)) => {
                    return Err(refused(format!("several registered keys are {}: name one by kid", header.alg)));
                }
            }
        }
    };
    key.verify(header.alg, jwt).map_err(|e| match e {
        SignatureError::AlgorithmMismatch => refused(format!("its key does not sign {}", header.alg)),
        SignatureError::BadSignature => refused("the signature does not verify"),
        SignatureError::UnknownKid | SignatureError::Malformed => refused("not a well-formed JWS"),
    })
}

fn numeric(claims: &Value, name: &str) -> Result<Option<i64>, OAuthError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            v.as_f64().map(|f| Some(f as i64)).ok_or_else(|| refused(format!("{name} is not a number of seconds")))
        }
    }
}

/// Verifies an assertion `client_id` signed (its header read by
/// [`crate::login::checks::check_header`]: asymmetric algorithms only) against its keys:
/// `iss` = `sub` = `client_id`; `aud` names one of `audiences` (the issuer, the token
/// endpoint, the endpoint called); `exp` required and not past, `nbf`/`iat` not in the
/// future (each with [`LEEWAY`]); a lifetime (`exp - iat`, or `exp - now` without `iat`)
/// of at most `max_lifetime`; a `jti`.
pub fn check(
    keys: &IssuerKeys,
    header: &JwtHeader,
    jwt: &str,
    client_id: &str,
    audiences: &[&str],
    now: i64,
    max_lifetime: i64,
) -> Result<Checked, OAuthError> {
    let claims = check_signature(keys, header, jwt)?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    if text("iss") != Some(client_id) || text("sub") != Some(client_id) {
        return Err(refused("iss and sub must both be the client_id"));
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => audiences.contains(&a.as_str()),
        Some(Value::Array(all)) => all.iter().filter_map(Value::as_str).any(|a| audiences.contains(&a)),
        _ => false,
    };
    if !aud_ok {
        return Err(refused("aud must be the issuer or the endpoint's URL"));
    }
    let exp = numeric(&claims, "exp")?.ok_or_else(|| refused("exp is required"))?;
    if now >= exp.saturating_add(LEEWAY) {
        return Err(refused("it has expired (exp)"));
    }
    if numeric(&claims, "nbf")?.is_some_and(|nbf| now.saturating_add(LEEWAY) < nbf) {
        return Err(refused("it is not valid yet (nbf)"));
    }
    let iat = numeric(&claims, "iat")?;
    if iat.is_some_and(|iat| now.saturating_add(LEEWAY) < iat) {
        return Err(refused("it was issued in the future (iat)"));
    }
    let lifetime = match iat {
        Some(iat) => exp.saturating_sub(iat),
        None => exp.saturating_sub(now).saturating_sub(LEEWAY),
    };
    if lifetime > max_lifetime {
        return Err(refused(format!("its lifetime is above {max_lifetime} seconds")));
    }
    let jti = match claims.get("jti") {
        Some(Value::String(j)) if !j.is_empty() && j.len() <= MAX_JTI_BYTES => j.clone(),
        Some(Value::String(j)) if !j.is_empty() => {
            return Err(refused(format!("jti is longer than {MAX_JTI_BYTES} bytes")));
        }
        _ => return Err(refused("jti is required")),
    };
    Ok(Checked { jti, spent_until: exp.saturating_add(LEEWAY) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyVersion, SigningAlgorithm, SigningKey};
    use crate::login::checks::check_header;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000;
    const AUD: &str = "https://op/v1/ns/identity/oidc/provider/p/token";

    fn key(alg: SigningAlgorithm) -> SigningKey {
        KeyVersion::generate(alg, 0).unwrap().parse().unwrap()
    }

    fn keys_of(keys: &[&SigningKey]) -> IssuerKeys {
        let set = json!({"keys": keys.iter().map(|k| serde_json::to_value(k.jwk()).unwrap()).collect::<Vec<_>>()});
        IssuerKeys::from_jwks("c".into(), &set, 0).unwrap()
    }

    fn claims(changes: Value) -> Value {
        let mut c = json!({"iss": "c", "sub": "c", "aud": AUD, "iat": NOW, "exp": NOW + 300, "jti": "j1"});
        for (k, v) in changes.as_object().unwrap() {
            match v {
                Value::Null => drop(c.as_object_mut().unwrap().remove(k)),
                v => c[k] = v.clone(),
            }
        }
        c
    }

    fn checked(keys: &IssuerKeys, jwt: &str) -> Result<Checked, OAuthError> {
        let header = check_header(jwt).map_err(|e| OAuthError::InvalidClient(e.to_string()))?;
        check(keys, &header, jwt, "c", &["https://op/v1/ns/identity/oidc/provider/p", AUD], NOW, DEFAULT_MAX_LIFETIME)
    }

    #[test]
    fn a_good_assertion_gives_its_jti_spent_until_exp_and_skew() {
        for alg in [SigningAlgorithm::RS256, SigningAlgorithm::ES256, SigningAlgorithm::EdDSA] {
            let k = key(alg);
            let got = checked(&keys_of(&[&k]), &k.sign_jwt(&claims(json!({}))).unwrap());
            assert_eq!(got, Ok(Checked { jti: "j1".into(), spent_until: NOW + 300 + LEEWAY }), "{alg}");
        }
        // authlib's default: exactly one hour from iat.
        let k = key(SigningAlgorithm::ES256);
        assert!(checked(&keys_of(&[&k]), &k.sign_jwt(&claims(json!({"exp": NOW + 3600}))).unwrap()).is_ok());
    }

    #[test]
    fn each_claim_rule_refuses_with_invalid_client() {
        let k = key(SigningAlgorithm::ES256);
        let keys = keys_of(&[&k]);
        for (name, changes) in [
            ("iss", json!({"iss": "other"})),
            ("sub", json!({"sub": "other"})),
            ("aud", json!({"aud": "https://elsewhere"})),
            ("aud list", json!({"aud": ["a", "b"]})),
            ("no exp", json!({"exp": null})),
            ("expired", json!({"exp": NOW - LEEWAY})),
            ("nbf", json!({"nbf": NOW + LEEWAY + 1})),
            ("iat", json!({"iat": NOW + LEEWAY + 1, "exp": NOW + 600})),
            ("lifetime", json!({"exp": NOW + 3601})),
            ("lifetime without iat", json!({"iat": null, "exp": NOW + 3600 + LEEWAY + 1})),
            ("no jti", json!({"jti": null})),
            ("jti not a string", json!({"jti": 7})),
            ("long jti", json!({"jti": "j".repeat(MAX_JTI_BYTES + 1)})),
            ("exp not a number", json!({"exp": "soon"})),
        ] {
            let r = checked(&keys, &k.sign_jwt(&claims(changes)).unwrap());
            assert!(matches!(r, Err(OAuthError::InvalidClient(_))), "{name}: {r:?}");
        }
        // Within the skew, the same instants are accepted.
        let edge = json!({"iat": NOW + LEEWAY, "nbf": NOW + LEEWAY, "exp": NOW + LEEWAY + 60});
        assert!(checked(&keys, &k.sign_jwt(&claims(edge)).unwrap()).is_ok());
    }

    #[test]
    fn the_key_is_chosen_by_kid_or_is_the_only_one_of_its_algorithm() {
        let (a, b, r) = (key(SigningAlgorithm::ES256), key(SigningAlgorithm::ES256), key(SigningAlgorithm::RS256));
        let other = key(SigningAlgorithm::ES256);
        let jwt = a.sign_jwt(&claims(json!({}))).unwrap();
        assert!(checked(&keys_of(&[&a, &b, &r]), &jwt).is_ok(), "by kid among three");
        assert!(checked(&keys_of(&[&b, &r]), &jwt).is_err(), "an unregistered kid");
        // Without kid: the one ES256 key, never a guess among two.
        let no_kid = |k: &SigningKey| {
            let h = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256"}"#);
            let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims(json!({})).to_string());
            let sig = k.sign_raw(format!("{h}.{p}").as_bytes()).unwrap();
            format!("{h}.{p}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig))
        };
        assert!(checked(&keys_of(&[&a, &r]), &no_kid(&a)).is_ok());
        assert!(checked(&keys_of(&[&a, &b]), &no_kid(&a)).is_err(), "two ES256 keys");
        assert!(checked(&keys_of(&[&r]), &no_kid(&a)).is_err(), "no ES256 key");
        assert!(checked(&keys_of(&[&other]), &no_kid(&a)).is_err(), "another key's signature");
    }
}

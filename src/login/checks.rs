//! The checks of a login, in order, each with its own error. Pure: keys, spec, peer and the
//! time are parameters.

use std::net::IpAddr;

use base64::Engine;
use serde_json::Value;

use super::cidr::{self, Cidr};
use super::jwks::{IssuerKeys, SignatureError, verify_signature};
use super::matching::{MatchLimits, Oversized};
use super::{clip, matching};
use crate::api::IdentityOidcAuthSpec;
use crate::keys::SigningAlgorithm;

/// Largest external JWT accepted.
pub const MAX_JWT_BYTES: usize = 16 * 1024;
/// Clock skew allowed on `exp`, `nbf` and `iat` (seconds).
pub const LEEWAY: i64 = 30;

/// Why a login was refused. The text names the failed check and never echoes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("no identity with this identityId")]
    IdentityNotFound,
    #[error("the JWT is not a well-formed compact JWS")]
    Malformed,
    #[error("the JWT is larger than {MAX_JWT_BYTES} bytes")]
    TooLarge,
    #[error("the JWT algorithm {0:?} is not allowed (only RS256/384/512, ES256/384/512 and EdDSA are)")]
    AlgorithmNotAllowed(String),
    #[error("the identity's external issuer cannot be read now (its owner finds why in the IdentityOidcAuth's status)")]
    IssuerUnavailable,
    #[error("the JWT header has crit: no critical JOSE extension is understood here (RFC 7515 §4.1.11)")]
    CriticalHeader,
    /// The API server's TokenReview no longer authenticates the token (`spec.tokenReview`).
    #[error("the API server's TokenReview does not authenticate the token (its ServiceAccount or Pod may be gone)")]
    TokenReviewRefused,
    /// RFC 9068 §4: an access token is for resource servers, never an identity assertion.
    #[error("the JWT is an access token (typ at+jwt); a login takes an identity token such as an ID token")]
    AccessTokenJwt,
    #[error("no key of the external issuer has the JWT's kid")]
    UnknownKid,
    #[error("the JWT's algorithm does not match its key")]
    AlgorithmMismatch,
    #[error("the JWT signature does not verify with a key of this identityId's issuer")]
    BadSignature,
    #[error("the JWT issuer (iss) does not match boundIssuer")]
    IssuerMismatch,
    #[error("the JWT audience (aud) matches none of boundAudiences")]
    AudienceMismatch,
    #[error("the JWT subject (sub) does not match boundSubject")]
    SubjectMismatch,
    #[error("the JWT claim {0:?} does not match boundClaims")]
    ClaimMismatch(String),
    /// The identity's owner listed more globs than a login examines (`--max-bound-globs`).
    #[error(
        "the identity's {field} lists more than {max} globs, more than one login examines: its owner must shorten it"
    )]
    TooManyGlobs { field: String, max: usize },
    /// The caller's JWT holds a claim with more elements than a login examines
    /// (`--max-claim-elements`).
    #[error("the JWT claim {claim:?} has more than {max} elements, more than one login examines")]
    ClaimTooLarge { claim: String, max: usize },
    #[error("the JWT has expired (exp)")]
    Expired,
    #[error("the JWT is not valid yet (nbf)")]
    NotYetValid,
    #[error("the JWT was issued in the future (iat)")]
    IssuedInFuture,
    #[error("the caller's address is not in accessTokenTrustedIps")]
    IpNotAllowed,
    /// The claims `claimMappings` picks from this JWT make a larger record than is kept.
    #[error("the claims the identity's claimMappings pick from this JWT are too large to keep")]
    ClaimsTooLarge,
    /// The session store refused the new token (full, or the tenant at its quota: the
    /// reason is [`crate::sessions::StoreError::reason`]); retry later.
    #[error("the server cannot issue access tokens right now; retry later")]
    TemporarilyUnavailable(&'static str),
    /// A shared session store could not answer; retry later.
    #[error("the session store is unavailable; retry later")]
    StoreUnavailable,
    #[error("the server could not issue a token")]
    Internal,
}

impl LoginError {
    /// HTTP status: 403 for the caller's address, 401 for everything about the token.
    pub fn status(&self) -> u16 {
        match self {
            Self::IpNotAllowed => 403,
            Self::ClaimsTooLarge => 400,
            Self::IssuerUnavailable | Self::TemporarilyUnavailable(_) | Self::StoreUnavailable => 503,
            Self::Internal => 500,
            _ => 401,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::IdentityNotFound => "identity_not_found",
            Self::Malformed => "malformed_jwt",
            Self::TooLarge => "jwt_too_large",
            Self::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            Self::IssuerUnavailable => "issuer_unavailable",
            Self::TemporarilyUnavailable(_) | Self::StoreUnavailable => "temporarily_unavailable",
            Self::CriticalHeader => "unsupported_crit",
            Self::AccessTokenJwt => "access_token_jwt",
            Self::TokenReviewRefused => "token_review_refused",
            Self::Internal => "internal_error",
            Self::UnknownKid => "unknown_kid",
            Self::AlgorithmMismatch => "algorithm_mismatch",
            Self::BadSignature => "bad_signature",
            Self::IssuerMismatch => "issuer_mismatch",
            Self::AudienceMismatch => "audience_mismatch",
            Self::SubjectMismatch => "subject_mismatch",
            Self::ClaimMismatch(_) => "claim_mismatch",
            Self::TooManyGlobs { .. } => "bound_too_large",
            Self::ClaimTooLarge { .. } => "claim_too_large",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::IssuedInFuture => "token_issued_in_future",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::ClaimsTooLarge => "claims_too_large",
        }
    }
}

impl LoginError {
    /// Whether the caller's answer hides this refusal behind [`LoginError::BadSignature`]:
    /// before a signature verifies, an unknown `identityId`, an unknown `kid` and a key of
    /// the wrong type answer exactly as a bad signature does, so that a caller without a
    /// token of the identity's issuer cannot tell which identity ids exist. The detail goes
    /// to the log and the metrics ([`LoginError::code`]).
    pub fn hidden(&self) -> bool {
        matches!(self, Self::IdentityNotFound | Self::UnknownKid | Self::AlgorithmMismatch)
    }

    /// The error code the caller sees.
    pub fn public_code(&self) -> &'static str {
        if self.hidden() { Self::BadSignature.code() } else { self.code() }
    }

    /// The message the caller sees.
    pub fn public_message(&self) -> String {
        if self.hidden() { Self::BadSignature.to_string() } else { self.to_string() }
    }
}

/// The parts of a JWT header a login needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtHeader {
    pub alg: SigningAlgorithm,
    pub kid: Option<String>,
}

/// Shape, size, `crit`, algorithm and `kid`: before any key is looked at. This is the whole
/// of what an unauthenticated caller's bytes reach before signature verification (the fuzz
/// target `external_jwt` runs it). Header members that would point elsewhere for keys
/// (`jku`, `x5u`, `jwk`, `x5c`) are ignored: keys come only from the identity's issuer.
pub fn check_header(jwt: &str) -> Result<JwtHeader, LoginError> {
    if jwt.len() > MAX_JWT_BYTES {
        return Err(LoginError::TooLarge);
    }
    let mut parts = jwt.split('.');
    let (Some(h), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(LoginError::Malformed);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).map_err(|_| LoginError::Malformed)?;
    let header: Value = serde_json::from_slice(&bytes).map_err(|_| LoginError::Malformed)?;
    let header = header.as_object().ok_or(LoginError::Malformed)?;
    // Any crit (even empty, or not an array) names extensions this server would have to
    // understand: it understands none.
    if header.contains_key("crit") {
        return Err(LoginError::CriticalHeader);
    }
    let typ = header.get("typ").and_then(Value::as_str).map(str::to_ascii_lowercase);
    if matches!(typ.as_deref(), Some("at+jwt" | "application/at+jwt")) {
        return Err(LoginError::AccessTokenJwt);
    }
    let alg = header.get("alg").and_then(Value::as_str).ok_or(LoginError::Malformed)?;
    let alg =
        SigningAlgorithm::from_name(alg).ok_or_else(|| LoginError::AlgorithmNotAllowed(clip(alg).into_owned()))?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(LoginError::Malformed),
    };
    Ok(JwtHeader { alg, kid })
}

/// The `iss` claim of a JWT, read WITHOUT verifying anything: only to choose which
/// identities' full checks ([`super::verify`]) a token exchange runs. `None` when the JWT is
/// not shaped so or has no string `iss`.
pub fn unverified_issuer(jwt: &str) -> Option<String> {
    if jwt.len() > MAX_JWT_BYTES {
        return None;
    }
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss").and_then(Value::as_str).map(str::to_owned)
}

/// The signature against the issuer's keys.
pub fn check_signature(keys: &IssuerKeys, header: &JwtHeader, jwt: &str) -> Result<Value, LoginError> {
    verify_signature(keys, header.alg, header.kid.as_deref(), jwt).map_err(|e| match e {
        SignatureError::UnknownKid => LoginError::UnknownKid,
        SignatureError::AlgorithmMismatch => LoginError::AlgorithmMismatch,
        SignatureError::BadSignature => LoginError::BadSignature,
        SignatureError::Malformed => LoginError::Malformed,
    })
}

fn numeric(claims: &Value, name: &str) -> Result<Option<i64>, LoginError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(|f| Some(f as i64)).ok_or(LoginError::Malformed),
    }
}

/// What an over-cap match is refused as: `field` names the bound list, `claim` the claim.
fn oversized(e: Oversized, field: impl FnOnce() -> String, claim: &str) -> LoginError {
    match e {
        Oversized::Globs { max } => LoginError::TooManyGlobs { field: field(), max },
        Oversized::Elements { max } => LoginError::ClaimTooLarge { claim: clip(claim).into_owned(), max },
    }
}

/// iss, aud, sub, bound claims, then exp / nbf / iat with [`LEEWAY`]; at most `limits` of
/// matching work (past it, refused whole).
pub fn check_claims(
    claims: &Value,
    spec: &IdentityOidcAuthSpec,
    now: i64,
    limits: &MatchLimits,
) -> Result<(), LoginError> {
    if claims.get("iss").and_then(Value::as_str) != Some(spec.bound_issuer.as_str()) {
        return Err(LoginError::IssuerMismatch);
    }
    let aud = matching::audience_matches(&spec.bound_audiences, claims.get("aud"), limits)
        .map_err(|e| oversized(e, || "boundAudiences".into(), "aud"))?;
    if !aud {
        return Err(LoginError::AudienceMismatch);
    }
    if !spec.bound_subject.is_empty() {
        let sub = claims.get("sub").and_then(Value::as_str).ok_or(LoginError::SubjectMismatch)?;
        if !matching::glob_match(&spec.bound_subject, sub) {
            return Err(LoginError::SubjectMismatch);
        }
    }
    for (name, bound) in &spec.bound_claims {
        let found = matching::claim_matches(bound, matching::lookup_claim(claims, name), limits)
            .map_err(|e| oversized(e, || format!("boundClaims.{}", clip(name)), name))?;
        if !found {
            return Err(LoginError::ClaimMismatch(clip(name).into_owned()));
        }
    }
    // An external JWT without exp would be valid forever: refuse it.
    let exp = numeric(claims, "exp")?.ok_or(LoginError::Expired)?;
    if now >= exp.saturating_add(LEEWAY) {
        return Err(LoginError::Expired);
    }
    if numeric(claims, "nbf")?.is_some_and(|nbf| now.saturating_add(LEEWAY) < nbf) {
        return Err(LoginError::NotYetValid);
    }
    if numeric(claims, "iat")?.is_some_and(|iat| now.saturating_add(LEEWAY) < iat) {
        return Err(LoginError::IssuedInFuture);
    }
    Ok(())
}

/// The caller's address against the identity's trusted ranges.
pub fn check_ip(trusted: &[Cidr], peer: IpAddr) -> Result<(), LoginError> {
    if cidr::any_contains(trusted, peer) { Ok(()) } else { Err(LoginError::IpNotAllowed) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(extra: Value) -> IdentityOidcAuthSpec {
        let mut base = json!({"oidcDiscoveryUrl": "https://i", "boundIssuer": "https://i"});
        base.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn unverified_issuer_reads_iss_only() {
        let e = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let token = |payload: Value| format!("{}.{}.c2ln", e(json!({"alg": "ES256"})), e(payload));
        assert_eq!(unverified_issuer(&token(json!({"iss": "https://i"}))).as_deref(), Some("https://i"));
        assert_eq!(unverified_issuer(&token(json!({"iss": 7}))), None);
        assert_eq!(unverified_issuer(&token(json!({}))), None);
        assert_eq!(unverified_issuer("opaque"), None);
        assert_eq!(unverified_issuer(&format!("a.{}.c", "A".repeat(MAX_JWT_BYTES))), None, "oversized");
    }

    fn jwt(header: Value) -> String {
        let e = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.c2ln", e(&header), e(&json!({})))
    }

    #[test]
    fn header_checks() {
        assert_eq!(check_header(&jwt(json!({"alg": "RS256", "kid": "k"}))).unwrap().kid.as_deref(), Some("k"));
        assert_eq!(check_header(&jwt(json!({"alg": "none"}))), Err(LoginError::AlgorithmNotAllowed("none".into())));
        assert_eq!(check_header(&jwt(json!({"alg": "HS256"}))), Err(LoginError::AlgorithmNotAllowed("HS256".into())));
        assert_eq!(check_header("a.b"), Err(LoginError::Malformed));
        let at = jwt(json!({"alg": "ES256", "typ": "at+jwt"}));
        assert_eq!(check_header(&at), Err(LoginError::AccessTokenJwt), "an access token is no identity token");
        assert_eq!(check_header("!!.b.c"), Err(LoginError::Malformed));
        assert_eq!(check_header(&"a".repeat(MAX_JWT_BYTES + 1)), Err(LoginError::TooLarge));
        assert_eq!(check_header(&jwt(json!({"alg": "RS256", "kid": 7}))), Err(LoginError::Malformed));
        assert_eq!(check_header(&jwt(json!(["alg", "RS256"]))), Err(LoginError::Malformed));
        // A header naming a key elsewhere is not followed: the kid still decides.
        let jku = check_header(&jwt(json!({"alg": "ES256", "kid": "k", "jku": "https://evil.example/jwks"})));
        assert_eq!(jku, Ok(JwtHeader { alg: SigningAlgorithm::ES256, kid: Some("k".into()) }));
        // An attacker's alg is cut in the answer.
        let long = check_header(&jwt(json!({"alg": "x".repeat(10_000)}))).unwrap_err().to_string();
        assert!(long.len() < 400, "{long}");
    }

    #[test]
    fn any_crit_header_is_refused() {
        for crit in [json!(["exp"]), json!(["b64"]), json!([]), json!("exp"), json!(null), json!({})] {
            let h = check_header(&jwt(json!({"alg": "RS256", "kid": "k", "crit": crit, "exp": 1})));
            assert_eq!(h, Err(LoginError::CriticalHeader), "{crit}");
        }
        assert_eq!(LoginError::CriticalHeader.status(), 401);
        assert_eq!(LoginError::CriticalHeader.code(), "unsupported_crit");
    }

    #[test]
    fn an_unavailable_issuer_tells_the_caller_nothing_more() {
        let e = LoginError::IssuerUnavailable;
        assert_eq!((e.status(), e.code()), (503, "issuer_unavailable"));
        assert!(!e.to_string().contains("http"), "{e}");
    }

    /// A cheap stand-in for the fuzz target `external_jwt` (fuzz/) inside the normal test run:
    /// deterministic mutations of JWT headers and compact strings must be decided, never panic,
    /// and nothing with crit or an alg outside the list may pass.
    #[test]
    fn mutated_jwt_headers_never_panic_or_pass_crit() {
        let seeds = [
            r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#,
            r#"{"alg":"EdDSA","crit":["exp"],"exp":1}"#,
            r#"{"alg":"ES512","kid":"","jku":"https://x"}"#,
            r#"{"alg":"none"}"#,
        ];
        let alphabet: Vec<char> = "{}[]\":,. \\acdeiklrtgnoSRE0125\u{0}é".chars().collect();
        let mut mutator = crate::mutation::Mutator::default();
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        for i in 0..20_000 {
            let header = mutator.mutate(seeds[i % seeds.len()], &alphabet);
            let mut compact = format!("{}.{}.c2ln", b64(&header), b64("{}"));
            if i % 5 == 0 {
                // Mutate the compact form itself too: dots, padding, non-base64 bytes.
                let at = mutator.below(compact.len());
                let c = ['.', '=', '+', '/', 'A', '\u{7f}'][mutator.below(6)];
                compact.insert(at, c);
            }
            if let Ok(h) = check_header(&compact) {
                let first = compact.split('.').next().unwrap();
                let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(first).unwrap();
                let decoded: Value = serde_json::from_slice(&bytes).unwrap();
                assert!(decoded.get("crit").is_none(), "{compact}");
                assert_eq!(decoded["alg"], h.alg.as_str(), "{compact}");
                assert_eq!(decoded.get("kid").and_then(Value::as_str), h.kid.as_deref(), "{compact}");
            }
        }
    }

    #[test]
    fn claim_checks_in_order() {
        let now = 1_000_000;
        let ok = json!({"iss": "https://i", "aud": ["api"], "sub": "system:serviceaccount:ci:runner",
                        "exp": now + 60, "iat": now, "nbf": now, "repo": "org/app", "groups": ["a", "b"]});
        let s = spec(json!({"boundAudiences": "api, other", "boundSubject": "system:serviceaccount:ci:*",
                            "boundClaims": {"repo": "org/*", "groups": "x,b"}}));
        assert_eq!(check_claims(&ok, &s, now, &MatchLimits::default()), Ok(()));
        let with = |k: &str, v: Value| {
            let mut c = ok.clone();
            c[k] = v;
            c
        };
        assert_eq!(
            check_claims(&with("iss", json!("https://evil")), &s, now, &MatchLimits::default()),
            Err(LoginError::IssuerMismatch)
        );
        assert_eq!(
            check_claims(&with("aud", json!("web")), &s, now, &MatchLimits::default()),
            Err(LoginError::AudienceMismatch)
        );
        assert_eq!(
            check_claims(&with("sub", json!("system:serviceaccount:prod:x")), &s, now, &MatchLimits::default()),
            Err(LoginError::SubjectMismatch)
        );
        assert_eq!(
            check_claims(&with("repo", json!("other/app")), &s, now, &MatchLimits::default()),
            Err(LoginError::ClaimMismatch("repo".into()))
        );
        assert_eq!(
            check_claims(&with("exp", json!(now - LEEWAY)), &s, now, &MatchLimits::default()),
            Err(LoginError::Expired)
        );
        assert_eq!(
            check_claims(&with("exp", json!(now - LEEWAY + 1)), &s, now, &MatchLimits::default()),
            Ok(()),
            "inside the leeway"
        );
        assert_eq!(
            check_claims(&with("nbf", json!(now + LEEWAY + 1)), &s, now, &MatchLimits::default()),
            Err(LoginError::NotYetValid)
        );
        assert_eq!(
            check_claims(&with("iat", json!(now + 3600)), &s, now, &MatchLimits::default()),
            Err(LoginError::IssuedInFuture)
        );
        let mut no_exp = ok.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_eq!(check_claims(&no_exp, &s, now, &MatchLimits::default()), Err(LoginError::Expired));
        // Empty bounds accept anything, but for the audience, which must say "*" to.
        let any = spec(json!({"boundAudiences": "*"}));
        assert_eq!(check_claims(&with("aud", json!("anything")), &any, now, &MatchLimits::default()), Ok(()));
        let unbound = spec(json!({}));
        assert_eq!(
            check_claims(&with("aud", json!("anything")), &unbound, now, &MatchLimits::default()),
            Err(LoginError::AudienceMismatch)
        );
    }

    #[test]
    fn matching_past_the_caps_is_refused_by_name() {
        let now = 1_000_000;
        let l = MatchLimits { max_globs: 2, max_claim_elements: 3 };
        let claims = json!({"iss": "https://i", "aud": "api", "exp": now + 60, "groups": ["a", "b", "c", "d"]});
        let s = spec(json!({"boundAudiences": "api", "boundClaims": {"groups": "a"}}));
        let e = check_claims(&claims, &s, now, &l).unwrap_err();
        assert_eq!(e, LoginError::ClaimTooLarge { claim: "groups".into(), max: 3 });
        assert_eq!((e.status(), e.code()), (401, "claim_too_large"));
        let s = spec(json!({"boundAudiences": "api", "boundClaims": {"groups": "x, y, a"}}));
        let e = check_claims(&claims, &s, now, &l).unwrap_err();
        assert_eq!(e, LoginError::TooManyGlobs { field: "boundClaims.groups".into(), max: 2 });
        assert_eq!((e.status(), e.code()), (401, "bound_too_large"));
        assert!(e.to_string().contains("boundClaims.groups") && e.to_string().contains("more than 2"), "{e}");
        let s = spec(json!({"boundAudiences": "x, y, api"}));
        let e = check_claims(&claims, &s, now, &l).unwrap_err();
        assert_eq!(e, LoginError::TooManyGlobs { field: "boundAudiences".into(), max: 2 });
        let many_aud = json!({"iss": "https://i", "aud": ["1", "2", "3", "api"], "exp": now + 60});
        let s = spec(json!({"boundAudiences": "api"}));
        let e = check_claims(&many_aud, &s, now, &l).unwrap_err();
        assert_eq!(e, LoginError::ClaimTooLarge { claim: "aud".into(), max: 3 });
    }

    #[test]
    fn before_the_signature_the_caller_cannot_tell_an_unknown_identity() {
        let bad = LoginError::BadSignature;
        for e in [LoginError::IdentityNotFound, LoginError::UnknownKid, LoginError::AlgorithmMismatch, bad.clone()] {
            assert_eq!((e.status(), e.public_code(), e.public_message()), (401, "bad_signature", bad.to_string()));
        }
        assert_eq!(LoginError::IdentityNotFound.code(), "identity_not_found", "the log and metrics keep the detail");
        let e = LoginError::ClaimMismatch("team".into());
        assert_eq!((e.public_code(), e.public_message()), (e.code(), e.to_string()), "after the signature: detailed");
    }

    #[test]
    fn ip_checks() {
        let trusted = vec![Cidr::parse("10.0.0.0/8").unwrap()];
        assert_eq!(check_ip(&trusted, "10.1.2.3".parse().unwrap()), Ok(()));
        assert_eq!(check_ip(&trusted, "::ffff:10.1.2.3".parse().unwrap()), Ok(()));
        assert_eq!(check_ip(&trusted, "127.0.0.1".parse().unwrap()), Err(LoginError::IpNotAllowed));
        assert_eq!(LoginError::IpNotAllowed.status(), 403);
        assert_eq!(LoginError::BadSignature.status(), 401);
    }
}

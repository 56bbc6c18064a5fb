//! PKCE (RFC 7636).

use base64::Engine;
use sha2::{Digest, Sha256};

use super::errors::OAuthError;

/// `code_challenge_method` (declared with the provider's `spec.pkceMethods`).
pub use crate::api::PkceMethod as Method;

/// Parses `code_challenge_method` against what the provider accepts (`spec.pkceMethods`).
/// Absent means S256 (RFC 9700 §2.1.1), or `plain` (RFC 7636 §4.3) only where the provider
/// accepts `plain`: a provider that never opted in never treats a challenge as plain.
pub fn method(method: Option<&str>, accepted: &[Method]) -> Result<Method, OAuthError> {
    let method = match method {
        None if accepted.contains(&Method::Plain) => Method::Plain,
        None | Some("S256") => Method::S256,
        Some("plain") => Method::Plain,
        Some(_) => return Err(OAuthError::InvalidRequest("code_challenge_method must be S256 or plain".into())),
    };
    if accepted.contains(&method) {
        Ok(method)
    } else {
        Err(OAuthError::InvalidRequest(format!(
            "code_challenge_method {} is not accepted by this provider (its spec.pkceMethods)",
            method.as_str()
        )))
    }
}

/// The PKCE bindings a presented `code_verifier` answers, one per method, in the shape of
/// `CodeRecord::pkce_binding`; the empty binding when none was sent. The store compares
/// them with the code's before spending it, so a wrong verifier leaves the code unspent.
pub fn answers(verifier: Option<&str>) -> Result<Vec<String>, OAuthError> {
    match verifier {
        None => Ok(vec![String::new()]),
        Some(v) if !well_formed(v) => {
            Err(OAuthError::InvalidGrant("code_verifier must be 43 to 128 unreserved characters".into()))
        }
        Some(v) => {
            let s256 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes()));
            Ok(vec![format!("S256:{s256}"), format!("plain:{v}")])
        }
    }
}

/// Whether a challenge or verifier has RFC 7636's shape: 43-128 unreserved characters.
fn well_formed(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Checks a `code_challenge` at authorize.
pub fn check_challenge(challenge: &str) -> Result<(), OAuthError> {
    if well_formed(challenge) {
        Ok(())
    } else {
        Err(OAuthError::InvalidRequest("code_challenge must be 43 to 128 unreserved characters".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7636 Appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    /// RFC 7636 Appendix B: the verifier answers its S256 challenge, and a plain challenge
    /// equal to itself, nothing else.
    #[test]
    fn rfc7636_appendix_b() {
        let answers = answers(Some(VERIFIER)).unwrap();
        assert!(answers.contains(&format!("S256:{CHALLENGE}")));
        assert!(answers.contains(&format!("plain:{VERIFIER}")));
        assert!(!answers.contains(&format!("plain:{CHALLENGE}")));
        let other = super::answers(Some(&VERIFIER.replace('d', "e"))).unwrap();
        assert!(!other.contains(&format!("S256:{CHALLENGE}")));
        assert_eq!(super::answers(None).unwrap(), vec![String::new()], "no verifier answers only a code without PKCE");
    }

    #[test]
    fn shapes() {
        assert!(check_challenge(CHALLENGE).is_ok());
        assert!(check_challenge(&"a".repeat(42)).is_err());
        assert!(check_challenge(&"a".repeat(129)).is_err());
        assert!(check_challenge(&format!("{}+", "a".repeat(43))).is_err());
        assert!(matches!(answers(Some("short")), Err(OAuthError::InvalidGrant(_))));
        assert!(method(Some("S512"), &[Method::S256, Method::Plain]).is_err());
    }

    #[test]
    fn s256_is_the_default_and_plain_is_opt_in() {
        let s256_only = [Method::S256];
        assert_eq!(method(None, &s256_only), Ok(Method::S256), "absent means S256 (RFC 9700)");
        assert!(matches!(method(Some("plain"), &s256_only), Err(OAuthError::InvalidRequest(_))));
        let both = [Method::S256, Method::Plain];
        assert_eq!(method(None, &both), Ok(Method::Plain), "RFC 7636 §4.3 where plain is accepted");
        assert_eq!(method(Some("S256"), &both), Ok(Method::S256));
        assert_eq!(method(Some("plain"), &both), Ok(Method::Plain));
    }
}

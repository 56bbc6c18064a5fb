//! PKCE (RFC 7636).

use base64::Engine;
use sha2::{Digest, Sha256};

use super::errors::OAuthError;

/// `code_challenge_method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    S256,
    Plain,
}

impl Method {
    /// Parses the method; absent means `plain` (RFC 7636 §4.3).
    pub fn parse(method: Option<&str>) -> Result<Self, OAuthError> {
        match method {
            None | Some("plain") => Ok(Self::Plain),
            Some("S256") => Ok(Self::S256),
            Some(_) => Err(OAuthError::InvalidRequest("code_challenge_method must be S256 or plain".into())),
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

/// Checks a `code_verifier` against the challenge of the code, in constant time.
pub fn verify(method: Method, challenge: &str, verifier: &str) -> Result<(), OAuthError> {
    if !well_formed(verifier) {
        return Err(OAuthError::InvalidGrant("code_verifier must be 43 to 128 unreserved characters".into()));
    }
    let computed = match method {
        Method::S256 => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())),
        Method::Plain => verifier.to_owned(),
    };
    if aws_lc_rs::constant_time::verify_slices_are_equal(computed.as_bytes(), challenge.as_bytes()).is_ok() {
        Ok(())
    } else {
        Err(OAuthError::InvalidGrant("code_verifier does not match the code_challenge".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7636 Appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc7636_appendix_b() {
        assert_eq!(verify(Method::S256, CHALLENGE, VERIFIER), Ok(()));
        assert!(verify(Method::S256, CHALLENGE, &VERIFIER.replace('d', "e")).is_err());
        assert_eq!(verify(Method::Plain, VERIFIER, VERIFIER), Ok(()));
        assert!(verify(Method::Plain, CHALLENGE, VERIFIER).is_err());
    }

    #[test]
    fn shapes() {
        assert!(check_challenge(CHALLENGE).is_ok());
        assert!(check_challenge(&"a".repeat(42)).is_err());
        assert!(check_challenge(&"a".repeat(129)).is_err());
        assert!(check_challenge(&format!("{}+", "a".repeat(43))).is_err());
        assert!(matches!(verify(Method::Plain, "short", "short"), Err(OAuthError::InvalidGrant(_))));
        assert_eq!(Method::parse(None), Ok(Method::Plain));
        assert!(Method::parse(Some("S512")).is_err());
    }
}

//! The OpenID provider protocol: authorize, token and userinfo (OpenBao's identity OIDC
//! provider, OpenID Connect Core 1.0, RFC 6749, RFC 6750, RFC 7636, RFC 9700).
//!
//! Each endpoint is a function of its request, the directory snapshot, the token store and
//! `now`; the HTTP edge in `server` only parses and answers.

pub mod access;
pub mod authorize;
pub mod claims;
pub mod client_assertion;
pub mod client_auth;
pub mod errors;
pub mod exchange;
pub mod grant;
pub mod introspect;
pub mod issue;
pub mod pkce;
pub mod redirect;
pub mod request;
pub mod revoke;
pub mod token;
pub mod userinfo;

use std::collections::HashMap;

pub use errors::OAuthError;

/// Default code lifetime (OpenBao's figure): five minutes.
pub const CODE_TTL: i64 = 300;

/// The parameters a request may repeat (`resource`, `audience`).
pub const REPEATABLE: [&str; 2] = ["resource", "audience"];

/// Parses `application/x-www-form-urlencoded` parameters (a query string or a form body),
/// refusing repeated parameters (RFC 6749 §3.1) and empty names.
///
/// "Parameters sent without a value MUST be treated as if they were omitted from the
/// request" (RFC 6749 §3.1): `max_age=` or `client_secret=` is no parameter at all.
pub fn parse_params(input: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let mut out: HashMap<String, String> = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(input) {
        if k.is_empty() || v.is_empty() {
            continue;
        }
        match out.get_mut(k.as_ref()) {
            // RFC 8707 §2 and RFC 8693 §2.1: these may be given several times; their
            // values (URIs, logical names) hold no space, so they are kept space-separated.
            Some(values) if REPEATABLE.contains(&k.as_ref()) && !v.contains(' ') => {
                values.push(' ');
                values.push_str(&v);
            }
            Some(_) => return Err(OAuthError::InvalidRequest(format!("the parameter {k} is repeated"))),
            None if REPEATABLE.contains(&k.as_ref()) && v.contains(' ') => {
                return Err(OAuthError::InvalidRequest(format!("the parameter {k} must not contain a space")));
            }
            None => {
                out.insert(k.into_owned(), v.into_owned());
            }
        }
    }
    Ok(out)
}

/// The longest value, in bytes, a request may give a parameter. What a code stores (`nonce`,
/// the PKCE challenge, `redirect_uri`, `scope`) and what is sent back (`state`) is bounded
/// well above what real clients send, so no caller makes a record or a redirect large.
pub fn max_param_bytes(name: &str) -> usize {
    match name {
        "code"
        | "code_challenge"
        | "code_verifier"
        | "code_challenge_method"
        | "response_type"
        | "grant_type"
        | "max_age"
        | "prompt" => 256,
        "client_id" | "nonce" | "login_hint" => 1024,
        "state" | "client_secret" => 2048,
        // Tokens this server issues: a JWT access token carries the granted scope (up to the
        // scope limit below) and a signature of up to 4096-bit RSA.
        "token" | "access_token" | "refresh_token" => 32768,
        // As long as the CRD lets a registered URI be (2048 characters of up to 4 bytes),
        // and a scope list of a provider's 64 scopes of 253 characters.
        "redirect_uri" => 8192,
        "scope" => 16384,
        // An external JWT exchanged (RFC 8693) or asserted: as large as a login takes.
        "subject_token" | "client_assertion" => crate::login::checks::MAX_JWT_BYTES,
        _ => 4096,
    }
}

/// Refuses a parameter longer than [`max_param_bytes`], naming it (400 `invalid_request`).
pub fn check_param_sizes(params: &HashMap<String, String>) -> Result<(), OAuthError> {
    match params.iter().find(|(k, v)| v.len() > max_param_bytes(k)) {
        None => Ok(()),
        Some((k, v)) => Err(OAuthError::InvalidRequest(format!(
            "the parameter {} is {} bytes long; at most {} are accepted",
            crate::login::clip(k),
            v.len(),
            max_param_bytes(k)
        ))),
    }
}

/// A parameter that must be present and non-empty.
pub fn required<'a>(params: &'a HashMap<String, String>, name: &str) -> Result<&'a str, OAuthError> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OAuthError::InvalidRequest(format!("the parameter {name} is required")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params() {
        let p = parse_params(b"a=1&b=x%20y").unwrap();
        assert_eq!((p["a"].as_str(), p["b"].as_str()), ("1", "x y"));
        assert!(matches!(parse_params(b"a=1&a=2"), Err(OAuthError::InvalidRequest(_))));
        let p = parse_params(b"max_age=&client_secret=&state=s").unwrap();
        assert_eq!(p.len(), 1, "a parameter without a value is omitted (RFC 6749 §3.1): {p:?}");
        assert!(required(&p, "c").is_err());
        let long = parse_params(format!("nonce={}&state=s", "n".repeat(1025)).as_bytes()).unwrap();
        match check_param_sizes(&long) {
            Err(OAuthError::InvalidRequest(m)) => assert!(m.contains("nonce") && m.contains("1024"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(check_param_sizes(&parse_params(format!("nonce={}", "n".repeat(1024)).as_bytes()).unwrap()).is_ok());
    }
}

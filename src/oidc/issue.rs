//! Token minting, in one place: the token response, ID tokens (OpenID Connect Core §2) and
//! access tokens, opaque or RFC 9068 JWTs. Every grant ends here, so every grant's tokens
//! have the same shape.

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{OAuthError, claims};
use crate::api::AccessTokenFormat;
use crate::directory::{ResolvedClient, ResolvedProvider};
use crate::keys::JwtType;

/// The token response (RFC 6749 §5.1, OpenID Connect Core §3.1.3.3).
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The granted scope, when it differs from the requested one or none was asked for
    /// (RFC 6749 §5.1); always sent, which is allowed and simpler for clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// RFC 8693 §2.2.1: what a token exchange issued (`access_token` holds it, whatever it is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
}

/// A new token handle of grant `grant_id`: 256 random bits, then the grant it belongs to, so
/// a shared store finds its grant from the handle alone.
pub fn handle(grant_id: &[u8; 32]) -> Result<String, OAuthError> {
    crate::sessions::new_handle(grant_id).map_err(|_| OAuthError::ServerError("no randomness".into()))
}

/// Seconds as the signed `i64` of a JWT's time claims.
pub fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX / 4)
}

/// Whom an access token is about and for.
pub struct AccessClaims<'a> {
    /// `sub`: the entity id, or the client id for client_credentials.
    pub subject: &'a str,
    /// `aud`: the resource servers it is meant for.
    pub audiences: &'a [String],
    pub scopes: &'a [String],
    pub issued_at: i64,
    pub expires_at: i64,
}

/// The access token the client receives for `handle`: the handle itself (opaque), or an
/// RFC 9068 JWT signed by the client's key whose `jti` is the handle (so introspection,
/// revocation and userinfo find its record as they find an opaque token's).
pub fn access_token(
    provider: &ResolvedProvider,
    client: &ResolvedClient,
    handle: String,
    c: &AccessClaims<'_>,
) -> Result<String, OAuthError> {
    match client.access_token_format {
        AccessTokenFormat::Opaque => Ok(handle),
        AccessTokenFormat::Jwt => {
            let aud: Value = match c.audiences {
                [one] => Value::String(one.clone()),
                many => json!(many),
            };
            let mut body = json!({
                "iss": provider.issuer,
                "sub": c.subject,
                "aud": aud,
                "client_id": client.client_id,
                "iat": c.issued_at,
                "exp": c.expires_at,
                "jti": handle,
            });
            // RFC 9068 §2.2.3: `scope` when scopes were granted.
            if !c.scopes.is_empty() {
                body["scope"] = Value::String(c.scopes.join(" "));
            }
            client
                .key
                .current
                .sign_typed(JwtType::AccessToken, &body)
                .map_err(|_| OAuthError::ServerError("signing failed".into()))
        }
    }
}

/// What binds an ID token to the exchange that issued it.
#[derive(Default)]
pub struct IdTokenBinding<'a> {
    /// The access token issued beside it (`at_hash`).
    pub access_token: Option<&'a str>,
    /// The code it was exchanged for (`c_hash`).
    pub code: Option<&'a str>,
    pub nonce: Option<&'a str>,
    /// `auth_time`, when the request asked for it (`max_age`).
    pub auth_time: Option<i64>,
}

/// An ID token for `subject` with the granted scopes' `claims`, signed by the client's key.
pub fn id_token(
    provider: &ResolvedProvider,
    client: &ResolvedClient,
    subject: &str,
    mut claims: Map<String, Value>,
    binding: &IdTokenBinding<'_>,
    now: i64,
) -> Result<String, OAuthError> {
    let key = &client.key.current;
    let alg = key.algorithm();
    let mut standard = json!({
        "iss": provider.issuer,
        "sub": subject,
        "aud": client.client_id,
        "iat": now,
        "exp": now + secs(client.id_token_ttl),
        "namespace": provider.namespace,
    });
    if let Some(at) = binding.access_token {
        standard["at_hash"] = Value::String(claims::half_hash(alg, at));
    }
    if let Some(code) = binding.code {
        standard["c_hash"] = Value::String(claims::half_hash(alg, code));
    }
    if let Some(nonce) = binding.nonce {
        standard["nonce"] = Value::String(nonce.to_owned());
    }
    if let Some(t) = binding.auth_time {
        standard["auth_time"] = Value::from(t);
    }
    if let Value::Object(std_claims) = standard {
        claims.extend(std_claims);
    }
    key.sign_jwt(&claims).map_err(|_| OAuthError::ServerError("signing failed".into()))
}

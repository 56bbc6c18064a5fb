//! The token endpoint: a client exchanges a code for an ID token and an access token.

use std::collections::HashMap;

use base64::Engine;
use serde::Serialize;
use serde_json::{Value, json};

use super::{OAuthError, claims, pkce, required};
use crate::api::ClientType;
use crate::directory::{Directory, IssuedBy, ResolvedClient, ResolvedProvider};
use crate::sessions::{
    AccessIssue, CodeBinding, CodeRedemption, Issue, RecordKind, SessionStore, StoreError, new_handle, token_hash,
};

/// How the client authenticated (RFC 6749 §2.3, OpenID Connect Core §9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    pub client_id: String,
    pub secret: Option<String>,
}

fn form_decode(part: &str) -> String {
    url::form_urlencoded::parse(format!("x={part}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// Reads client credentials from `Authorization: Basic` (form-urlencoded before base64, so
/// both halves are decoded after splitting, RFC 6749 §2.3.1) or from the form. Using two
/// methods at once is refused.
pub fn client_auth(authorization: Option<&str>, params: &HashMap<String, String>) -> Result<ClientAuth, OAuthError> {
    let basic = authorization
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, creds)| creds.trim());
    match basic {
        Some(encoded) => {
            if params.contains_key("client_secret") {
                return Err(OAuthError::InvalidRequest("use one client authentication method, not two".into()));
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| OAuthError::InvalidClient("malformed Basic credentials".into()))?;
            let (id, secret) =
                raw.split_once(':').ok_or_else(|| OAuthError::InvalidClient("malformed Basic credentials".into()))?;
            let client_id = form_decode(id);
            if params.get("client_id").is_some_and(|p| *p != client_id) {
                return Err(OAuthError::InvalidRequest("client_id differs from the Basic credentials".into()));
            }
            Ok(ClientAuth { client_id, secret: Some(form_decode(secret)) })
        }
        None => Ok(ClientAuth {
            client_id: required(params, "client_id")
                .map_err(|_| OAuthError::InvalidClient("no client authentication".into()))?
                .to_owned(),
            secret: params.get("client_secret").cloned(),
        }),
    }
}

/// Authenticates the client: a confidential client must present its secret (compared in
/// constant time); a public client must present none.
pub fn authenticate_client<'a>(
    dir: &'a Directory,
    provider: &ResolvedProvider,
    auth: &ClientAuth,
) -> Result<&'a ResolvedClient, OAuthError> {
    let client = dir
        .namespace(&provider.namespace)
        .and_then(|v| v.clients.get(&auth.client_id))
        .ok_or_else(|| OAuthError::InvalidClient("client authentication failed".into()))?;
    match (client.client_type, &client.client_secret, &auth.secret) {
        (ClientType::Public, _, None) => {}
        (ClientType::Public, _, Some(_)) => {
            return Err(OAuthError::InvalidClient("public clients have no secret".into()));
        }
        (ClientType::Confidential, Some(expected), Some(given))
            if aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), given.as_bytes()).is_ok() => {}
        (ClientType::Confidential, _, _) => {
            return Err(OAuthError::InvalidClient("client authentication failed".into()));
        }
    }
    if !provider.clients.contains(&client.name) {
        return Err(OAuthError::UnauthorizedClient("the client is not allowed by this provider".into()));
    }
    Ok(client.as_ref())
}

/// The token response (RFC 6749 §5.1, OpenID Connect Core §3.1.3.3).
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub id_token: String,
}

/// Exchanges a code. A replayed code fails and revokes the access tokens it issued.
pub async fn exchange(
    dir: &Directory,
    provider: &ResolvedProvider,
    client: &ResolvedClient,
    params: &HashMap<String, String>,
    store: &SessionStore,
    now: i64,
) -> Result<TokenResponse, OAuthError> {
    match required(params, "grant_type")? {
        "authorization_code" => {}
        _ => return Err(OAuthError::UnsupportedGrantType("only authorization_code is supported".into())),
    }
    let code = required(params, "code")?;
    // Required, as authorize requires it (RFC 6749 §4.1.3); asked before the code is spent.
    let redirect_uri = required(params, "redirect_uri")?;
    let code_hash = token_hash(code);
    let pkce = pkce::answers(params.get("code_verifier").map(String::as_str))?;
    let binding = CodeBinding {
        namespace: &provider.namespace,
        provider: &provider.name,
        client_id: &client.client_id,
        redirect_uri,
        pkce: &pkce,
    };
    // The access token is made first so the store can issue it with the redemption, in one
    // step; it names its grant (the code's hash), so a store finds it in its grant.
    let access_token = new_handle(&code_hash).map_err(|_| OAuthError::ServerError("no randomness".into()))?;
    let access = AccessIssue {
        hash: token_hash(&access_token),
        expires_at: now + i64::try_from(client.access_token_ttl).unwrap_or(i64::MAX / 4),
        scopes: Vec::new(),
        jwt: false,
        issued_at: now,
    };
    let redemption = match store.redeem_code(&code_hash, &binding, now, &Issue { access, refresh: None }).await {
        Ok(r) => r,
        Err(e @ StoreError::Unavailable) => return Err(OAuthError::unavailable(&e)),
        // A ceiling or the tenant's quota: counted by reason, and said as such.
        Err(e) => return Err(OAuthError::store(RecordKind::AccessToken, e)),
    };
    let record = match redemption {
        CodeRedemption::Fresh(r) => *r,
        CodeRedemption::Replayed { revoked } => {
            tracing::warn!(client_id = %client.client_id, revoked, "authorization code replayed; its tokens are revoked");
            return Err(OAuthError::InvalidGrant("the code was already used".into()));
        }
        // Another client's code, another redirect_uri or a verifier that does not answer
        // the challenge: refused without spending it (RFC 6749 §4.1.3, RFC 7636 §4.6).
        CodeRedemption::WrongBinding => {
            return Err(OAuthError::InvalidGrant(
                "the code was not issued to this client by this provider for this redirect_uri, or the \
                 code_verifier does not answer its code_challenge"
                    .into(),
            ));
        }
        CodeRedemption::Unknown => return Err(OAuthError::InvalidGrant("the code is invalid or expired".into())),
    };
    let issuer = IssuedBy { id: &record.identity_id, key: &record.identity, uid: &record.identity_uid };
    let grant = (&issuer, &record.alias, record.scopes.as_slice());
    let gone = OAuthError::InvalidGrant("the entity no longer exists".into());
    let (identity, mut id_claims) = claims::granted_claims(dir, &provider.namespace, grant, now, gone)?;

    let key = &client.key.current;
    let alg = key.algorithm();
    let mut standard = json!({
        "iss": provider.issuer,
        "sub": identity.id,
        "aud": client.client_id,
        "iat": now,
        "exp": now + i64::try_from(client.id_token_ttl).unwrap_or(i64::MAX / 4),
        "namespace": provider.namespace,
        "at_hash": claims::half_hash(alg, &access_token),
        "c_hash": claims::half_hash(alg, code),
    });
    if let Some(nonce) = &record.nonce {
        standard["nonce"] = Value::String(nonce.clone());
    }
    if record.max_age_sent {
        standard["auth_time"] = Value::from(record.auth_time);
    }
    if let Value::Object(std_claims) = standard {
        id_claims.extend(std_claims);
    }
    let id_token = key.sign_jwt(&id_claims).map_err(|_| OAuthError::ServerError("signing failed".into()))?;
    Ok(TokenResponse { access_token, token_type: "Bearer", expires_in: client.access_token_ttl, id_token })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn basic_credentials_are_form_decoded_after_splitting() {
        // client_id "a:b" and secret "p%w d" are form-urlencoded before base64 (RFC 6749 §2.3.1).
        let header = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("a%3Ab:p%25w+d"));
        let auth = client_auth(Some(&header), &params(&[])).unwrap();
        assert_eq!(auth, ClientAuth { client_id: "a:b".into(), secret: Some("p%w d".into()) });
        let both = client_auth(Some(&header), &params(&[("client_secret", "x")]));
        assert!(matches!(both, Err(OAuthError::InvalidRequest(_))));
        assert!(matches!(client_auth(Some("Basic !!!"), &params(&[])), Err(OAuthError::InvalidClient(_))));
    }

    #[test]
    fn post_and_none() {
        let auth = client_auth(None, &params(&[("client_id", "c"), ("client_secret", "s")])).unwrap();
        assert_eq!(auth.secret.as_deref(), Some("s"));
        let auth = client_auth(None, &params(&[("client_id", "c")])).unwrap();
        assert_eq!(auth.secret, None);
        assert!(matches!(client_auth(None, &params(&[])), Err(OAuthError::InvalidClient(_))));
    }
}

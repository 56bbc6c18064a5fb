//! The UserInfo endpoint (OpenID Connect Core §5.3, RFC 6750 bearer tokens).

use serde_json::{Map, Value};

use super::{OAuthError, access, claims};
use crate::directory::{Directory, IssuedBy, ResolvedProvider};
use crate::sessions::{GrantSubject, SessionStore};

/// The claims for an access token (opaque or RFC 9068 JWT): `sub` and the granted scopes'
/// claims.
pub async fn claims_for(
    dir: &Directory,
    provider: &ResolvedProvider,
    store: &SessionStore,
    token: Option<&str>,
    now: i64,
) -> Result<Map<String, Value>, OAuthError> {
    let token = token.ok_or_else(|| OAuthError::NoToken("no access token".into()))?;
    let view = access::resolve(dir, store, token, now)
        .await
        .map_err(|e| OAuthError::unavailable(&e))?
        .ok_or_else(|| OAuthError::InvalidToken("the access token is invalid or expired".into()))?;
    let grant = &view.grant;
    if grant.namespace() != provider.namespace || grant.provider() != provider.name {
        return Err(OAuthError::InvalidToken("the access token was issued by another provider".into()));
    }
    // The token lives only as long as its client is served by this provider: a client
    // deleted, or removed from the provider's allowedClients, stops its tokens at once.
    let served = dir
        .namespace(&provider.namespace)
        .and_then(|v| v.clients.get(grant.client_id()))
        .is_some_and(|c| provider.clients.contains(&c.name));
    if !served {
        return Err(OAuthError::InvalidToken("the client of the access token is no longer served".into()));
    }
    let GrantSubject::Code(record) = grant else {
        return Err(OAuthError::InsufficientScope(
            "a client_credentials token names no end-user; userinfo needs a token of the openid scope".into(),
        ));
    };
    if !view.scopes.iter().any(|s| s == "openid") {
        return Err(OAuthError::InsufficientScope("userinfo needs a token of the openid scope".into()));
    }
    let issuer = IssuedBy { id: &record.identity_id, key: &record.identity, uid: &record.identity_uid };
    let granted = (&issuer, &record.alias, view.scopes.as_slice());
    let gone = OAuthError::InvalidToken("the entity no longer exists".into());
    let (identity, mut out) = claims::granted_claims(dir, &provider.namespace, granted, now, gone)?;
    out.insert("sub".into(), Value::String(identity.id.clone()));
    Ok(out)
}

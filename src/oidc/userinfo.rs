//! The UserInfo endpoint (OpenID Connect Core §5.3, RFC 6750 bearer tokens).

use serde_json::{Map, Value};

use super::{OAuthError, claims};
use crate::directory::{Directory, IssuedBy, ResolvedProvider};
use crate::sessions::{GrantSubject, SessionStore};

/// The claims for a userinfo access token: `sub` and the granted scopes' claims.
pub async fn claims_for(
    dir: &Directory,
    provider: &ResolvedProvider,
    store: &SessionStore,
    token: Option<&str>,
    now: i64,
) -> Result<Map<String, Value>, OAuthError> {
    let token = token.ok_or_else(|| OAuthError::NoToken("no access token".into()))?;
    let view = store
        .access_token(token, now)
        .await
        .map_err(|e| OAuthError::unavailable(&e))?
        .ok_or_else(|| OAuthError::InvalidToken("the access token is invalid or expired".into()))?;
    // A client_credentials token names no end-user: there is no userinfo for it.
    let GrantSubject::Code(record) = &view.grant else {
        return Err(OAuthError::InvalidToken("the access token was not issued for an end-user".into()));
    };
    if record.namespace != provider.namespace || record.provider != provider.name {
        return Err(OAuthError::InvalidToken("the access token was issued by another provider".into()));
    }
    // The token lives only as long as its client is served by this provider: a client
    // deleted, or removed from the provider's allowedClients, stops its tokens at once.
    let served = dir
        .namespace(&provider.namespace)
        .and_then(|v| v.clients.get(&record.client_id))
        .is_some_and(|c| provider.clients.contains(&c.name));
    if !served {
        return Err(OAuthError::InvalidToken("the client of the access token is no longer served".into()));
    }
    let issuer = IssuedBy { id: &record.identity_id, key: &record.identity, uid: &record.identity_uid };
    let grant = (&issuer, &record.alias, view.scopes.as_slice());
    let gone = OAuthError::InvalidToken("the entity no longer exists".into());
    let (identity, mut out) = claims::granted_claims(dir, &provider.namespace, grant, now, gone)?;
    out.insert("sub".into(), Value::String(identity.id.clone()));
    Ok(out)
}

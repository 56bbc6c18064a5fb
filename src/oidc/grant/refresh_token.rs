//! The refresh token grant (RFC 6749 §6, OpenID Connect Core §12). Refresh tokens are
//! rotated at every use (RFC 9700 §4.14.2): the store spends the presented token and keeps
//! the new one in one step, and a spent token presented again after the client's
//! `refreshTokenReuseInterval` revokes its whole grant. Here is the pure half: whether the
//! grant may still be refreshed, for which scopes, with which claims.

use std::collections::HashMap;

use super::EntityGrant;
use crate::directory::{Directory, IssuedBy, ResolvedClient, ResolvedProvider};
use crate::oidc::{OAuthError, authorize, claims, required};
use crate::sessions::CodeRecord;

/// The grant's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshRequest {
    pub refresh_token: String,
    /// A narrower scope, if asked (RFC 6749 §6: never one the grant did not have).
    pub scopes: Option<Vec<String>>,
}

impl RefreshRequest {
    pub fn parse(params: &HashMap<String, String>) -> Result<Self, OAuthError> {
        let scopes = params.get("scope").map(|s| {
            let mut out: Vec<String> = Vec::new();
            for s in s.split(' ').filter(|s| !s.is_empty()) {
                if !out.iter().any(|x| x == s) {
                    out.push(s.to_owned());
                }
            }
            out
        });
        Ok(Self { refresh_token: required(params, "refresh_token")?.to_owned(), scopes })
    }
}

/// Decides a refresh of the grant `code` started. Pure: the token was found live by the
/// store; here the grant must be this client's at this provider, the scope no wider, and
/// the entity must still exist and still be admitted by the client's assignments.
pub fn decide(
    dir: &Directory,
    provider: &ResolvedProvider,
    client: &ResolvedClient,
    code: &CodeRecord,
    r: &RefreshRequest,
    now: i64,
) -> Result<EntityGrant, OAuthError> {
    if code.namespace != provider.namespace || code.provider != provider.name || code.client_id != client.client_id {
        return Err(OAuthError::InvalidGrant(
            "the refresh token was not issued to this client by this provider".into(),
        ));
    }
    let scopes = match &r.scopes {
        None => code.scopes.clone(),
        Some(asked) if asked.is_empty() => {
            return Err(OAuthError::InvalidScope("scope is empty; omit it to keep the granted scope".into()));
        }
        Some(asked) => {
            if let Some(wider) = asked.iter().find(|s| !code.scopes.contains(s)) {
                return Err(OAuthError::InvalidScope(format!(
                    "scope {} was not granted; a refresh may narrow the scope, never widen it",
                    crate::login::clip(wider)
                )));
            }
            asked.clone()
        }
    };
    let issuer = IssuedBy { id: &code.identity_id, key: &code.identity, uid: &code.identity_uid };
    let gone = OAuthError::InvalidGrant("the entity no longer exists".into());
    let (identity, claims) =
        claims::granted_claims(dir, &provider.namespace, (&issuer, &code.alias, &scopes), now, gone)?;
    if !authorize::admitted(dir, client, identity) {
        return Err(OAuthError::InvalidGrant("the entity is no longer admitted by the client's assignments".into()));
    }
    Ok(EntityGrant { scopes, subject: identity.id.clone(), claims })
}

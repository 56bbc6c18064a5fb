//! The authorization code grant (RFC 6749 §4.1.3, OpenID Connect Core §3.1.3): a code from
//! authorize, bound to its client, provider, `redirect_uri` and PKCE challenge, is spent once
//! for an ID token and an access token.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::directory::{Directory, IssuedBy, ResolvedProvider};
use crate::oidc::{OAuthError, claims, pkce, required};
use crate::sessions::{CodeRecord, CodeRedemption};

/// The grant's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeRequest {
    pub code: String,
    /// Required, as authorize requires it (RFC 6749 §4.1.3); asked before the code is spent.
    pub redirect_uri: String,
    /// The PKCE bindings the `code_verifier` answers (see [`pkce::answers`]).
    pub pkce: Vec<String>,
}

impl CodeRequest {
    pub fn parse(params: &HashMap<String, String>) -> Result<Self, OAuthError> {
        Ok(Self {
            code: required(params, "code")?.to_owned(),
            redirect_uri: required(params, "redirect_uri")?.to_owned(),
            pkce: pkce::answers(params.get("code_verifier").map(String::as_str))?,
        })
    }
}

/// What the redemption found, as the protocol answers it: the code's record, or the error.
/// A replayed code's tokens are revoked by the store.
pub fn redeemed(redemption: CodeRedemption) -> Result<CodeRecord, OAuthError> {
    match redemption {
        CodeRedemption::Fresh(r) => Ok(*r),
        CodeRedemption::Replayed { revoked } => {
            tracing::warn!(revoked, "authorization code replayed; its tokens are revoked");
            Err(OAuthError::InvalidGrant("the code was already used".into()))
        }
        // Another client's code, another redirect_uri or a verifier that does not answer
        // the challenge: refused without spending it (RFC 6749 §4.1.3, RFC 7636 §4.6).
        CodeRedemption::WrongBinding => Err(OAuthError::InvalidGrant(
            "the code was not issued to this client by this provider for this redirect_uri, or the \
             code_verifier does not answer its code_challenge"
                .into(),
        )),
        CodeRedemption::Unknown => Err(OAuthError::InvalidGrant("the code is invalid or expired".into())),
    }
}

/// Who the ID token is about and what it says: the entity must still exist (same id,
/// object and incarnation) and its claims are those of the granted scopes, now.
pub fn decide(
    dir: &Directory,
    provider: &ResolvedProvider,
    record: &CodeRecord,
    now: i64,
) -> Result<(String, Map<String, Value>), OAuthError> {
    let issuer = IssuedBy { id: &record.identity_id, key: &record.identity, uid: &record.identity_uid };
    let grant = (&issuer, &record.alias, record.scopes.as_slice());
    let gone = OAuthError::InvalidGrant("the entity no longer exists".into());
    let (identity, id_claims) = claims::granted_claims(dir, &provider.namespace, grant, now, gone)?;
    Ok((identity.id.clone(), id_claims))
}

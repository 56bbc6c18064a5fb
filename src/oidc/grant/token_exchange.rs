//! Token exchange (RFC 8693): a token the caller already holds becomes the token it needs,
//! in one call. The `subject_token` is either an external JWT (a pod's projected
//! service-account token, a CI job's token) meeting the bounds of an IdentityOidcAuth of the
//! provider's namespace, checked exactly as a login checks it ([`crate::login::verify`]), or
//! an identity access token the login API issued (one use counted, as authorize counts it).
//! What comes out is an ID token (the default) or an access token for the client named by
//! `audience` (default: the requesting client), which the provider must serve and whose
//! assignments must admit the entity.
//!
//! Decisions (documented in README.md, "Token exchange"):
//! - any client listing the grant may use it, public ones included: the subject token is
//!   the credential (RFC 8693 §2.1 leaves client authentication optional), so an agent with
//!   only a service-account token calls it with a public client's `client_id`;
//! - an unacceptable subject token (no identity's bounds met, several met, an unknown or
//!   revoked identity access token) is `invalid_request` (RFC 8693 §2.2.2);
//! - an `audience` the provider does not serve, or whose assignments do not admit the
//!   entity, is `invalid_target` (RFC 8693 §2.2.2: unwilling to issue for that target);
//! - `identity_id` (an extension parameter) names the identity when a JWT meets several;
//! - `actor_token` is refused: delegation is not implemented.
//!
//! Here is the pure half: parsing, which identities a JWT may prove, the target client, and
//! what the issued token says.

use std::collections::HashMap;
use std::sync::Arc;

use super::EntityGrant;
use crate::directory::{Directory, ResolvedClient, ResolvedIdentity, ResolvedProvider};
use crate::oidc::{OAuthError, authorize, claims, required};
use crate::sessions::Alias;

/// `subject_token_type` of an external JWT (RFC 8693 §3).
pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// `subject_token_type` of an external ID token; also what is issued by default.
pub const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// An identity access token of the login API in, or an OAuth access token out.
pub const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The extension parameter naming the IdentityOidcAuth (its `identityId`) an external JWT
/// is checked against, when it meets the bounds of several.
pub const IDENTITY_ID: &str = "identity_id";

/// What the caller presents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubjectToken {
    /// An external JWT (`...:jwt` or `...:id_token`).
    External(String),
    /// An identity access token of this operator (`...:access_token`).
    IdentityAccessToken(String),
}

/// What the caller asks for (`requested_token_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requested {
    IdToken,
    AccessToken,
}

impl Requested {
    /// `issued_token_type` of the answer.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IdToken => ID_TOKEN,
            Self::AccessToken => ACCESS_TOKEN,
        }
    }
}

/// The grant's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangeRequest {
    pub subject: SubjectToken,
    /// [`IDENTITY_ID`], for an external JWT only.
    pub identity_id: Option<String>,
    pub requested: Requested,
    /// The `client_id` of the client the token is for; `None`: the requesting client.
    pub audience: Option<String>,
    /// Requested scopes, in order, each once (`openid` when none is asked for).
    pub scopes: Vec<String>,
}

impl ExchangeRequest {
    pub fn parse(params: &HashMap<String, String>) -> Result<Self, OAuthError> {
        if params.contains_key("actor_token") || params.contains_key("actor_token_type") {
            return Err(OAuthError::InvalidRequest(
                "actor_token: delegation is not supported; exchange the subject_token alone".into(),
            ));
        }
        if params.contains_key("resource") {
            return Err(OAuthError::InvalidTarget(
                "resource is not supported here; name the client the token is for with audience (its client_id)".into(),
            ));
        }
        let token = required(params, "subject_token")?.to_owned();
        let subject = match required(params, "subject_token_type")? {
            JWT | ID_TOKEN => SubjectToken::External(token),
            ACCESS_TOKEN => SubjectToken::IdentityAccessToken(token),
            other => {
                return Err(OAuthError::InvalidRequest(format!(
                    "subject_token_type {} is not supported; supported: {JWT}, {ID_TOKEN}, {ACCESS_TOKEN}",
                    crate::login::clip(other)
                )));
            }
        };
        let identity_id = params.get(IDENTITY_ID).cloned();
        if identity_id.is_some() && matches!(subject, SubjectToken::IdentityAccessToken(_)) {
            return Err(OAuthError::InvalidRequest(format!(
                "{IDENTITY_ID} names the identity an external JWT is checked against; an identity access token \
                 already names its identity"
            )));
        }
        let requested = match params.get("requested_token_type").map(String::as_str) {
            None | Some(ID_TOKEN) => Requested::IdToken,
            Some(ACCESS_TOKEN) => Requested::AccessToken,
            Some(other) => {
                return Err(OAuthError::InvalidRequest(format!(
                    "requested_token_type {} is not supported; supported: {ID_TOKEN}, {ACCESS_TOKEN}",
                    crate::login::clip(other)
                )));
            }
        };
        let mut scopes: Vec<String> = Vec::new();
        for s in params.get("scope").map(String::as_str).unwrap_or("openid").split(' ').filter(|s| !s.is_empty()) {
            if !scopes.iter().any(|x| x == s) {
                scopes.push(s.to_owned());
            }
        }
        Ok(Self { subject, identity_id, requested, audience: params.get("audience").cloned(), scopes })
    }
}

/// The identities of the provider's namespace an external JWT with unverified issuer `iss`
/// may prove: those bound to that issuer (or only the one `identity_id` names). A cheap
/// filter; each candidate is then verified in full.
pub fn candidates<'a>(
    dir: &'a Directory,
    provider: &ResolvedProvider,
    iss: Option<&str>,
    identity_id: Option<&str>,
) -> Result<Vec<&'a Arc<ResolvedIdentity>>, OAuthError> {
    let view = dir.namespace(&provider.namespace);
    if let Some(id) = identity_id {
        return match view.and_then(|v| v.identities.get(id)) {
            Some(identity) => Ok(vec![identity]),
            None => Err(OAuthError::InvalidRequest(format!(
                "{IDENTITY_ID} {} names no IdentityOidcAuth of this provider's namespace",
                crate::login::clip(id)
            ))),
        };
    }
    let Some(iss) = iss else {
        return Err(OAuthError::InvalidRequest("the subject_token is not a JWT with an iss claim".into()));
    };
    let mut found: Vec<_> =
        view.map(|v| v.identities.values().filter(|i| i.spec.bound_issuer == iss).collect()).unwrap_or_default();
    // The directory's order is a hash map's: sort, so answers and logs are stable.
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(found)
}

/// The client the token is issued for: `audience`, or the requesting client. It must be a
/// client the provider serves (`invalid_target` otherwise, RFC 8693 §2.2.2).
pub fn target<'a>(
    dir: &'a Directory,
    provider: &ResolvedProvider,
    requesting: &'a ResolvedClient,
    audience: Option<&str>,
) -> Result<&'a ResolvedClient, OAuthError> {
    let Some(aud) = audience.filter(|a| *a != requesting.client_id) else { return Ok(requesting) };
    dir.namespace(&provider.namespace)
        .and_then(|v| v.clients.get(aud))
        .map(|c| &**c)
        .filter(|c| provider.clients.contains(&c.name))
        .ok_or_else(|| {
            OAuthError::InvalidTarget(format!(
                "audience {} is not the client_id of a client this provider serves",
                crate::login::clip(aud)
            ))
        })
}

/// Decides an exchange for the entity the subject token proved. Pure. The target's
/// assignments must admit the entity (`invalid_target` otherwise); scopes other than
/// `openid` must be among the provider's `scopesSupported` (`invalid_scope`), set no claim
/// twice and find the values they require, as at authorize.
pub fn decide(
    dir: &Directory,
    provider: &ResolvedProvider,
    target: &ResolvedClient,
    entity: (&ResolvedIdentity, &Alias),
    r: &ExchangeRequest,
    now: i64,
) -> Result<EntityGrant, OAuthError> {
    let (identity, alias) = entity;
    if !authorize::admitted(dir, target, identity) {
        return Err(OAuthError::InvalidTarget(
            "the entity is not admitted by the assignments of the audience client".into(),
        ));
    }
    if let Some(bad) = r.scopes.iter().find(|s| *s != "openid" && !provider.scopes.contains(s)) {
        return Err(OAuthError::InvalidScope(format!(
            "scope {} is not among the provider's scopesSupported",
            crate::login::clip(bad)
        )));
    }
    let mut scopes = r.scopes.clone();
    if r.requested == Requested::IdToken && !scopes.iter().any(|s| s == "openid") {
        scopes.insert(0, "openid".to_owned());
    }
    let view = dir.namespace(&provider.namespace).ok_or_else(|| OAuthError::ServerError("namespace gone".into()))?;
    let conflicts = claims::conflicting_claims(view, &scopes);
    if !conflicts.is_empty() {
        return Err(OAuthError::InvalidRequest(format!(
            "granted scopes set the same claims: {}",
            conflicts.join(", ")
        )));
    }
    claims::check_required_values(view, &scopes, entity, now)?;
    let claims = claims::scope_claims(view, &scopes, &claims::entity_context(identity, alias), now)?;
    Ok(EntityGrant { scopes, subject: identity.id.clone(), claims })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::grant::params;

    #[test]
    fn parameters() {
        let r = ExchangeRequest::parse(&params(&[("subject_token", "a.b.c"), ("subject_token_type", JWT)])).unwrap();
        assert_eq!(r.subject, SubjectToken::External("a.b.c".into()));
        assert_eq!((r.requested, r.audience, r.scopes), (Requested::IdToken, None, vec!["openid".to_owned()]));
        let r = ExchangeRequest::parse(&params(&[
            ("subject_token", "t"),
            ("subject_token_type", ACCESS_TOKEN),
            ("requested_token_type", ACCESS_TOKEN),
            ("audience", "cid"),
            ("scope", "groups  groups team"),
        ]))
        .unwrap();
        assert_eq!(r.subject, SubjectToken::IdentityAccessToken("t".into()));
        assert_eq!((r.requested, r.audience.as_deref()), (Requested::AccessToken, Some("cid")));
        assert_eq!(r.scopes, ["groups", "team"]);
        let refused = [
            (vec![("subject_token_type", JWT)], "invalid_request"),
            (vec![("subject_token", "t")], "invalid_request"),
            (vec![("subject_token", "t"), ("subject_token_type", "urn:x")], "invalid_request"),
            (vec![("subject_token", "t"), ("subject_token_type", JWT), ("actor_token", "a")], "invalid_request"),
            (
                vec![("subject_token", "t"), ("subject_token_type", JWT), ("requested_token_type", JWT)],
                "invalid_request",
            ),
            (vec![("subject_token", "t"), ("subject_token_type", ACCESS_TOKEN), (IDENTITY_ID, "x")], "invalid_request"),
            (vec![("subject_token", "t"), ("subject_token_type", JWT), ("resource", "https://x")], "invalid_target"),
        ];
        for (p, code) in refused {
            let e = ExchangeRequest::parse(&params(&p)).unwrap_err();
            assert_eq!(e.to_string(), code, "{p:?}: {e:?}");
        }
    }
}

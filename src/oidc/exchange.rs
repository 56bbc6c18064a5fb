//! The token exchange grant's driver (RFC 8693; the pure half is
//! [`super::grant::token_exchange`]): prove the entity with the subject token, decide, then
//! sign an ID token, or store and mint an access token.

use std::net::IpAddr;
use std::sync::Arc;

use super::OAuthError;
use super::grant::authorization_code;
use super::grant::token_exchange::{self, ExchangeRequest, Requested, SubjectToken};
use super::issue::{self, AccessClaims, IdTokenBinding, TokenResponse};
use super::token::{Context, access_issue, store_error};
use crate::directory::{ResolvedClient, ResolvedIdentity};
use crate::login::external::IssuerSource;
use crate::login::{self, AccessError, LoginError, Use, checks};
use crate::sessions::{Alias, CodeBinding, CodeRecord, Issue, RecordKind, StoreError, TokenError, token_hash};

/// How long the code-shaped record behind an exchanged access token waits to be redeemed:
/// it is redeemed at once, by the same request, so this only bounds a record left behind by
/// a failure between the two store steps.
const EXCHANGE_CODE_TTL: i64 = 60;

/// The entity a subject token proved: the identity, the alias its token carries, and when it
/// authenticated (`auth_time` of what is issued).
struct Proved {
    identity: Arc<ResolvedIdentity>,
    alias: Alias,
    auth_time: i64,
}

/// Answers a token exchange request of `client` (authenticated, allowed the grant) from `peer`.
pub async fn exchange(
    ctx: Context<'_>,
    client: &ResolvedClient,
    r: &ExchangeRequest,
    peer: IpAddr,
) -> Result<TokenResponse, OAuthError> {
    // The target first: a request for a client the provider does not serve spends nothing
    // (no use of an identity access token is counted).
    let target = token_exchange::target(ctx.dir, ctx.provider, client, r.audience.as_deref())?;
    let proved = match &r.subject {
        SubjectToken::External(jwt) => external(ctx, jwt, r.identity_id.as_deref(), peer).await?,
        SubjectToken::IdentityAccessToken(token) => identity_access_token(ctx, token, peer).await?,
    };
    let entity = (&*proved.identity, &proved.alias);
    let decided = token_exchange::decide(ctx.dir, ctx.provider, target, entity, r, ctx.now)?;
    let scope = Some(decided.scopes.join(" "));
    match r.requested {
        Requested::IdToken => {
            let binding = IdTokenBinding::default();
            let id_token = issue::id_token(ctx.provider, target, &decided.subject, decided.claims, &binding, ctx.now)?;
            Ok(TokenResponse {
                access_token: id_token,
                // RFC 8693 §2.2.1: N_A, the token is not an OAuth access token.
                token_type: "N_A",
                expires_in: target.id_token_ttl,
                id_token: None,
                refresh_token: None,
                scope,
                issued_token_type: Some(Requested::IdToken.as_str()),
            })
        }
        Requested::AccessToken => {
            let access_token = store_access(ctx, target, &proved, decided.scopes, &decided.subject).await?;
            Ok(TokenResponse {
                access_token,
                token_type: "Bearer",
                expires_in: target.access_token_ttl,
                id_token: None,
                refresh_token: None,
                scope,
                issued_token_type: Some(Requested::AccessToken.as_str()),
            })
        }
    }
}

/// An external JWT against the identities of the provider's namespace bound to its issuer
/// (or the one `identity_id` names), each checked in full as a login checks it: exactly one
/// must accept it.
async fn external(ctx: Context<'_>, jwt: &str, identity_id: Option<&str>, peer: IpAddr) -> Result<Proved, OAuthError> {
    let unacceptable = |why: String| OAuthError::InvalidRequest(format!("the subject_token is not acceptable: {why}"));
    // Shape, size and algorithm first, whatever the identities (as a login).
    checks::check_header(jwt).map_err(|e| unacceptable(e.public_message()))?;
    let iss = checks::unverified_issuer(jwt);
    let candidates = token_exchange::candidates(ctx.dir, ctx.provider, iss.as_deref(), identity_id)?;
    if candidates.is_empty() {
        return Err(unacceptable(
            "its issuer (iss) is the boundIssuer of no IdentityOidcAuth of this provider's namespace".into(),
        ));
    }
    let login = ctx.login();
    let mut proved = Vec::new();
    let mut refused = Vec::new();
    // Identities fetching the same issuer judge the token's signature alike: once it fails
    // for one, the others are not tried, so a forged token costs one verification per
    // issuer, not one per identity bound to it.
    let mut forged: Vec<&IssuerSource> = Vec::new();
    for identity in &candidates {
        if forged.contains(&&identity.source) {
            continue;
        }
        match login::verify(&login, identity, jwt, peer, ctx.now).await {
            Ok((_, alias)) => proved.push((Arc::clone(identity), alias)),
            Err(e) => {
                if signature_refusal(&e) {
                    forged.push(&identity.source);
                }
                refused.push(e);
            }
        }
    }
    match proved.len() {
        1 => {
            let (identity, alias) = proved.remove(0);
            Ok(Proved { identity, alias, auth_time: ctx.now })
        }
        0 => {
            if refused.iter().any(|e| matches!(e, LoginError::IssuerUnavailable)) {
                return Err(OAuthError::TemporarilyUnavailable(LoginError::IssuerUnavailable.to_string()));
            }
            if refused.iter().any(|e| matches!(e, LoginError::Internal)) {
                return Err(OAuthError::ServerError("the subject_token could not be checked".into()));
            }
            // Each distinct reason once, naming no identity: before its signature verifies,
            // every candidate refuses a token alike, so this tells a forger nothing.
            let mut reasons: Vec<String> = Vec::new();
            for e in &refused {
                let m = e.public_message();
                if !reasons.contains(&m) {
                    reasons.push(m);
                }
            }
            Err(unacceptable(format!(
                "it meets the bounds of no IdentityOidcAuth bound to its issuer: {}",
                reasons.join("; ")
            )))
        }
        n => {
            let ids: Vec<&str> = proved.iter().map(|(i, _)| i.id.as_str()).collect();
            Err(unacceptable(format!(
                "it meets the bounds of {n} IdentityOidcAuth objects ({}); name one with {}",
                ids.join(", "),
                token_exchange::IDENTITY_ID
            )))
        }
    }
}

/// Whether a refusal is about the token's signature or its issuer's keys, the same for every
/// identity fetching that issuer.
fn signature_refusal(e: &LoginError) -> bool {
    matches!(
        e,
        LoginError::UnknownKid
            | LoginError::AlgorithmMismatch
            | LoginError::BadSignature
            | LoginError::Malformed
            | LoginError::IssuerUnavailable
    )
}

/// An identity access token of the login API; one use is counted, as authorize counts it.
async fn identity_access_token(ctx: Context<'_>, token: &str, peer: IpAddr) -> Result<Proved, OAuthError> {
    let session =
        login::authenticate(ctx.dir, ctx.store, token, peer, ctx.now, Use::Count).await.map_err(|e| match e {
            AccessError::Token(TokenError::Unavailable) => OAuthError::unavailable(&StoreError::Unavailable),
            other => OAuthError::InvalidRequest(format!("the subject_token is not acceptable: {other}")),
        })?;
    Ok(Proved { identity: session.identity, alias: session.record.alias, auth_time: session.record.issued_at })
}

/// Stores an access token for the entity in a grant of its own and mints it. The grant is
/// shaped as an authorization code's (the entity, its alias, the scopes, the target client):
/// a code record nobody holds is stored and redeemed at once with the access token, so
/// userinfo, introspection, revocation, purging and the quotas treat it as every other
/// entity grant, on both stores, with no new store operation.
async fn store_access(
    ctx: Context<'_>,
    target: &ResolvedClient,
    proved: &Proved,
    scopes: Vec<String>,
    subject: &str,
) -> Result<String, OAuthError> {
    let code = crate::sessions::new_token().map_err(|_| OAuthError::ServerError("no randomness".into()))?;
    let code_hash = token_hash(&code);
    let identity = &proved.identity;
    let record = CodeRecord {
        namespace: ctx.provider.namespace.clone(),
        provider: ctx.provider.name.clone(),
        client_id: target.client_id.clone(),
        redirect_uri: String::new(),
        nonce: None,
        scopes: scopes.clone(),
        challenge: None,
        identity: identity.key.clone(),
        identity_id: identity.id.clone(),
        identity_uid: identity.uid.clone(),
        alias: proved.alias.clone(),
        auth_time: proved.auth_time,
        max_age_sent: false,
        expires_at: ctx.now + EXCHANGE_CODE_TTL,
    };
    ctx.store.insert_code(code_hash, record).await.map_err(|e| store_error(RecordKind::Code, e))?;
    let (handle, access) = access_issue(target, &code_hash, Vec::new(), ctx.now)?;
    let no_pkce = [String::new()];
    let binding = CodeBinding {
        namespace: &ctx.provider.namespace,
        provider: &ctx.provider.name,
        client_id: &target.client_id,
        redirect_uri: "",
        pkce: &no_pkce,
    };
    let step = Issue { access, refresh: None };
    let redemption = ctx
        .store
        .redeem_code(&code_hash, &binding, ctx.now, &step)
        .await
        .map_err(|e| store_error(RecordKind::AccessToken, e))?;
    authorization_code::redeemed(redemption)?;
    let audiences = [target.client_id.clone()];
    let claims = AccessClaims {
        subject,
        audiences: &audiences,
        scopes: &scopes,
        issued_at: ctx.now,
        expires_at: step.access.expires_at,
    };
    issue::access_token(ctx.provider, target, handle, &claims)
}

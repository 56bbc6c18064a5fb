//! The token endpoint's driver: every grant goes the same way. Authenticate the client
//! ([`super::client_auth`]), parse the request by `grant_type` ([`TokenRequest`]), check the
//! client may use that grant, then run the grant's module: its pure decision, the store
//! operation, and the minting ([`super::issue`]).

use std::collections::HashMap;

use super::grant::{EntityGrant, TokenRequest, authorization_code, client_credentials, refresh_token};
use super::issue::{self, AccessClaims, IdTokenBinding, TokenResponse};
use super::request::Request;
use super::{OAuthError, client_auth};
use crate::api::{AccessTokenFormat, GrantType};
use crate::directory::{Directory, ResolvedClient, ResolvedProvider};
use crate::login::LoginContext;
use crate::login::external::IssuerRegistry;
use crate::paths::ProviderEndpoint;
use crate::sessions::{
    AccessIssue, ClientGrant, CodeBinding, GrantBinding, GrantId, GrantSubject, Issue, RecordKind, RefreshIssue,
    RefreshOutcome, RefreshRead, RefreshView, SessionStore, StoreError, grant_of, new_grant_id, token_hash,
};

/// What every grant works with: one directory snapshot, the provider asked, the store, now;
/// the external issuers (token exchange and federated client assertions verify their JWTs
/// as a login does), and the cap on a `private_key_jwt` assertion's lifetime.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub dir: &'a Directory,
    pub provider: &'a ResolvedProvider,
    pub store: &'a SessionStore,
    pub issuers: &'a IssuerRegistry,
    /// Least seconds between two refetches of one external issuer's keys.
    pub refetch_interval: i64,
    pub now: i64,
    /// Longest lifetime of a `private_key_jwt` assertion (`--max-client-assertion-lifetime`).
    pub max_assertion_lifetime: i64,
}

impl<'a> Context<'a> {
    /// What a login's checks read ([`crate::login::verify`]).
    pub fn login(&self) -> LoginContext<'a> {
        LoginContext {
            dir: self.dir,
            issuers: self.issuers,
            tokens: self.store,
            refetch_interval: self.refetch_interval,
        }
    }
}

/// Answers a token request.
pub async fn respond(
    ctx: Context<'_>,
    request: &Request<'_>,
    params: &HashMap<String, String>,
) -> Result<TokenResponse, OAuthError> {
    let presented = client_auth::presented(request, params)?;
    let client = client_auth::authenticate(ctx, ProviderEndpoint::Token, &presented, request.peer).await?;
    let token_request = TokenRequest::parse(params)?;
    let grant = token_request.grant();
    if !client.allows(grant) {
        return Err(OAuthError::UnauthorizedClient(format!(
            "this client may not use the {} grant (spec.grantTypes)",
            grant.as_str()
        )));
    }
    match token_request {
        TokenRequest::AuthorizationCode(r) => exchange_code(ctx, client, &r).await,
        TokenRequest::RefreshToken(r) => refresh(ctx, client, &r).await,
        TokenRequest::ClientCredentials(r) => client_credentials(ctx, client, &r).await,
        TokenRequest::TokenExchange(r) => super::exchange::exchange(ctx, client, &r, request.peer).await,
    }
}

/// A store error as the protocol answers it: 503 either way, counted by kind when it was a
/// refusal (a ceiling or a quota).
pub(super) fn store_error(kind: RecordKind, e: StoreError) -> OAuthError {
    match e {
        StoreError::Unavailable => OAuthError::unavailable(&e),
        e => OAuthError::store(kind, e),
    }
}

/// The access token a grant step stores: its handle, and what the store keeps of it.
pub(super) fn access_issue(
    client: &ResolvedClient,
    grant: &GrantId,
    scopes: Vec<String>,
    now: i64,
) -> Result<(String, AccessIssue), OAuthError> {
    let handle = issue::handle(grant)?;
    let access = AccessIssue {
        hash: token_hash(&handle),
        expires_at: now + issue::secs(client.access_token_ttl),
        scopes,
        jwt: client.access_token_format == AccessTokenFormat::Jwt,
        issued_at: now,
    };
    Ok((handle, access))
}

/// A new refresh token of `grant`, expiring after the client's `refreshTokenTTL` unused and
/// never after `family_expires_at`.
fn refresh_issue(
    client: &ResolvedClient,
    grant: &GrantId,
    family_expires_at: i64,
    now: i64,
) -> Result<(String, RefreshIssue), OAuthError> {
    let handle = issue::handle(grant)?;
    let expires_at = (now + issue::secs(client.refresh_token_ttl)).min(family_expires_at);
    Ok((handle.clone(), RefreshIssue { hash: token_hash(&handle), expires_at, family_expires_at }))
}

/// The authorization code grant. A replayed code fails and revokes the tokens it issued; a
/// client with the `refresh_token` grant gets the first refresh token of a new family.
async fn exchange_code(
    ctx: Context<'_>,
    client: &ResolvedClient,
    r: &authorization_code::CodeRequest,
) -> Result<TokenResponse, OAuthError> {
    let code_hash = token_hash(&r.code);
    let binding = CodeBinding {
        namespace: &ctx.provider.namespace,
        provider: &ctx.provider.name,
        client_id: &client.client_id,
        redirect_uri: &r.redirect_uri,
        pkce: &r.pkce,
    };
    // The tokens are made first so the store can issue them with the redemption, in one
    // step; their handles name the grant (the code), so a shared store finds them with it.
    let (handle, access) = access_issue(client, &code_hash, Vec::new(), ctx.now)?;
    let refresh = match client.allows(GrantType::RefreshToken) {
        true => {
            let family_expires_at = ctx.now + issue::secs(client.refresh_token_max_ttl);
            Some(refresh_issue(client, &code_hash, family_expires_at, ctx.now)?)
        }
        false => None,
    };
    // The store keeps no access token past its grant's absolute expiry; neither does its `exp`.
    let mut access = access;
    if let Some((_, r)) = &refresh {
        access.expires_at = access.expires_at.min(r.family_expires_at);
    }
    let step = Issue { access, refresh: refresh.as_ref().map(|(_, r)| r.clone()) };
    let redemption = ctx
        .store
        .redeem_code(&code_hash, &binding, ctx.now, &step)
        .await
        .map_err(|e| store_error(RecordKind::AccessToken, e))?;
    let record = authorization_code::redeemed(redemption)?;
    let (subject, id_claims) = authorization_code::decide(ctx.dir, ctx.provider, &record, ctx.now)?;
    let audiences = [client.client_id.clone()];
    let access_claims = AccessClaims {
        subject: &subject,
        audiences: &audiences,
        scopes: &record.scopes,
        issued_at: ctx.now,
        expires_at: step.access.expires_at,
    };
    let access_token = issue::access_token(ctx.provider, client, handle, &access_claims)?;
    let binding = IdTokenBinding {
        access_token: Some(&access_token),
        code: Some(&r.code),
        nonce: record.nonce.as_deref(),
        auth_time: record.max_age_sent.then_some(record.auth_time),
    };
    let id_token = issue::id_token(ctx.provider, client, &subject, id_claims, &binding, ctx.now)?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: u64::try_from(step.access.expires_at - ctx.now).unwrap_or(0),
        id_token: Some(id_token),
        refresh_token: refresh.map(|(token, _)| token),
        scope: Some(record.scopes.join(" ")),
        issued_token_type: None,
    })
}

/// The refusal of a refresh token that is unknown, expired, revoked or not a refresh
/// token of a code grant (RFC 6749 §5.2 `invalid_grant`).
fn invalid_refresh() -> OAuthError {
    OAuthError::InvalidGrant("the refresh token is invalid, expired or revoked".into())
}

/// A refresh's decision for the token `view` reads, or `None` for a rotated token presented
/// after its reuse interval: that goes straight to the store, which revokes its grant (RFC
/// 9700 §4.14.2), whatever else is wrong with the request: a thief or its victim reusing it
/// must not be able to dodge the revocation by asking for a wider scope or after the entity
/// changed.
fn decide_refresh(
    ctx: Context<'_>,
    client: &ResolvedClient,
    r: &refresh_token::RefreshRequest,
    view: &RefreshView,
    reuse: i64,
) -> Result<Option<EntityGrant>, OAuthError> {
    let GrantSubject::Code(code) = &view.grant else { return Err(invalid_refresh()) };
    if view.rotated_at.is_some_and(|at| ctx.now >= at.saturating_add(reuse)) {
        return Ok(None);
    }
    refresh_token::decide(ctx.dir, ctx.provider, client, code, r, ctx.now).map(Some)
}

/// The refresh token grant: the grant must still hold (client, entity, assignments), then
/// the store rotates the token in one step and the new tokens carry current claims.
async fn refresh(
    ctx: Context<'_>,
    client: &ResolvedClient,
    r: &refresh_token::RefreshRequest,
) -> Result<TokenResponse, OAuthError> {
    let unavailable = |e| store_error(RecordKind::RefreshToken, e);
    let reuse = issue::secs(client.refresh_token_reuse_interval);
    let read = ctx.store.refresh_read(&r.refresh_token, ctx.now).await.map_err(unavailable)?;
    let (view, decided) = match read.ok_or_else(invalid_refresh)? {
        RefreshRead::Checked(view) => {
            let decided = decide_refresh(ctx, client, r, &view, reuse)?;
            (view, decided)
        }
        RefreshRead::Remembered(view) => match decide_refresh(ctx, client, r, &view, reuse) {
            Ok(decided) => (view, decided),
            // Only the stored token tells whether a refusal must revoke its family instead.
            Err(_) => {
                let view = ctx.store.refresh_token(&r.refresh_token, ctx.now).await.map_err(unavailable)?;
                let view = view.ok_or_else(invalid_refresh)?;
                let decided = decide_refresh(ctx, client, r, &view, reuse)?;
                (view, decided)
            }
        },
    };
    let GrantSubject::Code(code) = &view.grant else { return Err(invalid_refresh()) };
    let grant = grant_of(&r.refresh_token).ok_or_else(invalid_refresh)?;
    let narrowed = match &decided {
        Some(d) if d.scopes != code.scopes => d.scopes.clone(),
        _ => Vec::new(),
    };
    let (handle, access) = access_issue(client, &grant, narrowed, ctx.now)?;
    let (refresh_token, next) = refresh_issue(client, &grant, view.family_expires_at, ctx.now)?;
    let step = Issue { access, refresh: Some(next) };
    let binding =
        GrantBinding { namespace: &ctx.provider.namespace, provider: &ctx.provider.name, client_id: &client.client_id };
    let outcome = ctx
        .store
        .refresh(&r.refresh_token, &view.grant, &binding, ctx.now, reuse, &step)
        .await
        .map_err(|e| store_error(RecordKind::RefreshToken, e))?;
    match outcome {
        RefreshOutcome::Rotated(_) => {}
        RefreshOutcome::Reused { revoked } => {
            tracing::warn!(client_id = %client.client_id, revoked, "a rotated refresh token was reused; its grant is revoked");
            return Err(OAuthError::InvalidGrant(
                "the refresh token was already used; every token of its grant is now revoked".into(),
            ));
        }
        RefreshOutcome::WrongBinding => {
            return Err(OAuthError::InvalidGrant(
                "the refresh token was not issued to this client by this provider".into(),
            ));
        }
        RefreshOutcome::Unknown => return Err(invalid_refresh()),
    }
    // Rotated although it read as reused: a store that disagrees issues nothing here.
    let Some(decided) = decided else { return Err(invalid_refresh()) };
    let expires_at = step.access.expires_at.min(view.family_expires_at);
    let audiences = [client.client_id.clone()];
    let access_claims = AccessClaims {
        subject: &decided.subject,
        audiences: &audiences,
        scopes: &decided.scopes,
        issued_at: ctx.now,
        expires_at,
    };
    let access_token = issue::access_token(ctx.provider, client, handle, &access_claims)?;
    // OpenID Connect Core §12.2: an ID token with current claims when openid is kept.
    let id_token = match decided.scopes.iter().any(|s| s == "openid") {
        true => {
            let binding = IdTokenBinding {
                access_token: Some(&access_token),
                auth_time: code.max_age_sent.then_some(code.auth_time),
                ..IdTokenBinding::default()
            };
            Some(issue::id_token(ctx.provider, client, &decided.subject, decided.claims, &binding, ctx.now)?)
        }
        false => None,
    };
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: u64::try_from(expires_at - ctx.now).unwrap_or(0),
        id_token,
        refresh_token: Some(refresh_token),
        scope: Some(decided.scopes.join(" ")),
        issued_token_type: None,
    })
}

/// The client credentials grant: a token for the client itself, in a grant of its own.
async fn client_credentials(
    ctx: Context<'_>,
    client: &ResolvedClient,
    r: &client_credentials::ClientCredentialsRequest,
) -> Result<TokenResponse, OAuthError> {
    let decided = client_credentials::decide(ctx.provider, client, r)?;
    let id = new_grant_id().map_err(|_| OAuthError::ServerError("no randomness".into()))?;
    let (handle, access) = access_issue(client, &id, Vec::new(), ctx.now)?;
    let grant = ClientGrant {
        namespace: ctx.provider.namespace.clone(),
        provider: ctx.provider.name.clone(),
        client_id: client.client_id.clone(),
        client_name: client.name.clone(),
        scopes: decided.scopes.clone(),
        audiences: decided.audiences.clone(),
        issued_at: ctx.now,
    };
    ctx.store.insert_client_grant(id, grant, &access).await.map_err(|e| store_error(RecordKind::AccessToken, e))?;
    let access_claims = AccessClaims {
        subject: &client.client_id,
        audiences: &decided.audiences,
        scopes: &decided.scopes,
        issued_at: ctx.now,
        expires_at: access.expires_at,
    };
    let access_token = issue::access_token(ctx.provider, client, handle, &access_claims)?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: client.access_token_ttl,
        id_token: None,
        refresh_token: None,
        scope: (!decided.scopes.is_empty()).then(|| decided.scopes.join(" ")),
        issued_token_type: None,
    })
}

//! The token endpoint's driver: every grant goes the same way. Authenticate the client
//! ([`super::client_auth`]), parse the request by `grant_type` ([`TokenRequest`]), check the
//! client may use that grant, then run the grant's module: its pure decision, the store
//! operation, and the minting ([`super::issue`]).

use std::collections::HashMap;

use super::grant::{TokenRequest, authorization_code};
use super::issue::{self, AccessClaims, IdTokenBinding, TokenResponse};
use super::request::Request;
use super::{OAuthError, client_auth};
use crate::directory::{Directory, ResolvedClient, ResolvedProvider};
use crate::sessions::{CodeBinding, RecordKind, SessionStore, StoreError, token_hash};

/// What every grant works with: one directory snapshot, the provider asked, the store, now.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub dir: &'a Directory,
    pub provider: &'a ResolvedProvider,
    pub store: &'a SessionStore,
    pub now: i64,
}

/// Answers a token request.
pub async fn respond(
    ctx: Context<'_>,
    request: &Request<'_>,
    params: &HashMap<String, String>,
) -> Result<TokenResponse, OAuthError> {
    let presented = client_auth::presented(request, params)?;
    let client = client_auth::authenticate(ctx.dir, ctx.provider, &presented)?;
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
    }
}

/// A store error as the protocol answers it: 503 either way, counted by kind when it was a
/// refusal (a ceiling or a quota).
fn store_error(kind: RecordKind, e: StoreError) -> OAuthError {
    match e {
        StoreError::Unavailable => OAuthError::unavailable(&e),
        e => OAuthError::store(kind, e),
    }
}

/// The authorization code grant. A replayed code fails and revokes the tokens it issued.
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
    // The access token's handle is made first so the store can issue it with the
    // redemption, in one step; it names its grant, so a shared store finds it with the code.
    let handle = issue::handle(&code_hash)?;
    let expires_at = ctx.now + issue::secs(client.access_token_ttl);
    let redemption = ctx
        .store
        .redeem_code(&code_hash, &binding, ctx.now, (token_hash(&handle), expires_at))
        .await
        .map_err(|e| store_error(RecordKind::Userinfo, e))?;
    let record = authorization_code::redeemed(redemption)?;
    let (subject, id_claims) = authorization_code::decide(ctx.dir, ctx.provider, &record, ctx.now)?;
    let audiences = [client.client_id.clone()];
    let access_claims = AccessClaims {
        subject: &subject,
        audiences: &audiences,
        scopes: &record.scopes,
        issued_at: ctx.now,
        expires_at,
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
        expires_in: client.access_token_ttl,
        id_token: Some(id_token),
        refresh_token: None,
        scope: Some(record.scopes.join(" ")),
    })
}

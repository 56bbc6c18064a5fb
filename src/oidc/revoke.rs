//! Token revocation (RFC 7009). A client revokes its own tokens: an access token alone, or a
//! refresh token with its whole grant (every access and refresh token it issued, §2.1). A
//! token that is unknown, expired, or another client's answers 200 and changes nothing
//! (§2.2: the client cannot tell, and cannot harm another client's tokens).

use std::collections::HashMap;

use super::request::Request;
use super::token::Context;
use super::{OAuthError, access, client_auth, required};
use crate::sessions::{GrantBinding, GrantSubject};

/// Revokes `token` if it is the presenting client's.
pub async fn revoke(
    ctx: Context<'_>,
    request: &Request<'_>,
    params: &HashMap<String, String>,
) -> Result<(), OAuthError> {
    let presented = client_auth::presented(request, params)?;
    let client = client_auth::authenticate(ctx, crate::paths::ProviderEndpoint::Revoke, &presented, request.peer)
        .await
        .map_err(client_auth::as_resource_caller)?;
    let token = required(params, "token")?;
    let unavailable = |e| OAuthError::unavailable(&e);
    let binding =
        GrantBinding { namespace: &ctx.provider.namespace, provider: &ctx.provider.name, client_id: &client.client_id };
    let owned = |grant: &GrantSubject| grant.bound_to(&binding);
    if let Some(view) = ctx.store.refresh_token(token, ctx.now).await.map_err(unavailable)? {
        if owned(&view.grant) {
            ctx.store.revoke_grant(token).await.map_err(unavailable)?;
        }
        return Ok(());
    }
    if let Some(view) = access::resolve(ctx.dir, ctx.store, token, ctx.now).await.map_err(unavailable)?
        && owned(&view.grant)
        && let Some((handle, _)) = access::handle_of(token)
    {
        ctx.store.revoke_access(&handle).await.map_err(unavailable)?;
    }
    Ok(())
}

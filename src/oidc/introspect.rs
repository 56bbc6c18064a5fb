//! Token introspection (RFC 7662): a resource server, authenticated as a client of the
//! provider, asks whether a token is active and what it carries. A client sees only the
//! tokens of its own provider; any other token, and every token that would not be honoured,
//! reads `{"active": false}` and nothing else (§2.2).

use std::collections::HashMap;

use serde_json::{Value, json};

use super::request::Request;
use super::token::Context;
use super::{OAuthError, access, client_auth, required};
use crate::api::ClientAuthMethod;
use crate::directory::IssuedBy;
use crate::sessions::GrantSubject;

/// The methods a caller may authenticate with here: introspection tells what a token
/// carries, so it is for confidential clients (resource servers) only.
pub const AUTH_METHODS: [ClientAuthMethod; 3] =
    [ClientAuthMethod::ClientSecretBasic, ClientAuthMethod::ClientSecretPost, ClientAuthMethod::PrivateKeyJwt];

/// The introspection response for `token`.
pub async fn introspect(
    ctx: Context<'_>,
    request: &Request<'_>,
    params: &HashMap<String, String>,
) -> Result<Value, OAuthError> {
    let presented = client_auth::presented(request, params)?;
    if !AUTH_METHODS.contains(&presented.method) {
        return Err(OAuthError::InvalidClient("introspection requires client authentication (RFC 7662 §2.1)".into()));
    }
    client_auth::authenticate(ctx, crate::paths::ProviderEndpoint::Introspect, &presented, request.peer)
        .await
        .map_err(client_auth::as_resource_caller)?;
    let token = required(params, "token")?;
    let unavailable = |e| OAuthError::unavailable(&e);
    // The hint only orders the lookups (RFC 7662 §2.1); both kinds are tried.
    let refresh_first = params.get("token_type_hint").is_some_and(|h| h == "refresh_token");
    for kind in if refresh_first { [true, false] } else { [false, true] } {
        let found = if kind {
            // A rotated token is no longer one to use, even within its reuse interval.
            ctx.store.refresh_token(token, ctx.now).await.map_err(unavailable)?.filter(|v| v.rotated_at.is_none()).map(
                |v| {
                    let scopes = v.grant.scopes().to_vec();
                    (v.grant, scopes, v.expires_at, v.issued_at, None)
                },
            )
        } else {
            access::resolve(ctx.dir, ctx.store, token, ctx.now)
                .await
                .map_err(unavailable)?
                .map(|v| (v.grant, v.scopes, v.expires_at, v.issued_at, Some("Bearer")))
        };
        if let Some((grant, scopes, exp, iat, token_type)) = found {
            return Ok(describe(ctx, &grant, &scopes, exp, iat, token_type));
        }
    }
    Ok(inactive())
}

fn inactive() -> Value {
    json!({"active": false})
}

/// An active token's description, if it is this provider's and would be honoured now: its
/// client still served, its entity (for a code's grant) still there.
fn describe(
    ctx: Context<'_>,
    grant: &GrantSubject,
    scopes: &[String],
    exp: i64,
    iat: i64,
    token_type: Option<&str>,
) -> Value {
    let (namespace, client_id) = (grant.namespace(), grant.client_id());
    if namespace != ctx.provider.namespace || grant.provider() != ctx.provider.name {
        return inactive();
    }
    let served = ctx
        .dir
        .namespace(namespace)
        .and_then(|v| v.clients.get(client_id))
        .is_some_and(|c| ctx.provider.clients.contains(&c.name));
    if !served {
        return inactive();
    }
    let (sub, aud) = match grant {
        GrantSubject::Code(c) => {
            let issuer = IssuedBy { id: &c.identity_id, key: &c.identity, uid: &c.identity_uid };
            if ctx.dir.issuing_identity(&issuer).is_none() {
                return inactive();
            }
            (c.identity_id.clone(), json!(c.client_id))
        }
        GrantSubject::Client(c) => (c.client_id.clone(), json!(c.audiences)),
    };
    let mut out = json!({
        "active": true,
        "client_id": client_id,
        "sub": sub,
        "aud": aud,
        "iss": ctx.provider.issuer,
        "exp": exp,
        "iat": iat,
    });
    if !scopes.is_empty() {
        out["scope"] = Value::String(scopes.join(" "));
    }
    if let Some(t) = token_type {
        out["token_type"] = Value::String(t.to_owned());
    }
    out
}

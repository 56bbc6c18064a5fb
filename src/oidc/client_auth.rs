//! Client authentication at the token, introspection and revocation endpoints (RFC 6749
//! §2.3, OpenID Connect Core §9). The methods are [`ClientAuthMethod`]: the same enum the
//! client spec takes and discovery lists, so the three cannot disagree.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::Value;

use super::OAuthError;
use super::client_assertion::{self, ASSERTION_TYPE};
use super::request::Request;
use super::token::Context;
use crate::api::{ClientAuthMethod, ClientType};
use crate::directory::{ResolvedClient, ResolvedIdentity};
use crate::login::jwks::IssuerKeys;
use crate::login::{self, checks};
use crate::paths::ProviderEndpoint;
use crate::sessions::{AssertionSpend, AssertionUse};

/// The credentials a request presents, and by which method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presented {
    pub client_id: String,
    pub method: ClientAuthMethod,
    /// The secret of `client_secret_basic` / `client_secret_post`.
    pub secret: Option<String>,
    /// The `client_assertion` of `private_key_jwt`.
    pub assertion: Option<String>,
}

/// Reads the client's credentials: `Authorization: Basic`, `client_secret` in the form, a
/// `client_assertion` (RFC 7523 §2.2), or only `client_id` (`none`). Two methods at once are
/// refused (RFC 6749 §2.3: "MUST NOT use more than one authentication method in each
/// request").
pub fn presented(request: &Request<'_>, params: &HashMap<String, String>) -> Result<Presented, OAuthError> {
    let two = || OAuthError::InvalidRequest("use one client authentication method, not two".into());
    let asserted = params.contains_key("client_assertion") || params.contains_key("client_assertion_type");
    match request.basic()? {
        Some(basic) => {
            if params.contains_key("client_secret") || asserted {
                return Err(two());
            }
            if params.get("client_id").is_some_and(|p| *p != basic.client_id) {
                return Err(OAuthError::InvalidRequest("client_id differs from the Basic credentials".into()));
            }
            Ok(Presented {
                client_id: basic.client_id,
                method: ClientAuthMethod::ClientSecretBasic,
                secret: Some(basic.secret),
                assertion: None,
            })
        }
        None if asserted => {
            if params.contains_key("client_secret") {
                return Err(two());
            }
            match params.get("client_assertion_type") {
                Some(t) if t == ASSERTION_TYPE => {}
                Some(_) => {
                    return Err(OAuthError::InvalidRequest(format!("client_assertion_type must be {ASSERTION_TYPE}")));
                }
                None => return Err(OAuthError::InvalidRequest("client_assertion_type is required".into())),
            }
            let assertion = super::required(params, "client_assertion")?.to_owned();
            // RFC 7523 §3: client_id may be left out; the assertion's sub is then the client.
            let client_id = match params.get("client_id") {
                Some(id) => id.clone(),
                None => client_assertion::unverified_claims(&assertion)?
                    .get("sub")
                    .and_then(Value::as_str)
                    .ok_or_else(|| OAuthError::InvalidClient("the client_assertion has no sub".into()))?
                    .to_owned(),
            };
            Ok(Presented {
                client_id,
                method: ClientAuthMethod::PrivateKeyJwt,
                secret: None,
                assertion: Some(assertion),
            })
        }
        None => {
            let client_id = super::required(params, "client_id")
                .map_err(|_| OAuthError::InvalidClient("no client authentication".into()))?
                .to_owned();
            Ok(match params.get("client_secret") {
                Some(secret) => Presented {
                    client_id,
                    method: ClientAuthMethod::ClientSecretPost,
                    secret: Some(secret.clone()),
                    assertion: None,
                },
                None => Presented { client_id, method: ClientAuthMethod::None, secret: None, assertion: None },
            })
        }
    }
}

/// Authenticates the client of `ctx.provider` at `endpoint`, called from `peer`: the method
/// must be one the client may use; a secret is compared in constant time; an assertion is
/// verified ([`private_key_jwt`]); and the provider must serve the client. A failure of a
/// secret reads the same to the caller whatever it was (`invalid_client`), so it learns
/// nothing of which clients exist.
pub async fn authenticate<'a>(
    ctx: Context<'a>,
    endpoint: ProviderEndpoint,
    presented: &Presented,
    peer: IpAddr,
) -> Result<&'a ResolvedClient, OAuthError> {
    let failed = || OAuthError::InvalidClient("client authentication failed".into());
    let client = ctx
        .dir
        .namespace(&ctx.provider.namespace)
        .and_then(|v| v.clients.get(&presented.client_id))
        .ok_or_else(failed)?;
    let provider_serves = || ctx.provider.clients.contains(&client.name);
    if let Some(assertion) = &presented.assertion {
        // An assertion to a client without the method reads as any other failure: the
        // caller, not yet authenticated, learns nothing of the client.
        if !client.auth_methods.contains(&ClientAuthMethod::PrivateKeyJwt) {
            return Err(failed());
        }
        let spend = private_key_jwt(ctx, endpoint, client, assertion, peer).await?;
        if !provider_serves() {
            return Err(OAuthError::UnauthorizedClient("the client is not allowed by this provider".into()));
        }
        // Spent last: an assertion refused for any other reason can be corrected and sent
        // again with the same jti.
        if let Some(checked) = spend {
            spend_jti(ctx, client, &checked).await?;
        }
        return Ok(client.as_ref());
    }
    let secret_ok = match (client.client_type, &client.client_secret, &presented.secret) {
        (ClientType::Public, _, None) => true,
        (ClientType::Confidential, Some(expected), Some(given)) => {
            aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), given.as_bytes()).is_ok()
        }
        _ => false,
    };
    if !secret_ok {
        return Err(failed());
    }
    if !client.auth_methods.contains(&presented.method) {
        return Err(wrong_method(client, presented.method));
    }
    if !provider_serves() {
        return Err(OAuthError::UnauthorizedClient("the client is not allowed by this provider".into()));
    }
    Ok(client.as_ref())
}

/// An authentication failure at introspection or revocation, where the caller is a resource
/// server or a client acting on its own tokens: a client this provider does not serve is no
/// client of it, so 401 `invalid_client` (RFC 7662 §2.3) rather than the token endpoint's
/// `unauthorized_client`.
pub fn as_resource_caller(e: OAuthError) -> OAuthError {
    match e {
        OAuthError::UnauthorizedClient(_) => OAuthError::InvalidClient("client authentication failed".into()),
        other => other,
    }
}

fn wrong_method(client: &ResolvedClient, method: ClientAuthMethod) -> OAuthError {
    OAuthError::InvalidClient(format!(
        "this client authenticates with {}, not {}",
        client.auth_methods.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(" or "),
        method.as_str()
    ))
}

/// A `client_assertion`: one the client signed with a registered key (its `iss` is the
/// client id), whose `jti` the caller then spends ([`spend_jti`]); or an external JWT meeting
/// one of the client's `federatedIdentities` exactly as a login would (nothing to spend).
///
/// A federated assertion is NOT single-use: it is a token its issuer hands a workload for
/// many calls (a projected service-account token is reused until kubelet rotates it), so
/// it is bounded by its own `exp` (and the identity's bounds), as it is at login.
async fn private_key_jwt(
    ctx: Context<'_>,
    endpoint: ProviderEndpoint,
    client: &ResolvedClient,
    assertion: &str,
    peer: IpAddr,
) -> Result<Option<client_assertion::Checked>, OAuthError> {
    let header = checks::check_header(assertion)
        .map_err(|e| OAuthError::InvalidClient(format!("client_assertion refused: {e}")))?;
    let claims = client_assertion::unverified_claims(assertion)?;
    if claims.get("iss").and_then(Value::as_str) != Some(client.client_id.as_str()) {
        return federated(ctx, client, assertion, peer).await.map(|()| None);
    }
    let keys = match (&client.assertion_keys, &client.keys_source) {
        (Some(keys), _) => Arc::clone(keys),
        (None, Some(source)) => published_keys(ctx, source, header.kid.as_deref()).await?,
        (None, None) => {
            return Err(OAuthError::InvalidClient(
                "client_assertion refused: the client has no registered keys (spec.jwks or spec.jwksUri)".into(),
            ));
        }
    };
    let issuer = ctx.provider.issuer.as_str();
    let (token_url, called) = (ProviderEndpoint::Token.url(issuer), endpoint.url(issuer));
    let audiences = [issuer, token_url.as_str(), called.as_str()];
    let checked = client_assertion::check(
        &keys,
        &header,
        assertion,
        &client.client_id,
        &audiences,
        ctx.now,
        ctx.max_assertion_lifetime,
    )?;
    Ok(Some(checked))
}

/// The keys a client publishes at its `jwksUri`, as the registry last fetched them: fetched
/// now when never fetched or older than `--issuer-keys-max-age` (else the client cannot
/// authenticate: 503, as a login whose issuer is unreadable), and fetched again, at most
/// once per refetch interval, when the assertion names a `kid` they lack (the client rotated).
async fn published_keys(
    ctx: Context<'_>,
    source: &crate::login::external::IssuerSource,
    kid: Option<&str>,
) -> Result<Arc<IssuerKeys>, OAuthError> {
    let published = ctx.issuers.get(source);
    let max_age = ctx.issuers.limits().issuer_keys_max_age;
    let young = |k: &Arc<IssuerKeys>| ctx.now.saturating_sub(k.fetched_at) <= max_age;
    let mut keys = match published.keys().filter(young) {
        Some(k) => k,
        None => published.refresh(ctx.now, ctx.refetch_interval).await.filter(young).ok_or_else(|| {
            OAuthError::TemporarilyUnavailable("the client's jwksUri cannot be read now; retry later".into())
        })?,
    };
    if let Some(kid) = kid
        && keys.by_kid(kid).is_none()
        && let Some(fresh) = published.refresh(ctx.now, ctx.refetch_interval).await
    {
        keys = fresh;
    }
    Ok(keys)
}

/// Spends a verified assertion's `jti` in the session store: once, at any replica, until
/// its expiry.
async fn spend_jti(
    ctx: Context<'_>,
    client: &ResolvedClient,
    checked: &client_assertion::Checked,
) -> Result<(), OAuthError> {
    let spend = AssertionUse {
        namespace: &client.namespace,
        client: &client.name,
        client_id: &client.client_id,
        provider: &ctx.provider.name,
        jti: &checked.jti,
        expires_at: checked.spent_until,
    };
    match ctx.store.spend_assertion(&spend, ctx.now).await {
        Ok(AssertionSpend::Fresh) => Ok(()),
        Ok(AssertionSpend::Replayed) => {
            Err(OAuthError::InvalidClient("client_assertion refused: its jti was already used".into()))
        }
        Err(e @ crate::sessions::StoreError::Unavailable) => Err(OAuthError::unavailable(&e)),
        Err(e) => Err(OAuthError::store(crate::sessions::RecordKind::ClientAssertion, e)),
    }
}

/// An external JWT as the client's credential: it must meet the bounds of one of the
/// identities the client names (of its own namespace), checked as a login is.
async fn federated(ctx: Context<'_>, client: &ResolvedClient, assertion: &str, peer: IpAddr) -> Result<(), OAuthError> {
    if client.federated_identities.is_empty() {
        return Err(OAuthError::InvalidClient(
            "client_assertion refused: iss and sub must both be the client_id".into(),
        ));
    }
    let identities: Vec<&Arc<ResolvedIdentity>> = match ctx.dir.namespace(&client.namespace) {
        Some(view) => view.identities.values().filter(|i| client.federated_identities.contains(&i.key.name)).collect(),
        None => Vec::new(),
    };
    let login_ctx = ctx.login();
    let mut last = None;
    for identity in identities {
        match login::verify(&login_ctx, identity, assertion, peer, ctx.now).await {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(match (client.federated_identities.len(), last) {
        (1, Some(e)) => OAuthError::InvalidClient(format!("client_assertion refused by the federated identity: {e}")),
        _ => OAuthError::InvalidClient(
            "client_assertion refused: it meets none of the client's federated identities".into(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::grant::params;
    use base64::Engine;
    use warp::http::{HeaderMap, HeaderValue, Method, header};

    fn with(authorization: Option<&str>, form: &[(&str, &str)]) -> Result<Presented, OAuthError> {
        let mut h = HeaderMap::new();
        if let Some(a) = authorization {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        let request = Request { method: &Method::POST, query: "", headers: &h, body: b"", peer: [127, 0, 0, 1].into() };
        presented(&request, &params(form))
    }

    #[test]
    fn each_method_is_recognised_and_two_are_refused() {
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("c:s"));
        let p = with(Some(&basic), &[]).unwrap();
        assert_eq!((p.method, p.secret.as_deref()), (ClientAuthMethod::ClientSecretBasic, Some("s")));
        assert!(matches!(with(Some(&basic), &[("client_secret", "x")]), Err(OAuthError::InvalidRequest(_))));
        assert!(matches!(with(Some(&basic), &[("client_id", "other")]), Err(OAuthError::InvalidRequest(_))));
        let p = with(None, &[("client_id", "c"), ("client_secret", "s")]).unwrap();
        assert_eq!(p.method, ClientAuthMethod::ClientSecretPost);
        let p = with(None, &[("client_id", "c")]).unwrap();
        assert_eq!((p.method, p.secret), (ClientAuthMethod::None, None));
        let t = ("client_assertion_type", ASSERTION_TYPE);
        let p = with(None, &[t, ("client_assertion", "a.b.c"), ("client_id", "c")]).unwrap();
        assert_eq!((p.method, p.assertion.as_deref()), (ClientAuthMethod::PrivateKeyJwt, Some("a.b.c")));
        assert!(matches!(with(Some(&basic), &[t, ("client_assertion", "a.b.c")]), Err(OAuthError::InvalidRequest(_))));
        let both = [t, ("client_assertion", "a.b.c"), ("client_id", "c"), ("client_secret", "s")];
        assert!(matches!(with(None, &both), Err(OAuthError::InvalidRequest(_))));
        let other_type = [("client_assertion_type", "urn:other"), ("client_assertion", "a.b.c")];
        assert!(matches!(with(None, &other_type), Err(OAuthError::InvalidRequest(_))));
        assert!(matches!(with(None, &[]), Err(OAuthError::InvalidClient(_))));
    }
}

//! The authorization endpoint: the holder of an identity access token asks for a code.

use std::collections::HashMap;

use super::{OAuthError, claims, pkce, redirect, required};
use crate::api::{ALLOW_ALL, ClientType};
use crate::directory::{self, Directory, ResolvedClient, ResolvedIdentity, ResolvedProvider};
use crate::login::Session;
use crate::sessions::CodeRecord;

/// Whether the client's assignments admit the session's entity. A namespace is a tenant: an
/// entity is only ever admitted to clients of its own namespace, so `allow_all` means every
/// entity of the client's namespace and an assignment names entities and groups of its own.
/// Also asked at every refresh: an entity removed from the assignments loses the grant.
pub fn admitted(dir: &Directory, client: &ResolvedClient, identity: &ResolvedIdentity) -> bool {
    if identity.key.namespace != client.namespace {
        return false;
    }
    let Some(view) = dir.namespace(&client.namespace) else { return false };
    client
        .assignments
        .iter()
        .any(|a| a == ALLOW_ALL || view.assignments.get(a).is_some_and(|asg| directory::admits(asg, identity)))
}

/// Decides an authorization request. Pure: the caller has already checked the identity
/// access token (`session`) and reads the clock.
///
/// An unknown `client_id` or a `redirect_uri` the client did not register is answered as an
/// error and never yields a code bound to it.
pub fn decide(
    dir: &Directory,
    provider: &ResolvedProvider,
    params: &HashMap<String, String>,
    session: &Session,
    now: i64,
    code_ttl: i64,
) -> Result<CodeRecord, OAuthError> {
    let client_id = required(params, "client_id")?;
    let view = dir
        .namespace(&provider.namespace)
        .ok_or_else(|| OAuthError::InvalidRequest("the client_id is unknown".into()))?;
    let client =
        view.clients.get(client_id).ok_or_else(|| OAuthError::InvalidRequest("the client_id is unknown".into()))?;
    if !provider.clients.contains(&client.name) {
        return Err(OAuthError::UnauthorizedClient("the client is not allowed by this provider".into()));
    }
    let redirect_uri = required(params, "redirect_uri")?;
    if !redirect::matches(&client.redirect_uris, redirect_uri) {
        return Err(OAuthError::InvalidRequest("the redirect_uri is not registered for this client".into()));
    }
    if params.contains_key("request") {
        return Err(OAuthError::RequestNotSupported("the request parameter is not supported".into()));
    }
    if params.contains_key("request_uri") {
        return Err(OAuthError::RequestUriNotSupported("the request_uri parameter is not supported".into()));
    }
    match required(params, "response_type")? {
        "code" => {}
        _ => return Err(OAuthError::UnsupportedResponseType("only response_type=code is supported".into())),
    }
    let requested: Vec<&str> = required(params, "scope")?.split(' ').filter(|s| !s.is_empty()).collect();
    if !requested.contains(&"openid") {
        return Err(OAuthError::InvalidScope("the openid scope is required".into()));
    }
    // Scopes the provider does not support are ignored, as OpenBao does.
    let mut scopes = vec!["openid".to_owned()];
    for s in requested {
        if s != "openid" && provider.scopes.iter().any(|p| p == s) && !scopes.iter().any(|g| g == s) {
            scopes.push(s.to_owned());
        }
    }
    let challenge = match params.get("code_challenge").filter(|c| !c.is_empty()) {
        Some(c) => {
            let method = pkce::method(params.get("code_challenge_method").map(String::as_str), &provider.pkce_methods)?;
            pkce::check_challenge(c)?;
            Some((method == pkce::Method::S256, c.clone()))
        }
        None if client.client_type == ClientType::Public => {
            return Err(OAuthError::InvalidRequest("public clients must use PKCE (code_challenge)".into()));
        }
        None if params.contains_key("code_challenge_method") => {
            return Err(OAuthError::InvalidRequest("code_challenge_method without code_challenge".into()));
        }
        None => None,
    };
    let max_age = match params.get("max_age") {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .ok()
                .filter(|m| *m >= 0)
                .ok_or_else(|| OAuthError::InvalidRequest("max_age must be a non-negative integer".into()))?,
        ),
    };
    // OpenID Connect Core §3.1.2.1. Nothing here is interactive, so `none` always holds; the
    // entity authenticated when it logged in, and no prompt can make it do so again.
    let prompts: Vec<&str> =
        params.get("prompt").map(|p| p.split(' ').filter(|s| !s.is_empty()).collect()).unwrap_or_default();
    if prompts.contains(&"none") && prompts.len() > 1 {
        return Err(OAuthError::InvalidRequest("prompt=none cannot be combined with other values".into()));
    }
    if prompts.contains(&"login") {
        return Err(OAuthError::LoginRequired(
            "prompt=login: the entity cannot be re-authenticated here; log in again and send max_age".into(),
        ));
    }
    if max_age.is_some_and(|m| now - session.record.issued_at > m) {
        return Err(OAuthError::LoginRequired("the login is older than max_age; log in again".into()));
    }
    if !admitted(dir, client, &session.identity) {
        return Err(OAuthError::AccessDenied("the entity is not assigned to this client".into()));
    }
    let conflicts = claims::conflicting_claims(view, &scopes);
    if !conflicts.is_empty() {
        return Err(OAuthError::InvalidRequest(format!(
            "granted scopes set the same claims: {}",
            conflicts.join(", ")
        )));
    }
    claims::check_required_values(view, &scopes, (&session.identity, &session.record.alias), now)?;
    Ok(CodeRecord {
        namespace: provider.namespace.clone(),
        provider: provider.name.clone(),
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.to_owned(),
        nonce: params.get("nonce").filter(|n| !n.is_empty()).cloned(),
        scopes,
        challenge,
        identity: session.identity.key.clone(),
        identity_id: session.identity.id.clone(),
        identity_uid: session.identity.uid.clone(),
        alias: session.record.alias.clone(),
        auth_time: session.record.issued_at,
        max_age_sent: max_age.is_some(),
        expires_at: now + code_ttl,
    })
}

//! The HTTP edge of authorize, token and userinfo: parse, call `oidc`, answer.

use std::net::IpAddr;

use serde_json::json;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::reply::Response;

use super::{AppState, json_response, unix_now};
use crate::directory::{Directory, ResolvedProvider};
use crate::login::{self, AccessError, Use};
use crate::oidc::{self, OAuthError};
use crate::paths::ProviderEndpoint;
use crate::sessions::{RecordKind, token_hash};

fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty())
}

/// Answers authorize, token or userinfo for a provider. `body` is `None` when it was too large.
#[allow(clippy::too_many_arguments)]
pub fn handle(
    state: &AppState,
    dir: &Directory,
    provider: &ResolvedProvider,
    endpoint: ProviderEndpoint,
    method: &Method,
    query: &str,
    headers: &HeaderMap,
    body: Option<&[u8]>,
    ip: IpAddr,
) -> Response {
    let result = match body {
        None => Err(OAuthError::InvalidRequest("the request body is too large".into())),
        Some(body) => match endpoint {
            ProviderEndpoint::Authorize => authorize(state, dir, provider, method, query, headers, body, ip),
            ProviderEndpoint::Token => token(state, dir, provider, method, headers, body),
            _ => userinfo(state, dir, provider, method, headers, body),
        },
    };
    match result {
        Ok(r) => no_store(r),
        Err(e) => {
            let mut r = e.http();
            if body.is_none() {
                *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            }
            r
        }
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/json"))
}

/// Request parameters: the query of a GET; the form body of a POST, or, where `allow_json`
/// (authorize, as OpenBao's JSON API takes it), a JSON object of strings.
fn params_of(
    method: &Method,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
    allow_json: bool,
) -> Result<std::collections::HashMap<String, String>, OAuthError> {
    if *method != Method::POST {
        return oidc::parse_params(query.as_bytes());
    }
    if is_form(headers) {
        return oidc::parse_params(body);
    }
    if allow_json && is_json(headers) {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|_| OAuthError::InvalidRequest("the body is not valid JSON".into()))?;
        let object =
            value.as_object().ok_or_else(|| OAuthError::InvalidRequest("the body must be a JSON object".into()))?;
        return object
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => Ok((k.clone(), s.clone())),
                serde_json::Value::Number(n) => Ok((k.clone(), n.to_string())),
                _ => Err(OAuthError::InvalidRequest(format!("the parameter {k} must be a string"))),
            })
            .collect();
    }
    Err(OAuthError::InvalidRequest("the body must be application/x-www-form-urlencoded".into()))
}

#[allow(clippy::too_many_arguments)]
fn authorize(
    state: &AppState,
    dir: &Directory,
    provider: &ResolvedProvider,
    method: &Method,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
    ip: IpAddr,
) -> Result<Response, OAuthError> {
    if *method != Method::GET && *method != Method::POST {
        return Err(OAuthError::MethodNotAllowed("GET, POST"));
    }
    let token = super::identity_api::presented_token(headers, None).ok_or_else(|| {
        OAuthError::InvalidToken("an identity access token is required (Authorization: Bearer or X-Vault-Token)".into())
    })?;
    let params = params_of(method, query, headers, body, true)?;
    let now = unix_now();
    let session =
        login::authenticate(dir, state.tokens.as_ref(), &token, ip, now, Use::Count).map_err(|e| match e {
            AccessError::IpNotAllowed => OAuthError::AccessDenied(e.to_string()),
            other => OAuthError::InvalidToken(other.to_string()),
        })?;
    let grant = oidc::authorize::decide(dir, provider, &params, &session, now, state.code_ttl)?;
    let code = crate::sessions::new_token().map_err(|_| OAuthError::ServerError("no randomness".into()))?;
    if let Err(e) = state.tokens.insert_code(token_hash(&code), grant.code) {
        state.metrics.store_refused(RecordKind::Code);
        return Err(OAuthError::store(RecordKind::Code, e));
    }
    let mut body = json!({"code": code});
    if let Some(s) = grant.state {
        body["state"] = s.into();
    }
    Ok(json_response(StatusCode::OK, body.to_string()))
}

fn token(
    state: &AppState,
    dir: &Directory,
    provider: &ResolvedProvider,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, OAuthError> {
    if *method != Method::POST {
        return Err(OAuthError::MethodNotAllowed("POST"));
    }
    let params = params_of(method, "", headers, body, false)?;
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let auth = oidc::token::client_auth(authorization, &params)?;
    let client = oidc::token::authenticate_client(dir, provider, &auth)?;
    let response = oidc::token::exchange(dir, provider, client, &params, state.tokens.as_ref(), unix_now())
        .inspect_err(|e| {
            if matches!(e, OAuthError::TemporarilyUnavailable(_)) {
                state.metrics.store_refused(RecordKind::Userinfo);
            }
        })?;
    Ok(json_response(StatusCode::OK, serde_json::to_string(&response).unwrap_or_default()))
}

fn userinfo(
    state: &AppState,
    dir: &Directory,
    provider: &ResolvedProvider,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, OAuthError> {
    if *method != Method::GET && *method != Method::POST {
        return Err(OAuthError::MethodNotAllowed("GET, POST"));
    }
    let from_header = bearer(headers);
    let from_body = if *method == Method::POST && is_form(headers) {
        oidc::parse_params(body)?.remove("access_token")
    } else {
        None
    };
    if from_header.is_some() && from_body.is_some() {
        return Err(OAuthError::InvalidRequest("send the access token once (RFC 6750 §2)".into()));
    }
    let token = from_header.map(str::to_owned).or(from_body);
    let claims = oidc::userinfo::claims_for(dir, provider, state.tokens.as_ref(), token.as_deref(), unix_now())?;
    Ok(json_response(StatusCode::OK, serde_json::Value::Object(claims).to_string()))
}

//! The machine-identity endpoints: login, and renewal, revocation and lookup of access tokens.

use std::collections::HashMap;

use serde_json::{Value, json};
use warp::http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::reply::Response;

use super::{AppState, json_response};
use crate::login::{self, AccessError, Use};
use crate::oidc::request::Request;

/// Largest request body accepted by these endpoints.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// An error in Infisical's shape: `{statusCode, error, message}`.
pub fn api_error(status: u16, code: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, json!({"statusCode": status.as_u16(), "error": code, "message": message}).to_string())
}

/// A refused request, turned into a response at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest(pub String);

impl BadRequest {
    pub fn response(&self) -> Response {
        api_error(400, "invalid_request", &self.0)
    }
}

/// A request body, read as JSON or as a form, into string fields.
pub fn parse_fields(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, BadRequest> {
    // A form, unless the body is plainly a JSON object (curl -d sends JSON labelled as a form).
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let looks_like_json = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if form && !looks_like_json {
        return Ok(url::form_urlencoded::parse(body).into_owned().collect());
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|_| BadRequest("the body is not valid JSON (or a form)".into()))?;
    let object = value.as_object().ok_or_else(|| BadRequest("the body must be a JSON object".into()))?;
    Ok(object.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned()))).collect())
}

fn required<'a>(fields: &'a HashMap<String, String>, name: &str) -> Result<&'a str, BadRequest> {
    fields
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| BadRequest(format!("the field {name} is required")))
}

/// `POST /api/v1/auth/oidc-auth/login` with `{identityId, jwt}`.
pub async fn login(state: &AppState, request: &Request<'_>) -> Response {
    let peer = request.peer;
    let fields = match parse_fields(request.headers, request.body) {
        Ok(f) => f,
        Err(e) => {
            state.metrics.login("invalid_request");
            return e.response();
        }
    };
    let (identity_id, jwt) = match (required(&fields, "identityId"), required(&fields, "jwt")) {
        (Ok(i), Ok(j)) => (i, j),
        (Err(e), _) | (_, Err(e)) => {
            state.metrics.login("invalid_request");
            return e.response();
        }
    };
    let Some(dir) = state.directory.load() else {
        state.metrics.login("not_ready");
        return api_error(503, "not_ready", "the directory is not built yet");
    };
    let now = crate::clock::unix_now();
    let ctx = login::LoginContext {
        dir: &dir,
        issuers: &state.issuers,
        tokens: &state.tokens,
        refetch_interval: state.refetch_interval,
    };
    match login::login(&ctx, identity_id, jwt, peer, now).await {
        Ok(resp) => {
            state.metrics.login("success");
            let mut r = json_response(StatusCode::OK, serde_json::to_string(&resp).unwrap_or_default());
            no_store(&mut r);
            r
        }
        Err(e) => {
            // A store refusal is counted by the store itself.
            state.metrics.login(e.code());
            // The identityId is the caller's to choose (up to the body limit): cut it. The log
            // names the check that failed; the caller may see less (LoginError::hidden).
            tracing::info!(identity_id = %login::clip(identity_id), check = e.code(), reason = %e, "login refused");
            api_error(e.status(), e.public_code(), &e.public_message())
        }
    }
}

fn no_store(r: &mut Response) {
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// The access token of a request: `Authorization: Bearer`, OpenBao's `X-Vault-Token`, or (for
/// renew and revoke) an `accessToken` field of the body.
pub fn presented_token(request: &Request<'_>, fields: Option<&HashMap<String, String>>) -> Option<String> {
    let bearer = request.bearer().map(str::to_owned);
    let vault = request.headers.get("x-vault-token").and_then(|v| v.to_str().ok()).map(|t| t.trim().to_owned());
    let field = fields.and_then(|f| f.get("accessToken")).cloned();
    field.or(bearer).or(vault).filter(|t| !t.is_empty())
}

fn access_error(e: &AccessError) -> Response {
    let mut r = api_error(e.status(), e.code(), &e.to_string());
    if e.status() == 401 {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
    }
    r
}

/// Renew (`Use::Renew`), revoke, or look up (`Use::Count`) an access token.
pub async fn token_operation(state: &AppState, op: TokenOp, request: &Request<'_>) -> Response {
    let peer = request.peer;
    let fields = if request.body.is_empty() {
        None
    } else {
        match parse_fields(request.headers, request.body) {
            Ok(f) => Some(f),
            Err(e) => return e.response(),
        }
    };
    let Some(token) = presented_token(request, fields.as_ref()) else {
        return access_error(&AccessError::Missing);
    };
    let Some(dir) = state.directory.load() else {
        return api_error(503, "not_ready", "the directory is not built yet");
    };
    let now = crate::clock::unix_now();
    let mode = match op {
        TokenOp::Renew => Use::Renew,
        TokenOp::Revoke => Use::Peek,
        TokenOp::Lookup => Use::Count,
    };
    let session = match login::authenticate(&dir, &state.tokens, &token, peer, now, mode).await {
        Ok(s) => s,
        Err(e) => return access_error(&e),
    };
    let expires_in = session.record.expires_at(&session.limits) - now;
    let mut r = match op {
        TokenOp::Renew => json_response(
            StatusCode::OK,
            json!({"accessToken": token, "expiresIn": expires_in, "accessTokenMaxTTL": session.limits.max_ttl, "tokenType": "Bearer"})
                .to_string(),
        ),
        TokenOp::Revoke => match state.tokens.revoke(&crate::sessions::token_hash(&token)).await {
            Ok(_) => json_response(StatusCode::OK, json!({"message": "Successfully revoked access token"}).to_string()),
            Err(e) => api_error(503, "temporarily_unavailable", &e.to_string()),
        },
        TokenOp::Lookup => json_response(
            StatusCode::OK,
            json!({
                "identityId": session.identity.id,
                "identityName": session.identity.name,
                "namespace": session.identity.key.namespace,
                "issuedAt": session.record.issued_at,
                "expiresIn": expires_in,
                "accessTokenMaxTTL": session.limits.max_ttl,
                "numUses": session.record.uses,
                "numUsesLimit": session.limits.num_uses_limit,
                "usesLeft": session.record.uses_left(&session.limits),
                "subject": session.record.alias.name,
            })
            .to_string(),
        ),
    };
    no_store(&mut r);
    r
}

/// The token operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenOp {
    Renew,
    Revoke,
    Lookup,
}

//! The HTTP edge of authorize, token and userinfo: parse, call `oidc`, answer.

use std::net::IpAddr;

use serde_json::json;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::reply::Response;

use super::{AppState, json_response};
use crate::clock::unix_now;
use crate::directory::{Directory, ResolvedProvider};
use crate::login::{self, AccessError, Use};
use crate::oidc::request::Request;
use crate::oidc::{self, OAuthError};
use crate::paths::ProviderEndpoint;
use crate::sessions::{RecordKind, token_hash};

fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// Answers one endpoint of a provider (the body was read within its limits; one that broke
/// them was answered before). The one match over every provider endpoint: a new endpoint is
/// a new [`ProviderEndpoint`] variant, routed, listed in discovery and answered here.
pub async fn handle(
    state: &AppState,
    dir: &Directory,
    provider: &ResolvedProvider,
    endpoint: ProviderEndpoint,
    request: &Request<'_>,
) -> Response {
    let result = match endpoint {
        ProviderEndpoint::Discovery => document(request, &provider.discovery_json, 300),
        ProviderEndpoint::Jwks => document(request, &provider.jwks_json, provider.jwks_max_age),
        ProviderEndpoint::Authorize => authorize(state, dir, provider, request).await,
        // A store refusal is counted by the store itself.
        ProviderEndpoint::Token => {
            async {
                let (ctx, params) = client_call(state, dir, provider, request)?;
                let r = oidc::token::respond(ctx, request, &params).await?;
                Ok(json_response(StatusCode::OK, serde_json::to_string(&r).unwrap_or_default()))
            }
            .await
        }
        // RFC 7662: the token's description, or `{"active": false}`.
        ProviderEndpoint::Introspect => {
            async {
                let (ctx, params) = client_call(state, dir, provider, request)?;
                let answer = oidc::introspect::introspect(ctx, request, &params).await?;
                Ok(json_response(StatusCode::OK, answer.to_string()))
            }
            .await
        }
        // RFC 7009: 200 with an empty body whether or not there was anything to revoke.
        ProviderEndpoint::Revoke => {
            async {
                let (ctx, params) = client_call(state, dir, provider, request)?;
                oidc::revoke::revoke(ctx, request, &params).await?;
                Ok(json_response(StatusCode::OK, String::new()))
            }
            .await
        }
        ProviderEndpoint::Userinfo => {
            return match userinfo(state, dir, provider, request).await {
                Ok(claims) => no_store(json_response(StatusCode::OK, serde_json::Value::Object(claims).to_string())),
                Err(e) => e.bearer_http(),
            };
        }
    };
    match (endpoint, result) {
        (ProviderEndpoint::Discovery | ProviderEndpoint::Jwks, Ok(r)) => r,
        (_, Ok(r)) => no_store(r),
        (_, Err(e)) => e.http(),
    }
}

/// A document made with the directory snapshot (discovery, JWKS), cached for `max_age`.
fn document(request: &Request<'_>, json: &str, max_age: u64) -> Result<Response, OAuthError> {
    if *request.method != Method::GET && *request.method != Method::HEAD {
        return Err(OAuthError::MethodNotAllowed("GET, HEAD"));
    }
    let mut r = json_response(StatusCode::OK, json.to_owned());
    if let Ok(v) = HeaderValue::from_str(&format!("max-age={max_age}")) {
        r.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    Ok(r)
}

/// Request parameters (see [`Request::params`]). Public for the fuzz target
/// (`fuzz/fuzz_targets/params.rs`): it reads what anyone on the network sends.
pub fn params_of(
    method: &Method,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
    allow_json: bool,
) -> Result<std::collections::HashMap<String, String>, OAuthError> {
    Request { method, query, headers, body, peer: IpAddr::from([0, 0, 0, 0]) }.params(allow_json)
}

async fn authorize(
    state: &AppState,
    dir: &Directory,
    provider: &ResolvedProvider,
    request: &Request<'_>,
) -> Result<Response, OAuthError> {
    if *request.method != Method::GET && *request.method != Method::POST {
        return Err(OAuthError::MethodNotAllowed("GET, POST"));
    }
    let params = request.params(true)?;
    let code = match issue_code(state, dir, provider, request, &params).await {
        Ok(code) => code,
        Err(e) => return Ok(e.http_with_state(params.get("state").map(String::as_str))),
    };
    let mut body = json!({"code": code});
    if let Some(s) = params.get("state") {
        body["state"] = s.as_str().into();
    }
    Ok(json_response(StatusCode::OK, body.to_string()))
}

/// Checks the identity access token and the request, and stores the code it grants.
async fn issue_code(
    state: &AppState,
    dir: &Directory,
    provider: &ResolvedProvider,
    request: &Request<'_>,
    params: &std::collections::HashMap<String, String>,
) -> Result<String, OAuthError> {
    let token = super::identity_api::presented_token(request, None).ok_or_else(|| {
        OAuthError::NoToken("an identity access token is required (Authorization: Bearer or X-Vault-Token)".into())
    })?;
    let now = unix_now();
    let session =
        login::authenticate(dir, &state.tokens, &token, request.peer, now, Use::Count).await.map_err(|e| match e {
            AccessError::IpNotAllowed => OAuthError::AccessDenied(e.to_string()),
            AccessError::Token(crate::sessions::TokenError::Unavailable) => {
                OAuthError::unavailable(&crate::sessions::StoreError::Unavailable)
            }
            other => OAuthError::InvalidToken(other.to_string()),
        })?;
    let record = oidc::authorize::decide(dir, provider, params, &session, now, state.code_ttl)?;
    let code = crate::sessions::new_token().map_err(|_| OAuthError::ServerError("no randomness".into()))?;
    match state.tokens.insert_code(token_hash(&code), record).await {
        Ok(()) => {}
        Err(e @ crate::sessions::StoreError::Unavailable) => return Err(OAuthError::unavailable(&e)),
        Err(e) => return Err(OAuthError::store(RecordKind::Code, e)),
    }
    Ok(code)
}

/// What the token, introspection and revocation endpoints work with: the form a client
/// POSTs, and the context now.
fn client_call<'a>(
    state: &'a AppState,
    dir: &'a Directory,
    provider: &'a ResolvedProvider,
    request: &Request<'_>,
) -> Result<(oidc::token::Context<'a>, std::collections::HashMap<String, String>), OAuthError> {
    let params = request.form()?;
    let ctx = oidc::token::Context {
        dir,
        provider,
        store: &state.tokens,
        now: unix_now(),
        issuers: &state.issuers,
        refetch_interval: state.refetch_interval,
        max_assertion_lifetime: state.max_assertion_lifetime,
    };
    Ok((ctx, params))
}

/// The userinfo claims; its errors are answered with RFC 6750 §3's Bearer challenges
/// ([`OAuthError::bearer_http`]).
async fn userinfo(
    state: &AppState,
    dir: &Directory,
    provider: &ResolvedProvider,
    request: &Request<'_>,
) -> Result<serde_json::Map<String, serde_json::Value>, OAuthError> {
    if *request.method != Method::GET && *request.method != Method::POST {
        return Err(OAuthError::MethodNotAllowed("GET, POST"));
    }
    let from_header = request.bearer();
    let from_body = if *request.method == Method::POST && request.is_form() {
        oidc::parse_params(request.body)?.remove("access_token")
    } else {
        None
    };
    if from_header.is_some() && from_body.is_some() {
        return Err(OAuthError::InvalidRequest("send the access token once (RFC 6750 §2)".into()));
    }
    let token = from_header.map(str::to_owned).or(from_body);
    oidc::userinfo::claims_for(dir, provider, &state.tokens, token.as_deref(), unix_now()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(ct) = content_type {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        }
        h
    }

    /// A cheap stand-in for the fuzz target (`fuzz/fuzz_targets/params.rs`) inside the normal
    /// test run: thousands of deterministic mutations of real requests must parse or fail, never
    /// panic, and a parsed form survives being encoded and parsed again.
    #[test]
    fn mutated_parameters_never_panic_and_forms_round_trip() {
        let seeds: [&[u8]; 4] = [
            b"response_type=code&client_id=abc&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&scope=openid+groups",
            b"grant_type=authorization_code&code=a%20b&code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            br#"{"client_id": "abc", "scope": "openid", "max_age": 30, "state": "\u00e9"}"#,
            br#"{"identityId": "id", "jwt": "a.b.c", "n": [1, {"x": null}]}"#,
        ];
        let alphabet = b"=&%+{}[]\":,. \\a0F\x00\xff\xc3\xa9";
        let types = [
            Some("application/x-www-form-urlencoded"),
            Some("application/json; charset=utf-8"),
            Some("text/plain"),
            None,
        ];
        let mut mutator = crate::mutation::Mutator::default();
        let (mut forms, mut jsons) = (0, 0);
        for i in 0..20_000 {
            let mut bytes = seeds[i % seeds.len()].to_vec();
            mutator.edit(&mut bytes, alphabet);
            let method = if mutator.below(2) == 0 { Method::GET } else { Method::POST };
            let h = headers(types[mutator.below(types.len())]);
            let query = String::from_utf8_lossy(&bytes).into_owned();
            let _ = params_of(&method, &query, &h, &bytes, mutator.below(2) == 0);
            let _ = super::super::identity_api::parse_fields(&h, &bytes);
            if let Ok(p) = oidc::parse_params(&bytes) {
                assert!(p.keys().all(|k| !k.is_empty()));
                let encoded = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&p).finish();
                assert_eq!(
                    oidc::parse_params(encoded.as_bytes()).as_ref(),
                    Ok(&p),
                    "{:?}",
                    String::from_utf8_lossy(&bytes)
                );
                forms += 1;
            }
            if oidc::request::json_params(&bytes).is_ok() {
                jsons += 1;
            }
        }
        // The mutations stay close enough to the seeds to exercise the success paths too.
        assert!(forms > 1_000 && jsons > 500, "forms {forms}, json {jsons}");
    }
}

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

/// Answers authorize, token or userinfo for a provider (the body was read within its limits;
/// one that broke them was answered before).
#[allow(clippy::too_many_arguments)]
pub async fn handle(
    state: &AppState,
    dir: &Directory,
    provider: &ResolvedProvider,
    endpoint: ProviderEndpoint,
    method: &Method,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
    ip: IpAddr,
) -> Response {
    let result = match endpoint {
        ProviderEndpoint::Authorize => authorize(state, dir, provider, method, query, headers, body, ip).await,
        ProviderEndpoint::Token => token(state, dir, provider, method, headers, body).await,
        _ => Ok(match userinfo(state, dir, provider, method, headers, body).await {
            Ok(claims) => json_response(StatusCode::OK, serde_json::Value::Object(claims).to_string()),
            Err(e) => e.bearer_http(),
        }),
    };
    match result {
        Ok(r) => no_store(r),
        Err(e) => e.http(),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/json"))
}

/// Request parameters: the query of a GET; the form body of a POST, or, where `allow_json`
/// (authorize, as OpenBao's JSON API takes it), a JSON object of strings. Public for the fuzz
/// target (`fuzz/fuzz_targets/params.rs`): it reads what anyone on the network sends.
pub fn params_of(
    method: &Method,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
    allow_json: bool,
) -> Result<std::collections::HashMap<String, String>, OAuthError> {
    let params = if *method != Method::POST {
        oidc::parse_params(query.as_bytes())?
    } else if is_form(headers) {
        oidc::parse_params(body)?
    } else if allow_json && is_json(headers) {
        json_params(body)?
    } else {
        return Err(OAuthError::InvalidRequest("the body must be application/x-www-form-urlencoded".into()));
    };
    oidc::check_param_sizes(&params)?;
    Ok(params)
}

/// A JSON object of strings (numbers are taken as their text) as parameters. As in a form
/// (RFC 6749 §3.1), a parameter given twice is refused, where `serde_json::Value` would silently
/// keep the last one; members with an empty name or value are ignored as a form's are.
fn json_params(body: &[u8]) -> Result<std::collections::HashMap<String, String>, OAuthError> {
    let members: Members = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => OAuthError::InvalidRequest("the body must be a JSON object".into()),
        _ => OAuthError::InvalidRequest("the body is not valid JSON".into()),
    })?;
    let mut out = std::collections::HashMap::new();
    for (k, v) in members.0 {
        let v = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            _ => return Err(OAuthError::InvalidRequest(format!("the parameter {k} must be a string"))),
        };
        if k.is_empty() || v.is_empty() {
            continue;
        }
        if out.contains_key(&k) {
            return Err(OAuthError::InvalidRequest(format!("the parameter {k} is repeated")));
        }
        out.insert(k, v);
    }
    Ok(out)
}

/// A JSON object's members in order, repeated names kept.
struct Members(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut out = Vec::new();
                while let Some(member) = map.next_entry::<String, serde_json::Value>()? {
                    out.push(member);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

#[allow(clippy::too_many_arguments)]
async fn authorize(
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
    let params = params_of(method, query, headers, body, true)?;
    let code = match issue_code(state, dir, provider, headers, &params, ip).await {
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
    headers: &HeaderMap,
    params: &std::collections::HashMap<String, String>,
    ip: IpAddr,
) -> Result<String, OAuthError> {
    let token = super::identity_api::presented_token(headers, None).ok_or_else(|| {
        OAuthError::NoToken("an identity access token is required (Authorization: Bearer or X-Vault-Token)".into())
    })?;
    let now = unix_now();
    let session = login::authenticate(dir, &state.tokens, &token, ip, now, Use::Count).await.map_err(|e| match e {
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
        // A ceiling or quota (counted by the store).
        Err(e) => return Err(OAuthError::store(RecordKind::Code, e)),
    }
    Ok(code)
}

async fn token(
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
    // A store refusal is counted by the store itself.
    let response = oidc::token::exchange(dir, provider, client, &params, &state.tokens, unix_now()).await?;
    Ok(json_response(StatusCode::OK, serde_json::to_string(&response).unwrap_or_default()))
}

/// The userinfo claims; its errors are answered with RFC 6750 §3's Bearer challenges
/// ([`OAuthError::bearer_http`]).
async fn userinfo(
    state: &AppState,
    dir: &Directory,
    provider: &ResolvedProvider,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<serde_json::Map<String, serde_json::Value>, OAuthError> {
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

    #[test]
    fn json_parameters_follow_the_form_rules() {
        let json = headers(Some("application/json"));
        let p = params_of(&Method::POST, "", &json, br#"{"scope": "openid", "max_age": 30, "": "x"}"#, true).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!((p["scope"].as_str(), p["max_age"].as_str()), ("openid", "30"));
        let repeated = params_of(&Method::POST, "", &json, br#"{"scope": "openid", "scope": "evil"}"#, true);
        assert_eq!(repeated, Err(OAuthError::InvalidRequest("the parameter scope is repeated".into())));
        for (body, why) in [(&b"[1]"[..], "must be a JSON object"), (b"{\"a\":", "not valid JSON"), (b"7", "object")] {
            let err = params_of(&Method::POST, "", &json, body, true).unwrap_err();
            assert!(err.description().contains(why), "{err:?}");
        }
        assert!(params_of(&Method::POST, "", &json, br#"{"a": {"b": "c"}}"#, true).is_err());
        assert!(params_of(&Method::POST, "", &json, br#"{"a": "b"}"#, false).is_err(), "JSON only where allowed");
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
            if json_params(&bytes).is_ok() {
                jsons += 1;
            }
        }
        // The mutations stay close enough to the seeds to exercise the success paths too.
        assert!(forms > 1_000 && jsons > 500, "forms {forms}, json {jsons}");
    }
}

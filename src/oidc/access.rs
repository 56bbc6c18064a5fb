//! A presented access token, resolved to its live record: an opaque handle, or an RFC 9068
//! JWT whose `jti` is the handle. Userinfo and introspection ask here, so both honour the
//! same tokens: a JWT is taken only with `typ: at+jwt` (an ID token is never an access
//! token, RFC 9068 §4), only with a valid signature of its client's key, and only while its
//! record lives (so a revoked JWT reads inactive however long its `exp`).

use base64::Engine;
use serde_json::Value;

use crate::directory::Directory;
use crate::sessions::{AccessTokenView, SessionStore, StoreError};

/// The JWT's header and claims, when `token` is shaped as one (not verified).
fn jwt_parts(token: &str) -> Option<(Value, Value)> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    let decode = |s: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    };
    Some((decode(h)?, decode(p)?))
}

/// Whether a JWT header's `typ` names an access token (RFC 9068 §2.1: `at+jwt`, or
/// `application/at+jwt`, compared without case).
fn is_access_typ(header: &Value) -> bool {
    header.get("typ").and_then(Value::as_str).is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t == "at+jwt" || t == "application/at+jwt"
    })
}

/// The handle a presented token stands for, and whether it came as a JWT. `None` for a JWT
/// that is not an access token.
pub fn handle_of(token: &str) -> Option<(String, Option<Value>)> {
    match jwt_parts(token) {
        None => Some((token.to_owned(), None)),
        Some((header, claims)) if is_access_typ(&header) => {
            let jti = claims.get("jti").and_then(Value::as_str)?.to_owned();
            Some((jti, Some(header)))
        }
        Some(_) => None,
    }
}

/// The live record of an access token, or `None` when it is unknown, expired, revoked, or a
/// JWT that does not verify. The caller checks the provider.
pub async fn resolve(
    dir: &Directory,
    store: &SessionStore,
    token: &str,
    now: i64,
) -> Result<Option<AccessTokenView>, StoreError> {
    let Some((handle, jwt_header)) = handle_of(token) else { return Ok(None) };
    let Some(view) = store.access_token(&handle, now).await? else { return Ok(None) };
    // A JWT's handle is no opaque token, and an opaque one is no JWT.
    if view.jwt != jwt_header.is_some() {
        return Ok(None);
    }
    if let Some(header) = jwt_header
        && !signed_by_client(dir, &view, token, &header)
    {
        return Ok(None);
    }
    Ok(Some(view))
}

/// Whether a JWT access token carries a valid signature of a published key of its client.
fn signed_by_client(dir: &Directory, view: &AccessTokenView, token: &str, header: &Value) -> bool {
    let grant = &view.grant;
    let Some(client) = dir.namespace(grant.namespace()).and_then(|v| v.clients.get(grant.client_id())) else {
        return false;
    };
    let kid = header.get("kid").and_then(Value::as_str).unwrap_or_default();
    client.key.verifier(kid).is_some_and(|key| key.verify(token).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(header: &str, claims: &str) -> String {
        let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", e(header), e(claims))
    }

    #[test]
    fn only_access_token_jwts_name_a_handle() {
        assert_eq!(handle_of("opaque.abc").map(|h| h.0), Some("opaque.abc".into()));
        let at = jwt(r#"{"alg":"ES256","typ":"at+jwt"}"#, r#"{"jti":"h.g"}"#);
        assert_eq!(handle_of(&at).map(|h| h.0), Some("h.g".into()));
        let media = jwt(r#"{"alg":"ES256","typ":"application/AT+JWT"}"#, r#"{"jti":"h.g"}"#);
        assert!(handle_of(&media).is_some());
        let id_token = jwt(r#"{"alg":"ES256","typ":"JWT"}"#, r#"{"jti":"h.g"}"#);
        assert_eq!(handle_of(&id_token), None, "an ID token is never an access token");
        let no_jti = jwt(r#"{"alg":"ES256","typ":"at+jwt"}"#, r#"{}"#);
        assert_eq!(handle_of(&no_jti), None);
    }
}

//! One error enum for the protocol endpoints: its text is the RFC 6749 / RFC 6750 / OpenID
//! Connect error code sent on the wire, and `http()` maps it to the status and headers in one
//! place. Descriptions never carry secrets or tokens.

use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::{Reply, Response};

/// The description of a 503 for a shared store that did not answer.
const STORE_UNAVAILABLE: &str = "the session store is unavailable; retry shortly";

/// A protocol error with a human description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    #[error("invalid_request")]
    InvalidRequest(String),
    #[error("invalid_client")]
    InvalidClient(String),
    #[error("invalid_grant")]
    InvalidGrant(String),
    #[error("unauthorized_client")]
    UnauthorizedClient(String),
    #[error("unsupported_grant_type")]
    UnsupportedGrantType(String),
    #[error("unsupported_response_type")]
    UnsupportedResponseType(String),
    #[error("invalid_scope")]
    InvalidScope(String),
    /// RFC 8707 §2: a `resource` (or `audience`) the client may not have a token for.
    #[error("invalid_target")]
    InvalidTarget(String),
    /// RFC 6750 §3.1: the token is valid but does not carry what the resource needs.
    #[error("insufficient_scope")]
    InsufficientScope(String),
    #[error("access_denied")]
    AccessDenied(String),
    #[error("login_required")]
    LoginRequired(String),
    #[error("request_not_supported")]
    RequestNotSupported(String),
    #[error("request_uri_not_supported")]
    RequestUriNotSupported(String),
    /// RFC 6750: an expired, revoked or unknown bearer token.
    #[error("invalid_token")]
    InvalidToken(String),
    /// RFC 6750 §3.1: no bearer token at all. Answered 401 with a `Bearer` challenge that
    /// names no error code ("the resource server SHOULD NOT include an error code").
    #[error("invalid_token")]
    NoToken(String),
    #[error("not_found")]
    NotFound(String),
    #[error("method_not_allowed")]
    MethodNotAllowed(&'static str),
    #[error("server_error")]
    ServerError(String),
    /// RFC 6749 §4.1.2.1: the server cannot take the request now (its session store is full
    /// or unreachable); the caller may retry.
    #[error("temporarily_unavailable")]
    TemporarilyUnavailable(String),
    /// The session store refused to keep a record (a ceiling, or the tenant's quota):
    /// `temporarily_unavailable` on the wire, counted by kind and reason.
    #[error("temporarily_unavailable")]
    StoreRefused { kind: crate::sessions::RecordKind, reason: &'static str, description: String },
}

impl OAuthError {
    pub fn description(&self) -> &str {
        match self {
            Self::InvalidRequest(d)
            | Self::InvalidClient(d)
            | Self::InvalidGrant(d)
            | Self::UnauthorizedClient(d)
            | Self::UnsupportedGrantType(d)
            | Self::UnsupportedResponseType(d)
            | Self::InvalidScope(d)
            | Self::InvalidTarget(d)
            | Self::InsufficientScope(d)
            | Self::AccessDenied(d)
            | Self::LoginRequired(d)
            | Self::RequestNotSupported(d)
            | Self::RequestUriNotSupported(d)
            | Self::InvalidToken(d)
            | Self::NoToken(d)
            | Self::NotFound(d)
            | Self::ServerError(d)
            | Self::TemporarilyUnavailable(d)
            | Self::StoreRefused { description: d, .. } => d,
            Self::MethodNotAllowed(allow) => allow,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidClient(_) | Self::InvalidToken(_) | Self::NoToken(_) => StatusCode::UNAUTHORIZED,
            Self::AccessDenied(_) | Self::InsufficientScope(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::ServerError(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::TemporarilyUnavailable(_) | Self::StoreRefused { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// A store refusal as the protocol reports it (logged once here, with the record kind).
    pub fn store(kind: crate::sessions::RecordKind, e: crate::sessions::StoreError) -> Self {
        tracing::warn!(record = kind.label(), error = %e, "session store refused a record");
        Self::StoreRefused { kind, reason: e.reason(), description: e.to_string() }
    }

    /// A shared session store that could not answer: 503, nothing issued or accepted.
    pub fn unavailable(e: &crate::sessions::StoreError) -> Self {
        tracing::warn!(error = %e, "session store unavailable");
        Self::TemporarilyUnavailable(STORE_UNAVAILABLE.into())
    }

    /// The JSON error response, with `WWW-Authenticate` where the RFCs ask for it.
    pub fn http(&self) -> Response {
        self.response(None, false)
    }

    /// The error of an authorization request: its `state` comes back with it (RFC 6749
    /// §4.1.2.1: "REQUIRED if a state parameter was present in the client authorization
    /// request").
    pub fn http_with_state(&self, state: Option<&str>) -> Response {
        self.response(state, false)
    }

    /// The error of a resource a bearer token opens (userinfo): a request refused as
    /// malformed carries a `Bearer error="invalid_request"` challenge too (RFC 6750 §3).
    pub fn bearer_http(&self) -> Response {
        self.response(None, true)
    }

    fn response(&self, state: Option<&str>, bearer_resource: bool) -> Response {
        let mut body = serde_json::json!({"error": self.to_string(), "error_description": self.description()});
        if let Some(state) = state {
            body["state"] = state.into();
        }
        let mut r = body.to_string().into_response();
        *r.status_mut() = self.status();
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        let challenge = match self {
            Self::InvalidClient(_) => Some("Basic realm=\"oidc-operator\""),
            Self::InvalidToken(_) => Some("Bearer error=\"invalid_token\""),
            Self::InsufficientScope(_) => Some("Bearer error=\"insufficient_scope\""),
            Self::NoToken(_) => Some("Bearer realm=\"oidc-operator\""),
            Self::InvalidRequest(_) if bearer_resource => Some("Bearer error=\"invalid_request\""),
            Self::MethodNotAllowed(allow) => {
                h.insert(header::ALLOW, HeaderValue::from_static(allow));
                None
            }
            _ => None,
        };
        if let Some(challenge) = challenge {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_codes_and_statuses() {
        let e = OAuthError::InvalidClient("bad secret".into());
        assert_eq!(e.to_string(), "invalid_client");
        let r = e.http();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"oidc-operator\"");
        let r = OAuthError::InvalidToken("expired".into()).http();
        assert_eq!(r.headers()["www-authenticate"], "Bearer error=\"invalid_token\"");
        let r = OAuthError::NoToken("none".into()).http();
        assert_eq!(
            (r.status().as_u16(), r.headers()["www-authenticate"].to_str().unwrap()),
            (401, "Bearer realm=\"oidc-operator\"")
        );
        let r = OAuthError::InvalidRequest("twice".into()).bearer_http();
        assert_eq!(r.headers()["www-authenticate"], "Bearer error=\"invalid_request\"");
        assert!(!OAuthError::InvalidRequest("x".into()).http().headers().contains_key("www-authenticate"));
        assert_eq!(OAuthError::InvalidGrant("x".into()).status(), 400);
        assert_eq!(OAuthError::RequestNotSupported("x".into()).to_string(), "request_not_supported");
    }
}

//! Client authentication at the token, introspection and revocation endpoints (RFC 6749
//! §2.3, OpenID Connect Core §9). The methods are [`ClientAuthMethod`]: the same enum the
//! client spec takes and discovery lists, so the three cannot disagree.

use std::collections::HashMap;

use super::OAuthError;
use super::request::Request;
use crate::api::{ClientAuthMethod, ClientType};
use crate::directory::{Directory, ResolvedClient, ResolvedProvider};

/// The credentials a request presents, and by which method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presented {
    pub client_id: String,
    pub method: ClientAuthMethod,
    /// The secret of `client_secret_basic` / `client_secret_post`.
    pub secret: Option<String>,
}

/// Reads the client's credentials: `Authorization: Basic`, `client_secret` in the form, or
/// only `client_id` (`none`). Two methods at once are refused (RFC 6749 §2.3: "MUST NOT use
/// more than one authentication method in each request").
pub fn presented(request: &Request<'_>, params: &HashMap<String, String>) -> Result<Presented, OAuthError> {
    match request.basic()? {
        Some(basic) => {
            if params.contains_key("client_secret") {
                return Err(OAuthError::InvalidRequest("use one client authentication method, not two".into()));
            }
            if params.get("client_id").is_some_and(|p| *p != basic.client_id) {
                return Err(OAuthError::InvalidRequest("client_id differs from the Basic credentials".into()));
            }
            Ok(Presented {
                client_id: basic.client_id,
                method: ClientAuthMethod::ClientSecretBasic,
                secret: Some(basic.secret),
            })
        }
        None => {
            let client_id = super::required(params, "client_id")
                .map_err(|_| OAuthError::InvalidClient("no client authentication".into()))?
                .to_owned();
            Ok(match params.get("client_secret") {
                Some(secret) => {
                    Presented { client_id, method: ClientAuthMethod::ClientSecretPost, secret: Some(secret.clone()) }
                }
                None => Presented { client_id, method: ClientAuthMethod::None, secret: None },
            })
        }
    }
}

/// Authenticates the client of `provider`: the method must be one the client may use, a
/// secret is compared in constant time, and the provider must serve the client. Every
/// failure reads the same to the caller (`invalid_client`), so it learns nothing of which
/// clients exist.
pub fn authenticate<'a>(
    dir: &'a Directory,
    provider: &ResolvedProvider,
    presented: &Presented,
) -> Result<&'a ResolvedClient, OAuthError> {
    let failed = || OAuthError::InvalidClient("client authentication failed".into());
    let client =
        dir.namespace(&provider.namespace).and_then(|v| v.clients.get(&presented.client_id)).ok_or_else(failed)?;
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
        return Err(OAuthError::InvalidClient(format!(
            "this client authenticates with {}, not {}",
            client.auth_methods.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(" or "),
            presented.method.as_str()
        )));
    }
    if !provider.clients.contains(&client.name) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use warp::http::{HeaderMap, HeaderValue, Method, header};

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

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
        assert!(matches!(with(None, &[]), Err(OAuthError::InvalidClient(_))));
    }
}

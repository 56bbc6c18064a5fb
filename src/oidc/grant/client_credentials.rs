//! The client credentials grant (RFC 6749 §4.4): a confidential client gets an access token
//! for itself: `sub` is its `client_id`, no ID token, no refresh token (§4.4.3). What it may
//! ask for is bounded by its provider (scopes, `scopesSupported`) and by its own spec (the
//! `resource` of RFC 8707 or `audience`, `spec.audiences`).

use std::collections::HashMap;

use crate::directory::{ResolvedClient, ResolvedProvider};
use crate::oidc::OAuthError;

/// The grant's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCredentialsRequest {
    /// Requested scopes, in order, each once.
    pub scopes: Vec<String>,
    /// `resource` (RFC 8707 §2) and `audience` values, in that order.
    pub targets: Vec<String>,
}

impl ClientCredentialsRequest {
    pub fn parse(params: &HashMap<String, String>) -> Result<Self, OAuthError> {
        let mut scopes: Vec<String> = Vec::new();
        for s in params.get("scope").map(String::as_str).unwrap_or_default().split(' ').filter(|s| !s.is_empty()) {
            if !scopes.iter().any(|x| x == s) {
                scopes.push(s.to_owned());
            }
        }
        let mut targets: Vec<String> = Vec::new();
        // Each may be given several times (`parse_params` keeps them space-separated).
        for resource in
            params.get("resource").map(String::as_str).unwrap_or_default().split(' ').filter(|r| !r.is_empty())
        {
            // RFC 8707 §2: an absolute URI without a fragment.
            match url::Url::parse(resource) {
                Ok(u) if u.fragment().is_none() => {
                    if !targets.iter().any(|t| t == resource) {
                        targets.push(resource.to_owned());
                    }
                }
                _ => {
                    return Err(OAuthError::InvalidTarget(
                        "resource must be an absolute URI without a fragment (RFC 8707 §2)".into(),
                    ));
                }
            }
        }
        for audience in
            params.get("audience").map(String::as_str).unwrap_or_default().split(' ').filter(|a| !a.is_empty())
        {
            if !targets.iter().any(|t| t == audience) {
                targets.push(audience.to_owned());
            }
        }
        Ok(Self { scopes, targets })
    }
}

/// What the token is issued with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCredentialsGrant {
    pub scopes: Vec<String>,
    /// The token's `aud`: the targets asked for, or the client itself.
    pub audiences: Vec<String>,
}

/// Decides a client credentials request. Pure: the client is authenticated and allowed the
/// grant; scopes must be among the provider's `scopesSupported` (`openid` asks for an ID
/// token, which this grant never issues), targets among the client's `spec.audiences`.
pub fn decide(
    provider: &ResolvedProvider,
    client: &ResolvedClient,
    r: &ClientCredentialsRequest,
) -> Result<ClientCredentialsGrant, OAuthError> {
    if let Some(bad) = r.scopes.iter().find(|s| !provider.scopes.contains(s)) {
        let why = if bad == "openid" {
            "openid asks for an ID token, and client_credentials issues none (there is no end-user)".to_owned()
        } else {
            format!("scope {} is not among the provider's scopesSupported", crate::login::clip(bad))
        };
        return Err(OAuthError::InvalidScope(why));
    }
    if let Some(bad) = r.targets.iter().find(|t| !client.audiences.contains(t)) {
        return Err(OAuthError::InvalidTarget(format!(
            "{} is not among the client's audiences (spec.audiences)",
            crate::login::clip(bad)
        )));
    }
    let audiences = if r.targets.is_empty() { vec![client.client_id.clone()] } else { r.targets.clone() };
    Ok(ClientCredentialsGrant { scopes: r.scopes.clone(), audiences })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::grant::params;

    #[test]
    fn parameters() {
        let r =
            ClientCredentialsRequest::parse(&params(&[("scope", "a  b a"), ("resource", "https://api/x")])).unwrap();
        assert_eq!(r.scopes, ["a", "b"]);
        assert_eq!(r.targets, ["https://api/x"]);
        let r = ClientCredentialsRequest::parse(&params(&[("audience", "billing")])).unwrap();
        assert_eq!(r.targets, ["billing"]);
        let p =
            crate::oidc::parse_params(b"resource=https%3A%2F%2Fa%2F1&resource=https%3A%2F%2Fb%2F2&audience=c").unwrap();
        let r = ClientCredentialsRequest::parse(&p).unwrap();
        assert_eq!(r.targets, ["https://a/1", "https://b/2", "c"], "RFC 8707 §2: several resources");
        assert!(crate::oidc::parse_params(b"scope=a&scope=b").is_err(), "other parameters stay single");
        for bad in ["not a uri", "https://api/x#frag"] {
            let e = ClientCredentialsRequest::parse(&params(&[("resource", bad)])).unwrap_err();
            assert_eq!(e.to_string(), "invalid_target", "{bad}");
        }
    }
}

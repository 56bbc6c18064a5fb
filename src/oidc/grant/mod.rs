//! The grants of the token endpoint, one module each (RFC 6749 §4, §6). A token request is
//! parsed into [`TokenRequest`], tagged by `grant_type`; each grant's module holds its pure
//! decision, and [`super::token`] drives them all the same way: authenticate the client,
//! check it may use the grant, decide, store, mint.

pub mod authorization_code;
pub mod client_credentials;
pub mod refresh_token;
pub mod token_exchange;

use std::collections::HashMap;

use super::OAuthError;
use crate::api::GrantType;

/// A token request, by grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenRequest {
    AuthorizationCode(authorization_code::CodeRequest),
    RefreshToken(refresh_token::RefreshRequest),
    ClientCredentials(client_credentials::ClientCredentialsRequest),
    TokenExchange(token_exchange::ExchangeRequest),
}

impl TokenRequest {
    /// Parses the grant's parameters; an unknown `grant_type` is `unsupported_grant_type`.
    pub fn parse(params: &HashMap<String, String>) -> Result<Self, OAuthError> {
        let name = super::required(params, "grant_type")?;
        let grant = GrantType::parse(name).ok_or_else(|| {
            OAuthError::UnsupportedGrantType(format!(
                "grant_type {} is not supported; supported: {}",
                crate::login::clip(name),
                supported()
            ))
        })?;
        match grant {
            GrantType::AuthorizationCode => {
                authorization_code::CodeRequest::parse(params).map(TokenRequest::AuthorizationCode)
            }
            GrantType::RefreshToken => refresh_token::RefreshRequest::parse(params).map(TokenRequest::RefreshToken),
            GrantType::ClientCredentials => {
                client_credentials::ClientCredentialsRequest::parse(params).map(TokenRequest::ClientCredentials)
            }
            GrantType::TokenExchange => token_exchange::ExchangeRequest::parse(params).map(TokenRequest::TokenExchange),
        }
    }

    /// The grant it asks for.
    pub fn grant(&self) -> GrantType {
        match self {
            Self::AuthorizationCode(_) => GrantType::AuthorizationCode,
            Self::RefreshToken(_) => GrantType::RefreshToken,
            Self::ClientCredentials(_) => GrantType::ClientCredentials,
            Self::TokenExchange(_) => GrantType::TokenExchange,
        }
    }
}

/// What a grant issues for an entity (a refresh, a token exchange).
#[derive(Debug)]
pub struct EntityGrant {
    /// The granted scopes (`openid` first when an ID token is issued).
    pub scopes: Vec<String>,
    /// The entity id (`sub`).
    pub subject: String,
    /// The granted scopes' claims, as they are now (OpenID Connect Core §12.2 on refresh).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// A request's parameters from `(name, value)` pairs, for the parsers' tests.
#[cfg(test)]
pub(crate) fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The grants this server implements, as discovery lists them.
pub const SUPPORTED: [GrantType; 4] = GrantType::ALL;

fn supported() -> String {
    SUPPORTED.iter().map(|g| g.as_str()).collect::<Vec<_>>().join(", ")
}

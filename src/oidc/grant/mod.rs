//! The grants of the token endpoint, one module each (RFC 6749 §4, §6). A token request is
//! parsed into [`TokenRequest`], tagged by `grant_type`; each grant's module holds its pure
//! decision, and [`super::token`] drives them all the same way: authenticate the client,
//! check it may use the grant, decide, store, mint.

pub mod authorization_code;

use std::collections::HashMap;

use super::OAuthError;
use crate::api::GrantType;

/// A token request, by grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenRequest {
    AuthorizationCode(authorization_code::CodeRequest),
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
            other => Err(OAuthError::UnsupportedGrantType(format!(
                "grant_type {} is not supported yet; supported: {}",
                other.as_str(),
                supported()
            ))),
        }
    }

    /// The grant it asks for.
    pub fn grant(&self) -> GrantType {
        match self {
            Self::AuthorizationCode(_) => GrantType::AuthorizationCode,
        }
    }
}

/// The grants this server implements, as discovery lists them.
pub const SUPPORTED: [GrantType; 1] = [GrantType::AuthorizationCode];

fn supported() -> String {
    SUPPORTED.iter().map(|g| g.as_str()).collect::<Vec<_>>().join(", ")
}

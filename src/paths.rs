//! Every URL path the server answers, in one place: routes and discovery documents are both
//! built from these, so they cannot drift apart.

/// First segment of every OpenBao-shaped path.
pub const API_VERSION: &str = "v1";
/// Segments between the namespace and the provider name: `/v1/{ns}/identity/oidc/provider/{name}`.
pub const PROVIDER_SEGMENTS: [&str; 3] = ["identity", "oidc", "provider"];
/// Discovery document, under a provider's issuer.
pub const DISCOVERY: &str = ".well-known/openid-configuration";
/// JWKS, under a provider's issuer.
pub const JWKS: &str = ".well-known/keys";
/// Authorization endpoint, under a provider's issuer.
pub const AUTHORIZE: &str = "authorize";
/// Token endpoint, under a provider's issuer.
pub const TOKEN: &str = "token";
/// UserInfo endpoint, under a provider's issuer.
pub const USERINFO: &str = "userinfo";
/// Token introspection (RFC 7662), under a provider's issuer.
pub const INTROSPECT: &str = "introspect";
/// Token revocation (RFC 7009), under a provider's issuer.
pub const REVOKE: &str = "revoke";
/// Machine-identity login (Infisical's path).
pub const LOGIN: &str = "/api/v1/auth/oidc-auth/login";
/// Renewal of an identity access token (Infisical's path).
pub const TOKEN_RENEW: &str = "/api/v1/auth/token/renew";
/// Revocation of an identity access token (Infisical's path).
pub const TOKEN_REVOKE: &str = "/api/v1/auth/token/revoke";
/// What an identity access token is: identity, TTL left, uses left.
pub const TOKEN_LOOKUP: &str = "/api/v1/auth/token/lookup";
/// Liveness.
pub const HEALTHZ: &str = "/healthz";
/// Readiness: true once the first directory snapshot is built.
pub const READYZ: &str = "/readyz";
/// Prometheus metrics.
pub const METRICS: &str = "/metrics";

/// The path of a provider's issuer: `/v1/{namespace}/identity/oidc/provider/{name}`.
pub fn provider_path(namespace: &str, name: &str) -> String {
    format!("/{API_VERSION}/{namespace}/{}/{name}", PROVIDER_SEGMENTS.join("/"))
}

/// One endpoint under a provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderEndpoint {
    Discovery,
    Jwks,
    Authorize,
    Token,
    Userinfo,
    Introspect,
    Revoke,
}

impl ProviderEndpoint {
    pub const ALL: [ProviderEndpoint; 7] =
        [Self::Discovery, Self::Jwks, Self::Authorize, Self::Token, Self::Userinfo, Self::Introspect, Self::Revoke];

    /// The path below the issuer.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Discovery => DISCOVERY,
            Self::Jwks => JWKS,
            Self::Authorize => AUTHORIZE,
            Self::Token => TOKEN,
            Self::Userinfo => USERINFO,
            Self::Introspect => INTROSPECT,
            Self::Revoke => REVOKE,
        }
    }

    /// A bounded metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Discovery => "discovery",
            Self::Jwks => "jwks",
            Self::Authorize => "authorize",
            Self::Token => "token",
            Self::Userinfo => "userinfo",
            Self::Introspect => "introspect",
            Self::Revoke => "revoke",
        }
    }

    /// The absolute URL of this endpoint for an issuer.
    pub fn url(self, issuer: &str) -> String {
        format!("{issuer}/{}", self.suffix())
    }
}

/// A request path resolved to a provider endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderRoute<'a> {
    pub namespace: &'a str,
    pub provider: &'a str,
    pub endpoint: ProviderEndpoint,
}

/// Resolves `/v1/{ns}/identity/oidc/provider/{name}/{endpoint}`; `None` for anything else.
pub fn route(path: &str) -> Option<ProviderRoute<'_>> {
    let rest = path.strip_prefix('/')?.strip_prefix(API_VERSION)?.strip_prefix('/')?;
    let (namespace, rest) = rest.split_once('/')?;
    let mut rest = rest;
    for segment in PROVIDER_SEGMENTS {
        rest = rest.strip_prefix(segment)?.strip_prefix('/')?;
    }
    let (provider, suffix) = rest.split_once('/')?;
    if namespace.is_empty() || provider.is_empty() {
        return None;
    }
    let endpoint = ProviderEndpoint::ALL.into_iter().find(|e| e.suffix() == suffix)?;
    Some(ProviderRoute { namespace, provider, endpoint })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_urls_agree() {
        let issuer = format!("https://h:1{}", provider_path("team-a", "main"));
        for e in ProviderEndpoint::ALL {
            let url = e.url(&issuer);
            let path = url.strip_prefix("https://h:1").unwrap();
            assert_eq!(route(path), Some(ProviderRoute { namespace: "team-a", provider: "main", endpoint: e }));
        }
        assert_eq!(provider_path("ns", "p"), "/v1/ns/identity/oidc/provider/p");
    }

    #[test]
    fn unknown_paths_do_not_route() {
        for p in [
            "/v1/ns/identity/oidc/provider/p",
            "/v1/ns/identity/oidc/provider/p/",
            "/v1/ns/identity/oidc/provider/p/.well-known/other",
            "/v1//identity/oidc/provider/p/token",
            "/v2/ns/identity/oidc/provider/p/token",
            "/v1/ns/identity/oidc/key/p/token",
            "/v1/ns/identity/oidc/provider/p/token/extra",
        ] {
            assert_eq!(route(p), None, "{p}");
        }
    }
}

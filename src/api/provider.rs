//! `OidcProvider`: an issuer, OpenBao's `identity/oidc/provider/:name`.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::status::StatusFields;

/// A PKCE `code_challenge_method` (RFC 7636 §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
pub enum PkceMethod {
    S256,
    #[serde(rename = "plain")]
    Plain,
}

impl PkceMethod {
    /// The name on the wire and in discovery.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::S256 => "S256",
            Self::Plain => "plain",
        }
    }
}

fn default_pkce_methods() -> Vec<PkceMethod> {
    vec![PkceMethod::S256]
}

/// An OpenID provider: an issuer with its discovery document, JWKS and authorize / token /
/// userinfo endpoints, serving the clients and scopes it allows.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "oidc-operator.dev",
    version = "v1alpha1",
    kind = "OidcProvider",
    plural = "oidcproviders",
    shortname = "oprov",
    category = "oidc",
    namespaced,
    status = "OidcProviderStatus",
    doc = "An OpenID provider (issuer) serving discovery, JWKS and the protocol endpoints.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Issuer", type_ = "string", json_path = ".status.issuer"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct OidcProviderSpec {
    /// The `scheme://host:port` part of the issuer, when clients reach the operator under another
    /// address than its external URL. The path `/v1/<namespace>/identity/oidc/provider/<name>`
    /// is always appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^/?#\s]+/?$"), length(max = super::limits::MAX_URL_LEN))]
    pub issuer: Option<String>,

    /// Names of the OidcClients (in this namespace) allowed to use this provider; "*" allows all,
    /// empty allows none.
    #[serde(default)]
    #[schemars(length(max = super::limits::MAX_NAMES), inner(length(max = super::limits::MAX_NAME_LEN)))]
    pub allowed_clients: Vec<String>,

    /// Names of the OidcScopes (in this namespace) clients may request; `openid` is always
    /// supported and must not be listed.
    #[serde(default)]
    #[schemars(length(max = super::limits::MAX_SCOPES), inner(length(max = super::limits::MAX_NAME_LEN)))]
    #[x_kube(validation = Rule::new("!self.exists(s, s == 'openid')").message("openid is always supported and is not an OidcScope"))]
    pub scopes_supported: Vec<String>,

    /// PKCE methods accepted at authorize, advertised as `code_challenge_methods_supported`.
    /// `S256` only by default (RFC 9700 §2.1.1); list `plain` as well only for clients that
    /// cannot compute SHA-256. Where `plain` is accepted, a challenge sent without
    /// `code_challenge_method` is plain (RFC 7636 §4.3); elsewhere it is S256.
    #[serde(default = "default_pkce_methods")]
    #[schemars(length(min = 1, max = 2))]
    #[x_kube(validation = Rule::new("self.all(m, self.exists_one(n, n == m))").message("list each PKCE method once"))]
    pub pkce_methods: Vec<PkceMethod>,
}

impl Default for OidcProviderSpec {
    fn default() -> Self {
        Self {
            issuer: None,
            allowed_clients: Vec::new(),
            scopes_supported: Vec::new(),
            pkce_methods: default_pkce_methods(),
        }
    }
}

/// Observed state of an OidcProvider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcProviderStatus {
    #[serde(flatten)]
    pub common: StatusFields,
    /// The issuer (`iss`) of ID tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The discovery document's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_url: Option<String>,
    /// The JWKS URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
}

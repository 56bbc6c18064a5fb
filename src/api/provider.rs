//! `OidcProvider`: an issuer, OpenBao's `identity/oidc/provider/:name`.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::status::StatusFields;

/// An OpenID provider: an issuer with its discovery document, JWKS and authorize / token /
/// userinfo endpoints, serving the clients and scopes it allows.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
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
    printcolumn(name = "Issuer", type_ = "string", json_path = ".status.issuer"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct OidcProviderSpec {
    /// The `scheme://host:port` part of the issuer, when clients reach the operator under another
    /// address than its external URL. The path `/v1/<namespace>/identity/oidc/provider/<name>`
    /// is always appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^/?#\s]+/?$"))]
    pub issuer: Option<String>,

    /// Names of the OidcClients (in this namespace) allowed to use this provider; "*" allows all,
    /// empty allows none.
    #[serde(default)]
    pub allowed_clients: Vec<String>,

    /// Names of the OidcScopes (in this namespace) clients may request; `openid` is always
    /// supported and must not be listed.
    #[serde(default)]
    #[x_kube(validation = Rule::new("!self.exists(s, s == 'openid')").message("openid is always supported and is not an OidcScope"))]
    pub scopes_supported: Vec<String>,
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

//! `OidcClient`: a relying party, OpenBao's `identity/oidc/client/:name`.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Duration, default_24h};
use super::status::StatusFields;

/// Whether a client can keep a secret (RFC 6749 §2.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClientType {
    /// Has a client secret; authenticates with client_secret_basic or client_secret_post.
    #[default]
    Confidential,
    /// Has no secret; authenticates with `none` and must use PKCE.
    Public,
}

/// A relying party. The operator generates its `client_id` (and, for confidential clients,
/// `client_secret`) once and keeps them in a Secret that applications mount.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "oidc-operator.dev",
    version = "v1alpha1",
    kind = "OidcClient",
    plural = "oidcclients",
    shortname = "oclient",
    category = "oidc",
    namespaced,
    status = "OidcClientStatus",
    doc = "An OpenID Connect relying party with generated credentials.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.clientType"),
    printcolumn(name = "Key", type_ = "string", json_path = ".spec.key"),
    printcolumn(name = "Client ID", type_ = "string", json_path = ".status.clientId"),
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct OidcClientSpec {
    /// `confidential` (default; has a secret) or `public` (no secret, PKCE required).
    /// Cannot be changed after creation.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("clientType is immutable"))]
    pub client_type: ClientType,

    /// Name of the OidcKey (in this namespace) that signs this client's ID tokens; the built-in
    /// `default` key when omitted. Cannot be changed after creation.
    #[serde(default = "default_key")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("key is immutable"))]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,

    /// Redirection URIs; the `redirect_uri` of an authorization request must match one exactly
    /// (loopback URIs match with any port, RFC 8252 §7.3).
    #[serde(default)]
    #[schemars(length(max = super::limits::MAX_REDIRECT_URIS), inner(length(max = super::limits::MAX_URL_LEN)))]
    pub redirect_uris: Vec<String>,

    /// Names of OidcAssignments (in this namespace) whose entities may authenticate through this
    /// client; `allow_all` admits every entity. Empty admits none, as in OpenBao.
    #[serde(default)]
    #[schemars(length(max = super::limits::MAX_NAMES), inner(length(max = super::limits::MAX_NAME_LEN)))]
    pub assignments: Vec<String>,

    /// Lifetime of ID tokens ("int or duration"); must not exceed the key's verificationTTL.
    #[serde(default = "default_24h", rename = "idTokenTTL")]
    pub id_token_ttl: Duration,

    /// Lifetime of access tokens for the userinfo endpoint ("int or duration").
    #[serde(default = "default_24h", rename = "accessTokenTTL")]
    pub access_token_ttl: Duration,

    /// A fixed `client_id`; generated (32 base62 characters) when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub client_id: Option<String>,

    /// Name of the Secret that receives the credentials; `<name>-oidc-client` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
}

/// Name of the built-in key.
pub const DEFAULT_KEY: &str = "default";

fn default_key() -> String {
    DEFAULT_KEY.into()
}

/// Observed state of an OidcClient.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcClientStatus {
    #[serde(flatten)]
    pub common: StatusFields,
    /// The client's `client_id` (not a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The Secret holding `client_id` and `client_secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

impl OidcClient {
    /// The Secret (or, standalone, the file stem) that holds this client's credentials.
    pub fn credentials_name(&self) -> String {
        match &self.spec.secret_name {
            Some(n) => n.clone(),
            None => format!("{}-oidc-client", self.metadata.name.as_deref().unwrap_or_default()),
        }
    }
}

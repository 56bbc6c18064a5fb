//! `OidcKey`: a named signing key, OpenBao's `identity/oidc/key/:name`.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Duration, cel_duration, default_24h};
use super::status::StatusFields;
use crate::keys::SigningAlgorithm;

/// A named signing key. The operator keeps its key material (a current key, a next key already
/// published in JWKS, and retired keys still inside their verification window) in a Secret,
/// rotates it every `rotationPeriod` and prunes retired keys after `verificationTTL`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "oidc-operator.dev",
    version = "v1alpha1",
    kind = "OidcKey",
    plural = "oidckeys",
    shortname = "okey",
    category = "oidc",
    namespaced,
    status = "OidcKeyStatus",
    doc = "A named signing key for ID tokens, rotated and pruned by the operator.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Algorithm", type_ = "string", json_path = ".spec.algorithm"),
    printcolumn(name = "Current Kid", type_ = "string", json_path = ".status.currentKid"),
    printcolumn(name = "Next Rotation", type_ = "string", json_path = ".status.nextRotation"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new(rotation_at_least_one_minute()).message("rotationPeriod must be at least 1m").field_path(".rotationPeriod"))]
#[x_kube(validation = Rule::new(verification_at_most_ten_rotations()).message("verificationTTL must not exceed 10 x rotationPeriod").field_path(".verificationTTL"))]
#[serde(rename_all = "camelCase")]
pub struct OidcKeySpec {
    /// Signing algorithm of ID tokens signed with this key: RS256, RS384, RS512 (RSA 2048),
    /// ES256, ES384, ES512 (P-256, P-384, P-521) or EdDSA (Ed25519). Changing it rotates the key.
    #[serde(default)]
    pub algorithm: SigningAlgorithm,

    /// How often the key rotates ("int or duration", at least 1m). The next key is published in
    /// JWKS one full period before it starts signing.
    #[serde(default = "default_24h")]
    pub rotation_period: Duration,

    /// How long a retired key stays in JWKS so tokens it signed still verify ("int or duration",
    /// at most 10 x rotationPeriod). A client's idTokenTTL must not exceed it.
    #[serde(default = "default_24h", rename = "verificationTTL")]
    pub verification_ttl: Duration,

    /// Names of the OidcClients (in this namespace) that may sign with this key; "*" allows all.
    /// Empty allows none, as in OpenBao.
    #[serde(default)]
    #[schemars(length(max = super::limits::MAX_NAMES), inner(length(max = super::limits::MAX_NAME_LEN)))]
    pub allowed_clients: Vec<String>,
}

fn rotation_at_least_one_minute() -> String {
    format!("{} >= duration('1m')", cel_duration("self.rotationPeriod"))
}

fn verification_at_most_ten_rotations() -> String {
    format!(
        "{}.getSeconds() <= 10 * {}.getSeconds()",
        cel_duration("self.verificationTTL"),
        cel_duration("self.rotationPeriod")
    )
}

/// Observed state of an OidcKey.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcKeyStatus {
    #[serde(flatten)]
    pub common: StatusFields,
    /// Key id (`kid`) of the key that signs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_kid: Option<String>,
    /// Key id of the key that signs after the next rotation (already in JWKS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_kid: Option<String>,
    /// When the next rotation falls due (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation: Option<String>,
    /// Every key id this key publishes in JWKS: current, next and retired ones still verifying.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published_kids: Vec<String>,
}

impl OidcKeySpec {
    /// The built-in `default` key (RS256, 24h/24h, all clients), created on first use.
    pub fn builtin_default() -> Self {
        Self {
            algorithm: SigningAlgorithm::RS256,
            rotation_period: default_24h(),
            verification_ttl: default_24h(),
            allowed_clients: vec!["*".into()],
        }
    }
}

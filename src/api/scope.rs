//! `OidcScope`: a named scope with a claims template, OpenBao's `identity/oidc/scope/:name`.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::status::StatusFields;

/// A scope a relying party may request; its template renders the claims it adds to ID tokens
/// and userinfo. The name `openid` is reserved.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "oidc-operator.dev",
    version = "v1alpha1",
    kind = "OidcScope",
    plural = "oidcscopes",
    shortname = "oscope",
    category = "oidc",
    namespaced,
    status = "OidcScopeStatus",
    doc = "A named scope whose JSON template renders ID token claims.",
    validation = Rule::new("self.metadata.name != 'openid'").message("the scope name openid is reserved"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Claims", type_ = "string", json_path = ".status.claims"),
    printcolumn(name = "Description", type_ = "string", json_path = ".spec.description", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct OidcScopeSpec {
    /// JSON template of the claims this scope sets, as escaped JSON or base64-encoded JSON, with
    /// OpenBao's `{{identity.entity...}}` and `{{time.now...}}` variables (docs/templates.md). Reserved claims (iss,
    /// sub, aud, exp, iat, nonce, auth_time, at_hash, c_hash, namespace) cannot be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = super::limits::MAX_TEMPLATE_LEN))]
    pub template: Option<String>,

    /// A description of the scope, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = super::limits::MAX_DESCRIPTION_LEN))]
    pub description: Option<String>,

    /// What a placeholder renders when the entity has no such value (a `metadata` key it
    /// does not declare, an alias metadata key whose claim its JWT lacked): `empty` renders
    /// `""`, as OpenBao does; `error` refuses the authorization request (`access_denied`,
    /// naming the variable), so a relying party never gets a claim that silently lost its
    /// value.
    #[serde(default)]
    pub missing_values: MissingValues,
}

/// How a scope renders a value the entity does not have.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MissingValues {
    /// `""`, as OpenBao does.
    #[default]
    Empty,
    /// The request is refused, naming the missing variable.
    Error,
}

/// Observed state of an OidcScope.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcScopeStatus {
    #[serde(flatten)]
    pub common: StatusFields,
    /// Top-level claim names the template sets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<String>,
}

//! `OidcAssignment`: which entities and groups may authenticate through a client.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::status::StatusFields;

/// Entities and groups admitted through the clients that name this assignment. Entities are
/// IdentityOidcAuth resources of the same namespace; groups are the names they list in
/// `spec.groups`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "oidc-operator.dev",
    version = "v1alpha1",
    kind = "OidcAssignment",
    plural = "oidcassignments",
    shortname = "oassign",
    category = "oidc",
    namespaced,
    status = "OidcAssignmentStatus",
    doc = "Entities and groups admitted through the clients that name this assignment.",
    validation = Rule::new("self.metadata.name != 'allow_all'").message("the assignment name allow_all is built in"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Entities", type_ = "integer", json_path = ".status.resolvedEntities"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct OidcAssignmentSpec {
    /// Entity ids (an IdentityOidcAuth's `status.identityId`).
    #[serde(default)]
    #[schemars(length(max = super::limits::MAX_NAMES), inner(length(max = super::limits::MAX_NAME_LEN)))]
    pub entity_ids: Vec<String>,
    /// Entity names (IdentityOidcAuth resource names in this namespace).
    #[serde(default)]
    #[schemars(length(max = super::limits::MAX_NAMES), inner(length(max = super::limits::MAX_NAME_LEN)))]
    pub entities: Vec<String>,
    /// Group ids (derived from namespace and group name).
    #[serde(default)]
    #[schemars(length(max = super::limits::MAX_NAMES), inner(length(max = super::limits::MAX_NAME_LEN)))]
    pub group_ids: Vec<String>,
    /// Group names, as IdentityOidcAuth resources list them in `spec.groups`.
    #[serde(default)]
    #[schemars(length(max = super::limits::MAX_NAMES), inner(length(max = super::limits::MAX_NAME_LEN)))]
    pub groups: Vec<String>,
}

/// Name of the built-in assignment that admits every entity.
pub const ALLOW_ALL: &str = "allow_all";

/// Observed state of an OidcAssignment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcAssignmentStatus {
    #[serde(flatten)]
    pub common: StatusFields,
    /// How many existing entities this assignment admits (directly or through groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_entities: Option<i64>,
}

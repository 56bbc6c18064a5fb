//! The status fields every kind shares.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde::{Deserialize, Serialize};

/// `conditions` and `observedGeneration`, flattened into each kind's status so that
/// `kubectl wait --for=condition=Ready`, Argo CD and Flux (kstatus) work unchanged.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusFields {
    /// Standard conditions; `Ready` tells whether the object is served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

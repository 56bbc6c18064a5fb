//! `IdentityOidcAuth`: a machine identity that logs in with an external JWT (Infisical's OIDC auth).

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::StatusFields;

/// Infisical's default access token TTL and max TTL: 30 days.
pub const DEFAULT_ACCESS_TOKEN_TTL: i64 = 2_592_000;

/// One trusted address range of access tokens.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrustedIp {
    /// An IP address or CIDR range, IPv4 or IPv6.
    #[schemars(length(min = 1, max = 64))]
    pub ip_address: String,
}

/// A machine identity: a workload proves it with a JWT from an external OpenID issuer (a
/// Kubernetes service-account token, a CI token, another IdP) and receives an access token.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "oidc-operator.dev",
    version = "v1alpha1",
    kind = "IdentityOidcAuth",
    plural = "identityoidcauths",
    shortname = "oidauth",
    category = "oidc",
    namespaced,
    status = "IdentityOidcAuthStatus",
    doc = "A machine identity that logs in with a JWT from an external OpenID issuer.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Identity ID", type_ = "string", json_path = ".status.identityId"),
    printcolumn(name = "Issuer", type_ = "string", json_path = ".spec.boundIssuer"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self.accessTokenTTL <= self.accessTokenMaxTTL").message("accessTokenTTL must not exceed accessTokenMaxTTL").field_path(".accessTokenTTL"))]
#[serde(rename_all = "camelCase")]
pub struct IdentityOidcAuthSpec {
    /// A fixed identity id; the resource's UID (or, standalone, a generated id kept in the state
    /// folder) when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub identity_id: Option<String>,

    /// URL of the external issuer's OpenID configuration, fetched over HTTPS.
    #[schemars(length(min = 1, max = super::limits::MAX_URL_LEN))]
    pub oidc_discovery_url: String,

    /// PEM CA certificate(s) trusted for the external issuer; system roots when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = super::limits::MAX_CA_BUNDLE_LEN))]
    pub ca_cert: Option<String>,

    /// Required `iss` of presented JWTs.
    #[schemars(length(min = 1, max = super::limits::MAX_URL_LEN))]
    pub bound_issuer: String,

    /// Comma-separated audiences; the JWT's `aud` must contain one of them. `"*"` accepts any
    /// audience; empty is refused (`Ready=False AudienceRequired`), unlike Infisical's default.
    #[serde(default)]
    #[schemars(length(max = super::limits::MAX_AUDIENCES_LEN))]
    pub bound_audiences: String,

    /// Claims the JWT must carry: each value is a glob, or a comma-separated list of globs of
    /// which one must match (array claims match if any element does).
    #[serde(default)]
    #[schemars(transform = super::limits::bound_claims)]
    pub bound_claims: BTreeMap<String, String>,

    /// Glob the JWT's `sub` must match. Empty accepts any.
    #[serde(default)]
    #[schemars(length(max = super::limits::MAX_SUBJECT_LEN))]
    pub bound_subject: String,

    /// Address ranges access tokens may be used from.
    #[serde(default = "default_trusted_ips")]
    #[schemars(length(max = super::limits::MAX_TRUSTED_IPS))]
    pub access_token_trusted_ips: Vec<TrustedIp>,

    /// Lifetime of an access token in seconds (0 < x < 315360000).
    #[serde(default = "default_ttl", rename = "accessTokenTTL")]
    #[schemars(range(min = 1, max = 315_359_999))]
    pub access_token_ttl: i64,

    /// Longest lifetime of an access token, renewals included, in seconds (0 < x < 315360000).
    #[serde(default = "default_ttl", rename = "accessTokenMaxTTL")]
    #[schemars(range(min = 1, max = 315_359_999))]
    pub access_token_max_ttl: i64,

    /// How many times an access token may be used; 0 means unlimited.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub access_token_num_uses_limit: i64,

    /// Facts about this entity that scope templates read as `identity.entity.metadata.<key>`.
    #[serde(default)]
    #[schemars(transform = super::limits::metadata)]
    pub metadata: BTreeMap<String, String>,

    /// Group names of this entity, read by templates and matched by assignments.
    #[serde(default)]
    #[schemars(length(max = super::limits::MAX_GROUPS), inner(length(max = super::limits::MAX_NAME_LEN)))]
    pub groups: Vec<String>,

    /// Alias metadata: key -> name of the JWT claim whose value it takes
    /// (`identity.entity.aliases.<mount>.metadata.<key>` in templates).
    #[serde(default)]
    #[schemars(transform = super::limits::claim_mappings)]
    pub claim_mappings: BTreeMap<String, String>,

    /// Also ask the API server (a TokenReview) about every token presented for this identity,
    /// for an issuer that is the cluster's own service-account issuer: a token whose
    /// ServiceAccount or Pod was deleted is then refused at once, though its signature and
    /// `exp` still hold. Needs the operator to run on that cluster (`run`, with RBAC to create
    /// tokenreviews); standalone answers such logins as the issuer being unavailable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub token_review: bool,
}

fn default_ttl() -> i64 {
    DEFAULT_ACCESS_TOKEN_TTL
}

fn default_trusted_ips() -> Vec<TrustedIp> {
    vec![TrustedIp { ip_address: "0.0.0.0/0".into() }, TrustedIp { ip_address: "::/0".into() }]
}

/// Observed state of an IdentityOidcAuth.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityOidcAuthStatus {
    #[serde(flatten)]
    pub common: StatusFields,
    /// The entity id of this identity (the `identityId` of logins, the `sub` of ID tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<String>,
    /// Where the workload logs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_url: Option<String>,
}

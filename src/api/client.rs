//! `OidcClient`: a relying party, OpenBao's `identity/oidc/client/:name`.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Duration, cel_duration, default_24h};
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

/// An OAuth grant a client may use at the token endpoint (RFC 7591 `grant_types`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
pub enum GrantType {
    /// A code from authorize exchanged for tokens (RFC 6749 §4.1).
    #[serde(rename = "authorization_code")]
    AuthorizationCode,
    /// A refresh token exchanged for new tokens (RFC 6749 §6); the code exchanges of a
    /// client with this grant issue refresh tokens.
    #[serde(rename = "refresh_token")]
    RefreshToken,
    /// A confidential client gets an access token for itself (RFC 6749 §4.4).
    #[serde(rename = "client_credentials")]
    ClientCredentials,
    /// A token the caller already holds (an external JWT meeting an IdentityOidcAuth's
    /// bounds, or an identity access token) exchanged for an ID token or an access token
    /// (RFC 8693). Public clients may use it: the subject token is the credential.
    #[serde(rename = "urn:ietf:params:oauth:grant-type:token-exchange")]
    TokenExchange,
}

impl GrantType {
    /// Every grant, in the order discovery lists them.
    pub const ALL: [GrantType; 4] =
        [Self::AuthorizationCode, Self::RefreshToken, Self::ClientCredentials, Self::TokenExchange];

    /// The `grant_type` value on the wire and in discovery.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
            Self::ClientCredentials => "client_credentials",
            Self::TokenExchange => "urn:ietf:params:oauth:grant-type:token-exchange",
        }
    }

    /// The grant a `grant_type` value names, if this server knows it.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == value)
    }
}

/// How a client authenticates at the token, introspection and revocation endpoints (RFC 7591
/// `token_endpoint_auth_method`, OpenID Connect Core §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ClientAuthMethod {
    /// The secret in `Authorization: Basic` (RFC 6749 §2.3.1).
    #[serde(rename = "client_secret_basic")]
    ClientSecretBasic,
    /// The secret as `client_secret` in the form body.
    #[serde(rename = "client_secret_post")]
    ClientSecretPost,
    /// No authentication: a public client (PKCE required).
    #[serde(rename = "none")]
    None,
    /// A JWT signed by one of the client's registered keys, or an external JWT meeting one of
    /// its federated identities' bounds (RFC 7523 §2.2, OpenID Connect Core §9).
    /// `client_secret_jwt` is not offered: it would need the secret kept in plain text.
    #[serde(rename = "private_key_jwt")]
    PrivateKeyJwt,
}

impl ClientAuthMethod {
    /// Every method, in the order discovery lists them.
    pub const ALL: [ClientAuthMethod; 4] =
        [Self::ClientSecretBasic, Self::ClientSecretPost, Self::PrivateKeyJwt, Self::None];

    /// The name on the wire and in discovery.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::None => "none",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// The shape of the access tokens a client receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccessTokenFormat {
    /// 256 random bits, meaningful only to this provider (userinfo, introspection).
    #[default]
    Opaque,
    /// A JWT access token (RFC 9068, `typ: at+jwt`) signed by the client's key, which
    /// resource servers can validate offline against the JWKS.
    Jwt,
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
#[x_kube(validation = Rule::new("!(self.clientType == 'public' && self.grantTypes.exists(g, g == 'client_credentials'))").message("a public client cannot use client_credentials: it has no secret to authenticate with").field_path(".grantTypes"))]
#[x_kube(validation = Rule::new("!has(self.tokenEndpointAuthMethod) || (self.clientType == 'public') == (self.tokenEndpointAuthMethod == 'none')").message("tokenEndpointAuthMethod must be none for a public client and a client_secret method or private_key_jwt for a confidential one").field_path(".tokenEndpointAuthMethod"))]
#[x_kube(validation = Rule::new("!has(self.tokenEndpointAuthMethod) || self.tokenEndpointAuthMethod != 'private_key_jwt' || has(self.jwks) || has(self.jwksUri) || (has(self.federatedIdentities) && size(self.federatedIdentities) > 0)").message("private_key_jwt needs jwks, jwksUri or federatedIdentities").field_path(".tokenEndpointAuthMethod"))]
#[x_kube(validation = Rule::new("(!has(self.jwks) && !has(self.jwksUri) && (!has(self.federatedIdentities) || size(self.federatedIdentities) == 0)) || (has(self.tokenEndpointAuthMethod) && self.tokenEndpointAuthMethod == 'private_key_jwt')").message("jwks, jwksUri and federatedIdentities are for tokenEndpointAuthMethod private_key_jwt").field_path(".tokenEndpointAuthMethod"))]
#[x_kube(validation = Rule::new(refresh_ttl_within_max()).message("refreshTokenTTL must not exceed refreshTokenMaxTTL").field_path(".refreshTokenTTL"))]
#[x_kube(validation = Rule::new("!(has(self.jwks) && has(self.jwksUri))").message("use jwks or jwksUri, not both (RFC 7591 §2)").field_path(".jwksUri"))]
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

    /// The grants this client may use at the token endpoint: `authorization_code` (the
    /// default), `refresh_token` (code exchanges then also issue refresh tokens) and
    /// `client_credentials` (confidential clients only).
    #[serde(default = "default_grant_types")]
    #[schemars(length(min = 1, max = 3))]
    #[x_kube(validation = Rule::new("self.all(g, self.exists_one(h, h == g))").message("list each grant type once"))]
    pub grant_types: Vec<GrantType>,

    /// The one method this client authenticates with. When omitted, a confidential client
    /// may use `client_secret_basic` or `client_secret_post` and a public client `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_method: Option<ClientAuthMethod>,

    /// `opaque` (default) or `jwt` (RFC 9068 JWT access tokens signed by this client's key).
    #[serde(default)]
    pub access_token_format: AccessTokenFormat,

    /// The `resource` (RFC 8707) or `audience` values a client_credentials token may be
    /// issued for; the token's `aud` is the client's own `client_id` when none is asked for.
    #[serde(default)]
    #[schemars(length(max = super::limits::MAX_AUDIENCES), inner(length(min = 1, max = super::limits::MAX_URL_LEN)))]
    pub audiences: Vec<String>,

    /// How long a refresh token stays valid unused ("int or duration"); each refresh
    /// issues a new one (rotation).
    #[serde(default = "default_refresh_ttl", rename = "refreshTokenTTL")]
    pub refresh_token_ttl: Duration,

    /// How long a chain of refresh tokens may last from the code exchange that started it,
    /// however often it is refreshed ("int or duration").
    #[serde(default = "default_refresh_max_ttl", rename = "refreshTokenMaxTTL")]
    pub refresh_token_max_ttl: Duration,

    /// How long after a refresh the token it replaced may still be presented (for relying
    /// parties with several replicas racing to refresh); past it, presenting a replaced
    /// token revokes the whole chain and its access tokens (RFC 9700 §4.14). 0 by default.
    #[serde(default = "zero", rename = "refreshTokenReuseInterval")]
    pub refresh_token_reuse_interval: Duration,

    /// The public keys of a `private_key_jwt` client (a JWK Set, RFC 7517 §5): its
    /// `client_assertion` must be signed by one of them, chosen by `kid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<ClientJwks>,

    /// Where a `private_key_jwt` client publishes its JWK Set instead (an https URL),
    /// fetched under the same rules, backoff and address policy as external issuers.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "jwksUri")]
    #[schemars(length(min = 1, max = super::limits::MAX_URL_LEN))]
    pub jwks_uri: Option<String>,

    /// Names of IdentityOidcAuth objects (in this namespace) whose external JWTs authenticate
    /// this `private_key_jwt` client as its `client_assertion` (a pod's service-account
    /// token, a CI job's token), checked exactly as a login is.
    #[serde(default)]
    #[schemars(length(max = super::limits::MAX_FEDERATED_IDENTITIES), inner(length(min = 1, max = super::limits::MAX_NAME_LEN)))]
    pub federated_identities: Vec<String>,
}

/// A JWK Set of a client's public keys.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ClientJwks {
    /// The keys: RSA (RS256/384/512), EC (ES256/384/512) or OKP Ed25519 (EdDSA).
    #[schemars(length(min = 1, max = super::limits::MAX_CLIENT_KEYS))]
    pub keys: Vec<ClientJwk>,
}

/// One public key (RFC 7517 §4). Only the members of a public signature key are kept:
/// private members (`d`, `p`, ...) are refused by the schema, so no secret sits in a spec.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ClientJwk {
    /// `RSA`, `EC` or `OKP`.
    #[schemars(length(min = 1, max = 8))]
    pub kty: String,
    /// The key id a `client_assertion` names in its header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = super::limits::MAX_KID_LEN))]
    pub kid: Option<String>,
    /// The one algorithm this key signs with; every algorithm of its type when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub alg: Option<String>,
    /// `sig` when given.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub use_: Option<String>,
    /// The curve of an EC or OKP key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub crv: Option<String>,
    /// RSA modulus and exponent (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = super::limits::MAX_KEY_PARAM_LEN))]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub e: Option<String>,
    /// EC or OKP coordinates (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub y: Option<String>,
}

fn default_grant_types() -> Vec<GrantType> {
    vec![GrantType::AuthorizationCode]
}

/// A week unused.
fn default_refresh_ttl() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

/// Thirty days from the code exchange.
fn default_refresh_max_ttl() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

fn zero() -> Duration {
    Duration::from_secs(0)
}

fn refresh_ttl_within_max() -> String {
    format!("{} <= {}", cel_duration("self.refreshTokenTTL"), cel_duration("self.refreshTokenMaxTTL"))
}

impl OidcClientSpec {
    /// Whether the client authenticates with a secret, and so gets one generated: a
    /// confidential client that does not use `private_key_jwt` (which has no secret at all).
    pub fn uses_secret(&self) -> bool {
        self.client_type == ClientType::Confidential
            && self.token_endpoint_auth_method != Some(ClientAuthMethod::PrivateKeyJwt)
    }

    /// The methods this client may authenticate with.
    pub fn auth_methods(&self) -> Vec<ClientAuthMethod> {
        match (self.token_endpoint_auth_method, self.client_type) {
            (Some(m), _) => vec![m],
            (None, ClientType::Confidential) => {
                vec![ClientAuthMethod::ClientSecretBasic, ClientAuthMethod::ClientSecretPost]
            }
            (None, ClientType::Public) => vec![ClientAuthMethod::None],
        }
    }
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
    /// The grants the client may use, once served (Ready, or a `jwksUri` failing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grant_types: Vec<GrantType>,
    /// The client authentication methods it may use, once served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_endpoint_auth_methods: Vec<ClientAuthMethod>,
    /// The `kid`s of its registered `private_key_jwt` keys (`spec.jwks`, or what the last
    /// fetch of `spec.jwksUri` found), once served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_ids: Vec<String>,
    /// The IdentityOidcAuth objects whose JWTs authenticate it, once served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub federated_identities: Vec<String>,
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

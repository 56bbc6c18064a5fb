//! The directory: one immutable snapshot of everything the server needs, resolved by
//! namespace, rebuilt when inputs change and swapped atomically (see [`SharedDirectory`]).
//!
//! Building it is pure: (objects, key rings, credentials, identity ids, now) -> snapshot and
//! a readiness for every object. A reference to a missing object or an invalid field marks
//! that object not Ready with a reason naming the field, and the rest keep serving.
//!
//! One module per kind resolves that kind and holds its tenant rules: what it may reference
//! (always inside its own namespace, see `in_namespace`) and which names are contested:
//! identity ids across namespaces and client ids within one, decided by `ClaimRank`; kids
//! across key rings, decided in `keys`.
//! [`build`] calls them in dependency order and assembles the namespace views.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::{
    self, ClientType, DEFAULT_KEY, IdentityOidcAuth, Kind, OidcAssignment, OidcClient, OidcKey, OidcKeySpec,
    OidcProvider, OidcScope, Readiness,
};
use crate::credentials::ClientCredentials;
use crate::keys::ring::{KeyPolicy, KeyRing};
use crate::keys::{Jwk, SigningKey};
use crate::login::cidr::Cidr;
use crate::login::external::IssuerSource;
use crate::sessions::TokenLimits;

pub use crate::api::ObjectKey;
pub use identities::{client_keys_source, issuer_source};

mod assignments;
mod clients;
mod identities;
mod keys;
mod providers;
mod scopes;

use keys::VersionId;

/// The declared objects, as read from manifests or reflector stores (shared, not copied:
/// the operator builds a snapshot from its caches after every burst of changes).
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    pub keys: Vec<Arc<OidcKey>>,
    pub clients: Vec<Arc<OidcClient>>,
    pub scopes: Vec<Arc<OidcScope>>,
    pub assignments: Vec<Arc<OidcAssignment>>,
    pub providers: Vec<Arc<OidcProvider>>,
    pub identities: Vec<Arc<IdentityOidcAuth>>,
    /// What the operator's flags impose on every object.
    pub policy: Policy,
}

/// Bounds the operator's flags put on what specs declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The longest lifetime, in seconds, of any token: identities' `accessTokenTTL` and
    /// `accessTokenMaxTTL`, clients' `idTokenTTL` and `accessTokenTTL` are cut to it
    /// (`--max-token-ttl`). Infisical allows up to ten years; a token nobody revokes would
    /// then hold its tenant's quota for as long.
    pub max_token_ttl: i64,
    /// Whether an API server answers the TokenReviews of identities with `spec.tokenReview`:
    /// on a cluster; not standalone, where such an identity's logins are refused and its
    /// status says why.
    pub token_reviews: bool,
}

/// `--max-token-ttl`'s default: 31 days.
pub const DEFAULT_MAX_TOKEN_TTL: i64 = 31 * 24 * 3600;

impl Default for Policy {
    fn default() -> Self {
        Self { max_token_ttl: DEFAULT_MAX_TOKEN_TTL, token_reviews: true }
    }
}

/// Generated state the shells keep (Secrets on a cluster, files standalone).
#[derive(Clone, Debug, Default)]
pub struct Materials {
    pub key_rings: BTreeMap<ObjectKey, KeyRing>,
    pub credentials: BTreeMap<ObjectKey, ClientCredentials>,
    /// Identity ids generated for IdentityOidcAuth objects without `spec.identityId`
    /// (the UID on a cluster).
    pub identity_ids: BTreeMap<ObjectKey, String>,
    /// What fetching each external issuer gave: its `issuer`, or why it failed. Absent while
    /// the first fetch is under way.
    pub issuer_health: crate::login::external::IssuerHealth,
    /// Clients whose `spec.secretName` names a Secret that is not theirs (never written over).
    pub secret_conflicts: BTreeSet<ObjectKey>,
    /// The order in which the standalone shell first saw each identity and client (arrival
    /// numbers kept in its state folder): its stand-in for `metadata.creationTimestamp`,
    /// which a manifest could forge. Empty on a cluster, where the API server's is used.
    pub first_seen: BTreeMap<(Kind, ObjectKey), i64>,
    /// The IdentityOidcAuth that last served each identity id, as the standalone shell keeps
    /// it in its state folder: who holds an id after a restart. A cluster reads that from the
    /// object's own status instead, which only the operator may write; a manifest file's
    /// `status` is whatever its author typed, so standalone ignores it. Empty on a cluster.
    pub identity_holders: BTreeMap<String, ObjectKey>,
    /// Most identities served per namespace (`--max-identities-per-namespace`, set by the
    /// shells; `None`: no cap). The later claimants of a fuller namespace are not served.
    pub identities_per_namespace: Option<usize>,
}

/// Where the server is reached: `scheme://host:port`, no trailing slash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalUrl(String);

impl ExternalUrl {
    pub fn new(url: &str) -> Self {
        Self(url.trim_end_matches('/').to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The key specs the shells must keep rings for: every valid OidcKey, plus the built-in
/// `default` key in each namespace where a client uses it and no OidcKey `default` exists.
pub fn required_keys(inputs: &Inputs) -> BTreeMap<ObjectKey, OidcKeySpec> {
    let mut out: BTreeMap<ObjectKey, OidcKeySpec> = inputs
        .keys
        .iter()
        .filter(|k| api::validate::key(&k.spec).is_ok())
        .map(|k| (ObjectKey::of(&k.metadata), k.spec.clone()))
        .collect();
    let declared: BTreeSet<ObjectKey> = inputs.keys.iter().map(|k| ObjectKey::of(&k.metadata)).collect();
    for client in &inputs.clients {
        if client.spec.key == DEFAULT_KEY {
            let key = ObjectKey::new(ObjectKey::of(&client.metadata).namespace, DEFAULT_KEY);
            if !declared.contains(&key) {
                out.entry(key).or_insert_with(OidcKeySpec::builtin_default);
            }
        }
    }
    out
}

/// A key as the server uses it.
pub struct ResolvedKey {
    pub name: String,
    pub policy: KeyPolicy,
    pub allowed_clients: Vec<String>,
    /// Signs now.
    pub current: Arc<SigningKey>,
    /// Everything in JWKS: current, next, retired inside their window.
    pub published: Vec<Jwk>,
    pub rotation_due: i64,
    /// Verifiers of `published`, decoded on first use in this snapshot (a JWT access token
    /// presented back), not once per request.
    pub verifiers: std::sync::OnceLock<Vec<crate::keys::VerifyingKey>>,
}

impl ResolvedKey {
    /// The verifier of the published key `kid`.
    pub fn verifier(&self, kid: &str) -> Option<&crate::keys::VerifyingKey> {
        let all = self.verifiers.get_or_init(|| {
            self.published.iter().filter_map(|jwk| crate::keys::VerifyingKey::from_jwk(jwk).ok()).collect()
        });
        all.iter().find(|v| v.kid() == kid)
    }
}

/// A client as the server uses it.
pub struct ResolvedClient {
    pub name: String,
    pub namespace: String,
    pub client_id: String,
    /// Never logged; compared in constant time.
    pub client_secret: Option<String>,
    pub client_type: ClientType,
    pub key: Arc<ResolvedKey>,
    pub redirect_uris: Vec<String>,
    pub assignments: Vec<String>,
    pub id_token_ttl: u64,
    pub access_token_ttl: u64,
    /// The grants it may use at the token endpoint (`spec.grantTypes`).
    pub grant_types: Vec<crate::api::GrantType>,
    /// The methods it may authenticate with (`spec.tokenEndpointAuthMethod`, or what its
    /// type allows).
    pub auth_methods: Vec<crate::api::ClientAuthMethod>,
    pub access_token_format: crate::api::AccessTokenFormat,
    /// Audiences its client_credentials tokens may name.
    pub audiences: Vec<String>,
    /// Refresh tokens: idle lifetime, absolute lifetime of a chain, reuse grace (seconds).
    pub refresh_token_ttl: u64,
    pub refresh_token_max_ttl: u64,
    pub refresh_token_reuse_interval: u64,
    /// Its registered `private_key_jwt` keys (`spec.jwks`), parsed once per snapshot; the
    /// issuer they stand for is the client's `client_id`.
    pub assertion_keys: Option<Arc<crate::login::jwks::IssuerKeys>>,
    /// Names of the IdentityOidcAuth objects (its namespace) whose JWTs authenticate it.
    pub federated_identities: Vec<String>,
    /// Where its keys are fetched (`spec.jwksUri`), through the external issuers' registry.
    pub keys_source: Option<IssuerSource>,
}

impl ResolvedClient {
    /// Whether the client may use `grant`.
    pub fn allows(&self, grant: crate::api::GrantType) -> bool {
        self.grant_types.contains(&grant)
    }
}

/// A provider with its documents rendered once per snapshot.
pub struct ResolvedProvider {
    pub name: String,
    pub namespace: String,
    pub issuer: String,
    /// Names of the clients it serves (Ready, or failing only to fetch their `jwksUri`).
    pub clients: BTreeSet<String>,
    pub scopes: Vec<String>,
    /// PKCE methods accepted at authorize (`spec.pkceMethods`).
    pub pkce_methods: Vec<crate::api::PkceMethod>,
    pub discovery_json: Arc<str>,
    pub jwks_json: Arc<str>,
    /// `Cache-Control: max-age` of the JWKS, below min(verificationTTL, rotationPeriod).
    pub jwks_max_age: u64,
}

/// A scope as the server uses it.
pub struct ResolvedScope {
    pub name: String,
    /// The claims its template sets (advertised in `claims_supported`).
    pub claims: Vec<String>,
    /// `spec.missingValues: error`: a value the entity lacks refuses the request.
    pub missing_is_error: bool,
    pub template: Option<crate::template::Template>,
}

/// An identity (entity) as login, templates and assignments see it.
pub struct ResolvedIdentity {
    pub id: String,
    pub name: String,
    pub key: ObjectKey,
    /// `metadata.uid` (empty for objects read from files): which incarnation of the object
    /// this is. A token or code names the incarnation that issued it, so deleting an
    /// identity and declaring it again under the same name and `identityId` issues new
    /// tokens but never revives the old ones, even where no replica saw the deletion.
    /// Shared by every record it issues (one pointer each, not a copy).
    pub uid: Arc<str>,
    pub spec: api::IdentityOidcAuthSpec,
    pub group_ids: Vec<String>,
    pub trusted_ips: Vec<Cidr>,
    pub limits: TokenLimits,
    /// Where its external issuer is fetched from.
    pub source: IssuerSource,
}

/// Which identity issued a record: its `identityId`, object and `metadata.uid`.
pub struct IssuedBy<'a> {
    pub id: &'a str,
    pub key: &'a ObjectKey,
    pub uid: &'a str,
}

/// Everything one namespace (tenant) serves.
#[derive(Default)]
pub struct NamespaceView {
    pub providers: HashMap<String, Arc<ResolvedProvider>>,
    /// By `client_id`.
    pub clients: HashMap<String, Arc<ResolvedClient>>,
    pub keys: HashMap<String, Arc<ResolvedKey>>,
    pub scopes: HashMap<String, Arc<ResolvedScope>>,
    pub assignments: HashMap<String, OidcAssignment>,
    /// By identity id.
    pub identities: HashMap<String, Arc<ResolvedIdentity>>,
}

/// Status facts beyond `Ready`, per kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StatusFacts {
    Key {
        current_kid: Option<String>,
        next_kid: Option<String>,
        next_rotation: Option<i64>,
        published_kids: Vec<String>,
    },
    Client {
        client_id: Option<String>,
        secret_name: String,
        /// Effective grants and authentication methods, once Ready (empty before).
        grant_types: Vec<crate::api::GrantType>,
        auth_methods: Vec<crate::api::ClientAuthMethod>,
        /// Registered key ids and federated identities, once Ready.
        key_ids: Vec<String>,
        federated_identities: Vec<String>,
    },
    Scope {
        claims: Vec<String>,
    },
    Assignment {
        resolved_entities: i64,
    },
    Provider {
        issuer: String,
    },
    Identity {
        identity_id: Option<String>,
        login_url: String,
    },
}

/// The readiness of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectStatus {
    pub kind: Kind,
    pub key: ObjectKey,
    pub generation: Option<i64>,
    pub readiness: Readiness,
    pub facts: StatusFacts,
}

/// The immutable snapshot request handlers read.
#[derive(Default)]
pub struct Directory {
    pub namespaces: HashMap<String, NamespaceView>,
    /// Every declared object's readiness, sorted by kind, namespace and name.
    pub statuses: Vec<ObjectStatus>,
    /// Identities of every namespace by identity id (logins name no namespace).
    pub identities_by_id: HashMap<String, Arc<ResolvedIdentity>>,
    /// Parsed signing keys by ring, kid and material, reused by the next build.
    signing_keys: HashMap<VersionId, Arc<SigningKey>>,
    /// The ring that serves each published kid (who keeps it in the next build).
    kid_owners: HashMap<String, ObjectKey>,
    /// Kids that a later ring repeats (reported by the shells; nothing is taken offline).
    pub kid_conflicts: Vec<KidConflict>,
}

impl Directory {
    pub fn provider(&self, namespace: &str, name: &str) -> Option<&Arc<ResolvedProvider>> {
        self.namespaces.get(namespace)?.providers.get(name)
    }

    pub fn namespace(&self, namespace: &str) -> Option<&NamespaceView> {
        self.namespaces.get(namespace)
    }

    /// The status of one object, if the snapshot holds it.
    pub fn status(&self, kind: Kind, key: &ObjectKey) -> Option<&ObjectStatus> {
        let i = self.statuses.binary_search_by(|s| (s.kind, &s.key).cmp(&(kind, key))).ok()?;
        self.statuses.get(i)
    }

    /// The issuer of the first provider (by name) serving a client: what its Secret names.
    pub fn client_issuer(&self, client: &ObjectKey) -> Option<&str> {
        let view = self.namespace(&client.namespace)?;
        let served = view.providers.values().filter(|p| p.clients.contains(&client.name));
        served.min_by(|a, b| a.name.cmp(&b.name)).map(|p| p.issuer.as_str())
    }

    /// The identity with this id, in any namespace.
    pub fn identity_by_id(&self, id: &str) -> Option<&Arc<ResolvedIdentity>> {
        self.identities_by_id.get(id)
    }

    /// The identity a token or code was issued by, if this snapshot still serves that very
    /// object: same id, same namespace and name, same incarnation.
    pub fn issuing_identity(&self, issuer: &IssuedBy<'_>) -> Option<&Arc<ResolvedIdentity>> {
        self.identity_by_id(issuer.id).filter(|i| i.key == *issuer.key && *i.uid == *issuer.uid)
    }

    /// The key that signs now for a key ring, if the snapshot serves it.
    pub fn signing_key(&self, ring: &ObjectKey) -> Option<&Arc<SigningKey>> {
        Some(&self.namespaces.get(&ring.namespace)?.keys.get(&ring.name)?.current)
    }
}

/// The current snapshot, swapped atomically; readers never block.
#[derive(Default)]
pub struct SharedDirectory(ArcSwapOption<Directory>);

impl SharedDirectory {
    pub fn load(&self) -> Option<Arc<Directory>> {
        self.0.load_full()
    }

    pub fn store(&self, directory: Directory) {
        self.0.store(Some(Arc::new(directory)));
    }

    /// True once a first snapshot exists (`/readyz`).
    pub fn is_ready(&self) -> bool {
        self.0.load().is_some()
    }
}

/// Stable id of a group, derived from its namespace and name (a name-based UUID shape).
pub fn group_id(namespace: &str, group: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("oidc-operator.dev/group\0{namespace}\0{group}"));
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// The order in which objects contesting one name (an identity id, unique across all
/// namespaces; a client id, unique inside its namespace) get it: the object that held it in
/// the previous snapshot keeps it while it exists; then the older object (first seen
/// standalone, `creationTimestamp` on a cluster); then the UID; then namespace and name. So a newcomer claiming another tenant's id never takes it over.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ClaimRank {
    newcomer: bool,
    created: i64,
    uid: String,
    key: ObjectKey,
}

impl ClaimRank {
    fn of(meta: &ObjectMeta, kind: Kind, held_before: bool, materials: &Materials) -> Self {
        let key = ObjectKey::of(meta);
        let created = match materials.first_seen.get(&(kind, key.clone())) {
            Some(t) => *t,
            None => meta.creation_timestamp.as_ref().map_or(i64::MAX, |t| t.0.as_second()),
        };
        Self { newcomer: !held_before, created, uid: meta.uid.clone().unwrap_or_default(), key }
    }
}

/// A not-Ready readiness with a reason and a message naming the field.
fn not_ready(reason: &str, message: String) -> Readiness {
    Readiness::not_ready(reason, message)
}

/// An invalid spec, named by its field.
fn invalid(e: &api::validate::FieldError) -> Readiness {
    not_ready("InvalidSpec", e.to_string())
}

/// Objects in claim order (a stable sort by rank, so equal ranks keep their input order).
fn in_claim_order<T>(mut ranked: Vec<(ClaimRank, T)>) -> Vec<T> {
    ranked.sort_by(|a, b| a.0.cmp(&b.0));
    ranked.into_iter().map(|(_, t)| t).collect()
}

/// The object a reference names: references never leave the referring object's namespace
/// (a client's key and assignments, a provider's clients and scopes).
fn in_namespace(referrer: &ObjectKey, name: &str) -> ObjectKey {
    ObjectKey::new(referrer.namespace.clone(), name)
}

impl ObjectStatus {
    /// The status of one declared object.
    fn of(kind: Kind, meta: &ObjectMeta, readiness: Readiness, facts: StatusFacts) -> Self {
        Self { kind, key: ObjectKey::of(meta), generation: meta.generation, readiness, facts }
    }
}

/// What resolving one kind gives: the objects the snapshot serves, by object, and a status
/// for every declared object of that kind.
struct Resolution<T> {
    served: BTreeMap<ObjectKey, T>,
    statuses: Vec<ObjectStatus>,
}

/// The view of an object's namespace, created on first use.
fn view<'a>(namespaces: &'a mut HashMap<String, NamespaceView>, k: &ObjectKey) -> &'a mut NamespaceView {
    namespaces.entry(k.namespace.clone()).or_default()
}

/// Builds a snapshot. `previous` lends its parsed keys so unchanged keys are not re-parsed,
/// and its holders of identity ids, client ids and kids keep them.
///
/// Each kind resolves against the kinds before it: keys, identities, assignments (which
/// count identities), scopes, clients (which name keys and assignments), providers (which
/// name clients and scopes).
pub fn build(
    inputs: &Inputs,
    materials: &Materials,
    external: &ExternalUrl,
    now: i64,
    previous: Option<&Directory>,
) -> Directory {
    let keys = keys::resolve(inputs, materials, now, previous);
    let identities = identities::resolve(inputs, materials, external, previous);
    let assignments = assignments::resolve(inputs, &identities.resolved.served);
    let scopes = scopes::resolve(inputs);
    let clients =
        clients::resolve(inputs, materials, &keys.resolved.served, &identities.by_id, &assignments.served, previous);
    let providers = providers::resolve(inputs, external, &scopes.served, &clients.served);

    let mut statuses = keys.resolved.statuses;
    statuses.extend(identities.resolved.statuses);
    statuses.extend(assignments.statuses);
    statuses.extend(scopes.statuses);
    statuses.extend(clients.statuses);
    statuses.extend(providers.statuses);
    let mut namespaces: HashMap<String, NamespaceView> = HashMap::new();
    for (k, v) in keys.resolved.served {
        view(&mut namespaces, &k).keys.insert(k.name, v);
    }
    for (k, v) in clients.served {
        view(&mut namespaces, &k).clients.insert(v.client_id.clone(), v);
    }
    for (k, v) in providers.served {
        view(&mut namespaces, &k).providers.insert(k.name, v);
    }
    for (k, v) in scopes.served {
        view(&mut namespaces, &k).scopes.insert(k.name, v);
    }
    for (k, v) in assignments.served {
        view(&mut namespaces, &k).assignments.insert(k.name, v.clone());
    }
    for (k, v) in identities.resolved.served {
        view(&mut namespaces, &k).identities.insert(v.id.clone(), v);
    }
    statuses.sort_by(|a, b| (a.kind, &a.key).cmp(&(b.kind, &b.key)));
    Directory {
        namespaces,
        statuses,
        identities_by_id: identities.by_id,
        signing_keys: keys.signing_keys,
        kid_owners: keys.kid_owners,
        kid_conflicts: keys.kid_conflicts,
    }
}

/// A kid that a key ring repeats although another ring already serves it (reported as a
/// Warning Event; nothing is taken offline).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KidConflict {
    /// The later ring (its OidcKey, or the built-in `default` key's namespace and name).
    pub ring: ObjectKey,
    pub kid: String,
    /// The ring that keeps the kid.
    pub holder: ObjectKey,
}

/// Names of the OidcClients that use a key.
pub fn key_users<'a>(clients: impl IntoIterator<Item = &'a OidcClient>, key: &ObjectKey) -> Vec<String> {
    let mut users: Vec<String> = clients
        .into_iter()
        .filter(|c| c.spec.key == key.name && ObjectKey::of(&c.metadata).namespace == key.namespace)
        .map(|c| c.metadata.name.clone().unwrap_or_default())
        .collect();
    users.sort();
    users
}

/// Whether an assignment admits an entity, by entity id or name, or by group id or name.
pub fn admits(assignment: &OidcAssignment, identity: &ResolvedIdentity) -> bool {
    let s = &assignment.spec;
    s.entity_ids.contains(&identity.id)
        || s.entities.contains(&identity.name)
        || identity.group_ids.iter().any(|g| s.group_ids.contains(g))
        || identity.spec.groups.iter().any(|g| s.groups.contains(g))
}

#[cfg(test)]
mod tests;

//! The directory: one immutable snapshot of everything the server needs, resolved by
//! namespace, rebuilt when inputs change and swapped atomically (see [`SharedDirectory`]).
//!
//! Building it is pure: (objects, key rings, credentials, identity ids, now) -> snapshot and
//! a readiness for every object. A reference to a missing object or an invalid field marks
//! that object not Ready with a reason naming the field, and the rest keep serving.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::{
    self, ALLOW_ALL, ClientType, DEFAULT_KEY, IdentityOidcAuth, Kind, OidcAssignment, OidcClient, OidcKey, OidcKeySpec,
    OidcProvider, OidcScope, Readiness,
};
use crate::credentials::ClientCredentials;
use crate::keys::ring::{KeyPolicy, KeyRing};
use crate::keys::{Jwk, JwkSet, KeyError, SigningAlgorithm, SigningKey};
use crate::login::cidr::Cidr;
use crate::login::external::IssuerSource;
use crate::paths::{self, ProviderEndpoint};
use crate::sessions::TokenLimits;

pub use crate::api::ObjectKey;

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
    pub issuer_health: BTreeMap<IssuerSource, Result<String, String>>,
    /// Clients whose `spec.secretName` names a Secret that is not theirs (never written over).
    pub secret_conflicts: BTreeSet<ObjectKey>,
    /// When the standalone shell first saw each identity and client (kept in its state
    /// folder): its stand-in for `metadata.creationTimestamp`, which a manifest could forge.
    /// Empty on a cluster, where the API server's creationTimestamp is used.
    pub first_seen: BTreeMap<(Kind, ObjectKey), i64>,
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
}

/// A provider with its documents rendered once per snapshot.
pub struct ResolvedProvider {
    pub name: String,
    pub namespace: String,
    pub issuer: String,
    /// Names of the Ready clients it serves.
    pub clients: BTreeSet<String>,
    pub scopes: Vec<String>,
    pub discovery_json: Arc<str>,
    pub jwks_json: Arc<str>,
    /// `Cache-Control: max-age` of the JWKS, below min(verificationTTL, rotationPeriod).
    pub jwks_max_age: u64,
}

/// A scope as the server uses it.
pub struct ResolvedScope {
    pub name: String,
    pub template: Option<crate::template::Template>,
}

/// An identity (entity) as login, templates and assignments see it.
pub struct ResolvedIdentity {
    pub id: String,
    pub name: String,
    pub key: ObjectKey,
    pub spec: api::IdentityOidcAuthSpec,
    pub group_ids: Vec<String>,
    pub trusted_ips: Vec<Cidr>,
    pub limits: TokenLimits,
    /// Where its external issuer is fetched from.
    pub source: IssuerSource,
}

/// The external issuer an identity trusts.
pub fn issuer_source(spec: &api::IdentityOidcAuthSpec) -> IssuerSource {
    IssuerSource {
        discovery_url: crate::login::external::discovery_document_url(&spec.oidc_discovery_url),
        ca_cert: spec.ca_cert.clone().filter(|c| !c.trim().is_empty()),
    }
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

/// The order in which objects contesting one global name (an identity id, a client id) get
/// it: the object that held it in the previous snapshot keeps it while it exists; then the
/// older object (first seen standalone, `creationTimestamp` on a cluster); then the UID; then
/// namespace and name. So a newcomer claiming another tenant's id never takes it over.
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

fn not_ready(reason: &str, message: String) -> Readiness {
    Readiness::not_ready(reason, message)
}

fn invalid(e: &api::validate::FieldError) -> Readiness {
    not_ready("InvalidSpec", e.to_string())
}

/// Builds a snapshot. `previous` lends its parsed keys so unchanged keys are not re-parsed.
pub fn build(
    inputs: &Inputs,
    materials: &Materials,
    external: &ExternalUrl,
    now: i64,
    previous: Option<&Directory>,
) -> Directory {
    let mut dir = Directory::default();
    let mut statuses = Vec::new();
    // A key version is only ever resolved inside its own ring: the cache is keyed by ring,
    // kid and a digest of the private key, so a ring elsewhere repeating a kid with other
    // material can neither borrow nor replace this one.
    let mut parse = |ring: &ObjectKey, v: &crate::keys::KeyVersion| -> Result<Arc<SigningKey>, KeyError> {
        let id = VersionId::of(ring, v);
        let cached = dir.signing_keys.get(&id).or_else(|| previous.and_then(|p| p.signing_keys.get(&id)));
        if let Some(k) = cached {
            let k = Arc::clone(k);
            dir.signing_keys.insert(id, Arc::clone(&k));
            return Ok(k);
        }
        let k = Arc::new(v.parse()?);
        dir.signing_keys.insert(id, Arc::clone(&k));
        Ok(k)
    };

    // Keys: declared ones and built-in defaults.
    let declared: BTreeMap<ObjectKey, &OidcKey> =
        inputs.keys.iter().map(|k| (ObjectKey::of(&k.metadata), &**k)).collect();
    let mut keys: BTreeMap<ObjectKey, Arc<ResolvedKey>> = BTreeMap::new();
    for (key, spec) in required_keys(inputs) {
        let policy = KeyPolicy::from(&spec);
        let resolved = materials.key_rings.get(&key).map(|ring| -> Result<ResolvedKey, KeyError> {
            let current = parse(&key, &ring.current)?;
            let published = ring
                .published(&policy, now)
                .into_iter()
                .map(|v| parse(&key, v).map(|k| k.jwk().clone()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ResolvedKey {
                name: key.name.clone(),
                policy,
                allowed_clients: spec.allowed_clients.clone(),
                current,
                published,
                rotation_due: ring.rotation_due(&policy),
            })
        });
        match resolved {
            Some(Ok(r)) => {
                keys.insert(key.clone(), Arc::new(r));
            }
            Some(Err(e)) => {
                if let Some(obj) = declared.get(&key) {
                    statuses.push(key_status(obj, not_ready("KeyMaterialInvalid", e.to_string()), None, &policy, now));
                }
            }
            None => {}
        }
    }
    let (kid_owners, kid_conflicts) = kid_claims(&materials.key_rings, &keys, previous, now);
    for obj in &inputs.keys {
        let k = ObjectKey::of(&obj.metadata);
        if statuses.iter().any(|s: &ObjectStatus| s.kind == Kind::OidcKey && s.key == k) {
            continue;
        }
        let policy = KeyPolicy::from(&obj.spec);
        let users = key_users(inputs.clients.iter().map(|c| &**c), &k);
        let readiness = match (api::validate::key(&obj.spec), keys.get(&k)) {
            (Err(e), _) => invalid(&e),
            (Ok(()), None) => not_ready("KeyMaterialPending", "key material is being generated".into()),
            // Deleting a key that clients use is held (the operator keeps its finalizer) and
            // the key keeps signing for them.
            (Ok(()), Some(_)) if obj.metadata.deletion_timestamp.is_some() && !users.is_empty() => not_ready(
                "DeletionHeld",
                format!(
                    "metadata.deletionTimestamp: deletion is held while OidcClient(s) {} use this key",
                    users.join(", ")
                ),
            ),
            // A kid this ring repeats is reported by the shells (`kid_conflicts`), and the ring
            // stays Ready: it resolves only its own material, so the repeated kid reaches no
            // other ring's JWKS or signer, and a forged ring cannot mark its victim not Ready.
            (Ok(()), Some(r)) => Readiness::ready(format!("signing with kid {}", r.current.kid())),
        };
        let ring = materials.key_rings.get(&k).filter(|_| keys.contains_key(&k));
        statuses.push(key_status(obj, readiness, ring, &policy, now));
    }

    // Identities (entities), in claim order: a contested identity id goes to its holder.
    let mut identities: BTreeMap<ObjectKey, Arc<ResolvedIdentity>> = BTreeMap::new();
    let identity_id = |obj: &IdentityOidcAuth| {
        obj.spec.identity_id.clone().or_else(|| materials.identity_ids.get(&ObjectKey::of(&obj.metadata)).cloned())
    };
    let mut sorted_identities: Vec<(ClaimRank, &IdentityOidcAuth, Option<String>)> = inputs
        .identities
        .iter()
        .map(|obj| {
            let id = identity_id(obj);
            let held = id
                .as_ref()
                .and_then(|id| previous?.identities_by_id.get(id))
                .is_some_and(|i| i.key == ObjectKey::of(&obj.metadata));
            (ClaimRank::of(&obj.metadata, Kind::IdentityOidcAuth, held, materials), &**obj, id)
        })
        .collect();
    sorted_identities.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, obj, id) in sorted_identities {
        let k = ObjectKey::of(&obj.metadata);
        let login_url = format!("{}{}", external.as_str(), paths::LOGIN);
        let source = issuer_source(&obj.spec);
        let readiness = match (api::validate::identity(&obj.spec), &id) {
            (Err(e), _) => invalid(&e),
            (Ok(()), _) if !crate::login::matching::audiences_bound(&obj.spec.bound_audiences) => not_ready(
                "AudienceRequired",
                "spec.boundAudiences: name the audiences presented JWTs must carry, or \"*\" to accept any \
                 (an empty value is refused: RFC 8725 §3.9)"
                    .into(),
            ),
            (Ok(()), None) => not_ready("IdentityIdPending", "the identity id is being generated".into()),
            (Ok(()), Some(id)) if dir.identities_by_id.contains_key(id) => not_ready(
                "IdentityIdConflict",
                format!(
                    "spec.identityId: {id:?} is already the id of another IdentityOidcAuth (the one that held \
                     it first keeps it)"
                ),
            ),
            (Ok(()), Some(id)) => {
                let resolved = Arc::new(ResolvedIdentity {
                    id: id.clone(),
                    name: k.name.clone(),
                    key: k.clone(),
                    spec: obj.spec.clone(),
                    group_ids: obj.spec.groups.iter().map(|g| group_id(&k.namespace, g)).collect(),
                    trusted_ips: obj
                        .spec
                        .access_token_trusted_ips
                        .iter()
                        .filter_map(|t| Cidr::parse(&t.ip_address).ok())
                        .collect(),
                    limits: TokenLimits {
                        ttl: obj.spec.access_token_ttl,
                        max_ttl: obj.spec.access_token_max_ttl,
                        num_uses_limit: u64::try_from(obj.spec.access_token_num_uses_limit).unwrap_or(0),
                    },
                    source: source.clone(),
                });
                dir.identities_by_id.insert(id.clone(), Arc::clone(&resolved));
                identities.insert(k.clone(), resolved);
                match materials.issuer_health.get(&source) {
                    None => not_ready(
                        "DiscoveryPending",
                        format!("spec.oidcDiscoveryUrl: fetching {}", source.discovery_url),
                    ),
                    Some(Err(e)) => not_ready("DiscoveryFailed", format!("spec.oidcDiscoveryUrl: {e}")),
                    Some(Ok(issuer)) if *issuer != obj.spec.bound_issuer => not_ready(
                        "IssuerMismatch",
                        format!(
                            "spec.boundIssuer: the discovery document at spec.oidcDiscoveryUrl names issuer {issuer:?}"
                        ),
                    ),
                    Some(Ok(_)) => Readiness::ready(format!("logs in at {login_url} with identityId {id}")),
                }
            }
        };
        statuses.push(ObjectStatus {
            kind: Kind::IdentityOidcAuth,
            key: k,
            generation: obj.metadata.generation,
            readiness,
            facts: StatusFacts::Identity { identity_id: id, login_url },
        });
    }

    // Assignments.
    let mut assignments: BTreeMap<ObjectKey, &OidcAssignment> = BTreeMap::new();
    for obj in &inputs.assignments {
        let k = ObjectKey::of(&obj.metadata);
        let readiness = match api::validate::assignment(obj) {
            Err(e) => invalid(&e),
            Ok(()) => {
                assignments.insert(k.clone(), obj);
                Readiness::ready("resolved")
            }
        };
        let resolved =
            identities.iter().filter(|(ik, ident)| ik.namespace == k.namespace && admits(obj, ident)).count();
        statuses.push(ObjectStatus {
            kind: Kind::OidcAssignment,
            key: k,
            generation: obj.metadata.generation,
            readiness,
            facts: StatusFacts::Assignment { resolved_entities: i64::try_from(resolved).unwrap_or(i64::MAX) },
        });
    }

    // Scopes.
    let mut scopes: BTreeMap<ObjectKey, Arc<ResolvedScope>> = BTreeMap::new();
    for obj in &inputs.scopes {
        let k = ObjectKey::of(&obj.metadata);
        let (readiness, claims) = match api::validate::scope(obj) {
            Err(e) => {
                let reason = if e.field == "spec.template" { "TemplateInvalid" } else { "InvalidSpec" };
                (not_ready(reason, format!("OidcScope {}: {e}", k.name)), Vec::new())
            }
            Ok(claims) => {
                let template = obj.spec.template.as_deref().and_then(|t| crate::template::Template::parse(t).ok());
                scopes.insert(k.clone(), Arc::new(ResolvedScope { name: k.name.clone(), template }));
                (Readiness::ready(format!("sets claims [{}]", claims.join(", "))), claims)
            }
        };
        statuses.push(ObjectStatus {
            kind: Kind::OidcScope,
            key: k,
            generation: obj.metadata.generation,
            readiness,
            facts: StatusFacts::Scope { claims },
        });
    }

    // Clients, in claim order: a contested client_id goes to its holder.
    let mut sorted_clients: Vec<(ClaimRank, &OidcClient)> = inputs
        .clients
        .iter()
        .map(|obj| {
            let k = ObjectKey::of(&obj.metadata);
            let held = materials.credentials.get(&k).is_some_and(|c| {
                previous
                    .and_then(|p| p.namespace(&k.namespace)?.clients.get(&c.client_id))
                    .is_some_and(|held| held.name == k.name)
            });
            (ClaimRank::of(&obj.metadata, Kind::OidcClient, held, materials), &**obj)
        })
        .collect();
    sorted_clients.sort_by(|a, b| a.0.cmp(&b.0));
    let sorted_clients = sorted_clients.into_iter().map(|(_, c)| c);
    let mut clients: BTreeMap<ObjectKey, Arc<ResolvedClient>> = BTreeMap::new();
    let mut client_ids: HashMap<(String, String), String> = HashMap::new();
    for obj in sorted_clients {
        let k = ObjectKey::of(&obj.metadata);
        let creds = materials.credentials.get(&k);
        let readiness = match materials.secret_conflicts.contains(&k) {
            true => Err(not_ready(
                "SecretNameConflict",
                format!(
                    "spec.secretName: Secret {:?} exists and does not belong to this client",
                    obj.credentials_name()
                ),
            )),
            false => resolve_client(obj, &k, creds, &keys, &declared, &assignments, &client_ids),
        };
        let readiness = match (readiness, creds) {
            (Ok(key), Some(creds)) => {
                client_ids.insert((k.namespace.clone(), creds.client_id.clone()), k.name.clone());
                clients.insert(
                    k.clone(),
                    Arc::new(ResolvedClient {
                        name: k.name.clone(),
                        namespace: k.namespace.clone(),
                        client_id: creds.client_id.clone(),
                        client_secret: match obj.spec.client_type {
                            ClientType::Confidential => creds.client_secret.clone(),
                            ClientType::Public => None,
                        },
                        client_type: obj.spec.client_type,
                        key,
                        redirect_uris: obj.spec.redirect_uris.clone(),
                        assignments: obj.spec.assignments.clone(),
                        id_token_ttl: obj.spec.id_token_ttl.as_secs(),
                        access_token_ttl: obj.spec.access_token_ttl.as_secs(),
                    }),
                );
                Readiness::ready(format!("client_id {}", creds.client_id))
            }
            (Ok(_), None) => not_ready("CredentialsPending", "credentials are being generated".into()),
            (Err(r), _) => r,
        };
        statuses.push(ObjectStatus {
            kind: Kind::OidcClient,
            key: k,
            generation: obj.metadata.generation,
            readiness,
            facts: StatusFacts::Client {
                client_id: creds.map(|c| c.client_id.clone()),
                secret_name: obj.credentials_name(),
            },
        });
    }

    // Providers.
    let mut providers: BTreeMap<ObjectKey, Arc<ResolvedProvider>> = BTreeMap::new();
    for obj in &inputs.providers {
        let k = ObjectKey::of(&obj.metadata);
        let base = obj
            .spec
            .issuer
            .as_deref()
            .and_then(|i| api::validate::issuer_base(i).ok())
            .unwrap_or_else(|| external.as_str().to_owned());
        let issuer = format!("{base}{}", paths::provider_path(&k.namespace, &k.name));
        let readiness = match resolve_provider(obj, &k, inputs, &scopes) {
            Err(r) => r,
            Ok(()) => {
                let served: Vec<&Arc<ResolvedClient>> = clients
                    .iter()
                    .filter(|(ck, c)| {
                        ck.namespace == k.namespace && obj.spec.allowed_clients.iter().any(|a| a == "*" || *a == c.name)
                    })
                    .map(|(_, c)| c)
                    .collect();
                let provider = render_provider(&k, &issuer, obj, &served);
                let message = format!("issuer {issuer}, serving {} client(s)", provider.clients.len());
                providers.insert(k.clone(), Arc::new(provider));
                Readiness::ready(message)
            }
        };
        statuses.push(ObjectStatus {
            kind: Kind::OidcProvider,
            key: k,
            generation: obj.metadata.generation,
            readiness,
            facts: StatusFacts::Provider { issuer },
        });
    }

    // Assemble the namespace views.
    for (k, v) in keys {
        dir.namespaces.entry(k.namespace).or_default().keys.insert(k.name, v);
    }
    for (k, v) in clients {
        dir.namespaces.entry(k.namespace).or_default().clients.insert(v.client_id.clone(), v);
    }
    for (k, v) in providers {
        dir.namespaces.entry(k.namespace).or_default().providers.insert(k.name, v);
    }
    for (k, v) in scopes {
        dir.namespaces.entry(k.namespace).or_default().scopes.insert(k.name, v);
    }
    for (k, v) in assignments {
        dir.namespaces.entry(k.namespace).or_default().assignments.insert(k.name, v.clone());
    }
    for (k, v) in identities {
        dir.namespaces.entry(k.namespace).or_default().identities.insert(v.id.clone(), v);
    }
    statuses.sort_by(|a, b| (a.kind, &a.key).cmp(&(b.kind, &b.key)));
    dir.statuses = statuses;
    dir.kid_owners = kid_owners;
    dir.kid_conflicts = kid_conflicts;
    dir
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

/// Who serves each published kid: the ring that served it in the previous snapshot keeps
/// it; otherwise the ring whose version carrying it is older, then namespace and name. Every
/// other ring repeating the kid is a conflict.
fn kid_claims(
    rings: &BTreeMap<ObjectKey, KeyRing>,
    keys: &BTreeMap<ObjectKey, Arc<ResolvedKey>>,
    previous: Option<&Directory>,
    now: i64,
) -> (HashMap<String, ObjectKey>, Vec<KidConflict>) {
    let mut claims: Vec<(&str, bool, i64, &ObjectKey)> = Vec::new();
    for (ring_key, key) in keys {
        let Some(ring) = rings.get(ring_key) else { continue };
        for v in ring.published(&key.policy, now) {
            let held = previous.and_then(|p| p.kid_owners.get(&v.kid)) == Some(ring_key);
            claims.push((&v.kid, !held, v.created_at, ring_key));
        }
    }
    claims.sort();
    let mut owners: HashMap<String, ObjectKey> = HashMap::new();
    let mut conflicts = Vec::new();
    for (kid, _, _, ring) in claims {
        match owners.get(kid) {
            Some(holder) if holder != ring => {
                conflicts.push(KidConflict { ring: ring.clone(), kid: kid.to_owned(), holder: holder.clone() });
            }
            Some(_) => {}
            None => {
                owners.insert(kid.to_owned(), ring.clone());
            }
        }
    }
    conflicts.sort_by(|a, b| (&a.ring, &a.kid).cmp(&(&b.ring, &b.kid)));
    (owners, conflicts)
}

/// One parsed key version's identity: its ring, its kid and its material's digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct VersionId {
    ring: ObjectKey,
    kid: String,
    alg: SigningAlgorithm,
    digest: [u8; 32],
}

impl VersionId {
    fn of(ring: &ObjectKey, v: &crate::keys::KeyVersion) -> Self {
        use sha2::{Digest, Sha256};
        Self { ring: ring.clone(), kid: v.kid.clone(), alg: v.alg, digest: Sha256::digest(&v.pkcs8).into() }
    }
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

fn key_status(
    obj: &OidcKey,
    readiness: Readiness,
    ring: Option<&KeyRing>,
    policy: &KeyPolicy,
    now: i64,
) -> ObjectStatus {
    ObjectStatus {
        kind: Kind::OidcKey,
        key: ObjectKey::of(&obj.metadata),
        generation: obj.metadata.generation,
        readiness,
        facts: StatusFacts::Key {
            current_kid: ring.map(|r| r.current.kid.clone()),
            next_kid: ring.map(|r| r.next.kid.clone()),
            next_rotation: ring.map(|r| r.rotation_due(policy)),
            published_kids: ring
                .map(|r| r.published(policy, now).into_iter().map(|v| v.kid.clone()).collect())
                .unwrap_or_default(),
        },
    }
}

fn resolve_client(
    obj: &OidcClient,
    k: &ObjectKey,
    creds: Option<&ClientCredentials>,
    keys: &BTreeMap<ObjectKey, Arc<ResolvedKey>>,
    declared: &BTreeMap<ObjectKey, &OidcKey>,
    assignments: &BTreeMap<ObjectKey, &OidcAssignment>,
    client_ids: &HashMap<(String, String), String>,
) -> Result<Arc<ResolvedKey>, Readiness> {
    api::validate::client(&obj.spec).map_err(|e| invalid(&e))?;
    let key_ref = ObjectKey::new(k.namespace.clone(), obj.spec.key.clone());
    let key = match keys.get(&key_ref) {
        Some(key) => key,
        None if obj.spec.key != DEFAULT_KEY && !declared.contains_key(&key_ref) => {
            return Err(not_ready(
                "KeyNotFound",
                format!("spec.key: OidcKey {:?} does not exist in namespace {}", obj.spec.key, k.namespace),
            ));
        }
        None => return Err(not_ready("KeyNotReady", format!("spec.key: OidcKey {:?} is not Ready", obj.spec.key))),
    };
    if !key.allowed_clients.iter().any(|a| a == "*" || *a == k.name) {
        return Err(not_ready(
            "KeyNotAllowed",
            format!("spec.key: OidcKey {:?} does not list this client in spec.allowedClients", obj.spec.key),
        ));
    }
    if i64::try_from(obj.spec.id_token_ttl.as_secs()).unwrap_or(i64::MAX) > key.policy.verification_ttl {
        return Err(not_ready(
            "IdTokenTTLTooLong",
            format!(
                "spec.idTokenTTL ({}) exceeds the verificationTTL ({}) of OidcKey {:?}",
                obj.spec.id_token_ttl,
                api::Duration::from_secs(u64::try_from(key.policy.verification_ttl).unwrap_or_default()),
                obj.spec.key
            ),
        ));
    }
    for (i, a) in obj.spec.assignments.iter().enumerate() {
        if a != ALLOW_ALL && !assignments.contains_key(&ObjectKey::new(k.namespace.clone(), a.clone())) {
            return Err(not_ready(
                "AssignmentNotFound",
                format!("spec.assignments[{i}]: OidcAssignment {a:?} does not exist or is not Ready"),
            ));
        }
    }
    let owner = creds.and_then(|c| client_ids.get(&(k.namespace.clone(), c.client_id.clone())).map(|o| (c, o)));
    if let Some((c, owner)) = owner {
        return Err(not_ready(
            "ClientIdConflict",
            format!("spec.clientId: client_id {:?} is already used by OidcClient {owner:?}", c.client_id),
        ));
    }
    Ok(Arc::clone(key))
}

fn resolve_provider(
    obj: &OidcProvider,
    k: &ObjectKey,
    inputs: &Inputs,
    scopes: &BTreeMap<ObjectKey, Arc<ResolvedScope>>,
) -> Result<(), Readiness> {
    api::validate::provider(&obj.spec).map_err(|e| invalid(&e))?;
    for (i, c) in obj.spec.allowed_clients.iter().enumerate() {
        let exists = inputs
            .clients
            .iter()
            .any(|oc| ObjectKey::of(&oc.metadata) == ObjectKey::new(k.namespace.clone(), c.clone()));
        if c != "*" && !exists {
            return Err(not_ready(
                "ClientNotFound",
                format!("spec.allowedClients[{i}]: OidcClient {c:?} does not exist"),
            ));
        }
    }
    for (i, s) in obj.spec.scopes_supported.iter().enumerate() {
        if !scopes.contains_key(&ObjectKey::new(k.namespace.clone(), s.clone())) {
            return Err(not_ready(
                "ScopeNotFound",
                format!("spec.scopesSupported[{i}]: OidcScope {s:?} does not exist or is not Ready"),
            ));
        }
    }
    Ok(())
}

/// Upper bound of the JWKS cache lifetime, whatever the keys' periods.
const MAX_JWKS_MAX_AGE: u64 = 3600;

fn render_provider(
    k: &ObjectKey,
    issuer: &str,
    obj: &OidcProvider,
    served: &[&Arc<ResolvedClient>],
) -> ResolvedProvider {
    let mut jwks = JwkSet::default();
    let mut algs: BTreeSet<SigningAlgorithm> = BTreeSet::new();
    let mut seen_keys = BTreeSet::new();
    let mut max_age = MAX_JWKS_MAX_AGE;
    for c in served {
        if !seen_keys.insert(c.key.name.clone()) {
            continue;
        }
        algs.insert(c.key.current.algorithm());
        let window = c.key.policy.verification_ttl.min(c.key.policy.rotation_period);
        max_age = max_age.min(u64::try_from(window / 2).unwrap_or(0));
        for jwk in &c.key.published {
            if !jwks.keys.iter().any(|j| j.kid == jwk.kid) {
                jwks.keys.push(jwk.clone());
            }
        }
    }
    // With no clients yet, advertise what the built-in default key would sign with.
    if algs.is_empty() {
        algs.insert(SigningAlgorithm::RS256);
    }
    let mut scopes = vec!["openid".to_owned()];
    scopes.extend(obj.spec.scopes_supported.iter().cloned());
    let discovery = serde_json::json!({
        "issuer": issuer,
        "jwks_uri": ProviderEndpoint::Jwks.url(issuer),
        "authorization_endpoint": ProviderEndpoint::Authorize.url(issuer),
        "token_endpoint": ProviderEndpoint::Token.url(issuer),
        "userinfo_endpoint": ProviderEndpoint::Userinfo.url(issuer),
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "id_token_signing_alg_values_supported": algs.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        "response_types_supported": ["code"],
        "scopes_supported": scopes,
        "subject_types_supported": ["public"],
        "grant_types_supported": ["authorization_code"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256", "plain"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "auth_time", "at_hash", "c_hash"],
    });
    ResolvedProvider {
        name: k.name.clone(),
        namespace: k.namespace.clone(),
        issuer: issuer.to_owned(),
        clients: served.iter().map(|c| c.name.clone()).collect(),
        scopes: obj.spec.scopes_supported.clone(),
        discovery_json: discovery.to_string().into(),
        jwks_json: serde_json::to_string(&jwks).unwrap_or_else(|_| "{\"keys\":[]}".into()).into(),
        jwks_max_age: max_age.max(1),
    }
}

#[cfg(test)]
mod tests {
    /// `vec!` of objects as `Inputs` holds them.
    macro_rules! arcs {
        ($($x:expr),* $(,)?) => { vec![$(std::sync::Arc::new($x)),*] };
    }

    use super::*;
    use crate::api::{OidcAssignmentSpec, OidcClientSpec, OidcKeySpec, OidcProviderSpec, OidcScopeSpec};
    use crate::keys::ring::KeyRing;
    use crate::keys::{KeyVersion, rotation};

    const NOW: i64 = 1_700_000_000;

    fn meta<T: kube::Resource<DynamicType = ()>>(mut o: T, ns: &str) -> T {
        o.meta_mut().namespace = Some(ns.into());
        o
    }

    fn client(name: &str, key: &str, assignments: &[&str]) -> OidcClient {
        let spec: OidcClientSpec = serde_json::from_value(serde_json::json!({
            "key": key, "assignments": assignments, "redirectUris": ["https://app/cb"]
        }))
        .unwrap();
        meta(OidcClient::new(name, spec), "ns")
    }

    fn key(name: &str, spec: OidcKeySpec) -> OidcKey {
        meta(OidcKey::new(name, spec), "ns")
    }

    fn provider(name: &str, clients: &[&str], scopes: &[&str]) -> OidcProvider {
        let spec = OidcProviderSpec {
            issuer: None,
            allowed_clients: clients.iter().map(|s| s.to_string()).collect(),
            scopes_supported: scopes.iter().map(|s| s.to_string()).collect(),
        };
        meta(OidcProvider::new(name, spec), "ns")
    }

    /// Materials as a shell would make them: rings for required keys, credentials for clients.
    fn materials(inputs: &Inputs) -> Materials {
        let mut m = Materials::default();
        for (k, spec) in required_keys(inputs) {
            let ring: KeyRing = rotation::advance(None, &KeyPolicy::from(&spec), NOW, |a| KeyVersion::generate(a, NOW))
                .unwrap()
                .unwrap();
            m.key_rings.insert(k, ring);
        }
        for c in &inputs.clients {
            let creds = crate::credentials::reconcile(None, c.spec.client_id.as_deref(), true).unwrap().unwrap();
            m.credentials.insert(ObjectKey::of(&c.metadata), creds);
        }
        m
    }

    fn status<'a>(dir: &'a Directory, kind: Kind, name: &str) -> &'a ObjectStatus {
        dir.statuses.iter().find(|s| s.kind == kind && s.key.name == name).unwrap()
    }

    fn build_all(inputs: &Inputs) -> Directory {
        build(inputs, &materials(inputs), &ExternalUrl::new("https://op.example:8443/"), NOW, None)
    }

    #[test]
    fn a_client_without_key_uses_the_builtin_default() {
        let inputs = Inputs {
            clients: arcs![client("app", DEFAULT_KEY, &["allow_all"])],
            providers: arcs![provider("p", &["*"], &[])],
            ..Inputs::default()
        };
        let keys = required_keys(&inputs);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[&ObjectKey::new("ns", "default")], OidcKeySpec::builtin_default());
        let dir = build_all(&inputs);
        assert!(status(&dir, Kind::OidcClient, "app").readiness.ready);
        let p = dir.provider("ns", "p").unwrap();
        assert_eq!(p.issuer, "https://op.example:8443/v1/ns/identity/oidc/provider/p");
        let jwks: JwkSet = serde_json::from_str(&p.jwks_json).unwrap();
        assert_eq!(jwks.keys.len(), 2, "current and next");
        let discovery: serde_json::Value = serde_json::from_str(&p.discovery_json).unwrap();
        assert_eq!(discovery["id_token_signing_alg_values_supported"], serde_json::json!(["RS256"]));
        assert_eq!(discovery["jwks_uri"], format!("{}/.well-known/keys", p.issuer));
        assert!(p.jwks_max_age < 24 * 3600);
    }

    #[test]
    fn missing_references_name_the_field_and_the_rest_keep_serving() {
        let inputs = Inputs {
            keys: arcs![key(
                "k",
                OidcKeySpec {
                    allowed_clients: vec!["good".into(), "no-assignment".into()],
                    ..OidcKeySpec::builtin_default()
                },
            )],
            clients: arcs![
                client("good", "k", &["allow_all"]),
                client("no-key", "missing", &["allow_all"]),
                client("not-allowed", "k", &["allow_all"]),
                client("no-assignment", "k", &["ghost"]),
            ],
            providers: arcs![
                provider("p", &["*"], &[]),
                provider("bad-client", &["nope"], &[]),
                provider("bad-scope", &["*"], &["ghost"]),
            ],
            ..Inputs::default()
        };
        let dir = build_all(&inputs);
        let r = &status(&dir, Kind::OidcClient, "no-key").readiness;
        assert_eq!((r.ready, r.reason.as_str()), (false, "KeyNotFound"));
        assert!(r.message.starts_with("spec.key"), "{}", r.message);
        assert_eq!(status(&dir, Kind::OidcClient, "not-allowed").readiness.reason, "KeyNotAllowed");
        let r = &status(&dir, Kind::OidcClient, "no-assignment").readiness;
        assert_eq!(r.reason, "AssignmentNotFound");
        assert!(r.message.starts_with("spec.assignments[0]"), "{}", r.message);
        let r = &status(&dir, Kind::OidcProvider, "bad-client").readiness;
        assert_eq!(r.reason, "ClientNotFound");
        assert!(r.message.starts_with("spec.allowedClients[0]"));
        assert_eq!(status(&dir, Kind::OidcProvider, "bad-scope").readiness.reason, "ScopeNotFound");
        assert!(dir.provider("ns", "bad-scope").is_none());
        // The good ones serve: the provider lists only the Ready client.
        assert!(status(&dir, Kind::OidcClient, "good").readiness.ready);
        let p = dir.provider("ns", "p").unwrap();
        assert_eq!(p.clients.iter().collect::<Vec<_>>(), ["good"]);
    }

    #[test]
    fn id_token_ttl_beyond_verification_ttl_is_not_ready() {
        let mut c = client("app", "k", &["allow_all"]);
        c.spec.id_token_ttl = crate::api::Duration::from_secs(2 * 3600);
        let spec = OidcKeySpec {
            verification_ttl: crate::api::Duration::from_secs(3600),
            allowed_clients: vec!["*".into()],
            ..OidcKeySpec::builtin_default()
        };
        let inputs = Inputs { keys: arcs![key("k", spec)], clients: arcs![c], ..Inputs::default() };
        let dir = build_all(&inputs);
        let r = &status(&dir, Kind::OidcClient, "app").readiness;
        assert_eq!(r.reason, "IdTokenTTLTooLong");
        assert!(r.message.starts_with("spec.idTokenTTL (2h)") && r.message.contains("(1h)"), "{}", r.message);
    }

    #[test]
    fn keys_and_scopes_report_their_problems() {
        let bad_key =
            OidcKeySpec { rotation_period: crate::api::Duration::from_secs(30), ..OidcKeySpec::builtin_default() };
        let scope = meta(
            OidcScope::new("s", OidcScopeSpec { template: Some("{\"a\": {{nope}}}".into()), description: None }),
            "ns",
        );
        let inputs = Inputs { keys: arcs![key("k", bad_key)], scopes: arcs![scope], ..Inputs::default() };
        let dir = build_all(&inputs);
        let r = &status(&dir, Kind::OidcKey, "k").readiness;
        assert_eq!(r.reason, "InvalidSpec");
        assert!(r.message.starts_with("spec.rotationPeriod"));
        let r = &status(&dir, Kind::OidcScope, "s").readiness;
        assert_eq!(r.reason, "TemplateInvalid");
        assert!(r.message.contains("OidcScope s") && r.message.contains("character 6"), "{}", r.message);
    }

    #[test]
    fn pending_material_is_reported_not_served() {
        let inputs = Inputs { clients: arcs![client("app", DEFAULT_KEY, &["allow_all"])], ..Inputs::default() };
        let dir = build(&inputs, &Materials::default(), &ExternalUrl::new("https://x"), NOW, None);
        assert_eq!(status(&dir, Kind::OidcClient, "app").readiness.reason, "KeyNotReady");
    }

    #[test]
    fn client_id_conflicts_are_decided_by_name() {
        let mut a = client("a", DEFAULT_KEY, &["allow_all"]);
        let mut b = client("b", DEFAULT_KEY, &["allow_all"]);
        a.spec.client_id = Some("same".into());
        b.spec.client_id = Some("same".into());
        let inputs = Inputs { clients: arcs![b, a], ..Inputs::default() };
        let dir = build_all(&inputs);
        assert!(status(&dir, Kind::OidcClient, "a").readiness.ready);
        assert_eq!(status(&dir, Kind::OidcClient, "b").readiness.reason, "ClientIdConflict");
        let mut m = materials(&inputs);
        m.secret_conflicts.insert(ObjectKey::new("ns", "a"));
        let dir = build(&inputs, &m, &ExternalUrl::new("https://op.example:8443/"), NOW, None);
        let r = &status(&dir, Kind::OidcClient, "a").readiness;
        assert_eq!(r.reason, "SecretNameConflict");
        assert!(r.message.starts_with("spec.secretName: Secret \"a-oidc-client\""), "{}", r.message);
        assert!(dir.namespace("ns").is_none_or(|v| v.clients.values().all(|c| c.name != "a")), "not served");
    }

    #[test]
    fn assignments_admit_by_entity_or_group() {
        let spec: api::IdentityOidcAuthSpec = serde_json::from_value(serde_json::json!({
            "oidcDiscoveryUrl": "https://issuer", "boundIssuer": "https://issuer", "groups": ["ops"]
        }))
        .unwrap();
        let ident = ResolvedIdentity {
            id: "e1".into(),
            name: "runner".into(),
            key: ObjectKey::new("ns", "runner"),
            group_ids: vec![group_id("ns", "ops")],
            trusted_ips: Vec::new(),
            limits: TokenLimits { ttl: 1, max_ttl: 1, num_uses_limit: 0 },
            source: issuer_source(&spec),
            spec,
        };
        let by = |s: OidcAssignmentSpec| admits(&OidcAssignment::new("a", s), &ident);
        assert!(by(OidcAssignmentSpec { entity_ids: vec!["e1".into()], ..Default::default() }));
        assert!(by(OidcAssignmentSpec { entities: vec!["runner".into()], ..Default::default() }));
        assert!(by(OidcAssignmentSpec { groups: vec!["ops".into()], ..Default::default() }));
        assert!(by(OidcAssignmentSpec { group_ids: vec![group_id("ns", "ops")], ..Default::default() }));
        assert!(!by(OidcAssignmentSpec {
            groups: vec!["dev".into()],
            entity_ids: vec!["e2".into()],
            ..Default::default()
        }));
        assert_ne!(group_id("ns", "ops"), group_id("other", "ops"));
    }

    #[test]
    fn unchanged_keys_are_not_parsed_again() {
        let inputs = Inputs { clients: arcs![client("app", DEFAULT_KEY, &["allow_all"])], ..Inputs::default() };
        let m = materials(&inputs);
        let ext = ExternalUrl::new("https://x");
        let first = build(&inputs, &m, &ext, NOW, None);
        let second = build(&inputs, &m, &ext, NOW + 1, Some(&first));
        let ring = m.key_rings.keys().next().unwrap();
        assert!(Arc::ptr_eq(first.signing_key(ring).unwrap(), second.signing_key(ring).unwrap()));
    }

    fn identity_obj(ns: &str, name: &str, id: &str, created: Option<i64>) -> IdentityOidcAuth {
        let spec: api::IdentityOidcAuthSpec = serde_json::from_value(serde_json::json!({
            "identityId": id, "oidcDiscoveryUrl": "https://issuer", "boundIssuer": "https://issuer",
            "boundAudiences": "api"
        }))
        .unwrap();
        let mut o = meta(IdentityOidcAuth::new(name, spec), ns);
        o.metadata.uid = Some(format!("uid-{ns}-{name}"));
        o.metadata.creation_timestamp = created.map(|t| {
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::from_second(t).unwrap())
        });
        o
    }

    #[test]
    fn a_contested_identity_id_stays_with_the_older_object_then_with_its_holder() {
        // The newcomer sorts first by namespace, but the victim is older.
        let inputs = Inputs {
            identities: arcs![
                identity_obj("aaa", "squatter", "victim-id", Some(NOW)),
                identity_obj("victim", "runner", "victim-id", Some(NOW - 100)),
            ],
            ..Inputs::default()
        };
        let m = materials(&inputs);
        let ext = ExternalUrl::new("https://x");
        let dir = build(&inputs, &m, &ext, NOW, None);
        assert_eq!(dir.identity_by_id("victim-id").unwrap().key, ObjectKey::new("victim", "runner"));
        let r = &dir.status(Kind::IdentityOidcAuth, &ObjectKey::new("aaa", "squatter")).unwrap().readiness;
        assert_eq!(r.reason, "IdentityIdConflict");
        assert!(r.message.starts_with("spec.identityId"), "{}", r.message);
        // Once served, the holder keeps it even against an older newcomer.
        let older = Inputs {
            identities: arcs![
                identity_obj("aaa", "squatter", "victim-id", Some(NOW - 1000)),
                identity_obj("victim", "runner", "victim-id", Some(NOW - 100)),
            ],
            ..Inputs::default()
        };
        let next = build(&older, &m, &ext, NOW + 1, Some(&dir));
        assert_eq!(next.identity_by_id("victim-id").unwrap().key, ObjectKey::new("victim", "runner"));
        // Standalone's first-seen times stand in for creationTimestamp (and beat a forged one).
        let mut m2 = m.clone();
        m2.first_seen.insert((Kind::IdentityOidcAuth, ObjectKey::new("victim", "runner")), 5);
        m2.first_seen.insert((Kind::IdentityOidcAuth, ObjectKey::new("aaa", "squatter")), 9);
        let dir = build(&older, &m2, &ext, NOW, None);
        assert_eq!(dir.identity_by_id("victim-id").unwrap().key, ObjectKey::new("victim", "runner"));
    }

    #[test]
    fn an_identity_must_bind_an_audience_or_say_any() {
        let mut none = identity_obj("ns", "none", "id-1", None);
        none.spec.bound_audiences = " , ".into();
        let mut any = identity_obj("ns", "any", "id-2", None);
        any.spec.bound_audiences = "*".into();
        let inputs = Inputs { identities: arcs![none, any], ..Inputs::default() };
        let dir = build_all(&inputs);
        let r = &status(&dir, Kind::IdentityOidcAuth, "none").readiness;
        assert_eq!(r.reason, "AudienceRequired");
        assert!(r.message.starts_with("spec.boundAudiences"), "{}", r.message);
        assert!(dir.identity_by_id("id-1").is_none(), "never served");
        assert!(dir.identity_by_id("id-2").is_some());
    }

    /// Two namespaces whose rings list the same kid with different material: each signs and
    /// publishes its own, the later one is reported, and the holder keeps the kid.
    #[test]
    fn a_repeated_kid_resolves_inside_its_own_ring_only() {
        let mut victim = client("app", DEFAULT_KEY, &["allow_all"]);
        victim.metadata.namespace = Some("victim".into());
        let mut hostile = client("app", DEFAULT_KEY, &["allow_all"]);
        hostile.metadata.namespace = Some("aaa".into());
        let pv = meta(provider("p", &["*"], &[]), "victim");
        let ph = meta(provider("p", &["*"], &[]), "aaa");
        let inputs = Inputs { clients: arcs![victim, hostile], providers: arcs![pv, ph], ..Inputs::default() };
        let mut m = materials(&inputs);
        let (vk, hk) = (ObjectKey::new("victim", DEFAULT_KEY), ObjectKey::new("aaa", DEFAULT_KEY));
        let victim_kid = m.key_rings[&vk].current.kid.clone();
        let ext = ExternalUrl::new("https://x");
        let first = build(&inputs, &m, &ext, NOW, None);
        let victim_jwks = first.provider("victim", "p").unwrap().jwks_json.clone();
        // The hostile ring now claims the victim's kid with its own material (and an older
        // creation time, which a forger controls).
        let ring = m.key_rings.get_mut(&hk).unwrap();
        ring.current.kid = victim_kid.clone();
        ring.current.created_at = 0;
        let dir = build(&inputs, &m, &ext, NOW + 1, Some(&first));
        assert_eq!(dir.provider("victim", "p").unwrap().jwks_json, victim_jwks, "the victim publishes its own");
        let victim_signer = dir.signing_key(&vk).unwrap();
        let hostile_signer = dir.signing_key(&hk).unwrap();
        assert_eq!((victim_signer.kid(), hostile_signer.kid()), (victim_kid.as_str(), victim_kid.as_str()));
        assert_ne!(victim_signer.jwk(), hostile_signer.jwk(), "each ring signs with its own material");
        assert!(Arc::ptr_eq(victim_signer, first.signing_key(&vk).unwrap()), "the victim's parsed key is reused");
        assert_eq!(
            dir.kid_conflicts,
            vec![KidConflict { ring: hk.clone(), kid: victim_kid.clone(), holder: vk.clone() }]
        );
        // Both stay served (nothing is taken offline).
        assert!(status(&dir, Kind::OidcClient, "app").readiness.ready);
        assert!(dir.namespace("aaa").unwrap().clients.values().all(|c| c.key.current.kid() == victim_kid));
    }
}

//! Clients (OidcClient).
//!
//! Tenant rules here: a client names a key and assignments of its own namespace only
//! ([`in_namespace`]), and the key must list it. Its `client_id` is unique within its
//! namespace: clients are resolved in claim order ([`ClaimRank`]), so a contested id stays
//! with the client that held it, and every other claimant is `ClientIdConflict`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::{
    ClaimRank, Directory, Inputs, Materials, ObjectKey, ObjectStatus, Resolution, ResolvedClient, ResolvedKey,
    StatusFacts, in_claim_order, in_namespace, invalid, not_ready,
};
use crate::api::{self, ALLOW_ALL, DEFAULT_KEY, Kind, OidcAssignment, OidcClient, Readiness};
use crate::credentials::ClientCredentials;
use crate::login::jwks::{ExternalKey, IssuerKeys};

/// What a client may reference: the served keys and assignments, the declared keys (to tell
/// a missing key from one not Ready), and the client ids already taken, by namespace.
struct References<'a> {
    keys: &'a BTreeMap<ObjectKey, Arc<ResolvedKey>>,
    /// Served identities by identity id: a client's id must not be one of its namespace's.
    identity_ids: &'a HashMap<String, Arc<super::ResolvedIdentity>>,
    declared_keys: BTreeSet<ObjectKey>,
    assignments: &'a BTreeMap<ObjectKey, &'a OidcAssignment>,
    client_ids: HashMap<(String, String), String>,
    /// The declared IdentityOidcAuth objects a client may federate with.
    identities: BTreeSet<ObjectKey>,
    /// What the last fetches of clients' `jwksUri`s (and issuers) gave.
    health: &'a crate::login::external::IssuerHealth,
}

/// Resolves every client, in claim order. A client is served once its references resolve
/// and its credentials exist.
pub(super) fn resolve(
    inputs: &Inputs,
    materials: &Materials,
    keys: &BTreeMap<ObjectKey, Arc<ResolvedKey>>,
    identities: &HashMap<String, Arc<super::ResolvedIdentity>>,
    assignments: &BTreeMap<ObjectKey, &OidcAssignment>,
    previous: Option<&Directory>,
) -> Resolution<Arc<ResolvedClient>> {
    let mut refs = References {
        keys,
        identity_ids: identities,
        declared_keys: inputs.keys.iter().map(|k| ObjectKey::of(&k.metadata)).collect(),
        assignments,
        client_ids: HashMap::new(),
        identities: inputs.identities.iter().map(|i| ObjectKey::of(&i.metadata)).collect(),
        health: &materials.issuer_health,
    };
    let mut served: BTreeMap<ObjectKey, Arc<ResolvedClient>> = BTreeMap::new();
    let mut statuses = Vec::new();
    for obj in claim_order(inputs, materials, previous) {
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
            false => resolve_client(obj, &k, creds, &refs),
        };
        let mut effective = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let readiness = match (readiness, creds) {
            (Ok((key, assertion_keys)), Some(creds)) => {
                let published = published_keys(obj, &refs);
                let kids = match (&assertion_keys, &published) {
                    (Some(keys), _) => keys.keys.iter().map(|k| k.jwk.kid.clone()).collect(),
                    (None, Some(Ok(kids))) => kids.clone(),
                    (None, _) => Vec::new(),
                };
                effective = (
                    obj.spec.grant_types.clone(),
                    obj.spec.auth_methods(),
                    kids,
                    obj.spec.federated_identities.clone(),
                );
                refs.client_ids.insert((k.namespace.clone(), creds.client_id.clone()), k.name.clone());
                let client = resolved(obj, &k, creds, key, &inputs.policy, assertion_keys);
                served.insert(k.clone(), Arc::new(client));
                match published {
                    Some(Err(why)) => why,
                    _ => Readiness::ready(format!("client_id {}", creds.client_id)),
                }
            }
            (Ok(_), None) => not_ready("CredentialsPending", "credentials are being generated".into()),
            (Err(r), _) => r,
        };
        let facts = StatusFacts::Client {
            client_id: creds.map(|c| c.client_id.clone()),
            secret_name: obj.credentials_name(),
            grant_types: effective.0,
            auth_methods: effective.1,
            key_ids: effective.2,
            federated_identities: effective.3,
        };
        statuses.push(ObjectStatus::of(Kind::OidcClient, &obj.metadata, readiness, facts));
    }
    Resolution { served, statuses }
}

/// What the fetches of a client's `spec.jwksUri` gave: `None` without one; the `kid`s the
/// last fetch found, or why the client is not Ready: its first fetch is still running, or
/// the last one failed. Such a client is served all the same, as an identity whose issuer
/// is failing is: the token endpoint uses the keys fetched before while they are younger
/// than `--issuer-keys-max-age` (and answers 503 `temporarily_unavailable` without them,
/// until a fetch succeeds), so a `jwksUri` that is down for a moment does not lock the
/// client out. The fetch's error says when the keys it still has are too old.
fn published_keys(obj: &OidcClient, refs: &References<'_>) -> Option<Result<Vec<String>, Readiness>> {
    let source = super::identities::client_keys_source(&obj.spec)?;
    Some(match refs.health.get(&source) {
        None => Err(not_ready("JwksUriPending", format!("spec.jwksUri: fetching {}", source.discovery_url))),
        Some(Err(e)) => Err(not_ready("JwksUriFailed", format!("spec.jwksUri: {e}"))),
        Some(Ok(fetched)) => Ok(fetched.key_ids.clone()),
    })
}

/// Clients in claim order: a client holds its id if the previous snapshot served its
/// credentials' client_id as this client.
fn claim_order<'a>(inputs: &'a Inputs, materials: &Materials, previous: Option<&Directory>) -> Vec<&'a OidcClient> {
    let ranked = inputs.clients.iter().map(|obj| {
        let k = ObjectKey::of(&obj.metadata);
        let held = materials.credentials.get(&k).is_some_and(|c| {
            previous
                .and_then(|p| p.namespace(&k.namespace)?.clients.get(&c.client_id))
                .is_some_and(|held| held.name == k.name)
        });
        (ClaimRank::of(&obj.metadata, Kind::OidcClient, held, materials), &**obj)
    });
    in_claim_order(ranked.collect())
}

/// What a resolved client holds beyond its spec: the key it signs with, and its parsed
/// `private_key_jwt` keys.
type ClientKeys = (Arc<ResolvedKey>, Option<Arc<IssuerKeys>>);

/// The key a client signs with and its registered keys, or the first of its references that
/// does not resolve.
fn resolve_client(
    obj: &OidcClient,
    k: &ObjectKey,
    creds: Option<&ClientCredentials>,
    refs: &References<'_>,
) -> Result<ClientKeys, Readiness> {
    api::validate::client(&obj.spec).map_err(|e| invalid(&e))?;
    let key_ref = in_namespace(k, &obj.spec.key);
    let key = match refs.keys.get(&key_ref) {
        Some(key) => key,
        None if obj.spec.key != DEFAULT_KEY && !refs.declared_keys.contains(&key_ref) => {
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
        if a != ALLOW_ALL && !refs.assignments.contains_key(&in_namespace(k, a)) {
            return Err(not_ready(
                "AssignmentNotFound",
                format!("spec.assignments[{i}]: OidcAssignment {a:?} does not exist or is not Ready"),
            ));
        }
    }
    // A client_credentials token's `sub` is the client's id, an entity's tokens' `sub` its
    // identity id: the two must not meet in one namespace (RFC 9700 §4.15), or a client
    // could get tokens that read as an entity's.
    if let Some((c, identity)) = creds
        .and_then(|c| refs.identity_ids.get(&c.client_id).filter(|i| i.key.namespace == k.namespace).map(|i| (c, i)))
    {
        return Err(not_ready(
            "ClientIdConflict",
            format!(
                "spec.clientId: client_id {:?} is the identityId of IdentityOidcAuth {:?}; a token's sub would name both",
                c.client_id, identity.name
            ),
        ));
    }
    for (i, name) in obj.spec.federated_identities.iter().enumerate() {
        if !refs.identities.contains(&in_namespace(k, name)) {
            return Err(not_ready(
                "FederatedIdentityNotFound",
                format!(
                    "spec.federatedIdentities[{i}]: IdentityOidcAuth {name:?} does not exist in namespace {}",
                    k.namespace
                ),
            ));
        }
    }
    let assertion_keys = match &obj.spec.jwks {
        Some(set) => Some(Arc::new(assertion_keys(set, creds)?)),
        None => None,
    };
    let owner = creds.and_then(|c| refs.client_ids.get(&(k.namespace.clone(), c.client_id.clone())).map(|o| (c, o)));
    if let Some((c, owner)) = owner {
        return Err(not_ready(
            "ClientIdConflict",
            format!("spec.clientId: client_id {:?} is already used by OidcClient {owner:?}", c.client_id),
        ));
    }
    Ok((Arc::clone(key), assertion_keys))
}

/// A client's inline JWK Set as verification keys, or the first key that is not a usable
/// public signature key (or repeats a `kid`, which would make the choice by `kid` ambiguous).
fn assertion_keys(set: &api::ClientJwks, creds: Option<&ClientCredentials>) -> Result<IssuerKeys, Readiness> {
    let invalid_key = |i: usize, why: &str| not_ready("ClientKeyInvalid", format!("spec.jwks.keys[{i}]: {why}"));
    let mut keys = Vec::with_capacity(set.keys.len());
    for (i, jwk) in set.keys.iter().enumerate() {
        let raw = serde_json::to_value(jwk).map_err(|_| invalid_key(i, "cannot be read"))?;
        let key = ExternalKey::new(&raw).filter(ExternalKey::parses).ok_or_else(|| {
            invalid_key(i, "is not a usable public signature key (RSA, EC P-256/384/521 or OKP Ed25519, use sig)")
        })?;
        if set.keys[..i].iter().any(|other| other.kid.is_some() && other.kid == jwk.kid) {
            return Err(invalid_key(i, "repeats the kid of an earlier key"));
        }
        keys.push(key);
    }
    let issuer = creds.map(|c| c.client_id.clone()).unwrap_or_default();
    Ok(IssuerKeys { issuer, keys, fetched_at: 0 })
}

/// A client as the server uses it; a public client has no secret.
fn resolved(
    obj: &OidcClient,
    k: &ObjectKey,
    creds: &ClientCredentials,
    key: Arc<ResolvedKey>,
    policy: &super::Policy,
    assertion_keys: Option<Arc<IssuerKeys>>,
) -> ResolvedClient {
    let cap = u64::try_from(policy.max_token_ttl).unwrap_or(0);
    ResolvedClient {
        name: k.name.clone(),
        namespace: k.namespace.clone(),
        client_id: creds.client_id.clone(),
        client_secret: match obj.spec.uses_secret() {
            true => creds.client_secret.clone(),
            false => None,
        },
        client_type: obj.spec.client_type,
        key,
        redirect_uris: obj.spec.redirect_uris.clone(),
        assignments: obj.spec.assignments.clone(),
        id_token_ttl: obj.spec.id_token_ttl.as_secs().min(cap),
        access_token_ttl: obj.spec.access_token_ttl.as_secs().min(cap),
        grant_types: obj.spec.grant_types.clone(),
        auth_methods: obj.spec.auth_methods(),
        access_token_format: obj.spec.access_token_format,
        audiences: obj.spec.audiences.clone(),
        // `--max-token-ttl` bounds every token, refresh tokens included; a reuse interval
        // longer than a token lives unused would only let a family fork.
        refresh_token_ttl: obj.spec.refresh_token_ttl.as_secs().min(cap),
        refresh_token_max_ttl: obj.spec.refresh_token_max_ttl.as_secs().min(cap),
        refresh_token_reuse_interval: obj
            .spec
            .refresh_token_reuse_interval
            .as_secs()
            .min(obj.spec.refresh_token_ttl.as_secs())
            .min(cap),
        assertion_keys,
        federated_identities: obj.spec.federated_identities.clone(),
        keys_source: super::identities::client_keys_source(&obj.spec),
    }
}

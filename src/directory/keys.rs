//! Key rings: each OidcKey (and each namespace's built-in `default` key) resolved from its
//! own ring only.
//!
//! Tenant rules here: a key version is parsed and cached under its ring, kid and material,
//! so a ring in another namespace that repeats a kid can neither borrow nor replace this
//! ring's key. Kids are global in one respect only: one ring owns each kid (the one that
//! held it, else the older version), and every other ring repeating it is reported
//! ([`KidConflict`]), never taken offline.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::{Directory, Inputs, KidConflict, Materials, ObjectKey, ObjectStatus, Resolution, ResolvedKey, StatusFacts};
use super::{invalid, key_users, not_ready, required_keys};
use crate::api::{self, Kind, OidcKey, OidcKeySpec, Readiness};
use crate::keys::ring::{KeyPolicy, KeyRing};
use crate::keys::{KeyError, KeyVersion, SigningAlgorithm, SigningKey};

/// The keys a snapshot serves, with what the next build reuses.
pub(super) struct Keys {
    pub(super) resolved: Resolution<Arc<ResolvedKey>>,
    /// Every key version parsed (or reused) by this build.
    pub(super) signing_keys: HashMap<VersionId, Arc<SigningKey>>,
    pub(super) kid_owners: HashMap<String, ObjectKey>,
    pub(super) kid_conflicts: Vec<KidConflict>,
}

/// Resolves every required key from its ring, then reports a status for every declared
/// OidcKey. A ring whose material does not parse serves nothing (its OidcKey, if declared,
/// says `KeyMaterialInvalid`).
pub(super) fn resolve(inputs: &Inputs, materials: &Materials, now: i64, previous: Option<&Directory>) -> Keys {
    let declared: BTreeMap<ObjectKey, &OidcKey> =
        inputs.keys.iter().map(|k| (ObjectKey::of(&k.metadata), &**k)).collect();
    let mut cache = ParseCache { parsed: HashMap::new(), previous };
    let mut served: BTreeMap<ObjectKey, Arc<ResolvedKey>> = BTreeMap::new();
    let mut statuses = Vec::new();
    for (key, spec) in required_keys(inputs) {
        let policy = KeyPolicy::from(&spec);
        let Some(ring) = materials.key_rings.get(&key) else { continue };
        match resolve_ring(&mut cache, &key, &spec, ring, now) {
            Ok(r) => {
                served.insert(key.clone(), Arc::new(r));
            }
            Err(e) => {
                if let Some(obj) = declared.get(&key) {
                    statuses.push(key_status(obj, not_ready("KeyMaterialInvalid", e.to_string()), None, &policy, now));
                }
            }
        }
    }
    let (kid_owners, kid_conflicts) = kid_claims(&materials.key_rings, &served, previous, now);
    for obj in &inputs.keys {
        let k = ObjectKey::of(&obj.metadata);
        if statuses.iter().any(|s: &ObjectStatus| s.kind == Kind::OidcKey && s.key == k) {
            continue;
        }
        let policy = KeyPolicy::from(&obj.spec);
        let readiness = readiness(obj, &k, inputs, served.get(&k));
        let ring = materials.key_rings.get(&k).filter(|_| served.contains_key(&k));
        statuses.push(key_status(obj, readiness, ring, &policy, now));
    }
    Keys { resolved: Resolution { served, statuses }, signing_keys: cache.parsed, kid_owners, kid_conflicts }
}

/// The readiness of a declared OidcKey whose material, if any, parsed.
fn readiness(obj: &OidcKey, k: &ObjectKey, inputs: &Inputs, served: Option<&Arc<ResolvedKey>>) -> Readiness {
    let users = key_users(inputs.clients.iter().map(|c| &**c), k);
    match (api::validate::key(&obj.spec), served) {
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
    }
}

/// A key from its ring: the version signing now and every version published now.
fn resolve_ring(
    cache: &mut ParseCache<'_>,
    key: &ObjectKey,
    spec: &OidcKeySpec,
    ring: &KeyRing,
    now: i64,
) -> Result<ResolvedKey, KeyError> {
    let policy = KeyPolicy::from(spec);
    let current = cache.parse(key, &ring.current)?;
    let published = ring
        .published(&policy, now)
        .into_iter()
        .map(|v| cache.parse(key, v).map(|k| k.jwk().clone()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ResolvedKey {
        name: key.name.clone(),
        policy,
        allowed_clients: spec.allowed_clients.clone(),
        current,
        published,
        rotation_due: ring.rotation_due(&policy),
        verifiers: std::sync::OnceLock::new(),
    })
}

/// Parsed key versions of this build, falling back to the previous snapshot's.
///
/// A key version is only ever resolved inside its own ring: the cache is keyed by ring,
/// kid and a digest of the private key, so a ring elsewhere repeating a kid with other
/// material can neither borrow nor replace this one.
struct ParseCache<'a> {
    parsed: HashMap<VersionId, Arc<SigningKey>>,
    previous: Option<&'a Directory>,
}

impl ParseCache<'_> {
    fn parse(&mut self, ring: &ObjectKey, v: &KeyVersion) -> Result<Arc<SigningKey>, KeyError> {
        let id = VersionId::of(ring, v);
        let cached = self.parsed.get(&id).or_else(|| self.previous.and_then(|p| p.signing_keys.get(&id)));
        if let Some(k) = cached {
            let k = Arc::clone(k);
            self.parsed.insert(id, Arc::clone(&k));
            return Ok(k);
        }
        let k = Arc::new(v.parse()?);
        self.parsed.insert(id, Arc::clone(&k));
        Ok(k)
    }
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
pub(super) struct VersionId {
    ring: ObjectKey,
    kid: String,
    alg: SigningAlgorithm,
    digest: [u8; 32],
}

impl VersionId {
    fn of(ring: &ObjectKey, v: &KeyVersion) -> Self {
        use sha2::{Digest, Sha256};
        Self { ring: ring.clone(), kid: v.kid.clone(), alg: v.alg, digest: Sha256::digest(&v.pkcs8).into() }
    }
}

/// An OidcKey's status: its readiness and, while its ring serves, the ring's kids.
fn key_status(
    obj: &OidcKey,
    readiness: Readiness,
    ring: Option<&KeyRing>,
    policy: &KeyPolicy,
    now: i64,
) -> ObjectStatus {
    let facts = StatusFacts::Key {
        current_kid: ring.map(|r| r.current.kid.clone()),
        next_kid: ring.map(|r| r.next.kid.clone()),
        next_rotation: ring.map(|r| r.rotation_due(policy)),
        published_kids: ring
            .map(|r| r.published(policy, now).into_iter().map(|v| v.kid.clone()).collect())
            .unwrap_or_default(),
    };
    ObjectStatus::of(Kind::OidcKey, &obj.metadata, readiness, facts)
}

//! Identities (IdentityOidcAuth, the entities that log in).
//!
//! Tenant rules here: an identity's groups are namespaced ([`group_id`]), but its identity
//! id is global, because a login names no namespace. So identities are resolved across
//! namespaces in claim order ([`ClaimRank`]): a contested id goes to the object that held it,
//! then to the older one, and every other claimant is `IdentityIdConflict`, never served.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::{
    ClaimRank, Directory, ExternalUrl, Inputs, Materials, ObjectKey, ObjectStatus, Resolution, ResolvedIdentity,
    StatusFacts, group_id, in_claim_order, invalid, not_ready,
};
use crate::api::{self, IdentityOidcAuth, Kind, Readiness};
use crate::login::cidr::Cidr;
use crate::login::external::IssuerSource;
use crate::paths;
use crate::sessions::TokenLimits;

/// The identities a snapshot serves, by object and by identity id.
pub(super) struct Identities {
    pub(super) resolved: Resolution<Arc<ResolvedIdentity>>,
    pub(super) by_id: HashMap<String, Arc<ResolvedIdentity>>,
}

/// The external issuer an identity trusts.
pub fn issuer_source(spec: &api::IdentityOidcAuthSpec) -> IssuerSource {
    IssuerSource {
        discovery_url: crate::login::external::discovery_document_url(&spec.oidc_discovery_url),
        ca_cert: spec.ca_cert.clone().filter(|c| !c.trim().is_empty()),
        keys_only: false,
    }
}

/// Where a `private_key_jwt` client's keys are fetched from (`spec.jwksUri`), under the
/// external issuers' fetch rules (the system roots; `--allow-insecure-issuers` for tests).
pub fn client_keys_source(spec: &api::OidcClientSpec) -> Option<IssuerSource> {
    let uri = spec.jwks_uri.as_ref()?;
    Some(IssuerSource { discovery_url: uri.clone(), ca_cert: None, keys_only: true })
}

/// Resolves every identity, in claim order. An identity whose spec is valid and whose id
/// is its own is served even while its issuer's discovery is pending or failing (it holds
/// its id); its status says why it is not Ready.
pub(super) fn resolve(
    inputs: &Inputs,
    materials: &Materials,
    external: &ExternalUrl,
    previous: Option<&Directory>,
) -> Identities {
    let mut served: BTreeMap<ObjectKey, Arc<ResolvedIdentity>> = BTreeMap::new();
    let mut by_id: HashMap<String, Arc<ResolvedIdentity>> = HashMap::new();
    let mut statuses = Vec::new();
    let login_url = format!("{}{}", external.as_str(), paths::LOGIN);
    let mut per_namespace: HashMap<String, usize> = HashMap::new();
    for (obj, id) in claim_order(inputs, materials, previous) {
        let k = ObjectKey::of(&obj.metadata);
        let seen = per_namespace.entry(k.namespace.clone()).or_default();
        *seen += 1;
        let over_cap = materials.identities_per_namespace.filter(|cap| *seen > *cap);
        let readiness = match over_cap.map_or_else(|| claim(obj, id.as_deref(), &by_id), |cap| Err(too_many(cap))) {
            Err(r) => r,
            Ok(id) => {
                let resolved = Arc::new(resolved(obj, &k, id, &inputs.policy));
                by_id.insert(id.to_owned(), Arc::clone(&resolved));
                served.insert(k, Arc::clone(&resolved));
                match review_readiness(&resolved, &inputs.policy) {
                    Some(unavailable) => unavailable,
                    None => discovery_readiness(&resolved, materials, &login_url),
                }
            }
        };
        let facts = StatusFacts::Identity { identity_id: id, login_url: login_url.clone() };
        statuses.push(ObjectStatus::of(Kind::IdentityOidcAuth, &obj.metadata, readiness, facts));
    }
    Identities { resolved: Resolution { served, statuses }, by_id }
}

/// Identities with their ids (declared, else generated), in claim order.
fn claim_order<'a>(
    inputs: &'a Inputs,
    materials: &Materials,
    previous: Option<&Directory>,
) -> Vec<(&'a IdentityOidcAuth, Option<String>)> {
    let ranked = inputs.identities.iter().map(|obj| {
        let key = ObjectKey::of(&obj.metadata);
        let id = obj.spec.identity_id.clone().or_else(|| materials.identity_ids.get(&key).cloned());
        let held = id.as_ref().is_some_and(|id| {
            previous.and_then(|p| p.identities_by_id.get(id)).is_some_and(|i| i.key == key)
                || materials.identity_holders.get(id) == Some(&key)
                || status_holds(obj, id)
        });
        (ClaimRank::of(&obj.metadata, Kind::IdentityOidcAuth, held, materials), (&**obj, id))
    });
    in_claim_order(ranked.collect())
}

/// Why an identity past the namespace's cap is not served: each served identity costs an
/// issuer entry, fetches and a place in every snapshot, so one namespace may not have
/// unboundedly many. The earlier claimants keep theirs.
fn too_many(cap: usize) -> Readiness {
    not_ready(
        "TooManyIdentities",
        format!("the namespace has more than {cap} IdentityOidcAuth objects (--max-identities-per-namespace)"),
    )
}

/// The reasons of a Ready condition written for an identity that took no id.
const CLAIM_REFUSED: [&str; 5] =
    ["InvalidSpec", "AudienceRequired", "IdentityIdPending", "IdentityIdConflict", "TooManyIdentities"];

/// Whether the object's own status (written by the operator; tenants may not write status)
/// says it held `id`: after a restart, a new leader or on a new replica there is no previous
/// snapshot, and without this an older object that claimed the id meanwhile (edited to it,
/// or invalid until then) would take it from its holder. Standalone drops `status` from
/// manifests (anyone who writes a file writes it) and passes its holders in
/// [`Materials::identity_holders`].
fn status_holds(obj: &IdentityOidcAuth, id: &str) -> bool {
    obj.status.as_ref().is_some_and(|s| {
        s.identity_id.as_deref() == Some(id)
            && s.common.conditions.iter().any(|c| c.type_ == "Ready" && !CLAIM_REFUSED.contains(&c.reason.as_str()))
    })
}

/// The identity id this object may take, or why it takes none: an invalid spec, no bound
/// audience, an id still being generated, or an id an earlier claimant took.
fn claim<'a>(
    obj: &IdentityOidcAuth,
    id: Option<&'a str>,
    taken: &HashMap<String, Arc<ResolvedIdentity>>,
) -> Result<&'a str, Readiness> {
    api::validate::identity(&obj.spec).map_err(|e| invalid(&e))?;
    if !crate::login::matching::audiences_bound(&obj.spec.bound_audiences) {
        return Err(not_ready(
            "AudienceRequired",
            "spec.boundAudiences: name the audiences presented JWTs must carry, or \"*\" to accept any \
             (an empty value is refused: RFC 8725 §3.9)"
                .into(),
        ));
    }
    match id {
        None => Err(not_ready("IdentityIdPending", "the identity id is being generated".into())),
        Some(id) if taken.contains_key(id) => Err(not_ready(
            "IdentityIdConflict",
            format!(
                "spec.identityId: {id:?} is already the id of another IdentityOidcAuth (the one that held \
                 it first keeps it)"
            ),
        )),
        Some(id) => Ok(id),
    }
}

/// An identity as login sees it: groups resolved in its own namespace, trusted IPs that
/// parse, and its token limits.
fn resolved(obj: &IdentityOidcAuth, k: &ObjectKey, id: &str, policy: &super::Policy) -> ResolvedIdentity {
    ResolvedIdentity {
        id: id.to_owned(),
        name: k.name.clone(),
        key: k.clone(),
        uid: obj.metadata.uid.as_deref().unwrap_or_default().into(),
        spec: obj.spec.clone(),
        group_ids: obj.spec.groups.iter().map(|g| group_id(&k.namespace, g)).collect(),
        trusted_ips: obj.spec.access_token_trusted_ips.iter().filter_map(|t| Cidr::parse(&t.ip_address).ok()).collect(),
        limits: TokenLimits {
            ttl: obj.spec.access_token_ttl.min(policy.max_token_ttl),
            max_ttl: obj.spec.access_token_max_ttl.min(policy.max_token_ttl),
            num_uses_limit: u64::try_from(obj.spec.access_token_num_uses_limit).unwrap_or(0),
        },
        source: issuer_source(&obj.spec),
    }
}

/// Why a served identity with `spec.tokenReview` is not Ready: no API server answers its
/// TokenReviews (standalone), so every login with it is refused (as when its issuer cannot
/// be read). It stays served, holding its id, as an identity whose issuer is failing does.
fn review_readiness(identity: &ResolvedIdentity, policy: &super::Policy) -> Option<Readiness> {
    (identity.spec.token_review && !policy.token_reviews).then(|| {
        not_ready(
            "TokenReviewUnavailable",
            "spec.tokenReview: no Kubernetes API server answers TokenReviews here (standalone), so every \
             login with this identity is refused; set it to false or run the operator on a cluster"
                .into(),
        )
    })
}

/// A served identity is Ready once its issuer's discovery document names its bound issuer.
fn discovery_readiness(identity: &ResolvedIdentity, materials: &Materials, login_url: &str) -> Readiness {
    let source = &identity.source;
    match materials.issuer_health.get(source) {
        None => not_ready("DiscoveryPending", format!("spec.oidcDiscoveryUrl: fetching {}", source.discovery_url)),
        Some(Err(e)) => not_ready("DiscoveryFailed", format!("spec.oidcDiscoveryUrl: {e}")),
        Some(Ok(fetched)) if fetched.issuer != identity.spec.bound_issuer => not_ready(
            "IssuerMismatch",
            format!(
                "spec.boundIssuer: the discovery document at spec.oidcDiscoveryUrl names issuer {:?}",
                fetched.issuer
            ),
        ),
        Some(Ok(_)) => Readiness::ready(format!("logs in at {login_url} with identityId {}", identity.id)),
    }
}

//! Providers (OidcProvider): an issuer, its discovery document and its JWKS.
//!
//! Tenant rules here: a provider names clients and scopes of its own namespace only
//! ([`in_namespace`]), serves only the served clients of its namespace that it allows (Ready,
//! or Ready=False only because their `jwksUri` fetch failed), and publishes only their
//! keys. Its issuer path names its namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{
    ExternalUrl, Inputs, ObjectKey, ObjectStatus, Resolution, ResolvedClient, ResolvedProvider, ResolvedScope,
    StatusFacts, in_namespace, invalid, not_ready,
};
use crate::api::{self, Kind, OidcProvider, Readiness};
use crate::keys::{JwkSet, SigningAlgorithm};
use crate::paths::{self, ProviderEndpoint};

/// Serves every provider whose references resolve, with its documents rendered once.
pub(super) fn resolve(
    inputs: &Inputs,
    external: &ExternalUrl,
    scopes: &BTreeMap<ObjectKey, Arc<ResolvedScope>>,
    clients: &BTreeMap<ObjectKey, Arc<ResolvedClient>>,
) -> Resolution<Arc<ResolvedProvider>> {
    let mut served: BTreeMap<ObjectKey, Arc<ResolvedProvider>> = BTreeMap::new();
    let mut statuses = Vec::new();
    for obj in &inputs.providers {
        let k = ObjectKey::of(&obj.metadata);
        let issuer = issuer(obj, &k, external);
        let readiness = match resolve_provider(obj, &k, inputs, scopes) {
            Err(r) => r,
            Ok(()) => {
                let allowed = |c: &ResolvedClient| obj.spec.allowed_clients.iter().any(|a| a == "*" || *a == c.name);
                let clients: Vec<&Arc<ResolvedClient>> = clients
                    .iter()
                    .filter(|(ck, c)| ck.namespace == k.namespace && allowed(c))
                    .map(|(_, c)| c)
                    .collect();
                let claims: Vec<&str> = obj
                    .spec
                    .scopes_supported
                    .iter()
                    .filter_map(|s| scopes.get(&in_namespace(&k, s)))
                    .flat_map(|s| s.claims.iter().map(String::as_str))
                    .collect();
                let provider = render_provider(&k, &issuer, obj, &clients, &claims);
                let message = format!("issuer {issuer}, serving {} client(s)", provider.clients.len());
                served.insert(k.clone(), Arc::new(provider));
                Readiness::ready(message)
            }
        };
        statuses.push(ObjectStatus::of(Kind::OidcProvider, &obj.metadata, readiness, StatusFacts::Provider { issuer }));
    }
    Resolution { served, statuses }
}

/// `spec.issuer` (when valid) or the external URL, then the provider's path, which names
/// its namespace and name.
fn issuer(obj: &OidcProvider, k: &ObjectKey, external: &ExternalUrl) -> String {
    let base = obj
        .spec
        .issuer
        .as_deref()
        .and_then(|i| api::validate::issuer_base(i).ok())
        .unwrap_or_else(|| external.as_str().to_owned());
    format!("{base}{}", paths::provider_path(&k.namespace, &k.name))
}

/// Checks the spec, then that every allowed client exists and every scope is served, in
/// the provider's namespace.
fn resolve_provider(
    obj: &OidcProvider,
    k: &ObjectKey,
    inputs: &Inputs,
    scopes: &BTreeMap<ObjectKey, Arc<ResolvedScope>>,
) -> Result<(), Readiness> {
    api::validate::provider(&obj.spec).map_err(|e| invalid(&e))?;
    for (i, c) in obj.spec.allowed_clients.iter().enumerate() {
        let wanted = in_namespace(k, c);
        let exists = inputs.clients.iter().any(|oc| ObjectKey::of(&oc.metadata) == wanted);
        if c != "*" && !exists {
            return Err(not_ready(
                "ClientNotFound",
                format!("spec.allowedClients[{i}]: OidcClient {c:?} does not exist"),
            ));
        }
    }
    for (i, s) in obj.spec.scopes_supported.iter().enumerate() {
        if !scopes.contains_key(&in_namespace(k, s)) {
            return Err(not_ready(
                "ScopeNotFound",
                format!("spec.scopesSupported[{i}]: OidcScope {s:?} does not exist or is not Ready"),
            ));
        }
    }
    Ok(())
}

/// The claims an ID token of this provider may carry (OpenID Connect Discovery §3): the
/// standard ones, `namespace`, and every claim its supported scopes set, each once.
fn claims_supported<'a>(scope_claims: &[&'a str]) -> Vec<&'a str> {
    let mut out = vec!["iss", "sub", "aud", "exp", "iat", "nonce", "auth_time", "at_hash", "c_hash", "namespace"];
    for c in scope_claims {
        if !out.contains(c) {
            out.push(c);
        }
    }
    out
}

/// Upper bound of the JWKS cache lifetime, whatever the keys' periods.
const MAX_JWKS_MAX_AGE: u64 = 3600;

/// The discovery document and JWKS of a provider serving these clients (each key once).
fn render_provider(
    k: &ObjectKey,
    issuer: &str,
    obj: &OidcProvider,
    served: &[&Arc<ResolvedClient>],
    scope_claims: &[&str],
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
    // OpenID Connect Discovery 1.0 §3: "The algorithm RS256 MUST be included" (whatever
    // the served keys sign with; also what the built-in default key signs with).
    algs.insert(SigningAlgorithm::RS256);
    let mut scopes = vec!["openid".to_owned()];
    scopes.extend(obj.spec.scopes_supported.iter().cloned());
    let discovery = serde_json::json!({
        "issuer": issuer,
        "jwks_uri": ProviderEndpoint::Jwks.url(issuer),
        "authorization_endpoint": ProviderEndpoint::Authorize.url(issuer),
        "token_endpoint": ProviderEndpoint::Token.url(issuer),
        "userinfo_endpoint": ProviderEndpoint::Userinfo.url(issuer),
        "introspection_endpoint": ProviderEndpoint::Introspect.url(issuer),
        "revocation_endpoint": ProviderEndpoint::Revoke.url(issuer),
        "introspection_endpoint_auth_methods_supported": crate::oidc::introspect::AUTH_METHODS.map(|m| m.as_str()),
        "revocation_endpoint_auth_methods_supported": crate::api::ClientAuthMethod::ALL.map(|m| m.as_str()),
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "id_token_signing_alg_values_supported": algs.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        "response_types_supported": ["code"],
        "scopes_supported": scopes,
        "subject_types_supported": ["public"],
        "grant_types_supported": crate::oidc::grant::SUPPORTED.map(|g| g.as_str()),
        "token_endpoint_auth_methods_supported": crate::api::ClientAuthMethod::ALL.map(|m| m.as_str()),
        // private_key_jwt: the asymmetric algorithms a client assertion may be signed with
        // (RFC 8414 §2); `none` and HMAC never are.
        "token_endpoint_auth_signing_alg_values_supported": SigningAlgorithm::ALL.map(|a| a.as_str()),
        "introspection_endpoint_auth_signing_alg_values_supported": SigningAlgorithm::ALL.map(|a| a.as_str()),
        "revocation_endpoint_auth_signing_alg_values_supported": SigningAlgorithm::ALL.map(|a| a.as_str()),
        "code_challenge_methods_supported": obj.spec.pkce_methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
        "claims_supported": claims_supported(scope_claims),
    });
    ResolvedProvider {
        name: k.name.clone(),
        namespace: k.namespace.clone(),
        issuer: issuer.to_owned(),
        clients: served.iter().map(|c| c.name.clone()).collect(),
        scopes: obj.spec.scopes_supported.clone(),
        pkce_methods: obj.spec.pkce_methods.clone(),
        discovery_json: discovery.to_string().into(),
        jwks_json: serde_json::to_string(&jwks).unwrap_or_else(|_| "{\"keys\":[]}".into()).into(),
        jwks_max_age: max_age.max(1),
    }
}

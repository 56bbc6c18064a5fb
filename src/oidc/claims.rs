//! ID token and userinfo claims: templates of granted scopes, `at_hash` / `c_hash`.

use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};

use super::OAuthError;
use crate::directory::{NamespaceView, ResolvedIdentity};
use crate::keys::SigningAlgorithm;
use crate::sessions::Alias;
use crate::template::{EntityContext, TemplateError};

/// OpenID Connect Core §3.1.3.6: base64url of the left half of the hash of `value`, with the
/// hash of the ID token's algorithm (SHA-512 for EdDSA with Ed25519).
pub fn half_hash(alg: SigningAlgorithm, value: &str) -> String {
    let digest: Vec<u8> = match alg.hash_len() {
        32 => Sha256::digest(value.as_bytes()).to_vec(),
        48 => Sha384::digest(value.as_bytes()).to_vec(),
        _ => Sha512::digest(value.as_bytes()).to_vec(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

/// A stable alias id for an entity's login alias.
fn alias_id(identity_id: &str, alias_name: &str) -> String {
    let digest = Sha256::digest(format!("oidc-operator.dev/alias\0{identity_id}\0{alias_name}"));
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// What templates see of an entity and its login.
pub fn entity_context(identity: &ResolvedIdentity, alias: &Alias) -> EntityContext {
    EntityContext {
        id: identity.id.clone(),
        name: identity.name.clone(),
        metadata: identity.spec.metadata.clone(),
        group_ids: identity.group_ids.clone(),
        group_names: identity.spec.groups.clone(),
        alias_id: alias_id(&identity.id, &alias.name),
        alias_name: alias.name.clone(),
        alias_metadata: alias.metadata.iter().cloned().collect(),
    }
}

/// The granted scopes' claims for an entity that must still exist (same id, same object,
/// same incarnation):
/// what the token and userinfo endpoints add to `sub`. `gone` is the error when it does not.
pub fn granted_claims<'a>(
    dir: &'a crate::directory::Directory,
    namespace: &str,
    grant: (&crate::directory::IssuedBy<'_>, &Alias, &[String]),
    now: i64,
    gone: OAuthError,
) -> Result<(&'a ResolvedIdentity, Map<String, Value>), OAuthError> {
    let (issuer, alias, scopes) = grant;
    let identity = dir.issuing_identity(issuer).ok_or(gone)?;
    let view = dir.namespace(namespace).ok_or_else(|| OAuthError::ServerError("namespace gone".into()))?;
    let claims = scope_claims(view, scopes, &entity_context(identity, alias), now)?;
    Ok((identity, claims))
}

/// The top-level claims that two or more of `scopes` set; checked at authorize so a request
/// with conflicting scopes gets no code.
pub fn conflicting_claims(view: &NamespaceView, scopes: &[String]) -> Vec<String> {
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for s in scopes {
        if let Some(t) = view.scopes.get(s).and_then(|s| s.template.as_ref()) {
            for c in t.claim_names() {
                *seen.entry(c).or_default() += 1;
            }
        }
    }
    seen.into_iter().filter(|(_, n)| *n > 1).map(|(c, _)| c).collect()
}

/// Refuses a request whose scopes need a value the entity lacks (`missingValues: error`):
/// checked at authorize, so no code is issued that the token endpoint would refuse. The
/// entity's context is built only when such a scope is granted: most authorizations grant
/// none, and the context copies the entity's metadata.
pub fn check_required_values(
    view: &NamespaceView,
    scopes: &[String],
    entity: (&ResolvedIdentity, &Alias),
    now: i64,
) -> Result<(), OAuthError> {
    let strict: Vec<String> =
        scopes.iter().filter(|s| view.scopes.get(*s).is_some_and(|s| s.missing_is_error)).cloned().collect();
    if strict.is_empty() {
        return Ok(());
    }
    scope_claims(view, &strict, &entity_context(entity.0, entity.1), now).map(drop)
}

/// Renders the granted scopes' templates into one claim map.
pub fn scope_claims(
    view: &NamespaceView,
    scopes: &[String],
    entity: &EntityContext,
    now: i64,
) -> Result<Map<String, Value>, OAuthError> {
    let mut out = Map::new();
    for s in scopes {
        let Some(scope) = view.scopes.get(s) else { continue };
        let Some(template) = scope.template.as_ref() else { continue };
        let rendered = template.render(entity, now, scope.missing_is_error).map_err(|e| match e {
            TemplateError::MissingValue(_) => OAuthError::AccessDenied(format!("scope {s}: {e}")),
            e => OAuthError::ServerError(format!("scope {s} did not render: {e}")),
        })?;
        for (k, v) in rendered {
            if out.insert(k.clone(), v).is_some() {
                return Err(OAuthError::InvalidRequest(format!("two granted scopes set the claim {k}")));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(scopes: &[(&str, &str)]) -> NamespaceView {
        let mut v = NamespaceView::default();
        for (name, template) in scopes {
            let scope = crate::directory::ResolvedScope {
                name: name.to_string(),
                claims: Vec::new(),
                missing_is_error: false,
                template: Some(crate::template::Template::parse(template).unwrap()),
            };
            v.scopes.insert(name.to_string(), std::sync::Arc::new(scope));
        }
        v
    }

    #[test]
    fn conflicting_scopes_are_refused() {
        let v = view(&[("a", r#"{"groups": 1, "x": 2}"#), ("b", r#"{"groups": 3}"#), ("c", r#"{"y": {{time.now}}}"#)]);
        let names = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(conflicting_claims(&v, &names(&["openid", "a", "b"])), vec!["groups"]);
        assert!(conflicting_claims(&v, &names(&["a", "c"])).is_empty());
        let e = EntityContext::default();
        assert!(matches!(scope_claims(&v, &names(&["a", "b"]), &e, 0), Err(OAuthError::InvalidRequest(_))));
        let ok = scope_claims(&v, &names(&["openid", "a", "c", "unknown"]), &e, 7).unwrap();
        assert_eq!(Value::Object(ok), serde_json::json!({"groups": 1, "x": 2, "y": 7}));
    }

    #[test]
    fn at_hash_per_algorithm() {
        // OpenID Connect Core §A.3: at_hash of this access token with RS256.
        assert_eq!(
            half_hash(SigningAlgorithm::RS256, "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
        for (alg, len) in [
            (SigningAlgorithm::ES256, 22),
            (SigningAlgorithm::RS384, 32),
            (SigningAlgorithm::ES384, 32),
            (SigningAlgorithm::RS512, 43),
            (SigningAlgorithm::ES512, 43),
            (SigningAlgorithm::EdDSA, 43),
        ] {
            assert_eq!(half_hash(alg, "token").len(), len, "{alg}");
        }
        assert_ne!(half_hash(SigningAlgorithm::RS384, "a"), half_hash(SigningAlgorithm::RS512, "a")[..32]);
    }
}

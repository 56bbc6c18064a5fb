//! Scopes (OidcScope): the claims a provider may add to its tokens.
//!
//! Tenant rule here: a scope serves only the providers of its own namespace (they name it
//! in `spec.scopesSupported`, see `providers`).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Inputs, ObjectKey, ObjectStatus, Resolution, ResolvedScope, StatusFacts, not_ready};
use crate::api::{self, Kind, Readiness};
use crate::template::Template;

/// Serves every scope that validates; an invalid `spec.template` is `TemplateInvalid`.
pub(super) fn resolve(inputs: &Inputs) -> Resolution<Arc<ResolvedScope>> {
    let mut served: BTreeMap<ObjectKey, Arc<ResolvedScope>> = BTreeMap::new();
    let mut statuses = Vec::new();
    for obj in &inputs.scopes {
        let k = ObjectKey::of(&obj.metadata);
        let (readiness, claims) = match api::validate::scope(obj) {
            Err(e) => {
                let reason = if e.field == "spec.template" { "TemplateInvalid" } else { "InvalidSpec" };
                (not_ready(reason, format!("OidcScope {}: {e}", k.name)), Vec::new())
            }
            Ok(claims) => {
                let template = obj.spec.template.as_deref().and_then(|t| Template::parse(t).ok());
                let missing_is_error = obj.spec.missing_values == api::MissingValues::Error;
                let scope = ResolvedScope { name: k.name.clone(), claims: claims.clone(), missing_is_error, template };
                served.insert(k.clone(), Arc::new(scope));
                (Readiness::ready(format!("sets claims [{}]", claims.join(", "))), claims)
            }
        };
        statuses.push(ObjectStatus::of(Kind::OidcScope, &obj.metadata, readiness, StatusFacts::Scope { claims }));
    }
    Resolution { served, statuses }
}

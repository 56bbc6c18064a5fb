//! Assignments (OidcAssignment): who may log in through the clients that name them.
//!
//! Tenant rule here: an assignment counts (and, through [`admits`], admits) only the
//! identities of its own namespace; a client names only assignments of its namespace.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Inputs, ObjectKey, ObjectStatus, Resolution, ResolvedIdentity, StatusFacts, admits, invalid};
use crate::api::{self, Kind, OidcAssignment, Readiness};

/// Serves every valid assignment; its status counts the identities of its namespace that
/// it admits (served ones, whether Ready or not).
pub(super) fn resolve<'a>(
    inputs: &'a Inputs,
    identities: &BTreeMap<ObjectKey, Arc<ResolvedIdentity>>,
) -> Resolution<&'a OidcAssignment> {
    let mut served: BTreeMap<ObjectKey, &OidcAssignment> = BTreeMap::new();
    let mut statuses = Vec::new();
    for obj in &inputs.assignments {
        let k = ObjectKey::of(&obj.metadata);
        let readiness = match api::validate::assignment(obj) {
            Err(e) => invalid(&e),
            Ok(()) => {
                served.insert(k.clone(), obj);
                Readiness::ready("resolved")
            }
        };
        let resolved =
            identities.iter().filter(|(ik, ident)| ik.namespace == k.namespace && admits(obj, ident)).count();
        let facts = StatusFacts::Assignment { resolved_entities: i64::try_from(resolved).unwrap_or(i64::MAX) };
        statuses.push(ObjectStatus::of(Kind::OidcAssignment, &obj.metadata, readiness, facts));
    }
    Resolution { served, statuses }
}

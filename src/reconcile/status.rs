//! Status bodies (`Ready`, `observedGeneration`, each kind's facts) and the Events their
//! transitions announce.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::{Value, json};

use crate::directory::{ObjectStatus, StatusFacts};
use crate::paths::ProviderEndpoint;

fn rfc3339(secs: i64) -> Option<String> {
    k8s_openapi::jiff::Timestamp::from_second(secs).ok().map(|t| t.to_string())
}

/// The condition of type `type_` in an object's status (as JSON), if it has one.
pub fn find_condition(status: Option<&Value>, type_: &str) -> Option<Condition> {
    let conditions = status?.get("conditions")?.as_array()?;
    conditions.iter().filter_map(|c| serde_json::from_value::<Condition>(c.clone()).ok()).find(|c| c.type_ == type_)
}

/// The `Ready` condition in an object's status (as JSON), if it has one.
pub fn ready_condition(status: Option<&Value>) -> Option<Condition> {
    find_condition(status, "Ready")
}

/// The conditions an object's status holds now, to keep their `lastTransitionTime`.
#[derive(Clone, Debug, Default)]
pub struct Previous {
    pub ready: Option<Condition>,
    pub stalled: Option<Condition>,
}

impl Previous {
    pub fn of(status: Option<&Value>) -> Self {
        Self { ready: find_condition(status, "Ready"), stalled: find_condition(status, "Stalled") }
    }
}

/// The status an object should have: `Ready`, then `Stalled` (see
/// [`crate::api::Readiness::stalled_condition`]). `previous` holds its current conditions, so
/// `lastTransitionTime` only moves when a condition's status does.
pub fn desired(st: &ObjectStatus, previous: &Previous, now: i64) -> Value {
    let now_time = Time(k8s_openapi::jiff::Timestamp::from_second(now).unwrap_or_default());
    let ready = st.readiness.condition(st.generation, now_time.clone(), previous.ready.as_ref());
    let stalled = st.readiness.stalled_condition(st.generation, now_time, previous.stalled.as_ref());
    let mut status = json!({"conditions": [ready, stalled]});
    if let Some(g) = st.generation {
        status["observedGeneration"] = g.into();
    }
    match &st.facts {
        StatusFacts::Key { current_kid, next_kid, next_rotation, published_kids } => {
            status["currentKid"] = json!(current_kid);
            status["nextKid"] = json!(next_kid);
            status["nextRotation"] = json!(next_rotation.and_then(rfc3339));
            status["publishedKids"] = json!(published_kids);
        }
        StatusFacts::Client { client_id, secret_name, grant_types, auth_methods, key_ids, federated_identities } => {
            status["clientId"] = json!(client_id);
            status["secretName"] = json!(secret_name);
            if !grant_types.is_empty() {
                status["grantTypes"] = json!(grant_types);
                status["tokenEndpointAuthMethods"] = json!(auth_methods);
            }
            if !key_ids.is_empty() {
                status["keyIds"] = json!(key_ids);
            }
            if !federated_identities.is_empty() {
                status["federatedIdentities"] = json!(federated_identities);
            }
        }
        StatusFacts::Scope { claims } => status["claims"] = json!(claims),
        StatusFacts::Assignment { resolved_entities } => status["resolvedEntities"] = json!(resolved_entities),
        StatusFacts::Provider { issuer } => {
            status["issuer"] = json!(issuer);
            status["discoveryUrl"] = json!(ProviderEndpoint::Discovery.url(issuer));
            status["jwksUrl"] = json!(ProviderEndpoint::Jwks.url(issuer));
        }
        StatusFacts::Identity { identity_id, login_url } => {
            status["identityId"] = json!(identity_id);
            status["loginUrl"] = json!(login_url);
        }
    }
    drop_nulls(&mut status);
    status
}

/// Server-side apply would own empty fields: absent facts are left out instead.
fn drop_nulls(v: &mut Value) {
    if let Value::Object(map) = v {
        map.retain(|_, v| !v.is_null());
    }
}

/// Whether an object's current status already is `desired` (nulls and field order aside).
pub fn matches(current: Option<&Value>, desired: &Value) -> bool {
    let Some(current) = current else { return false };
    let mut current = current.clone();
    drop_nulls(&mut current);
    current == *desired
}

/// The server-side apply body of a status.
pub fn apply_body(kind: crate::api::Kind, status: Value) -> Value {
    json!({"apiVersion": format!("{}/{}", crate::api::GROUP, crate::api::VERSION), "kind": kind.as_str(), "status": status})
}

/// An Event announcing a change of `Ready`.
#[derive(Debug, PartialEq, Eq)]
pub struct Transition {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

/// The Event a change from `previous` to `next` deserves: every change of the condition's
/// status or reason, and an object that starts out not Ready. An object becoming Ready for the
/// first time is not news (its status says so), and would cost one more write per object.
pub fn transition(previous: Option<&Condition>, next: &Condition) -> Option<Transition> {
    let changed = match previous {
        None => next.status != "True",
        Some(p) => p.status != next.status || p.reason != next.reason,
    };
    changed.then(|| Transition {
        warning: next.status != "True",
        reason: next.reason.clone(),
        note: next.message.chars().take(1024).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Kind, Readiness};
    use crate::directory::ObjectKey;

    fn status(ready: Readiness, generation: i64) -> ObjectStatus {
        ObjectStatus {
            kind: Kind::OidcClient,
            key: ObjectKey::new("ns", "app"),
            generation: Some(generation),
            readiness: ready,
            facts: StatusFacts::Client {
                client_id: None,
                secret_name: "app-oidc-client".into(),
                grant_types: Vec::new(),
                auth_methods: Vec::new(),
                key_ids: Vec::new(),
                federated_identities: Vec::new(),
            },
        }
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let ready = status(Readiness::ready("ok"), 1);
        let first = desired(&ready, &Previous::default(), 100);
        assert_eq!(first["observedGeneration"], 1);
        assert_eq!(first["secretName"], "app-oidc-client");
        assert!(first.get("clientId").is_none(), "nulls are left out");
        let again = desired(&status(Readiness::ready("ok"), 2), &Previous::of(Some(&first)), 200);
        assert_eq!(again["conditions"][0]["lastTransitionTime"], first["conditions"][0]["lastTransitionTime"]);
        assert_eq!(again["conditions"][1]["lastTransitionTime"], first["conditions"][1]["lastTransitionTime"]);
        let broken = desired(
            &status(Readiness::not_ready("KeyNotFound", "spec.key: missing"), 2),
            &Previous::of(Some(&first)),
            200,
        );
        assert_ne!(broken["conditions"][0]["lastTransitionTime"], first["conditions"][0]["lastTransitionTime"]);
        assert_ne!(broken["conditions"][1]["lastTransitionTime"], first["conditions"][1]["lastTransitionTime"]);
        assert!(matches(Some(&first), &first));
        let mut with_null = first.clone();
        with_null["clientId"] = Value::Null;
        assert!(matches(Some(&with_null), &first));
        assert!(!matches(Some(&first), &again), "observedGeneration differs");
        assert!(!matches(None, &first));
    }

    /// kstatus and Argo CD read `Stalled=True` as failed, `Ready=False` alone as in progress.
    #[test]
    fn spec_reasons_stall_and_work_in_progress_does_not() {
        let conditions = |r: Readiness| {
            let body = desired(&status(r, 3), &Previous::default(), 100);
            let stalled = find_condition(Some(&body), "Stalled").unwrap();
            (ready_condition(Some(&body)).unwrap(), stalled)
        };
        let (ready, stalled) = conditions(Readiness::ready("ok"));
        assert_eq!((ready.status.as_str(), stalled.status.as_str()), ("True", "False"));
        assert_eq!(stalled.observed_generation, Some(3));
        let (ready, stalled) = conditions(Readiness::not_ready("KeyNotFound", "spec.key: OidcKey \"k\" not found"));
        assert_eq!((ready.status.as_str(), stalled.status.as_str()), ("False", "True"));
        assert_eq!((stalled.reason.as_str(), stalled.message.as_str()), ("KeyNotFound", ready.message.as_str()));
        for reason in crate::api::common::PROGRESSING_REASONS {
            let (ready, stalled) = conditions(Readiness::not_ready(reason, "working"));
            assert_eq!((ready.status.as_str(), stalled.status.as_str()), ("False", "False"), "{reason}");
        }
        for reason in ["InvalidSpec", "TemplateInvalid", "ClientIdConflict", "AudienceRequired", "IssuerMismatch"] {
            assert!(Readiness::not_ready(reason, "m").stalled(), "{reason}");
        }
    }

    #[test]
    fn events_announce_changes_and_initial_problems() {
        let cond = |s: &str, r: &str| {
            ready_condition(Some(&json!({"conditions": [{"type": "Ready", "status": s, "reason": r, "message": "spec.key: m", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}))).unwrap()
        };
        assert_eq!(transition(None, &cond("True", "Ready")), None);
        let t = transition(None, &cond("False", "KeyNotFound")).unwrap();
        assert!(t.warning);
        assert_eq!((t.reason.as_str(), t.note.as_str()), ("KeyNotFound", "spec.key: m"));
        assert!(!transition(Some(&cond("False", "KeyNotFound")), &cond("True", "Ready")).unwrap().warning);
        assert!(transition(Some(&cond("False", "KeyNotFound")), &cond("False", "ScopeNotFound")).is_some());
        assert_eq!(transition(Some(&cond("True", "Ready")), &cond("True", "Ready")), None);
    }
}

//! Status bodies: the `Ready` condition, `observedGeneration` and each kind's facts, written
//! with server-side apply on the status subresource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::FIELD_MANAGER;
use crate::api::{IdentityOidcAuth, Kind, OidcAssignment, OidcClient, OidcKey, OidcProvider, OidcScope};
use crate::directory::{Inputs, ObjectKey, ObjectStatus, StatusFacts};
use crate::paths::ProviderEndpoint;

fn rfc3339(secs: i64) -> Option<String> {
    k8s_openapi::jiff::Timestamp::from_second(secs).ok().map(|t| t.to_string())
}

fn previous_ready(inputs: &Inputs, kind: Kind, key: &ObjectKey) -> Option<Condition> {
    fn find<K: serde::Serialize + kube::Resource>(objs: &[K], key: &ObjectKey) -> Option<Condition> {
        let o = objs.iter().find(|o| ObjectKey::of(o.meta()) == *key)?;
        let v = serde_json::to_value(o).ok()?;
        let conds = v.pointer("/status/conditions")?.as_array()?;
        conds.iter().filter_map(|c| serde_json::from_value::<Condition>(c.clone()).ok()).find(|c| c.type_ == "Ready")
    }
    match kind {
        Kind::OidcKey => find(&inputs.keys, key),
        Kind::OidcClient => find(&inputs.clients, key),
        Kind::OidcScope => find(&inputs.scopes, key),
        Kind::OidcAssignment => find(&inputs.assignments, key),
        Kind::OidcProvider => find(&inputs.providers, key),
        Kind::IdentityOidcAuth => find(&inputs.identities, key),
    }
}

/// The Ready condition of a status body this process wrote.
fn written_ready(body: &Value) -> Option<Condition> {
    serde_json::from_value(body.pointer("/status/conditions/0")?.clone()).ok()
}

/// The apply body of an object's status. `written` is the last body this process wrote for
/// it (preferred over the watch cache, which may lag), so `lastTransitionTime` only moves
/// when the status does.
pub fn body(st: &ObjectStatus, inputs: &Inputs, written: Option<&Value>, now: i64) -> Value {
    let now_time = Time(k8s_openapi::jiff::Timestamp::from_second(now).unwrap_or_default());
    let previous = written.and_then(written_ready).or_else(|| previous_ready(inputs, st.kind, &st.key));
    let condition = st.readiness.condition(st.generation, now_time, previous.as_ref());
    let mut status = json!({"conditions": [condition]});
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
        StatusFacts::Client { client_id, secret_name } => {
            status["clientId"] = json!(client_id);
            status["secretName"] = json!(secret_name);
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
    // Drop nulls: server-side apply would otherwise own empty fields.
    if let Value::Object(map) = &mut status {
        map.retain(|_, v| !v.is_null());
    }
    json!({"apiVersion": format!("{}/{}", crate::api::GROUP, crate::api::VERSION), "kind": st.kind.as_str(), "status": status})
}

/// Writes a status with server-side apply.
pub async fn patch(client: &Client, kind: Kind, key: &ObjectKey, body: Value) -> Result<(), kube::Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(body);
    let (ns, name) = (key.namespace.as_str(), key.name.as_str());
    match kind {
        Kind::OidcKey => {
            Api::<OidcKey>::namespaced(client.clone(), ns).patch_status(name, &params, &patch).await.map(drop)
        }
        Kind::OidcClient => {
            Api::<OidcClient>::namespaced(client.clone(), ns).patch_status(name, &params, &patch).await.map(drop)
        }
        Kind::OidcScope => {
            Api::<OidcScope>::namespaced(client.clone(), ns).patch_status(name, &params, &patch).await.map(drop)
        }
        Kind::OidcAssignment => {
            Api::<OidcAssignment>::namespaced(client.clone(), ns).patch_status(name, &params, &patch).await.map(drop)
        }
        Kind::OidcProvider => {
            Api::<OidcProvider>::namespaced(client.clone(), ns).patch_status(name, &params, &patch).await.map(drop)
        }
        Kind::IdentityOidcAuth => {
            Api::<IdentityOidcAuth>::namespaced(client.clone(), ns).patch_status(name, &params, &patch).await.map(drop)
        }
    }
}

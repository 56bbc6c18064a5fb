//! Prints each object's readiness the way `kubectl get` would, and each client's `client_id`
//! with the path of its credentials file (never a secret).

use std::collections::BTreeMap;

use crate::api::Kind;
use crate::directory::{Directory, Inputs, ObjectKey, StatusFacts};
use crate::metrics::{Metrics, ObjectLabels};

use super::state::StateDir;

#[derive(Default)]
pub struct Reporter {
    shown: BTreeMap<(Kind, ObjectKey), String>,
    /// A digest of each object's spec when last shown: an edit that leaves the row as it was
    /// is still shown, so every edit gets a line.
    specs: BTreeMap<(Kind, ObjectKey), u64>,
}

/// A digest of every declared object's spec.
fn spec_digests(inputs: &Inputs) -> BTreeMap<(Kind, ObjectKey), u64> {
    use std::hash::{Hash, Hasher};
    fn digest<T: serde::Serialize>(spec: &T) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_string(spec).unwrap_or_default().hash(&mut h);
        h.finish()
    }
    let mut out = BTreeMap::new();
    let mut add = |kind: Kind, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, d: u64| {
        out.insert((kind, ObjectKey::of(meta)), d);
    };
    inputs.keys.iter().for_each(|o| add(Kind::OidcKey, &o.metadata, digest(&o.spec)));
    inputs.clients.iter().for_each(|o| add(Kind::OidcClient, &o.metadata, digest(&o.spec)));
    inputs.scopes.iter().for_each(|o| add(Kind::OidcScope, &o.metadata, digest(&o.spec)));
    inputs.assignments.iter().for_each(|o| add(Kind::OidcAssignment, &o.metadata, digest(&o.spec)));
    inputs.providers.iter().for_each(|o| add(Kind::OidcProvider, &o.metadata, digest(&o.spec)));
    inputs.identities.iter().for_each(|o| add(Kind::IdentityOidcAuth, &o.metadata, digest(&o.spec)));
    out
}

impl Reporter {
    /// Prints the rows that changed since the last report.
    pub fn report(&mut self, dir: &Directory, inputs: &Inputs, state: &StateDir, metrics: &Metrics) {
        let mut rows = Vec::new();
        let mut current = BTreeMap::new();
        let specs = spec_digests(inputs);
        metrics.objects.clear();
        for s in &dir.statuses {
            let ready = if s.readiness.ready { "True" } else { "False" };
            metrics.objects.get_or_create(&ObjectLabels { kind: s.kind.to_string(), ready: ready.into() }).inc();
            let row = format!(
                "{:<16} {:<18} {:<24} {:<6} {:<20} {}",
                s.key.namespace, s.kind, s.key.name, ready, s.readiness.reason, s.readiness.message
            );
            let id = (s.kind, s.key.clone());
            let edited = specs.get(&id).is_some_and(|d| self.specs.get(&id).is_some_and(|old| old != d));
            if self.shown.get(&id) != Some(&row) || edited {
                rows.push(row.clone());
                if let StatusFacts::Client { client_id: Some(id), .. } = &s.facts {
                    rows.push(format!(
                        "client {}: client_id={id} credentials={}",
                        s.key,
                        state.client_path(&s.key).display()
                    ));
                }
            }
            current.insert((s.kind, s.key.clone()), row);
        }
        for gone in self.shown.keys().filter(|k| !current.contains_key(*k)) {
            rows.push(format!("{:<16} {:<18} {:<24} removed", gone.1.namespace, gone.0, gone.1.name));
        }
        self.shown = current;
        self.specs = specs;
        if !rows.is_empty() {
            println!("{:<16} {:<18} {:<24} {:<6} {:<20} MESSAGE", "NAMESPACE", "KIND", "NAME", "READY", "REASON");
            for r in rows {
                println!("{r}");
            }
        }
    }
}

//! Prints each object's readiness the way `kubectl get` would, and each client's `client_id`
//! with the path of its credentials file (never a secret).

use std::collections::BTreeMap;

use crate::api::Kind;
use crate::directory::{Directory, Inputs, ObjectKey, StatusFacts};
use crate::server::Metrics;
use crate::server::metrics::ObjectLabels;

use super::state::StateDir;

#[derive(Default)]
pub struct Reporter {
    shown: BTreeMap<(Kind, ObjectKey), String>,
}

impl Reporter {
    /// Prints the rows that changed since the last report.
    pub fn report(&mut self, dir: &Directory, inputs: &Inputs, state: &StateDir, metrics: &Metrics) {
        let mut rows = Vec::new();
        let mut current = BTreeMap::new();
        metrics.objects.clear();
        for s in &dir.statuses {
            let ready = if s.readiness.ready { "True" } else { "False" };
            metrics.objects.get_or_create(&ObjectLabels { kind: s.kind.to_string(), ready: ready.into() }).inc();
            let row = format!(
                "{:<16} {:<18} {:<24} {:<6} {:<20} {}",
                s.key.namespace, s.kind, s.key.name, ready, s.readiness.reason, s.readiness.message
            );
            if self.shown.get(&(s.kind, s.key.clone())) != Some(&row) {
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
        let _ = inputs;
        if !rows.is_empty() {
            println!("{:<16} {:<18} {:<24} {:<6} {:<20} MESSAGE", "NAMESPACE", "KIND", "NAME", "READY", "REASON");
            for r in rows {
                println!("{r}");
            }
        }
    }
}

//! Leader election: only the holder of the Lease writes (Secrets, status, finalizers,
//! Events); every replica watches and serves. The decisions are `reconcile::lease`'s.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::reconcile::lease::{LeaseStep, decide, held, record, released};

/// Which Lease, and who we are.
#[derive(Clone, Debug)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration_secs: i32,
}

fn now_ms() -> i64 {
    crate::clock::unix_now_ms()
}

/// The last lease record seen and when (this process's clock) it was first seen.
type Seen = Option<(Option<(Option<String>, Option<MicroTime>)>, i64)>;

/// One attempt to take or renew the lease: `Ok(true)` when we hold it afterwards.
async fn attempt(api: &Api<Lease>, e: &Election, seen: &mut Seen) -> Result<bool, kube::Error> {
    let current = api.get_opt(&e.name).await?;
    let spec = current.as_ref().and_then(|l| l.spec.as_ref());
    let now = now_ms();
    let rec = record(spec);
    let since = match seen {
        Some((r, since)) if *r == rec => *since,
        _ => {
            *seen = Some((rec, now));
            now
        }
    };
    let step = decide(spec, &e.identity, since, now);
    if let LeaseStep::Wait { .. } = step {
        return Ok(false);
    }
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(e.name.clone()),
            namespace: Some(e.namespace.clone()),
            resource_version: current.as_ref().and_then(|l| l.metadata.resource_version.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(held(spec, &e.identity, e.duration_secs, now, &step)),
    };
    let written = match step {
        LeaseStep::Create => api.create(&PostParams::default(), &lease).await,
        _ => api.replace(&e.name, &PostParams::default(), &lease).await,
    };
    match written {
        Ok(_) => Ok(true),
        // Someone else wrote first: they hold it.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Keeps trying to lead; the receiver says whether we lead now. Leadership is given up when a
/// renewal has not succeeded for two thirds of the lease duration, before anyone else may take it.
pub fn spawn(client: Client, election: Election) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let api: Api<Lease> = Api::namespaced(client, &election.namespace);
    let lease = Duration::from_secs(u64::try_from(election.duration_secs.max(3)).unwrap_or(15));
    let (renew_every, retry_every, renew_deadline) = (lease / 3, Duration::from_secs(2), lease * 2 / 3);
    tokio::spawn(async move {
        let mut last_renewal: Option<Instant> = None;
        let mut seen: Seen = None;
        loop {
            let leading = *tx.borrow();
            // A renewal counts from before it was sent, and a hanging request ends in time to
            // step down before anyone else may take the lease.
            let began = Instant::now();
            let outcome = match tokio::time::timeout(renew_deadline, attempt(&api, &election, &mut seen)).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err("timed out".to_owned()),
            };
            match outcome {
                Ok(true) => {
                    last_renewal = Some(began);
                    if !leading {
                        tracing::info!(lease = %election.name, identity = %election.identity, "became the leader");
                        tx.send_replace(true);
                    }
                }
                Ok(false) => {
                    if leading {
                        tracing::warn!(lease = %election.name, "another replica took the lease; standing by");
                        tx.send_replace(false);
                    }
                }
                Err(err) => {
                    tracing::warn!(lease = %election.name, error = %err, "lease update failed");
                    if leading && last_renewal.is_none_or(|t| t.elapsed() >= renew_deadline) {
                        tracing::warn!(lease = %election.name, "lease not renewed in time; standing by");
                        tx.send_replace(false);
                    }
                }
            }
            tokio::time::sleep(if *tx.borrow() { renew_every } else { retry_every }).await;
        }
    });
    rx
}

/// Gives the lease up (at shutdown) if we hold it, so a successor takes over at once.
pub async fn release(client: Client, election: &Election) {
    let api: Api<Lease> = Api::namespaced(client, &election.namespace);
    let Ok(Some(mut lease)) = api.get_opt(&election.name).await else { return };
    let Some(spec) = lease.spec.as_ref() else { return };
    if spec.holder_identity.as_deref() != Some(election.identity.as_str()) {
        return;
    }
    lease.spec = Some(released(spec, now_ms()));
    match api.replace(&election.name, &PostParams::default(), &lease).await {
        Ok(_) => tracing::info!(lease = %election.name, "lease released"),
        Err(e) => tracing::warn!(lease = %election.name, error = %e, "releasing the lease failed"),
    }
}

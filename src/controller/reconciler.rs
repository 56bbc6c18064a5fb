//! What each kind's controller does for one object: the finalizer of a key, the Secret of a
//! client, and for every kind the status (written only when it changed) and an Event when
//! `Ready` changes. Only the leader writes. Decisions come from `reconcile/` and the snapshot.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::Value;

use super::stores::Managed;
use super::{Context, FIELD_MANAGER, WrittenStatus};
use crate::api::{ClientType, Kind, OidcClient, OidcKey};
use crate::clock::unix_now;
use crate::directory::{ObjectKey, ObjectStatus};
use crate::reconcile::secrets::SecretOwner;
use crate::reconcile::{key, secrets, status};

/// Why a reconcile did not finish; retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{kind} {object}: writing {what}: {source}")]
    Write { kind: Kind, object: ObjectKey, what: &'static str, source: kube::Error },
    #[error("OidcClient {object}: spec.secretName: Secret {secret} exists and does not belong to this client")]
    SecretTaken { object: ObjectKey, secret: String },
}

fn failed(kind: Kind, object: &ObjectKey, what: &'static str) -> impl FnOnce(kube::Error) -> ReconcileError {
    let object = object.clone();
    move |source| ReconcileError::Write { kind, object, what, source }
}

/// Reconciles one object of kind `K`.
pub async fn reconcile<K: Managed>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    if !ctx.leading() {
        return Ok(Action::await_change());
    }
    ctx.app.metrics.reconciled(K::KIND);
    let key = ObjectKey::of(obj.meta());
    // Take what this object needs from the snapshot and let go of it before any write: a
    // reconcile waiting on the API server must not keep an old snapshot of every object alive.
    let (st, issuer) = {
        let Some(dir) = ctx.app.directory.load() else { return Ok(Action::await_change()) };
        (dir.status(K::KIND, &key).cloned(), dir.client_issuer(&key).map(str::to_owned))
    };
    // Not in the snapshot yet: the snapshot keeper triggers again once it is.
    let Some(st) = st else { return Ok(Action::await_change()) };
    let step = match K::KIND {
        Kind::OidcKey => key_finalizer(&ctx, &key).await,
        Kind::OidcClient => client_secret(&ctx, issuer.as_deref(), &key).await,
        _ => Ok(()),
    };
    // The status is written even when the kind's own step failed; the step is retried.
    write_status(&*obj, &key, &st, &ctx).await?;
    step?;
    ctx.written().failures.remove(&(K::KIND, key));
    // An invalid spec waits for a change too: the snapshot keeper triggers on every change.
    Ok(Action::await_change())
}

/// Retries a failed write with exponential backoff per object: 0.5 s, 1 s, 2 s, ... 5 min.
pub fn error_policy<K: Managed>(obj: Arc<K>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    ctx.app.metrics.reconcile_failed(K::KIND);
    let id = (K::KIND, ObjectKey::of(obj.meta()));
    let mut written = ctx.written();
    let n = written.failures.entry(id).or_insert(0);
    *n = n.saturating_add(1);
    let delay = Duration::from_millis(500u64.saturating_mul(1 << (*n - 1).min(10))).min(Duration::from_secs(300));
    tracing::warn!(error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Adds the finalizer to a key, or releases a deleted key once no client signs with it.
async fn key_finalizer(ctx: &Context, k: &ObjectKey) -> Result<(), ReconcileError> {
    let Some(obj) = ctx.stores.get::<OidcKey>(k) else { return Ok(()) };
    let Some(list) = key::finalizers(&obj.metadata, &ctx.stores.clients_using(k)) else { return Ok(()) };
    // A merge patch carrying the resourceVersion never overwrites a concurrent change.
    let patch = serde_json::json!({"metadata": {"finalizers": list, "resourceVersion": obj.metadata.resource_version}});
    let api = Api::<OidcKey>::namespaced(ctx.client.clone(), &k.namespace);
    match api.patch(&k.name, &PatchParams::default(), &Patch::Merge(patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(failed(Kind::OidcKey, k, "finalizers")(e)),
    }
}

/// Writes a client's credentials Secret when it is missing or stale.
async fn client_secret(ctx: &Context, issuer: Option<&str>, k: &ObjectKey) -> Result<(), ReconcileError> {
    let Some(client) = ctx.stores.get::<OidcClient>(k) else { return Ok(()) };
    let name = client.credentials_name();
    let observed = ctx.stores.secret(&k.namespace, &name);
    if observed.as_ref().is_some_and(|s| s.owner != SecretOwner::Client(k.name.clone())) {
        return Err(secret_taken(ctx, &client, k, name).await);
    }
    let overlay = ctx.written().materials.credentials.get(k).cloned();
    let Some(creds) = overlay.or_else(|| observed.as_ref().and_then(|s| s.credentials.clone())) else {
        return Ok(());
    };
    let content = secrets::ClientSecretContent {
        credentials: &creds,
        confidential: client.spec.client_type == ClientType::Confidential,
        issuer,
        ca_bundle: ctx.ca_bundle.as_deref(),
    };
    let wanted = secrets::client_secret(&k.namespace, &name, &k.name, client.metadata.uid.as_deref(), &content);
    if !secrets::needs_write(observed.as_deref(), &wanted) {
        return Ok(());
    }
    // Never write over a Secret the operator does not manage (its cache only holds its own).
    if observed.is_none() {
        let existing = Api::<Secret>::namespaced(ctx.client.clone(), &k.namespace)
            .get_opt(&name)
            .await
            .map_err(failed(Kind::OidcClient, k, "credentials Secret"))?;
        // (one carrying this client's label is ours, written before the cache caught up)
        if existing.is_some_and(|s| secrets::owner_label(&s, secrets::CLIENT_LABEL) != Some(k.name.as_str())) {
            return Err(secret_taken(ctx, &client, k, name).await);
        }
    }
    apply_secret(ctx, &k.namespace, wanted).await.map_err(failed(Kind::OidcClient, k, "credentials Secret"))?;
    if ctx.written().secret_conflicts.remove(k) {
        ctx.changed.notify_one();
    }
    Ok(())
}

/// Reports a `spec.secretName` naming a Secret that is not the client's (another client's
/// credentials, a key ring, the CA, anything unmanaged) with a Warning Event.
async fn secret_taken(ctx: &Context, client: &OidcClient, k: &ObjectKey, name: String) -> ReconcileError {
    let note = format!("spec.secretName: Secret {name} exists and does not belong to this client");
    ctx.announce(client.object_ref(&()), EventType::Warning, "SecretNameConflict", note, "WriteSecret").await;
    // The next snapshot reports it in the client's Ready condition.
    if ctx.written().secret_conflicts.insert(k.clone()) {
        ctx.changed.notify_one();
    }
    ReconcileError::SecretTaken { object: k.clone(), secret: name }
}

/// Server-side apply of a Secret with the operator's field manager.
pub async fn apply_secret(ctx: &Context, namespace: &str, secret: Secret) -> Result<(), kube::Error> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let mut body = serde_json::to_value(&secret).map_err(kube::Error::SerdeError)?;
    body["apiVersion"] = "v1".into();
    body["kind"] = "Secret".into();
    Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(body))
        .await
        .map(drop)
}

fn fingerprint(v: &Value) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    h.finish()
}

/// Writes the object's status from the snapshot when it differs, and announces a change of
/// `Ready` with an Event (reason and message only: never key material or secrets).
async fn write_status<K: Managed>(
    obj: &K,
    k: &ObjectKey,
    st: &ObjectStatus,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let current = serde_json::to_value(obj).ok().and_then(|mut v| v.get_mut("status").map(Value::take));
    let id = (K::KIND, k.clone());
    let uid = obj.meta().uid.clone();
    // A record of another object of the same name (deleted and created again) does not count.
    let written = ctx.written().statuses.get(&id).filter(|w| w.uid == uid).cloned();
    // What this process wrote last is newer than a watch cache that may lag behind it.
    let previous = match &written {
        Some(w) => w.previous(),
        None => status::Previous::of(current.as_ref()),
    };
    let desired = status::desired(st, &previous, unix_now());
    let print = fingerprint(&desired);
    let now_written = status::Previous::of(Some(&desired));
    let Some(condition) = now_written.ready.clone() else { return Ok(()) };
    if written.as_ref().is_some_and(|w| w.fingerprint == print) {
        return Ok(());
    }
    if status::matches(current.as_ref(), &desired) {
        ctx.written().statuses.insert(id, WrittenStatus::new(print, uid.clone(), &now_written));
        return Ok(());
    }
    let api = Api::<K>::namespaced(ctx.client.clone(), &k.namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch_status(&k.name, &params, &Patch::Apply(status::apply_body(K::KIND, desired))).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(failed(K::KIND, k, "status")(e)),
    }
    if let Some(t) = status::transition(previous.ready.as_ref(), &condition) {
        let type_ = if t.warning { EventType::Warning } else { EventType::Normal };
        ctx.announce(obj.object_ref(&()), type_, &t.reason, t.note, "Reconcile").await;
    }
    tracing::debug!(kind = %K::KIND, object = %k, ready = %condition.status, "status written");
    ctx.written().statuses.insert(id, WrittenStatus::new(print, uid.clone(), &now_written));
    Ok(())
}

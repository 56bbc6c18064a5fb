//! The snapshot keeper: after every change (debounced), at the next rotation time, and when
//! an external issuer's health changes, it builds the directory from the stores and swaps it
//! in for the handlers. As leader it also keeps the key rings (created, rotated and pruned by
//! the pure rotation plan, each written to its Secret before it is used), generates missing
//! client credentials, removes credentials Secrets of deleted clients, and asks each kind's
//! controller to reconcile the objects whose outcome changed.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::{Api, DeleteParams};
use kube::runtime::events::EventType;

use super::Context;
use super::reconciler::apply_secret;
use crate::api::{IdentityOidcAuth, Kind, OidcAssignment, OidcClient, OidcKey, OidcProvider, OidcScope};
use crate::clock::{unix_now, unix_now_ms};
use crate::credentials;
use crate::directory::{self, Directory, Inputs, Materials, ObjectKey};
use crate::keys::ring::KeyPolicy;
use crate::keys::{KeyVersion, rotation};
use crate::metrics::ObjectLabels;
use crate::reconcile::secrets::{self, SecretOwner};

/// Changes arriving together are built into one snapshot.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// The longest wait between a change and its snapshot (when builds are slow).
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);
/// A snapshot is rebuilt at least this often (retired keys leave the JWKS on time).
const REBUILD_AT_LEAST_EVERY: i64 = 10;
/// A key ring whose Secret could not be written is retried after this many seconds.
const RING_RETRY: i64 = 2;
/// At most this many Secrets are deleted or marked for deletion in one pass.
const GC_PER_PASS: usize = 16;

type Health = crate::login::external::IssuerHealth;

/// Runs forever.
pub async fn run(ctx: Arc<Context>) {
    let mut leading_rx = ctx.leading.clone();
    let mut views: HashMap<(Kind, ObjectKey), u64> = HashMap::new();
    let mut was_leading = false;
    let mut health = Health::new();
    let mut next_due = 0;
    let mut dirty = true;
    loop {
        let leading = *leading_rx.borrow_and_update();
        if leading != was_leading {
            // A new leader reconciles everything once; what this process wrote as an earlier
            // leader may have been replaced since, so it is forgotten.
            views.clear();
            *ctx.written() = super::Written::default();
            was_leading = leading;
            dirty = true;
        }
        let now = unix_now();
        let sources = ctx.stores.identity_sources();
        let fresh = crate::login::external::refresh_health(&ctx.app.issuers, sources, ctx.refetch, now);
        if fresh != health {
            health = fresh;
            dirty = true;
        }
        let mut took = Duration::ZERO;
        if dirty || now >= next_due {
            let started = std::time::Instant::now();
            next_due = pass(&ctx, leading, &mut views, &health, now).await;
            took = started.elapsed();
            dirty = false;
        }
        tokio::select! {
            _ = ctx.changed.notified() => dirty = true,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            changed = leading_rx.changed() => {
                if changed.is_err() {
                    // The election task is gone (it never ends normally): do not spin.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        if dirty {
            // Under a flood of changes, building takes most of the time: leave at least twice
            // a build's time between builds, so the controllers and the API server get the CPU.
            tokio::time::sleep(DEBOUNCE.max(took * 2).min(MAX_DEBOUNCE)).await;
        }
    }
}

/// One build; returns when the next one is due at the latest.
async fn pass(
    ctx: &Context,
    leading: bool,
    views: &mut HashMap<(Kind, ObjectKey), u64>,
    health: &Health,
    now: i64,
) -> i64 {
    let mut inputs = ctx.stores.inputs();
    inputs.policy.max_token_ttl = ctx.max_token_ttl;
    let mut materials = materials(ctx, &inputs);
    materials.issuer_health = health.clone();
    materials.identities_per_namespace = Some(ctx.app.issuers.limits().max_identities_per_namespace);
    let mut next_due = now + REBUILD_AT_LEAST_EVERY;
    if leading {
        next_due = next_due.min(keep_rings(ctx, &inputs, &mut materials, now).await);
        new_credentials(ctx, &inputs, &mut materials);
        // Deletions are bounded per pass so many of them cannot hold back the snapshot that
        // every namespace waits for; what is left is taken up by the next pass, soon.
        let mut budget = GC_PER_PASS;
        next_due = next_due.min(retire_orphaned_rings(ctx, &inputs, &mut materials, now, &mut budget).await);
        collect_garbage(ctx, &inputs, &mut budget).await;
        if budget == 0 {
            next_due = next_due.min(now + 1);
        }
    }
    let previous = ctx.app.directory.load();
    let started = std::time::Instant::now();
    let dir = directory::build(&inputs, &materials, &ctx.external, now, previous.as_deref());
    let took = started.elapsed();
    for (key, spec) in directory::required_keys(&inputs) {
        if let Some(ring) = materials.key_rings.get(&key) {
            next_due = next_due.min(ring.next_event(&KeyPolicy::from(&spec)));
        }
    }
    ctx.app.metrics.objects.clear();
    for st in &dir.statuses {
        let ready = if st.readiness.ready { "True" } else { "False" };
        let labels = ObjectLabels { kind: st.kind.to_string(), ready: ready.into() };
        ctx.app.metrics.objects.get_or_create(&labels).inc();
    }
    ctx.app.metrics.snapshot_built(unix_now_ms(), took);
    let new_conflicts: Vec<directory::KidConflict> = dir
        .kid_conflicts
        .iter()
        .filter(|c| previous.as_ref().is_none_or(|p| !p.kid_conflicts.contains(c)))
        .cloned()
        .collect();
    // Published before the controllers are triggered: a reconcile must see this snapshot.
    ctx.app.directory.store(dir);
    for c in new_conflicts {
        report_kid_conflict(ctx, leading, &c).await;
    }
    if leading && let Some(dir) = ctx.app.directory.load() {
        trigger_changed(ctx, &inputs, &dir, views);
    }
    next_due.max(now + 1)
}

/// A ring repeating a kid another ring serves: logged (with the holder) and, by the leader,
/// announced as a Warning Event on the ring's Secret (without the holder, which may be
/// another tenant's). Nothing is taken offline: each ring resolves only its own material.
async fn report_kid_conflict(ctx: &Context, leading: bool, c: &directory::KidConflict) {
    tracing::warn!(ring = %c.ring, kid = %c.kid, holder = %c.holder, "a key ring repeats a kid that another ring serves");
    if !leading {
        return;
    }
    let secret = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Secret".into()),
        namespace: Some(c.ring.namespace.clone()),
        name: Some(secrets::key_secret_name(&c.ring.name)),
        ..Default::default()
    };
    let note = format!(
        "kid {} is already served by another key ring; this ring serves its own material in its namespace only",
        c.kid
    );
    ctx.announce(secret, EventType::Warning, "KidConflict", note, "Resolve").await;
}

/// Materials from the Secrets, overlaid by what this process wrote and the watch has not
/// shown yet; identity ids are the objects' UIDs.
fn materials(ctx: &Context, inputs: &Inputs) -> Materials {
    let mut m = Materials::default();
    for s in ctx.stores.secrets() {
        match (&s.owner, &s.key_ring, &s.credentials) {
            (SecretOwner::Key(key), Some(ring), _) => {
                m.key_rings.insert(ObjectKey::new(s.namespace.clone(), key.clone()), ring.clone());
            }
            (SecretOwner::Client(client), _, Some(creds)) => {
                m.credentials.insert(ObjectKey::new(s.namespace.clone(), client.clone()), creds.clone());
            }
            _ => {}
        }
    }
    let mut written = ctx.written();
    // What the watch shows now needs no overlay any more.
    written.materials.key_rings.retain(|k, v| m.key_rings.get(k) != Some(v));
    written.materials.credentials.retain(|k, v| m.credentials.get(k) != Some(v));
    for (k, v) in &written.materials.key_rings {
        m.key_rings.insert(k.clone(), v.clone());
    }
    for (k, v) in &written.materials.credentials {
        m.credentials.insert(k.clone(), v.clone());
    }
    m.secret_conflicts = written.secret_conflicts.clone();
    drop(written);
    for i in &inputs.identities {
        if let Some(uid) = &i.metadata.uid {
            m.identity_ids.insert(ObjectKey::of(&i.metadata), uid.clone());
        }
    }
    m
}

/// Creates, rotates and prunes key rings; each is in its Secret before the snapshot uses it.
/// Returns when a ring that could not be written should be tried again.
async fn keep_rings(ctx: &Context, inputs: &Inputs, materials: &mut Materials, now: i64) -> i64 {
    let mut retry = i64::MAX;
    for (key, spec) in directory::required_keys(inputs) {
        let policy = KeyPolicy::from(&spec);
        let before = materials.key_rings.get(&key);
        let stored = ctx.stores.secret(&key.namespace, &secrets::key_secret_name(&key.name));
        if before.is_none() && stored.is_some() {
            // A Secret that cannot be read as a ring is never replaced: its keys may be in use.
            tracing::warn!(key = %key, "the key ring Secret cannot be read; leaving it alone");
            retry = retry.min(now + REBUILD_AT_LEAST_EVERY);
            continue;
        }
        let had_ring = before.is_some();
        let ring = match rotation::advance(before, &policy, now, |alg| KeyVersion::generate(alg, now)) {
            Ok(Some(ring)) => ring,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "generating key material failed");
                retry = retry.min(now + RING_RETRY);
                continue;
            }
        };
        let stored_version = stored.as_ref().and_then(|s| s.resource_version.clone());
        let written = match secrets::key_secret(&key.namespace, &key.name, &ring) {
            Ok(secret) => write_ring(ctx, &key.namespace, secret, stored_version).await,
            Err(e) => Err(kube::Error::SerdeError(e)),
        };
        if let Err(e) = written {
            // Never use a ring that is not stored: the old one keeps serving.
            tracing::warn!(key = %key, error = %e, "writing the key ring failed; retrying");
            retry = retry.min(now + RING_RETRY);
            continue;
        }
        tracing::info!(key = %key, current_kid = %ring.current.kid, next_kid = %ring.next.kid, "key ring written");
        ctx.app.metrics.rotations.inc();
        if had_ring && let Some(obj) = ctx.stores.get::<OidcKey>(&key) {
            let note = format!("signing with kid {}; next kid {} published", ring.current.kid, ring.next.kid);
            ctx.announce(obj.object_ref(&()), EventType::Normal, "KeyRingUpdated", note, "Rotate").await;
        }
        ctx.written().materials.key_rings.insert(key.clone(), ring.clone());
        materials.key_rings.insert(key, ring);
    }
    retry
}

/// Rings nothing requires (their OidcKey deleted, no client on the built-in `default` key):
/// marked orphaned in their Secret, then deleted with their private keys once the last
/// version leaves its verification window (`keys::retention`). Spends `budget`; returns when
/// the next one is due.
async fn retire_orphaned_rings(
    ctx: &Context,
    inputs: &Inputs,
    materials: &mut Materials,
    now: i64,
    budget: &mut usize,
) -> i64 {
    use crate::keys::retention::{self, Retention};
    let required = directory::required_keys(inputs);
    let declared: std::collections::HashSet<ObjectKey> =
        inputs.keys.iter().map(|k| ObjectKey::of(&k.metadata)).collect();
    let orphans: Vec<ObjectKey> =
        materials.key_rings.keys().filter(|k| !required.contains_key(*k) && !declared.contains(*k)).cloned().collect();
    let mut due = i64::MAX;
    for key in orphans {
        let Some(ring) = materials.key_rings.get(&key) else { continue };
        let name = secrets::key_secret_name(&key.name);
        let Some(stored) = ctx.stores.secret(&key.namespace, &name) else { continue };
        let version = stored.resource_version.clone();
        match retention::orphaned(ring, now) {
            Retention::Keep { until } => due = due.min(until),
            _ if *budget == 0 => due = due.min(now + 1),
            Retention::Mark(marked) => {
                *budget -= 1;
                let written = match secrets::key_secret(&key.namespace, &key.name, &marked) {
                    Ok(secret) => write_ring(ctx, &key.namespace, secret, version).await,
                    Err(e) => Err(kube::Error::SerdeError(e)),
                };
                match written {
                    Ok(()) => {
                        tracing::info!(key = %key, "key ring no longer used; kept until its verification window ends");
                        ctx.written().materials.key_rings.insert(key.clone(), marked.clone());
                        due = due.min(retention::delete_at(&marked, now));
                        materials.key_rings.insert(key, marked);
                    }
                    Err(e) => {
                        tracing::debug!(key = %key, error = %e, "marking an unused key ring failed; retrying");
                        due = due.min(now + RING_RETRY);
                    }
                }
            }
            Retention::Delete => {
                *budget -= 1;
                // Only the version judged: a ring revived meanwhile is not deleted.
                let params = DeleteParams {
                    preconditions: Some(kube::api::Preconditions { resource_version: version, uid: None }),
                    ..DeleteParams::default()
                };
                match Api::<Secret>::namespaced(ctx.client.clone(), &key.namespace).delete(&name, &params).await {
                    Ok(_) => {
                        tracing::info!(key = %key, "unused key ring deleted after its verification window");
                        ctx.written().materials.key_rings.remove(&key);
                        materials.key_rings.remove(&key);
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        ctx.written().materials.key_rings.remove(&key);
                        materials.key_rings.remove(&key);
                    }
                    Err(e) => {
                        tracing::debug!(key = %key, error = %e, "deleting an unused key ring failed; retrying");
                        due = due.min(now + RING_RETRY);
                    }
                }
            }
        }
    }
    due
}

/// Writes a key ring only over the version it was computed from: created when the cache shows
/// no Secret (a conflict means one exists after all), otherwise applied with the cached
/// resourceVersion as precondition. A stale cache (a new leader, a lagging watch) gets a
/// conflict and the next pass retries from fresh state, never overwriting keys it has not seen.
async fn write_ring(ctx: &Context, namespace: &str, secret: Secret, stored: Option<String>) -> Result<(), kube::Error> {
    let api = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    match stored {
        None => {
            let params =
                kube::api::PostParams { field_manager: Some(super::FIELD_MANAGER.into()), ..Default::default() };
            api.create(&params, &secret).await.map(drop)
        }
        Some(version) => {
            let mut secret = secret;
            secret.metadata.resource_version = Some(version);
            apply_secret(ctx, namespace, secret).await
        }
    }
}

/// Client credentials are generated once, then kept (the client controller writes them).
fn new_credentials(ctx: &Context, inputs: &Inputs, materials: &mut Materials) {
    for c in &inputs.clients {
        let key = ObjectKey::of(&c.metadata);
        let secret = c.spec.uses_secret();
        if !materials.credentials.contains_key(&key)
            && ctx
                .stores
                .secret(&key.namespace, &c.credentials_name())
                .is_some_and(|s| s.credentials.is_none() && s.owner == SecretOwner::Client(key.name.clone()))
        {
            // Unreadable credentials are never replaced by new ones.
            continue;
        }
        match credentials::reconcile(materials.credentials.get(&key), c.spec.client_id.as_deref(), secret) {
            Ok(Some(creds)) => {
                ctx.written().materials.credentials.insert(key.clone(), creds.clone());
                materials.credentials.insert(key, creds);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(client = %key, error = %e, "generating credentials failed"),
        }
    }
}

/// Credentials Secrets of deleted clients, and old Secrets of clients whose `secretName`
/// changed (once the new one exists), are deleted. Owner references do the same where the
/// cluster runs a garbage collector.
async fn collect_garbage(ctx: &Context, inputs: &Inputs, budget: &mut usize) {
    let clients: HashMap<ObjectKey, &OidcClient> =
        inputs.clients.iter().map(|c| (ObjectKey::of(&c.metadata), &**c)).collect();
    let secrets = ctx.stores.secrets();
    let stale = secrets::stale_credentials(&secrets, &clients, |ns, n| ctx.stores.secret(ns, n).is_some(), *budget);
    *budget -= stale.len();
    for (s, key) in stale {
        let (ns, name, client) = (s.namespace.clone(), s.name.clone(), key.name.clone());
        // The caches may lag: ask the API server whether the client still names this Secret.
        match Api::<OidcClient>::namespaced(ctx.client.clone(), &ns).get_opt(&client).await {
            Ok(Some(live)) if live.credentials_name() == name => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(client = %key, error = %e, "checking a client before deleting its Secret failed");
                continue;
            }
        }
        match Api::<Secret>::namespaced(ctx.client.clone(), &ns).delete(&name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(secret = %name, namespace = %ns, "credentials Secret of a removed client deleted"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => tracing::debug!(secret = %name, error = %e, "deleting a credentials Secret failed; retrying"),
        }
        if !clients.contains_key(&key) {
            ctx.written().materials.credentials.remove(&key);
        }
    }
}

fn resource_versions(inputs: &Inputs) -> HashMap<(Kind, ObjectKey), &str> {
    fn add<'a, K: Resource>(out: &mut HashMap<(Kind, ObjectKey), &'a str>, kind: Kind, objs: &'a [Arc<K>]) {
        for o in objs {
            out.insert((kind, ObjectKey::of(o.meta())), o.meta().resource_version.as_deref().unwrap_or_default());
        }
    }
    let mut out = HashMap::new();
    add(&mut out, Kind::OidcKey, &inputs.keys);
    add(&mut out, Kind::OidcClient, &inputs.clients);
    add(&mut out, Kind::OidcScope, &inputs.scopes);
    add(&mut out, Kind::OidcAssignment, &inputs.assignments);
    add(&mut out, Kind::OidcProvider, &inputs.providers);
    add(&mut out, Kind::IdentityOidcAuth, &inputs.identities);
    out
}

/// Triggers the controllers for objects whose outcome changed since the last snapshot: the
/// object itself (resourceVersion), its status, and for a client its Secret and issuer.
fn trigger_changed(ctx: &Context, inputs: &Inputs, dir: &Directory, views: &mut HashMap<(Kind, ObjectKey), u64>) {
    let versions = resource_versions(inputs);
    let clients: HashMap<ObjectKey, &OidcClient> =
        inputs.clients.iter().map(|c| (ObjectKey::of(&c.metadata), &**c)).collect();
    let mut key_users: HashMap<ObjectKey, usize> = HashMap::new();
    for c in &inputs.clients {
        let ns = c.metadata.namespace.clone().unwrap_or_default();
        *key_users.entry(ObjectKey::new(ns, c.spec.key.clone())).or_default() += 1;
    }
    let mut seen = HashMap::with_capacity(dir.statuses.len());
    for st in &dir.statuses {
        let id = (st.kind, st.key.clone());
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (st.generation, &st.readiness, &st.facts).hash(&mut h);
        versions.get(&id).hash(&mut h);
        if st.kind == Kind::OidcKey {
            // A deleted key is released when its last client goes, whatever its status.
            key_users.get(&st.key).hash(&mut h);
        }
        if let Some(c) = clients.get(&st.key).filter(|_| st.kind == Kind::OidcClient) {
            dir.client_issuer(&st.key).hash(&mut h);
            let secret = ctx.stores.secret(&st.key.namespace, &c.credentials_name());
            secret.and_then(|s| s.resource_version.clone()).hash(&mut h);
        }
        let view = h.finish();
        if views.get(&id) != Some(&view) {
            match st.kind {
                Kind::OidcKey => ctx.stores.trigger::<OidcKey>(&st.key),
                Kind::OidcClient => ctx.stores.trigger::<OidcClient>(&st.key),
                Kind::OidcScope => ctx.stores.trigger::<OidcScope>(&st.key),
                Kind::OidcAssignment => ctx.stores.trigger::<OidcAssignment>(&st.key),
                Kind::OidcProvider => ctx.stores.trigger::<OidcProvider>(&st.key),
                Kind::IdentityOidcAuth => ctx.stores.trigger::<IdentityOidcAuth>(&st.key),
            }
        }
        seen.insert(id, view);
    }
    *views = seen;
    // Forget what was written for objects that are gone.
    let mut written = ctx.written();
    written.statuses.retain(|id, _| views.contains_key(id));
    written.failures.retain(|id, _| views.contains_key(id));
    written.secret_conflicts.retain(|k| views.contains_key(&(Kind::OidcClient, k.clone())));
}

//! The background purge of the session store, run by every shell: expired identity tokens,
//! and grants (codes, refresh families, client grants) that expired or whose owners left,
//! are dropped so the store's size follows live use, and the ceiling
//! (`--max-session-records`) is only ever reached by live records.

use std::sync::Arc;
use std::time::Duration;

use super::AppState;
use crate::clock::unix_now;
use crate::directory::{Directory, IssuedBy};
use std::collections::BTreeMap;

use crate::api::Kind;

use crate::sessions::redis::{Owner, RedisStore};
use crate::sessions::{GrantSubject, IdentityTokenRecord, Liveness, SessionStore, TokenLimits};

/// Default seconds between two purges.
pub const DEFAULT_INTERVAL: u64 = 10;

/// The purge's view of one directory snapshot.
struct Snapshot<'a>(&'a Directory);

impl Snapshot<'_> {
    /// Whether a client is still served by its provider.
    fn served(&self, namespace: &str, provider: &str, client_id: &str) -> bool {
        match (self.0.provider(namespace, provider), self.0.namespace(namespace)) {
            (Some(p), Some(view)) => view.clients.get(client_id).is_some_and(|c| p.clients.contains(&c.name)),
            _ => false,
        }
    }
}

impl Liveness for Snapshot<'_> {
    fn token_limits(&self, r: &IdentityTokenRecord) -> Option<TokenLimits> {
        let issuer = IssuedBy { id: &r.identity_id, key: &r.identity, uid: &r.identity_uid };
        self.0.issuing_identity(&issuer).map(|i| i.limits)
    }

    /// A code grant lives while its identity (the same incarnation) exists and its client
    /// is served by its provider; a client grant while its client (the same object) is.
    fn grant_alive(&self, grant: &GrantSubject) -> bool {
        if !self.served(grant.namespace(), grant.provider(), grant.client_id()) {
            return false;
        }
        match grant {
            GrantSubject::Code(c) => {
                let issuer = IssuedBy { id: &c.identity_id, key: &c.identity, uid: &c.identity_uid };
                self.0.issuing_identity(&issuer).is_some()
            }
            GrantSubject::Client(g) => self
                .0
                .namespace(&g.namespace)
                .and_then(|v| v.clients.get(&g.client_id))
                .is_some_and(|c| c.name == g.client_name),
        }
    }
}

/// One purge against the current snapshot: a record whose identity, client or provider is
/// gone, or a token whose limits (from the identity's current spec) say it is expired or
/// used up, is dropped. How many. A shared store expires its records itself.
pub fn purge_once(state: &AppState, now: i64) -> usize {
    use crate::sessions::TokenStore;
    let Some(store) = state.tokens.as_memory() else { return 0 };
    let Some(dir) = state.directory.load() else { return 0 };
    let purged = store.purge(now, &Snapshot(&dir));
    state.metrics.store_purged.inc_by(u64::try_from(purged).unwrap_or(u64::MAX));
    state.metrics.store_records.set(i64::try_from(store.records()).unwrap_or(i64::MAX));
    purged
}

/// The owners of records a directory serves, as the shared store indexes them: (namespace,
/// index suffix) of every identity incarnation, client and provider, with its kind and name.
fn owners(dir: &Directory) -> BTreeMap<(String, String), (Kind, String)> {
    let mut out = BTreeMap::new();
    for (ns, view) in &dir.namespaces {
        for i in view.identities.values() {
            let suffix = Owner::Identity { name: &i.key.name, uid: &i.uid, id: &i.id }.suffix();
            out.insert((ns.clone(), suffix), (Kind::IdentityOidcAuth, i.key.name.clone()));
        }
        for c in view.clients.values() {
            // Its users' grants are indexed under it (`c:`), its own (client_credentials
            // grants, spent assertions) under its quota's index (`cs:`): both go with it.
            for owner in [Owner::Client { client_id: &c.client_id }, Owner::ClientGrants { client_id: &c.client_id }] {
                out.insert((ns.clone(), owner.suffix()), (Kind::OidcClient, c.name.clone()));
            }
        }
        for p in view.providers.values() {
            out.insert((ns.clone(), Owner::Provider { name: &p.name }.suffix()), (Kind::OidcProvider, p.name.clone()));
        }
    }
    out
}

/// Whether an owner `before` served and `now` does not has left: its object is no longer
/// declared, or (an identity) it is served under another id or incarnation. An object still
/// declared but not served now (not Ready for a moment, in one replica's view) keeps its
/// records in the shared store; they are refused at use meanwhile and expire.
fn departed(now: &Directory, namespace: &str, kind: Kind, name: &str) -> bool {
    let key = crate::api::ObjectKey::new(namespace, name);
    if now.status(kind, &key).is_none() {
        return true;
    }
    kind == Kind::IdentityOidcAuth
        && now.namespace(namespace).is_some_and(|v| v.identities.values().any(|i| i.key.name == name))
}

/// Removes from the shared store the records of every owner that left between `before`
/// and `now`, by their indexes. Every replica does it for the changes it sees; dropping an
/// index twice is harmless. How many records.
pub async fn drop_departed(store: &RedisStore, before: &Directory, now: &Directory) -> usize {
    let kept = owners(now);
    let mut dropped = 0;
    for ((ns, suffix), (kind, name)) in owners(before) {
        if kept.contains_key(&(ns.clone(), suffix.clone())) || !departed(now, &ns, kind, &name) {
            continue;
        }
        match store.drop_owner(&ns, &suffix).await {
            Ok(n) => dropped += n,
            Err(e) => tracing::warn!(error = %e, "could not drop the records of a departed owner; they expire"),
        }
    }
    dropped
}

/// Purges every `interval`, off the async workers (a purge walks every record under a lock).
/// With a shared store, which expires records itself, it drops the records of owners that
/// left the directory since the last round.
pub async fn run(state: AppState, interval: Duration) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = Arc::new(state);
    let mut seen: Option<Arc<Directory>> = None;
    loop {
        tick.tick().await;
        if let SessionStore::Redis(redis) = &state.tokens {
            let current = state.directory.load();
            if let (Some(before), Some(now)) = (&seen, &current)
                && !Arc::ptr_eq(before, now)
            {
                let n = drop_departed(redis, before, now).await;
                state.metrics.store_purged.inc_by(u64::try_from(n).unwrap_or(u64::MAX));
            }
            if current.is_some() {
                seen = current;
            }
            continue;
        }
        let s = Arc::clone(&state);
        match tokio::task::spawn_blocking(move || purge_once(&s, unix_now())).await {
            Ok(n) if n > 0 => tracing::debug!(purged = n, "session store purged"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "session store purge failed"),
        }
    }
}

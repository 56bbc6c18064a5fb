//! The background purge of the session store, run by every shell: expired and spent codes,
//! access tokens and userinfo tokens are dropped so the store's size follows live use, and the
//! ceiling (`--max-session-records`) is only ever reached by live records.

use std::sync::Arc;
use std::time::Duration;

use super::{AppState, unix_now};
use crate::directory::{Directory, IssuedBy};
use crate::sessions::{CodeRecord, Liveness, TokenLimits, TokenRecord, UserinfoRecord};

/// Default seconds between two purges.
pub const DEFAULT_INTERVAL: u64 = 10;

/// The purge's view of one directory snapshot.
struct Snapshot<'a>(&'a Directory);

impl Snapshot<'_> {
    /// Whether a grant's identity still exists (the same incarnation) and its client is
    /// still served by its provider.
    fn grant_alive(&self, namespace: &str, provider: &str, client_id: &str, issuer: &IssuedBy<'_>) -> bool {
        let served = match (self.0.provider(namespace, provider), self.0.namespace(namespace)) {
            (Some(p), Some(view)) => view.clients.get(client_id).is_some_and(|c| p.clients.contains(&c.name)),
            _ => false,
        };
        served && self.0.issuing_identity(issuer).is_some()
    }
}

impl Liveness for Snapshot<'_> {
    fn token_limits(&self, r: &TokenRecord) -> Option<TokenLimits> {
        let issuer = IssuedBy { id: &r.identity_id, key: &r.identity, uid: &r.identity_uid };
        self.0.issuing_identity(&issuer).map(|i| i.limits)
    }

    fn code_alive(&self, c: &CodeRecord) -> bool {
        let issuer = IssuedBy { id: &c.identity_id, key: &c.identity, uid: &c.identity_uid };
        self.grant_alive(&c.namespace, &c.provider, &c.client_id, &issuer)
    }

    fn userinfo_alive(&self, u: &UserinfoRecord) -> bool {
        let issuer = IssuedBy { id: &u.identity_id, key: &u.identity, uid: &u.identity_uid };
        self.grant_alive(&u.namespace, &u.provider, &u.client_id, &issuer)
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

/// Purges every `interval`, off the async workers (a purge walks every record under a lock).
pub async fn run(state: AppState, interval: Duration) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = Arc::new(state);
    loop {
        tick.tick().await;
        let s = Arc::clone(&state);
        match tokio::task::spawn_blocking(move || purge_once(&s, unix_now())).await {
            Ok(n) if n > 0 => tracing::debug!(purged = n, "session store purged"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "session store purge failed"),
        }
    }
}

//! The background purge of the session store, run by every shell: expired and spent codes,
//! access tokens and userinfo tokens are dropped so the store's size follows live use, and the
//! ceiling (`--max-session-records`) is only ever reached by live records.

use std::sync::Arc;
use std::time::Duration;

use super::{AppState, unix_now};
use crate::directory::IssuedBy;

/// Default seconds between two purges.
pub const DEFAULT_INTERVAL: u64 = 10;

/// One purge against the current snapshot: a token whose identity is gone, or whose limits
/// (from the identity's current spec) say it is expired or used up, is dropped. How many.
/// A shared store expires its records itself: nothing to do here.
pub fn purge_once(state: &AppState, now: i64) -> usize {
    use crate::sessions::TokenStore;
    let Some(store) = state.tokens.as_memory() else { return 0 };
    let Some(dir) = state.directory.load() else { return 0 };
    let purged = store.purge(now, &|r| {
        let issuer = IssuedBy { id: &r.identity_id, key: &r.identity, uid: &r.identity_uid };
        dir.issuing_identity(&issuer).map(|i| i.limits)
    });
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

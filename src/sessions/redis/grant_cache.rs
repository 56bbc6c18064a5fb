//! This replica's memory of the grants it has read refresh tokens under.
//!
//! A grant's record (the code it was issued for: client, identity, scopes) and its refresh
//! family's absolute expiry never change once stored, so a refresh that this replica has seen
//! before can decide from them without a round trip to Redis: the store's atomic refresh step
//! still checks the presented token itself (known, current or within its reuse interval,
//! family alive), so a remembered grant can never make a revoked, reused or expired token
//! work. What it does not know is whether the presented token was rotated; the refresh
//! driver reads the token when its decision refuses, so a reused token still revokes its
//! family whatever else is wrong with the request (RFC 9700 §4.14.2).
//!
//! Bounded: at most [`CAPACITY`] grants of at most [`LARGEST`] bytes each (a larger record,
//! a long `redirect_uri` or `nonce`, is read each time). When full, the expired ones go, and
//! if that leaves it more than three quarters full, every one (the next refreshes read
//! again): either way the next sweep is a quarter of the capacity away, so a replica with
//! more live grants than it can remember does not sweep at every new one.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::sessions::{GrantId, GrantSubject};

/// Grants remembered at most (a code record is a few hundred bytes).
pub(super) const CAPACITY: usize = 8192;
/// The largest grant remembered, by its quota charge's bytes.
pub(super) const LARGEST: usize = 2048;

#[derive(Default)]
pub(super) struct GrantCache {
    entries: Mutex<HashMap<GrantId, Remembered>>,
}

struct Remembered {
    grant: GrantSubject,
    family_expires_at: i64,
}

impl GrantCache {
    /// The grant `id` and its family's expiry, if remembered and not expired at `now`.
    pub(super) fn get(&self, id: &GrantId, now: i64) -> Option<(GrantSubject, i64)> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(id)?;
        if now >= entry.family_expires_at {
            entries.remove(id);
            return None;
        }
        Some((entry.grant.clone(), entry.family_expires_at))
    }

    pub(super) fn remember(&self, id: GrantId, grant: &GrantSubject, family_expires_at: i64, now: i64) {
        if grant.charge().bytes > LARGEST {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.contains_key(&id) {
            return;
        }
        if entries.len() >= CAPACITY {
            entries.retain(|_, e| now < e.family_expires_at);
            if entries.len() > CAPACITY / 4 * 3 {
                entries.clear();
            }
        }
        entries.insert(id, Remembered { grant: grant.clone(), family_expires_at });
    }

    /// Forgets a grant that is gone (revoked, or its family by a reuse).
    pub(super) fn forget(&self, id: &GrantId) {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::ClientGrant;

    fn grant(n: u8) -> GrantSubject {
        GrantSubject::Client(ClientGrant {
            namespace: "ns".into(),
            provider: "p".into(),
            client_id: format!("c{n}"),
            client_name: "c".into(),
            scopes: vec![],
            audiences: vec![],
            issued_at: 0,
        })
    }

    #[test]
    fn remembers_until_the_family_expires_and_stays_bounded() {
        let cache = GrantCache::default();
        cache.remember([1; 32], &grant(1), 100, 0);
        assert_eq!(cache.get(&[1; 32], 99), Some((grant(1), 100)));
        assert_eq!(cache.get(&[1; 32], 100), None, "an expired family is not remembered");
        assert_eq!(cache.len(), 0);

        let fill = |cache: &GrantCache, from: usize, to: usize, family: i64| {
            for i in from..to {
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&(i as u64).to_le_bytes());
                cache.remember(id, &grant(2), family, 0);
            }
        };
        // Full of live grants: every one goes, and the newcomer stays.
        fill(&cache, 0, CAPACITY, 1000);
        assert_eq!(cache.len(), CAPACITY);
        cache.remember([9; 32], &grant(9), 1000, 0);
        assert_eq!(cache.len(), 1);
        cache.forget(&[9; 32]);
        assert_eq!(cache.get(&[9; 32], 0), None);

        // Full, half of it expired by now: only those go.
        fill(&cache, 0, CAPACITY / 2, 10);
        fill(&cache, CAPACITY / 2, CAPACITY, 1000);
        cache.remember([8; 32], &grant(8), 1000, 20);
        assert_eq!(cache.len(), CAPACITY / 2 + 1);
        assert_eq!(cache.get(&[8; 32], 20), Some((grant(8), 1000)));

        // A large record is read each time.
        let mut large = grant(7);
        if let GrantSubject::Client(c) = &mut large {
            c.scopes = vec!["s".repeat(LARGEST)];
        }
        cache.remember([7; 32], &large, 1000, 0);
        assert_eq!(cache.get(&[7; 32], 0), None);
    }
}

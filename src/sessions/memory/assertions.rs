//! Spent client assertions in the memory store.

use super::{MemoryStore, locked, shrink};
use crate::sessions::quota::{Charge, ChargeOwner, RECORD_OVERHEAD};
use crate::sessions::{AssertionSpend, AssertionUse, RecordKind, StoreError};

/// A spent `jti`: until when, and whom it is charged to (to give the charge back).
pub(super) struct Spent {
    expires_at: i64,
    namespace: String,
    client: String,
}

impl Spent {
    fn charge(&self) -> Charge<'_> {
        Charge {
            namespace: &self.namespace,
            owner: ChargeOwner::Client { namespace: &self.namespace, name: &self.client },
            bytes: RECORD_OVERHEAD + self.namespace.len() + self.client.len(),
            kind: RecordKind::ClientAssertion,
        }
    }
}

impl MemoryStore {
    /// Spends an assertion's `jti`: `Fresh` the first time (the record is kept, charged,
    /// until its expiry), `Replayed` while a live record holds it. Refused at a ceiling or
    /// quota, nothing is kept and the assertion is not accepted.
    pub fn spend_assertion(&self, spend: &AssertionUse<'_>, now: i64) -> Result<AssertionSpend, StoreError> {
        let hash = spend.hash();
        locked(&self.assertions, |m| {
            if m.get(&hash).is_some_and(|s| now < s.expires_at) {
                return Ok(AssertionSpend::Replayed);
            }
            self.reserve_all(&[spend.charge()])?;
            let spent =
                Spent { expires_at: spend.expires_at, namespace: spend.namespace.into(), client: spend.client.into() };
            if let Some(old) = m.insert(hash, spent) {
                self.release_all(&[old.charge()]);
            }
            Ok(AssertionSpend::Fresh)
        })
    }

    /// Drops the records of assertions past their expiry; how many.
    pub(super) fn purge_assertions(&self, now: i64) -> usize {
        locked(&self.assertions, |m| {
            let before = m.len();
            m.retain(|_, s| {
                let keep = now < s.expires_at;
                if !keep {
                    self.release_all(&[s.charge()]);
                }
                keep
            });
            shrink(m);
            before - m.len()
        })
    }
}

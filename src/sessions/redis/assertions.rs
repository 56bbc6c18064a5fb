//! Spent client assertions in the shared store: one key per `jti`,
//! `P:{<hash>}:jti`, set only if absent and expiring with the assertion, so a `jti` is
//! accepted once across every replica.

use super::tenants::Owner;
use super::{RedisStore, StoreError, ms};
use crate::sessions::{AssertionSpend, AssertionUse, RecordKind};

impl RedisStore {
    /// Spends an assertion's `jti` (see [`crate::sessions::SessionStore::spend_assertion`]):
    /// `SET NX` with the assertion's expiry first (a replay is answered then, charged
    /// nothing: a replay's charge would share the live record's member in the quota index),
    /// then the charge; refused at a quota, the key goes again and the assertion is not
    /// accepted.
    pub async fn spend_assertion(&self, spend: &AssertionUse<'_>) -> Result<AssertionSpend, StoreError> {
        let key = self.key(&spend.hash(), "jti");
        let mut cmd = redis::cmd("SET");
        cmd.arg(&key).arg(1).arg("NX").arg("PXAT").arg(ms(spend.expires_at));
        let set: Result<Option<String>, StoreError> = self.run("assertion_spend", cmd).await;
        if self.counted(RecordKind::ClientAssertion, set)?.is_none() {
            return Ok(AssertionSpend::Replayed);
        }
        // The client's own index (`cs:`) is also what its departure drops.
        let owners = [Owner::ClientGrants { client_id: spend.client_id }, Owner::Provider { name: spend.provider }];
        if let Err(e) = self.charge(&key, &spend.charge(), &owners, spend.expires_at).await {
            let mut del = redis::cmd("DEL");
            del.arg(&key);
            if let Err(undo) = self.run::<i64>("assertion_undo", del).await {
                tracing::warn!(error = %undo, "a refused assertion's jti stays spent until its expiry");
            }
            return Err(e);
        }
        Ok(AssertionSpend::Fresh)
    }
}

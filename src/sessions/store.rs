//! The session store the servers call. Async, so that a store across the network can sit
//! behind the same calls; the memory store answers at once. Every error of a shared store is
//! [`StoreError::Unavailable`] / [`TokenError::Unavailable`], which every endpoint answers
//! with 503 `temporarily_unavailable`: never a token or code that could not be checked.
//! Each store counts the records it refuses (a ceiling, a quota, `maxmemory`) by kind and
//! reason itself, so callers only answer them.

use std::sync::Arc;

use super::redis::RedisStore;
use super::{
    AccessIssue, AccessTokenView, ClientGrant, CodeBinding, CodeRecord, CodeRedemption, GrantBinding, GrantId,
    GrantSubject, IdentityTokenRecord, Issue, MemoryStore, RefreshOutcome, RefreshRead, RefreshView, StoreError,
    TokenError, TokenLimits, TokenStore,
};
use crate::api::ObjectKey;
use crate::sessions::{AssertionSpend, AssertionUse};

/// Where codes and tokens live.
#[derive(Clone)]
pub enum SessionStore {
    /// One replica's memory (the default).
    Memory(Arc<MemoryStore>),
    /// Redis or Valkey, shared by every replica (`--session-store`).
    Redis(Arc<RedisStore>),
}

impl SessionStore {
    /// A memory store holding at most `max_records` live records, with no tenant shares.
    pub fn memory(max_records: usize) -> Self {
        Self::Memory(Arc::new(MemoryStore::with_limit(max_records)))
    }

    /// A memory store under `quotas`.
    pub fn memory_with(quotas: super::Quotas) -> Self {
        Self::Memory(Arc::new(MemoryStore::with_quotas(quotas)))
    }

    /// A server's memory store under `quotas`, counting its refusals in `metrics`.
    pub fn memory_counted(quotas: super::Quotas, metrics: Arc<crate::metrics::Metrics>) -> Self {
        Self::Memory(Arc::new(MemoryStore::counted(quotas, metrics)))
    }

    /// The memory store, when that is where records live (purge, ceiling, bench figures).
    pub fn as_memory(&self) -> Option<&MemoryStore> {
        match self {
            Self::Memory(m) => Some(m),
            Self::Redis(_) => None,
        }
    }

    /// Why the store cannot answer, when it cannot (`/readyz`).
    pub fn down_cause(&self) -> Option<String> {
        match self {
            Self::Memory(_) => None,
            Self::Redis(r) => (!r.is_up()).then(|| r.down_cause().unwrap_or_else(|| "no answer".into())),
        }
    }

    /// Whether the store can answer (`/readyz`): a shared store's last health check.
    pub fn is_up(&self) -> bool {
        match self {
            Self::Memory(_) => true,
            Self::Redis(r) => r.is_up(),
        }
    }

    /// Stores a new token's record; `expires_at` (unix seconds, under the identity's limits
    /// at login) is when a shared store drops it unless a use or renewal moves it.
    pub async fn insert(&self, hash: [u8; 32], record: IdentityTokenRecord, expires_at: i64) -> Result<(), StoreError> {
        let alias = super::alias_bytes(&record.alias);
        if alias > super::quota::MAX_ALIAS_BYTES {
            let refused = StoreError::RecordTooLarge { bytes: alias, limit: super::quota::MAX_ALIAS_BYTES };
            match self {
                Self::Memory(m) => m.count_refusal(super::RecordKind::IdentityToken, refused),
                Self::Redis(r) => r.count_refusal(super::RecordKind::IdentityToken, refused),
            }
            return Err(refused);
        }
        match self {
            Self::Memory(m) => m.insert(hash, record),
            Self::Redis(r) => r.insert(hash, record, expires_at).await,
        }
    }

    /// Drops a token whose identity this replica's snapshot does not hold. A shared store
    /// keeps it: another replica's snapshot may be ahead of this one (a new identity), and a
    /// token of a deleted identity is refused at every use and expires.
    pub async fn forget_orphan(&self, hash: &[u8; 32]) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => {
                m.revoke(hash);
                Ok(())
            }
            Self::Redis(_) => Ok(()),
        }
    }

    pub async fn use_token(
        &self,
        hash: &[u8; 32],
        limits: &TokenLimits,
        now: i64,
    ) -> Result<IdentityTokenRecord, TokenError> {
        match self {
            Self::Memory(m) => m.use_token(hash, limits, now),
            Self::Redis(r) => r.use_token(hash, "count", limits, now).await,
        }
    }

    pub async fn peek(
        &self,
        hash: &[u8; 32],
        limits: &TokenLimits,
        now: i64,
    ) -> Result<IdentityTokenRecord, TokenError> {
        match self {
            Self::Memory(m) => m.peek(hash, limits, now),
            Self::Redis(r) => r.use_token(hash, "peek", limits, now).await,
        }
    }

    pub async fn renew(
        &self,
        hash: &[u8; 32],
        limits: &TokenLimits,
        now: i64,
    ) -> Result<IdentityTokenRecord, TokenError> {
        match self {
            Self::Memory(m) => m.renew(hash, limits, now),
            Self::Redis(r) => r.use_token(hash, "renew", limits, now).await,
        }
    }

    /// Revokes one token; whether it existed.
    pub async fn revoke(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.revoke(hash)),
            Self::Redis(r) => r.revoke(hash).await,
        }
    }

    /// Revokes every token an identity issued (it was deleted or replaced); how many. A
    /// shared store need not: a token is refused at use once its identity is gone from the
    /// directory (`login::authenticate`), and expires with its record.
    pub fn revoke_identity(&self, identity: &ObjectKey, keep_identity_id: Option<&str>) -> usize {
        match self {
            Self::Memory(m) => m.revoke_identity(identity, keep_identity_id),
            Self::Redis(_) => 0,
        }
    }

    pub async fn insert_code(&self, hash: [u8; 32], record: CodeRecord) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => m.insert_code(hash, record),
            Self::Redis(r) => r.insert_code(hash, record).await,
        }
    }

    /// Spends a code issued under `binding` and, on its first redemption, stores what it
    /// issues (`issue`: the access token, and the refresh token that starts the grant's
    /// family) in one step: a replay at any moment after revokes them all, and a replay
    /// before gets `Replayed`. The tokens are handed out only if the exchange then succeeds;
    /// ones that are not are never known to anyone and expire. Refused at a ceiling or
    /// quota, nothing is issued (and the code is spent).
    pub async fn redeem_code(
        &self,
        hash: &[u8; 32],
        binding: &CodeBinding<'_>,
        now: i64,
        issue: &Issue,
    ) -> Result<CodeRedemption, StoreError> {
        match self {
            Self::Memory(m) => m.redeem_code(hash, binding, now, issue),
            Self::Redis(r) => r.redeem_code(hash, binding, now, issue).await,
        }
    }

    /// Stores a client_credentials grant (`id`: [`super::new_grant_id`]) with its access
    /// token (a handle of `id`), charged to the client and its namespace.
    pub async fn insert_client_grant(
        &self,
        id: GrantId,
        grant: ClientGrant,
        access: &AccessIssue,
    ) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => m.insert_client_grant(id, grant, access),
            Self::Redis(r) => r.insert_client_grant(id, grant, access).await,
        }
    }

    /// An access token (opaque, or a JWT's `jti`), if it exists and has not expired.
    pub async fn access_token(&self, token: &str, now: i64) -> Result<Option<AccessTokenView>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.access_token(token, now)),
            Self::Redis(r) => r.access_token(token, now).await,
        }
    }

    /// A refresh token, if it exists and neither it nor its family has expired (a rotated
    /// one reads `rotated`).
    pub async fn refresh_token(&self, token: &str, now: i64) -> Result<Option<RefreshView>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.refresh_token(token, now)),
            Self::Redis(r) => r.refresh_token(token, now).await,
        }
    }

    /// `token` as a refresh reads it before deciding: a shared store may answer from the
    /// grants this replica read before, without a round trip (see [`RefreshRead`]).
    pub async fn refresh_read(&self, token: &str, now: i64) -> Result<Option<RefreshRead>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.refresh_token(token, now).map(RefreshRead::Checked)),
            Self::Redis(r) => r.refresh_read(token, now).await,
        }
    }

    /// Refreshes with `token` for the client `binding` names, in one atomic step: a current
    /// token is rotated (marked with `now`) and `issue` stored (the new refresh token keeps
    /// the family's absolute expiry; the access token is capped by it); a rotated token
    /// presented within `reuse_interval` seconds of its rotation issues again; later, it
    /// revokes the whole grant (`Reused`). Two concurrent refreshes of one current token with
    /// `reuse_interval` 0 get one `Rotated` and one `Reused`. Refused at a quota, nothing
    /// changes. `grant` is the grant [`SessionStore::refresh_token`] read the token under:
    /// a shared store takes its owners and binding from it (they never change) instead of
    /// reading them again; the token itself is checked in the atomic step.
    pub async fn refresh(
        &self,
        token: &str,
        grant: &GrantSubject,
        binding: &GrantBinding<'_>,
        now: i64,
        reuse_interval: i64,
        issue: &Issue,
    ) -> Result<RefreshOutcome, StoreError> {
        match self {
            Self::Memory(m) => m.refresh(token, binding, now, reuse_interval, issue),
            Self::Redis(r) => r.refresh(token, grant, binding, now, reuse_interval, issue).await,
        }
    }

    /// Revokes one access token; whether it existed.
    pub async fn revoke_access(&self, token: &str) -> Result<bool, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.revoke_access(token)),
            Self::Redis(r) => r.revoke_access(token).await,
        }
    }

    /// Revokes the whole grant `token` (one of its access or refresh tokens) belongs to, with
    /// every token of it (RFC 7009 §2.1); whether it existed. A token that is not one of
    /// the grant's (a forged handle naming it) revokes nothing.
    pub async fn revoke_grant(&self, token: &str) -> Result<bool, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.revoke_grant(token)),
            Self::Redis(r) => r.revoke_grant(token).await,
        }
    }

    /// Spends a client assertion's `jti` for `private_key_jwt`: `Fresh` once, `Replayed`
    /// after, at any replica, until the record's expiry; charged to the client under the
    /// quotas (refused at them: the assertion is not accepted).
    pub async fn spend_assertion(&self, spend: &AssertionUse<'_>, now: i64) -> Result<AssertionSpend, StoreError> {
        match self {
            Self::Memory(m) => m.spend_assertion(spend, now),
            Self::Redis(r) => r.spend_assertion(spend).await,
        }
    }
}

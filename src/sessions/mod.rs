//! Identity tokens (issued by login), authorization codes, and the grants the token endpoint
//! issues OAuth access and refresh tokens under. [`TokenStore`] states their semantics and
//! [`MemoryStore`] keeps them in one replica's memory; [`SessionStore`] is what the servers
//! call, async, so that a shared (Redis-protocol) store can sit behind it when several
//! replicas serve.
//!
//! Tokens are opaque (256 random bits) and stored only as their SHA-256. An identity token's
//! limits are read from its identity's *current* spec at every use, so lowering an identity's
//! TTLs or use limit applies to tokens already issued.

mod assertion;
mod grant;
pub mod handle;
mod memory;
pub mod quota;
pub mod redis;
mod store;

pub use assertion::{AssertionSpend, AssertionUse};
pub use grant::{
    AccessIssue, AccessTokenView, ClientGrant, GrantBinding, GrantSubject, Issue, MAX_ROTATED_KEPT, ROTATED_PRUNED_TO,
    RefreshIssue, RefreshOutcome, RefreshRead, RefreshView, TOKEN_OVERHEAD,
};
pub use handle::{GrantId, grant_of, new_grant_id, new_handle};
pub use memory::MemoryStore;
pub use quota::{Charge, ChargeOwner, DEFAULT_MAX_RECORDS, Quotas};
pub use store::SessionStore;

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::api::ObjectKey;

/// The external login behind a token: templates read it as the entity alias.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Alias {
    /// The external token's `sub`.
    pub name: String,
    /// Claims picked by the identity's `claimMappings`, sorted by key. A boxed slice, not a
    /// map: every live token holds one, and a B-tree's first node alone costs ~500 bytes.
    pub metadata: Box<[(String, String)]>,
}

/// What the store keeps per identity token, the token a login issues (never the token
/// itself).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdentityTokenRecord {
    /// The IdentityOidcAuth that issued it.
    pub identity: ObjectKey,
    pub identity_id: String,
    /// Its `metadata.uid` ([`crate::directory::ResolvedIdentity::uid`]).
    #[serde(default)]
    pub identity_uid: std::sync::Arc<str>,
    /// Login time (unix seconds): the start of the max TTL and OIDC's `auth_time`.
    pub issued_at: i64,
    /// Last renewal (or login): the start of the current TTL.
    pub renewed_at: i64,
    /// How many times it was used.
    pub uses: u64,
    pub alias: Alias,
}

/// The limits of an identity's tokens, from its current spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenLimits {
    pub ttl: i64,
    pub max_ttl: i64,
    /// 0 means unlimited.
    pub num_uses_limit: u64,
}

impl IdentityTokenRecord {
    /// When the token expires under `limits`: TTL after the last renewal, never past max TTL
    /// after login.
    pub fn expires_at(&self, limits: &TokenLimits) -> i64 {
        self.renewed_at.saturating_add(limits.ttl).min(self.issued_at.saturating_add(limits.max_ttl))
    }

    /// Uses left, or `None` when unlimited.
    pub fn uses_left(&self, limits: &TokenLimits) -> Option<u64> {
        (limits.num_uses_limit > 0).then(|| limits.num_uses_limit.saturating_sub(self.uses))
    }
}

/// Why a token cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the access token is unknown or revoked")]
    Unknown,
    #[error("the access token has expired")]
    Expired,
    #[error("the access token has reached its use limit")]
    UsesExhausted,
    /// The store could not answer in time: nothing is accepted that could not be checked.
    #[error("the session store is unavailable")]
    Unavailable,
}

/// The hash under which a token is stored.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new opaque token: 256 random bits, base64url.
pub fn new_token() -> Result<String, crate::credentials::RandomError> {
    use aws_lc_rs::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| crate::credentials::RandomError)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// An authorization code's binding (OpenID Connect Core §3.1.2, RFC 6749 §4.1).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CodeRecord {
    pub namespace: String,
    pub provider: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub nonce: Option<String>,
    /// Granted scopes (`openid` first).
    pub scopes: Vec<String>,
    /// PKCE: (method is S256, challenge).
    pub challenge: Option<(bool, String)>,
    pub identity: ObjectKey,
    pub identity_id: String,
    #[serde(default)]
    pub identity_uid: std::sync::Arc<str>,
    pub alias: Alias,
    /// The login time of the identity access token (`auth_time`).
    pub auth_time: i64,
    /// Whether the request sent `max_age` (then `auth_time` goes into the ID token).
    pub max_age_sent: bool,
    pub expires_at: i64,
}

/// Whom a code was issued to, and the proof of the request it answers: checked before the
/// code is spent (RFC 6749 §4.1.3, RFC 7636 §4.6), so a caller presenting it with another
/// client, another `redirect_uri` or a wrong `code_verifier` (a stolen public client's code)
/// can neither spend it nor trigger the replay revocation of its owner's tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeBinding<'a> {
    pub namespace: &'a str,
    pub provider: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    /// The PKCE bindings (see [`CodeRecord::pkce_binding`]) the presented `code_verifier`
    /// answers: one per method, or the empty binding when no verifier was sent.
    pub pkce: &'a [String],
}

impl CodeRecord {
    /// The code's PKCE binding: `S256:<challenge>`, `plain:<challenge>`, or empty without
    /// PKCE. A verifier answers it when its own binding for the same method is equal.
    pub fn pkce_binding(&self) -> String {
        match &self.challenge {
            Some((true, challenge)) => format!("S256:{challenge}"),
            Some((false, challenge)) => format!("plain:{challenge}"),
            None => String::new(),
        }
    }
}

impl CodeBinding<'_> {
    /// Whether a code was issued under this binding.
    pub fn matches(&self, code: &CodeRecord) -> bool {
        let pkce = code.pkce_binding();
        code.namespace == self.namespace
            && code.provider == self.provider
            && code.client_id == self.client_id
            && code.redirect_uri == self.redirect_uri
            && self
                .pkce
                .iter()
                .any(|p| aws_lc_rs::constant_time::verify_slices_are_equal(p.as_bytes(), pkce.as_bytes()).is_ok())
    }

    /// The binding as one text, unambiguous whatever the fields hold (a JSON array): what a
    /// shared store keeps beside the code and compares at redemption, once per PKCE answer.
    pub fn texts(&self) -> Vec<String> {
        self.pkce
            .iter()
            .map(|p| binding_text(self.namespace, self.provider, self.client_id, self.redirect_uri, p))
            .collect()
    }
}

/// The text a shared store compares a redemption's binding with.
pub fn binding_text(namespace: &str, provider: &str, client_id: &str, redirect_uri: &str, pkce: &str) -> String {
    serde_json::json!([namespace, provider, client_id, redirect_uri, pkce]).to_string()
}

/// What redeeming a code found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeRedemption {
    /// First use: the code is now spent.
    Fresh(Box<CodeRecord>),
    /// Already spent: a replay. The code is now marked replayed, and every access and
    /// refresh token its grant holds is revoked (how many).
    Replayed {
        revoked: usize,
    },
    /// The code exists but was issued to another client, by another provider, for another
    /// `redirect_uri`, or the `code_verifier` does not answer its challenge; it is left as
    /// it was.
    WrongBinding,
    Unknown,
}

/// Why the store refused to keep a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The ceiling of live records is reached (`--max-session-records`); expired and spent
    /// records are purged in the background, so this clears as they age out.
    #[error("the session store holds its maximum of {limit} live records")]
    Full { limit: usize },
    /// The ceiling in bytes is reached (`--max-session-bytes`).
    #[error("the session store holds its maximum of {limit} bytes of live records")]
    FullBytes { limit: usize },
    /// The record's namespace holds its share of the ceilings
    /// (`--max-session-namespace-percent`): only that namespace is refused.
    #[error("this namespace holds its quota of live session records ({records} records or {bytes} bytes)")]
    NamespaceQuota { records: usize, bytes: usize },
    /// The record's identity holds its quota (`--max-session-records-per-identity`).
    #[error("this identity holds its quota of {records} live session records")]
    IdentityQuota { records: usize },
    /// The client's own grants (client_credentials) hold the quota an identity has
    /// (`--max-session-records-per-identity`).
    #[error("this client holds its quota of {records} live session records")]
    ClientQuota { records: usize },
    /// One record would be larger than any record may be: the claims an identity's
    /// `claimMappings` pick from the external JWT are too large.
    #[error("the record would take {bytes} bytes; at most {limit} are kept per record (claimMappings picks too much)")]
    RecordTooLarge { bytes: usize, limit: usize },
    /// The code a userinfo token would come from was replayed meanwhile: the token must not
    /// be issued (RFC 6749 §4.1.2).
    #[error("the authorization code was replayed")]
    CodeReplayed,
    /// A shared store could not answer in time (unreachable, slow, failing over).
    #[error("the session store is unavailable")]
    Unavailable,
    /// A shared store refused a write at its `maxmemory` (policy `noeviction`): like `Full`,
    /// it clears as records expire.
    #[error("the shared session store is at its maxmemory and refuses new records")]
    OutOfMemory,
}

impl StoreError {
    /// The reasons a record can be refused for (what the refusal metric starts at zero).
    pub const REFUSAL_REASONS: [&'static str; 7] =
        ["records", "bytes", "namespace_quota", "identity_quota", "client_quota", "record_too_large", "maxmemory"];

    /// Whether the store refused the record (a ceiling, a quota, its size, `maxmemory`),
    /// rather than being unable to answer or the code being replayed: what the refusal
    /// metric counts.
    pub fn is_refusal(self) -> bool {
        !matches!(self, Self::Unavailable | Self::CodeReplayed)
    }

    /// Why a record was refused, as a bounded metrics label (never a tenant's name).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Full { .. } => "records",
            Self::FullBytes { .. } => "bytes",
            Self::NamespaceQuota { .. } => "namespace_quota",
            Self::IdentityQuota { .. } => "identity_quota",
            Self::ClientQuota { .. } => "client_quota",
            Self::RecordTooLarge { .. } => "record_too_large",
            Self::CodeReplayed => "code_replayed",
            Self::Unavailable => "unavailable",
            Self::OutOfMemory => "maxmemory",
        }
    }
}

/// Bytes of text an alias holds (with a fixed cost per mapped claim).
pub fn alias_bytes(alias: &Alias) -> usize {
    alias.name.len() + alias.metadata.iter().map(|(k, v)| k.len() + v.len() + 48).sum::<usize>()
}

impl IdentityTokenRecord {
    /// What the record costs the store: its namespace, identity and approximate bytes.
    pub fn charge(&self) -> Charge<'_> {
        let bytes =
            quota::RECORD_OVERHEAD + self.identity_id.len() + self.identity.name.len() + alias_bytes(&self.alias);
        Charge {
            namespace: &self.identity.namespace,
            owner: ChargeOwner::Identity(&self.identity),
            bytes,
            kind: RecordKind::IdentityToken,
        }
    }
}

impl CodeRecord {
    pub fn charge(&self) -> Charge<'_> {
        Charge {
            namespace: &self.namespace,
            owner: ChargeOwner::Identity(&self.identity),
            bytes: quota::RECORD_OVERHEAD + grant::code_text_bytes(self),
            kind: RecordKind::Code,
        }
    }
}

/// Which kind of record a store call is about (a bounded metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// An identity token, issued by login.
    IdentityToken,
    Code,
    /// An OAuth access token, issued by the token endpoint.
    AccessToken,
    RefreshToken,
    /// A client_credentials grant.
    ClientGrant,
    /// A spent `private_key_jwt` assertion's `jti`, kept until its `exp`.
    ClientAssertion,
}

impl RecordKind {
    pub const ALL: [RecordKind; 6] = [
        Self::IdentityToken,
        Self::Code,
        Self::AccessToken,
        Self::RefreshToken,
        Self::ClientGrant,
        Self::ClientAssertion,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::IdentityToken => "identity_token",
            Self::Code => "code",
            Self::AccessToken => "access_token",
            Self::RefreshToken => "refresh_token",
            Self::ClientGrant => "client_grant",
            Self::ClientAssertion => "client_assertion",
        }
    }
}

/// What the current directory says of stored records, for the purge: a record whose issuer,
/// client or provider no longer exists is dropped within a purge interval.
pub trait Liveness {
    /// The current limits of a token's identity; `None` when the identity is gone.
    fn token_limits(&self, record: &IdentityTokenRecord) -> Option<TokenLimits>;
    /// Whether a grant's owners still exist: for a code grant its identity, client and
    /// provider, for a client grant its client and provider (the client still served).
    fn grant_alive(&self, grant: &GrantSubject) -> bool;
}

/// Token state. Every method is atomic with respect to the others.
pub trait TokenStore: Send + Sync {
    /// Stores a new token's record, unless the store is full.
    fn insert(&self, hash: [u8; 32], record: IdentityTokenRecord) -> Result<(), StoreError>;

    /// Checks a token for one use and counts it: known, not expired, below its use limit.
    /// `limits` comes from the identity's current spec.
    fn use_token(&self, hash: &[u8; 32], limits: &TokenLimits, now: i64) -> Result<IdentityTokenRecord, TokenError>;

    /// Reads a token without counting a use.
    fn peek(&self, hash: &[u8; 32], limits: &TokenLimits, now: i64) -> Result<IdentityTokenRecord, TokenError>;

    /// Restarts the TTL at `now` (capped by max TTL); returns the new record.
    fn renew(&self, hash: &[u8; 32], limits: &TokenLimits, now: i64) -> Result<IdentityTokenRecord, TokenError>;

    /// Revokes one token; whether it existed.
    fn revoke(&self, hash: &[u8; 32]) -> bool;

    /// Revokes every token an identity issued (it was deleted or replaced); how many.
    fn revoke_identity(&self, identity: &ObjectKey, keep_identity_id: Option<&str>) -> usize;

    /// Drops expired, spent and orphaned records: identity tokens expired under the limits
    /// `live` gives (None: identity gone); grants whose owners are gone, whose family
    /// expired, or whose code and tokens all expired; expired access and refresh tokens. A
    /// rotated refresh token is kept, as a mark, until its family expires (at most
    /// [`MAX_ROTATED_KEPT`] per family), so that its reuse is still recognised; its charge
    /// goes at its idle expiry. How many records.
    fn purge(&self, now: i64, live: &dyn Liveness) -> usize;

    /// Stores a new authorization code (a grant not yet redeemed), unless the store is full.
    fn insert_code(&self, hash: [u8; 32], record: CodeRecord) -> Result<(), StoreError>;

    /// Spends a code issued under `binding` and stores what its first redemption issues: the
    /// first call gets it, later ones learn it was replayed (and revoke every token of its
    /// grant); a code of another binding is left unspent. The same store call made again
    /// with the same `issue` (its access token is already stored: the store client retrying
    /// after a lost reply) gets `Fresh` again; an HTTP client's retry mints new handles, so
    /// it is a replay (RFC 6749 §4.1.2).
    /// Refused at a ceiling, the code is spent and nothing is issued.
    fn redeem_code(
        &self,
        hash: &[u8; 32],
        binding: &CodeBinding<'_>,
        now: i64,
        issue: &Issue,
    ) -> Result<CodeRedemption, StoreError>;

    /// Stores a client_credentials grant with its access token.
    fn insert_client_grant(&self, id: GrantId, grant: ClientGrant, access: &AccessIssue) -> Result<(), StoreError>;

    /// An access token, if it exists and has not expired.
    fn access_token(&self, token: &str, now: i64) -> Option<AccessTokenView>;

    /// A refresh token, if it exists and neither it nor its family has expired.
    fn refresh_token(&self, token: &str, now: i64) -> Option<RefreshView>;

    /// Refreshes: see [`SessionStore::refresh`].
    fn refresh(
        &self,
        token: &str,
        binding: &GrantBinding<'_>,
        now: i64,
        reuse_interval: i64,
        issue: &Issue,
    ) -> Result<RefreshOutcome, StoreError>;

    /// Revokes one access token; whether it existed.
    fn revoke_access(&self, token: &str) -> bool;

    /// Revokes the grant a token of it names (an access or refresh token of it, rotated or
    /// not), with all its tokens; whether it existed.
    fn revoke_grant(&self, token: &str) -> bool;

    /// How many identity access tokens are stored.
    fn len(&self) -> usize;

    /// How many records of every kind are stored (what the ceiling counts).
    fn records(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(ttl: i64, max_ttl: i64, uses: u64) -> TokenLimits {
        TokenLimits { ttl, max_ttl, num_uses_limit: uses }
    }

    fn record() -> IdentityTokenRecord {
        IdentityTokenRecord {
            identity: ObjectKey::new("ns", "id"),
            identity_id: "e1".into(),
            identity_uid: "".into(),
            issued_at: 1000,
            renewed_at: 1000,
            uses: 0,
            alias: Alias::default(),
        }
    }

    #[test]
    fn ttl_and_max_ttl_arithmetic() {
        let r = record();
        assert_eq!(r.expires_at(&limits(100, 1000, 0)), 1100);
        let renewed = IdentityTokenRecord { renewed_at: 1950, ..r.clone() };
        assert_eq!(renewed.expires_at(&limits(100, 1000, 0)), 2000, "capped at max TTL from login");
        assert_eq!(r.uses_left(&limits(1, 1, 0)), None);
        assert_eq!(IdentityTokenRecord { uses: 2, ..r }.uses_left(&limits(1, 1, 3)), Some(1));
    }

    #[test]
    fn tokens_are_long_and_random() {
        let a = new_token().unwrap();
        assert_eq!(a.len(), 43, "256 bits in base64url");
        assert_ne!(a, new_token().unwrap());
        assert_ne!(token_hash(&a), token_hash(&new_token().unwrap()));
    }
}

//! Grants (RFC 6749 §1.3): what the token endpoint issues OAuth tokens under. A grant is
//! either an end-user's consent (an authorization code, then the refresh family it starts)
//! or a client acting as itself (client_credentials). Every access and refresh token lives
//! inside its grant (its handle names it, [`super::handle`]), so a code replay or a reused
//! refresh token removes the whole grant in one step, on one Redis key.

use super::quota::{Charge, ChargeOwner};
use super::{CodeRecord, RecordKind, alias_bytes};

/// What a grant is about.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GrantSubject {
    /// An end-user's consent, given at authorize: the code (spent once) and whom it names.
    Code(Box<CodeRecord>),
    /// client_credentials: the client itself.
    Client(ClientGrant),
}

/// A client_credentials grant: the client acting for itself (RFC 6749 §4.4).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClientGrant {
    pub namespace: String,
    pub provider: String,
    pub client_id: String,
    /// The OidcClient's `metadata.name`: what its quota is charged to.
    pub client_name: String,
    pub scopes: Vec<String>,
    /// The audiences (`resource`/`audience`) the token was issued for.
    pub audiences: Vec<String>,
    pub issued_at: i64,
}

impl GrantSubject {
    pub fn namespace(&self) -> &str {
        match self {
            Self::Code(c) => &c.namespace,
            Self::Client(c) => &c.namespace,
        }
    }

    pub fn provider(&self) -> &str {
        match self {
            Self::Code(c) => &c.provider,
            Self::Client(c) => &c.provider,
        }
    }

    pub fn client_id(&self) -> &str {
        match self {
            Self::Code(c) => &c.client_id,
            Self::Client(c) => &c.client_id,
        }
    }

    /// The scopes granted (an access token may carry fewer).
    pub fn scopes(&self) -> &[String] {
        match self {
            Self::Code(c) => &c.scopes,
            Self::Client(c) => &c.scopes,
        }
    }

    /// Whether a token of this grant may be used under `binding`.
    pub fn bound_to(&self, binding: &GrantBinding<'_>) -> bool {
        self.namespace() == binding.namespace
            && self.provider() == binding.provider
            && self.client_id() == binding.client_id
    }

    /// Whether its access tokens are records of their own (a code grant's), or part of the
    /// grant's record (a client grant's one token, see [`GrantSubject::charge`]).
    pub fn tokens_charged_apart(&self) -> bool {
        matches!(self, Self::Code(_))
    }

    /// The owner the grant's records count against beside the namespace: the identity that
    /// consented, or the client itself.
    pub fn owner(&self) -> ChargeOwner<'_> {
        match self {
            Self::Code(c) => ChargeOwner::Identity(&c.identity),
            Self::Client(c) => ChargeOwner::Client { namespace: &c.namespace, name: &c.client_name },
        }
    }

    /// What the grant record itself costs: the code, or the client grant with its one
    /// access token (a client_credentials grant holds exactly one, issued with it and
    /// living as long: one record, so each token costs a quota one charge to write).
    pub fn charge(&self) -> Charge<'_> {
        match self {
            Self::Code(c) => c.charge(),
            Self::Client(c) => {
                let text = c.namespace.len()
                    + c.provider.len()
                    + c.client_id.len()
                    + c.client_name.len()
                    + list_bytes(&c.scopes)
                    + list_bytes(&c.audiences);
                Charge {
                    namespace: &c.namespace,
                    owner: self.owner(),
                    bytes: super::quota::RECORD_OVERHEAD + text + TOKEN_OVERHEAD,
                    kind: RecordKind::ClientGrant,
                }
            }
        }
    }

    /// What one access token of the grant costs, carrying `scopes` (empty: the grant's).
    pub fn access_charge(&self, scopes: &[String]) -> Charge<'_> {
        Charge {
            namespace: self.namespace(),
            owner: self.owner(),
            bytes: TOKEN_OVERHEAD + list_bytes(scopes),
            kind: RecordKind::AccessToken,
        }
    }

    /// What one refresh token of the grant costs.
    pub fn refresh_charge(&self) -> Charge<'_> {
        Charge {
            namespace: self.namespace(),
            owner: self.owner(),
            bytes: TOKEN_OVERHEAD,
            kind: RecordKind::RefreshToken,
        }
    }
}

/// Bytes of a list of short texts (with a fixed cost each, as [`CodeRecord::charge`]).
fn list_bytes(items: &[String]) -> usize {
    items.iter().map(|s| s.len() + 24).sum()
}

/// What a token inside a grant costs beyond its scopes: its hash, expiry, issue time and
/// flags, in a grant's list (memory) or hash field (Redis), with the allocator's rounding.
/// Its grant (the code, the entity's alias) is charged once, as the grant record.
pub const TOKEN_OVERHEAD: usize = 160;

/// At most this many rotated refresh tokens are remembered per family (the oldest is
/// forgotten first): enough to recognise a reuse of any token a client could still hold,
/// bounded so a client refreshing every minute for a month does not grow its grant forever.
pub const MAX_ROTATED_KEPT: usize = 64;

/// Past [`MAX_ROTATED_KEPT`], a family's oldest rotated tokens are forgotten down to this
/// many, so the pruning runs once every `MAX_ROTATED_KEPT - ROTATED_PRUNED_TO` refreshes
/// instead of at each: on Redis it is a scan of the whole grant (every access token the
/// family still holds), which at every refresh made a refresh's cost grow with its family.
pub const ROTATED_PRUNED_TO: usize = 48;

/// Who presents a token: a refresh or a revocation is only for the grant's own client of
/// the grant's own provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantBinding<'a> {
    pub namespace: &'a str,
    pub provider: &'a str,
    pub client_id: &'a str,
}

/// What one store step issues: an access token, and a refresh token with it when the
/// client has the `refresh_token` grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub access: AccessIssue,
    pub refresh: Option<RefreshIssue>,
}

/// An access token to store (opaque, or the `jti` of a JWT access token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessIssue {
    /// `token_hash` of the handle.
    pub hash: [u8; 32],
    /// When it expires; a store caps it at its family's absolute expiry.
    pub expires_at: i64,
    /// The scopes it carries, when narrower than the grant's; empty: the grant's.
    pub scopes: Vec<String>,
    /// Whether it is a JWT access token (RFC 9068), this being its `jti`.
    pub jwt: bool,
    pub issued_at: i64,
}

/// A refresh token to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshIssue {
    pub hash: [u8; 32],
    /// Its idle expiry (`refreshTokenTTL` from now), already capped by the family's.
    pub expires_at: i64,
    /// The family's absolute expiry (`refreshTokenMaxTTL` from the code exchange): taken
    /// from the code exchange's issue; a rotation keeps the family's.
    pub family_expires_at: i64,
}

/// An access token, as introspection and userinfo read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessTokenView {
    pub grant: GrantSubject,
    /// The scopes it carries (the grant's unless the issue narrowed them).
    pub scopes: Vec<String>,
    pub expires_at: i64,
    pub issued_at: i64,
    pub jwt: bool,
}

/// A refresh token, as introspection and the refresh driver read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshView {
    pub grant: GrantSubject,
    /// Its idle expiry.
    pub expires_at: i64,
    pub family_expires_at: i64,
    pub issued_at: i64,
    /// When it was rotated, if it was: usable again only within the reuse interval after
    /// that, and read (past its idle expiry too, until its family's) so a late reuse is
    /// still seen and revokes the family (RFC 9700 §4.14.2).
    pub rotated_at: Option<i64>,
}

/// A refresh token as the refresh driver reads it before deciding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshRead {
    /// As stored.
    Checked(RefreshView),
    /// Only its grant is known (a shared store's replica remembers the grants it read:
    /// their records and family expiries never change); the token's own fields read as not
    /// rotated, idle until the family's expiry, issued at 0. The store's refresh step checks
    /// the token itself; a driver whose decision refuses reads it ([`super::SessionStore::refresh_token`])
    /// to tell a reused token, which revokes its family whatever else is wrong.
    Remembered(RefreshView),
}

/// What a refresh did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The presented token is rotated (marked with `now`); the new refresh token and the
    /// new access token are stored.
    Rotated(GrantSubject),
    /// Presented after its rotation plus the reuse interval (RFC 9700 §4.14): the whole grant
    /// is deleted, all its access and refresh tokens. `revoked`: whether anything was.
    Reused { revoked: bool },
    /// The token exists but belongs to another namespace, provider or client: nothing
    /// changes.
    WrongBinding,
    /// Unknown, expired (idle or family) or revoked.
    Unknown,
}

/// A grant's entry as a memory store keeps an access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct AccessEntry {
    pub hash: [u8; 32],
    pub expires_at: i64,
    pub issued_at: i64,
    pub jwt: bool,
    pub scopes: Vec<String>,
}

impl AccessEntry {
    /// The entry of `issue`, expiring at the latest at `cap` (the family's expiry).
    pub fn of(issue: &AccessIssue, cap: Option<i64>) -> Self {
        Self {
            hash: issue.hash,
            expires_at: cap.map_or(issue.expires_at, |c| issue.expires_at.min(c)),
            issued_at: issue.issued_at,
            jwt: issue.jwt,
            scopes: issue.scopes.clone(),
        }
    }

    pub fn view(&self, grant: &GrantSubject) -> AccessTokenView {
        AccessTokenView {
            scopes: if self.scopes.is_empty() { grant.scopes().to_vec() } else { self.scopes.clone() },
            grant: grant.clone(),
            expires_at: self.expires_at,
            issued_at: self.issued_at,
            jwt: self.jwt,
        }
    }
}

/// Bytes of the text of a code record (what [`CodeRecord::charge`] counts).
pub(super) fn code_text_bytes(c: &CodeRecord) -> usize {
    c.namespace.len()
        + c.provider.len()
        + c.client_id.len()
        + c.redirect_uri.len()
        + c.nonce.as_ref().map_or(0, String::len)
        + list_bytes(&c.scopes)
        + c.challenge.as_ref().map_or(0, |(_, ch)| ch.len())
        + c.identity_id.len()
        + c.identity.name.len()
        + alias_bytes(&c.alias)
}

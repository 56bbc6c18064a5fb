//! Machine login (Infisical's OIDC auth): an IdentityOidcAuth verifies a JWT from an external
//! OpenID issuer and issues an identity access token.

pub mod checks;
pub mod cidr;
pub mod external;
pub mod fetch_policy;
pub mod jwks;
pub mod matching;
pub mod registry;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::directory::{Directory, IssuedBy, ResolvedIdentity};
use crate::sessions::{
    Alias, IdentityTokenRecord, RecordKind, SessionStore, TokenError, TokenLimits, new_token, token_hash,
};
pub use checks::LoginError;
use external::IssuerRegistry;

/// Infisical's login response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginResponse {
    pub access_token: String,
    pub expires_in: i64,
    #[serde(rename = "accessTokenMaxTTL")]
    pub access_token_max_ttl: i64,
    pub token_type: &'static str,
}

/// Seconds an issuer's keys stay usable without a successful fetch, by default
/// (`--issuer-keys-max-age`).
pub const DEFAULT_ISSUER_KEYS_MAX_AGE: i64 = 86_400;

/// Matching work above which the claim checks leave the async workers for the blocking pool
/// (the product of the identity's bound text and the JWT's payload, in bytes: each glob
/// reads each claim element at most once). Below it a login's checks cost well under a
/// millisecond and a thread hop would cost more than it saves.
pub const INLINE_MATCH_WORK: usize = 1 << 20;

/// The limits of logins, from the flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginLimits {
    pub matching: matching::MatchLimits,
    /// Seconds an issuer's keys are trusted after the last successful fetch: past it, and with
    /// a refetch failing, logins of its identities fail closed (`issuer_unavailable`).
    pub issuer_keys_max_age: i64,
    /// Most IdentityOidcAuth objects served per namespace (the directory applies it).
    pub max_identities_per_namespace: usize,
    /// Logins whose claim matching runs on the blocking pool at once; more wait (without
    /// holding a worker), so large specs cannot take every core from the other tenants.
    pub heavy_checks: usize,
}

/// Large claim checks run at once by default (`--max-concurrent-heavy-logins`).
pub const DEFAULT_HEAVY_CHECKS: usize = 2;

/// Identities served per namespace by default (`--max-identities-per-namespace`).
pub const DEFAULT_MAX_IDENTITIES_PER_NAMESPACE: usize = 1000;

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            matching: matching::MatchLimits::default(),
            issuer_keys_max_age: DEFAULT_ISSUER_KEYS_MAX_AGE,
            max_identities_per_namespace: DEFAULT_MAX_IDENTITIES_PER_NAMESPACE,
            heavy_checks: DEFAULT_HEAVY_CHECKS,
        }
    }
}

/// What a login reads and writes besides its request.
#[derive(Clone, Copy)]
pub struct LoginContext<'a> {
    pub dir: &'a Directory,
    pub issuers: &'a IssuerRegistry,
    pub tokens: &'a SessionStore,
    /// Least seconds between two refetches of one issuer's keys.
    pub refetch_interval: i64,
}

/// Verifies an external JWT for an identity and issues an access token.
///
/// The JWT's header is checked first, whatever the identity, so these answers say nothing
/// about which identities exist; then the identity is looked up and [`verify`] runs every
/// other check.
pub async fn login(
    ctx: &LoginContext<'_>,
    identity_id: &str,
    jwt: &str,
    peer: IpAddr,
    now: i64,
) -> Result<LoginResponse, LoginError> {
    checks::check_header(jwt)?;
    let identity = ctx.dir.identity_by_id(identity_id).ok_or(LoginError::IdentityNotFound)?;
    let (_, alias) = verify(ctx, identity, jwt, peer, now).await?;
    let tokens = ctx.tokens;
    let token = new_token().map_err(|_| LoginError::Internal)?;
    let limits = identity.limits;
    let record = IdentityTokenRecord {
        identity: identity.key.clone(),
        identity_id: identity.id.clone(),
        identity_uid: identity.uid.clone(),
        issued_at: now,
        renewed_at: now,
        uses: 0,
        alias,
    };
    let expires_in = record.expires_at(&limits) - now;
    let expires_at = record.expires_at(&limits);
    tokens.insert(token_hash(&token), record, expires_at).await.map_err(|e| {
        tracing::warn!(record = RecordKind::IdentityToken.label(), error = %e, "session store refused a record");
        match e {
            crate::sessions::StoreError::Unavailable => LoginError::StoreUnavailable,
            crate::sessions::StoreError::RecordTooLarge { .. } => LoginError::ClaimsTooLarge,
            other => LoginError::TemporarilyUnavailable(other.reason()),
        }
    })?;
    Ok(LoginResponse { access_token: token, expires_in, access_token_max_ttl: limits.max_ttl, token_type: "Bearer" })
}

/// Whether an external JWT proves `identity`, from `peer`, at `now`: the checks of a login,
/// for login and for token exchange (RFC 8693) alike, so both accept exactly the same tokens.
/// Gives the JWT's claims and the entity alias they make.
///
/// Checks, in order: the JWT is well formed and not oversized and its algorithm asymmetric;
/// the identity's issuer's keys are younger than `--issuer-keys-max-age` (else refetched,
/// else it fails closed); the signature (refetching the issuer's keys once, rate-limited,
/// when the kid is unknown); iss; aud; sub; bound claims; exp/nbf/iat; the caller's address.
/// Claim matching beyond [`INLINE_MATCH_WORK`] runs on the blocking pool.
pub async fn verify(
    ctx: &LoginContext<'_>,
    identity: &Arc<ResolvedIdentity>,
    jwt: &str,
    peer: IpAddr,
    now: i64,
) -> Result<(Value, Alias), LoginError> {
    let LoginContext { issuers, refetch_interval, .. } = *ctx;
    let header = checks::check_header(jwt)?;
    let issuer = issuers.get(&identity.source);
    let limits = issuers.limits();
    let young = |k: &Arc<external::IssuerKeys>| now.saturating_sub(k.fetched_at) <= limits.issuer_keys_max_age;
    // Why the issuer failed is its owner's business (the identity's status says it); the
    // caller, who may be anyone, learns only that it is unavailable. Keys that could not be
    // refetched for longer than the max age are not trusted any more: the issuer may have
    // revoked them.
    let mut keys = match issuer.keys().filter(young) {
        Some(k) => k,
        None => issuer.refresh(now, refetch_interval).await.filter(young).ok_or(LoginError::IssuerUnavailable)?,
    };
    let claims = match checks::check_signature(&keys, &header, jwt) {
        Err(LoginError::UnknownKid) => {
            // The issuer may have rotated: look again, at most once per refetch interval.
            if let Some(fresh) = issuer.refresh(now, refetch_interval).await {
                keys = fresh;
            }
            checks::check_signature(&keys, &header, jwt)?
        }
        other => other?,
    };
    if keys.issuer != identity.spec.bound_issuer {
        // Reported as IssuerMismatch in the identity's status.
        return Err(LoginError::IssuerUnavailable);
    }
    let claims = check_claims_off_worker(claims, identity, jwt.len(), now, issuers).await?;
    checks::check_ip(&identity.trusted_ips, peer)?;
    if identity.spec.token_review {
        review(issuers, jwt, &claims).await?;
    }
    let alias = alias(identity, &claims);
    Ok((claims, alias))
}

/// Asks the API server whether it still authenticates `jwt` (an identity with
/// `spec.tokenReview`), for the audiences the token names. Without a TokenReview (standalone)
/// or without an answer the login fails closed, as when an issuer cannot be read.
async fn review(issuers: &IssuerRegistry, jwt: &str, claims: &Value) -> Result<(), LoginError> {
    let reviewer = issuers.reviewer().ok_or(LoginError::IssuerUnavailable)?;
    let audiences = claims.get("aud").map(matching::claim_strings).unwrap_or_default();
    match reviewer.review(jwt, audiences).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(LoginError::TokenReviewRefused),
        Err(e) => {
            tracing::warn!(error = %crate::login::clip(&e), "TokenReview failed");
            Err(LoginError::IssuerUnavailable)
        }
    }
}

/// [`checks::check_claims`], inline when cheap, on the blocking pool when the identity's
/// bound text times the JWT's size is over [`INLINE_MATCH_WORK`], so that a tenant's large
/// spec never holds an async worker (and the discovery and JWKS of every other tenant) for
/// long; at most [`LoginLimits::heavy_checks`] such checks run at once. Gives the claims back.
async fn check_claims_off_worker(
    claims: Value,
    identity: &Arc<ResolvedIdentity>,
    jwt_bytes: usize,
    now: i64,
    issuers: &IssuerRegistry,
) -> Result<Value, LoginError> {
    let limits = issuers.limits().matching;
    if bound_bytes(&identity.spec).saturating_mul(jwt_bytes) <= INLINE_MATCH_WORK {
        checks::check_claims(&claims, &identity.spec, now, &limits)?;
        return Ok(claims);
    }
    let _permit = issuers.heavy_checks().acquire().await.map_err(|_| LoginError::Internal)?;
    let identity = Arc::clone(identity);
    tokio::task::spawn_blocking(move || {
        checks::check_claims(&claims, &identity.spec, now, &limits)?;
        Ok(claims)
    })
    .await
    .map_err(|_| LoginError::Internal)?
}

/// The size of what claim matching reads from a spec: its globs and claim names.
fn bound_bytes(spec: &crate::api::IdentityOidcAuthSpec) -> usize {
    let claims: usize = spec.bound_claims.iter().map(|(k, v)| k.len() + v.len()).sum();
    spec.bound_audiences.len() + spec.bound_subject.len() + claims
}

/// The entity alias of a login: the external `sub` and the claims `claimMappings` picks.
fn alias(identity: &ResolvedIdentity, claims: &Value) -> Alias {
    // `claim_mappings` is a B-tree: the pairs come out sorted by key.
    let metadata: Box<[(String, String)]> = identity
        .spec
        .claim_mappings
        .iter()
        .filter_map(|(key, claim)| {
            let v = matching::lookup_claim(claims, claim)?;
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Some((key.clone(), text))
        })
        .collect();
    Alias { name: claims.get("sub").and_then(Value::as_str).unwrap_or_default().to_owned(), metadata }
}

/// Longest attacker-chosen text (an `identityId`, a header value, a remote document's field)
/// put into a log line or a status message, in characters.
pub const MAX_FIELD_CHARS: usize = 128;

/// `text` cut to [`MAX_FIELD_CHARS`] characters, saying how long it was: log lines and
/// statuses stay small whatever a caller or a remote issuer sends.
pub fn clip(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(MAX_FIELD_CHARS) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}... ({} bytes)", &text[..end], text.len())),
    }
}

/// Why a presented access token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("no access token was presented")]
    Missing,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the access token may not be used from this address")]
    IpNotAllowed,
}

impl AccessError {
    pub fn status(&self) -> u16 {
        match self {
            Self::IpNotAllowed => 403,
            Self::Token(TokenError::Unavailable) => 503,
            _ => 401,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "missing_token",
            Self::Token(TokenError::Unknown) => "invalid_token",
            Self::Token(TokenError::Expired) => "token_expired",
            Self::Token(TokenError::UsesExhausted) => "token_uses_exhausted",
            Self::Token(TokenError::Unavailable) => "temporarily_unavailable",
            Self::IpNotAllowed => "ip_not_allowed",
        }
    }
}

/// What a holder of a valid access token is.
#[derive(Clone)]
pub struct Session {
    pub identity: Arc<ResolvedIdentity>,
    pub record: IdentityTokenRecord,
    pub limits: TokenLimits,
}

/// How a token operation treats the use count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Counts one use (authorize, lookup).
    Count,
    /// Reads only.
    Peek,
    /// Restarts the TTL.
    Renew,
}

/// Checks a presented token against the store and its identity's current spec, from `peer`.
pub async fn authenticate(
    dir: &Directory,
    tokens: &SessionStore,
    token: &str,
    peer: IpAddr,
    now: i64,
    mode: Use,
) -> Result<Session, AccessError> {
    let hash = token_hash(token);
    // Look the record up without counting, to find the identity whose limits apply.
    let far = TokenLimits { ttl: i64::MAX, max_ttl: i64::MAX, num_uses_limit: 0 };
    let peeked = tokens.peek(&hash, &far, now).await?;
    let issuer = IssuedBy { id: &peeked.identity_id, key: &peeked.identity, uid: &peeked.identity_uid };
    let identity = match dir.issuing_identity(&issuer) {
        Some(i) => Arc::clone(i),
        None => {
            // The identity was deleted or replaced: its tokens die with it.
            tokens.forget_orphan(&hash).await.map_err(|_| TokenError::Unavailable)?;
            return Err(AccessError::Token(TokenError::Unknown));
        }
    };
    let limits = identity.limits;
    if !cidr::any_contains(&identity.trusted_ips, peer) {
        return Err(AccessError::IpNotAllowed);
    }
    let record = match mode {
        Use::Count => tokens.use_token(&hash, &limits, now).await?,
        Use::Peek => tokens.peek(&hash, &limits, now).await?,
        Use::Renew => tokens.renew(&hash, &limits, now).await?,
    };
    Ok(Session { identity, record, limits })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attacker_text_is_cut_in_logs() {
        assert_eq!(clip("runner"), "runner");
        let exact = "é".repeat(MAX_FIELD_CHARS);
        assert_eq!(clip(&exact), exact.as_str(), "exactly the limit is kept");
        let long = "é".repeat(64 * 1024);
        let cut = clip(&long);
        assert!(cut.starts_with(&"é".repeat(MAX_FIELD_CHARS)) && cut.ends_with(&format!("({} bytes)", long.len())));
        assert!(cut.chars().count() < MAX_FIELD_CHARS + 32, "{cut}");
    }
}

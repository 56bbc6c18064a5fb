//! The in-memory token store of a single replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::grant::AccessEntry;
use super::quota::{Charge, Ledger, Quotas, Usage};
use super::{
    AccessIssue, AccessTokenView, ClientGrant, CodeBinding, CodeRecord, CodeRedemption, GrantBinding, GrantId,
    GrantSubject, IdentityTokenRecord, Issue, MAX_ROTATED_KEPT, ROTATED_PRUNED_TO, RefreshOutcome, RefreshView,
    StoreError, TokenError, TokenLimits, TokenStore, grant_of, token_hash,
};
use crate::api::ObjectKey;
use crate::metrics::Metrics;

/// Where a code stands. Spent and replayed codes are kept with their grant, so a replay is
/// recognised and the tokens of the first redemption can be revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CodeState {
    Unspent,
    Spent,
    Replayed,
}

/// A refresh token inside its grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RefreshEntry {
    hash: [u8; 32],
    issued_at: i64,
    /// Idle expiry, capped by the family's.
    expires_at: i64,
    /// When it was rotated: then it is usable again only within the reuse interval, and
    /// kept, as a mark, so that a later reuse revokes the family.
    rotated_at: Option<i64>,
    /// Whether it still holds its charge (given back at its idle expiry).
    charged: bool,
}

/// A grant and every token issued under it: one entry, behind one lock, so a replay, a
/// reuse or a revocation removes them all in one step.
struct Grant {
    subject: GrantSubject,
    /// A code grant's code; `None` for a client grant.
    code: Option<CodeState>,
    /// The refresh family's absolute expiry, from its first refresh token.
    family_expires_at: Option<i64>,
    access: Vec<AccessEntry>,
    refresh: Vec<RefreshEntry>,
}

impl Grant {
    /// Every charge the grant holds: the grant record, each access token, each refresh
    /// token still charged.
    fn charges(&self) -> Vec<Charge<'_>> {
        let mut out = vec![self.subject.charge()];
        if self.subject.tokens_charged_apart() {
            out.extend(self.access.iter().map(|a| self.subject.access_charge(&a.scopes)));
        }
        out.extend(self.refresh.iter().filter(|r| r.charged).map(|_| self.subject.refresh_charge()));
        out
    }

    /// Whether anything of it is still usable at `now`: the code (for replay detection),
    /// an access token, or a current refresh token of a live family.
    fn alive(&self, now: i64) -> bool {
        if self.family_expires_at.is_some_and(|f| now >= f) {
            return false;
        }
        let code = matches!(&self.subject, GrantSubject::Code(c) if now < c.expires_at);
        code || self.access.iter().any(|a| now < a.expires_at)
            || self.refresh.iter().any(|r| r.rotated_at.is_none() && now < r.expires_at)
    }
}

/// Tokens in maps behind one lock each (each operation is a few hash-map steps). The grants
/// map is locked before the ledger, which is always locked last.
pub struct MemoryStore {
    tokens: Mutex<HashMap<[u8; 32], IdentityTokenRecord>>,
    grants: Mutex<HashMap<GrantId, Grant>>,
    /// Spent client assertions (`jti` records), by [`super::AssertionUse::hash`].
    assertions: Mutex<HashMap<[u8; 32], assertions::Spent>>,
    /// Live records and bytes, in all and per tenant, against `quotas`.
    ledger: Mutex<Ledger>,
    quotas: Quotas,
    /// Where refusals are counted, by record kind and reason (a server's store).
    metrics: Option<Arc<Metrics>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_quotas(Quotas::default())
    }
}

fn locked<T, R>(m: &Mutex<T>, f: impl FnOnce(&mut T) -> R) -> R {
    let mut guard = match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    f(&mut guard)
}

/// A map left mostly empty gives its memory back (a retain alone keeps the table at its
/// peak size).
fn shrink<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}

impl MemoryStore {
    /// A store that keeps at most `max_records` live records, with no byte ceiling and no
    /// tenant shares (tests and benches of the record ceiling alone).
    pub fn with_limit(max_records: usize) -> Self {
        let unbounded = usize::MAX / 2;
        Self::with_quotas(Quotas {
            max_records,
            max_bytes: unbounded,
            namespace_records: unbounded,
            namespace_bytes: unbounded,
            identity_records: unbounded,
        })
    }

    /// A store under `quotas`.
    pub fn with_quotas(quotas: Quotas) -> Self {
        Self {
            tokens: Mutex::default(),
            grants: Mutex::default(),
            assertions: Mutex::default(),
            ledger: Mutex::default(),
            quotas,
            metrics: None,
        }
    }

    /// A store under `quotas` that counts its refusals in `metrics`.
    pub fn counted(quotas: Quotas, metrics: Arc<Metrics>) -> Self {
        Self { metrics: Some(metrics), ..Self::with_quotas(quotas) }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<[u8; 32], IdentityTokenRecord>) -> T) -> T {
        locked(&self.tokens, f)
    }

    /// Counts a refusal of a record of `kind` (a server's store).
    pub fn count_refusal(&self, kind: super::RecordKind, e: StoreError) {
        if let Some(metrics) = &self.metrics
            && e.is_refusal()
        {
            metrics.store_refused(kind, e.reason());
        }
    }

    /// Charges every one of `charges`, or none (the first refusal, counted).
    fn reserve_all(&self, charges: &[Charge<'_>]) -> Result<(), StoreError> {
        locked(&self.ledger, |l| {
            for (i, c) in charges.iter().enumerate() {
                if let Err(e) = l.reserve(&self.quotas, c) {
                    charges[..i].iter().for_each(|c| l.release(c));
                    self.count_refusal(c.kind, e);
                    return Err(e);
                }
            }
            Ok(())
        })
    }

    fn release_all(&self, charges: &[Charge<'_>]) {
        locked(&self.ledger, |l| charges.iter().for_each(|c| l.release(c)));
    }

    /// Gives back everything a removed grant held; how many records.
    fn release_grant(&self, grant: &Grant) -> usize {
        let charges = grant.charges();
        self.release_all(&charges);
        charges.len()
    }

    /// Stores what `issue` issues into `grant`, charged, or nothing (refused).
    fn issue_into(&self, grant: &mut Grant, issue: &Issue) -> Result<(), StoreError> {
        let mut charges = vec![grant.subject.access_charge(&issue.access.scopes)];
        if issue.refresh.is_some() {
            charges.push(grant.subject.refresh_charge());
        }
        self.reserve_all(&charges)?;
        if let Some(r) = &issue.refresh {
            let family = *grant.family_expires_at.get_or_insert(r.family_expires_at);
            grant.refresh.push(RefreshEntry {
                hash: r.hash,
                issued_at: issue.access.issued_at,
                expires_at: r.expires_at.min(family),
                rotated_at: None,
                charged: true,
            });
        }
        grant.access.push(AccessEntry::of(&issue.access, grant.family_expires_at));
        Ok(())
    }

    /// Past [`MAX_ROTATED_KEPT`] rotated refresh tokens, forgets the oldest down to
    /// [`ROTATED_PRUNED_TO`] (as the Redis store does).
    fn forget_rotated(&self, grant: &mut Grant) {
        if grant.refresh.iter().filter(|r| r.rotated_at.is_some()).count() <= MAX_ROTATED_KEPT {
            return;
        }
        let mut marks: Vec<(i64, usize)> =
            grant.refresh.iter().enumerate().filter_map(|(i, r)| r.rotated_at.map(|at| (at, i))).collect();
        marks.sort_unstable();
        let mut forget = vec![false; grant.refresh.len()];
        for &(_, i) in &marks[..marks.len() - ROTATED_PRUNED_TO] {
            forget[i] = true;
        }
        let mut released = Vec::new();
        let mut i = 0;
        grant.refresh.retain(|r| {
            let gone = forget[i];
            i += 1;
            if gone && r.charged {
                released.push(grant.subject.refresh_charge());
            }
            !gone
        });
        self.release_all(&released);
    }

    /// Drops what expired inside a grant, giving its charges back; how many records.
    fn purge_grant(&self, grant: &mut Grant, now: i64) -> usize {
        let Grant { subject, access, refresh, .. } = grant;
        let mut released = Vec::new();
        access.retain(|a| {
            let keep = now < a.expires_at;
            // A client grant's token goes with the grant's record, given back with it.
            if !keep && subject.tokens_charged_apart() {
                released.push(subject.access_charge(&a.scopes));
            }
            keep
        });
        refresh.retain_mut(|r| {
            if now < r.expires_at {
                return true;
            }
            if r.charged {
                released.push(subject.refresh_charge());
                r.charged = false;
            }
            // A rotated token stays, as a mark, for reuse detection.
            r.rotated_at.is_some()
        });
        self.release_all(&released);
        released.len()
    }

    /// Live usage in all.
    pub fn usage(&self) -> Usage {
        locked(&self.ledger, |l| l.total())
    }

    /// Live usage of one namespace.
    pub fn namespace_usage(&self, namespace: &str) -> Usage {
        locked(&self.ledger, |l| l.namespace(namespace))
    }

    /// How many grants are stored (codes, refresh families, client grants).
    pub fn grants(&self) -> usize {
        locked(&self.grants, |m| m.len())
    }
}

fn check(record: &IdentityTokenRecord, limits: &TokenLimits, now: i64) -> Result<(), TokenError> {
    if now >= record.expires_at(limits) {
        return Err(TokenError::Expired);
    }
    if record.uses_left(limits) == Some(0) {
        return Err(TokenError::UsesExhausted);
    }
    Ok(())
}

impl TokenStore for MemoryStore {
    fn insert(&self, hash: [u8; 32], record: IdentityTokenRecord) -> Result<(), StoreError> {
        self.with(|m| {
            self.reserve_all(&[record.charge()])?;
            if let Some(old) = m.insert(hash, record) {
                self.release_all(&[old.charge()]);
            }
            Ok(())
        })
    }

    fn use_token(&self, hash: &[u8; 32], limits: &TokenLimits, now: i64) -> Result<IdentityTokenRecord, TokenError> {
        self.with(|m| {
            let record = m.get_mut(hash).ok_or(TokenError::Unknown)?;
            check(record, limits, now)?;
            record.uses += 1;
            Ok(record.clone())
        })
    }

    fn peek(&self, hash: &[u8; 32], limits: &TokenLimits, now: i64) -> Result<IdentityTokenRecord, TokenError> {
        self.with(|m| {
            let record = m.get(hash).ok_or(TokenError::Unknown)?;
            if now >= record.expires_at(limits) {
                return Err(TokenError::Expired);
            }
            Ok(record.clone())
        })
    }

    fn renew(&self, hash: &[u8; 32], limits: &TokenLimits, now: i64) -> Result<IdentityTokenRecord, TokenError> {
        self.with(|m| {
            let record = m.get_mut(hash).ok_or(TokenError::Unknown)?;
            check(record, limits, now)?;
            record.renewed_at = now;
            Ok(record.clone())
        })
    }

    fn revoke(&self, hash: &[u8; 32]) -> bool {
        self.with(|m| match m.remove(hash) {
            Some(old) => {
                self.release_all(&[old.charge()]);
                true
            }
            None => false,
        })
    }

    fn revoke_identity(&self, identity: &ObjectKey, keep_identity_id: Option<&str>) -> usize {
        self.with(|m| {
            let before = m.len();
            m.retain(|_, r| {
                let keep = &r.identity != identity || Some(r.identity_id.as_str()) == keep_identity_id;
                if !keep {
                    self.release_all(&[r.charge()]);
                }
                keep
            });
            shrink(m);
            before - m.len()
        })
    }

    fn purge(&self, now: i64, live: &dyn super::Liveness) -> usize {
        let grants = locked(&self.grants, |m| {
            let mut n = 0;
            m.retain(|_, g| {
                if live.grant_alive(&g.subject) && g.alive(now) {
                    n += self.purge_grant(g, now);
                    true
                } else {
                    n += self.release_grant(g);
                    false
                }
            });
            shrink(m);
            n
        });
        let tokens = self.with(|m| {
            let before = m.len();
            m.retain(|_, r| {
                let keep = live.token_limits(r).is_some_and(|l| check(r, &l, now).is_ok());
                if !keep {
                    self.release_all(&[r.charge()]);
                }
                keep
            });
            shrink(m);
            before - m.len()
        });
        grants + tokens + self.purge_assertions(now)
    }

    fn insert_code(&self, hash: [u8; 32], record: CodeRecord) -> Result<(), StoreError> {
        let grant = Grant {
            subject: GrantSubject::Code(Box::new(record)),
            code: Some(CodeState::Unspent),
            family_expires_at: None,
            access: Vec::new(),
            refresh: Vec::new(),
        };
        locked(&self.grants, |m| {
            self.reserve_all(&[grant.subject.charge()])?;
            if let Some(old) = m.insert(hash, grant) {
                self.release_grant(&old);
            }
            Ok(())
        })
    }

    fn redeem_code(
        &self,
        hash: &[u8; 32],
        binding: &CodeBinding<'_>,
        now: i64,
        issue: &Issue,
    ) -> Result<CodeRedemption, StoreError> {
        locked(&self.grants, |m| {
            let Some(grant) = m.get_mut(hash) else { return Ok(CodeRedemption::Unknown) };
            let GrantSubject::Code(code) = &grant.subject else { return Ok(CodeRedemption::Unknown) };
            if !binding.matches(code) {
                return Ok(CodeRedemption::WrongBinding);
            }
            match grant.code {
                Some(CodeState::Unspent) => {
                    let code = code.clone();
                    grant.code = Some(CodeState::Spent);
                    if now >= code.expires_at {
                        return Ok(CodeRedemption::Unknown);
                    }
                    self.issue_into(grant, issue)?;
                    Ok(CodeRedemption::Fresh(code))
                }
                Some(CodeState::Spent) if grant.access.iter().any(|a| a.hash == issue.access.hash) => {
                    // The same exchange again (its reply was lost): its first answer.
                    Ok(CodeRedemption::Fresh(code.clone()))
                }
                _ => {
                    grant.code = Some(CodeState::Replayed);
                    let mut released: Vec<Charge<'_>> =
                        grant.access.iter().map(|a| grant.subject.access_charge(&a.scopes)).collect();
                    released.extend(grant.refresh.iter().filter(|r| r.charged).map(|_| grant.subject.refresh_charge()));
                    self.release_all(&released);
                    let revoked = grant.access.len() + grant.refresh.len();
                    grant.access = Vec::new();
                    grant.refresh = Vec::new();
                    grant.family_expires_at = None;
                    Ok(CodeRedemption::Replayed { revoked })
                }
            }
        })
    }

    fn insert_client_grant(&self, id: GrantId, grant: ClientGrant, access: &AccessIssue) -> Result<(), StoreError> {
        let grant = Grant {
            subject: GrantSubject::Client(grant),
            code: None,
            family_expires_at: None,
            access: vec![AccessEntry::of(access, None)],
            refresh: Vec::new(),
        };
        locked(&self.grants, |m| {
            self.reserve_all(&grant.charges())?;
            if let Some(old) = m.insert(id, grant) {
                self.release_grant(&old);
            }
            Ok(())
        })
    }

    fn access_token(&self, token: &str, now: i64) -> Option<AccessTokenView> {
        let id = grant_of(token)?;
        let hash = token_hash(token);
        locked(&self.grants, |m| {
            let grant = m.get(&id)?;
            let entry = grant.access.iter().find(|a| a.hash == hash && now < a.expires_at)?;
            Some(entry.view(&grant.subject))
        })
    }

    fn refresh_token(&self, token: &str, now: i64) -> Option<RefreshView> {
        let id = grant_of(token)?;
        let hash = token_hash(token);
        locked(&self.grants, |m| {
            let grant = m.get(&id)?;
            let family_expires_at = grant.family_expires_at?;
            let entry = grant.refresh.iter().find(|r| r.hash == hash)?;
            // A rotated token is read until its family expires, however idle: a late reuse
            // must still be recognised as one.
            let live = entry.rotated_at.is_some() || now < entry.expires_at;
            (live && now < family_expires_at).then(|| RefreshView {
                grant: grant.subject.clone(),
                expires_at: entry.expires_at,
                family_expires_at,
                issued_at: entry.issued_at,
                rotated_at: entry.rotated_at,
            })
        })
    }

    fn refresh(
        &self,
        token: &str,
        binding: &GrantBinding<'_>,
        now: i64,
        reuse_interval: i64,
        issue: &Issue,
    ) -> Result<RefreshOutcome, StoreError> {
        let Some(id) = grant_of(token) else { return Ok(RefreshOutcome::Unknown) };
        let hash = token_hash(token);
        locked(&self.grants, |m| {
            let Some(grant) = m.get_mut(&id) else { return Ok(RefreshOutcome::Unknown) };
            let Some(i) = grant.refresh.iter().position(|r| r.hash == hash) else {
                return Ok(RefreshOutcome::Unknown);
            };
            if !grant.subject.bound_to(binding) {
                return Ok(RefreshOutcome::WrongBinding);
            }
            if grant.family_expires_at.is_none_or(|f| now >= f) {
                return Ok(RefreshOutcome::Unknown);
            }
            let presented = grant.refresh[i];
            if presented.rotated_at.is_some_and(|at| now >= at.saturating_add(reuse_interval)) {
                if let Some(gone) = m.remove(&id) {
                    self.release_grant(&gone);
                }
                return Ok(RefreshOutcome::Reused { revoked: true });
            }
            if now >= presented.expires_at {
                return Ok(RefreshOutcome::Unknown);
            }
            self.issue_into(grant, issue)?;
            if let Some(r) = grant.refresh.get_mut(i) {
                r.rotated_at.get_or_insert(now);
            }
            self.forget_rotated(grant);
            Ok(RefreshOutcome::Rotated(grant.subject.clone()))
        })
    }

    fn revoke_access(&self, token: &str) -> bool {
        let Some(id) = grant_of(token) else { return false };
        let hash = token_hash(token);
        locked(&self.grants, |m| {
            let Some(grant) = m.get_mut(&id) else { return false };
            let Some(i) = grant.access.iter().position(|a| a.hash == hash) else { return false };
            if !grant.subject.tokens_charged_apart() {
                // A client grant's one token is the grant: both go.
                if let Some(gone) = m.remove(&id) {
                    self.release_grant(&gone);
                }
                return true;
            }
            let gone = grant.access.remove(i);
            self.release_all(&[grant.subject.access_charge(&gone.scopes)]);
            true
        })
    }

    fn revoke_grant(&self, token: &str) -> bool {
        let Some(id) = grant_of(token) else { return false };
        let hash = token_hash(token);
        locked(&self.grants, |m| {
            let member = m
                .get(&id)
                .is_some_and(|g| g.access.iter().any(|a| a.hash == hash) || g.refresh.iter().any(|r| r.hash == hash));
            if !member {
                return false;
            }
            if let Some(gone) = m.remove(&id) {
                self.release_grant(&gone);
            }
            true
        })
    }

    fn len(&self) -> usize {
        self.with(|m| m.len())
    }

    fn records(&self) -> usize {
        self.usage().records
    }
}

mod assertions;
#[cfg(test)]
mod tests;

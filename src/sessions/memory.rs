//! The in-memory token store of a single replica.

use std::collections::HashMap;
use std::sync::Mutex;

use super::quota::{Charge, Ledger, Quotas, Usage};
use super::{
    CodeBinding, CodeRecord, CodeRedemption, StoreError, TokenError, TokenLimits, TokenRecord, TokenStore,
    UserinfoRecord,
};
use crate::api::ObjectKey;

/// Where a code stands. Spent and replayed codes are kept until they expire, so a replay is
/// recognised and the tokens of the first redemption can be revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CodeState {
    Unspent,
    Spent,
    Replayed,
}

/// Tokens in maps behind one lock each (each operation is a few hash-map steps). Codes and
/// userinfo tokens are locked in that order when both are needed, so a replay and a
/// concurrent first redemption cannot interleave; the ledger is always locked last.
pub struct MemoryStore {
    tokens: Mutex<HashMap<[u8; 32], TokenRecord>>,
    codes: Mutex<HashMap<[u8; 32], (CodeRecord, CodeState)>>,
    userinfo: Mutex<HashMap<[u8; 32], UserinfoRecord>>,
    /// Live records and bytes, in all and per tenant, against `quotas`.
    ledger: Mutex<Ledger>,
    quotas: Quotas,
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

/// A record the store keeps, and what it is charged.
trait Charged {
    fn charged(&self) -> Charge<'_>;
}

impl Charged for TokenRecord {
    fn charged(&self) -> Charge<'_> {
        self.charge()
    }
}

impl Charged for (CodeRecord, CodeState) {
    fn charged(&self) -> Charge<'_> {
        self.0.charge()
    }
}

impl Charged for UserinfoRecord {
    fn charged(&self) -> Charge<'_> {
        self.charge()
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
            codes: Mutex::default(),
            userinfo: Mutex::default(),
            ledger: Mutex::default(),
            quotas,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<[u8; 32], TokenRecord>) -> T) -> T {
        locked(&self.tokens, f)
    }

    /// Inserts into `map` under its lock, charging the ledger (or refusing).
    fn insert_into<V: Charged>(
        &self,
        map: &mut HashMap<[u8; 32], V>,
        hash: [u8; 32],
        value: V,
    ) -> Result<(), StoreError> {
        locked(&self.ledger, |l| l.reserve(&self.quotas, &value.charged()))?;
        if let Some(old) = map.insert(hash, value) {
            self.release(&old);
        }
        Ok(())
    }

    fn release<V: Charged>(&self, value: &V) {
        locked(&self.ledger, |l| l.release(&value.charged()));
    }

    /// Removes the entries `keep` refuses, giving back their charges; how many. A map left
    /// mostly empty gives its memory back (a retain alone keeps the table at its peak size).
    fn retain<V: Charged>(&self, map: &mut HashMap<[u8; 32], V>, mut keep: impl FnMut(&V) -> bool) -> usize {
        let before = map.len();
        map.retain(|_, v| {
            let kept = keep(v);
            if !kept {
                self.release(v);
            }
            kept
        });
        if map.capacity() > 64 && map.len() < map.capacity() / 4 {
            map.shrink_to(map.len() * 2);
        }
        before - map.len()
    }

    /// Live usage in all.
    pub fn usage(&self) -> Usage {
        locked(&self.ledger, |l| l.total())
    }

    /// Live usage of one namespace.
    pub fn namespace_usage(&self, namespace: &str) -> Usage {
        locked(&self.ledger, |l| l.namespace(namespace))
    }
}

fn check(record: &TokenRecord, limits: &TokenLimits, now: i64) -> Result<(), TokenError> {
    if now >= record.expires_at(limits) {
        return Err(TokenError::Expired);
    }
    if record.uses_left(limits) == Some(0) {
        return Err(TokenError::UsesExhausted);
    }
    Ok(())
}

impl TokenStore for MemoryStore {
    fn insert(&self, hash: [u8; 32], record: TokenRecord) -> Result<(), StoreError> {
        self.with(|m| self.insert_into(m, hash, record))
    }

    fn use_token(&self, hash: &[u8; 32], limits: &TokenLimits, now: i64) -> Result<TokenRecord, TokenError> {
        self.with(|m| {
            let record = m.get_mut(hash).ok_or(TokenError::Unknown)?;
            check(record, limits, now)?;
            record.uses += 1;
            Ok(record.clone())
        })
    }

    fn peek(&self, hash: &[u8; 32], limits: &TokenLimits, now: i64) -> Result<TokenRecord, TokenError> {
        self.with(|m| {
            let record = m.get(hash).ok_or(TokenError::Unknown)?;
            if now >= record.expires_at(limits) {
                return Err(TokenError::Expired);
            }
            Ok(record.clone())
        })
    }

    fn renew(&self, hash: &[u8; 32], limits: &TokenLimits, now: i64) -> Result<TokenRecord, TokenError> {
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
                self.release(&old);
                true
            }
            None => false,
        })
    }

    fn revoke_identity(&self, identity: &ObjectKey, keep_identity_id: Option<&str>) -> usize {
        self.with(|m| self.retain(m, |r| &r.identity != identity || Some(r.identity_id.as_str()) == keep_identity_id))
    }

    fn purge(&self, now: i64, live: &dyn super::Liveness) -> usize {
        let codes = locked(&self.codes, |m| self.retain(m, |(c, _)| now < c.expires_at && live.code_alive(c)));
        let userinfo = locked(&self.userinfo, |m| self.retain(m, |u| now < u.expires_at && live.userinfo_alive(u)));
        let tokens = self.with(|m| self.retain(m, |r| live.token_limits(r).is_some_and(|l| check(r, &l, now).is_ok())));
        codes + userinfo + tokens
    }

    fn insert_code(&self, hash: [u8; 32], record: CodeRecord) -> Result<(), StoreError> {
        locked(&self.codes, |m| self.insert_into(m, hash, (record, CodeState::Unspent)))
    }

    fn redeem_code(&self, hash: &[u8; 32], binding: &CodeBinding<'_>, now: i64) -> CodeRedemption {
        locked(&self.codes, |m| match m.get_mut(hash) {
            None => CodeRedemption::Unknown,
            Some((record, _)) if !binding.matches(record) => CodeRedemption::WrongBinding,
            Some((_, state @ (CodeState::Spent | CodeState::Replayed))) => {
                *state = CodeState::Replayed;
                // Still under the codes lock: a first redemption storing its token now waits,
                // then sees the replay and refuses.
                let revoked = locked(&self.userinfo, |u| self.retain(u, |t| &t.code_hash != hash));
                CodeRedemption::Replayed { revoked }
            }
            Some((record, state)) => {
                *state = CodeState::Spent;
                if now >= record.expires_at {
                    CodeRedemption::Unknown
                } else {
                    CodeRedemption::Fresh(Box::new(record.clone()))
                }
            }
        })
    }

    fn insert_userinfo(&self, hash: [u8; 32], record: UserinfoRecord) -> Result<(), StoreError> {
        locked(&self.codes, |codes| {
            if codes.get(&record.code_hash).is_some_and(|(_, s)| *s == CodeState::Replayed) {
                return Err(StoreError::CodeReplayed);
            }
            locked(&self.userinfo, |m| self.insert_into(m, hash, record))
        })
    }

    fn userinfo(&self, hash: &[u8; 32], now: i64) -> Option<UserinfoRecord> {
        locked(&self.userinfo, |m| m.get(hash).filter(|u| now < u.expires_at).cloned())
    }

    fn len(&self) -> usize {
        self.with(|m| m.len())
    }

    fn records(&self) -> usize {
        self.usage().records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::Alias;

    const L: TokenLimits = TokenLimits { ttl: 100, max_ttl: 250, num_uses_limit: 2 };

    fn store_with_one() -> (MemoryStore, [u8; 32]) {
        let s = MemoryStore::default();
        let r = TokenRecord {
            identity: ObjectKey::new("ns", "id"),
            identity_id: "e1".into(),
            identity_uid: "".into(),
            issued_at: 0,
            renewed_at: 0,
            uses: 0,
            alias: Alias::default(),
        };
        s.insert([1; 32], r).unwrap();
        (s, [1; 32])
    }

    #[test]
    fn use_limit_and_expiry_with_a_fake_clock() {
        let (s, h) = store_with_one();
        assert_eq!(s.use_token(&h, &L, 10).unwrap().uses, 1);
        assert_eq!(s.use_token(&h, &L, 20).unwrap().uses, 2);
        assert_eq!(s.use_token(&h, &L, 30), Err(TokenError::UsesExhausted));
        let unlimited = TokenLimits { num_uses_limit: 0, ..L };
        assert!(s.use_token(&h, &unlimited, 99).is_ok());
        assert_eq!(s.use_token(&h, &unlimited, 100), Err(TokenError::Expired));
        assert_eq!(s.use_token(&[2; 32], &L, 0), Err(TokenError::Unknown));
    }

    #[test]
    fn renewal_extends_by_ttl_but_never_past_max_ttl() {
        let (s, h) = store_with_one();
        let unlimited = TokenLimits { num_uses_limit: 0, ..L };
        let r = s.renew(&h, &unlimited, 90).unwrap();
        assert_eq!(r.expires_at(&unlimited), 190);
        let r = s.renew(&h, &unlimited, 180).unwrap();
        assert_eq!(r.expires_at(&unlimited), 250, "capped at max TTL");
        assert_eq!(s.renew(&h, &unlimited, 250), Err(TokenError::Expired));
    }

    #[test]
    fn lowered_limits_apply_to_issued_tokens() {
        let (s, h) = store_with_one();
        assert!(s.use_token(&h, &L, 60).is_ok());
        let lowered = TokenLimits { ttl: 50, ..L };
        assert_eq!(s.use_token(&h, &lowered, 60), Err(TokenError::Expired));
        let one_use = TokenLimits { num_uses_limit: 1, ..L };
        assert_eq!(s.use_token(&h, &one_use, 61), Err(TokenError::UsesExhausted));
    }

    fn code(expires_at: i64) -> CodeRecord {
        CodeRecord {
            namespace: "ns".into(),
            provider: "p".into(),
            client_id: "c".into(),
            redirect_uri: "https://app/cb".into(),
            nonce: None,
            scopes: vec!["openid".into()],
            challenge: None,
            identity: ObjectKey::new("ns", "id"),
            identity_id: "e1".into(),
            identity_uid: "".into(),
            alias: Alias::default(),
            auth_time: 0,
            max_age_sent: false,
            expires_at,
        }
    }

    /// A directory view for the purge: every token has `.0` as its limits, every grant's
    /// owners exist when `.1`.
    struct Live(Option<TokenLimits>, bool);

    impl super::super::Liveness for Live {
        fn token_limits(&self, _: &TokenRecord) -> Option<TokenLimits> {
            self.0
        }
        fn code_alive(&self, _: &CodeRecord) -> bool {
            self.1
        }
        fn userinfo_alive(&self, _: &UserinfoRecord) -> bool {
            self.1
        }
    }

    const NO_PKCE: &[String] = &[String::new()];
    const BINDING: CodeBinding<'static> =
        CodeBinding { namespace: "ns", provider: "p", client_id: "c", redirect_uri: "https://app/cb", pkce: NO_PKCE };

    fn info(code_hash: [u8; 32]) -> UserinfoRecord {
        UserinfoRecord {
            namespace: "ns".into(),
            provider: "p".into(),
            client_id: "c".into(),
            scopes: vec![],
            identity: ObjectKey::new("ns", "id"),
            identity_id: "e1".into(),
            identity_uid: "".into(),
            alias: Alias::default(),
            expires_at: 100,
            code_hash,
        }
    }

    #[test]
    fn codes_are_single_use_and_short_lived() {
        let s = MemoryStore::default();
        s.insert_code([1; 32], code(300)).unwrap();
        assert!(matches!(s.redeem_code(&[1; 32], &BINDING, 10), CodeRedemption::Fresh(_)));
        s.insert_userinfo([9; 32], info([1; 32])).unwrap();
        assert!(s.userinfo(&[9; 32], 99).is_some());
        assert!(s.userinfo(&[9; 32], 100).is_none(), "expired");
        assert_eq!(s.redeem_code(&[1; 32], &BINDING, 11), CodeRedemption::Replayed { revoked: 1 });
        assert!(s.userinfo(&[9; 32], 1).is_none(), "revoked by the replay");
        s.insert_code([2; 32], code(300)).unwrap();
        assert_eq!(s.redeem_code(&[2; 32], &BINDING, 300), CodeRedemption::Unknown, "expired");
        assert_eq!(s.redeem_code(&[3; 32], &BINDING, 0), CodeRedemption::Unknown);
    }

    #[test]
    fn another_clients_code_is_refused_without_spending_it() {
        let s = MemoryStore::default();
        s.insert_code([1; 32], code(300)).unwrap();
        for other in [
            CodeBinding { client_id: "other", ..BINDING },
            CodeBinding { provider: "q", ..BINDING },
            CodeBinding { namespace: "b", ..BINDING },
            CodeBinding { redirect_uri: "https://app/cb2", ..BINDING },
        ] {
            assert_eq!(s.redeem_code(&[1; 32], &other, 10), CodeRedemption::WrongBinding);
        }
        assert!(matches!(s.redeem_code(&[1; 32], &BINDING, 10), CodeRedemption::Fresh(_)), "still unspent");
    }

    /// A stolen public client's code sent with a wrong verifier (or none) neither spends it
    /// nor revokes anything: its owner still redeems it (RFC 7636 §4.6 before RFC 6749 §4.1.2).
    #[test]
    fn a_wrong_code_verifier_leaves_the_code_unspent() {
        let s = MemoryStore::default();
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned();
        s.insert_code([1; 32], CodeRecord { challenge: Some((true, challenge.clone())), ..code(300) }).unwrap();
        let wrong = ["S256:x".to_owned(), format!("plain:{}", "a".repeat(43))];
        let plain_of_challenge = [format!("plain:{challenge}")];
        for pkce in [&wrong[..], NO_PKCE, &plain_of_challenge[..]] {
            assert_eq!(s.redeem_code(&[1; 32], &CodeBinding { pkce, ..BINDING }, 10), CodeRedemption::WrongBinding);
        }
        let right = [format!("S256:{challenge}")];
        assert!(matches!(
            s.redeem_code(&[1; 32], &CodeBinding { pkce: &right, ..BINDING }, 10),
            CodeRedemption::Fresh(_)
        ));
    }

    #[test]
    fn a_replay_during_the_first_exchange_stops_its_token() {
        let s = MemoryStore::default();
        s.insert_code([1; 32], code(300)).unwrap();
        assert!(matches!(s.redeem_code(&[1; 32], &BINDING, 10), CodeRedemption::Fresh(_)));
        // The replay lands before the first exchange stored its userinfo token.
        assert_eq!(s.redeem_code(&[1; 32], &BINDING, 10), CodeRedemption::Replayed { revoked: 0 });
        assert_eq!(s.insert_userinfo([9; 32], info([1; 32])), Err(StoreError::CodeReplayed));
        assert!(s.userinfo(&[9; 32], 1).is_none());
        assert_eq!(s.records(), 1, "only the code is held");
    }

    #[test]
    fn the_ceiling_refuses_new_records_until_the_purge_frees_them() {
        let s = MemoryStore::with_limit(3);
        let r = |issued_at| TokenRecord {
            identity: ObjectKey::new("ns", "id"),
            identity_id: "e1".into(),
            identity_uid: "".into(),
            issued_at,
            renewed_at: issued_at,
            uses: 0,
            alias: Alias::default(),
        };
        s.insert([1; 32], r(0)).unwrap();
        s.insert([1; 32], r(0)).unwrap();
        assert_eq!(s.records(), 1, "a replaced record counts once");
        s.insert_code([2; 32], code(50)).unwrap();
        s.insert([3; 32], r(200)).unwrap();
        assert_eq!(s.insert([4; 32], r(200)), Err(StoreError::Full { limit: 3 }));
        assert_eq!(s.insert_code([5; 32], code(500)), Err(StoreError::Full { limit: 3 }));
        assert!(matches!(s.insert_userinfo([6; 32], info([2; 32])), Err(StoreError::Full { .. })));
        // At 150 the first token (TTL 100) and the code (expires 50) are gone; the third lives.
        assert_eq!(s.purge(150, &Live(Some(L), true)), 2);
        assert_eq!(s.records(), 1);
        s.insert([4; 32], r(200)).unwrap();
        assert!(s.revoke(&[4; 32]));
        assert_eq!(s.records(), 1);
        // A token used up is purged too, and a token whose identity is gone.
        let one_use = TokenLimits { num_uses_limit: 1, ..L };
        s.use_token(&[3; 32], &one_use, 201).unwrap();
        assert_eq!(s.purge(202, &Live(Some(one_use), true)), 1);
        s.insert([7; 32], r(300)).unwrap();
        assert_eq!(s.purge(301, &Live(None, true)), 1);
        assert_eq!(s.records(), 0);
    }

    #[test]
    fn revocation() {
        let (s, h) = store_with_one();
        assert_eq!(s.revoke_identity(&ObjectKey::new("ns", "id"), Some("e1")), 0, "same identity kept");
        assert_eq!(s.revoke_identity(&ObjectKey::new("ns", "id"), None), 1);
        assert!(!s.revoke(&h));
        let (s, h) = store_with_one();
        assert!(s.revoke(&h));
        assert_eq!(s.use_token(&h, &L, 1), Err(TokenError::Unknown));
        let (s, _) = store_with_one();
        assert_eq!(s.purge(1000, &Live(Some(L), true)), 1);
    }

    /// Codes and userinfo tokens whose client, provider or identity is gone are dropped by
    /// the next purge, and their charges given back.
    #[test]
    fn grants_of_deleted_owners_are_purged_and_uncharged() {
        let s = MemoryStore::default();
        s.insert_code([1; 32], code(300)).unwrap();
        s.insert_code([2; 32], code(300)).unwrap();
        assert!(matches!(s.redeem_code(&[2; 32], &BINDING, 10), CodeRedemption::Fresh(_)));
        s.insert_userinfo([9; 32], info([2; 32])).unwrap();
        assert_eq!(s.namespace_usage("ns").records, 3);
        assert_eq!(s.purge(10, &Live(Some(L), true)), 0, "all alive");
        assert_eq!(s.purge(10, &Live(Some(L), false)), 3);
        assert_eq!(s.usage(), Usage::default());
        assert_eq!(s.namespace_usage("ns"), Usage::default());
    }

    /// One namespace at its share is refused alone; another keeps issuing; bytes count.
    #[test]
    fn a_namespace_at_its_quota_is_refused_alone() {
        let s = MemoryStore::with_quotas(Quotas::new(100, 1 << 20, 10, 1000));
        let r = |ns: &str| TokenRecord {
            identity: ObjectKey::new(ns, "id"),
            identity_id: format!("{ns}-e1"),
            identity_uid: "".into(),
            issued_at: 0,
            renewed_at: 0,
            uses: 0,
            alias: Alias::default(),
        };
        for i in 0..10u8 {
            s.insert([i; 32], r("greedy")).unwrap();
        }
        assert!(matches!(s.insert([99; 32], r("greedy")), Err(StoreError::NamespaceQuota { .. })));
        s.insert([100; 32], r("other")).expect("another namespace still issues");
        assert!(s.usage().bytes >= 11 * crate::sessions::quota::RECORD_OVERHEAD);
        assert!(s.revoke(&[0; 32]));
        s.insert([99; 32], r("greedy")).expect("a revoked token gives its room back");
    }
}

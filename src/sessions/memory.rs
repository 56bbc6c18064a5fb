//! The in-memory token store of a single replica.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{CodeRecord, CodeRedemption, TokenError, TokenLimits, TokenRecord, TokenStore, UserinfoRecord};
use crate::directory::ObjectKey;

/// Tokens in a map behind one lock (each operation is a few hash-map steps).
#[derive(Default)]
pub struct MemoryStore {
    tokens: Mutex<HashMap<[u8; 32], TokenRecord>>,
    /// Codes, with whether they were spent (kept until expiry to detect replays).
    codes: Mutex<HashMap<[u8; 32], (CodeRecord, bool)>>,
    userinfo: Mutex<HashMap<[u8; 32], UserinfoRecord>>,
}

fn locked<T, R>(m: &Mutex<T>, f: impl FnOnce(&mut T) -> R) -> R {
    let mut guard = match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    f(&mut guard)
}

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<[u8; 32], TokenRecord>) -> T) -> T {
        locked(&self.tokens, f)
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
    fn insert(&self, hash: [u8; 32], record: TokenRecord) {
        self.with(|m| m.insert(hash, record));
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
        self.with(|m| m.remove(hash).is_some())
    }

    fn revoke_identity(&self, identity: &ObjectKey, keep_identity_id: Option<&str>) -> usize {
        self.with(|m| {
            let before = m.len();
            m.retain(|_, r| &r.identity != identity || Some(r.identity_id.as_str()) == keep_identity_id);
            before - m.len()
        })
    }

    fn purge(&self, now: i64, limits_of: &dyn Fn(&TokenRecord) -> Option<TokenLimits>) -> usize {
        locked(&self.codes, |m| m.retain(|_, (c, _)| now < c.expires_at));
        locked(&self.userinfo, |m| m.retain(|_, u| now < u.expires_at));
        self.with(|m| {
            let before = m.len();
            m.retain(|_, r| limits_of(r).is_some_and(|l| now < r.expires_at(&l)));
            before - m.len()
        })
    }

    fn insert_code(&self, hash: [u8; 32], record: CodeRecord) {
        locked(&self.codes, |m| m.insert(hash, (record, false)));
    }

    fn redeem_code(&self, hash: &[u8; 32], now: i64) -> CodeRedemption {
        locked(&self.codes, |m| match m.get_mut(hash) {
            None => CodeRedemption::Unknown,
            Some((_, true)) => CodeRedemption::Replayed,
            Some((record, spent)) => {
                *spent = true;
                if now >= record.expires_at {
                    CodeRedemption::Unknown
                } else {
                    CodeRedemption::Fresh(Box::new(record.clone()))
                }
            }
        })
    }

    fn insert_userinfo(&self, hash: [u8; 32], record: UserinfoRecord) {
        locked(&self.userinfo, |m| m.insert(hash, record));
    }

    fn userinfo(&self, hash: &[u8; 32], now: i64) -> Option<UserinfoRecord> {
        locked(&self.userinfo, |m| m.get(hash).filter(|u| now < u.expires_at).cloned())
    }

    fn revoke_code_tokens(&self, code_hash: &[u8; 32]) -> usize {
        locked(&self.userinfo, |m| {
            let before = m.len();
            m.retain(|_, u| &u.code_hash != code_hash);
            before - m.len()
        })
    }

    fn len(&self) -> usize {
        self.with(|m| m.len())
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
            issued_at: 0,
            renewed_at: 0,
            uses: 0,
            alias: Alias::default(),
        };
        s.insert([1; 32], r);
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
            alias: Alias::default(),
            auth_time: 0,
            max_age_sent: false,
            expires_at,
        }
    }

    #[test]
    fn codes_are_single_use_and_short_lived() {
        let s = MemoryStore::default();
        s.insert_code([1; 32], code(300));
        assert!(matches!(s.redeem_code(&[1; 32], 10), CodeRedemption::Fresh(_)));
        assert_eq!(s.redeem_code(&[1; 32], 11), CodeRedemption::Replayed);
        s.insert_code([2; 32], code(300));
        assert_eq!(s.redeem_code(&[2; 32], 300), CodeRedemption::Unknown, "expired");
        assert_eq!(s.redeem_code(&[3; 32], 0), CodeRedemption::Unknown);
        let info = UserinfoRecord {
            namespace: "ns".into(),
            provider: "p".into(),
            client_id: "c".into(),
            scopes: vec![],
            identity: ObjectKey::new("ns", "id"),
            identity_id: "e1".into(),
            alias: Alias::default(),
            expires_at: 100,
            code_hash: [1; 32],
        };
        s.insert_userinfo([9; 32], info);
        assert!(s.userinfo(&[9; 32], 99).is_some());
        assert!(s.userinfo(&[9; 32], 100).is_none());
        assert_eq!(s.revoke_code_tokens(&[1; 32]), 1);
        assert!(s.userinfo(&[9; 32], 1).is_none());
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
        assert_eq!(s.purge(1000, &|_| Some(L)), 1);
    }
}

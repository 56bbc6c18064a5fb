//! The memory store's own semantics; the grant semantics both stores share are
//! `tests/grant_store.rs`.

use super::*;
use crate::sessions::Alias;

const L: TokenLimits = TokenLimits { ttl: 100, max_ttl: 250, num_uses_limit: 2 };

fn store_with_one() -> (MemoryStore, [u8; 32]) {
    let s = MemoryStore::default();
    let r = IdentityTokenRecord {
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
    fn token_limits(&self, _: &IdentityTokenRecord) -> Option<TokenLimits> {
        self.0
    }
    fn grant_alive(&self, _: &GrantSubject) -> bool {
        self.1
    }
}

fn issue(n: u8) -> Issue {
    Issue {
        access: AccessIssue { hash: [n; 32], expires_at: 100, scopes: vec![], jwt: false, issued_at: 10 },
        refresh: Some(super::super::RefreshIssue { hash: [n + 1; 32], expires_at: 200, family_expires_at: 400 }),
    }
}

const NO_PKCE: &[String] = &[String::new()];
const BINDING: CodeBinding<'static> =
    CodeBinding { namespace: "ns", provider: "p", client_id: "c", redirect_uri: "https://app/cb", pkce: NO_PKCE };

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
        assert_eq!(s.redeem_code(&[1; 32], &other, 10, &issue(9)).unwrap(), CodeRedemption::WrongBinding);
    }
    assert!(
        matches!(s.redeem_code(&[1; 32], &BINDING, 10, &issue(9)).unwrap(), CodeRedemption::Fresh(_)),
        "still unspent"
    );
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
        assert_eq!(
            s.redeem_code(&[1; 32], &CodeBinding { pkce, ..BINDING }, 10, &issue(9)).unwrap(),
            CodeRedemption::WrongBinding
        );
    }
    let right = [format!("S256:{challenge}")];
    assert!(matches!(
        s.redeem_code(&[1; 32], &CodeBinding { pkce: &right, ..BINDING }, 10, &issue(9)).unwrap(),
        CodeRedemption::Fresh(_)
    ));
}

#[test]
fn the_ceiling_refuses_new_records_until_the_purge_frees_them() {
    let s = MemoryStore::with_limit(3);
    let r = |issued_at| IdentityTokenRecord {
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
    assert!(matches!(s.redeem_code(&[2; 32], &BINDING, 10, &issue(6)), Err(StoreError::Full { .. })));
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
    assert!(matches!(s.redeem_code(&[2; 32], &BINDING, 10, &issue(9)), Ok(CodeRedemption::Fresh(_))));
    assert_eq!(s.namespace_usage("ns").records, 4, "two codes, an access and a refresh token");
    assert_eq!(s.purge(10, &Live(Some(L), true)), 0, "all alive");
    assert_eq!(s.purge(10, &Live(Some(L), false)), 4);
    assert_eq!(s.usage(), Usage::default());
    assert_eq!(s.namespace_usage("ns"), Usage::default());
}

/// One namespace at its share is refused alone; another keeps issuing; bytes count.
#[test]
fn a_namespace_at_its_quota_is_refused_alone() {
    let s = MemoryStore::with_quotas(Quotas::new(100, 1 << 20, 10, 1000));
    let r = |ns: &str| IdentityTokenRecord {
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

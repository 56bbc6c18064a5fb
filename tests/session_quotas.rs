//! Tenant quotas of the session store, one table run on both stores (issue 20, items 1-2):
//! a namespace at its share and an identity at its quota are refused alone, in records and
//! in bytes; an oversized record is refused; the records of a departed identity go with it
//! and give their room back, as a revoked token does. The memory store drops them in its purge, Redis by the
//! identity's index.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::sync::Arc;

use common::redis::RedisServer;
use oidc_operator::api::ObjectKey;
use oidc_operator::sessions::redis::{Owner, RedisOptions, RedisStore};
use oidc_operator::sessions::{
    Alias, GrantSubject, IdentityTokenRecord, Liveness, MemoryStore, Quotas, SessionStore, StoreError, TokenError,
    TokenLimits, TokenStore, token_hash,
};

const LIMITS: TokenLimits = TokenLimits { ttl: 3600, max_ttl: 3600, num_uses_limit: 0 };

fn now() -> i64 {
    oidc_operator::clock::unix_now()
}

fn token(ns: &str, identity: &str, alias_bytes: usize) -> IdentityTokenRecord {
    let metadata: Box<[(String, String)]> =
        if alias_bytes == 0 { Box::new([]) } else { Box::new([("m".to_owned(), "v".repeat(alias_bytes))]) };
    IdentityTokenRecord {
        identity: ObjectKey::new(ns, identity),
        identity_id: format!("{ns}-{identity}"),
        identity_uid: format!("uid-{ns}-{identity}").into(),
        issued_at: now(),
        renewed_at: now(),
        uses: 0,
        alias: Alias { name: "system:serviceaccount:ci:runner".into(), metadata },
    }
}

/// The directory as the memory store's purge sees it: every identity but `gone` exists.
struct AllBut(ObjectKey);

impl Liveness for AllBut {
    fn token_limits(&self, r: &IdentityTokenRecord) -> Option<TokenLimits> {
        (r.identity != self.0).then_some(LIMITS)
    }
    fn grant_alive(&self, g: &GrantSubject) -> bool {
        !matches!(g, GrantSubject::Code(c) if c.identity == self.0)
    }
}

/// Each store under test, and how an identity departs from it.
enum Under {
    Memory(Arc<MemoryStore>),
    Redis(Arc<RedisStore>),
}

impl Under {
    fn store(&self) -> SessionStore {
        match self {
            Self::Memory(m) => SessionStore::Memory(Arc::clone(m)),
            Self::Redis(r) => SessionStore::Redis(Arc::clone(r)),
        }
    }

    async fn depart(&self, ns: &str, identity: &str) {
        let record = token(ns, identity, 0);
        match self {
            Self::Memory(m) => {
                m.purge(now(), &AllBut(record.identity.clone()));
            }
            Self::Redis(r) => {
                let owner = Owner::Identity { name: identity, uid: &record.identity_uid, id: &record.identity_id };
                r.drop_owner(ns, &owner.suffix()).await.unwrap();
            }
        }
    }
}

/// 100 records and 100,000 bytes in all; 10% (10 records, 10,000 bytes) per namespace; 4
/// records per identity.
fn quotas() -> Quotas {
    Quotas::new(100, 100_000, 10, 4)
}

async fn the_table(under: Under, name: &str) {
    let store = under.store();
    let mut n = 0u8;
    let mut put = |record: IdentityTokenRecord| {
        n += 1;
        let store = store.clone();
        let hash = token_hash(&format!("{name}-{n}"));
        async move { (hash, store.insert(hash, record, now() + 3600).await) }
    };

    // An identity at its quota is refused; another identity of its namespace is not.
    for i in 0..4 {
        assert_eq!(put(token("greedy", "one", 0)).await.1, Ok(()), "{name}: token {i} of one");
    }
    assert_eq!(put(token("greedy", "one", 0)).await.1, Err(StoreError::IdentityQuota { records: 4 }), "{name}");
    // The namespace at its share of records (10) is refused, alone.
    for i in 0..4 {
        assert_eq!(put(token("greedy", "two", 0)).await.1, Ok(()), "{name}: token {i} of two");
    }
    let (two_last, r) = put(token("greedy", "three", 0)).await;
    assert_eq!(r, Ok(()), "{name}");
    assert_eq!(put(token("greedy", "three", 0)).await.1, Ok(()), "{name}");
    assert!(matches!(put(token("greedy", "three", 0)).await.1, Err(StoreError::NamespaceQuota { .. })), "{name}");
    assert_eq!(put(token("other", "one", 0)).await.1, Ok(()), "{name}: another namespace is served");

    // Bytes: three records of ~3.2 kB fit the namespace's 10,000 bytes, a fourth does not.
    for i in 0..3 {
        assert_eq!(put(token("wide", &format!("id{i}"), 2500)).await.1, Ok(()), "{name}: wide {i}");
    }
    assert!(matches!(put(token("wide", "id3", 2500)).await.1, Err(StoreError::NamespaceQuota { .. })), "{name}");
    // A record over the largest kept (claimMappings picking 9 kB) is refused outright.
    assert!(matches!(put(token("roomy", "one", 9000)).await.1, Err(StoreError::RecordTooLarge { .. })), "{name}");

    // Identity one departs: its four tokens go, and their room comes back.
    under.depart("greedy", "one").await;
    assert_eq!(store.peek(&two_last, &LIMITS, now()).await.map(|r| r.identity.name), Ok("three".into()));
    for i in 0..4 {
        assert_eq!(put(token("greedy", "four", 0)).await.1, Ok(()), "{name}: room given back ({i})");
    }
    // Four back makes ten again: the namespace's share.
    assert!(matches!(put(token("greedy", "four", 0)).await.1, Err(StoreError::NamespaceQuota { .. })), "{name}");
    // A revoked token gives its room back at once.
    assert_eq!(store.revoke(&two_last).await, Ok(true), "{name}");
    assert_eq!(put(token("greedy", "five", 0)).await.1, Ok(()), "{name}: room of the revoked token");
    assert!(matches!(put(token("greedy", "five", 0)).await.1, Err(StoreError::NamespaceQuota { .. })), "{name}");
    let first = token_hash(&format!("{name}-1"));
    assert_eq!(store.peek(&first, &LIMITS, now()).await, Err(TokenError::Unknown), "{name}: departed token is gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn quotas_and_departed_identities_on_the_memory_store() {
    the_table(Under::Memory(Arc::new(MemoryStore::with_quotas(quotas()))), "memory").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn quotas_and_departed_identities_on_redis() {
    let redis = tokio::task::spawn_blocking(RedisServer::start).await.unwrap();
    let options = RedisOptions { quotas: quotas(), ..RedisOptions::new(redis.url()) };
    let store = RedisStore::connect(&options, Default::default()).unwrap();
    the_table(Under::Redis(Arc::clone(&store)), "redis").await;
    // A renewal moves the record's charge forward with it, so renewing cannot keep records
    // alive past the quota's view of them.
    let session = SessionStore::Redis(store);
    let hash = token_hash("renewed");
    session.insert(hash, token("renewal", "one", 0), now() + 60).await.unwrap();
    let longer = TokenLimits { ttl: 7200, max_ttl: 7200, num_uses_limit: 0 };
    session.renew(&hash, &longer, now()).await.unwrap();
    let scores = common::redis::cli(redis.port, &["zrange", "oidcop:{t:renewal}:n", "0", "-1", "withscores"]);
    let score: i64 = scores.lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or(0);
    assert!(score >= (now() + 7000) * 1000, "the charge did not follow the renewal: {scores}");
    // A use under raised limits does not move the record past its charge: only a renewal
    // (whose charge follows) does.
    let used = token_hash("used");
    session.insert(used, token("renewal", "two", 0), now() + 60).await.unwrap();
    session.use_token(&used, &longer, now()).await.unwrap();
    let key = format!("oidcop:{{{}}}:tok", used.iter().map(|b| format!("{b:02x}")).collect::<String>());
    let ttl: i64 = common::redis::cli(redis.port, &["pttl", &key]).parse().unwrap();
    assert!(ttl > 0 && ttl <= 61_000, "a use extended the record past its charge: {ttl} ms");
    // Expired records hold their room until a charge needs it: that charge sweeps them,
    // gives their bytes back, and leaves the index with the live records only.
    for i in 0..10 {
        let hash = token_hash(&format!("brief-{i}"));
        session.insert(hash, token("brief", &format!("id{i}"), 0), now() + 1).await.unwrap();
    }
    let over = session.insert(token_hash("brief-over"), token("brief", "late", 0), now() + 60).await;
    assert!(matches!(over, Err(StoreError::NamespaceQuota { .. })), "{over:?}");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    session.insert(token_hash("brief-late"), token("brief", "late", 0), now() + 60).await.unwrap();
    let index = common::redis::cli(redis.port, &["zrange", "oidcop:{t:brief}:n", "0", "-1"]);
    let live: Vec<&str> = index.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(live.len(), 1, "the expired members were not swept: {index}");
    let bytes: usize = live[0].split('|').next().and_then(|b| b.trim().parse().ok()).unwrap();
    let counted = common::redis::cli(redis.port, &["get", "oidcop:{t:brief}:b"]);
    assert_eq!(counted.trim().parse::<usize>().ok(), Some(bytes), "the swept members' bytes were not given back");
    // Every tenant key lives in its namespace's slot and expires with its records.
    let tenant_keys = redis.keys("*{t:*");
    assert!(!tenant_keys.is_empty());
    for key in tenant_keys {
        let ttl = common::redis::cli(redis.port, &["pttl", &key]);
        assert!(ttl.parse::<i64>().unwrap() > 0, "{key} has no expiry ({ttl})");
    }
}

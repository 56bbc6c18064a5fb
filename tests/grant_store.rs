//! Grants in the session store (issue 22, item 6): one conformance table, every row run on
//! the memory store, on a single Redis node and on a Redis Cluster (every step a script on
//! one key, so the Cluster row proves a grant and its tokens stay in one slot and the quota
//! keys in their namespace's). Times are the operator's clock passed in (`now`), so idle and
//! family expiry are checked without waiting; Redis keys expire by Redis's clock, later.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::sync::Arc;

use common::redis::{RedisCluster, RedisServer};
use oidc_operator::api::ObjectKey;
use oidc_operator::metrics::Metrics;
use oidc_operator::sessions::redis::{Owner, RedisOptions, RedisStore};
use oidc_operator::sessions::{
    AccessIssue, Alias, ClientGrant, CodeBinding, CodeRecord, CodeRedemption, GrantBinding, GrantId, GrantSubject,
    IdentityTokenRecord, Issue, Liveness, MAX_ROTATED_KEPT, MemoryStore, Quotas, ROTATED_PRUNED_TO, RefreshIssue,
    RefreshOutcome, SessionStore, StoreError, TokenLimits, TokenStore, handle, new_grant_id, new_handle, token_hash,
};

const NO_PKCE: &[String] = &[String::new()];
const CLIENT: &str = "client";
const PROVIDER: &str = "provider";

/// Where the rows run: each row gets its own store (its own quotas) and namespace.
#[derive(Clone)]
enum Backend {
    Memory,
    Redis(String),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis(url) if url.starts_with("redis+cluster") => "redis-cluster",
            Self::Redis(_) => "redis",
        }
    }

    /// A store that counts its refusals, and where.
    fn counted_store(&self, quotas: Quotas) -> (SessionStore, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let store = match self {
            Self::Memory => SessionStore::memory_counted(quotas, Arc::clone(&metrics)),
            Self::Redis(url) => {
                let options = RedisOptions { quotas, ..RedisOptions::new(url.clone()) };
                SessionStore::Redis(RedisStore::connect(&options, Arc::clone(&metrics)).unwrap())
            }
        };
        (store, metrics)
    }

    fn store(&self, quotas: Quotas) -> Under {
        match self {
            Self::Memory => Under::Memory(Arc::new(MemoryStore::with_quotas(quotas))),
            Self::Redis(url) => {
                let options = RedisOptions { quotas, ..RedisOptions::new(url.clone()) };
                Under::Redis(RedisStore::connect(&options, Default::default()).unwrap())
            }
        }
    }
}

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

    /// The client `client_id` of `namespace` leaves the directory: the memory store's purge
    /// drops its grants, Redis drops them by the client's two indexes, its users' grants'
    /// and its own (as `drop_departed` does).
    async fn depart_client(&self, namespace: &str, client_id: &str, now: i64) -> usize {
        match self {
            Self::Memory(m) => m.purge(now, &AllBut(client_id.to_owned())),
            Self::Redis(r) => {
                let users = r.drop_owner(namespace, &Owner::Client { client_id }.suffix()).await.unwrap();
                users + r.drop_owner(namespace, &Owner::ClientGrants { client_id }.suffix()).await.unwrap()
            }
        }
    }

    /// The memory store's purge at `now` with every owner alive (Redis expires by itself).
    fn purge(&self, now: i64) {
        if let Self::Memory(m) = self {
            m.purge(now, &AllBut(String::new()));
        }
    }
}

/// How many refusals of `record` for `reason` the store counted.
fn refusals(metrics: &Metrics, record: &str, reason: &str) -> u64 {
    let series = format!("oidc_operator_session_store_refusals_total{{record=\"{record}\",reason=\"{reason}\"}} ");
    let text = metrics.render(0);
    text.lines().find_map(|l| l.strip_prefix(series.as_str())).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// The directory as the purge sees it: every owner exists but the client named.
struct AllBut(String);

impl Liveness for AllBut {
    fn token_limits(&self, _: &IdentityTokenRecord) -> Option<TokenLimits> {
        Some(TokenLimits { ttl: 3600, max_ttl: 3600, num_uses_limit: 0 })
    }
    fn grant_alive(&self, grant: &GrantSubject) -> bool {
        grant.client_id() != self.0
    }
}

fn quotas(per_owner: usize) -> Quotas {
    Quotas::new(100_000, 100 << 20, 100, per_owner)
}

fn code(ns: &str, identity: &str, now: i64) -> CodeRecord {
    CodeRecord {
        namespace: ns.into(),
        provider: PROVIDER.into(),
        client_id: CLIENT.into(),
        redirect_uri: "https://app.example/cb".into(),
        nonce: None,
        scopes: vec!["openid".into(), "profile".into()],
        challenge: None,
        identity: ObjectKey::new(ns, identity),
        identity_id: format!("{ns}-{identity}"),
        identity_uid: format!("uid-{identity}").into(),
        alias: Alias { name: "system:serviceaccount:ci:runner".into(), metadata: Box::new([]) },
        auth_time: now,
        max_age_sent: false,
        expires_at: now + 60,
    }
}

fn code_binding(ns: &str) -> CodeBinding<'_> {
    CodeBinding {
        namespace: ns,
        provider: PROVIDER,
        client_id: CLIENT,
        redirect_uri: "https://app.example/cb",
        pkce: NO_PKCE,
    }
}

fn binding(ns: &str) -> GrantBinding<'_> {
    GrantBinding { namespace: ns, provider: PROVIDER, client_id: CLIENT }
}

/// Tokens minted for one store step, and the issue that stores them.
struct Minted {
    access: String,
    refresh: Option<String>,
    issue: Issue,
}

/// An access token living `ttl` from `now`, and a refresh token idle until `idle` within a
/// family ending at `family`, when given.
fn mint(grant: &GrantId, now: i64, ttl: i64, refresh: Option<(i64, i64)>, scopes: &[&str]) -> Minted {
    let access = new_handle(grant).unwrap();
    let refresh_token = refresh.map(|_| new_handle(grant).unwrap());
    let issue = Issue {
        access: AccessIssue {
            hash: token_hash(&access),
            expires_at: now + ttl,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            jwt: false,
            issued_at: now,
        },
        refresh: refresh.zip(refresh_token.as_ref()).map(|((idle, family), token)| RefreshIssue {
            hash: token_hash(token),
            expires_at: idle,
            family_expires_at: family,
        }),
    };
    Minted { access, refresh: refresh_token, issue }
}

/// A code of `identity` redeemed, issuing an access token (an hour) and a refresh token idle
/// for `idle` seconds in a family of `family` seconds.
async fn redeemed(
    store: &SessionStore,
    ns: &str,
    identity: &str,
    now: i64,
    idle: i64,
    family: i64,
) -> (GrantId, Minted) {
    let grant = token_hash(&format!("{ns}-{identity}-{}", new_handle(&[0; 32]).unwrap()));
    store.insert_code(grant, code(ns, identity, now)).await.unwrap();
    let minted = mint(&grant, now, 3600, Some((now + idle, now + family)), &[]);
    let redemption = store.redeem_code(&grant, &code_binding(ns), now, &minted.issue).await.unwrap();
    assert!(matches!(redemption, CodeRedemption::Fresh(_)), "{redemption:?}");
    (grant, minted)
}

fn client_grant(ns: &str, client: &str, now: i64) -> ClientGrant {
    ClientGrant {
        namespace: ns.into(),
        provider: PROVIDER.into(),
        client_id: client.into(),
        client_name: format!("{client}-object"),
        scopes: vec!["read".into()],
        audiences: vec!["https://api.example".into()],
        issued_at: now,
    }
}

/// One row: its name and what it checks, on a fresh store.
async fn run_row(backend: &Backend, row: &str, now: i64) {
    let ns = format!("{}-{row}", backend.name()).replace('_', "-");
    let ns = ns.as_str();
    // The grants `redeemed` stores, as the token endpoint reads them with a refresh token.
    let alice = GrantSubject::Code(Box::new(code(ns, "alice", now)));
    let bob = GrantSubject::Code(Box::new(code(ns, "bob", now)));
    let which = backend.name();
    match row {
        "issue_and_lookup" => {
            let under = backend.store(quotas(100));
            let store = under.store();
            let (_, t) = redeemed(&store, ns, "alice", now, 600, 3000).await;
            let access = store.access_token(&t.access, now).await.unwrap().expect("the access token reads");
            assert_eq!(access.scopes, ["openid", "profile"], "{which}: the grant's scopes");
            assert_eq!((access.expires_at, access.issued_at, access.jwt), (now + 3000, now, false), "{which}: capped");
            assert!(matches!(&access.grant, GrantSubject::Code(c) if c.identity.name == "alice"), "{which}");
            let refresh = t.refresh.as_deref().unwrap();
            let view = store.refresh_token(refresh, now).await.unwrap().expect("the refresh token reads");
            assert_eq!(
                (view.expires_at, view.family_expires_at, view.rotated_at.is_some()),
                (now + 600, now + 3000, false)
            );
            // Tokens are not interchangeable, and a forged handle naming the grant is unknown.
            assert_eq!(store.access_token(refresh, now).await.unwrap(), None, "{which}");
            assert_eq!(store.refresh_token(&t.access, now).await.unwrap(), None, "{which}");
            let grant = oidc_operator::sessions::grant_of(&t.access).unwrap();
            assert_eq!(store.access_token(&handle::handle("forged", &grant), now).await.unwrap(), None);
            assert_eq!(store.access_token("no-suffix", now).await.unwrap(), None);
            // A client grant reads as the client's, with its narrowed JWT access token.
            let id = new_grant_id().unwrap();
            let mut m = mint(&id, now, 300, None, &["read"]);
            m.issue.access.jwt = true;
            store.insert_client_grant(id, client_grant(ns, "svc", now), &m.issue.access).await.unwrap();
            let view = store.access_token(&m.access, now).await.unwrap().expect("the client's token reads");
            assert!(view.jwt && view.scopes == ["read"], "{which}: {view:?}");
            assert!(matches!(&view.grant, GrantSubject::Client(g) if g.client_id == "svc"), "{which}");
            assert_eq!(store.access_token(&m.access, now + 300).await.unwrap(), None, "{which}: expired");
        }
        "rotate" => {
            let store = backend.store(quotas(100)).store();
            let (grant, t) = redeemed(&store, ns, "alice", now, 600, 3000).await;
            let next = mint(&grant, now + 10, 3600, Some((now + 610, now + 3000)), &["openid"]);
            let r1 = t.refresh.as_deref().unwrap();
            let outcome = store.refresh(r1, &alice, &binding(ns), now + 10, 0, &next.issue).await.unwrap();
            assert!(matches!(outcome, RefreshOutcome::Rotated(GrantSubject::Code(_))), "{which}: {outcome:?}");
            assert!(
                store.refresh_token(r1, now + 10).await.unwrap().unwrap().rotated_at.is_some(),
                "{which}: marked rotated"
            );
            let r2 = store.refresh_token(next.refresh.as_deref().unwrap(), now + 10).await.unwrap().unwrap();
            assert_eq!(
                (r2.rotated_at.is_some(), r2.family_expires_at),
                (false, now + 3000),
                "{which}: the family's expiry kept"
            );
            let narrowed = store.access_token(&next.access, now + 10).await.unwrap().unwrap();
            assert_eq!(narrowed.scopes, ["openid"], "{which}: a narrowed access token");
            assert!(store.access_token(&t.access, now + 10).await.unwrap().is_some(), "{which}: older access kept");
        }
        "reuse_within_interval" => {
            let store = backend.store(quotas(100)).store();
            let (grant, t) = redeemed(&store, ns, "alice", now, 600, 3000).await;
            let r1 = t.refresh.as_deref().unwrap();
            let mut issued = vec![t.access.clone()];
            for at in [now + 1, now + 20] {
                let next = mint(&grant, at, 3600, Some((at + 600, now + 3000)), &[]);
                let outcome = store.refresh(r1, &alice, &binding(ns), at, 30, &next.issue).await.unwrap();
                assert!(matches!(outcome, RefreshOutcome::Rotated(_)), "{which} at +{}: {outcome:?}", at - now);
                issued.push(next.access);
            }
            // Past the interval (30 s from the first rotation, at +1): the family is revoked.
            let late = mint(&grant, now + 31, 3600, Some((now + 631, now + 3000)), &[]);
            let outcome = store.refresh(r1, &alice, &binding(ns), now + 31, 30, &late.issue).await.unwrap();
            assert_eq!(outcome, RefreshOutcome::Reused { revoked: true }, "{which}");
            for access in &issued {
                assert_eq!(store.access_token(access, now + 31).await.unwrap(), None, "{which}: access revoked");
            }
            assert_eq!(store.access_token(&late.access, now + 31).await.unwrap(), None, "{which}: nothing issued");
        }
        "reuse_after_interval" => {
            let store = backend.store(quotas(100)).store();
            let (grant, t) = redeemed(&store, ns, "alice", now, 600, 3000).await;
            let r1 = t.refresh.as_deref().unwrap();
            let next = mint(&grant, now + 5, 3600, Some((now + 605, now + 3000)), &[]);
            assert!(matches!(
                store.refresh(r1, &alice, &binding(ns), now + 5, 0, &next.issue).await.unwrap(),
                RefreshOutcome::Rotated(_)
            ));
            let again = mint(&grant, now + 6, 3600, Some((now + 606, now + 3000)), &[]);
            let outcome = store.refresh(r1, &alice, &binding(ns), now + 6, 0, &again.issue).await.unwrap();
            assert_eq!(outcome, RefreshOutcome::Reused { revoked: true }, "{which}");
            let r2 = next.refresh.as_deref().unwrap();
            let after = mint(&grant, now + 7, 3600, Some((now + 607, now + 3000)), &[]);
            let outcome = store.refresh(r2, &alice, &binding(ns), now + 7, 0, &after.issue).await.unwrap();
            assert_eq!(outcome, RefreshOutcome::Unknown, "{which}: the new refresh token went with the family");
            for access in [&t.access, &next.access, &again.access] {
                assert_eq!(store.access_token(access, now + 7).await.unwrap(), None, "{which}");
            }
        }
        "reuse_after_idle_expiry" => {
            // The thief rotated the token; its owner comes back after the token's idle
            // lifetime: still a reuse, still revoking the family (RFC 9700 §4.14.2).
            let store = backend.store(quotas(100)).store();
            let (grant, t) = redeemed(&store, ns, "alice", now, 600, 3000).await;
            let r1 = t.refresh.as_deref().unwrap();
            let next = mint(&grant, now + 5, 3600, Some((now + 1800, now + 3000)), &[]);
            assert!(matches!(
                store.refresh(r1, &alice, &binding(ns), now + 5, 0, &next.issue).await.unwrap(),
                RefreshOutcome::Rotated(_)
            ));
            let late = now + 700;
            let view = store.refresh_token(r1, late).await.unwrap();
            assert!(
                view.is_some_and(|v| v.rotated_at == Some(now + 5)),
                "{which}: a rotated token is read while its family lives"
            );
            let again = mint(&grant, late, 3600, Some((late + 600, now + 3000)), &[]);
            let outcome = store.refresh(r1, &alice, &binding(ns), late, 0, &again.issue).await.unwrap();
            assert_eq!(outcome, RefreshOutcome::Reused { revoked: true }, "{which}");
            assert_eq!(store.refresh_token(next.refresh.as_deref().unwrap(), late).await.unwrap(), None, "{which}");
        }
        "concurrent_refresh" => {
            let store = backend.store(quotas(100)).store();
            let (grant, t) = redeemed(&store, ns, "alice", now, 600, 3000).await;
            let r1 = t.refresh.as_deref().unwrap();
            let (a, b) = (
                mint(&grant, now + 1, 3600, Some((now + 601, now + 3000)), &[]),
                mint(&grant, now + 1, 3600, Some((now + 601, now + 3000)), &[]),
            );
            let own = binding(ns);
            let (x, y) = tokio::join!(
                store.refresh(r1, &alice, &own, now + 1, 0, &a.issue),
                store.refresh(r1, &alice, &own, now + 1, 0, &b.issue)
            );
            let outcomes = [x.unwrap(), y.unwrap()];
            let rotated = outcomes.iter().filter(|o| matches!(o, RefreshOutcome::Rotated(_))).count();
            let reused = outcomes.iter().filter(|o| **o == RefreshOutcome::Reused { revoked: true }).count();
            assert_eq!((rotated, reused), (1, 1), "{which}: {outcomes:?}");
            // The reuse revoked the family, the winner's new tokens with it.
            for m in [&a, &b] {
                assert_eq!(store.access_token(&m.access, now + 1).await.unwrap(), None, "{which}");
                assert_eq!(store.refresh_token(m.refresh.as_deref().unwrap(), now + 1).await.unwrap(), None);
            }
        }
        "wrong_binding" => {
            let store = backend.store(quotas(100)).store();
            let (grant, t) = redeemed(&store, ns, "alice", now, 600, 3000).await;
            let r1 = t.refresh.as_deref().unwrap();
            let next = mint(&grant, now + 1, 3600, Some((now + 601, now + 3000)), &[]);
            for other in [
                GrantBinding { client_id: "another-client", ..binding(ns) },
                GrantBinding { provider: "another-provider", ..binding(ns) },
                GrantBinding { namespace: "another-namespace", ..binding(ns) },
            ] {
                let outcome = store.refresh(r1, &alice, &other, now + 1, 0, &next.issue).await.unwrap();
                assert_eq!(outcome, RefreshOutcome::WrongBinding, "{which}: {other:?}");
            }
            assert!(
                store.refresh_token(r1, now + 1).await.unwrap().unwrap().rotated_at.is_none(),
                "{which}: left as it was"
            );
            assert_eq!(store.access_token(&next.access, now + 1).await.unwrap(), None, "{which}: nothing issued");
            let outcome = store.refresh(r1, &alice, &binding(ns), now + 1, 0, &next.issue).await.unwrap();
            assert!(matches!(outcome, RefreshOutcome::Rotated(_)), "{which}: its own client still refreshes");
        }
        "revoke_access_vs_grant" => {
            let store = backend.store(quotas(100)).store();
            let (grant, t) = redeemed(&store, ns, "alice", now, 600, 3000).await;
            let refresh = t.refresh.as_deref().unwrap();
            assert!(!store.revoke_access(refresh).await.unwrap(), "{which}: a refresh token is no access token");
            assert!(store.revoke_access(&t.access).await.unwrap(), "{which}");
            assert!(!store.revoke_access(&t.access).await.unwrap(), "{which}: once");
            assert_eq!(store.access_token(&t.access, now).await.unwrap(), None, "{which}");
            assert!(store.refresh_token(refresh, now).await.unwrap().is_some(), "{which}: the grant lives on");
            // A forged handle naming the grant revokes nothing.
            assert!(!store.revoke_grant(&handle::handle("forged", &grant)).await.unwrap(), "{which}");
            let next = mint(&grant, now + 1, 3600, Some((now + 601, now + 3000)), &[]);
            assert!(matches!(
                store.refresh(refresh, &alice, &binding(ns), now + 1, 0, &next.issue).await.unwrap(),
                RefreshOutcome::Rotated(_)
            ));
            // Revoking a refresh token (even a rotated one) revokes its grant and its access
            // tokens (RFC 7009 §2.1).
            assert!(store.revoke_grant(refresh).await.unwrap(), "{which}");
            assert_eq!(store.access_token(&next.access, now + 1).await.unwrap(), None, "{which}");
            assert_eq!(store.refresh_token(next.refresh.as_deref().unwrap(), now + 1).await.unwrap(), None);
            assert!(!store.revoke_grant(refresh).await.unwrap(), "{which}: once");
            // A client grant is revoked by its access token.
            let id = new_grant_id().unwrap();
            let m = mint(&id, now, 300, None, &[]);
            store.insert_client_grant(id, client_grant(ns, "svc", now), &m.issue.access).await.unwrap();
            assert!(store.revoke_grant(&m.access).await.unwrap(), "{which}");
            assert_eq!(store.access_token(&m.access, now).await.unwrap(), None, "{which}");
        }
        "replayed_code" => {
            let store = backend.store(quotas(100)).store();
            let (grant, t) = redeemed(&store, ns, "alice", now, 600, 3000).await;
            // The same exchange again (a lost reply): its first answer.
            let again = store.redeem_code(&grant, &code_binding(ns), now, &t.issue).await.unwrap();
            assert!(matches!(again, CodeRedemption::Fresh(_)), "{which}: {again:?}");
            let other = mint(&grant, now + 1, 3600, Some((now + 601, now + 3000)), &[]);
            let replay = store.redeem_code(&grant, &code_binding(ns), now + 1, &other.issue).await.unwrap();
            assert_eq!(replay, CodeRedemption::Replayed { revoked: 2 }, "{which}");
            assert_eq!(store.access_token(&t.access, now + 1).await.unwrap(), None, "{which}");
            let refresh = t.refresh.as_deref().unwrap();
            assert_eq!(store.refresh_token(refresh, now + 1).await.unwrap(), None, "{which}");
            let outcome = store.refresh(refresh, &alice, &binding(ns), now + 1, 0, &other.issue).await.unwrap();
            assert_eq!(outcome, RefreshOutcome::Unknown, "{which}: the refresh token is revoked");
        }
        "expiry" => {
            let store = backend.store(quotas(100)).store();
            // Idle: unused for its TTL, the token is unknown.
            let (grant, t) = redeemed(&store, ns, "alice", now, 100, 150).await;
            let r1 = t.refresh.as_deref().unwrap();
            assert!(store.refresh_token(r1, now + 99).await.unwrap().is_some(), "{which}");
            assert_eq!(store.refresh_token(r1, now + 100).await.unwrap(), None, "{which}: idle expiry");
            let late = mint(&grant, now + 100, 3600, Some((now + 200, now + 150)), &[]);
            let outcome = store.refresh(r1, &alice, &binding(ns), now + 100, 0, &late.issue).await.unwrap();
            assert_eq!(outcome, RefreshOutcome::Unknown, "{which}: idle expiry");
            // Family: rotation never moves the absolute expiry, and what it issues ends there.
            let (grant, t) = redeemed(&store, ns, "bob", now, 100, 150).await;
            let next = mint(&grant, now + 90, 3600, Some((now + 190, now + 999)), &[]);
            let r1 = t.refresh.as_deref().unwrap();
            assert!(matches!(
                store.refresh(r1, &bob, &binding(ns), now + 90, 0, &next.issue).await.unwrap(),
                RefreshOutcome::Rotated(_)
            ));
            let r2 = next.refresh.as_deref().unwrap();
            let view = store.refresh_token(r2, now + 149).await.unwrap().expect("alive before the family ends");
            assert_eq!((view.expires_at, view.family_expires_at), (now + 150, now + 150), "{which}: capped");
            let access = store.access_token(&next.access, now + 90).await.unwrap().unwrap();
            assert_eq!(access.expires_at, now + 150, "{which}: the access token ends with its family");
            let after = mint(&grant, now + 150, 3600, Some((now + 250, now + 999)), &[]);
            let outcome = store.refresh(r2, &bob, &binding(ns), now + 150, 0, &after.issue).await.unwrap();
            assert_eq!(outcome, RefreshOutcome::Unknown, "{which}: family expiry");
        }
        "quota_refusal_leaves_nothing" => {
            // Three records per owner: a code and its two tokens fill the identity's. Each
            // refusal is counted by the store, by record kind and reason.
            let (store, metrics) = backend.counted_store(quotas(3));
            let (grant, t) = redeemed(&store, ns, "alice", now, 600, 3000).await;
            let r1 = t.refresh.as_deref().unwrap();
            let next = mint(&grant, now + 1, 3600, Some((now + 601, now + 3000)), &[]);
            let refused = store.refresh(r1, &alice, &binding(ns), now + 1, 0, &next.issue).await;
            assert_eq!(refused, Err(StoreError::IdentityQuota { records: 3 }), "{which}");
            assert_eq!(refusals(&metrics, "access_token", "identity_quota"), 1, "{which}: counted once");
            assert!(
                store.refresh_token(r1, now + 1).await.unwrap().unwrap().rotated_at.is_none(),
                "{which}: not rotated"
            );
            assert_eq!(store.access_token(&next.access, now + 1).await.unwrap(), None, "{which}");
            assert_eq!(store.refresh_token(next.refresh.as_deref().unwrap(), now + 1).await.unwrap(), None);
            // Nothing of the refused refresh stays charged: one access token revoked makes
            // room for exactly one more.
            assert!(store.revoke_access(&t.access).await.unwrap());
            let access_only = mint(&grant, now + 2, 3600, None, &[]);
            let outcome = store.refresh(r1, &alice, &binding(ns), now + 2, 0, &access_only.issue).await.unwrap();
            assert!(matches!(outcome, RefreshOutcome::Rotated(_)), "{which}: {outcome:?}");
            // A redemption refused at its second token stores neither.
            let code_hash = token_hash(&format!("{ns}-refused-code"));
            let (store2, metrics2) = backend.counted_store(quotas(2));
            store2.insert_code(code_hash, code(ns, "carol", now)).await.unwrap();
            let m = mint(&code_hash, now, 3600, Some((now + 600, now + 3000)), &[]);
            let refused = store2.redeem_code(&code_hash, &code_binding(ns), now, &m.issue).await;
            assert_eq!(refused, Err(StoreError::IdentityQuota { records: 2 }), "{which}");
            assert_eq!(refusals(&metrics2, "refresh_token", "identity_quota"), 1, "{which}");
            assert_eq!(store2.access_token(&m.access, now).await.unwrap(), None, "{which}");
            assert_eq!(store2.refresh_token(m.refresh.as_deref().unwrap(), now).await.unwrap(), None, "{which}");
            store2.insert_code(token_hash(&format!("{ns}-room")), code(ns, "carol", now)).await.expect("room back");
            // A client's own grants count against its quota, alone; a client grant and its
            // one token are one record, so two fit in a quota of two.
            let (store3, metrics3) = backend.counted_store(quotas(2));
            let (first, second, third) = (new_grant_id().unwrap(), new_grant_id().unwrap(), new_grant_id().unwrap());
            let m1 = mint(&first, now, 300, None, &[]);
            store3.insert_client_grant(first, client_grant(ns, "svc", now), &m1.issue.access).await.unwrap();
            let before = new_grant_id().unwrap();
            let m0 = mint(&before, now, 300, None, &[]);
            store3.insert_client_grant(before, client_grant(ns, "svc", now), &m0.issue.access).await.unwrap();
            let m2 = mint(&second, now, 300, None, &[]);
            let refused = store3.insert_client_grant(second, client_grant(ns, "svc", now), &m2.issue.access).await;
            assert_eq!(refused, Err(StoreError::ClientQuota { records: 2 }), "{which}");
            assert_eq!(refusals(&metrics3, "client_grant", "client_quota"), 1, "{which}");
            assert_eq!(store3.access_token(&m2.access, now).await.unwrap(), None, "{which}");
            let other = mint(&third, now, 300, None, &[]);
            store3
                .insert_client_grant(third, client_grant(ns, "other-svc", now), &other.issue.access)
                .await
                .expect("another client is not refused");
            // Revoking a client grant's token revokes the grant: nothing else lived in it.
            assert!(store3.revoke_access(&m1.access).await.unwrap());
            assert!(!store3.revoke_grant(&m1.access).await.unwrap(), "{which}: the grant went with its token");
            let m3 = mint(&second, now, 300, None, &[]);
            store3
                .insert_client_grant(second, client_grant(ns, "svc", now), &m3.issue.access)
                .await
                .expect("the refused grant left no charge behind");
        }
        "rotated_marks_bounded" => {
            // A long chain: its rotated tokens are remembered (reuse revokes the family) up to
            // MAX_ROTATED_KEPT; past it the oldest are forgotten down to ROTATED_PRUNED_TO, the
            // same ones on every store (so a shared store scans the grant only then).
            let store = backend.store(quotas(1000)).store();
            let (grant, t) = redeemed(&store, ns, "alice", now, 600, 3000).await;
            let mut chain = vec![t.refresh.unwrap()];
            let (mut marks, rotations) = (0, 100);
            for i in 1..=rotations {
                let next = mint(&grant, now + i, 3600, Some((now + i + 600, now + 3000)), &[]);
                let outcome =
                    store.refresh(chain.last().unwrap(), &alice, &binding(ns), now + i, 0, &next.issue).await.unwrap();
                assert!(matches!(outcome, RefreshOutcome::Rotated(_)), "{which} at {i}: {outcome:?}");
                chain.push(next.refresh.unwrap());
                marks += 1;
                if marks > MAX_ROTATED_KEPT {
                    marks = ROTATED_PRUNED_TO;
                }
            }
            let at = now + rotations + 1;
            let mut remembered = Vec::new();
            for (i, token) in chain.iter().enumerate().take(rotations as usize) {
                if let Some(view) = store.refresh_token(token, at).await.unwrap() {
                    assert!(view.rotated_at.is_some(), "{which}: token {i}");
                    remembered.push(i);
                }
            }
            let expected: Vec<usize> = (rotations as usize - marks..rotations as usize).collect();
            assert_eq!(remembered, expected, "{which}: the newest rotated tokens, no more than the cap");
            assert!((ROTATED_PRUNED_TO..=MAX_ROTATED_KEPT).contains(&remembered.len()), "{which}");
            // A forgotten token is only unknown; a remembered one revokes the family.
            let late = mint(&grant, at, 3600, Some((at + 600, now + 3000)), &[]);
            let outcome = store.refresh(&chain[0], &alice, &binding(ns), at, 0, &late.issue).await.unwrap();
            assert_eq!(outcome, RefreshOutcome::Unknown, "{which}: forgotten");
            let outcome = store.refresh(&chain[expected[0]], &alice, &binding(ns), at, 0, &late.issue).await.unwrap();
            assert_eq!(outcome, RefreshOutcome::Reused { revoked: true }, "{which}: remembered");
            assert_eq!(store.refresh_token(chain.last().unwrap(), at).await.unwrap(), None, "{which}: family gone");
        }
        "purge" => {
            let under = backend.store(quotas(100));
            let store = under.store();
            // A rotated token past its idle expiry is still recognised, within its family.
            let (grant, t) = redeemed(&store, ns, "alice", now, 100, 3000).await;
            let r1 = t.refresh.as_deref().unwrap();
            let next = mint(&grant, now + 10, 60, Some((now + 110, now + 3000)), &[]);
            assert!(matches!(
                store.refresh(r1, &alice, &binding(ns), now + 10, 0, &next.issue).await.unwrap(),
                RefreshOutcome::Rotated(_)
            ));
            under.purge(now + 105);
            let late = mint(&grant, now + 106, 60, Some((now + 206, now + 3000)), &[]);
            let outcome = store.refresh(r1, &alice, &binding(ns), now + 106, 0, &late.issue).await.unwrap();
            assert_eq!(outcome, RefreshOutcome::Reused { revoked: true }, "{which}: the mark was kept");
            // The grants of a departed client go, with their charges.
            let (_, t) = redeemed(&store, ns, "bob", now, 600, 3000).await;
            let id = new_grant_id().unwrap();
            let m = mint(&id, now, 300, None, &[]);
            store.insert_client_grant(id, client_grant(ns, CLIENT, now), &m.issue.access).await.unwrap();
            let dropped = under.depart_client(ns, CLIENT, now).await;
            assert!(dropped >= 2, "{which}: {dropped}");
            assert_eq!(store.access_token(&t.access, now).await.unwrap(), None, "{which}");
            assert_eq!(store.refresh_token(t.refresh.as_deref().unwrap(), now).await.unwrap(), None, "{which}");
            assert_eq!(store.access_token(&m.access, now).await.unwrap(), None, "{which}");
            if let Under::Memory(m) = &under {
                // Expired grants go with the next purge, and their charges.
                m.purge(now + 4000, &AllBut(String::new()));
                assert_eq!((m.grants(), m.records()), (0, 0), "{which}");
            }
        }
        "assertion_spent_once" => {
            use oidc_operator::sessions::{AssertionSpend, AssertionUse};
            let under = backend.store(quotas(2));
            let store = under.store();
            let spend = |client_id: &'static str, jti: &'static str, expires_at: i64| AssertionUse {
                namespace: ns,
                client: client_id,
                client_id,
                provider: PROVIDER,
                jti,
                expires_at,
            };
            assert_eq!(
                store.spend_assertion(&spend(CLIENT, "a", now + 60), now).await,
                Ok(AssertionSpend::Fresh),
                "{which}"
            );
            assert_eq!(
                store.spend_assertion(&spend(CLIENT, "a", now + 60), now).await,
                Ok(AssertionSpend::Replayed),
                "{which}"
            );
            // A jti is the client's own: another client's same jti is another record.
            assert_eq!(
                store.spend_assertion(&spend("other", "a", now + 60), now).await,
                Ok(AssertionSpend::Fresh),
                "{which}"
            );
            // Under the client's quota (2): the replay above gave its charge back.
            let second = store.spend_assertion(&spend(CLIENT, "b", now + 60), now).await;
            assert_eq!(second, Ok(AssertionSpend::Fresh), "{which}");
            let refused = store.spend_assertion(&spend(CLIENT, "c", now + 60), now).await;
            assert!(matches!(refused, Err(StoreError::ClientQuota { records: 2 })), "{which}: {refused:?}");
            let again = store.spend_assertion(&spend(CLIENT, "c", now + 60), now).await;
            assert!(matches!(again, Err(StoreError::ClientQuota { .. })), "{which}: a refused jti was not kept");
            if let Under::Memory(m) = &under {
                // Purged at its expiry, with its charge: the jti is free again (the assertion
                // itself is refused as expired by then).
                m.purge(now + 61, &AllBut(String::new()));
                assert_eq!(m.records(), 0, "{which}");
                assert_eq!(
                    m.spend_assertion(&spend(CLIENT, "a", now + 120), now + 61),
                    Ok(AssertionSpend::Fresh),
                    "{which}"
                );
            }
        }
        other => panic!("no row {other}"),
    }
}

const ROWS: [&str; 14] = [
    "assertion_spent_once",
    "issue_and_lookup",
    "rotate",
    "reuse_within_interval",
    "reuse_after_interval",
    "reuse_after_idle_expiry",
    "concurrent_refresh",
    "wrong_binding",
    "revoke_access_vs_grant",
    "replayed_code",
    "expiry",
    "quota_refusal_leaves_nothing",
    "rotated_marks_bounded",
    "purge",
];

async fn the_table(backend: Backend) {
    let now = oidc_operator::clock::unix_now();
    for row in ROWS {
        run_row(&backend, row, now).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn grants_on_the_memory_store() {
    the_table(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grants_on_redis() {
    let redis = tokio::task::spawn_blocking(RedisServer::start).await.unwrap();
    the_table(Backend::Redis(redis.url())).await;
    // Every grant is one key: a family's tokens never make keys of their own.
    let keys = redis.keys("*:grant");
    // Spent assertions are one key each.
    assert!(
        !keys.is_empty()
            && redis.keys("*").iter().all(|k| k.ends_with(":grant") || k.ends_with(":jti") || k.contains("{t:"))
    );
}

/// In Redis the code record stays in its grant as long as the grant's tokens do, so its
/// quota charge must last as long (the memory store charges a grant for its whole life): a
/// tenant cannot hold large code records in long refresh families uncounted.
#[tokio::test(flavor = "multi_thread")]
async fn a_redeemed_codes_charge_lasts_as_long_as_its_tokens() {
    let redis = tokio::task::spawn_blocking(RedisServer::start).await.unwrap();
    let store = Backend::Redis(redis.url()).store(quotas(100)).store();
    let now = oidc_operator::clock::unix_now();
    let (grant, _) = redeemed(&store, "charges", "alice", now, 1800, 3000).await;
    let port: u16 = redis.url().rsplit(':').next().unwrap().trim_matches('/').parse().unwrap();
    let index = redis.keys("*{t:charges}:n").pop().expect("the namespace's index");
    let listed = common::redis::cli(port, &["ZRANGE", &index, "0", "-1", "WITHSCORES"]);
    let lines: Vec<&str> = listed.lines().collect();
    let grant_key = redis.keys("*:grant").into_iter().find(|k| k.contains(&hex(&grant))).unwrap();
    let at = lines.iter().position(|m| m.ends_with(&format!("|{grant_key}"))).expect("the grant record is charged");
    let until: f64 = lines[at + 1].parse().unwrap();
    assert!(
        until >= ((now + 1800) * 1000) as f64,
        "charged until {until}, its refresh token lives until {}",
        (now + 1800) * 1000
    );
}

/// A family refreshed often keeps few fields in its Redis hash: its expired access tokens
/// are dropped when the hash has doubled since it was last read, so a refresh never reads
/// all of a long family (and the hash never grows with its history).
#[tokio::test(flavor = "multi_thread")]
async fn a_long_familys_grant_stays_small_in_redis() {
    let redis = tokio::task::spawn_blocking(RedisServer::start).await.unwrap();
    let store = Backend::Redis(redis.url()).store(quotas(10_000)).store();
    let now = oidc_operator::clock::unix_now();
    let ns = "long-family";
    let (grant, t) = redeemed(&store, ns, "alice", now, 600, 3000).await;
    let alice = GrantSubject::Code(Box::new(code(ns, "alice", now)));
    let port: u16 = redis.url().rsplit(':').next().unwrap().trim_matches('/').parse().unwrap();
    let grant_key = redis.keys("*:grant").into_iter().find(|k| k.contains(&hex(&grant))).unwrap();
    let mut current = t.refresh.unwrap();
    let mut most = 0;
    for i in 1..=200 {
        // Each access token lives 5 s; a refresh comes every 10 s.
        let at = now + 10 * i;
        let next = mint(&grant, at, 5, Some((at + 600, now + 3000)), &[]);
        let outcome = store.refresh(&current, &alice, &binding(ns), at, 0, &next.issue).await.unwrap();
        assert!(matches!(outcome, RefreshOutcome::Rotated(_)), "at {i}: {outcome:?}");
        current = next.refresh.unwrap();
        let fields: usize = common::redis::cli(port, &["hlen", &grant_key]).trim().parse().unwrap();
        most = most.max(fields);
    }
    // 200 access tokens and 200 refresh tokens were issued; at most 64 rotated ones are
    // remembered, and the hash is read again once it doubles.
    assert!(most < 200, "the grant grew to {most} fields");
    let view = store.refresh_token(&current, now + 2000).await.unwrap().expect("the current token reads");
    assert!(view.rotated_at.is_none());
}

/// Concurrent requests share pipelines on a single node (`batch.rs`, whose unit test shows
/// the sharing), and each keeps its own answer: with the scripts flushed, every command
/// meets its own NOSCRIPT and is sent again by body; at a client's quota exactly one of its
/// concurrent grants is stored, whichever batches they travel in.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_keep_their_own_answers_in_shared_pipelines() {
    let redis = tokio::task::spawn_blocking(RedisServer::start).await.unwrap();
    // A client's quota holds one client grant (the grant and its access token, one record).
    let store = Backend::Redis(redis.url()).store(quotas(1)).store();
    let now = oidc_operator::clock::unix_now();
    let port: u16 = redis.url().rsplit(':').next().unwrap().trim_matches('/').parse().unwrap();
    common::redis::cli(port, &["script", "flush"]);
    let attempts = (0..16).flat_map(|c| (0..4).map(move |a| (c, a)));
    let results = futures::future::join_all(attempts.map(|(c, _)| {
        let store = store.clone();
        async move {
            let id = new_grant_id().unwrap();
            let m = mint(&id, now, 300, None, &[]);
            let grant = client_grant("pipelined", &format!("svc-{c}"), now);
            (c, store.insert_client_grant(id, grant, &m.issue.access).await)
        }
    }))
    .await;
    for c in 0..16 {
        let mine: Vec<_> = results.iter().filter(|(owner, _)| *owner == c).map(|(_, r)| *r).collect();
        let stored = mine.iter().filter(|r| r.is_ok()).count();
        assert_eq!(stored, 1, "client {c}: {mine:?}");
        assert!(mine.iter().all(|r| r.is_ok() || *r == Err(StoreError::ClientQuota { records: 1 })), "{mine:?}");
    }
    let stored = common::redis::cli(port, &["eval", "return #redis.call('KEYS', '*:grant')", "0"]);
    assert_eq!(stored.trim(), "16", "one grant per client");
}

/// A client's departure takes its users' grants whole, with every token's charge: its index
/// lists each grant once (its tokens are listed only where a quota reads them, the
/// namespace's and the identity's indexes), so the grant's fields name what to give back.
#[tokio::test(flavor = "multi_thread")]
async fn a_departed_client_takes_its_grants_and_their_tokens_charges() {
    let redis = tokio::task::spawn_blocking(RedisServer::start).await.unwrap();
    let under = Backend::Redis(redis.url()).store(quotas(100));
    let store = under.store();
    let now = oidc_operator::clock::unix_now();
    let ns = "departures";
    let (grant, t) = redeemed(&store, ns, "alice", now, 600, 3000).await;
    let alice = GrantSubject::Code(Box::new(code(ns, "alice", now)));
    let next = mint(&grant, now + 1, 3600, Some((now + 601, now + 3000)), &[]);
    let outcome = store.refresh(t.refresh.as_deref().unwrap(), &alice, &binding(ns), now + 1, 0, &next.issue).await;
    assert!(matches!(outcome, Ok(RefreshOutcome::Rotated(_))), "{outcome:?}");
    let port: u16 = redis.url().rsplit(':').next().unwrap().trim_matches('/').parse().unwrap();
    let grant_key = redis.keys("*:grant").into_iter().find(|k| k.contains(&hex(&grant))).unwrap();
    let members = |index: &str| {
        let listed = common::redis::cli(port, &["zrange", index, "0", "-1"]);
        listed.lines().filter(|m| m.contains(&grant_key)).count()
    };
    let (namespace, identity) =
        (format!("oidcop:{{t:{ns}}}:n"), redis.keys(&format!("*{{t:{ns}}}:i:*")).pop().unwrap());
    assert_eq!(members(&namespace), 5, "the grant, two access and two refresh tokens are charged");
    assert!(under.depart_client(ns, CLIENT, now).await >= 1);
    assert_eq!(store.access_token(&next.access, now + 1).await.unwrap(), None);
    assert_eq!((members(&namespace), members(&identity)), (0, 0), "charges left behind by the departed client");
    let bytes = common::redis::cli(port, &["get", &format!("oidcop:{{t:{ns}}}:b")]);
    assert_eq!(bytes.trim().parse::<i64>().unwrap_or(0), 0, "bytes left charged");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn grants_on_a_redis_cluster() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await.unwrap();
    the_table(Backend::Redis(cluster.url())).await;
}

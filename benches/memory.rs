//! Session store memory: 1,000,000 real machine logins with a one-second access token TTL,
//! then the background purge's work, measured in one run on one machine.
//!
//!     cargo bench --bench memory
//!
//! Prints the resident set size (RSS) before the logins, after them (and the bytes one live
//! record costs), and after the purge. The target: RSS returns within 10 % of its baseline,
//! so token state follows live use and never grows without bound. Then the bytes one refresh
//! family costs (a code exchange and three refreshes: the grant, four access tokens, the
//! current refresh token and three rotated ones kept for reuse detection).
//!
//! `OIDC_BENCH_SMOKE=1` (or `-- --smoke`) runs 2,000 logins and checks the record counts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Instant;

use oidc_operator::api::{IdentityOidcAuth, IdentityOidcAuthSpec};
use oidc_operator::directory::{self, ExternalUrl, Inputs, Materials, SharedDirectory};
use oidc_operator::keys::{KeyVersion, SigningAlgorithm};
use oidc_operator::login::{self, LoginContext, external::IssuerRegistry};
use oidc_operator::metrics::Metrics;
use oidc_operator::server::{AppState, purge};
use oidc_operator::sessions::{SessionStore, TokenStore};
use warp::Filter;

mod support;

use support::now;

/// Logins measured (a smoke run's is [`SMOKE_LOGINS`]).
const LOGINS: usize = 1_000_000;
const SMOKE_LOGINS: usize = 2_000;
const WORKERS: usize = 2;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Short-lived allocations of request-like sizes on every worker for `period`.
async fn keep_allocating(period: std::time::Duration) {
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        workers.push(tokio::spawn(async move {
            let start = Instant::now();
            let mut n = w;
            while start.elapsed() < period {
                for _ in 0..1000 {
                    n = n.wrapping_mul(31).wrapping_add(7);
                    std::hint::black_box(vec![0u8; 32 + n % 2048]);
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
}

/// `n` logins spread over the runtime's workers.
async fn run_logins(state: &AppState, jwt: &Arc<String>, peer: std::net::IpAddr, n: usize) {
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (state, jwt) = (state.clone(), Arc::clone(jwt));
        workers.push(tokio::spawn(async move {
            let dir = state.directory.load().unwrap();
            let ctx = LoginContext { dir: &dir, issuers: &state.issuers, tokens: &state.tokens, refetch_interval: 10 };
            for _ in 0..n / WORKERS {
                login::login(&ctx, "bench-identity", &jwt, peer, now()).await.unwrap();
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
    println!("# cargo bench --bench memory   ({} cores)", support::cores());

    // An external issuer on loopback with one RS256 key.
    let key = KeyVersion::generate(SigningAlgorithm::RS256, now()).unwrap().parse().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let discovery = serde_json::json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
    let jwks = serde_json::json!({"keys": [key.jwk()]});
    let routes = warp::path!(".well-known" / "openid-configuration")
        .map(move || warp::reply::json(&discovery))
        .or(warp::path!("jwks").map(move || warp::reply::json(&jwks)));
    tokio::spawn(warp::serve(routes).incoming(listener).run());

    // One identity whose tokens live one second; alias metadata as a real login carries.
    let spec: IdentityOidcAuthSpec = serde_json::from_value(serde_json::json!({
        "identityId": "bench-identity", "oidcDiscoveryUrl": issuer, "boundIssuer": issuer,
        "boundAudiences": "bench", "boundSubject": "system:serviceaccount:bench:*",
        "accessTokenTTL": 1, "accessTokenMaxTTL": 1,
        "claimMappings": {"namespace": "kubernetes.io.namespace"},
    }))
    .unwrap();
    let mut object = IdentityOidcAuth::new("bench", spec);
    object.metadata.namespace = Some("default".into());
    let inputs = Inputs { identities: vec![Arc::new(object)], ..Inputs::default() };
    let logins = support::scaled(LOGINS, SMOKE_LOGINS);
    let settle = std::time::Duration::from_millis(support::scaled(1000, 100));
    let shared = Arc::new(SharedDirectory::default());
    shared.store(directory::build(&inputs, &Materials::default(), &ExternalUrl::new("https://x"), now(), None));
    let state = AppState {
        directory: shared,
        metrics: Arc::new(Metrics::default()),
        issuers: Arc::new(IssuerRegistry::new(true)),
        tokens: SessionStore::memory(2 * logins),
        trusted_proxies: Arc::new(Vec::new()),
        refetch_interval: 10,
        code_ttl: 300,
        max_assertion_lifetime: 3600,
    };
    let claims = serde_json::json!({
        "iss": issuer, "aud": "bench", "sub": "system:serviceaccount:bench:runner",
        "kubernetes.io": {"namespace": "bench"}, "iat": now(), "exp": now() + 3600,
    });
    let jwt = Arc::new(key.sign_jwt(&claims).unwrap());
    let peer: std::net::IpAddr = [127, 0, 0, 1].into();

    // Warm up as a server that has served and forgotten a few logins (the first one fetches
    // the issuer; the allocator's per-thread caches fill), then the baseline.
    run_logins(&state, &jwt, peer, support::scaled(10_000, 100)).await;
    let s = state.clone();
    tokio::task::spawn_blocking(move || purge::purge_once(&s, now() + 5)).await.unwrap();
    keep_allocating(settle).await;
    let baseline = rss_bytes();

    let started = Instant::now();
    run_logins(&state, &jwt, peer, logins).await;
    let took = started.elapsed().as_secs_f64();
    let records = state.tokens.as_memory().unwrap().records();
    assert_eq!(records, logins / WORKERS * WORKERS, "every login holds one record until the purge");
    let loaded = rss_bytes();
    let per_record = loaded.saturating_sub(baseline) as f64 / records as f64;
    let charged = state.tokens.as_memory().unwrap().usage().bytes as f64 / records as f64;

    // Every token has expired (TTL 1 s): one purge, off the workers as the background task
    // runs it.
    let purge_started = Instant::now();
    let s = state.clone();
    let purged = tokio::task::spawn_blocking(move || purge::purge_once(&s, now() + 2)).await.unwrap();
    let purge_ms = purge_started.elapsed().as_secs_f64() * 1000.0;
    // A live server keeps serving, and mimalloc returns freed pages to the system during its
    // next allocations (frees from another thread go back to their owner lazily, and purges
    // run after a short delay). So the workers keep allocating for a second, as request
    // handling does, holding nothing, before RSS is read.
    keep_allocating(settle).await;
    let after = rss_bytes();

    println!("logins: {records} in {took:.1} s ({:.0}/s on {WORKERS} workers)", records as f64 / took);
    println!("RSS baseline:      {:>8.1} MiB", mib(baseline));
    println!(
        "RSS after logins:  {:>8.1} MiB   ({per_record:.0} bytes per live record; the byte ceiling counts {charged:.0})",
        mib(loaded)
    );
    println!("purge:             {purged} records in {purge_ms:.0} ms");
    println!(
        "RSS after purge:   {:>8.1} MiB   ({:+.1} % of baseline; target within 10 %)",
        mib(after),
        (after as f64 / baseline as f64 - 1.0) * 100.0
    );
    assert_eq!(state.tokens.as_memory().unwrap().records(), 0, "the purge drops every expired record");

    at_the_byte_ceiling(&state, &jwt, peer, baseline).await;
    refresh_families().await;
}

/// Refresh families measured (a smoke run's is the second figure).
const FAMILIES: usize = 200_000;
const SMOKE_FAMILIES: usize = 1_000;
/// Refreshes per family after its code exchange.
const REFRESHES: usize = 3;

/// Fills a memory store with refresh families as a code exchange and [`REFRESHES`]
/// refreshes leave them, and prints the RSS each costs beside what the byte ceiling charges
/// for it; then their family expiry passes and one purge must drop them all.
async fn refresh_families() {
    use oidc_operator::api::ObjectKey;
    use oidc_operator::sessions::{
        AccessIssue, Alias, CodeBinding, CodeRecord, CodeRedemption, GrantBinding, Issue, MemoryStore, RefreshIssue,
        RefreshOutcome, new_handle, token_hash,
    };
    struct AllAlive;
    impl oidc_operator::sessions::Liveness for AllAlive {
        fn token_limits(
            &self,
            _: &oidc_operator::sessions::IdentityTokenRecord,
        ) -> Option<oidc_operator::sessions::TokenLimits> {
            None
        }
        fn grant_alive(&self, _: &oidc_operator::sessions::GrantSubject) -> bool {
            true
        }
    }
    let families = support::scaled(FAMILIES, SMOKE_FAMILIES);
    let store = MemoryStore::with_limit(usize::MAX / 2);
    let t0 = now();
    let issue = |grant: &[u8; 32], at: i64| {
        let (access, refresh) = (new_handle(grant).unwrap(), new_handle(grant).unwrap());
        let issue = Issue {
            access: AccessIssue {
                hash: token_hash(&access),
                expires_at: at + 3600,
                scopes: vec![],
                jwt: false,
                issued_at: at,
            },
            refresh: Some(RefreshIssue {
                hash: token_hash(&refresh),
                expires_at: at + 86_400,
                family_expires_at: t0 + 2_592_000,
            }),
        };
        (issue, refresh)
    };
    let pkce = [String::new()];
    let binding = CodeBinding {
        namespace: "default",
        provider: "p",
        client_id: "bench-client",
        redirect_uri: "https://app.example/callback",
        pkce: &pkce,
    };
    let grant_binding = GrantBinding { namespace: "default", provider: "p", client_id: "bench-client" };
    keep_allocating(std::time::Duration::from_millis(support::scaled(1000, 100))).await;
    let baseline = rss_bytes();
    for i in 0..families {
        let code = format!("code-{i}");
        let grant = token_hash(&code);
        let record = CodeRecord {
            namespace: "default".into(),
            provider: "p".into(),
            client_id: "bench-client".into(),
            redirect_uri: "https://app.example/callback".into(),
            nonce: Some("n-0123456789".into()),
            scopes: vec!["openid".into(), "profile".into()],
            challenge: None,
            identity: ObjectKey::new("default", "bench"),
            identity_id: "bench-identity".into(),
            identity_uid: "9f1c2a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b".into(),
            alias: Alias {
                name: "system:serviceaccount:bench:runner".into(),
                metadata: Box::new([("namespace".into(), "bench".into())]),
            },
            auth_time: t0,
            max_age_sent: false,
            expires_at: t0 + 60,
        };
        store.insert_code(grant, record).unwrap();
        let (first, mut refresh) = issue(&grant, t0);
        assert!(matches!(store.redeem_code(&grant, &binding, t0, &first), Ok(CodeRedemption::Fresh(_))));
        for r in 0..REFRESHES {
            let at = t0 + 1 + r as i64;
            let (next, token) = issue(&grant, at);
            let outcome = store.refresh(&refresh, &grant_binding, at, 0, &next).unwrap();
            assert!(matches!(outcome, RefreshOutcome::Rotated(_)));
            refresh = token;
        }
    }
    let loaded = rss_bytes();
    let records = store.records();
    assert_eq!(records, families * (2 + 2 * REFRESHES + 1), "grant, access and refresh tokens of each family");
    let per_family = loaded.saturating_sub(baseline) as f64 / families as f64;
    let charged = store.usage().bytes as f64 / families as f64;
    println!(
        "refresh families:  {families} (exchange + {REFRESHES} refreshes), RSS {:+.1} MiB: {per_family:.0} bytes per \
         family; the byte ceiling counts {charged:.0}",
        mib(loaded.saturating_sub(baseline))
    );
    let purged = store.purge(t0 + 2_592_000, &AllAlive);
    assert_eq!((purged, store.records(), store.grants()), (records, 0, 0), "families end at their absolute expiry");
}

/// Fills a store whose byte ceiling (`--max-session-bytes`) is the only limit until it
/// refuses, and prints the process's RSS then, above the first phase's baseline, beside the
/// ceiling: what a pod at its ceiling needs under its memory limit. (The allocator reuses
/// the pages the first phase's purge freed, so RSS grows less than the records take.)
async fn at_the_byte_ceiling(state: &AppState, jwt: &Arc<String>, peer: std::net::IpAddr, first_baseline: u64) {
    use oidc_operator::sessions::{Quotas, StoreError};
    let ceiling = support::scaled(256usize << 20, 1 << 20);
    let quotas = Quotas::new(usize::MAX / 2, ceiling, 100, usize::MAX / 2);
    let state = AppState { tokens: SessionStore::memory_with(quotas), ..state.clone() };
    let dir = state.directory.load().unwrap();
    let ctx = LoginContext { dir: &dir, issuers: &state.issuers, tokens: &state.tokens, refetch_interval: 10 };
    let refused = loop {
        match login::login(&ctx, "bench-identity", jwt, peer, now()).await {
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    let store = state.tokens.as_memory().unwrap();
    let (records, charged) = (store.records(), store.usage().bytes);
    let held = rss_bytes().saturating_sub(first_baseline);
    assert_eq!(refused, login::LoginError::TemporarilyUnavailable(StoreError::FullBytes { limit: ceiling }.reason()));
    assert!(records > 0 && charged <= ceiling, "{records} records, {charged} bytes charged");
    println!(
        "at a byte ceiling of {:.0} MiB: {records} records, RSS {:+.1} MiB over the baseline ({:.2}x the ceiling)",
        mib(ceiling as u64),
        mib(held),
        held as f64 / ceiling as f64
    );
}

//! The grants of issue 22 (client_credentials, JWT access tokens, introspection, rotating
//! refresh tokens) against discovery and raw signing, measured in one run on one machine.
//!
//!     cargo bench --bench grants
//!
//! One server (memory store) serves, over loopback: discovery (`GET .well-known/openid-
//! configuration`, the cheapest request with a provider in it), client_credentials for an
//! opaque client and for JWT-access-token clients with RS256, ES256 and EdDSA keys,
//! introspection of an opaque client_credentials token by a resource server's client, and
//! refresh (16 chains, one per connection, each request rotating its chain's token and
//! returning a new ES256 ID token). Each row stands beside the single-core signing rate of
//! the client's key (an RFC 9068 access token's claims, `sign_typed`), and the ratios with
//! their targets: opaque client_credentials and introspection >= 0.5x discovery, JWT with
//! ES256/EdDSA >= 0.4x discovery, RS256 client_credentials >= 1.6x raw single-core RS256
//! signing (the server has every core).
//!
//! Then the same directory on a second server whose store is a redis-server started here
//! (unshared: one namespace and client make every request, so no tenant share applies), with
//! this process (server and load) on core 0 and Redis on core 1 (`taskset`), as deployed:
//! client_credentials and refresh, Redis / memory, target >= 0.7x.
//!
//! This VM's throughput drifts from one second to the next (other builds share it), so every
//! phase runs `ROUNDS` times in alternation and each figure is the median of the rounds (each
//! ratio the median of the rounds' ratios: a drift then hits both sides of a ratio alike).
//! Targets are printed, not asserted: a figure under its target reads "below target".
//!
//! `OIDC_BENCH_SMOKE=1` (or `-- --smoke`) runs one short round of each phase, Redis sharing
//! the cores, and checks the answers: each JWT access token verifies against the provider's
//! JWKS with `typ: at+jwt` and names its client; introspection of the opaque token says
//! active; every refresh returns a new refresh token (checked on every refresh, in either
//! mode).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use oidc_operator::api::{IdentityOidcAuth, OidcClient, OidcKey, OidcKeySpec, OidcProvider};
use oidc_operator::directory::{self, Directory, ExternalUrl, Inputs, Materials, ObjectKey, SharedDirectory};
use oidc_operator::keys::{JwkSet, JwtType, SigningAlgorithm, SigningKey, VerifyingKey};
use oidc_operator::login::external::IssuerRegistry;
use oidc_operator::metrics::Metrics;
use oidc_operator::server::{self, AppState};
use oidc_operator::sessions::redis::{RedisOptions, RedisStore};
use oidc_operator::sessions::{Quotas, SessionStore, token_hash};
use support::now;

const REDIRECT: &str = "https://app.example/callback";
const ENTITY: &str = "bench-entity";
/// Alternating rounds of the served phases, and of the two stores.
const ROUNDS: usize = 3;
const STORE_ROUNDS: usize = 5;
/// Seconds of each load phase, and of each raw signing measurement.
const PHASE: f64 = 2.0;
const RAW: f64 = 0.5;
/// What a smoke run does instead: rounds, phase and raw seconds.
const SMOKE: (usize, f64, f64) = (1, support::SMOKE_SECONDS, 0.05);
const ALGS: [SigningAlgorithm; 3] = [SigningAlgorithm::RS256, SigningAlgorithm::ES256, SigningAlgorithm::EdDSA];

/// The clients: name and OidcClient spec.
fn clients() -> Vec<(String, serde_json::Value)> {
    let mut out = vec![
        // client_credentials with opaque tokens (the default format).
        ("cc-opaque".to_owned(), serde_json::json!({"key": "key-es256", "grantTypes": ["client_credentials"]})),
        // A resource server: it introspects the tokens it is shown.
        ("api".to_owned(), serde_json::json!({"key": "key-es256", "grantTypes": ["client_credentials"]})),
        // A relying party whose code exchanges start refresh families.
        (
            "rp".to_owned(),
            serde_json::json!({
                "key": "key-es256", "redirectUris": [REDIRECT], "assignments": ["allow_all"],
                "grantTypes": ["authorization_code", "refresh_token"],
            }),
        ),
    ];
    for alg in ALGS {
        let n = alg.as_str().to_lowercase();
        out.push((
            format!("cc-{n}"),
            serde_json::json!({
                "key": format!("key-{n}"), "grantTypes": ["client_credentials"], "accessTokenFormat": "jwt",
            }),
        ));
    }
    out
}

fn inputs() -> Inputs {
    let mut inputs = Inputs::default();
    for alg in ALGS {
        let n = alg.as_str().to_lowercase();
        let key = OidcKeySpec { algorithm: alg, allowed_clients: vec!["*".into()], ..OidcKeySpec::builtin_default() };
        inputs.keys.push(support::in_ns(OidcKey::new(&format!("key-{n}"), key)));
    }
    for (name, spec) in clients() {
        inputs.clients.push(support::in_ns(OidcClient::new(&name, serde_json::from_value(spec).unwrap())));
    }
    let provider = serde_json::from_value(serde_json::json!({"allowedClients": ["*"]})).unwrap();
    inputs.providers.push(support::in_ns(OidcProvider::new("p", provider)));
    let identity = serde_json::from_value(serde_json::json!({
        "identityId": ENTITY, "oidcDiscoveryUrl": "https://issuer.invalid", "boundIssuer": "https://issuer.invalid",
        "boundAudiences": "bench",
    }))
    .unwrap();
    inputs.identities.push(support::in_ns(IdentityOidcAuth::new("bench", identity)));
    inputs
}

/// A client's credentials, as its Basic header.
struct Client {
    id: String,
    basic: String,
}

/// One server: where it listens, its provider's paths, its store and snapshot.
struct Served {
    name: &'static str,
    addr: SocketAddr,
    /// The issuer's path (`/v1/default/identity/oidc/provider/p`).
    base: String,
    issuer: String,
    store: SessionStore,
    dir: Arc<Directory>,
}

impl Served {
    async fn start(name: &'static str, inputs: &Inputs, materials: &Materials, store: SessionStore) -> Self {
        let state = AppState {
            directory: Arc::new(SharedDirectory::default()),
            metrics: Arc::new(Metrics::default()),
            issuers: Arc::new(IssuerRegistry::new(false)),
            tokens: store.clone(),
            trusted_proxies: Arc::new(Vec::new()),
            refetch_interval: 10,
            code_ttl: 300,
            max_assertion_lifetime: 3600,
        };
        let shared = Arc::clone(&state.directory);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(server::serve(listener, None, server::api_routes(state)));
        let dir = directory::build(inputs, materials, &ExternalUrl::new(&format!("http://{addr}")), now(), None);
        let issuer = dir.provider("default", "p").unwrap().issuer.clone();
        support::served_identity(&dir, ENTITY);
        shared.store(dir);
        let dir = shared.load().unwrap();
        let base = issuer.trim_start_matches(&format!("http://{addr}")).to_owned();
        Self { name, addr, base, issuer, store, dir }
    }

    fn path(&self, endpoint: &str) -> String {
        format!("{}/{endpoint}", self.base)
    }

    /// The first refresh token of `n` new families of `rp`: a code put in the store as
    /// authorize would, then exchanged.
    async fn chains(&self, rp: &Client, n: usize, tag: &str) -> Vec<String> {
        let entity = support::served_identity(&self.dir, ENTITY);
        let mut connection = support::connection(self.addr).await;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let code = format!("bench-code-{tag}-{i}");
            self.store.insert_code(token_hash(&code), support::code_record(&rp.id, &entity, now())).await.unwrap();
            let body =
                format!("grant_type=authorization_code&code={code}&redirect_uri=https%3A%2F%2Fapp.example%2Fcallback");
            let (status, answer) =
                support::send(&mut connection, support::form(&self.path("token"), &rp.basic, body)).await;
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
            out.push(refresh_token_of(&answer));
        }
        out
    }

    /// Requests per second of `phase` for `seconds`.
    async fn load(&self, phase: Phase, clients: &HashMap<String, Client>, seconds: f64, tag: &str) -> f64 {
        match phase {
            Phase::Discovery => {
                let path = self.path(oidc_operator::paths::DISCOVERY);
                support::load_for(self.addr, seconds, move || support::get(&path)).await
            }
            Phase::ClientCredentials(client) => {
                let (path, basic) = (self.path("token"), clients[client].basic.clone());
                support::load_for(self.addr, seconds, move || {
                    support::form(&path, &basic, "grant_type=client_credentials".into())
                })
                .await
            }
            Phase::Introspection => {
                let token = self.client_credentials(&clients["cc-opaque"]).await;
                let (path, basic) = (self.path("introspect"), clients["api"].basic.clone());
                let body = format!("token={token}&token_type_hint=access_token");
                support::load_for(self.addr, seconds, move || support::form(&path, &basic, body.clone())).await
            }
            Phase::Refresh => {
                let rp = &clients["rp"];
                let chains = self.chains(rp, support::CONCURRENCY, tag).await;
                let (path, basic) = (self.path("token"), rp.basic.clone());
                let next = move |token: &String| {
                    support::form(&path, &basic, format!("grant_type=refresh_token&refresh_token={token}"))
                };
                let advance = |old: String, answer: &Bytes| {
                    let new = refresh_token_of(answer);
                    assert_ne!(new, old, "a refresh rotates its token");
                    new
                };
                support::load_chains(self.addr, seconds, chains, next, advance).await
            }
        }
    }

    /// One client_credentials access token of `client`.
    async fn client_credentials(&self, client: &Client) -> String {
        let mut connection = support::connection(self.addr).await;
        let request = support::form(&self.path("token"), &client.basic, "grant_type=client_credentials".into());
        let (status, answer) = support::send(&mut connection, request).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert!(answer.get("refresh_token").is_none() && answer.get("id_token").is_none(), "{answer}");
        answer["access_token"].as_str().unwrap().to_owned()
    }

    /// The answers the phases rely on, checked: each JWT access token verifies against the
    /// JWKS with `typ: at+jwt` and names its client; the opaque token introspects active.
    async fn check(&self, clients: &HashMap<String, Client>) {
        let mut connection = support::connection(self.addr).await;
        let (status, jwks) = support::send(&mut connection, support::get(&self.path(oidc_operator::paths::JWKS))).await;
        assert_eq!(status, 200);
        let jwks: JwkSet = serde_json::from_slice(&jwks).unwrap();
        for alg in ALGS {
            let client = &clients[&format!("cc-{}", alg.as_str().to_lowercase())];
            let token = self.client_credentials(client).await;
            let header: serde_json::Value = {
                use base64::Engine;
                let h = token.split('.').next().unwrap();
                serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
            };
            let jwk =
                jwks.keys.iter().find(|k| header["kid"] == k.kid.as_str()).expect("the token's kid is in the JWKS");
            let (header, claims) = VerifyingKey::from_jwk(jwk).unwrap().verify(&token).unwrap();
            assert_eq!(header["typ"], "at+jwt", "{header}");
            assert_eq!(header["alg"], alg.as_str(), "{header}");
            assert_eq!(claims["iss"], self.issuer, "{claims}");
            assert_eq!(claims["sub"], client.id, "{claims}");
            assert_eq!(claims["client_id"], client.id, "{claims}");
            assert!(claims["exp"].as_i64().unwrap() > now(), "{claims}");
        }
        let token = self.client_credentials(&clients["cc-opaque"]).await;
        let request = support::form(&self.path("introspect"), &clients["api"].basic, format!("token={token}"));
        let (status, answer) = support::send(&mut connection, request).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["active"], true, "{answer}");
        assert_eq!(answer["client_id"], clients["cc-opaque"].id, "{answer}");
        assert_eq!(answer["sub"], clients["cc-opaque"].id, "{answer}");
    }
}

fn refresh_token_of(answer: &Bytes) -> String {
    let answer: serde_json::Value = serde_json::from_slice(answer).unwrap();
    answer["refresh_token"].as_str().unwrap_or_else(|| panic!("no refresh_token in {answer}")).to_owned()
}

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Discovery,
    /// client_credentials of the named client.
    ClientCredentials(&'static str),
    Introspection,
    Refresh,
}

/// The main table's rows: label, phase, the key whose raw rate stands beside it.
const ROWS: [(&str, Phase, Option<SigningAlgorithm>); 7] = [
    ("discovery", Phase::Discovery, None),
    ("client_credentials opaque", Phase::ClientCredentials("cc-opaque"), None),
    ("client_credentials jwt", Phase::ClientCredentials("cc-rs256"), Some(SigningAlgorithm::RS256)),
    ("client_credentials jwt", Phase::ClientCredentials("cc-es256"), Some(SigningAlgorithm::ES256)),
    ("client_credentials jwt", Phase::ClientCredentials("cc-eddsa"), Some(SigningAlgorithm::EdDSA)),
    ("introspection (opaque cc)", Phase::Introspection, None),
    ("refresh (rotating, +ID token)", Phase::Refresh, Some(SigningAlgorithm::ES256)),
];

/// What a row is compared with, and its target.
fn target(row: usize) -> Option<(&'static str, f64)> {
    match row {
        1 | 5 => Some(("discovery", 0.5)),
        2 => Some(("raw", 1.6)),
        3 | 4 => Some(("discovery", 0.4)),
        _ => None,
    }
}

/// Single-core rate of signing an RFC 9068 access token's claims with `key`, and the CPU
/// one signature took in microseconds (the scheduler's account: the servers are idle then).
fn raw_rate(key: &SigningKey, issuer: &str, seconds: f64) -> (f64, f64) {
    let t = now();
    let claims = serde_json::json!({
        "iss": issuer, "sub": "c".repeat(32), "aud": "c".repeat(32), "client_id": "c".repeat(32),
        "iat": t, "exp": t + 86_400, "jti": format!("{}.{}", "x".repeat(43), "y".repeat(43)), "scope": "",
    });
    let (cpu, started) = (support::cpu_ns(std::process::id()), Instant::now());
    let rate = tokio::task::block_in_place(|| {
        support::single_core_rate(seconds, || {
            key.sign_typed(JwtType::AccessToken, &claims).unwrap();
        })
    });
    let signatures = rate * started.elapsed().as_secs_f64();
    (rate, (support::cpu_ns(std::process::id()) - cpu) as f64 / 1000.0 / signatures)
}

/// One load phase: requests per second, and the CPU a request took in microseconds in this
/// process (server and load generator) and in `other` (redis-server).
#[derive(Clone, Copy, Default)]
struct Metered {
    rate: f64,
    ours_us: f64,
    theirs_us: f64,
}

async fn metered(other: Option<u32>, load: impl std::future::Future<Output = f64>) -> Metered {
    let theirs = || other.map_or(0, support::cpu_ns);
    let (ours0, theirs0, started) = (support::cpu_ns(std::process::id()), theirs(), Instant::now());
    let rate = load.await;
    let requests = rate * started.elapsed().as_secs_f64();
    let us = |before: u64, after: u64| after.saturating_sub(before) as f64 / 1000.0 / requests;
    Metered { rate, ours_us: us(ours0, support::cpu_ns(std::process::id())), theirs_us: us(theirs0, theirs()) }
}

fn verdict(ratio: f64, target: f64) -> &'static str {
    if ratio >= target { "ok" } else { "below target" }
}

#[tokio::main]
async fn main() {
    let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
    let smoke = support::smoke();
    let (rounds, phase, raw_seconds) = if smoke { SMOKE } else { (ROUNDS, PHASE, RAW) };
    let store_rounds = if smoke { 1 } else { STORE_ROUNDS };
    let redis = support::redis::RedisServer::start();

    let inputs = inputs();
    let mut materials = support::key_rings(&inputs, now());
    for c in &inputs.clients {
        let creds = oidc_operator::credentials::reconcile(None, None, true).unwrap().unwrap();
        materials.credentials.insert(ObjectKey::of(&c.metadata), creds);
    }
    let clients: HashMap<String, Client> = clients()
        .into_iter()
        .map(|(name, _)| {
            let creds = &materials.credentials[&ObjectKey::new("default", name.clone())];
            let basic = support::basic(&creds.client_id, creds.client_secret.as_deref().unwrap());
            (name, Client { id: creds.client_id.clone(), basic })
        })
        .collect();

    let memory = Served::start("memory", &inputs, &materials, SessionStore::memory(100_000_000)).await;
    memory.check(&clients).await;
    let signers: HashMap<SigningAlgorithm, Arc<SigningKey>> = ALGS
        .iter()
        .map(|&alg| {
            let client = &memory.dir.namespace("default").unwrap().clients
                [&clients[&format!("cc-{}", alg.as_str().to_lowercase())].id];
            (alg, Arc::clone(&client.key.current))
        })
        .collect();

    // The served phases and the raw signing rates, in alternation.
    let mut served: Vec<Vec<Metered>> = vec![Vec::new(); ROWS.len()];
    let mut raw: HashMap<SigningAlgorithm, Vec<(f64, f64)>> = HashMap::new();
    let started = Instant::now();
    for round in 0..rounds {
        for alg in ALGS {
            raw.entry(alg).or_default().push(raw_rate(&signers[&alg], &memory.issuer, raw_seconds));
        }
        for (i, (_, phase_kind, _)) in ROWS.iter().enumerate() {
            let tag = format!("main-{round}");
            let load = memory.load(*phase_kind, &clients, phase, &tag);
            served[i].push(metered(None, load).await);
        }
    }
    let per_round = |f: &dyn Fn(usize) -> f64| support::median((0..rounds).map(f).collect());

    println!(
        "# cargo bench --bench grants   ({} cores; medians of {rounds} alternating rounds of {phase} s phases; \
         raw signing on one core, served over loopback on the whole machine, memory store)",
        support::cores()
    );
    println!("# CPU: microseconds per signature (raw) and per request (this process: server and load generator)");
    println!(
        "{:<30} {:>6} {:>14} {:>7} {:>10} {:>7}   {:<36} target",
        "phase", "key", "raw signing/s", "CPU us", "served/s", "CPU us", "ratio"
    );
    for (i, (label, _, key)) in ROWS.iter().enumerate() {
        let rate = per_round(&|r| served[i][r].rate);
        let cpu = per_round(&|r| served[i][r].ours_us);
        let (raw_text, raw_cpu) = match key {
            Some(alg) => {
                (format!("{:.0}", per_round(&|r| raw[alg][r].0)), format!("{:.1}", per_round(&|r| raw[alg][r].1)))
            }
            None => ("-".to_owned(), "-".to_owned()),
        };
        let vs_discovery = per_round(&|r| served[i][r].rate / served[0][r].rate);
        let vs_raw = key.map(|alg| per_round(&|r| served[i][r].rate / raw[&alg][r].0));
        let mut ratio = String::new();
        if i > 0 {
            ratio = format!("{vs_discovery:.2}x discovery");
        }
        if let (Some(alg), Some(v)) = (key, vs_raw) {
            ratio = format!("{ratio}, {v:.2}x raw {}", alg.as_str());
        }
        let target_text = match target(i) {
            Some(("raw", t)) => format!(">= {t:.2}x raw: {}", verdict(vs_raw.unwrap_or(0.0), t)),
            Some((_, t)) => format!(">= {t:.2}x discovery: {}", verdict(vs_discovery, t)),
            None => "-".to_owned(),
        };
        let key_text = key.map_or("-", |alg| alg.as_str());
        println!(
            "{label:<30} {key_text:>6} {raw_text:>14} {raw_cpu:>7} {rate:>10.0} {cpu:>7.1}   {ratio:<36} {target_text}"
        );
    }
    // What the wall clock cannot show on a shared VM: the RS256 request's CPU against a raw
    // signature's, so what two idle cores would serve.
    let (req_us, sign_us) = (per_round(&|r| served[2][r].ours_us), per_round(&|r| raw[&SigningAlgorithm::RS256][r].1));
    println!(
        "# RS256 client_credentials by CPU time: {req_us:.0} us per request (server and load) against {sign_us:.0} us \
         per raw signature: {} idle cores would serve {:.2}x raw single-core RS256",
        support::cores(),
        support::cores() as f64 * sign_us / req_us
    );
    println!("# ({:.0} s)", started.elapsed().as_secs_f64());

    // The Redis store against the memory store, Redis on a core of its own.
    let metrics = Arc::new(Metrics::default());
    let unshared = Quotas::new(100_000_000, usize::MAX / 2, 100, usize::MAX);
    let options = RedisOptions { quotas: unshared, ..RedisOptions::new(redis.url()) };
    let redis_store = RedisStore::connect(&options, metrics).unwrap();
    let on_redis = Served::start("redis", &inputs, &materials, SessionStore::Redis(redis_store)).await;
    on_redis.check(&clients).await;
    let cores = support::cores();
    let layout = if smoke {
        "shared (smoke run)".to_owned()
    } else if cores < 2 {
        format!("shared: pinning not possible on {cores} core; Redis shares it")
    } else {
        match support::redis::pin(std::process::id(), "0").and_then(|()| support::redis::pin(redis.pid(), "1")) {
            Ok(()) => "dedicated: this process (server and load) on core 0, redis-server on core 1".to_owned(),
            Err(e) => {
                let _ = support::redis::pin(std::process::id(), &format!("0-{}", cores - 1));
                format!("shared: pinning not possible ({e}); Redis shares the cores")
            }
        }
    };
    let phases = [Phase::ClientCredentials("cc-opaque"), Phase::Refresh];
    // [round][store][phase]
    let mut results: Vec<[[Metered; 2]; 2]> = Vec::new();
    for round in 0..store_rounds {
        let mut r = [[Metered::default(); 2]; 2];
        for (s, server) in [&memory, &on_redis].into_iter().enumerate() {
            for (p, phase_kind) in phases.into_iter().enumerate() {
                let tag = format!("{}-{round}", server.name);
                let load = server.load(phase_kind, &clients, phase, &tag);
                r[s][p] = metered(Some(redis.pid()), load).await;
            }
        }
        results.push(r);
    }
    println!(
        "# Redis store / memory store, {layout}; medians of {store_rounds} alternating rounds of {phase} s phases"
    );
    println!("# CPU: microseconds per request in this process (server and load) + in redis-server");
    println!("{:<8} {:>22} {:>18} {:>16} {:>18}", "store", "client_credentials/s", "CPU us", "refreshes/s", "CPU us");
    for (s, name) in ["memory", "redis"].into_iter().enumerate() {
        let m = |p: usize, f: fn(&Metered) -> f64| support::median(results.iter().map(|r| f(&r[s][p])).collect());
        let cpu = |p: usize| format!("{:.0} + {:.0}", m(p, |x| x.ours_us), m(p, |x| x.theirs_us));
        println!("{name:<8} {:>22.0} {:>18} {:>16.0} {:>18}", m(0, |x| x.rate), cpu(0), m(1, |x| x.rate), cpu(1));
    }
    let ratio = |p: usize| support::median(results.iter().map(|r| r[1][p].rate / r[0][p].rate).collect());
    let rounds_text: Vec<String> = results
        .iter()
        .map(|r| format!("{:.2}/{:.2}", r[1][0].rate / r[0][0].rate, r[1][1].rate / r[0][1].rate))
        .collect();
    println!(
        "{:<8} {:>21.2}x {:>18} {:>15.2}x {:>18}   target >= 0.70x: {} / {} (rounds: {})",
        "ratio",
        ratio(0),
        "",
        ratio(1),
        "",
        verdict(ratio(0), 0.7),
        verdict(ratio(1), 0.7),
        rounds_text.join(" ")
    );
    println!("# ({:.0} s in all)", started.elapsed().as_secs_f64());
    drop(redis);
}

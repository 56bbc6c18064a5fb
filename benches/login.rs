//! Login throughput against raw JWT verification, measured in one run on one machine.
//!
//!     cargo bench --bench login
//!
//! Prints the raw verification rate of an RS256 and an ES256 external JWT (with
//! `keys::VerifyingKey`, jsonwebtoken over aws-lc-rs), then the throughput of
//! `POST /api/v1/auth/oidc-auth/login` over loopback for the same tokens (the full server:
//! JSON, checks, signature, token issue), and the ratio. The target is login >= 0.8x raw
//! verification. Login verifies RSA signatures with keys parsed once (`login::jwks`), so a
//! second RS256 row compares against that primitive's raw rate too.
//!
//! Then a worst-case login beside a normal one: an identity with the most globs a bound
//! list may hold (256, filling the CRD's 4096 characters of a boundClaims value, each a run
//! that a backtracking matcher would pay |glob| x |text| for) and a JWT with the most claim
//! elements (256, six of them 1 400 characters), which matches only at its last element.
//!
//! `OIDC_BENCH_SMOKE=1` (or `-- --smoke`) runs one short round and checks the answers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::sync::Arc;

use oidc_operator::api::{IdentityOidcAuth, IdentityOidcAuthSpec};
use oidc_operator::directory::{self, ExternalUrl, Inputs, Materials, SharedDirectory};
use oidc_operator::keys::{KeyVersion, SigningAlgorithm, VerifyingKey};
use oidc_operator::login::external::IssuerRegistry;
use oidc_operator::metrics::Metrics;
use oidc_operator::server::{self, AppState};
use oidc_operator::sessions::{MemoryStore, SessionStore};

mod support;

use support::now;

const RAW_SECONDS: f64 = 2.0;

fn login_request(
    identity_id: &str,
    token: &str,
) -> impl Fn() -> hyper::Request<http_body_util::Full<bytes::Bytes>> + use<> {
    let body = bytes::Bytes::from(serde_json::json!({"identityId": identity_id, "jwt": token}).to_string());
    let path = "/api/v1/auth/oidc-auth/login";
    move || support::request(path, &[("content-type", "application/json")], body.clone())
}

/// Logins per second over loopback, and the CPU microseconds one login costs the process
/// (server and load generator).
async fn login_rate(addr: std::net::SocketAddr, identity_id: &str, token: &str) -> (f64, f64) {
    let make = login_request(identity_id, token);
    // Warm up: the first login fetches the issuer's keys.
    let mut first = support::connection(addr).await;
    let (status, body) = support::send(&mut first, make()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(answer["accessToken"].as_str().is_some_and(|t| !t.is_empty()), "{answer}");
    let (cpu, start) = (support::cpu_ns(std::process::id()), std::time::Instant::now());
    let rate = support::load(addr, make).await;
    let logins = rate * start.elapsed().as_secs_f64();
    (rate, (support::cpu_ns(std::process::id()) - cpu) as f64 / 1000.0 / logins)
}

/// [`support::single_core_rate`], and the CPU microseconds one operation costs.
fn raw_rate(op: impl FnMut()) -> (f64, f64) {
    let cpu = support::cpu_ns(std::process::id());
    let seconds = support::scaled(RAW_SECONDS, 0.05);
    let rate = tokio::task::block_in_place(|| support::single_core_rate(seconds, op));
    (rate, (support::cpu_ns(std::process::id()) - cpu) as f64 / 1000.0 / (rate * seconds))
}

/// Mean latency of `n` logins one after another on one connection, in milliseconds.
async fn login_latency_ms(addr: std::net::SocketAddr, identity_id: &str, token: &str, n: u32) -> f64 {
    let make = login_request(identity_id, token);
    let mut conn = support::connection(addr).await;
    let start = std::time::Instant::now();
    for _ in 0..n {
        conn.ready().await.unwrap();
        assert_eq!(support::send(&mut conn, make()).await.0, 200);
    }
    start.elapsed().as_secs_f64() * 1000.0 / f64::from(n)
}

/// The worst-case spec and claims (see the module doc).
fn worst_case() -> (String, serde_json::Value) {
    let globs = vec![format!("*{}b*", "a".repeat(11)); 256].join(",");
    assert!(globs.len() <= 4096, "the CRD's limit of a boundClaims value");
    let mut groups: Vec<String> = (0..255).map(|i| if i < 6 { "a".repeat(1400) } else { "a".into() }).collect();
    groups.push(format!("{}b", "a".repeat(11)));
    (globs, serde_json::json!(groups))
}

#[tokio::main]
async fn main() {
    let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
    println!(
        "# cargo bench --bench login   ({} cores)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );

    // The external issuer: two keys, served on loopback.
    let rsa = KeyVersion::generate(SigningAlgorithm::RS256, now()).unwrap().parse().unwrap();
    let ec = KeyVersion::generate(SigningAlgorithm::ES256, now()).unwrap().parse().unwrap();
    let issuer = support::external_issuer(serde_json::json!({"keys": [rsa.jwk(), ec.jwk()]})).await;

    // The product's server with one identity bound to that issuer.
    let identity_id = "bench-identity";
    let spec: IdentityOidcAuthSpec = serde_json::from_value(serde_json::json!({
        "identityId": identity_id, "oidcDiscoveryUrl": issuer, "boundIssuer": issuer,
        "boundAudiences": "bench", "boundSubject": "system:serviceaccount:bench:*",
    }))
    .unwrap();
    let mut object = IdentityOidcAuth::new("bench", spec);
    object.metadata.namespace = Some("default".into());
    let worst_id = "bench-worst-identity";
    let (worst_globs, worst_groups) = worst_case();
    let worst_spec: IdentityOidcAuthSpec = serde_json::from_value(serde_json::json!({
        "identityId": worst_id, "oidcDiscoveryUrl": issuer, "boundIssuer": issuer,
        "boundAudiences": "bench", "boundSubject": "system:serviceaccount:bench:*",
        "boundClaims": {"groups": worst_globs},
    }))
    .unwrap();
    let mut worst = IdentityOidcAuth::new("bench-worst", worst_spec);
    worst.metadata.namespace = Some("tenant".into());
    let inputs = Inputs { identities: vec![Arc::new(object), Arc::new(worst)], ..Inputs::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let api = format!("http://{addr}");
    let shared = Arc::new(SharedDirectory::default());
    shared.store(directory::build(&inputs, &Materials::default(), &ExternalUrl::new(&api), now(), None));
    let state = AppState {
        directory: shared,
        metrics: Arc::new(Metrics::default()),
        issuers: Arc::new(IssuerRegistry::new(true)),
        tokens: SessionStore::Memory(Arc::new(MemoryStore::with_limit(100_000_000))),
        trusted_proxies: Arc::new(Vec::new()),
        refetch_interval: 10,
        code_ttl: 300,
        max_assertion_lifetime: 3600,
    };
    tokio::spawn(server::serve(listener, None, server::api_routes(state)));

    let claims = serde_json::json!({
        "iss": issuer, "aud": "bench", "sub": "system:serviceaccount:bench:runner",
        "iat": now(), "exp": now() + 3600,
    });
    support::header("cargo bench --bench login", "raw JWT verify/s", "login over loopback/s");
    let mut normal_rs256 = 0.0;
    let mut cpu_rows = Vec::new();
    for key in [&rsa, &ec] {
        let token = key.sign_jwt(&claims).unwrap();
        let verifier = VerifyingKey::from_jwk(key.jwk()).unwrap();
        let (raw, raw_cpu) = raw_rate(|| {
            verifier.verify(&token).unwrap();
        });
        let (login, login_cpu) = login_rate(addr, identity_id, &token).await;
        support::row(key.algorithm().as_str(), raw, login);
        cpu_rows.push((key.algorithm().as_str(), raw_cpu, login_cpu));
        if key.algorithm() == SigningAlgorithm::RS256 {
            normal_rs256 = login;
            let (parsed, parsed_cpu) = parsed_rsa_rate(key.jwk(), &token);
            support::row("RS256/pk", parsed, login);
            cpu_rows.push(("RS256/pk", parsed_cpu, login_cpu));
        }
    }
    println!(
        "(RS256/pk: raw is an aws-lc-rs key parsed once, signature and payload decoded: what login verifies with)"
    );
    // Wall-clock rates follow whatever else the machine runs; CPU time per operation does
    // not, and gives the ratio the machine would show with nothing else running.
    println!("# CPU time per operation (this process only): the ratio on an otherwise idle machine");
    println!("{:<8} {:>24} {:>28} {:>8}", "alg", "raw verify (us)", "login, server+client (us)", "ratio");
    let cores = support::cores() as f64;
    for (alg, raw_cpu, login_cpu) in cpu_rows {
        println!("{alg:<8} {raw_cpu:>24.1} {login_cpu:>28.1} {:>7.2}x", cores * raw_cpu / login_cpu);
    }

    let mut worst_claims = claims.clone();
    worst_claims["groups"] = worst_groups;
    let worst_token = rsa.sign_jwt(&worst_claims).unwrap();
    let token = rsa.sign_jwt(&claims).unwrap();
    let (worst_rate, _) = login_rate(addr, worst_id, &worst_token).await;
    let (normal_ms, worst_ms) = (
        login_latency_ms(addr, identity_id, &token, support::scaled(200, 5)).await,
        login_latency_ms(addr, worst_id, &worst_token, support::scaled(20, 2)).await,
    );
    println!("# RS256 login, normal vs worst case (256 globs x 256 claim elements; JWT {} bytes)", worst_token.len());
    println!("{:<8} {:>24} {:>28}", "", "logins/s (whole machine)", "latency one at a time (ms)");
    println!("{:<8} {normal_rs256:>24.0} {normal_ms:>28.3}", "normal");
    println!("{:<8} {worst_rate:>24.0} {worst_ms:>28.3}", "worst");
}

/// Raw RS256 verification with an aws-lc-rs key parsed once: decode the signature, verify,
/// decode and parse the payload.
fn parsed_rsa_rate(jwk: &oidc_operator::keys::Jwk, token: &str) -> (f64, f64) {
    use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap();
    let (n, e) = (b64(jwk.n.as_deref().unwrap()), b64(jwk.e.as_deref().unwrap()));
    let key = RsaPublicKeyComponents { n: n.as_slice(), e: e.as_slice() }
        .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
        .unwrap();
    raw_rate(|| {
        let (message, signature) = token.rsplit_once('.').unwrap();
        let payload = message.split_once('.').unwrap().1;
        key.verify_sig(message.as_bytes(), &b64(signature)).unwrap();
        let _: serde_json::Value = serde_json::from_slice(&b64(payload)).unwrap();
    })
}

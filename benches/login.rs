//! Login throughput against raw JWT verification, measured in one run on one machine.
//!
//!     cargo bench --bench login
//!
//! Prints the raw verification rate of an RS256 and an ES256 external JWT (with the library
//! login uses), then the throughput of `POST /api/v1/auth/oidc-auth/login` over loopback for
//! the same tokens (the full server: JSON, checks, signature, token issue), and the ratio.
//! The target is login >= 0.7x raw verification.
//!
//! `OIDC_BENCH_SMOKE=1` (or `-- --smoke`) runs one short round and checks a login's answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::sync::Arc;

use oidc_operator::api::{IdentityOidcAuth, IdentityOidcAuthSpec};
use oidc_operator::directory::{self, ExternalUrl, Inputs, Materials, SharedDirectory};
use oidc_operator::keys::{KeyVersion, SigningAlgorithm, VerifyingKey};
use oidc_operator::login::external::IssuerRegistry;
use oidc_operator::server::{self, AppState, Metrics};
use oidc_operator::sessions::{MemoryStore, SessionStore};
use warp::Filter;

mod support;

use support::now;

const RAW_SECONDS: f64 = 2.0;

async fn login_rate(addr: std::net::SocketAddr, identity_id: &str, token: &str) -> f64 {
    let body = bytes::Bytes::from(serde_json::json!({"identityId": identity_id, "jwt": token}).to_string());
    let path = "/api/v1/auth/oidc-auth/login";
    let make = move || support::request(path, &[("content-type", "application/json")], body.clone());
    // Warm up: the first login fetches the issuer's keys. Its answer is checked.
    let mut first = support::connection(addr).await;
    let (status, body) = support::send(&mut first, make()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(answer["accessToken"].as_str().is_some_and(|t| !t.is_empty()), "{answer}");
    support::load(addr, make).await
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
    let issuer_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", issuer_listener.local_addr().unwrap());
    let discovery = serde_json::json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
    let jwks = serde_json::json!({"keys": [rsa.jwk(), ec.jwk()]});
    let routes = warp::path!(".well-known" / "openid-configuration")
        .map(move || warp::reply::json(&discovery))
        .or(warp::path!("jwks").map(move || warp::reply::json(&jwks)));
    tokio::spawn(warp::serve(routes).incoming(issuer_listener).run());

    // The product's server with one identity bound to that issuer.
    let identity_id = "bench-identity";
    let spec: IdentityOidcAuthSpec = serde_json::from_value(serde_json::json!({
        "identityId": identity_id, "oidcDiscoveryUrl": issuer, "boundIssuer": issuer,
        "boundAudiences": "bench", "boundSubject": "system:serviceaccount:bench:*",
    }))
    .unwrap();
    let mut object = IdentityOidcAuth::new("bench", spec);
    object.metadata.namespace = Some("default".into());
    let inputs = Inputs { identities: vec![std::sync::Arc::new(object)], ..Inputs::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let api = format!("http://{addr}");
    let shared = Arc::new(SharedDirectory::default());
    shared.store(directory::build(&inputs, &Materials::default(), &ExternalUrl::new(&api), now(), None));
    let state = AppState {
        directory: shared,
        metrics: Arc::new(Metrics::default()),
        issuers: Arc::new(IssuerRegistry::new(true)),
        tokens: SessionStore::Memory(Arc::new(MemoryStore::default())),
        trusted_proxies: Arc::new(Vec::new()),
        refetch_interval: 10,
        code_ttl: 300,
    };
    tokio::spawn(server::serve(listener, None, server::api_routes(state)));

    let claims = serde_json::json!({
        "iss": issuer, "aud": "bench", "sub": "system:serviceaccount:bench:runner",
        "iat": now(), "exp": now() + 3600,
    });
    support::header("cargo bench --bench login", "raw JWT verify/s", "login over loopback/s");
    for key in [&rsa, &ec] {
        let token = key.sign_jwt(&claims).unwrap();
        let verifier = VerifyingKey::from_jwk(key.jwk()).unwrap();
        let raw = tokio::task::block_in_place(|| {
            support::single_core_rate(support::scaled(RAW_SECONDS, 0.05), || {
                verifier.verify(&token).unwrap();
            })
        });
        let login = login_rate(addr, identity_id, &token).await;
        support::row(key.algorithm().as_str(), raw, login);
    }
}

//! Login throughput against raw JWT verification, measured in one run on one machine.
//!
//!     cargo bench --bench login
//!
//! Prints the raw verification rate of an RS256 and an ES256 external JWT (with the library
//! login uses), then the throughput of `POST /api/v1/auth/oidc-auth/login` over loopback for
//! the same tokens (the full server: JSON, checks, signature, token issue), and the ratio.
//! The target is login >= 0.7x raw verification.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use oidc_operator::api::{IdentityOidcAuth, IdentityOidcAuthSpec};
use oidc_operator::directory::{self, ExternalUrl, Inputs, Materials, SharedDirectory};
use oidc_operator::keys::{KeyVersion, SigningAlgorithm, VerifyingKey};
use oidc_operator::login::external::IssuerRegistry;
use oidc_operator::server::{self, AppState, Metrics};
use oidc_operator::sessions::MemoryStore;
use warp::Filter;

const RAW_SECONDS: f64 = 2.0;
const LOAD_SECONDS: f64 = 3.0;
const CONCURRENCY: usize = 16;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn raw_rate(verifier: &VerifyingKey, token: &str) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < RAW_SECONDS {
        for _ in 0..64 {
            verifier.verify(token).unwrap();
        }
        n += 64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// One keep-alive HTTP/1.1 connection (a lean hyper client, so the load generator takes as
/// little of the shared CPU as possible).
async fn connection(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn post(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    body: &bytes::Bytes,
) -> u16 {
    use http_body_util::BodyExt;
    let req = hyper::Request::post("/api/v1/auth/oidc-auth/login")
        .header("host", "bench")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(body.clone()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    status
}

async fn login_rate(addr: std::net::SocketAddr, identity_id: &str, token: &str) -> f64 {
    let body = bytes::Bytes::from(serde_json::json!({"identityId": identity_id, "jwt": token}).to_string());
    // Warm up: the first login fetches the issuer's keys.
    assert_eq!(post(&mut connection(addr).await, &body).await, 200);
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(LOAD_SECONDS);
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (body, done) = (body.clone(), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let mut sender = connection(addr).await;
            while Instant::now() < deadline {
                assert_eq!(post(&mut sender, &body).await, 200);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
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
    let inputs = Inputs { identities: vec![object], ..Inputs::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let api = format!("http://{addr}");
    let shared = Arc::new(SharedDirectory::default());
    shared.store(directory::build(&inputs, &Materials::default(), &ExternalUrl::new(&api), now(), None));
    let state = AppState {
        directory: shared,
        metrics: Arc::new(Metrics::default()),
        issuers: Arc::new(IssuerRegistry::new(true)),
        tokens: Arc::new(MemoryStore::default()),
        trusted_proxies: Arc::new(Vec::new()),
        refetch_interval: 10,
        code_ttl: 300,
    };
    tokio::spawn(server::serve(listener, None, server::api_routes(state)));

    let claims = serde_json::json!({
        "iss": issuer, "aud": "bench", "sub": "system:serviceaccount:bench:runner",
        "iat": now(), "exp": now() + 3600,
    });
    println!("{:<8} {:>22} {:>22} {:>8}", "alg", "raw verify (1 core)/s", "login over loopback/s", "ratio");
    for key in [&rsa, &ec] {
        let token = key.sign_jwt(&claims).unwrap();
        let verifier = VerifyingKey::from_jwk(key.jwk()).unwrap();
        let raw = tokio::task::block_in_place(|| raw_rate(&verifier, &token));
        let login = login_rate(addr, identity_id, &token).await;
        println!("{:<8} {:>22.0} {:>22.0} {:>7.2}x", key.algorithm().as_str(), raw, login, login / raw);
    }
}

//! Token endpoint throughput against raw ID-token signing, measured in one run on one machine.
//!
//!     cargo bench --bench token
//!
//! Prints the single-core signing rate of an ID token with RS256, ES256 and EdDSA keys, then
//! the throughput of `POST {issuer}/token` over loopback for clients using the same keys: a
//! full code exchange (client authentication, code redemption, PKCE-free binding checks,
//! scope claims, signing, access token) per request, and the ratio. The target is the token
//! endpoint >= 0.8x raw RS256 signing.
//!
//! `OIDC_BENCH_SMOKE=1` (or `-- --smoke`) runs one short round per algorithm and checks an
//! exchange's answer: its ID token verifies with the client's key and names the entity.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use bytes::Bytes;
use oidc_operator::api::{IdentityOidcAuth, OidcClient, OidcKey, OidcKeySpec, OidcProvider};
use oidc_operator::directory::{self, ExternalUrl, Inputs, ObjectKey, SharedDirectory};
use oidc_operator::keys::{SigningAlgorithm, VerifyingKey};
use oidc_operator::login::external::IssuerRegistry;
use oidc_operator::metrics::Metrics;
use oidc_operator::server::{self, AppState};
use oidc_operator::sessions::{MemoryStore, SessionStore, TokenStore, token_hash};

const RAW_SECONDS: f64 = 2.0;
const REDIRECT: &str = "https://app.example/callback";
const ENTITY: &str = "bench-entity";

fn in_ns<T: kube::Resource<DynamicType = ()>>(mut o: T) -> std::sync::Arc<T> {
    o.meta_mut().namespace = Some("default".into());
    std::sync::Arc::new(o)
}

#[tokio::main]
async fn main() {
    let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
    let now = support::now();
    let algs = [SigningAlgorithm::RS256, SigningAlgorithm::ES256, SigningAlgorithm::EdDSA];
    let mut inputs = Inputs::default();
    for alg in algs {
        let n = alg.as_str().to_lowercase();
        let key = OidcKeySpec { algorithm: alg, allowed_clients: vec!["*".into()], ..OidcKeySpec::builtin_default() };
        inputs.keys.push(in_ns(OidcKey::new(&format!("key-{n}"), key)));
        let client = serde_json::from_value(serde_json::json!({
            "key": format!("key-{n}"), "redirectUris": [REDIRECT], "assignments": ["allow_all"]
        }))
        .unwrap();
        inputs.clients.push(in_ns(OidcClient::new(&format!("client-{n}"), client)));
    }
    let provider = serde_json::from_value(serde_json::json!({"allowedClients": ["*"]})).unwrap();
    inputs.providers.push(in_ns(OidcProvider::new("p", provider)));
    let identity = serde_json::from_value(serde_json::json!({
        "identityId": ENTITY, "oidcDiscoveryUrl": "https://issuer.invalid", "boundIssuer": "https://issuer.invalid",
        "boundAudiences": "bench",
    }))
    .unwrap();
    inputs.identities.push(in_ns(IdentityOidcAuth::new("bench", identity)));

    let mut materials = support::key_rings(&inputs, now);
    for c in &inputs.clients {
        let creds = oidc_operator::credentials::reconcile(None, None, true).unwrap().unwrap();
        materials.credentials.insert(ObjectKey::of(&c.metadata), creds);
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = directory::build(&inputs, &materials, &ExternalUrl::new(&format!("http://{addr}")), now, None);
    let issuer = dir.provider("default", "p").unwrap().issuer.clone();
    let entity = support::served_identity(&dir, ENTITY);
    let shared = Arc::new(SharedDirectory::default());
    shared.store(dir);
    let store = Arc::new(MemoryStore::with_limit(100_000_000));
    let state = AppState {
        directory: Arc::clone(&shared),
        metrics: Arc::new(Metrics::default()),
        issuers: Arc::new(IssuerRegistry::new(false)),
        tokens: SessionStore::Memory(Arc::clone(&store)),
        trusted_proxies: Arc::new(Vec::new()),
        refetch_interval: 10,
        code_ttl: 300,
        max_assertion_lifetime: 3600,
    };
    tokio::spawn(server::serve(listener, None, server::api_routes(state)));

    support::header("cargo bench --bench token", "raw ID-token signing/s", "token endpoint over loopback/s");
    let token_path = format!("{}/token", issuer.trim_start_matches(&format!("http://{addr}")));
    let snapshot = shared.load().unwrap();
    for alg in algs {
        let n = alg.as_str().to_lowercase();
        let creds = &materials.credentials[&ObjectKey::new("default", format!("client-{n}"))];
        let client = snapshot.namespace("default").unwrap().clients[&creds.client_id].clone();
        let signer = Arc::clone(&client.key.current);
        let claims = serde_json::json!({
            "iss": issuer, "sub": ENTITY, "aud": creds.client_id, "iat": now, "exp": now + 3600,
            "namespace": "default", "at_hash": "x".repeat(22), "c_hash": "x".repeat(22), "nonce": "n-0123456789",
        });
        let raw = tokio::task::block_in_place(|| {
            support::single_core_rate(support::scaled(RAW_SECONDS, 0.05), || {
                signer.sign_jwt(&claims).unwrap();
            })
        });

        // Each request redeems a fresh code, put in the store as authorize would.
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                creds.client_id,
                creds.client_secret.clone().unwrap()
            ))
        );
        let counter = Arc::new(AtomicU64::new(0));
        let (store, client_id, path, entity) =
            (Arc::clone(&store), creds.client_id.clone(), token_path.clone(), Arc::clone(&entity));
        let exchange = Arc::new(move || {
            let code = format!("bench-code-{n}-{}", counter.fetch_add(1, Ordering::Relaxed));
            store.insert_code(token_hash(&code), support::code_record(&client_id, &entity, now)).unwrap();
            let body =
                format!("grant_type=authorization_code&code={code}&redirect_uri=https%3A%2F%2Fapp.example%2Fcallback");
            let headers = [("content-type", "application/x-www-form-urlencoded"), ("authorization", basic.as_str())];
            support::request(&path, &headers, Bytes::from(body))
        });
        let next = Arc::clone(&exchange);
        let served = support::load(addr, move || next()).await;
        check_exchange(addr, exchange(), &signer, &issuer, &creds.client_id).await;
        support::row(alg.as_str(), raw, served);
    }
}

/// One exchange's answer, checked: 200, an access token, and an ID token that verifies with
/// the client's key and names the issuer, the client and the entity.
async fn check_exchange(
    addr: std::net::SocketAddr,
    request: hyper::Request<http_body_util::Full<Bytes>>,
    signer: &oidc_operator::keys::SigningKey,
    issuer: &str,
    client_id: &str,
) {
    let mut connection = support::connection(addr).await;
    let (status, body) = support::send(&mut connection, request).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(answer["access_token"].as_str().is_some_and(|t| !t.is_empty()), "{answer}");
    let id_token = answer["id_token"].as_str().unwrap();
    let (_, claims) = VerifyingKey::from_jwk(signer.jwk()).unwrap().verify(id_token).unwrap();
    assert_eq!(claims["iss"], issuer, "{claims}");
    assert_eq!(claims["aud"], client_id, "{claims}");
    assert_eq!(claims["sub"], ENTITY, "{claims}");
}

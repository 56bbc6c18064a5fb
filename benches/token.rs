//! Token endpoint throughput against raw ID-token signing, measured in one run on one machine.
//!
//!     cargo bench --bench token
//!
//! Prints the single-core signing rate of an ID token with RS256, ES256 and EdDSA keys, then
//! the throughput of `POST {issuer}/token` over loopback for clients using the same keys: a
//! full code exchange (client authentication, code redemption, PKCE-free binding checks,
//! scope claims, signing, access token) per request, and the ratio. The target is the token
//! endpoint >= 0.8x raw RS256 signing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use bytes::Bytes;
use oidc_operator::api::{IdentityOidcAuth, OidcClient, OidcKey, OidcKeySpec, OidcProvider};
use oidc_operator::directory::{self, ExternalUrl, Inputs, ObjectKey, SharedDirectory};
use oidc_operator::keys::SigningAlgorithm;
use oidc_operator::login::external::IssuerRegistry;
use oidc_operator::server::{self, AppState, Metrics};
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
    let shared = Arc::new(SharedDirectory::default());
    shared.store(dir);
    let store = Arc::new(MemoryStore::default());
    let state = AppState {
        directory: Arc::clone(&shared),
        metrics: Arc::new(Metrics::default()),
        issuers: Arc::new(IssuerRegistry::new(false)),
        tokens: SessionStore::Memory(Arc::clone(&store)),
        trusted_proxies: Arc::new(Vec::new()),
        refetch_interval: 10,
        code_ttl: 300,
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
            support::single_core_rate(RAW_SECONDS, || {
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
        let (store, client_id, path) = (Arc::clone(&store), creds.client_id.clone(), token_path.clone());
        let served = support::load(addr, move || {
            let code = format!("bench-code-{n}-{}", counter.fetch_add(1, Ordering::Relaxed));
            store.insert_code(token_hash(&code), support::code_record(&client_id, ENTITY, now)).unwrap();
            let body =
                format!("grant_type=authorization_code&code={code}&redirect_uri=https%3A%2F%2Fapp.example%2Fcallback");
            let headers = [("content-type", "application/x-www-form-urlencoded"), ("authorization", basic.as_str())];
            support::request(&path, &headers, Bytes::from(body))
        })
        .await;
        support::row(alg.as_str(), raw, served);
    }
}

//! Who calls the grants bench's servers: the directory's clients and the external
//! issuer and client keys (issue 23's token exchange and `private_key_jwt`), and the
//! request bodies and token checks they share.

use std::collections::HashMap;
use std::sync::Arc;

use oidc_operator::api::{IdentityOidcAuth, OidcClient, OidcKey, OidcKeySpec, OidcProvider};
use oidc_operator::directory::Inputs;
use oidc_operator::keys::{JwkSet, KeyVersion, SigningAlgorithm, SigningKey, VerifyingKey};

use super::{ALGS, ENTITY, REDIRECT, support};
use support::now;

pub const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The keys from outside the provider: the external issuer's (RS256, served on loopback at
/// `issuer`) and the `private_key_jwt` client's own (ES256).
pub struct Outside {
    pub issuer: String,
    pub issuer_key: SigningKey,
    pub client_key: SigningKey,
}

impl Outside {
    /// Generates the keys and serves the issuer's discovery document and JWKS on loopback.
    pub async fn start() -> Self {
        let issuer_key = KeyVersion::generate(SigningAlgorithm::RS256, now()).unwrap().parse().unwrap();
        let client_key = KeyVersion::generate(SigningAlgorithm::ES256, now()).unwrap().parse().unwrap();
        let issuer = support::external_issuer(serde_json::json!({"keys": [issuer_key.jwk()]})).await;
        Self { issuer, issuer_key, client_key }
    }

    /// A service-account-shaped JWT of the external issuer, as a pod would exchange it.
    pub fn subject_token(&self) -> String {
        let t = now();
        let claims = serde_json::json!({
            "iss": self.issuer, "aud": "bench", "sub": "system:serviceaccount:bench:runner",
            "iat": t, "exp": t + 3600,
            "kubernetes.io": {"namespace": "bench", "serviceaccount": {"name": "runner"}},
        });
        self.issuer_key.sign_jwt(&claims).unwrap()
    }

    /// RFC 7523 §3 client assertions of `client_id` for `aud`, a fresh `jti` each.
    pub fn assertions(&self, client_id: &str, aud: &str, n: usize, tag: &str) -> Vec<String> {
        let t = now();
        (0..n)
            .map(|i| {
                let claims = serde_json::json!({
                    "iss": client_id, "sub": client_id, "aud": aud, "iat": t, "exp": t + 600,
                    "jti": format!("bench-{tag}-{i}"),
                });
                self.client_key.sign_jwt(&claims).unwrap()
            })
            .collect()
    }
}

/// The clients: name and OidcClient spec.
pub fn clients(client_jwk: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
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
        // Exchanges external JWTs for ID tokens of its own (the audience by default).
        (
            "exchanger".to_owned(),
            serde_json::json!({"key": "key-es256", "assignments": ["allow_all"], "grantTypes": [EXCHANGE]}),
        ),
        // A service with no secret: its ES256 public key registered inline.
        (
            "cc-pkjwt".to_owned(),
            serde_json::json!({
                "key": "key-es256", "grantTypes": ["client_credentials"], "accessTokenFormat": "jwt",
                "tokenEndpointAuthMethod": "private_key_jwt", "jwks": {"keys": [client_jwk]},
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

pub fn inputs(outside: &Outside) -> Inputs {
    let mut inputs = Inputs::default();
    for alg in ALGS {
        let n = alg.as_str().to_lowercase();
        let key = OidcKeySpec { algorithm: alg, allowed_clients: vec!["*".into()], ..OidcKeySpec::builtin_default() };
        inputs.keys.push(support::in_ns(OidcKey::new(&format!("key-{n}"), key)));
    }
    for (name, spec) in clients(&serde_json::to_value(outside.client_key.jwk()).unwrap()) {
        inputs.clients.push(support::in_ns(OidcClient::new(&name, serde_json::from_value(spec).unwrap())));
    }
    let provider = serde_json::from_value(serde_json::json!({"allowedClients": ["*"]})).unwrap();
    inputs.providers.push(support::in_ns(OidcProvider::new("p", provider)));
    let identity = serde_json::from_value(serde_json::json!({
        "identityId": ENTITY, "oidcDiscoveryUrl": outside.issuer, "boundIssuer": outside.issuer,
        "boundAudiences": "bench",
    }))
    .unwrap();
    inputs.identities.push(support::in_ns(IdentityOidcAuth::new("bench", identity)));
    inputs
}

/// A client's credentials, as its Basic header.
pub struct Client {
    pub id: String,
    pub basic: String,
}

/// `token` verified against the provider's `jwks` by its `kid`: its header and claims.
pub fn verified(jwks: &JwkSet, token: &str) -> (serde_json::Value, serde_json::Value) {
    let header: serde_json::Value = {
        use base64::Engine;
        let h = token.split('.').next().unwrap();
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
    };
    let jwk = jwks.keys.iter().find(|k| header["kid"] == k.kid.as_str()).expect("the token's kid is in the JWKS");
    VerifyingKey::from_jwk(jwk).unwrap().verify(token).unwrap()
}

/// A token exchange (RFC 8693 §2.1) of an external JWT for an ID token (the default type).
pub fn exchange_body(subject_token: &str) -> String {
    format!(
        "grant_type={}&subject_token={subject_token}&subject_token_type={}&scope=openid",
        urlencoding(EXCHANGE),
        urlencoding("urn:ietf:params:oauth:token-type:jwt")
    )
}

/// client_credentials authenticated by a `private_key_jwt` assertion (RFC 7523 §2.2).
pub fn pk_jwt_body(client_id: &str, assertion: &str) -> String {
    format!(
        "grant_type=client_credentials&client_id={client_id}&client_assertion_type={}&client_assertion={assertion}",
        urlencoding(ASSERTION_TYPE)
    )
}

/// Form-encodes a URN (its colons).
pub fn urlencoding(urn: &str) -> String {
    urn.replace(':', "%3A")
}

/// Who calls the servers: the clients by name, and the keys from outside the provider.
pub struct Parties {
    pub clients: HashMap<String, Client>,
    pub outside: Arc<Outside>,
    /// Client assertions signed for the next `private_key_jwt` phase, which takes them all.
    pub pool: std::sync::Mutex<Vec<String>>,
}

impl Parties {
    /// Signs `n` assertions of `client_id` for `aud` into the pool, before the phase and
    /// outside its measurement (a real client signs on its own machine).
    pub fn presign(&self, client_id: &str, aud: &str, n: usize, tag: &str) {
        let pool = tokio::task::block_in_place(|| self.outside.assertions(client_id, aud, n, tag));
        *self.pool.lock().unwrap() = pool;
    }
}

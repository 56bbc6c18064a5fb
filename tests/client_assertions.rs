//! `private_key_jwt` client authentication and federated client assertions (issue 23 items 1,
//! 2 and 4) end to end, against the standalone server: assertions signed with RS256, ES256 and
//! EdDSA client keys (made and signed by jwcrypto, tests/client_assertion.py, not by the
//! product) at token, introspect and revoke; the same through authlib's `PrivateKeyJWT`; an
//! external JWT meeting a federated identity's bounds as a client's credential; the refusals,
//! as a table, with their exact status and RFC error code; and a `jti` spent at one replica
//! refused at the other, both on one Redis.

// Test helpers outside #[test] functions stop the test on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use common::oauth::{Auth, OAuth, Request, confidential, credentials, refusals};
use common::redis::RedisServer;
use common::{ExternalIssuer, Server, identity, identity_in, write_manifest};
use serde_json::{Value, json};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const CI: &str = "9a170000-0000-4000-8000-0000000000c1";
const DEPLOY: &str = "9a170000-0000-4000-8000-0000000000c2";
const TEAM_B: &str = "9a170000-0000-4000-8000-0000000000c3";

/// tests/client_assertion.py with `input`.
fn py(input: Value) -> Value {
    common::python_json("client_assertion.py", &input)
}

/// A compact JWS of `claims` by `key` (a private JWK, or an oct JWK for HS256) with `alg`
/// and the extra header members (`null` leaves one out).
fn sign(key: &Value, alg: &str, claims: &Value, header: Value) -> String {
    py(json!({"op": "sign", "key": key, "alg": alg, "claims": claims, "header": header}))["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn now() -> i64 {
    oidc_operator::clock::unix_now()
}

/// A fresh `jti`.
fn jti() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("jti-{}-{}-{}", std::process::id(), now(), N.fetch_add(1, Ordering::Relaxed))
}

/// RFC 7523 §3 claims of `client_id` for `aud`, valid five minutes.
fn claims(client_id: &str, aud: &str) -> Value {
    let t = now();
    json!({"iss": client_id, "sub": client_id, "aud": aud, "iat": t, "exp": t + 300, "jti": jti()})
}

/// `claims` with members replaced (`null` removes one).
fn with(mut claims: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        match v {
            Value::Null => {
                claims.as_object_mut().unwrap().remove(k);
            }
            v => claims[k] = v.clone(),
        }
    }
    claims
}

/// The client keys: per algorithm, a private and a public JWK (kids `rs`, `es`, `ed`).
struct Keys(Value);

impl Keys {
    fn private(&self, alg: &str) -> &Value {
        &self.0[alg]["private"]
    }

    fn public_set(&self) -> Value {
        let keys: Vec<Value> = ["RS256", "ES256", "EdDSA"].iter().map(|a| self.0[a]["public"].clone()).collect();
        json!({ "keys": keys })
    }
}

/// A plain-HTTP file server on loopback (`--allow-insecure-issuers` lets the operator fetch
/// from it) publishing a client's `jwks.json`; killed when dropped.
struct JwksServer {
    child: std::process::Child,
    dir: PathBuf,
    url: String,
}

impl JwksServer {
    fn start(dir: PathBuf) -> JwksServer {
        use std::io::BufRead;
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("jwks.json"), r#"{"keys": []}"#).unwrap();
        let mut child = Command::new("python3")
            .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory"])
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        let port = first.split(" port ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_owned();
        JwksServer { child, dir, url: format!("http://127.0.0.1:{port}/jwks.json") }
    }

    /// Publishes `keys` (public JWKs).
    fn publish(&self, keys: &[&Value]) {
        std::fs::write(self.dir.join("jwks.json"), json!({ "keys": keys }).to_string()).unwrap();
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn manifests(issuer: &ExternalIssuer, keys: &Keys, jwks_url: &str) -> String {
    let mut out = identity("ci", CI, issuer, "");
    out.push_str(&identity_in("default", "ci-deploy", DEPLOY, issuer, "deployer", ""));
    out.push_str(&identity_in("team-b", "ci", TEAM_B, issuer, "team-b", ""));
    let client = |name: &str, spec: String| {
        format!(
            "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {{name: {name}}}\nspec: {spec}\n---\n"
        )
    };
    let key_jwt = |extra: Value| {
        let mut spec = json!({"grantTypes": ["client_credentials"], "tokenEndpointAuthMethod": "private_key_jwt"});
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        spec.to_string()
    };
    out.push_str(&client("pk", key_jwt(json!({"jwks": keys.public_set()}))));
    out.push_str(&client("pk-fed", key_jwt(json!({"federatedIdentities": ["ci"]}))));
    out.push_str(&client("pk-deploy", key_jwt(json!({"federatedIdentities": ["ci-deploy"]}))));
    out.push_str(&client("pk-uri", key_jwt(json!({"jwksUri": jwks_url}))));
    // A link-local (cloud metadata) address: refused before any connection, as for issuers.
    out.push_str(&client("pk-metadata", key_jwt(json!({"jwksUri": "http://169.254.169.254/jwks.json"}))));
    out.push_str(&client("secret", json!({"grantTypes": ["client_credentials"]}).to_string()));
    out.push_str(concat!(
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {name: main}\n",
        "spec: {allowedClients: [pk, pk-fed, pk-deploy, pk-uri, secret]}\n",
    ));
    out
}

/// One server (memory store), or two replicas sharing one Redis.
struct Fixture {
    _tmp: tempfile::TempDir,
    issuer: ExternalIssuer,
    keys: Keys,
    state: PathBuf,
    jwks: JwksServer,
    a: Server,
    b: Option<Server>,
    _redis: Option<RedisServer>,
}

impl Fixture {
    async fn start(shared: bool) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        std::fs::create_dir(&dir).unwrap();
        let issuer = ExternalIssuer::start(tmp.path()).await;
        let keys = Keys(py(json!({"op": "keys"})));
        let jwks = JwksServer::start(tmp.path().join("published"));
        jwks.publish(&[&keys.0["ES256"]["public"]]);
        write_manifest(&dir, "all.yaml", &manifests(&issuer, &keys, &jwks.url));
        let r = common::replicas(&dir, tmp.path(), shared, &["ci"]).await;
        Fixture { _tmp: tmp, issuer, keys, state: r.state, jwks, a: r.a, b: r.b, _redis: r.redis }
    }

    fn oauth(&self, other: bool) -> OAuth {
        let server = if other { self.b.as_ref().unwrap() } else { &self.a };
        OAuth::new(server, "default", "main")
    }

    fn client_id(&self, client: &str) -> String {
        credentials(&self.state, "default", client).0
    }

    /// `pk`'s assertion for `aud` signed with its `alg` key (by kid).
    fn assertion(&self, alg: &str, aud: &str) -> String {
        self.assertion_of("pk", alg, aud)
    }

    /// `client`'s assertion for `aud` signed with its `alg` key (by kid).
    fn assertion_of(&self, client: &str, alg: &str, aud: &str) -> String {
        let key = self.keys.private(alg);
        sign(key, alg, &claims(&self.client_id(client), aud), json!({"kid": key["kid"]}))
    }

    /// An external JWT of the test issuer (default claims: aud `oidc-operator`, a ci
    /// service account) with `changes`.
    async fn external(&self, changes: Value) -> String {
        self.issuer.mint("RS256", changes, None).await
    }
}

fn client_credentials() -> Request {
    Request::post("token").set("grant_type", "client_credentials")
}

/// `request` authenticated by `assertion` (and `client_id`, when given).
fn asserted(request: Request, client_id: Option<&str>, assertion: &str) -> Request {
    let r = request.set("client_assertion_type", ASSERTION_TYPE).set("client_assertion", assertion);
    match client_id {
        Some(id) => r.set("client_id", id),
        None => r,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn private_key_jwt_and_federated_assertions_authenticate_and_every_refusal_is_exact() {
    let f = Fixture::start(false).await;
    let main = f.oauth(false);
    let pk = f.client_id("pk");
    let token_url = main.url("token");

    // Discovery offers the method and the asymmetric algorithms, for every endpoint.
    let d = main.discovery().await.body;
    for m in ["token", "introspection", "revocation"] {
        let methods = d[format!("{m}_endpoint_auth_methods_supported")].as_array().unwrap().clone();
        assert!(methods.contains(&json!("private_key_jwt")), "{m}: {methods:?}");
        assert!(!methods.contains(&json!("client_secret_jwt")), "{m}");
        assert_eq!(
            d[format!("{m}_endpoint_auth_signing_alg_values_supported")],
            json!(["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "EdDSA"]),
            "{m}"
        );
    }

    // Each algorithm, by kid, with aud the token endpoint, the issuer, or a list holding one.
    let mut tokens = Vec::new();
    for (alg, aud) in [("RS256", json!(token_url)), ("ES256", json!(main.issuer())), ("EdDSA", json!(["x", token_url]))]
    {
        let key = f.keys.private(alg);
        let a = sign(key, alg, &with(claims(&pk, ""), json!({"aud": aud})), json!({"kid": key["kid"]}));
        let r = main.send(&asserted(client_credentials(), Some(&pk), &a)).await;
        assert_eq!(r.status, 200, "{alg}: {}", r.body);
        tokens.push(r.text("access_token"));
    }
    // Without kid: the one key of the algorithm; without client_id: the assertion's sub.
    let a = sign(f.keys.private("ES256"), "ES256", &claims(&pk, &token_url), json!({}));
    let r = main.send(&asserted(client_credentials(), None, &a)).await;
    assert_eq!(r.status, 200, "no kid, no client_id: {}", r.body);

    // Introspection and revocation, the assertion's aud the endpoint called.
    let a = f.assertion("EdDSA", &main.url("introspect"));
    let r = main.send(&asserted(Request::post("introspect").set("token", &tokens[0]), Some(&pk), &a)).await;
    assert_eq!((r.status, &r.body["active"], &r.body["client_id"]), (200, &json!(true), &json!(pk)), "{}", r.body);
    let a = f.assertion("RS256", &main.url("revoke"));
    let r = main.send(&asserted(Request::post("revoke").set("token", &tokens[0]), Some(&pk), &a)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let a = f.assertion("ES256", &token_url);
    let r = main.send(&asserted(Request::post("introspect").set("token", &tokens[0]), Some(&pk), &a)).await;
    assert_eq!(r.body, json!({"active": false}), "revoked; aud the token endpoint is accepted here too");

    // A federated identity's JWT authenticates pk-fed, and again: not single-use (a
    // service-account token is reused until it expires).
    let fed = f.external(json!({})).await;
    let pk_fed = f.client_id("pk-fed");
    for round in 0..2 {
        let r = main.send(&asserted(client_credentials(), Some(&pk_fed), &fed)).await;
        assert_eq!(r.status, 200, "federated, round {round}: {}", r.body);
        assert_eq!(r.body["token_type"], "Bearer");
    }

    // The refusals. A replay first needs a first use.
    let used = f.assertion("RS256", &token_url);
    assert_eq!(main.send(&asserted(client_credentials(), Some(&pk), &used)).await.status, 200);
    let t = now();
    let rs = f.keys.private("RS256");
    let signed = |c: Value| sign(rs, "RS256", &c, json!({"kid": "rs"}));
    let base = || claims(&pk, &token_url);
    let stranger = py(json!({"op": "keys"}))["RS256"]["private"].clone();
    // A private_key_jwt client has no secret at all.
    assert_eq!(credentials(&f.state, "default", "pk").1, None, "pk was given a secret");
    let (secret_id, secret_secret) = confidential(&f.state, "default", "secret");
    let hs_key = json!({"kty": "oct", "k": base64_url(secret_secret.as_bytes())});
    let pk_secret = "a-guess";
    let cc = |a: &str| asserted(client_credentials(), Some(&pk), a);
    let expired_fed = f.external(json!({"exp": t - 120, "iat": t - 600})).await;
    let deploy_fed = f.external(json!({"aud": "deployer"})).await;
    let team_b_fed = f.external(json!({"aud": "team-b"})).await;
    let other_sub_fed = f.external(json!({"sub": "system:serviceaccount:prod:runner"})).await;
    let table = vec![
        ("replayed jti", cc(&used), 401, "invalid_client"),
        (
            "aud elsewhere",
            cc(&signed(with(base(), json!({"aud": "https://elsewhere.example/token"})))),
            401,
            "invalid_client",
        ),
        (
            "aud the introspection endpoint, at token",
            cc(&signed(with(base(), json!({"aud": main.url("introspect")})))),
            401,
            "invalid_client",
        ),
        ("aud missing", cc(&signed(with(base(), json!({"aud": null})))), 401, "invalid_client"),
        ("expired", cc(&signed(with(base(), json!({"iat": t - 600, "exp": t - 120})))), 401, "invalid_client"),
        ("not yet valid", cc(&signed(with(base(), json!({"nbf": t + 600, "exp": t + 900})))), 401, "invalid_client"),
        (
            "issued in the future",
            cc(&signed(with(base(), json!({"iat": t + 600, "exp": t + 900})))),
            401,
            "invalid_client",
        ),
        (
            "lifetime above the cap",
            cc(&signed(with(base(), json!({"iat": t, "exp": t + 3600 + 60})))),
            401,
            "invalid_client",
        ),
        (
            "lifetime above the cap, no iat",
            cc(&signed(with(base(), json!({"iat": null, "exp": t + 3600 + 120})))),
            401,
            "invalid_client",
        ),
        ("no exp", cc(&signed(with(base(), json!({"exp": null})))), 401, "invalid_client"),
        ("no jti", cc(&signed(with(base(), json!({"jti": null})))), 401, "invalid_client"),
        ("empty jti", cc(&signed(with(base(), json!({"jti": ""})))), 401, "invalid_client"),
        (
            "signed by an unregistered key, registered kid",
            cc(&sign(&stranger, "RS256", &base(), json!({"kid": "rs"}))),
            401,
            "invalid_client",
        ),
        (
            "signed by an unregistered key, its own kid",
            cc(&sign(&stranger, "RS256", &base(), json!({"kid": "zz"}))),
            401,
            "invalid_client",
        ),
        ("alg none", cc(&sign(&Value::Null, "none", &base(), json!({}))), 401, "invalid_client"),
        ("HS256 for a private_key_jwt client", cc(&sign(&hs_key, "HS256", &base(), json!({}))), 401, "invalid_client"),
        (
            "HS256 with the client's secret as key (client_secret_jwt)",
            asserted(
                client_credentials(),
                Some(&secret_id),
                &sign(&hs_key, "HS256", &claims(&secret_id, &token_url), json!({})),
            ),
            401,
            "invalid_client",
        ),
        (
            "ES256 named, the kid an RSA key",
            cc(&sign(f.keys.private("ES256"), "ES256", &base(), json!({"kid": "rs"}))),
            401,
            "invalid_client",
        ),
        ("iss is not sub", cc(&signed(with(base(), json!({"sub": "someone-else"})))), 401, "invalid_client"),
        (
            "iss and sub another client",
            cc(&signed(with(base(), json!({"iss": secret_id, "sub": secret_id})))),
            401,
            "invalid_client",
        ),
        ("not a JWS", cc("abc.def"), 401, "invalid_client"),
        ("typ at+jwt", cc(&sign(rs, "RS256", &base(), json!({"kid": "rs", "typ": "at+jwt"}))), 401, "invalid_client"),
        (
            "client_id another client than iss and sub",
            asserted(client_credentials(), Some(&secret_id), &signed(base())),
            401,
            "invalid_client",
        ),
        (
            "another client_assertion_type",
            cc(&f.assertion("RS256", &token_url))
                .set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"),
            400,
            "invalid_request",
        ),
        (
            "no client_assertion_type",
            cc(&f.assertion("RS256", &token_url)).unset("client_assertion_type"),
            400,
            "invalid_request",
        ),
        ("no client_assertion", cc("x").unset("client_assertion"), 400, "invalid_request"),
        (
            "an assertion and Basic",
            cc(&f.assertion("RS256", &token_url)).auth(Auth::basic(&pk, pk_secret)),
            400,
            "invalid_request",
        ),
        (
            "an assertion and client_secret",
            cc(&f.assertion("RS256", &token_url)).set("client_secret", pk_secret),
            400,
            "invalid_request",
        ),
        (
            "the secret of a private_key_jwt client",
            client_credentials().auth(Auth::basic(&pk, pk_secret)),
            401,
            "invalid_client",
        ),
        (
            "an assertion for a client_secret client",
            asserted(client_credentials(), Some(&secret_id), &signed(claims(&secret_id, &token_url))),
            401,
            "invalid_client",
        ),
        (
            "an unknown client_id",
            asserted(client_credentials(), Some("nobody"), &f.assertion("RS256", &token_url)),
            401,
            "invalid_client",
        ),
        (
            "a federated token for another client's identity",
            asserted(client_credentials(), Some(&pk_fed), &deploy_fed),
            401,
            "invalid_client",
        ),
        (
            "a federated token of another namespace's identity",
            asserted(client_credentials(), Some(&pk_fed), &team_b_fed),
            401,
            "invalid_client",
        ),
        (
            "a federated token out of the identity's subject",
            asserted(client_credentials(), Some(&pk_fed), &other_sub_fed),
            401,
            "invalid_client",
        ),
        (
            "an expired federated token",
            asserted(client_credentials(), Some(&pk_fed), &expired_fed),
            401,
            "invalid_client",
        ),
        (
            "a federated token for a client with keys only",
            asserted(client_credentials(), Some(&pk), &fed),
            401,
            "invalid_client",
        ),
        ("a federated token without client_id", asserted(client_credentials(), None, &fed), 401, "invalid_client"),
        (
            "a replayed jti at introspection",
            asserted(Request::post("introspect").set("token", &tokens[1]), Some(&pk), &used),
            401,
            "invalid_client",
        ),
        (
            "aud the token endpoint of another provider",
            cc(&signed(with(base(), json!({"aud": main.issuer_of(Some("other")) + "/token"})))),
            401,
            "invalid_client",
        ),
        (
            "a revocation with an expired assertion",
            asserted(
                Request::post("revoke").set("token", &tokens[1]),
                Some(&pk),
                &signed(with(base(), json!({"aud": main.url("revoke"), "iat": t - 600, "exp": t - 120}))),
            ),
            401,
            "invalid_client",
        ),
    ];
    let n = table.len();
    let replies = refusals(&main, table).await;
    assert!(n >= 35, "{n} rows");
    assert!(
        replies["replayed jti"].body["error_description"].as_str().unwrap().contains("jti"),
        "{}",
        replies["replayed jti"].body
    );
    assert!(replies["alg none"].body["error_description"].as_str().unwrap().contains("none"));
    // The client_secret client still authenticates with its secret; the refusals spent nothing.
    let r = main.send(&client_credentials().auth(Auth::basic(&secret_id, &secret_secret))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = main.send(&asserted(client_credentials(), Some(&pk_fed), &fed)).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// authlib's `PrivateKeyJWT` (one-hour assertions, a fresh jti each, aud the URL called) with
/// each key type, at token, introspect and revoke.
#[tokio::test(flavor = "multi_thread")]
async fn authlib_private_key_jwt_at_token_introspect_and_revoke() {
    let f = Fixture::start(false).await;
    let main = f.oauth(false);
    let pk = f.client_id("pk");
    let ca = f.state.join("tls/ca.crt").display().to_string();
    let authlib = |alg: &str, call: &str, url: String, token: Option<&str>| {
        py(json!({
            "op": "authlib", "url": url, "ca": ca, "client_id": pk, "key": f.keys.private(alg),
            "alg": alg, "call": call, "token": token,
        }))
    };
    for alg in ["RS256", "ES256", "EdDSA"] {
        let r = authlib(alg, "client_credentials", main.url("token"), None);
        assert_eq!(r["status"], 200, "{alg}: {r}");
        let at = r["body"]["access_token"].as_str().unwrap().to_owned();
        let r = authlib(alg, "introspect", main.url("introspect"), Some(&at));
        assert_eq!((&r["status"], &r["body"]["active"]), (&json!(200), &json!(true)), "{alg}: {r}");
        let r = authlib(alg, "revoke", main.url("revoke"), Some(&at));
        assert_eq!(r["status"], 200, "{alg}: {r}");
        let r = authlib(alg, "introspect", main.url("introspect"), Some(&at));
        assert_eq!(r["body"], json!({"active": false}), "{alg}: revoked");
    }
}

/// Two replicas on one Redis: an assertion spent at one is refused at the other.
#[tokio::test(flavor = "multi_thread")]
async fn a_jti_spent_at_one_replica_is_refused_at_the_other() {
    let f = Fixture::start(true).await;
    let (a, b) = (f.oauth(false), f.oauth(true));
    let pk = f.client_id("pk");
    // Standalone replicas listen on their own ports, so each has its own issuer URL: the
    // assertion names both token endpoints.
    let key = f.keys.private("ES256");
    let aud = json!([a.url("token"), b.url("token")]);
    let assertion = sign(key, "ES256", &with(claims(&pk, ""), json!({"aud": aud})), json!({"kid": "es"}));
    let r = a.send(&asserted(client_credentials(), Some(&pk), &assertion)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = b.send(&asserted(client_credentials(), Some(&pk), &assertion)).await;
    assert_eq!((r.status, r.error()), (401, Some("invalid_client")), "{}", r.body);
    assert!(r.body["error_description"].as_str().unwrap().contains("jti"), "{}", r.body);
    // A fresh one works at either.
    let r = b.send(&asserted(client_credentials(), Some(&pk), &f.assertion("EdDSA", &b.issuer()))).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A client publishing its keys at `jwksUri`: fetched under the issuers' fetch rules (a
/// metadata address is refused before connecting, and the client says so in its status),
/// and fetched again when an assertion names a kid they lack (the client rotated).
#[tokio::test(flavor = "multi_thread")]
async fn a_client_publishing_its_keys_at_a_jwks_uri() {
    let f = Fixture::start(false).await;
    let main = f.oauth(false);
    let id = f.client_id("pk-uri");
    let refused =
        f.a.wait_for_line(
            |l| l.contains("OidcClient") && l.contains("pk-metadata") && l.contains("JwksUriFailed"),
            std::time::Duration::from_secs(15),
        )
        .await;
    let line = refused.unwrap_or_else(|| panic!("pk-metadata never refused:\n{}", f.a.output()));
    assert!(line.contains("spec.jwksUri") && line.contains("169.254.169.254"), "{line}");
    // Served, but with no keys ever fetched: the token endpoint cannot authenticate it now.
    let never = f.assertion_of("pk-metadata", "ES256", &main.url("token"));
    let r = main.send(&asserted(client_credentials(), Some(&f.client_id("pk-metadata")), &never)).await;
    assert_eq!((r.status, r.error()), (503, Some("temporarily_unavailable")), "{}", r.body);

    let r = main
        .send(&asserted(client_credentials(), Some(&id), &f.assertion_of("pk-uri", "ES256", &main.url("token"))))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A key not published: refused.
    let rs = f.assertion_of("pk-uri", "RS256", &main.url("token"));
    let r = main.send(&asserted(client_credentials(), Some(&id), &rs)).await;
    assert_eq!((r.status, r.error()), (401, Some("invalid_client")), "{}", r.body);
    // Published: the unknown kid makes the operator fetch again (at most once per
    // --issuer-refetch-interval), and the client's new key works.
    f.jwks.publish(&[&f.keys.0["ES256"]["public"], &f.keys.0["RS256"]["public"]]);
    let m = main.clone();
    let (f2, id2) = (&f, id.clone());
    common::eventually(10, "the rotated key to be fetched", async || {
        let a = f2.assertion_of("pk-uri", "RS256", &m.url("token"));
        m.send(&asserted(client_credentials(), Some(&id2), &a)).await.status == 200
    })
    .await;

    // The jwksUri goes down (404): an assertion naming a kid it never published makes the
    // operator fetch again, which fails, and the status says so; the keys fetched before
    // still authenticate the client (they are younger than --issuer-keys-max-age).
    std::fs::remove_file(f.jwks.dir.join("jwks.json")).unwrap();
    let failed = |l: &str| l.contains("OidcClient") && l.contains("pk-uri") && l.contains("JwksUriFailed");
    common::eventually(15, "pk-uri's failed fetch to reach its status", async || {
        let eddsa = f2.assertion_of("pk-uri", "EdDSA", &m.url("token"));
        let r = m.send(&asserted(client_credentials(), Some(&id2), &eddsa)).await;
        assert_eq!((r.status, r.error()), (401, Some("invalid_client")), "{}", r.body);
        f2.a.output().lines().any(failed)
    })
    .await;
    let r = main
        .send(&asserted(client_credentials(), Some(&id), &f.assertion_of("pk-uri", "ES256", &main.url("token"))))
        .await;
    assert_eq!(r.status, 200, "a jwksUri down for a moment locked the client out: {}", r.body);
}

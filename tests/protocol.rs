//! The whole workload-identity flow against the real `oidc-operator standalone` process:
//! login with an external JWT (the tests' own issuer) -> authorize -> token -> userinfo, with
//! the `openidconnect` crate as the relying party (discovery, PKCE, ID token verification).

// Test helpers outside #[test] functions stop the test on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::{ExternalIssuer, Server, identity, login_token, verify_with_jwcrypto, write_manifest};
use oidc_operator::keys::SigningAlgorithm;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata};
use openidconnect::{
    AccessTokenHash, AuthType, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use serde_json::{Value, json};

const ENTITY: &str = "5d0c0ffe-0000-4000-8000-000000000001";
const SHORT_LIVED: &str = "5d0c0ffe-0000-4000-8000-000000000002";
const REDIRECT: &str = "https://app.example/callback";

fn core_alg(alg: SigningAlgorithm) -> CoreJwsSigningAlgorithm {
    match alg {
        SigningAlgorithm::RS256 => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        SigningAlgorithm::RS384 => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
        SigningAlgorithm::RS512 => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
        SigningAlgorithm::ES256 => CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        SigningAlgorithm::ES384 => CoreJwsSigningAlgorithm::EcdsaP384Sha384,
        SigningAlgorithm::ES512 => CoreJwsSigningAlgorithm::EcdsaP521Sha512,
        SigningAlgorithm::EdDSA => CoreJwsSigningAlgorithm::EdDsa,
    }
}

/// Per algorithm: a key, three clients (basic, post, public) and a provider; plus scopes, an
/// assignment by group, and the identity.
fn manifests(issuer: &ExternalIssuer) -> String {
    let mut out = identity(
        "runner",
        ENTITY,
        issuer,
        "  groups: [platform]\n  metadata: {team: payments}\n  boundClaims: {team: \"payments\"}\n",
    );
    out.push_str(&identity(
        "shorty",
        SHORT_LIVED,
        issuer,
        "  groups: [platform]\n  accessTokenTTL: 1\n  accessTokenMaxTTL: 1\n",
    ));
    out.push_str(concat!(
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {name: groups}\n",
        "spec: {template: '{\"groups\": {{identity.entity.groups.names}}}'}\n---\n",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {name: team}\n",
        "spec: {template: '{\"team\": {{identity.entity.metadata.team}}, \"k8s_ns\": {{identity.entity.aliases.k8s.metadata.namespace}}}'}\n---\n",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {name: clash}\n",
        "spec: {template: '{\"groups\": []}'}\n---\n",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {name: strict}\n",
        "spec: {missingValues: error, template: '{\"zone\": {{identity.entity.metadata.zone}}}'}\n---\n",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcAssignment\nmetadata: {name: platform}\nspec: {groups: [platform]}\n---\n",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcAssignment\nmetadata: {name: nobody}\nspec: {entities: [someone-else]}\n---\n",
    ));
    for alg in SigningAlgorithm::ALL {
        let n = alg.as_str().to_lowercase();
        out.push_str(&format!(
            "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcKey\nmetadata: {{name: key-{n}}}\nspec: {{algorithm: {alg}, allowedClients: [\"*\"]}}\n---\n"
        ));
        for (kind, ty) in [("basic", "confidential"), ("post", "confidential"), ("public", "public")] {
            out.push_str(&format!(
                "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {{name: {kind}-{n}}}\nspec: {{clientType: {ty}, key: key-{n}, redirectUris: [\"{REDIRECT}\", \"http://127.0.0.1/cb\"], assignments: [platform], idTokenTTL: 30m, accessTokenTTL: 10m}}\n---\n"
            ));
        }
        out.push_str(&format!(
            "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {{name: prov-{n}}}\nspec: {{allowedClients: [basic-{n}, post-{n}, public-{n}], scopesSupported: [groups, team, clash]}}\n---\n"
        ));
    }
    // For negative cases: a client no provider allows, one with nobody assigned.
    out.push_str(&format!(
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {{name: stranger}}\nspec: {{redirectUris: [\"{REDIRECT}\"], assignments: [allow_all]}}\n---\n\
         apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {{name: unassigned}}\nspec: {{redirectUris: [\"{REDIRECT}\"], assignments: [nobody]}}\n---\n\
         apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {{name: neg}}\nspec: {{allowedClients: [basic-rs256, public-rs256, unassigned], scopesSupported: [groups, clash, strict]}}\n---\n\
         apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {{name: legacy}}\nspec: {{allowedClients: [public-rs256], pkceMethods: [S256, plain]}}\n"
    ));
    out
}

struct Setup {
    _tmp: tempfile::TempDir,
    issuer: ExternalIssuer,
    server: Server,
    http: reqwest::Client,
    state: std::path::PathBuf,
}

async fn setup() -> Setup {
    setup_with(&[]).await
}

async fn setup_with(extra: &[&str]) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let (m, state) = (tmp.path().join("m"), tmp.path().join("state"));
    std::fs::create_dir(&m).unwrap();
    let issuer = ExternalIssuer::start(tmp.path()).await;
    write_manifest(&m, "all.yaml", &manifests(&issuer));
    let args: Vec<&str> =
        ["--allow-insecure-issuers", "--issuer-refetch-interval", "1"].iter().chain(extra).copied().collect();
    let server = Server::start(&m, &state, &args).await;
    server.wait_identity_ready("runner").await;
    let ca = std::fs::read(state.join("tls/ca.crt")).unwrap();
    // No redirects: an OpenID relying party must not follow them at the token endpoint.
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Setup { _tmp: tmp, issuer, server, http, state }
}

fn credentials(state: &std::path::Path, client: &str) -> (String, Option<String>) {
    let v: Value =
        serde_json::from_slice(&std::fs::read(state.join(format!("clients/default/{client}.json"))).unwrap()).unwrap();
    (v["client_id"].as_str().unwrap().to_owned(), v["client_secret"].as_str().map(str::to_owned))
}

async fn identity_token(s: &Setup) -> String {
    let jwt = s.issuer.mint("ES256", json!({"team": "payments", "kubernetes.io": {"namespace": "ci"}}), None).await;
    login_token(&s.server, ENTITY, &jwt).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_relying_party_completes_the_flow_for_every_algorithm_and_client_kind() {
    let s = setup().await;
    let identity = identity_token(&s).await;
    for alg in SigningAlgorithm::ALL {
        let n = alg.as_str().to_lowercase();
        let issuer = s.server.issuer("default", &format!("prov-{n}"));
        let metadata = CoreProviderMetadata::discover_async(IssuerUrl::new(issuer.clone()).unwrap(), &s.http)
            .await
            .unwrap_or_else(|e| panic!("{alg}: discovery failed: {e:?}"));
        for kind in ["basic", "post", "public"] {
            let (client_id, secret) = credentials(&s.state, &format!("{kind}-{n}"));
            let client = CoreClient::from_provider_metadata(
                metadata.clone(),
                ClientId::new(client_id.clone()),
                secret.map(ClientSecret::new),
            )
            .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap())
            .set_auth_type(if kind == "post" { AuthType::RequestBody } else { AuthType::BasicAuth });
            let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
            let (url, csrf, nonce) = client
                .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
                .add_scope(Scope::new("groups".into()))
                .add_scope(Scope::new("team".into()))
                .add_scope(Scope::new("not-supported".into()))
                .set_pkce_challenge(challenge)
                .url();
            // The identity calls authorize with its access token and gets {code, state}.
            let resp = s.http.get(url).bearer_auth(&identity).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{alg} {kind}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["state"], csrf.secret().as_str());
            let code = body["code"].as_str().unwrap().to_owned();

            let token = client
                .exchange_code(AuthorizationCode::new(code))
                .unwrap()
                .set_pkce_verifier(verifier)
                .request_async(&s.http)
                .await
                .unwrap_or_else(|e| panic!("{alg} {kind}: code exchange failed: {e:?}"));
            let id_token = token.id_token().expect("an ID token");
            let id_verifier = client.id_token_verifier().set_allowed_algs(vec![core_alg(alg)]);
            let claims = if alg == SigningAlgorithm::ES512 {
                // openidconnect cannot verify ES512 signatures: it checks everything else, and
                // jwcrypto checks the signature against the provider's JWKS.
                let jwks = s.server.jwks("default", &format!("prov-{n}")).await;
                let report = verify_with_jwcrypto(&jwks, &[id_token.to_string()]);
                assert_eq!(report["tokens"][0]["valid"], true, "{report}");
                id_token.claims(&id_verifier.clone().insecure_disable_signature_check(), &nonce).unwrap().clone()
            } else {
                id_token.claims(&id_verifier, &nonce).unwrap_or_else(|e| panic!("{alg} {kind}: {e:?}")).clone()
            };
            assert_eq!(claims.subject().as_str(), ENTITY);
            assert_eq!(claims.issuer().as_str(), issuer);
            assert_eq!(claims.audiences()[0].as_str(), client_id);
            // at_hash binds the access token to the ID token.
            let header_alg = id_token.signing_alg().unwrap();
            assert_eq!(*header_alg, core_alg(alg));
            let expected_at_hash = claims.access_token_hash().expect("at_hash");
            if alg != SigningAlgorithm::ES512 {
                let key = id_token.signing_key(&id_verifier).unwrap();
                let at = AccessTokenHash::from_token(token.access_token(), header_alg, key).unwrap();
                assert_eq!(&at, expected_at_hash, "{alg}");
            }
            // Scope claims in the ID token and at userinfo.
            let raw: Value = {
                let payload = id_token.to_string().split('.').nth(1).unwrap().to_owned();
                use base64::Engine;
                serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap())
                    .unwrap()
            };
            assert_eq!(raw["groups"], json!(["platform"]));
            assert_eq!(raw["team"], "payments");
            assert_eq!(raw["k8s_ns"], "ci");
            assert!(raw["c_hash"].is_string() && raw.get("auth_time").is_none());
            let info: Value = s
                .http
                .get(format!("{issuer}/userinfo"))
                .bearer_auth(token.access_token().secret())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(
                info,
                json!({"sub": ENTITY, "groups": ["platform"], "team": "payments", "k8s_ns": "ci"}),
                "{alg} {kind}"
            );
        }
    }
}

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

async fn authorize(s: &Setup, provider: &str, token: Option<&str>, params: &[(&str, &str)]) -> (u16, Value) {
    let mut req = s.http.get(format!("{}/authorize", s.server.issuer("default", provider))).query(params);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

async fn token_req(
    s: &Setup,
    provider: &str,
    basic: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = s.http.post(format!("{}/token", s.server.issuer("default", provider))).form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let resp = req.send().await.unwrap();
    let headers = resp.headers().clone();
    (resp.status().as_u16(), headers, resp.json().await.unwrap_or(Value::Null))
}

/// Asserts the exact status and RFC error code of a failed request; counts it.
fn refused(count: &mut usize, what: &str, got: (u16, &Value), status: u16, error: &str) {
    assert_eq!((got.0, got.1["error"].as_str()), (status, Some(error)), "{what}: {}", got.1);
    assert!(got.1["error_description"].is_string(), "{what}");
    *count += 1;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_protocol_request_gets_its_rfc_error() {
    let s = setup_with(&["--code-ttl", "2"]).await;
    let mut n = 0usize;
    let token = identity_token(&s).await;
    let (basic_id, basic_secret) = credentials(&s.state, "basic-rs256");
    let (basic_id, basic_secret) = (basic_id.as_str(), basic_secret.unwrap());
    let (public_id, _) = credentials(&s.state, "public-rs256");
    let (stranger_id, _) = credentials(&s.state, "stranger");
    let (unassigned_id, _) = credentials(&s.state, "unassigned");
    let base = |client: &str| -> Vec<(String, String)> {
        [
            ("response_type", "code"),
            ("client_id", client),
            ("redirect_uri", REDIRECT),
            ("scope", "openid groups"),
            ("state", "s1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let with = |mut p: Vec<(String, String)>, k: &str, v: Option<&str>| {
        p.retain(|(key, _)| key != k);
        if let Some(v) = v {
            p.push((k.to_owned(), v.to_owned()));
        }
        p
    };
    let q = |p: &Vec<(String, String)>| -> Vec<(String, String)> { p.clone() };
    async fn az(s: &Setup, provider: &str, token: Option<&str>, p: &[(String, String)]) -> (u16, Value) {
        let pairs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        authorize(s, provider, token, &pairs).await
    }

    // --- authorize ---
    let good = base(basic_id);
    let (st, b) = az(&s, "neg", Some(&token), &good).await;
    assert_eq!((st, b["state"].as_str()), (200, Some("s1")), "{b}");
    let r = az(&s, "neg", None, &good).await;
    refused(&mut n, "no identity token", (r.0, &r.1), 401, "invalid_token");
    let r = az(&s, "neg", Some("not-a-token"), &good).await;
    refused(&mut n, "unknown identity token", (r.0, &r.1), 401, "invalid_token");
    let revoked = identity_token(&s).await;
    s.http
        .post(format!("{}/api/v1/auth/token/revoke", s.server.api))
        .json(&json!({"accessToken": revoked}))
        .send()
        .await
        .unwrap();
    let r = az(&s, "neg", Some(&revoked), &good).await;
    refused(&mut n, "revoked identity token", (r.0, &r.1), 401, "invalid_token");
    let short_jwt = s.issuer.mint("RS256", json!({}), None).await;
    let short = login_token(&s.server, SHORT_LIVED, &short_jwt).await;
    let r = az(&s, "neg", Some(&token), &with(q(&good), "client_id", Some("no-such-client"))).await;
    refused(&mut n, "unknown client", (r.0, &r.1), 400, "invalid_request");
    let r = az(&s, "neg", Some(&token), &base(&stranger_id)).await;
    refused(&mut n, "client not allowed by the provider", (r.0, &r.1), 400, "unauthorized_client");
    let r = az(&s, "neg", Some(&token), &base(&unassigned_id)).await;
    refused(&mut n, "entity not assigned", (r.0, &r.1), 403, "access_denied");
    let r =
        az(&s, "neg", Some(&token), &with(q(&good), "redirect_uri", Some("https://app.example/callback/evil"))).await;
    refused(&mut n, "redirect_uri mismatch", (r.0, &r.1), 400, "invalid_request");
    assert!(r.1.get("code").is_none());
    let r = az(&s, "neg", Some(&token), &with(q(&good), "redirect_uri", None)).await;
    refused(&mut n, "missing redirect_uri", (r.0, &r.1), 400, "invalid_request");
    let r = az(&s, "neg", Some(&token), &with(q(&good), "scope", Some("groups"))).await;
    refused(&mut n, "missing openid", (r.0, &r.1), 400, "invalid_scope");
    let r = az(&s, "neg", Some(&token), &with(q(&good), "response_type", Some("token"))).await;
    refused(&mut n, "unsupported response_type", (r.0, &r.1), 400, "unsupported_response_type");
    let r = az(&s, "neg", Some(&token), &with(q(&good), "request", Some("eyJhbGciOiJub25lIn0.e30."))).await;
    refused(&mut n, "request parameter", (r.0, &r.1), 400, "request_not_supported");
    let r = az(&s, "neg", Some(&token), &with(q(&good), "request_uri", Some("https://x/r"))).await;
    refused(&mut n, "request_uri parameter", (r.0, &r.1), 400, "request_uri_not_supported");
    let r = az(&s, "neg", Some(&token), &base(&public_id)).await;
    refused(&mut n, "public client without PKCE", (r.0, &r.1), 400, "invalid_request");
    let short_challenge = with(with(q(&good), "code_challenge", Some("abc")), "code_challenge_method", Some("S256"));
    let r = az(&s, "neg", Some(&token), &short_challenge).await;
    refused(&mut n, "short challenge", (r.0, &r.1), 400, "invalid_request");
    let bad_method = with(with(q(&good), "code_challenge", Some(CHALLENGE)), "code_challenge_method", Some("S512"));
    let r = az(&s, "neg", Some(&token), &bad_method).await;
    refused(&mut n, "unknown challenge method", (r.0, &r.1), 400, "invalid_request");
    let r = az(&s, "neg", Some(&token), &with(q(&good), "scope", Some("openid groups clash"))).await;
    refused(&mut n, "conflicting scope claims", (r.0, &r.1), 400, "invalid_request");
    let mut repeated = q(&good);
    repeated.push(("scope".into(), "openid".into()));
    let r = az(&s, "neg", Some(&token), &repeated).await;
    refused(&mut n, "repeated parameter", (r.0, &r.1), 400, "invalid_request");
    let r = az(&s, "no-such-provider", Some(&token), &good).await;
    refused(&mut n, "unknown provider", (r.0, &r.1), 404, "not_found");
    // POST works with a form and, as OpenBao's JSON API, with a JSON object.
    let authorize_url = format!("{}/authorize", s.server.issuer("default", "neg"));
    let resp = s.http.post(&authorize_url).bearer_auth(&token).form(&good).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let as_json: serde_json::Map<String, Value> =
        good.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let resp = s.http.post(&authorize_url).bearer_auth(&token).json(&as_json).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = s
        .http
        .post(&authorize_url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"client_id\": ")
        .send()
        .await
        .unwrap();
    let st = resp.status().as_u16();
    refused(&mut n, "malformed authorize body", (st, &resp.json().await.unwrap()), 400, "invalid_request");
    let resp = s
        .http
        .post(&authorize_url)
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    let st = resp.status().as_u16();
    refused(&mut n, "authorize body of another type", (st, &resp.json().await.unwrap()), 400, "invalid_request");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = az(&s, "neg", Some(&short), &good).await;
    refused(&mut n, "expired identity token", (r.0, &r.1), 401, "invalid_token");
    let r = az(&s, "neg", Some(&token), &with(q(&good), "max_age", Some("1"))).await;
    refused(&mut n, "max_age exceeded", (r.0, &r.1), 400, "login_required");
    // Every authorize error brings the request's state back (RFC 6749 §4.1.2.1).
    assert_eq!(r.1["state"], "s1", "{}", r.1);
    let r = az(&s, "neg", Some(&token), &base(&unassigned_id)).await;
    assert_eq!((r.0, r.1["state"].as_str()), (403, Some("s1")), "{}", r.1);
    let r = az(&s, "neg", None, &good).await;
    assert_eq!(r.1["state"], "s1", "{}", r.1);
    // A parameter without a value is omitted (RFC 6749 §3.1).
    let (st, b) = az(&s, "neg", Some(&token), &with(with(q(&good), "max_age", Some("")), "nonce", Some(""))).await;
    assert_eq!(st, 200, "empty max_age and nonce: {b}");
    // prompt (OpenID Connect Core §3.1.2.1): none holds (nothing here is interactive);
    // login cannot be honoured; none with another value is malformed.
    let (st, b) = az(&s, "neg", Some(&token), &with(q(&good), "prompt", Some("none"))).await;
    assert_eq!(st, 200, "prompt=none: {b}");
    let r = az(&s, "neg", Some(&token), &with(q(&good), "prompt", Some("login"))).await;
    refused(&mut n, "prompt=login", (r.0, &r.1), 400, "login_required");
    let r = az(&s, "neg", Some(&token), &with(q(&good), "prompt", Some("none consent"))).await;
    refused(&mut n, "prompt=none with another value", (r.0, &r.1), 400, "invalid_request");

    // --- token ---
    let code_for = |client: String, pkce: bool| {
        let s = &s;
        let token = token.clone();
        async move {
            let mut p = base(&client);
            if pkce {
                p.push(("code_challenge".into(), CHALLENGE.into()));
                p.push(("code_challenge_method".into(), "S256".into()));
            }
            let (st, b) = az(s, "neg", Some(&token), &p).await;
            assert_eq!(st, 200, "{b}");
            b["code"].as_str().unwrap().to_owned()
        }
    };
    let exchange = |code: String| {
        vec![("grant_type", "authorization_code".to_owned()), ("code", code), ("redirect_uri", REDIRECT.to_owned())]
    };
    async fn tk(
        s: &Setup,
        basic: Option<(&str, &str)>,
        f: &[(&str, String)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        token_req(s, "neg", basic, &pairs).await
    }

    // Replay: the second exchange fails and revokes the access token of the first.
    let code = code_for(basic_id.to_owned(), false).await;
    let (st, _, first) = tk(&s, Some((basic_id, &basic_secret)), &exchange(code.clone())).await;
    assert_eq!(st, 200, "{first}");
    let userinfo = format!("{}/userinfo", s.server.issuer("default", "neg"));
    let at = first["access_token"].as_str().unwrap().to_owned();
    assert_eq!(s.http.get(&userinfo).bearer_auth(&at).send().await.unwrap().status(), 200);
    let (st, _, b) = tk(&s, Some((basic_id, &basic_secret)), &exchange(code)).await;
    refused(&mut n, "code replay", (st, &b), 400, "invalid_grant");
    let resp = s.http.get(&userinfo).bearer_auth(&at).send().await.unwrap();
    assert_eq!(resp.status(), 401, "the replay revoked the first access token");

    let code = code_for(basic_id.to_owned(), false).await;
    // Without redirect_uri: invalid_request, and the code is not spent by it.
    let (st, _, b) = tk(&s, Some((basic_id, &basic_secret)), &exchange(code.clone())[..2]).await;
    refused(&mut n, "no redirect_uri at token", (st, &b), 400, "invalid_request");
    let (st, _, b) = tk(&s, Some((basic_id, &basic_secret)), &exchange(code)).await;
    assert_eq!(st, 200, "the code survived the request without redirect_uri: {b}");
    let code = code_for(basic_id.to_owned(), false).await;
    let mut f = exchange(code);
    f[2].1 = "https://app.example/other".into();
    let (st, _, b) = tk(&s, Some((basic_id, &basic_secret)), &f).await;
    refused(&mut n, "redirect_uri mismatch at token", (st, &b), 400, "invalid_grant");

    let code = code_for(basic_id.to_owned(), true).await;
    let mut f = exchange(code);
    f.push(("code_verifier", VERIFIER.replace('d', "e")));
    let (st, _, b) = tk(&s, Some((basic_id, &basic_secret)), &f).await;
    refused(&mut n, "wrong verifier", (st, &b), 400, "invalid_grant");

    let code = code_for(basic_id.to_owned(), true).await;
    let (st, _, b) = tk(&s, Some((basic_id, &basic_secret)), &exchange(code)).await;
    refused(&mut n, "missing verifier", (st, &b), 400, "invalid_grant");

    let code = code_for(basic_id.to_owned(), false).await;
    let mut f = exchange(code);
    f.push(("code_verifier", VERIFIER.to_owned()));
    let (st, _, b) = tk(&s, Some((basic_id, &basic_secret)), &f).await;
    refused(&mut n, "verifier without challenge", (st, &b), 400, "invalid_grant");

    let code = code_for(basic_id.to_owned(), false).await;
    let (st, headers, b) = tk(&s, Some((basic_id, "oidcop_secret_wrong")), &exchange(code.clone())).await;
    refused(&mut n, "wrong secret", (st, &b), 401, "invalid_client");
    assert!(headers["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    let mut f = exchange(code.clone());
    f.push(("client_id", basic_id.to_owned()));
    f.push(("client_secret", basic_secret.clone()));
    let (st, _, b) = tk(&s, Some((basic_id, &basic_secret)), &f).await;
    refused(&mut n, "two client authentication methods", (st, &b), 400, "invalid_request");
    let mut f = exchange(code.clone());
    f.push(("client_id", basic_id.to_owned()));
    let (st, _, b) = tk(&s, None, &f).await;
    refused(&mut n, "confidential client without secret", (st, &b), 401, "invalid_client");
    let (st, _, b) = tk(&s, Some(("no-such-client", "x")), &exchange(code.clone())).await;
    refused(&mut n, "unknown client at token", (st, &b), 401, "invalid_client");

    let public_code = code_for(public_id.clone(), true).await;
    let mut f = exchange(public_code.clone());
    f.push(("code_verifier", VERIFIER.to_owned()));
    let (st, _, b) = tk(&s, Some((&public_id, "some-secret")), &f).await;
    refused(&mut n, "secret for a public client", (st, &b), 401, "invalid_client");
    let (st, _, b) = tk(&s, Some((basic_id, &basic_secret)), &f).await;
    refused(&mut n, "code of another client", (st, &b), 400, "invalid_grant");

    let mut f = exchange(code_for(basic_id.to_owned(), false).await);
    f[0].1 = "password".into();
    let (st, _, b) = tk(&s, Some((basic_id, &basic_secret)), &f).await;
    refused(&mut n, "unsupported grant_type", (st, &b), 400, "unsupported_grant_type");
    let (st, _, b) = tk(&s, Some((basic_id, &basic_secret)), &[("grant_type", "authorization_code".into())]).await;
    refused(&mut n, "missing code", (st, &b), 400, "invalid_request");
    let (st, _, b) = tk(&s, Some((basic_id, &basic_secret)), &exchange("never-issued".into())).await;
    refused(&mut n, "unknown code", (st, &b), 400, "invalid_grant");

    // A code from another provider (the client is allowed by both).
    let p = base(basic_id);
    let (_, other) = az(&s, "prov-rs256", Some(&token), &p).await;
    let (st, _, b) =
        tk(&s, Some((basic_id, &basic_secret)), &exchange(other["code"].as_str().unwrap().to_owned())).await;
    refused(&mut n, "code of another provider", (st, &b), 400, "invalid_grant");

    // Expired code (this server's codes live 2 s).
    let code = code_for(basic_id.to_owned(), false).await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (st, _, b) = tk(&s, Some((basic_id, &basic_secret)), &exchange(code)).await;
    refused(&mut n, "expired code", (st, &b), 400, "invalid_grant");

    // Bodies and methods.
    let token_url = format!("{}/token", s.server.issuer("default", "neg"));
    let resp = s
        .http
        .post(&token_url)
        .basic_auth(basic_id, Some(&basic_secret))
        .json(&json!({"grant_type": "authorization_code"}))
        .send()
        .await
        .unwrap();
    refused(&mut n, "malformed form", (resp.status().as_u16(), &resp.json().await.unwrap()), 400, "invalid_request");
    let big = format!("grant_type=authorization_code&code={}", "x".repeat(100_000));
    let resp = s
        .http
        .post(&token_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big)
        .send()
        .await
        .unwrap();
    refused(&mut n, "oversized body", (resp.status().as_u16(), &resp.json().await.unwrap()), 413, "invalid_request");
    let resp = s.http.get(&token_url).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");

    // --- userinfo ---
    let resp = s.http.get(&userinfo).bearer_auth("garbage").send().await.unwrap();
    assert_eq!(resp.headers()["www-authenticate"], "Bearer error=\"invalid_token\"");
    refused(
        &mut n,
        "bad token at userinfo",
        (resp.status().as_u16(), &resp.json().await.unwrap()),
        401,
        "invalid_token",
    );
    let resp = s.http.get(&userinfo).send().await.unwrap();
    // No credentials at all: a challenge with no error code (RFC 6750 §3.1).
    assert_eq!(resp.headers()["www-authenticate"], "Bearer realm=\"oidc-operator\"");
    refused(
        &mut n,
        "no token at userinfo",
        (resp.status().as_u16(), &resp.json().await.unwrap()),
        401,
        "invalid_token",
    );
    let code = code_for(basic_id.to_owned(), false).await;
    let (_, _, fresh) = tk(&s, Some((basic_id, &basic_secret)), &exchange(code)).await;
    let at = fresh["access_token"].as_str().unwrap().to_owned();
    let resp = s.http.post(&userinfo).form(&[("access_token", at.as_str())]).send().await.unwrap();
    assert_eq!(resp.status(), 200, "RFC 6750 form body");
    let resp = s.http.post(&userinfo).bearer_auth(&at).form(&[("access_token", at.as_str())]).send().await.unwrap();
    assert_eq!(resp.headers()["www-authenticate"], "Bearer error=\"invalid_request\"", "RFC 6750 §3");
    refused(
        &mut n,
        "token sent twice at userinfo",
        (resp.status().as_u16(), &resp.json().await.unwrap()),
        400,
        "invalid_request",
    );
    let resp = s
        .http
        .get(format!("{}/userinfo", s.server.issuer("default", "prov-rs256")))
        .bearer_auth(&at)
        .send()
        .await
        .unwrap();
    refused(
        &mut n,
        "userinfo token of another provider",
        (resp.status().as_u16(), &resp.json().await.unwrap()),
        401,
        "invalid_token",
    );

    assert!(n >= 30, "{n} negative cases");
    println!("{n} negative protocol cases checked");
}

/// Issue 20, item 7: a code survives a wrong proof (another redirect_uri, a wrong or missing
/// verifier) for its owner; PKCE is S256 unless a provider opts into plain, and discovery
/// says exactly that; stored request values are bounded; a userinfo token dies with its
/// client's place in the provider.
#[tokio::test(flavor = "multi_thread")]
async fn codes_survive_wrong_proofs_pkce_is_s256_and_tokens_die_with_their_client() {
    let s = setup().await;
    let token = identity_token(&s).await;
    let (public_id, _) = credentials(&s.state, "public-rs256");
    let (basic_id, basic_secret) = credentials(&s.state, "basic-rs256");
    let basic_secret = basic_secret.unwrap();
    let authorize_with = |client: String, extra: Vec<(&'static str, String)>| {
        let (s, token) = (&s, token.clone());
        async move {
            let mut p: Vec<(&str, String)> = vec![
                ("response_type", "code".into()),
                ("client_id", client),
                ("redirect_uri", REDIRECT.into()),
                ("scope", "openid groups".into()),
            ];
            // A parameter given in `extra` replaces the default.
            p.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
            p.extend(extra);
            let pairs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
            authorize(s, "neg", Some(&token), &pairs).await
        }
    };

    // A stolen public client's code sent with a wrong verifier, with none, or to another
    // redirect_uri: refused, and the owner still redeems it.
    let (st, b) = authorize_with(
        public_id.clone(),
        vec![("code_challenge", CHALLENGE.into()), ("code_challenge_method", "S256".into())],
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let code = b["code"].as_str().unwrap().to_owned();
    let exchange = |verifier: Option<&str>, redirect: &str| {
        let mut f = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.clone()),
            ("redirect_uri", redirect.to_owned()),
            ("client_id", public_id.clone()),
        ];
        if let Some(v) = verifier {
            f.push(("code_verifier", v.to_owned()));
        }
        f
    };
    for (what, form) in [
        ("wrong verifier", exchange(Some(&VERIFIER.replace('d', "e")), REDIRECT)),
        ("no verifier", exchange(None, REDIRECT)),
        ("other redirect_uri", exchange(Some(VERIFIER), "https://app.example/other")),
    ] {
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (st, _, b) = token_req(&s, "neg", None, &pairs).await;
        assert_eq!((st, b["error"].as_str()), (400, Some("invalid_grant")), "{what}: {b}");
    }
    let pairs: Vec<(String, String)> =
        exchange(Some(VERIFIER), REDIRECT).into_iter().map(|(k, v)| (k.into(), v)).collect();
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (st, _, b) = token_req(&s, "neg", None, &pairs).await;
    assert_eq!(st, 200, "the owner redeems the code after the failed attempts: {b}");

    // S256 is the default: a challenge without a method is S256, plain is refused, and
    // discovery advertises S256 alone.
    let (st, b) = authorize_with(public_id.clone(), vec![("code_challenge", CHALLENGE.into())]).await;
    assert_eq!(st, 200, "{b}");
    let code = b["code"].as_str().unwrap().to_owned();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", public_id.as_str()),
        ("code_verifier", VERIFIER),
    ];
    let (st, _, b) = token_req(&s, "neg", None, &form).await;
    assert_eq!(st, 200, "a challenge without a method is S256: {b}");
    let plain = vec![("code_challenge", VERIFIER.to_owned()), ("code_challenge_method", "plain".to_owned())];
    let (st, b) = authorize_with(public_id.clone(), plain).await;
    assert_eq!((st, b["error"].as_str()), (400, Some("invalid_request")), "{b}");
    assert!(b["error_description"].as_str().unwrap().contains("pkceMethods"), "{b}");
    let (_, _, discovery) =
        s.server.get_json(&format!("{}/.well-known/openid-configuration", s.server.issuer("default", "neg"))).await;
    assert_eq!(discovery["code_challenge_methods_supported"], json!(["S256"]), "{discovery}");
    // claims_supported names what the provider's tokens carry: `namespace` and the claims
    // its scopes set (issue 21, item 7).
    let claims = discovery["claims_supported"].as_array().unwrap();
    for claim in ["sub", "namespace", "groups"] {
        assert!(claims.contains(&json!(claim)), "{claim} missing from {claims:?}");
    }

    // A provider that opts into plain: advertised, and a challenge without a method is plain
    // there (RFC 7636 §4.3).
    let legacy = s.server.issuer("default", "legacy");
    let (_, _, discovery) = s.server.get_json(&format!("{legacy}/.well-known/openid-configuration")).await;
    assert_eq!(discovery["code_challenge_methods_supported"], json!(["S256", "plain"]), "{discovery}");
    let params = [
        ("response_type", "code"),
        ("client_id", public_id.as_str()),
        ("redirect_uri", REDIRECT),
        ("scope", "openid"),
        ("code_challenge", VERIFIER),
    ];
    let (st, b) = authorize(&s, "legacy", Some(&token), &params).await;
    assert_eq!(st, 200, "{b}");
    let form = [
        ("grant_type", "authorization_code"),
        ("code", b["code"].as_str().unwrap()),
        ("redirect_uri", REDIRECT),
        ("client_id", public_id.as_str()),
        ("code_verifier", VERIFIER),
    ];
    let (st, _, b) = token_req(&s, "legacy", None, &form).await;
    assert_eq!(st, 200, "a plain challenge where plain is accepted: {b}");

    // Stored and echoed values are bounded: an oversized nonce or state is refused by name.
    for (name, len) in [("nonce", 1025), ("state", 2049)] {
        let (st, b) = authorize_with(basic_id.clone(), vec![(name, "n".repeat(len))]).await;
        assert_eq!((st, b["error"].as_str()), (400, Some("invalid_request")), "{name}: {b}");
        assert!(b["error_description"].as_str().unwrap().contains(name), "{b}");
    }
    let (st, b) = authorize_with(basic_id.clone(), vec![("nonce", "n".repeat(1024))]).await;
    assert_eq!(st, 200, "a nonce at the limit: {b}");

    // A scope that says a missing value is an error refuses an entity without it, by name
    // (issue 21, item 8); OpenBao would render "".
    let (st, b) = authorize_with(basic_id.clone(), vec![("scope", "openid strict".into())]).await;
    assert_eq!((st, b["error"].as_str()), (403, Some("access_denied")), "{b}");
    assert!(b["error_description"].as_str().unwrap().contains("identity.entity.metadata.zone"), "{b}");

    // A userinfo token stops once its client is no longer served by the provider.
    let (st, b) = authorize_with(basic_id.clone(), vec![]).await;
    assert_eq!(st, 200, "{b}");
    let form =
        [("grant_type", "authorization_code"), ("code", b["code"].as_str().unwrap()), ("redirect_uri", REDIRECT)];
    let (st, _, b) = token_req(&s, "neg", Some((&basic_id, &basic_secret)), &form).await;
    assert_eq!(st, 200, "{b}");
    let at = b["access_token"].as_str().unwrap().to_owned();
    let userinfo = format!("{}/userinfo", s.server.issuer("default", "neg"));
    assert_eq!(s.http.get(&userinfo).bearer_auth(&at).send().await.unwrap().status(), 200);
    let m = s._tmp.path().join("m");
    let narrowed = manifests(&s.issuer).replace(
        "allowedClients: [basic-rs256, public-rs256, unassigned]",
        "allowedClients: [public-rs256, unassigned]",
    );
    write_manifest(&m, "all.yaml", &narrowed);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st = s.http.get(&userinfo).bearer_auth(&at).send().await.unwrap().status().as_u16();
        if st == 401 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the removed client's userinfo token still answers {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

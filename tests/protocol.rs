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
    out.push_str(concat!(
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {name: groups}\n",
        "spec: {template: '{\"groups\": {{identity.entity.groups.names}}}'}\n---\n",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {name: team}\n",
        "spec: {template: '{\"team\": {{identity.entity.metadata.team}}, \"k8s_ns\": {{identity.entity.aliases.k8s.metadata.namespace}}}'}\n---\n",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {name: clash}\n",
        "spec: {template: '{\"groups\": []}'}\n---\n",
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
         apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {{name: neg}}\nspec: {{allowedClients: [basic-rs256, public-rs256, unassigned], scopesSupported: [groups, clash]}}\n"
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
    let tmp = tempfile::tempdir().unwrap();
    let (m, state) = (tmp.path().join("m"), tmp.path().join("state"));
    std::fs::create_dir(&m).unwrap();
    let issuer = ExternalIssuer::start(tmp.path()).await;
    write_manifest(&m, "all.yaml", &manifests(&issuer));
    let server = Server::start(&m, &state, &["--issuer-refetch-interval", "1"]).await;
    let ready = server
        .wait_for_line(
            |l| l.contains("IdentityOidcAuth") && l.contains("runner") && l.contains("True"),
            Duration::from_secs(15),
        )
        .await;
    assert!(ready.is_some(), "{}", server.output());
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

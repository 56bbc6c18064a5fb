//! The whole workload-identity flow against the real `oidc-operator standalone` process:
//! login with an external JWT (the tests' own issuer) -> authorize -> token -> userinfo, with
//! the `openidconnect` crate as the relying party (discovery, PKCE, ID token verification).
//! The negative cases of each endpoint are tables in `authorize_endpoint.rs`,
//! `token_endpoint.rs` and `userinfo_endpoint.rs`.

// Test helpers outside #[test] functions stop the test on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::oauth::{Auth, Request, oauth2_error};
use common::providers::{CHALLENGE, ENTITY, REDIRECT, Setup, VERIFIER, manifests};
use common::{eventually, verify_with_jwcrypto, write_manifest};
use oidc_operator::keys::SigningAlgorithm;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata};
use openidconnect::{
    AccessTokenHash, AuthType, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use serde_json::{Value, json};

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

#[tokio::test(flavor = "multi_thread")]
async fn a_real_relying_party_completes_the_flow_for_every_algorithm_and_client_kind() {
    let s = Setup::start().await;
    let identity = s.identity_token().await;
    for alg in SigningAlgorithm::ALL {
        let n = alg.as_str().to_lowercase();
        let issuer = s.server.issuer("default", &format!("prov-{n}"));
        let metadata = CoreProviderMetadata::discover_async(IssuerUrl::new(issuer.clone()).unwrap(), s.oauth.http())
            .await
            .unwrap_or_else(|e| panic!("{alg}: discovery failed: {e:?}"));
        for kind in ["basic", "post", "public"] {
            let (client_id, secret) = s.credentials(&format!("{kind}-{n}"));
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
            let resp = s.oauth.http().get(url).bearer_auth(&identity).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{alg} {kind}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["state"], csrf.secret().as_str());
            let code = body["code"].as_str().unwrap().to_owned();

            let token = client
                .exchange_code(AuthorizationCode::new(code))
                .unwrap()
                .set_pkce_verifier(verifier)
                .request_async(s.oauth.http())
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
            let info = s.oauth.provider(&format!("prov-{n}")).userinfo(token.access_token().secret()).await.body;
            assert_eq!(
                info,
                json!({"sub": ENTITY, "groups": ["platform"], "team": "payments", "k8s_ns": "ci"}),
                "{alg} {kind}"
            );
        }
    }
}

/// Issue 20, item 7: a code survives a wrong proof (another redirect_uri, a wrong or missing
/// verifier) for its owner; PKCE is S256 unless a provider opts into plain, and discovery
/// says exactly that; stored request values are bounded; a userinfo token dies with its
/// client's place in the provider.
#[tokio::test(flavor = "multi_thread")]
async fn codes_survive_wrong_proofs_pkce_is_s256_and_tokens_die_with_their_client() {
    let s = Setup::start().await;
    let token = s.identity_token().await;
    let (public_id, _) = s.credentials("public-rs256");
    let (basic_id, basic_secret) = s.confidential("basic-rs256");
    // The request of a code for `client`: scope openid groups, as the entity.
    let code_request = |client: &str| {
        Request::get("authorize")
            .set("response_type", "code")
            .set("client_id", client)
            .set("redirect_uri", REDIRECT)
            .set("scope", "openid groups")
            .auth(Auth::bearer(&token))
    };
    let public_exchange = |code: &str| Request::exchange(code, REDIRECT).set("client_id", &public_id);

    // A stolen public client's code sent with a wrong verifier, with none, or to another
    // redirect_uri: refused, and the owner still redeems it.
    let r = s
        .oauth
        .send(&code_request(&public_id).set("code_challenge", CHALLENGE).set("code_challenge_method", "S256"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let code = r.text("code");
    for (what, request) in [
        ("wrong verifier", public_exchange(&code).set("code_verifier", &VERIFIER.replace('d', "e"))),
        ("no verifier", public_exchange(&code)),
        (
            "other redirect_uri",
            public_exchange(&code).set("code_verifier", VERIFIER).set("redirect_uri", "https://app.example/other"),
        ),
    ] {
        let r = s.oauth.send(&request).await;
        assert_eq!((r.status, r.error()), (400, Some("invalid_grant")), "{what}: {}", r.body);
    }
    let r = s.oauth.send(&public_exchange(&code).set("code_verifier", VERIFIER)).await;
    assert_eq!(r.status, 200, "the owner redeems the code after the failed attempts: {}", r.body);

    // S256 is the default: a challenge without a method is S256, plain is refused, and
    // discovery advertises S256 alone.
    let r = s.oauth.send(&code_request(&public_id).set("code_challenge", CHALLENGE)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.oauth.send(&public_exchange(&r.text("code")).set("code_verifier", VERIFIER)).await;
    assert_eq!(r.status, 200, "a challenge without a method is S256: {}", r.body);
    let plain = code_request(&public_id).set("code_challenge", VERIFIER).set("code_challenge_method", "plain");
    let r = s.oauth.send(&plain).await;
    assert_eq!((r.status, r.error()), (400, Some("invalid_request")), "{}", r.body);
    assert!(r.text("error_description").contains("pkceMethods"), "{}", r.body);
    let discovery = s.oauth.discovery().await.body;
    assert_eq!(discovery["code_challenge_methods_supported"], json!(["S256"]), "{discovery}");
    // claims_supported names what the provider's tokens carry: `namespace` and the claims
    // its scopes set (issue 21, item 7).
    let claims = discovery["claims_supported"].as_array().unwrap();
    for claim in ["sub", "namespace", "groups"] {
        assert!(claims.contains(&json!(claim)), "{claim} missing from {claims:?}");
    }

    // A provider that opts into plain: advertised, and a challenge without a method is plain
    // there (RFC 7636 §4.3).
    let legacy = s.oauth.provider("legacy");
    let discovery = legacy.discovery().await.body;
    assert_eq!(discovery["code_challenge_methods_supported"], json!(["S256", "plain"]), "{discovery}");
    let r = legacy.send(&code_request(&public_id).set("scope", "openid").set("code_challenge", VERIFIER)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = legacy.send(&public_exchange(&r.text("code")).set("code_verifier", VERIFIER)).await;
    assert_eq!(r.status, 200, "a plain challenge where plain is accepted: {}", r.body);

    // Stored and echoed values are bounded: an oversized nonce or state is refused by name.
    for (name, len) in [("nonce", 1025), ("state", 2049)] {
        let r = s.oauth.send(&code_request(&basic_id).set(name, &"n".repeat(len))).await;
        assert_eq!((r.status, r.error()), (400, Some("invalid_request")), "{name}: {}", r.body);
        assert!(r.text("error_description").contains(name), "{}", r.body);
    }
    let r = s.oauth.send(&code_request(&basic_id).set("nonce", &"n".repeat(1024))).await;
    assert_eq!(r.status, 200, "a nonce at the limit: {}", r.body);

    // A scope that says a missing value is an error refuses an entity without it, by name
    // (issue 21, item 8); OpenBao would render "".
    let r = s.oauth.send(&code_request(&basic_id).set("scope", "openid strict")).await;
    assert_eq!((r.status, r.error()), (403, Some("access_denied")), "{}", r.body);
    assert!(r.text("error_description").contains("identity.entity.metadata.zone"), "{}", r.body);

    // A userinfo token stops once its client is no longer served by the provider.
    let r = s.oauth.send(&code_request(&basic_id)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.oauth.exchange((&basic_id, &basic_secret), &r.text("code"), REDIRECT).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let at = r.text("access_token");
    assert_eq!(s.oauth.userinfo(&at).await.status, 200);
    let narrowed = manifests(&s.issuer).replace(
        "allowedClients: [basic-rs256, public-rs256, unassigned]",
        "allowedClients: [public-rs256, unassigned]",
    );
    write_manifest(&s.tmp.path().join("m"), "all.yaml", &narrowed);
    eventually(10, "the removed client's userinfo token to be refused", async || {
        s.oauth.userinfo(&at).await.status == 401
    })
    .await;
}

/// The `oauth2` crate (the third-party client the issue-22 grants are to be proven with)
/// drives today's authorization_code exchange through the shared helpers, with
/// client_secret_basic and client_secret_post, and reads a refusal's RFC error code: the
/// wiring later grant tests build on.
#[tokio::test(flavor = "multi_thread")]
async fn the_oauth2_crate_exchanges_codes_and_reads_refusals() {
    let s = Setup::start().await;
    let token = s.identity_token().await;
    for (client, auth) in [("basic-rs256", oauth2::AuthType::BasicAuth), ("post-rs256", oauth2::AuthType::RequestBody)]
    {
        let (id, secret) = s.confidential(client);
        let rp = s.oauth.provider("prov-rs256");
        let oauth2_client = rp.oauth2_client(&id, Some(&secret), auth, REDIRECT);
        let code = rp.code(&token, &id, REDIRECT).await;
        let tokens =
            rp.oauth2_exchange(&oauth2_client, &code, None).await.unwrap_or_else(|e| panic!("{client}: {e:?}"));
        assert_eq!(*tokens.token_type(), oauth2::basic::BasicTokenType::Bearer, "{client}");
        assert!(tokens.expires_in().is_some_and(|t| t.as_secs() > 0), "{client}");
        let info = rp.userinfo(tokens.access_token().secret()).await;
        assert_eq!((info.status, info.body["sub"].as_str()), (200, Some(ENTITY)), "{client}: {}", info.body);
        // A replayed code: refused with the RFC code the crate parses.
        let e = rp.oauth2_exchange(&oauth2_client, &code, None).await.unwrap_err();
        assert_eq!(oauth2_error(&e).as_deref(), Some("invalid_grant"), "{client}: {e:?}");
    }
}

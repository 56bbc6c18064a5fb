//! The token endpoint's refusals, as tables: each row is a token request (a grant, its
//! parameters and its client authentication) with the exact status and RFC 6749 error code
//! it must get. A new grant adds rows.

// Test helpers outside #[test] functions stop the test on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::oauth::{Auth, Body, Request, refusals};
use common::providers::{CHALLENGE, REDIRECT, Setup, VERIFIER};
use reqwest::Method;

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_token_request_gets_its_rfc_error() {
    // Codes live 2 s on this server.
    let s = Setup::start_with(&["--code-ttl", "2"]).await;
    let token = s.identity_token().await;
    let (basic_id, basic_secret) = s.confidential("basic-rs256");
    let (public_id, _) = s.credentials("public-rs256");
    let basic = Auth::basic(&basic_id, &basic_secret);
    // A fresh code for `client` at `provider`, with the RFC 7636 challenge when `pkce`.
    let code_at = |provider: &'static str, client: String, pkce: bool| {
        let (s, token) = (&s, token.clone());
        async move {
            let mut request = Request::get("authorize")
                .set("response_type", "code")
                .set("client_id", &client)
                .set("redirect_uri", REDIRECT)
                .set("scope", "openid groups")
                .set("state", "s1")
                .auth(Auth::bearer(&token))
                .at(provider);
            if pkce {
                request = request.set("code_challenge", CHALLENGE).set("code_challenge_method", "S256");
            }
            let r = s.oauth.send(&request).await;
            assert_eq!(r.status, 200, "{}", r.body);
            r.text("code")
        }
    };
    let code_for = |client: &str, pkce: bool| code_at("neg", client.to_owned(), pkce);
    let exchange = |code: &str| Request::exchange(code, REDIRECT).auth(basic.clone());
    let mut count = 0;

    // Replay: the second exchange fails and revokes the access token of the first.
    let code = code_for(&basic_id, false).await;
    let first = s.oauth.send(&exchange(&code)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let at = first.text("access_token");
    assert_eq!(s.oauth.userinfo(&at).await.status, 200);
    count += refusals(&s.oauth, vec![("code replay", exchange(&code), 400, "invalid_grant")]).await.len();
    assert_eq!(s.oauth.userinfo(&at).await.status, 401, "the replay revoked the first access token");

    // Without redirect_uri: invalid_request, and the code is not spent by it.
    let code = code_for(&basic_id, false).await;
    let row = ("no redirect_uri at token", exchange(&code).unset("redirect_uri"), 400, "invalid_request");
    count += refusals(&s.oauth, vec![row]).await.len();
    let r = s.oauth.send(&exchange(&code)).await;
    assert_eq!(r.status, 200, "the code survived the request without redirect_uri: {}", r.body);

    let shared = code_for(&basic_id, false).await;
    let public_code = code_for(&public_id, true).await;
    let public_exchange = Request::exchange(&public_code, REDIRECT).set("code_verifier", VERIFIER);
    let other_provider = code_at("prov-rs256", basic_id.clone(), false).await;
    let table = vec![
        (
            "redirect_uri mismatch at token",
            exchange(&code_for(&basic_id, false).await).set("redirect_uri", "https://app.example/other"),
            400,
            "invalid_grant",
        ),
        (
            "wrong verifier",
            exchange(&code_for(&basic_id, true).await).set("code_verifier", &VERIFIER.replace('d', "e")),
            400,
            "invalid_grant",
        ),
        ("missing verifier", exchange(&code_for(&basic_id, true).await), 400, "invalid_grant"),
        (
            "verifier without challenge",
            exchange(&code_for(&basic_id, false).await).set("code_verifier", VERIFIER),
            400,
            "invalid_grant",
        ),
        ("wrong secret", exchange(&shared).auth(Auth::basic(&basic_id, "oidcop_secret_wrong")), 401, "invalid_client"),
        (
            "two client authentication methods",
            exchange(&shared).set("client_id", &basic_id).set("client_secret", &basic_secret),
            400,
            "invalid_request",
        ),
        (
            "confidential client without secret",
            exchange(&shared).set("client_id", &basic_id).auth(Auth::None),
            401,
            "invalid_client",
        ),
        ("unknown client at token", exchange(&shared).auth(Auth::basic("no-such-client", "x")), 401, "invalid_client"),
        (
            "secret for a public client",
            public_exchange.clone().auth(Auth::basic(&public_id, "some-secret")),
            401,
            "invalid_client",
        ),
        ("code of another client", public_exchange.clone().auth(basic.clone()), 400, "invalid_grant"),
        (
            "unsupported grant_type",
            exchange(&code_for(&basic_id, false).await).set("grant_type", "password"),
            400,
            "unsupported_grant_type",
        ),
        (
            "missing code",
            Request::post("token").set("grant_type", "authorization_code").auth(basic.clone()),
            400,
            "invalid_request",
        ),
        ("unknown code", exchange("never-issued"), 400, "invalid_grant"),
        // The client is allowed by both providers.
        ("code of another provider", exchange(&other_provider), 400, "invalid_grant"),
        (
            "malformed form",
            Request::post("token").set("grant_type", "authorization_code").auth(basic.clone()).body(Body::Json),
            400,
            "invalid_request",
        ),
        (
            "oversized body",
            Request::post("token").body(Body::Raw {
                content_type: "application/x-www-form-urlencoded",
                body: format!("grant_type=authorization_code&code={}", "x".repeat(100_000)),
            }),
            413,
            "invalid_request",
        ),
    ];
    let replies = refusals(&s.oauth, table).await;
    count += replies.len();
    assert!(replies["wrong secret"].header("www-authenticate").starts_with("Basic"), "{:?}", replies["wrong secret"]);

    // Expired code.
    let code = code_for(&basic_id, false).await;
    // Time passing, not synchronisation: the code's 2 s lifetime.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    count += refusals(&s.oauth, vec![("expired code", exchange(&code), 400, "invalid_grant")]).await.len();

    let r = s.oauth.send(&Request::get("token").method(Method::GET)).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), "POST");
    println!("{count} negative token cases checked");
}

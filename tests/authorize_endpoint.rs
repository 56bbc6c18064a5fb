//! The authorize endpoint's refusals, as one table: each row changes one thing of a good
//! request (or the identity token it carries) and names the exact status and RFC 6749 /
//! OpenID Connect error code it must get. A new check adds a row.

// Test helpers outside #[test] functions stop the test on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::login_token;
use common::oauth::{Auth, Body, Request, refusals};
use common::providers::{CHALLENGE, REDIRECT, SHORT_LIVED, Setup};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_authorize_request_gets_its_rfc_error() {
    let s = Setup::start().await;
    let token = s.identity_token().await;
    let (basic_id, _) = s.credentials("basic-rs256");
    let (public_id, _) = s.credentials("public-rs256");
    let (stranger_id, _) = s.credentials("stranger");
    let (unassigned_id, _) = s.credentials("unassigned");
    let base = |client: &str| {
        Request::get("authorize")
            .set("response_type", "code")
            .set("client_id", client)
            .set("redirect_uri", REDIRECT)
            .set("scope", "openid groups")
            .set("state", "s1")
    };
    let good = base(&basic_id).auth(Auth::bearer(&token));
    let r = s.oauth.send(&good).await;
    assert_eq!((r.status, r.body["state"].as_str()), (200, Some("s1")), "{}", r.body);

    // Identity tokens that must not be believed: revoked, and one that expires (1 s) before
    // the table runs.
    let revoked = s.identity_token().await;
    let resp = s
        .oauth
        .http()
        .post(format!("{}/api/v1/auth/token/revoke", s.server.api))
        .json(&json!({"accessToken": revoked}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "revoking an identity token");
    let short_jwt = s.issuer.mint("RS256", json!({}), None).await;
    let short = login_token(&s.server, SHORT_LIVED, &short_jwt).await;
    // Time passing, not synchronisation: the short token's 1 s lifetime and max_age=1 need
    // it.
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let post = |body: Body| good.clone().method(Method::POST).body(body);
    let raw = |content_type, body: &str| post(Body::Raw { content_type, body: body.to_owned() });
    let table = vec![
        ("no identity token", good.clone().auth(Auth::None), 401, "invalid_token"),
        ("unknown identity token", good.clone().auth(Auth::bearer("not-a-token")), 401, "invalid_token"),
        ("revoked identity token", good.clone().auth(Auth::bearer(&revoked)), 401, "invalid_token"),
        ("expired identity token", good.clone().auth(Auth::bearer(&short)), 401, "invalid_token"),
        ("unknown client", good.clone().set("client_id", "no-such-client"), 400, "invalid_request"),
        ("client not allowed by the provider", good.clone().set("client_id", &stranger_id), 400, "unauthorized_client"),
        ("entity not assigned", good.clone().set("client_id", &unassigned_id), 403, "access_denied"),
        (
            "redirect_uri mismatch",
            good.clone().set("redirect_uri", "https://app.example/callback/evil"),
            400,
            "invalid_request",
        ),
        ("missing redirect_uri", good.clone().unset("redirect_uri"), 400, "invalid_request"),
        ("missing openid", good.clone().set("scope", "groups"), 400, "invalid_scope"),
        ("unsupported response_type", good.clone().set("response_type", "token"), 400, "unsupported_response_type"),
        ("request parameter", good.clone().set("request", "eyJhbGciOiJub25lIn0.e30."), 400, "request_not_supported"),
        ("request_uri parameter", good.clone().set("request_uri", "https://x/r"), 400, "request_uri_not_supported"),
        ("public client without PKCE", good.clone().set("client_id", &public_id), 400, "invalid_request"),
        (
            "short challenge",
            good.clone().set("code_challenge", "abc").set("code_challenge_method", "S256"),
            400,
            "invalid_request",
        ),
        (
            "unknown challenge method",
            good.clone().set("code_challenge", CHALLENGE).set("code_challenge_method", "S512"),
            400,
            "invalid_request",
        ),
        ("conflicting scope claims", good.clone().set("scope", "openid groups clash"), 400, "invalid_request"),
        ("repeated parameter", good.clone().add("scope", "openid"), 400, "invalid_request"),
        ("unknown provider", good.clone().at("no-such-provider"), 404, "not_found"),
        ("malformed authorize body", raw("application/json", "{\"client_id\": "), 400, "invalid_request"),
        ("authorize body of another type", raw("text/plain", "x"), 400, "invalid_request"),
        ("max_age exceeded", good.clone().set("max_age", "1"), 400, "login_required"),
        // prompt (OpenID Connect Core §3.1.2.1): none holds (nothing here is interactive);
        // login cannot be honoured; none with another value is malformed.
        ("prompt=login", good.clone().set("prompt", "login"), 400, "login_required"),
        ("prompt=none with another value", good.clone().set("prompt", "none consent"), 400, "invalid_request"),
    ];
    let rows = table.len();
    let replies = refusals(&s.oauth, table).await;

    // Every authorize error brings the request's state back (RFC 6749 §4.1.2.1).
    for row in ["max_age exceeded", "entity not assigned", "no identity token"] {
        assert_eq!(replies[row].body["state"], "s1", "{row}: {}", replies[row].body);
    }
    // POST works with a form and, as OpenBao's JSON API, with a JSON object.
    for body in [Body::Form, Body::Json] {
        let r = s.oauth.send(&post(body.clone())).await;
        assert_eq!(r.status, 200, "POST with {body:?}: {}", r.body);
    }
    // A parameter without a value is omitted (RFC 6749 §3.1).
    let r = s.oauth.send(&good.clone().set("max_age", "").set("nonce", "")).await;
    assert_eq!(r.status, 200, "empty max_age and nonce: {}", r.body);
    let r = s.oauth.send(&good.clone().set("prompt", "none")).await;
    assert_eq!(r.status, 200, "prompt=none: {}", r.body);
    println!("{rows} negative authorize cases checked");
}

//! The userinfo endpoint's refusals, as one table: each row is a userinfo request with the
//! exact status and RFC 6750 error code it must get, and the challenge header it carries.

// Test helpers outside #[test] functions stop the test on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::oauth::{Auth, Request, refusals};
use common::providers::{REDIRECT, Setup};

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_userinfo_request_gets_its_rfc_error() {
    let s = Setup::start().await;
    let token = s.identity_token().await;
    let (basic_id, basic_secret) = s.confidential("basic-rs256");
    let code = s.oauth.code(&token, &basic_id, REDIRECT).await;
    let r = s.oauth.exchange((&basic_id, &basic_secret), &code, REDIRECT).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let at = r.text("access_token");

    // RFC 6750 §2.2: the token in a form body.
    let form = Request::post("userinfo").set("access_token", &at);
    let r = s.oauth.send(&form).await;
    assert_eq!(r.status, 200, "RFC 6750 form body: {}", r.body);

    let table = vec![
        ("bad token at userinfo", Request::get("userinfo").auth(Auth::bearer("garbage")), 401, "invalid_token"),
        ("no token at userinfo", Request::get("userinfo"), 401, "invalid_token"),
        ("token sent twice at userinfo", form.clone().auth(Auth::bearer(&at)), 400, "invalid_request"),
        (
            "userinfo token of another provider",
            Request::get("userinfo").auth(Auth::bearer(&at)).at("prov-rs256"),
            401,
            "invalid_token",
        ),
    ];
    let rows = table.len();
    let replies = refusals(&s.oauth, table).await;
    // The challenges (RFC 6750 §3, §3.1: no credentials at all gets no error code).
    for (row, challenge) in [
        ("bad token at userinfo", "Bearer error=\"invalid_token\""),
        ("no token at userinfo", "Bearer realm=\"oidc-operator\""),
        ("token sent twice at userinfo", "Bearer error=\"invalid_request\""),
    ] {
        assert_eq!(replies[row].header("www-authenticate"), challenge, "{row}");
    }
    println!("{rows} negative userinfo cases checked");
}

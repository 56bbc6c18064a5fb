//! Machine login against the real `oidc-operator standalone` process, with an external issuer
//! that the test harness runs (Python jwcrypto over HTTPS, its CA given as `caCert`).

// Test helpers outside #[test] functions stop the test on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::{ExternalIssuer, Server, eventually, identity, identity_at, login, write_manifest, yaml_block};
use serde_json::{Value, json};

const RUNNER_ID: &str = "0b6f3c1e-1111-4a6e-9d7a-5d1f6a2b3c4d";

struct Setup {
    _tmp: tempfile::TempDir,
    manifests: std::path::PathBuf,
    issuer: ExternalIssuer,
    server: Server,
}

/// The server flags of these tests: the test issuer listens on loopback, which only
/// `--allow-insecure-issuers` lets the server fetch.
const FLAGS: &[&str] = &["--plain-http", "--allow-insecure-issuers", "--issuer-refetch-interval", "1"];

async fn setup(extra_identities: impl Fn(&ExternalIssuer) -> String) -> Setup {
    let s = setup_with(FLAGS, extra_identities).await;
    s.server.wait_identity_ready("runner").await;
    s
}

/// The runner identity (and `extra_identities`) served with `flags`, not waiting for them.
async fn setup_with(flags: &[&str], extra_identities: impl Fn(&ExternalIssuer) -> String) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let (manifests, state) = (tmp.path().join("m"), tmp.path().join("state"));
    std::fs::create_dir(&manifests).unwrap();
    let issuer = ExternalIssuer::start(tmp.path()).await;
    let mut yaml = identity(
        "runner",
        RUNNER_ID,
        &issuer,
        "  boundClaims: {team: \"payments, plat*\"}\n  accessTokenTTL: 3600\n  accessTokenMaxTTL: 7200\n",
    );
    yaml.push_str(&extra_identities(&issuer));
    write_manifest(&manifests, "identities.yaml", &yaml);
    let server = Server::start(&manifests, &state, flags).await;
    Setup { _tmp: tmp, manifests, issuer, server }
}

async fn lookup(server: &Server, token: &str, header: &str) -> (u16, Value) {
    let value = if header == "authorization" { format!("Bearer {token}") } else { token.to_owned() };
    let resp = server
        .client()
        .get(format!("{}/api/v1/auth/token/lookup", server.api))
        .header(header, value)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

async fn token_op(server: &Server, op: &str, token: &str) -> (u16, Value) {
    let resp = server
        .client()
        .post(format!("{}/api/v1/auth/token/{op}", server.api))
        .json(&json!({"accessToken": token}))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

fn good_claims() -> Value {
    json!({"team": "payments", "kubernetes.io": {"namespace": "ci"}})
}

#[tokio::test(flavor = "multi_thread")]
async fn logins_with_rsa_ec_and_eddsa_tokens_succeed_and_tokens_work() {
    let s = setup(|_| String::new()).await;
    for alg in ["RS256", "ES256", "EdDSA"] {
        let jwt = s.issuer.mint(alg, good_claims(), None).await;
        let (status, body) = login(&s.server, RUNNER_ID, &jwt).await;
        assert_eq!(status, 200, "{alg}: {body}");
        assert_eq!(body["tokenType"], "Bearer");
        assert_eq!(body["expiresIn"], 3600);
        assert_eq!(body["accessTokenMaxTTL"], 7200);
        let token = body["accessToken"].as_str().unwrap();
        assert!(token.len() >= 43, "at least 256 bits");
        for header in ["authorization", "x-vault-token"] {
            let (status, info) = lookup(&s.server, token, header).await;
            assert_eq!(status, 200, "{info}");
            assert_eq!(info["identityId"], RUNNER_ID);
            assert_eq!(info["identityName"], "runner");
            assert_eq!(info["subject"], "system:serviceaccount:ci:runner");
            assert_eq!(info["usesLeft"], Value::Null, "unlimited by default");
        }
    }
    // A form body works as well as JSON.
    let jwt = s.issuer.mint("ES256", good_claims(), None).await;
    let resp = s
        .server
        .client()
        .post(format!("{}/api/v1/auth/oidc-auth/login", s.server.api))
        .form(&[("identityId", RUNNER_ID), ("jwt", jwt.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    // A token without kid is tried against the issuer's keys.
    let jwt = s.issuer.mint("EdDSA", good_claims(), Some("no-kid")).await;
    assert_eq!(login(&s.server, RUNNER_ID, &jwt).await.0, 200);
    // The login is counted in bounded metrics.
    let metrics = reqwest::get(format!("{}/metrics", s.server.metrics)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"oidc_operator_http_requests_total{endpoint="login",code="200"} 5"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_login_fails_with_its_own_status_and_error() {
    let s = setup(|_| String::new()).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let with = |extra: Value| {
        let mut c = good_claims();
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        c
    };
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("alg none", s.issuer.mint("RS256", good_claims(), Some("none")).await, 401, "algorithm_not_allowed"),
        (
            "HS256 keyed with the public key",
            s.issuer.mint("RS256", good_claims(), Some("hs256-pubkey")).await,
            401,
            "algorithm_not_allowed",
        ),
        ("bad signature", s.issuer.mint("ES256", good_claims(), Some("bad-signature")).await, 401, "bad_signature"),
        (
            "wrong issuer",
            s.issuer.mint("RS256", with(json!({"iss": "https://evil.example"})), None).await,
            401,
            "issuer_mismatch",
        ),
        ("wrong audience", s.issuer.mint("RS256", with(json!({"aud": ["web"]})), None).await, 401, "audience_mismatch"),
        (
            "subject outside the glob",
            s.issuer.mint("RS256", with(json!({"sub": "system:serviceaccount:prod:x"})), None).await,
            401,
            "subject_mismatch",
        ),
        (
            "unmatched bound claim",
            s.issuer.mint("RS256", with(json!({"team": "marketing"})), None).await,
            401,
            "claim_mismatch",
        ),
        ("missing bound claim", s.issuer.mint("RS256", with(json!({"team": null})), None).await, 401, "claim_mismatch"),
        (
            "expired",
            s.issuer.mint("EdDSA", with(json!({"exp": now - 600, "iat": now - 900, "nbf": now - 900})), None).await,
            401,
            "token_expired",
        ),
        (
            "not yet valid",
            s.issuer.mint("EdDSA", with(json!({"nbf": now + 600})), None).await,
            401,
            "token_not_yet_valid",
        ),
        ("malformed", "not-a-jwt".to_owned(), 401, "malformed_jwt"),
    ];
    for (what, jwt, status, code) in cases {
        let (got, body) = login(&s.server, RUNNER_ID, &jwt).await;
        assert_eq!((got, body["error"].as_str()), (status, Some(code)), "{what}: {body}");
        assert_eq!(body["statusCode"], status);
        assert!(!body.to_string().contains(&jwt), "{what}: the token is echoed");
    }

    // Unknown identity: answered as a bad signature (tests/login_limits.rs has the detail).
    let jwt = s.issuer.mint("RS256", good_claims(), None).await;
    let (status, body) = login(&s.server, "no-such-identity", &jwt).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("bad_signature")));

    // Unknown kid: refused (one refetch, rate-limited); after the issuer publishes the new key,
    // the refetch finds it.
    let rotated = s.issuer.mint("ES256", good_claims(), Some("unpublished")).await;
    let (status, body) = login(&s.server, RUNNER_ID, &rotated).await;
    // An unknown kid answers as a bad signature (the log says unknown_kid).
    assert_eq!((status, body["error"].as_str()), (401, Some("bad_signature")), "{body}");
    let fetches = s.issuer.jwks_fetches().await;
    let flood = std::time::Instant::now();
    for _ in 0..20 {
        assert_eq!(login(&s.server, RUNNER_ID, &rotated).await.0, 401);
    }
    // One refetch per refetch interval (1 s here) at most, however many bad kids arrive.
    let allowed = 1 + flood.elapsed().as_secs();
    let extra = s.issuer.jwks_fetches().await - fetches;
    assert!(extra <= allowed && extra < 20, "a flood of unknown kids is rate-limited: {extra} fetches");
    s.issuer.publish_pending().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = login(&s.server, RUNNER_ID, &rotated).await;
    assert_eq!(status, 200, "the refetch finds the newly published kid: {body}");

    // Bodies: malformed JSON, missing fields, oversized.
    let post = |body: String, ct: &'static str| {
        s.server
            .client()
            .post(format!("{}/api/v1/auth/oidc-auth/login", s.server.api))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let resp = post("{\"identityId\": ".into(), "application/json").await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "invalid_request");
    let resp = post(json!({"identityId": RUNNER_ID}).to_string(), "application/json").await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = post(json!({"identityId": RUNNER_ID, "jwt": "x".repeat(200_000)}).to_string(), "application/json")
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let resp = post(
        json!({"identityId": RUNNER_ID, "jwt": format!("{}.{}.{}", "a".repeat(9000), "b".repeat(9000), "c")})
            .to_string(),
        "application/json",
    )
    .await
    .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "jwt_too_large");
    // Wrong method.
    let resp = s.server.client().get(format!("{}/api/v1/auth/oidc-auth/login", s.server.api)).send().await.unwrap();
    assert_eq!(resp.status(), 405);
}

#[tokio::test(flavor = "multi_thread")]
async fn access_tokens_obey_limits_ips_renewal_revocation_and_spec_changes() {
    const LIMITED: &str = "11111111-2222-4333-8444-555555555555";
    const SHORT: &str = "22222222-2222-4333-8444-555555555555";
    const FENCED: &str = "33333333-2222-4333-8444-555555555555";
    const LOCAL: &str = "44444444-2222-4333-8444-555555555555";
    let extra = |i: &ExternalIssuer| {
        [
            identity("limited", LIMITED, i, "  accessTokenNumUsesLimit: 2\n"),
            identity("short", SHORT, i, "  accessTokenTTL: 4\n  accessTokenMaxTTL: 5\n"),
            identity(
                "fenced",
                FENCED,
                i,
                "  accessTokenTrustedIps: [{ipAddress: 10.0.0.0/8}, {ipAddress: \"2001:db8::/32\"}]\n",
            ),
            identity("local", LOCAL, i, "  accessTokenTrustedIps: [{ipAddress: 127.0.0.0/8}]\n"),
        ]
        .concat()
    };
    let s = setup(extra).await;
    let jwt = s.issuer.mint("RS256", good_claims(), None).await;
    let token_of = |body: &Value| body["accessToken"].as_str().unwrap().to_owned();

    // Caller outside the trusted IPs: 403.
    let (status, body) = login(&s.server, FENCED, &jwt).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("ip_not_allowed")));
    assert_eq!(login(&s.server, LOCAL, &jwt).await.0, 200, "loopback inside 127.0.0.0/8");

    // Use limit: two uses, then refused.
    let limited = token_of(&login(&s.server, LIMITED, &jwt).await.1);
    let (_, info) = lookup(&s.server, &limited, "authorization").await;
    assert_eq!(info["usesLeft"], 1);
    assert_eq!(lookup(&s.server, &limited, "x-vault-token").await.0, 200);
    let (status, body) = lookup(&s.server, &limited, "authorization").await;
    assert_eq!((status, body["error"].as_str()), (401, Some("token_uses_exhausted")));

    // Renewal extends by the TTL but never past max TTL from login; then the token expires.
    let (_, short_login) = login(&s.server, SHORT, &jwt).await;
    assert_eq!(short_login["expiresIn"], 4);
    let short = token_of(&short_login);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, renewed) = token_op(&s.server, "renew", &short).await;
    assert_eq!(status, 200, "{renewed}");
    // Times are whole seconds: the login fell in second X, the renewal in X+2 or X+3, so an
    // uncapped renewal would give 4 s and the cap (X+5) gives 3 or 2.
    let left = renewed["expiresIn"].as_i64().unwrap();
    assert!((2..=3).contains(&left), "capped by max TTL 5 s from login, not 4 s from now: {renewed}");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (status, body) = lookup(&s.server, &short, "authorization").await;
    assert_eq!((status, body["error"].as_str()), (401, Some("token_expired")));

    // Revocation.
    let revoked = token_of(&login(&s.server, RUNNER_ID, &s.issuer.mint("RS256", good_claims(), None).await).await.1);
    assert_eq!(token_op(&s.server, "revoke", &revoked).await.0, 200);
    let resp = s
        .server
        .client()
        .get(format!("{}/api/v1/auth/token/lookup", s.server.api))
        .bearer_auth(&revoked)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer error=\"invalid_token\"");
    assert_eq!(token_op(&s.server, "renew", &revoked).await.0, 401);
    assert_eq!(lookup(&s.server, "never-issued", "authorization").await.0, 401);

    // Lowering an identity's TTL applies to tokens already issued; deleting it revokes them.
    let runner = token_of(&login(&s.server, RUNNER_ID, &s.issuer.mint("ES256", good_claims(), None).await).await.1);
    let local = token_of(&login(&s.server, LOCAL, &jwt).await.1);
    assert_eq!(lookup(&s.server, &runner, "authorization").await.0, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let lowered = identity(
        "runner",
        RUNNER_ID,
        &s.issuer,
        "  boundClaims: {team: payments}\n  accessTokenTTL: 1\n  accessTokenMaxTTL: 7200\n",
    ) + &identity("local", LOCAL, &s.issuer, "  accessTokenTrustedIps: [{ipAddress: 127.0.0.0/8}]\n");
    write_manifest(&s.manifests, "identities.yaml", &lowered);
    eventually(10, "the lowered TTL to apply", async || {
        let (status, body) = lookup(&s.server, &runner, "authorization").await;
        if status == 401 {
            assert_eq!(body["error"], "token_expired");
        }
        status == 401
    })
    .await;
    assert_eq!(lookup(&s.server, &local, "authorization").await.0, 200);
    write_manifest(&s.manifests, "identities.yaml", &identity("runner", RUNNER_ID, &s.issuer, ""));
    eventually(10, "deleting the identity to revoke its tokens", async || {
        lookup(&s.server, &local, "authorization").await.0 == 401
    })
    .await;
    let (status, body) = login(&s.server, LOCAL, &jwt).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("bad_signature")), "as any unknown identity");
}

#[tokio::test(flavor = "multi_thread")]
async fn identities_report_issuer_problems_in_ready() {
    let extra = |i: &ExternalIssuer| {
        format!(
            "apiVersion: oidc-operator.dev/v1alpha1\nkind: IdentityOidcAuth\nmetadata: {{name: unreachable}}\nspec:\n  oidcDiscoveryUrl: https://127.0.0.1:9/\n  boundIssuer: https://127.0.0.1:9/\n  boundAudiences: oidc-operator\n---\napiVersion: oidc-operator.dev/v1alpha1\nkind: IdentityOidcAuth\nmetadata: {{name: mismatch}}\nspec:\n  oidcDiscoveryUrl: {base}\n  boundIssuer: https://someone-else.example\n  boundAudiences: oidc-operator\n  caCert: |\n{ca}---\napiVersion: oidc-operator.dev/v1alpha1\nkind: IdentityOidcAuth\nmetadata: {{name: badca}}\nspec:\n  oidcDiscoveryUrl: {base}\n  boundIssuer: {base}\n  boundAudiences: oidc-operator\n  caCert: not a certificate\n---\napiVersion: oidc-operator.dev/v1alpha1\nkind: IdentityOidcAuth\nmetadata: {{name: untrusted}}\nspec:\n  oidcDiscoveryUrl: {base}\n  boundIssuer: {base}\n  boundAudiences: oidc-operator\n",
            base = i.base,
            ca = yaml_block(&i.ca_pem, 4)
        )
    };
    let s = setup(extra).await;
    let line = |name: &'static str, reason: &'static str| {
        let srv = &s.server;
        async move {
            srv.wait_for_line(
                move |l| l.contains("IdentityOidcAuth") && l.contains(name) && l.contains(reason),
                Duration::from_secs(15),
            )
            .await
            .unwrap_or_else(|| panic!("{name} never reported {reason}:\n{}", srv.output()))
        }
    };
    let l = line("unreachable", "DiscoveryFailed").await;
    assert!(l.contains("spec.oidcDiscoveryUrl"), "{l}");
    let l = line("mismatch", "IssuerMismatch").await;
    assert!(l.contains("spec.boundIssuer"), "{l}");
    let l = line("badca", "InvalidSpec").await;
    assert!(l.contains("spec.caCert"), "{l}");
    // Without caCert only the system roots are trusted, and the test CA is not among them.
    let l = line("untrusted", "DiscoveryFailed").await;
    assert!(l.contains("spec.oidcDiscoveryUrl"), "{l}");
}

/// Waits for the readiness line of IdentityOidcAuth `name` with `reason`.
async fn status_line(server: &Server, name: &str, reason: &str) -> String {
    server
        .wait_for_line(
            |l| {
                let columns: Vec<&str> = l.split_whitespace().collect();
                columns.get(1..3) == Some(&["IdentityOidcAuth", name][..]) && l.contains(reason)
            },
            Duration::from_secs(15),
        )
        .await
        .unwrap_or_else(|| panic!("{name} never reported {reason}:\n{}", server.output()))
}

/// A login refused because the issuer is unavailable says so and nothing more: the reason is
/// in the identity's status, for its owner.
fn assert_generic_unavailable(what: &str, status: u16, body: &Value) {
    assert_eq!((status, body["error"].as_str()), (503, Some("issuer_unavailable")), "{what}: {body}");
    assert_eq!(body["statusCode"], 503);
    let message = body["message"].as_str().unwrap();
    for detail in ["127.0.0.1", "169.254", "localhost", "names issuer", "loopback", "origin", "refused", "http"] {
        assert!(!message.contains(detail), "{what}: the login answer leaks {detail:?}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn issuer_fetch_rules_fail_the_identity_and_answer_callers_generically() {
    const WRONG: &str = "a0000000-0000-4000-8000-000000000001";
    const AWAY: &str = "a0000000-0000-4000-8000-000000000002";
    const MOVED: &str = "a0000000-0000-4000-8000-000000000003";
    const METADATA: &str = "a0000000-0000-4000-8000-000000000004";
    let extra = |i: &ExternalIssuer| {
        let at = |prefix: &str| format!("{}/{prefix}", i.base);
        [
            identity_at("wrongiss", WRONG, &at("other-issuer"), i, ""),
            identity_at("awayredir", AWAY, &at("redirect-away"), i, ""),
            identity_at("sameredir", MOVED, &at("redirect-same"), i, ""),
            identity_at("metadataip", METADATA, "https://169.254.169.254/latest", i, ""),
        ]
        .concat()
    };
    let s = setup(extra).await;
    let claims_for = |prefix: &str| {
        let mut c = good_claims();
        c["iss"] = json!(format!("{}/{prefix}", s.issuer.base));
        c
    };

    // A discovery document naming another issuer than the one it was fetched for.
    let l = status_line(&s.server, "wrongiss", "DiscoveryFailed").await;
    assert!(l.contains("spec.oidcDiscoveryUrl") && l.contains("names issuer"), "{l}");
    let jwt = s.issuer.mint("RS256", claims_for("other-issuer"), None).await;
    let (status, body) = login(&s.server, WRONG, &jwt).await;
    assert_generic_unavailable("wrong issuer", status, &body);

    // A redirect to another origin is not followed: its target is never fetched.
    let l = status_line(&s.server, "awayredir", "DiscoveryFailed").await;
    assert!(l.contains("spec.oidcDiscoveryUrl") && l.contains("another origin") && l.contains("localhost"), "{l}");
    let jwt = s.issuer.mint("RS256", claims_for("redirect-away"), None).await;
    let (status, body) = login(&s.server, AWAY, &jwt).await;
    assert_generic_unavailable("cross-origin redirect", status, &body);
    assert_eq!(s.issuer.stat("redirect_target_fetches").await, 0);

    // A redirect on the same origin is followed.
    status_line(&s.server, "sameredir", "True").await;
    let jwt = s.issuer.mint("ES256", claims_for("redirect-same"), None).await;
    let (status, body) = login(&s.server, MOVED, &jwt).await;
    assert_eq!(status, 200, "{body}");

    // A metadata address is refused by the URL check itself, before any connection, even
    // with --allow-insecure-issuers.
    let l = status_line(&s.server, "metadataip", "DiscoveryFailed").await;
    assert!(l.contains("refused before connecting") && l.contains("link-local"), "{l}");
    let (status, body) = login(&s.server, METADATA, &jwt).await;
    assert_generic_unavailable("metadata address", status, &body);
}

#[tokio::test(flavor = "multi_thread")]
async fn loopback_issuers_need_allow_insecure_issuers() {
    let s = setup_with(&["--plain-http", "--issuer-refetch-interval", "1"], |_| String::new()).await;
    let l = status_line(&s.server, "runner", "DiscoveryFailed").await;
    assert!(l.contains("loopback address") && l.contains("--allow-insecure-issuers"), "{l}");
    let jwt = s.issuer.mint("RS256", good_claims(), None).await;
    let (status, body) = login(&s.server, RUNNER_ID, &jwt).await;
    assert_generic_unavailable("loopback issuer", status, &body);
    assert_eq!(s.issuer.jwks_fetches().await, 0, "nothing was fetched from the loopback issuer");
}

#[tokio::test(flavor = "multi_thread")]
async fn jwts_with_crit_and_keys_not_for_signing_are_refused() {
    const NOT_SIGNING: &str = "b0000000-0000-4000-8000-000000000001";
    let s = setup(|i| identity_at("encjwks", NOT_SIGNING, &format!("{}/not-for-signing", i.base), i, "")).await;
    // The hand-signed header path works: the same token without crit logs in.
    let plain = s.issuer.mint_with_header(good_claims(), json!({})).await;
    assert_eq!(login(&s.server, RUNNER_ID, &plain).await.0, 200);
    for crit in [json!(["exp"]), json!([]), json!("exp")] {
        let jwt = s.issuer.mint_with_header(good_claims(), json!({"crit": crit, "exp": 1})).await;
        let (status, body) = login(&s.server, RUNNER_ID, &jwt).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("unsupported_crit")), "crit {crit}: {body}");
    }

    // Keys that say they are not for signatures are ignored, even when a token names their kid.
    status_line(&s.server, "encjwks", "True").await;
    let mut claims = good_claims();
    claims["iss"] = json!(format!("{}/not-for-signing", s.issuer.base));
    for (alg, marked) in [("RS256", "alg RSA-OAEP"), ("ES256", "key_ops [deriveKey]"), ("EdDSA", "use enc")] {
        let jwt = s.issuer.mint(alg, claims.clone(), None).await;
        let (status, body) = login(&s.server, NOT_SIGNING, &jwt).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("bad_signature")), "{marked}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_issuer_is_fetched_less_and_less_often() {
    const FAILING: &str = "c0000000-0000-4000-8000-000000000001";
    let s = setup(|i| identity_at("failing", FAILING, &format!("{}/failing", i.base), i, "")).await;
    status_line(&s.server, "failing", "DiscoveryFailed").await;
    let first = s.issuer.stat("failing_fetches").await;
    assert!(first >= 1);
    // A window of 8 s, not a synchronisation: with a 1 s interval the retries come 1, 2, 4, 8 s
    // apart (at most 4 in the window, counting whole-second rounding), where a fixed interval
    // would fetch about 8 times. Logins during the window obey the same backoff.
    let window = std::time::Instant::now();
    let jwt = s.issuer.mint("RS256", good_claims(), None).await;
    while window.elapsed() < Duration::from_secs(8) {
        let (status, body) = login(&s.server, FAILING, &jwt).await;
        assert_generic_unavailable("failing issuer", status, &body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let retries = s.issuer.stat("failing_fetches").await - first;
    assert!((1..=4).contains(&retries), "{retries} fetches of a failing issuer in 8 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_logins_log_bounded_fields() {
    let s = setup(|_| String::new()).await;
    let jwt = s.issuer.mint("RS256", good_claims(), None).await;
    let huge = "A".repeat(60 * 1024);
    let (status, body) = login(&s.server, &huge, &jwt).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("bad_signature")));
    let log_path = s.server.state.with_extension("log");
    let mut log = String::new();
    eventually(10, &format!("a login refused line in {}", log_path.display()), async || {
        log = std::fs::read_to_string(&log_path).unwrap();
        log.contains("login refused")
    })
    .await;
    let line = log.lines().find(|l| l.contains("login refused")).unwrap();
    assert!(line.contains(&"A".repeat(128)) && line.contains(&format!("({} bytes)", huge.len())), "{line}");
    assert!(line.len() < 600, "a {} byte log line", line.len());
}

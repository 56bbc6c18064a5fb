//! Namespaces are tenants (docs/design.md), tried against the real `oidc-operator standalone`
//! process with two namespaces, one of them hostile: entities are admitted only to clients of
//! their own namespace, contested ids stay with their first holder (across a restart too),
//! codes are bound to their client, and the secure defaults hold (an identity must bind an
//! audience, issuers are normalised, templates cannot be broken by values).

// Test helpers outside #[test] functions stop the test on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::oauth::{Auth, OAuth, code_request, confidential};
use common::{ExternalIssuer, Server, eventually, holds_within, identity_in, login_token, write_manifest};
use serde_json::{Value, json};

const VICTIM_ID: &str = "0a11ce00-0000-4000-8000-00000000000a";
const ATTACKER_ID: &str = "0bad0000-0000-4000-8000-00000000000b";
const ANY_AUD_ID: &str = "0a11ce00-0000-4000-8000-0000000000aa";
const REDIRECT: &str = "https://app.example/callback";
const WAIT: Duration = Duration::from_secs(20);

/// The victim namespace: an entity in group `platform`, a client by assignment, one with
/// `allow_all`, a client with a fixed client_id, and a provider. The hostile namespace
/// (sorting first) has an entity with the same name and group.
fn manifests(issuer: &ExternalIssuer) -> String {
    let mut out = identity_in("victim", "runner", VICTIM_ID, issuer, "oidc-operator", "  groups: [platform]\n");
    out.push_str(&identity_in("attacker", "runner", ATTACKER_ID, issuer, "oidc-operator", "  groups: [platform]\n"));
    out.push_str(&identity_in("victim", "any-aud", ANY_AUD_ID, issuer, "*", ""));
    out.push_str(&identity_in("victim", "no-aud", "0a11ce00-0000-4000-8000-0000000000ab", issuer, "", ""));
    out.push_str(&format!(
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcAssignment\nmetadata: {{name: platform, namespace: victim}}\nspec: {{groups: [platform]}}\n---\n\
         apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {{name: grouped, namespace: victim}}\nspec: {{redirectUris: [\"{REDIRECT}\"], assignments: [platform]}}\n---\n\
         apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {{name: open, namespace: victim}}\nspec: {{redirectUris: [\"{REDIRECT}\"], assignments: [allow_all]}}\n---\n\
         apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {{name: fixed, namespace: victim}}\nspec: {{clientId: fixed-client-id, redirectUris: [\"{REDIRECT}\"], assignments: [allow_all]}}\n---\n\
         apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {{name: p, namespace: victim}}\nspec: {{allowedClients: [\"*\"]}}\n---\n\
         apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {{name: dotted, namespace: victim}}\nspec: {{issuer: \"https://id.example.com/a/..\", allowedClients: [\"*\"]}}\n---\n\
         apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {{name: in-string, namespace: victim}}\nspec: {{template: '{{\"who\": \"{{{{identity.entity.name}}}}\"}}'}}\n---\n\
         apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {{name: azp, namespace: victim}}\nspec: {{template: '{{\"azp\": {{{{identity.entity.id}}}}}}'}}\n---\n"
    ));
    out
}

/// A hostile namespace `aaa` claiming the victim's identity id (with bounds no victim token
/// meets), and a newcomer in the victim's namespace claiming its client_id.
fn squatters(issuer: &ExternalIssuer) -> String {
    let mut out = identity_in("aaa", "squatter", VICTIM_ID, issuer, "nobody", "");
    out.push_str(&format!(
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {{name: aaa-fixed, namespace: victim}}\nspec: {{clientId: fixed-client-id, redirectUris: [\"{REDIRECT}\"], assignments: [allow_all]}}\n"
    ));
    out
}

struct Tenants {
    _tmp: tempfile::TempDir,
    issuer: ExternalIssuer,
    manifests: std::path::PathBuf,
    state: std::path::PathBuf,
}

impl Tenants {
    async fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let (manifests, state) = (tmp.path().join("m"), tmp.path().join("state"));
        std::fs::create_dir(&manifests).unwrap();
        let issuer = ExternalIssuer::start(tmp.path()).await;
        write_manifest(&manifests, "tenants.yaml", &self::manifests(&issuer));
        Tenants { _tmp: tmp, issuer, manifests, state }
    }

    async fn start(&self) -> Server {
        let server = Server::start(&self.manifests, &self.state, &["--allow-insecure-issuers"]).await;
        for (ns, name) in [("victim", "runner"), ("attacker", "runner")] {
            assert!(row(&server, ns, "IdentityOidcAuth", name, "True").await.is_some(), "{}", server.output());
        }
        server
    }
}

/// Waits for the readiness row of an object whose READY/REASON columns contain `what`.
async fn row(server: &Server, ns: &str, kind: &str, name: &str, what: &str) -> Option<String> {
    server
        .wait_for_line(
            |l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 4 && cols[0] == ns && cols[1] == kind && cols[2] == name && l.contains(what)
            },
            WAIT,
        )
        .await
}

/// Provider `victim/p` of `server`.
fn victim_provider(server: &Server) -> OAuth {
    OAuth::new(server, "victim", "p")
}

async fn authorize(server: &Server, token: &str, client_id: &str) -> (u16, Value) {
    let r = victim_provider(server).send(&code_request(client_id, REDIRECT).auth(Auth::bearer(token))).await;
    (r.status, r.body)
}

async fn exchange(server: &Server, client: (&str, &str), code: &str) -> (u16, Value) {
    let r = victim_provider(server).exchange(client, code, REDIRECT).await;
    (r.status, r.body)
}

#[tokio::test(flavor = "multi_thread")]
async fn entities_are_admitted_only_to_clients_of_their_own_namespace() {
    let t = Tenants::new().await;
    let server = t.start().await;
    let jwt = t.issuer.mint("ES256", json!({}), None).await;
    let victim = login_token(&server, VICTIM_ID, &jwt).await;
    let attacker = login_token(&server, ATTACKER_ID, &jwt).await;
    for client in ["grouped", "open"] {
        let (client_id, _) = confidential(&t.state, "victim", client);
        let (status, body) = authorize(&server, &victim, &client_id).await;
        assert_eq!(status, 200, "the victim's own entity is admitted to {client}: {body}");
        assert!(body["code"].is_string());
        // Same entity name, same group, `allow_all`: still another namespace's entity.
        let (status, body) = authorize(&server, &attacker, &client_id).await;
        assert_eq!((status, body["error"].as_str()), (403, Some("access_denied")), "{client}: {body}");
        assert!(body.get("code").is_none());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_code_is_checked_against_its_client_before_it_is_spent() {
    let t = Tenants::new().await;
    let server = t.start().await;
    let jwt = t.issuer.mint("ES256", json!({}), None).await;
    let victim = login_token(&server, VICTIM_ID, &jwt).await;
    let grouped = confidential(&t.state, "victim", "grouped");
    let open = confidential(&t.state, "victim", "open");
    let (_, body) = authorize(&server, &victim, &grouped.0).await;
    let code = body["code"].as_str().unwrap().to_owned();
    // Another client presenting the code is refused, and the code is not spent by it.
    for _ in 0..2 {
        let (status, body) = exchange(&server, (&open.0, &open.1), &code).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    }
    let (status, body) = exchange(&server, (&grouped.0, &grouped.1), &code).await;
    assert_eq!(status, 200, "the code's own client still redeems it: {body}");
    assert!(body["id_token"].is_string());
    let (status, body) = exchange(&server, (&grouped.0, &grouped.1), &code).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "single use: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn contested_ids_stay_with_their_first_holder_across_a_restart() {
    let t = Tenants::new().await;
    let server = t.start().await;
    assert!(row(&server, "victim", "OidcClient", "fixed", "True").await.is_some(), "{}", server.output());
    write_manifest(&t.manifests, "squatters.yaml", &squatters(&t.issuer));
    let conflict = row(&server, "aaa", "IdentityOidcAuth", "squatter", "IdentityIdConflict").await;
    assert!(conflict.is_some_and(|l| l.contains("spec.identityId")), "{}", server.output());
    let conflict = row(&server, "victim", "OidcClient", "aaa-fixed", "ClientIdConflict").await;
    assert!(conflict.is_some_and(|l| l.contains("spec.clientId")), "{}", server.output());

    // The victim's logins are still judged by the victim's bounds (the squatter's would refuse
    // the audience), and its client keeps its id.
    victim_keeps_its_ids(&t, &server).await;
    server.stop();

    // After a restart the state folder still knows who came first.
    let server = Server::start(&t.manifests, &t.state, &["--allow-insecure-issuers"]).await;
    assert!(row(&server, "aaa", "IdentityOidcAuth", "squatter", "IdentityIdConflict").await.is_some());
    assert!(row(&server, "victim", "OidcClient", "aaa-fixed", "ClientIdConflict").await.is_some());
    assert!(row(&server, "victim", "IdentityOidcAuth", "runner", "True").await.is_some(), "{}", server.output());
    victim_keeps_its_ids(&t, &server).await;
}

async fn victim_keeps_its_ids(t: &Tenants, server: &Server) {
    let jwt = t.issuer.mint("ES256", json!({}), None).await;
    let token = login_token(server, VICTIM_ID, &jwt).await;
    let (status, body) = authorize(server, &token, "fixed-client-id").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(confidential(&t.state, "victim", "fixed").0, "fixed-client-id");
}

#[tokio::test(flavor = "multi_thread")]
async fn secure_defaults_refuse_what_the_reference_would_accept() {
    let t = Tenants::new().await;
    let server = t.start().await;
    // An identity must bind an audience or say "*".
    let r = row(&server, "victim", "IdentityOidcAuth", "no-aud", "AudienceRequired").await;
    assert!(r.is_some_and(|l| l.contains("spec.boundAudiences")), "{}", server.output());
    let login = |id: &'static str, jwt: String| {
        let client = server.client().clone();
        let url = format!("{}/api/v1/auth/oidc-auth/login", server.api);
        async move {
            let resp = client.post(url).json(&json!({"identityId": id, "jwt": jwt})).send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let jwt = t.issuer.mint("ES256", json!({"aud": "anything-at-all"}), None).await;
    let (status, body) = login("0a11ce00-0000-4000-8000-0000000000ab", jwt.clone()).await;
    // Not served: answered as any unknown identity, as a bad signature.
    assert_eq!((status, body["error"].as_str()), (401, Some("bad_signature")), "{body}");
    assert!(row(&server, "victim", "IdentityOidcAuth", "any-aud", "True").await.is_some());
    let (status, body) = login(ANY_AUD_ID, jwt).await;
    assert_eq!(status, 200, "\"*\" accepts any audience: {body}");

    // An issuer override with dot segments is refused, naming the field.
    let r = row(&server, "victim", "OidcProvider", "dotted", "InvalidSpec").await;
    assert!(r.is_some_and(|l| l.contains("spec.issuer")), "{}", server.output());
    // Templates whose JSON a value could break, or that set a reserved claim, are refused.
    for scope in ["in-string", "azp"] {
        let r = row(&server, "victim", "OidcScope", scope, "TemplateInvalid").await;
        assert!(r.is_some_and(|l| l.contains("spec.template")), "{scope}: {}", server.output());
    }
}

/// Session records are capped and purged in the background: past the ceiling a login gets
/// 503 temporarily_unavailable (counted in /metrics), and once the records expire and are
/// purged logins succeed again, without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn the_session_store_has_a_ceiling_and_is_purged_in_the_background() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, state) = (tmp.path().join("m"), tmp.path().join("state"));
    std::fs::create_dir(&m).unwrap();
    let issuer = ExternalIssuer::start(tmp.path()).await;
    let short = "  accessTokenTTL: 1\n  accessTokenMaxTTL: 1\n";
    write_manifest(&m, "id.yaml", &identity_in("victim", "runner", VICTIM_ID, &issuer, "oidc-operator", short));
    // One namespace may hold the whole ceiling here: this test is about the ceiling itself.
    let args = [
        "--allow-insecure-issuers",
        "--max-session-records",
        "3",
        "--max-session-namespace-percent",
        "100",
        "--session-purge-interval",
        "1",
    ];
    let server = Server::start(&m, &state, &args).await;
    assert!(row(&server, "victim", "IdentityOidcAuth", "runner", "True").await.is_some(), "{}", server.output());
    let jwt = issuer.mint("ES256", json!({}), None).await;
    let login = || async {
        let resp = server
            .client()
            .post(format!("{}/api/v1/auth/oidc-auth/login", server.api))
            .json(&json!({"identityId": VICTIM_ID, "jwt": jwt}))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    };
    // Fill the store; logins within one second, before anything can expire.
    let mut refused = None;
    for _ in 0..4 {
        let (status, body) = login().await;
        if status != 200 {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("the fourth record is refused");
    assert_eq!((status, body["error"].as_str()), (503, Some("temporarily_unavailable")), "{body}");
    let metrics =
        server.client().get(format!("{}/metrics", server.metrics)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l
            .starts_with("oidc_operator_session_store_refusals_total{record=\"identity_token\",reason=\"records\"}")),
        "{metrics}"
    );
    // The tokens live one second; the purge runs every second: logins resume.
    eventually(10, "the purge to free the store", async || {
        let (status, body) = login().await;
        assert!(status == 200 || status == 503, "{status} {body}");
        status == 200
    })
    .await;
}

/// The ring of a deleted key that nothing uses is marked, kept for its verification window,
/// then deleted with its private keys; a key that nothing deleted keeps its ring.
#[tokio::test(flavor = "multi_thread")]
async fn the_ring_of_a_deleted_key_is_deleted_after_its_verification_window() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, state) = (tmp.path().join("m"), tmp.path().join("state"));
    std::fs::create_dir(&m).unwrap();
    let key = |name: &str| {
        format!(
            "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcKey\nmetadata: {{name: {name}, namespace: victim}}\nspec: {{rotationPeriod: 1m, verificationTTL: 3s}}\n---\n"
        )
    };
    write_manifest(&m, "keys.yaml", &format!("{}{}", key("gone"), key("kept")));
    let server = Server::start(&m, &state, &[]).await;
    for name in ["gone", "kept"] {
        assert!(row(&server, "victim", "OidcKey", name, "True").await.is_some(), "{}", server.output());
    }
    let ring = |name: &str| std::fs::read_to_string(state.join(format!("keys/victim/{name}.json"))).ok();
    assert!(ring("gone").is_some_and(|r| !r.contains("orphanedAt")));
    write_manifest(&m, "keys.yaml", &key("kept"));
    let was_marked =
        holds_within(Duration::from_secs(10), async || ring("gone").is_some_and(|r| r.contains("orphanedAt"))).await;
    assert!(was_marked, "the unused ring was never marked: {}", server.output());
    let marked = std::time::Instant::now();
    eventually(15, "the unused ring to be deleted", async || ring("gone").is_none()).await;
    assert!(
        marked.elapsed() >= Duration::from_millis(1500),
        "kept for its verification window ({:?})",
        marked.elapsed()
    );
    assert!(ring("kept").is_some_and(|r| !r.contains("orphanedAt")), "a key still declared keeps its ring");
}

/// Issue 20, item 2: one namespace at its share of the session store is refused alone (503,
/// counted with reason="namespace_quota", no tenant name in any label) while another
/// namespace keeps logging in; removing the greedy identity frees its records within a
/// purge interval. Item 1: a login whose mapped claims would make a large record is
/// refused with its own error, and nothing is stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_at_its_session_quota_is_refused_alone_and_its_deleted_identity_frees_its_records() {
    const GREEDY_ID: &str = "9eed0000-0000-4000-8000-00000000000b";
    const WIDE_ID: &str = "9eed0000-0000-4000-8000-00000000000c";
    let tmp = tempfile::tempdir().unwrap();
    let (m, state) = (tmp.path().join("m"), tmp.path().join("state"));
    std::fs::create_dir(&m).unwrap();
    let issuer = ExternalIssuer::start(tmp.path()).await;
    write_manifest(&m, "victim.yaml", &identity_in("victim", "runner", VICTIM_ID, &issuer, "oidc-operator", ""));
    write_manifest(&m, "greedy.yaml", &identity_in("greedy", "runner", GREEDY_ID, &issuer, "oidc-operator", ""));
    let mappings: String = (0..32).map(|i| format!("    m{i}: big\n")).collect();
    let wide =
        identity_in("greedy", "wide", WIDE_ID, &issuer, "oidc-operator", &format!("  claimMappings:\n{mappings}"));
    write_manifest(&m, "wide.yaml", &wide);
    // 100 records in all, 10 per namespace.
    let args = [
        "--allow-insecure-issuers",
        "--max-session-records",
        "100",
        "--max-session-namespace-percent",
        "10",
        "--session-purge-interval",
        "1",
    ];
    let server = Server::start(&m, &state, &args).await;
    for (ns, name) in [("victim", "runner"), ("greedy", "runner"), ("greedy", "wide")] {
        assert!(row(&server, ns, "IdentityOidcAuth", name, "True").await.is_some(), "{}", server.output());
    }
    let jwt = issuer.mint("ES256", json!({"big": "b".repeat(300)}), None).await;
    let login = |id: &'static str| {
        let (server, jwt) = (&server, jwt.clone());
        async move {
            let resp = server
                .client()
                .post(format!("{}/api/v1/auth/oidc-auth/login", server.api))
                .json(&json!({"identityId": id, "jwt": jwt}))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    // 32 copies of a 300-byte claim: refused with its own error, nothing stored.
    let (status, body) = login(WIDE_ID).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("claims_too_large")), "{body}");

    for i in 0..10 {
        let (status, body) = login(GREEDY_ID).await;
        assert_eq!(status, 200, "login {i} within the share: {body}");
    }
    let (status, body) = login(GREEDY_ID).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("temporarily_unavailable")), "{body}");
    let (status, body) = login(VICTIM_ID).await;
    assert_eq!(status, 200, "another namespace still logs in: {body}");
    let metrics_url = format!("{}/metrics", server.metrics);
    let metrics = server.client().get(&metrics_url).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "oidc_operator_session_store_refusals_total{record=\"identity_token\",reason=\"namespace_quota\"}"
        )),
        "{metrics}"
    );
    assert!(!metrics.contains("greedy"), "a tenant's name in a metric label:\n{metrics}");

    // Removing the greedy identity frees its ten records at the next purge.
    std::fs::remove_file(m.join("greedy.yaml")).unwrap();
    let mut metrics = String::new();
    let freed = holds_within(Duration::from_secs(10), async || {
        metrics = server.client().get(&metrics_url).send().await.unwrap().text().await.unwrap();
        metrics.lines().any(|l| l == "oidc_operator_session_store_records 1")
    })
    .await;
    assert!(freed, "the deleted identity's records stayed:\n{metrics}");
}

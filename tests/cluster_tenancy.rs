//! Tenancy on a real cluster (kube-apiserver + etcd from their Go modules, the operator binary
//! running against it): a hostile namespace that forges a labelled key-ring Secret repeating
//! another tenant's kid, and claims another tenant's identity id, changes nothing the victim
//! signs, publishes or admits, before and after an operator restart.

// Test helpers outside #[test] functions stop the test on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine;
use common::cluster::{ControlPlane, jsonpath, ready_field, wait_ready};
use common::{Server, eventually};
use serde_json::Value;

const SET: &str = "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcKey\nmetadata: {name: signing}\nspec: {algorithm: ES256, allowedClients: [\"*\"]}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {name: app}\nspec: {key: signing, redirectUris: [\"https://app.example/cb\"], assignments: [allow_all]}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {name: main}\nspec: {allowedClients: [\"*\"]}\n";

fn identity(name: &str, cp: &ControlPlane, extra: &str) -> String {
    format!(
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: IdentityOidcAuth\nmetadata: {{name: {name}}}\nspec:\n  oidcDiscoveryUrl: {url}\n  boundIssuer: {url}\n  boundAudiences: oidc-operator\n{extra}  caCert: |\n{ca}",
        url = cp.url,
        ca = common::yaml_block(&cp.ca_pem(), 4),
    )
}

/// The JWK with `kid` in a JWKS.
fn jwk<'a>(jwks: &'a Value, kid: &str) -> Option<&'a Value> {
    jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid)
}

async fn start_operator(cp: &ControlPlane, dir: &std::path::Path) -> Server {
    Server::operator(
        &cp.kubeconfig,
        dir,
        &["--plain-http", "--allow-insecure-issuers", "--issuer-refetch-interval", "1"],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_namespace_can_neither_take_nor_disable_another_tenants_kid_or_identity_id() {
    let cp = tokio::task::spawn_blocking(ControlPlane::start).await.unwrap();
    cp.allow_anonymous_issuer_discovery();
    let (victim, hostile) = (cp.namespace(), cp.namespace());
    let tmp = tempfile::tempdir().unwrap();
    let operator = start_operator(&cp, &tmp.path().join("op")).await;

    // The victim: a key, a client, a provider and an identity, all Ready.
    let (ok, err) = cp.apply(&victim, &format!("{SET}---\n{}", identity("runner", &cp, "")));
    assert!(ok, "{err}");
    let all = ["oidckey/signing", "oidcclient/app", "oidcprovider/main", "identityoidcauth/runner"];
    wait_ready(&cp, &victim, &all, &operator);
    let victim_jwks = operator.jwks(&victim, "main").await;
    let victim_kid = jsonpath(&cp, &victim, "oidckey/signing", "{.status.currentKid}");
    let victim_id = jsonpath(&cp, &victim, "identityoidcauth/runner", "{.status.identityId}");
    assert!(jwk(&victim_jwks, &victim_kid).is_some());

    // The hostile namespace: the same set, then its ring Secret forged to list the victim's kid
    // as its own current key, with its own material.
    let (ok, err) = cp.apply(&hostile, SET);
    assert!(ok, "{err}");
    wait_ready(&cp, &hostile, &["oidckey/signing", "oidcclient/app", "oidcprovider/main"], &operator);
    let b64 = jsonpath(&cp, &hostile, "secret/oidc-key-signing", "{.data.keyring\\.json}");
    let mut ring: Value =
        serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap();
    ring["current"]["kid"] = Value::String(victim_kid.clone());
    let forged = base64::engine::general_purpose::STANDARD.encode(ring.to_string());
    let patch = format!("{{\"data\": {{\"keyring.json\": \"{forged}\"}}}}");
    let out = cp.kubectl(&["patch", "-n", &hostile, "secret/oidc-key-signing", "--type=merge", "-p", &patch]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The later ring is reported by a Warning Event on its Secret, naming the kid but not
    // the other tenant ...
    let conflict_event = || {
        let out = cp.kubectl(&["get", "events.events.k8s.io", "-n", &hostile, "-o", "json"]);
        let events: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        events["items"].as_array().and_then(|items| {
            items
                .iter()
                .find(|e| e["reason"] == "KidConflict" && e["type"] == "Warning" && e["regarding"]["kind"] == "Secret")
                .cloned()
        })
    };
    eventually(30, "a KidConflict Warning Event", async || conflict_event().is_some()).await;
    let note = conflict_event().unwrap()["note"].as_str().unwrap_or_default().to_owned();
    assert!(note.contains(&victim_kid) && !note.contains(&victim), "{note}");
    // ... its provider publishes its own material under that kid, never the victim's ...
    let hostile_jwks = operator.jwks(&hostile, "main").await;
    let theirs = jwk(&hostile_jwks, &victim_kid).expect("the hostile ring serves its own material");
    assert_ne!(theirs["x"], jwk(&victim_jwks, &victim_kid).unwrap()["x"], "never the victim's key");
    // ... and the victim's JWKS, key and identity are untouched.
    assert_eq!(operator.jwks(&victim, "main").await, victim_jwks);
    assert_eq!(ready_field(&cp, &victim, "oidckey/signing", "status"), "True");

    // A hostile identity claiming the victim's identity id (created later) is not Ready.
    // Its bounds refuse the victim's tokens: were it to take the id, the victim's logins fail.
    let squatter = identity("squatter", &cp, &format!("  identityId: {victim_id}\n  boundSubject: nobody\n"));
    let (ok, err) = cp.apply(&hostile, &squatter);
    assert!(ok, "{err}");
    eventually(30, "IdentityIdConflict on the squatter", async || {
        ready_field(&cp, &hostile, "identityoidcauth/squatter", "reason") == "IdentityIdConflict"
    })
    .await;
    assert!(ready_field(&cp, &hostile, "identityoidcauth/squatter", "message").contains("spec.identityId"));
    assert_eq!(ready_field(&cp, &victim, "identityoidcauth/runner", "status"), "True");

    // After a restart (no memory of who served what), the victim still keeps everything: the
    // kid by its own ring's material, the id by creation order.
    operator.stop();
    let operator = start_operator(&cp, &tmp.path().join("op2")).await;
    let jwks_url = format!("{}/.well-known/keys", operator.issuer(&victim, "main"));
    assert!(operator.wait_status(&jwks_url, 200, Duration::from_secs(30)).await, "{}", operator.output());
    assert_eq!(operator.jwks(&victim, "main").await, victim_jwks, "the victim publishes its own keys");
    let hostile_jwks = operator.jwks(&hostile, "main").await;
    assert_ne!(jwk(&hostile_jwks, &victim_kid).unwrap()["x"], jwk(&victim_jwks, &victim_kid).unwrap()["x"]);
    let sa = cp.kubectl(&["create", "serviceaccount", "runner", "-n", &victim]);
    assert!(sa.status.success());
    let out = cp.kubectl(&["create", "token", "runner", "-n", &victim, "--audience", "oidc-operator"]);
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    // The victim's id logs in under the victim's bounds (the squatter's would refuse it).
    common::login_token(&operator, &victim_id, &token).await;
    assert_eq!(ready_field(&cp, &hostile, "identityoidcauth/squatter", "reason"), "IdentityIdConflict");
}

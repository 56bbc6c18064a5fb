//! The end-to-end tier: the CRDs on a real kube-apiserver + etcd (built from their official
//! Go modules), where the API server itself refuses bad manifests with the CRDs' schema and
//! CEL rules.

// Test helpers outside #[test] functions stop the test on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine;
use common::cluster::{ControlPlane, jsonpath, ready_field, wait_ready};
use common::{Server, eventually, flow};
use serde_json::{Value, json};

const KEY: &str = "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcKey\nmetadata: {name: k}\n";
const CLIENT: &str = "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {name: app}\n";
const IDENTITY: &str = "apiVersion: oidc-operator.dev/v1alpha1\nkind: IdentityOidcAuth\nmetadata: {name: runner}\n";
const CLIENT_PK: &str = "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {name: pk}\n";
const ISSUER: &str = "oidcDiscoveryUrl: https://issuer.example, boundIssuer: https://issuer.example";

#[test]
fn the_api_server_accepts_good_manifests_and_refuses_bad_ones_by_the_crd_rules() {
    let cp = ControlPlane::start();
    let ns = cp.namespace();

    // The examples apply as they are.
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let out = cp.kubectl(&["apply", "-n", &ns, "-f", examples.to_str().unwrap()]);
    assert!(out.status.success(), "examples refused: {}", String::from_utf8_lossy(&out.stderr));
    // Defaults are filled in by the schema.
    let out = cp.kubectl(&["get", "-n", &ns, "oidcclient", "cli", "-o", "jsonpath={.spec.key} {.spec.idTokenTTL}"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "default 24h");
    // Short names and printer columns work.
    let out = cp.kubectl(&["get", "-n", &ns, "okey,oclient,oscope,oassign,oprov,oidauth"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("CLIENT ID") && table.contains("REASON"), "{table}");

    let refused = |what: &str, yaml: String, needle: &str| {
        let (ok, err) = cp.apply(&ns, &yaml);
        assert!(!ok, "{what}: accepted, but should be refused");
        assert!(err.contains(needle), "{what}: refused, but not for {needle:?}: {err}");
    };
    refused(
        "accessTokenTTL above accessTokenMaxTTL",
        format!("{IDENTITY}spec: {{{ISSUER}, accessTokenTTL: 7200, accessTokenMaxTTL: 3600}}\n"),
        "accessTokenTTL must not exceed accessTokenMaxTTL",
    );
    refused("accessTokenTTL 0", format!("{IDENTITY}spec: {{{ISSUER}, accessTokenTTL: 0}}\n"), "spec.accessTokenTTL");
    refused(
        "accessTokenMaxTTL at the exclusive bound",
        format!("{IDENTITY}spec: {{{ISSUER}, accessTokenMaxTTL: 315360000}}\n"),
        "spec.accessTokenMaxTTL",
    );
    refused(
        "negative use limit",
        format!("{IDENTITY}spec: {{{ISSUER}, accessTokenNumUsesLimit: -1}}\n"),
        "spec.accessTokenNumUsesLimit",
    );
    refused("missing boundIssuer", format!("{IDENTITY}spec: {{oidcDiscoveryUrl: https://x}}\n"), "boundIssuer");
    refused("unknown algorithm", format!("{KEY}spec: {{algorithm: HS256}}\n"), "Unsupported value: \"HS256\"");
    refused("rotation below 1m", format!("{KEY}spec: {{rotationPeriod: 30s}}\n"), "rotationPeriod must be at least 1m");
    refused(
        "rotation below 1m as an integer",
        format!("{KEY}spec: {{rotationPeriod: 59}}\n"),
        "rotationPeriod must be at least 1m",
    );
    refused(
        "verificationTTL above 10 x rotationPeriod",
        format!("{KEY}spec: {{rotationPeriod: 1h, verificationTTL: 11h}}\n"),
        "verificationTTL must not exceed 10 x rotationPeriod",
    );
    refused(
        "duration with days",
        format!("{KEY}spec: {{rotationPeriod: 1d}}\n"),
        "must be integer seconds or a duration",
    );
    refused("unknown client type", format!("{CLIENT}spec: {{clientType: secretive}}\n"), "Unsupported value");
    // Grants (issue 22): the CRD refuses what the token endpoint could never honour.
    refused(
        "public client with client_credentials",
        format!("{CLIENT}spec: {{clientType: public, grantTypes: [client_credentials]}}\n"),
        "a public client cannot use client_credentials",
    );
    refused(
        "unknown grant type",
        format!("{CLIENT}spec: {{grantTypes: [password]}}\n"),
        "Unsupported value: \"password\"",
    );
    refused(
        "a grant type listed twice",
        format!("{CLIENT}spec: {{grantTypes: [refresh_token, refresh_token]}}\n"),
        "list each grant type once",
    );
    refused("no grant type", format!("{CLIENT}spec: {{grantTypes: []}}\n"), "spec.grantTypes");
    refused(
        "confidential client authenticating with none",
        format!("{CLIENT}spec: {{tokenEndpointAuthMethod: none}}\n"),
        "tokenEndpointAuthMethod must be none for a public client",
    );
    refused(
        "public client with a secret method",
        format!("{CLIENT}spec: {{clientType: public, tokenEndpointAuthMethod: client_secret_basic}}\n"),
        "tokenEndpointAuthMethod must be none for a public client",
    );
    refused(
        "unknown auth method",
        format!("{CLIENT}spec: {{tokenEndpointAuthMethod: client_secret_jwt}}\n"),
        "Unsupported value: \"client_secret_jwt\"",
    );
    // private_key_jwt (issue 23): keys or federated identities, for confidential clients only.
    refused(
        "private_key_jwt without keys or identities",
        format!("{CLIENT}spec: {{tokenEndpointAuthMethod: private_key_jwt}}\n"),
        "private_key_jwt needs jwks, jwksUri or federatedIdentities",
    );
    refused(
        "a public client with private_key_jwt",
        format!(
            "{CLIENT}spec: {{clientType: public, tokenEndpointAuthMethod: private_key_jwt, federatedIdentities: [ci]}}\n"
        ),
        "tokenEndpointAuthMethod must be none for a public client",
    );
    refused(
        "federatedIdentities without private_key_jwt",
        format!("{CLIENT}spec: {{federatedIdentities: [ci]}}\n"),
        "jwks, jwksUri and federatedIdentities are for tokenEndpointAuthMethod private_key_jwt",
    );
    refused(
        "a private JWK member",
        format!(
            "{CLIENT}spec: {{tokenEndpointAuthMethod: private_key_jwt, jwks: {{keys: [{{kty: OKP, crv: Ed25519, x: abc, d: secret}}]}}}}\n"
        ),
        "spec.jwks.keys[0].d",
    );
    refused(
        "jwks and jwksUri both",
        format!(
            "{CLIENT}spec: {{tokenEndpointAuthMethod: private_key_jwt, jwksUri: \"https://keys.example/jwks\", jwks: {{keys: [{{kty: OKP, crv: Ed25519, x: abc}}]}}}}\n"
        ),
        "use jwks or jwksUri, not both",
    );
    let (ok, err) = cp.apply(
        &ns,
        &format!("{CLIENT_PK}spec: {{tokenEndpointAuthMethod: private_key_jwt, federatedIdentities: [ci], jwks: {{keys: [{{kty: OKP, crv: Ed25519, kid: a, x: 11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo}}]}}}}\n"),
    );
    assert!(ok, "a private_key_jwt client: {err}");
    refused(
        "unknown access token format",
        format!("{CLIENT}spec: {{accessTokenFormat: paseto}}\n"),
        "Unsupported value",
    );
    refused(
        "refreshTokenTTL above refreshTokenMaxTTL",
        format!("{CLIENT}spec: {{refreshTokenTTL: 48h, refreshTokenMaxTTL: 24h}}\n"),
        "refreshTokenTTL must not exceed refreshTokenMaxTTL",
    );
    let grants = cp.kubectl(&["get", "-n", &ns, "oidcclient", "billing-api", "-o", "jsonpath={.spec.grantTypes}"]);
    assert_eq!(String::from_utf8_lossy(&grants.stdout), r#"["authorization_code","refresh_token"]"#);
    let defaults = cp.kubectl(&[
        "get",
        "-n",
        &ns,
        "oidcclient",
        "cli",
        "-o",
        "jsonpath={.spec.grantTypes} {.spec.accessTokenFormat} {.spec.refreshTokenTTL}",
    ]);
    assert_eq!(String::from_utf8_lossy(&defaults.stdout), r#"["authorization_code"] opaque 168h"#);
    refused(
        "scope named openid",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {name: openid}\nspec: {}\n".into(),
        "the scope name openid is reserved",
    );
    refused(
        "provider listing openid",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {name: p}\nspec: {scopesSupported: [openid]}\n".into(),
        "openid is always supported",
    );
    refused(
        "assignment named allow_all",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcAssignment\nmetadata: {name: allow_all}\nspec: {}\n".into(),
        "built in",
    );

    // Size limits (issue 20): every list, map and string a tenant writes is bounded, and the
    // API server names the field.
    let mappings: Vec<String> = (0..33).map(|i| format!("k{i}: email")).collect();
    refused(
        "33 claimMappings",
        format!("{IDENTITY}spec: {{{ISSUER}, claimMappings: {{{}}}}}\n", mappings.join(", ")),
        "spec.claimMappings: Too many: 33: must have at most 32 items",
    );
    refused(
        "a claimMappings key of 129 characters",
        format!("{IDENTITY}spec: {{{ISSUER}, claimMappings: {{{}: email}}}}\n", "k".repeat(129)),
        "keys must be at most 128 characters",
    );
    refused(
        "a metadata value of 513 characters",
        format!("{IDENTITY}spec: {{{ISSUER}, metadata: {{team: {}}}}}\n", "v".repeat(513)),
        "spec.metadata.team: Too long",
    );
    let uris: Vec<String> = (0..33).map(|i| format!("\"https://a/{i}\"")).collect();
    refused(
        "33 redirect URIs",
        format!("{CLIENT}spec: {{redirectUris: [{}]}}\n", uris.join(", ")),
        "spec.redirectUris: Too many: 33: must have at most 32 items",
    );
    refused(
        "an empty pkceMethods",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {name: p}\nspec: {pkceMethods: []}\n"
            .into(),
        "spec.pkceMethods",
    );

    // Good values in both duration forms are accepted.
    let (ok, err) = cp.apply(&ns, &format!("{KEY}spec: {{rotationPeriod: 3600, verificationTTL: 1h30m}}\n"));
    assert!(ok, "{err}");
    // RFC 8693 leaves client authentication optional: a public client (an agent holding
    // only a service-account token) may list the token exchange grant (`agent` of examples/
    // does too).
    let agent = "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {name: exchange-agent}\n\
                 spec: {clientType: public, grantTypes: [\"urn:ietf:params:oauth:grant-type:token-exchange\"]}\n";
    let (ok, err) = cp.apply(&ns, agent);
    assert!(ok, "a public client with the token exchange grant: {err}");

    // Immutable fields: clientType and key.
    let (ok, err) = cp.apply(&ns, &format!("{CLIENT}spec: {{clientType: confidential, key: k}}\n"));
    assert!(ok, "{err}");
    refused(
        "changing clientType",
        format!("{CLIENT}spec: {{clientType: public, key: k}}\n"),
        "clientType is immutable",
    );
    refused("changing key", format!("{CLIENT}spec: {{clientType: confidential, key: other}}\n"), "key is immutable");
    let (ok, err) = cp
        .apply(&ns, &format!("{CLIENT}spec: {{clientType: confidential, key: k, redirectUris: [\"https://a/cb\"]}}\n"));
    assert!(ok, "other fields stay editable: {err}");
}

/// The workload-identity flow on a real cluster: the operator keeps Secrets and status, a
/// ServiceAccount token (signed by the API server) logs in to an IdentityOidcAuth that trusts
/// the API server's own service-account issuer, and openidconnect verifies the ID token.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_serves_the_workload_identity_flow_on_a_cluster() {
    let cp = tokio::task::spawn_blocking(ControlPlane::start).await.unwrap();
    let ns = cp.namespace();
    cp.allow_anonymous_issuer_discovery();

    let tmp = tempfile::tempdir().unwrap();
    let operator = Server::operator(
        &cp.kubeconfig,
        &tmp.path().join("op"),
        &["--plain-http", "--allow-insecure-issuers", "--issuer-refetch-interval", "1"],
    )
    .await;

    let (ok, err) = cp.apply(&ns, &flow::workload_manifests(&cp, &ns));
    assert!(ok, "{err}");
    wait_ready(&cp, &ns, &flow::WORKLOAD_OBJECTS, &operator);

    // Status facts and the client's Secret.
    let issuer = jsonpath(&cp, &ns, "oidcprovider/main", "{.status.issuer}");
    assert_eq!(issuer, operator.issuer(&ns, "main"));
    assert!(!jsonpath(&cp, &ns, "oidckey/signing", "{.status.currentKid}").is_empty());
    let identity_id = jsonpath(&cp, &ns, "identityoidcauth/runner", "{.status.identityId}");
    assert_eq!(identity_id, jsonpath(&cp, &ns, "identityoidcauth/runner", "{.metadata.uid}"));
    let (client_id, client_secret) = flow::client_credentials(&cp, &ns, "app");
    assert_eq!(client_id, jsonpath(&cp, &ns, "oidcclient/app", "{.status.clientId}"));
    let decode =
        |b64: String| String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap();
    assert_eq!(decode(jsonpath(&cp, &ns, "secret/app-oidc-client", "{.data.issuer}")), issuer);
    assert!(client_secret.unwrap().starts_with("oidcop_secret_"));

    // A real service-account token logs in; authorize -> token with openidconnect, which
    // verifies the ID token with discovery + JWKS.
    let flow = flow::run(&cp, &ns, &operator, "main", "app", &["groups"], None).await;
    assert_eq!(flow.claims["groups"], json!(["platform"]));
    assert_eq!(flow.claims["sa"], format!("system:serviceaccount:{ns}:runner"));

    // Token exchange (RFC 8693): the same kind of token, from the TokenRequest API, becomes an
    // ID token for `app` in one call by a public client holding nothing else; openidconnect
    // verifies it.
    let agent = "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {name: agent}\n\
                 spec: {clientType: public, key: signing, assignments: [platform], \
                 grantTypes: [\"urn:ietf:params:oauth:grant-type:token-exchange\"]}\n";
    let (ok, err) = cp.apply(&ns, agent);
    assert!(ok, "{err}");
    wait_ready(&cp, &ns, &["oidcclient/agent"], &operator);
    let (agent_id, agent_secret) = flow::client_credentials(&cp, &ns, "agent");
    assert!(agent_secret.is_none(), "a public client has no secret");
    let sa_token = flow::service_account_token(&cp, &ns, "runner", "oidc-operator");
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("client_id", agent_id.as_str()),
        ("subject_token", sa_token.as_str()),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ("audience", flow.client_id.as_str()),
        ("scope", "openid groups"),
    ];
    let resp = reqwest::Client::new().post(format!("{}/token", flow.issuer)).form(&form).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let exchanged: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(exchanged["issued_token_type"], "urn:ietf:params:oauth:token-type:id_token", "{exchanged}");
    let claims =
        flow::verify_id_token(&flow.issuer, &flow.client_id, exchanged["access_token"].as_str().unwrap()).await;
    assert_eq!(
        (claims["sub"].as_str(), claims["groups"].clone()),
        (Some(flow.identity_id.as_str()), json!(["platform"]))
    );
    // It holds key `signing` too: gone, so the key's deletion below waits for `app` alone.
    let out = cp.kubectl(&["delete", "-n", &ns, "oidcclient/agent", "--wait=true"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A restart of the operator keeps every key and client credential byte-identical.
    let key_data = jsonpath(&cp, &ns, "secret/oidc-key-signing", "{.data}");
    let creds =
        |cp: &ControlPlane| jsonpath(cp, &ns, "secret/app-oidc-client", "{.data.client_id} {.data.client_secret}");
    let creds_before = creds(&cp);
    let kids_before = common::kids(&operator.jwks(&ns, "main").await);
    operator.stop();
    let operator = Server::operator(
        &cp.kubeconfig,
        &tmp.path().join("op2"),
        &["--plain-http", "--allow-insecure-issuers", "--issuer-refetch-interval", "1"],
    )
    .await;
    let discovery = format!("{}/.well-known/openid-configuration", operator.issuer(&ns, "main"));
    assert!(operator.wait_status(&discovery, 200, Duration::from_secs(30)).await, "{}", operator.output());
    assert_eq!(common::kids(&operator.jwks(&ns, "main").await), kids_before);
    assert_eq!(jsonpath(&cp, &ns, "secret/oidc-key-signing", "{.data}"), key_data);
    assert_eq!(creds(&cp), creds_before);

    // Deleting a key that a client uses is held, and the key keeps serving.
    let out = cp.kubectl(&["delete", "-n", &ns, "oidckey/signing", "--wait=false"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually(30, "the deletion to be held", async || {
        ready_field(&cp, &ns, "oidckey/signing", "reason") == "DeletionHeld"
    })
    .await;
    let msg = ready_field(&cp, &ns, "oidckey/signing", "message");
    assert!(msg.contains("app"), "{msg}");
    assert_eq!(common::kids(&operator.jwks(&ns, "main").await), kids_before, "still published");

    // References to missing objects: Ready=False naming the field; the rest keeps serving.
    let (ok, err) = cp.apply(
        &ns,
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {name: orphan}\nspec: {key: missing, assignments: [allow_all]}\n",
    );
    assert!(ok, "{err}");
    eventually(30, "KeyNotFound on the orphan", async || {
        ready_field(&cp, &ns, "oidcclient/orphan", "reason") == "KeyNotFound"
    })
    .await;
    let msg = ready_field(&cp, &ns, "oidcclient/orphan", "message");
    assert!(msg.starts_with("spec.key"), "{msg}");
    assert_eq!(ready_field(&cp, &ns, "oidcclient/app", "status"), "True");

    // Deleting a client removes its Secret, and releases the key it held.
    let out = cp.kubectl(&["delete", "-n", &ns, "oidcclient/app", "--wait=true"]);
    assert!(out.status.success());
    eventually(30, "the client's Secret to be deleted", async || {
        !cp.kubectl(&["get", "-n", &ns, "secret/app-oidc-client"]).status.success()
    })
    .await;
    eventually(30, "the released key to be deleted", async || {
        !cp.kubectl(&["get", "-n", &ns, "oidckey/signing"]).status.success()
    })
    .await;
}

const SIGNING_SET: &str = "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcKey\nmetadata: {name: signing}\nspec: {algorithm: ES256, allowedClients: [\"*\"]}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {name: app}\nspec: {key: signing, redirectUris: [\"https://app.example/cb\"], assignments: [allow_all]}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {name: main}\nspec: {allowedClients: [\"*\"]}\n";

fn client(name: &str) -> String {
    format!(
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {{name: {name}}}\nspec: {{key: signing, redirectUris: [\"https://app.example/cb\"], assignments: [allow_all]}}\n"
    )
}

/// kube-apiserver stopped while the operator runs: the operator keeps serving from its
/// snapshot, catches up once the API server is back, and no key is lost or replaced.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_keeps_serving_while_the_api_server_is_down_and_catches_up() {
    let mut cp = tokio::task::spawn_blocking(ControlPlane::start).await.unwrap();
    let ns = cp.namespace();
    let tmp = tempfile::tempdir().unwrap();
    let operator = Server::operator(&cp.kubeconfig, &tmp.path().join("op"), &["--plain-http"]).await;
    let (ok, err) = cp.apply(&ns, SIGNING_SET);
    assert!(ok, "{err}");
    wait_ready(&cp, &ns, &["oidckey/signing", "oidcclient/app", "oidcprovider/main"], &operator);
    let key_data = jsonpath(&cp, &ns, "secret/oidc-key-signing", "{.data}");
    let creds = jsonpath(&cp, &ns, "secret/app-oidc-client", "{.data}");
    let kids = common::kids(&operator.jwks(&ns, "main").await);
    let discovery = format!("{}/.well-known/openid-configuration", operator.issuer(&ns, "main"));

    // Down for longer than the lease's renew deadline (10 s): the operator stops writing but
    // keeps serving discovery, JWKS and readiness from its snapshot.
    cp.stop_apiserver();
    let down = std::time::Instant::now();
    while down.elapsed() < Duration::from_secs(12) {
        assert_eq!(operator.get_json(&discovery).await.0, 200, "discovery while the API server is down");
        assert_eq!(common::kids(&operator.jwks(&ns, "main").await), kids, "JWKS while the API server is down");
        let ready = reqwest::get(format!("{}/readyz", operator.metrics)).await.unwrap().status().as_u16();
        assert_eq!(ready, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::task::block_in_place(|| cp.start_apiserver());

    // It catches up: a client applied after the restart becomes Ready with its Secret.
    let (ok, err) = cp.apply(&ns, &client("late"));
    assert!(ok, "{err}");
    wait_ready(&cp, &ns, &["oidcclient/late"], &operator);
    assert!(!jsonpath(&cp, &ns, "secret/late-oidc-client", "{.data.client_id}").is_empty());
    assert_eq!(jsonpath(&cp, &ns, "secret/oidc-key-signing", "{.data}"), key_data, "key material kept");
    assert_eq!(jsonpath(&cp, &ns, "secret/app-oidc-client", "{.data}"), creds, "credentials kept");
    assert_eq!(common::kids(&operator.jwks(&ns, "main").await), kids);

    // A scope with a bad template is not Ready, naming the field; the rest keeps serving.
    let (ok, err) = cp.apply(
        &ns,
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {name: broken}\nspec: {template: '{\"a\": {{identity.entity.nope}}}'}\n",
    );
    assert!(ok, "{err}");
    let ready = |what: &str, field: &str| ready_field(&cp, &ns, what, field);
    eventually(30, "TemplateInvalid on the broken scope", async || {
        ready("oidcscope/broken", "reason") == "TemplateInvalid"
    })
    .await;
    assert!(ready("oidcscope/broken", "message").contains("spec.template"), "{}", ready("oidcscope/broken", "message"));
    assert_eq!(ready("oidcprovider/main", "status"), "True");
    assert_eq!(ready("oidcclient/app", "status"), "True");
    assert_eq!(operator.get_json(&discovery).await.0, 200);

    // A client naming someone else's Secret gets a Warning and never writes over it: not a key
    // ring, not a Secret the operator does not manage.
    let out = cp.kubectl(&["create", "secret", "generic", "mine", "-n", &ns, "--from-literal=a=b"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let squatters = "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {name: thief}\nspec: {key: signing, assignments: [allow_all], secretName: oidc-key-signing}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {name: squatter}\nspec: {key: signing, assignments: [allow_all], secretName: mine}\n";
    let (ok, err) = cp.apply(&ns, squatters);
    assert!(ok, "{err}");
    eventually(30, "SecretNameConflict Events for both clients", async || {
        let out = cp.kubectl(&[
            "get",
            "events",
            "-n",
            &ns,
            "-o",
            "jsonpath={range .items[*]}{.reason} {.involvedObject.name}{\"\\n\"}{end}",
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("SecretNameConflict thief") && text.contains("SecretNameConflict squatter")
    })
    .await;
    for client in ["thief", "squatter"] {
        eventually(30, "Ready=False SecretNameConflict", async || {
            ready(&format!("oidcclient/{client}"), "reason") == "SecretNameConflict"
        })
        .await;
        assert!(ready(&format!("oidcclient/{client}"), "message").starts_with("spec.secretName"));
    }
    assert_eq!(jsonpath(&cp, &ns, "secret/oidc-key-signing", "{.data}"), key_data, "the key ring is untouched");
    assert_eq!(jsonpath(&cp, &ns, "secret/mine", "{.data}"), "{\"a\":\"Yg==\"}", "the other Secret is untouched");
    assert_eq!(jsonpath(&cp, &ns, "secret/mine", "{.metadata.labels}"), "");
    assert_eq!(common::kids(&operator.jwks(&ns, "main").await), kids);
    // Naming a free Secret mends it.
    let (ok, err) = cp.apply(&ns, &squatters.replace("secretName: oidc-key-signing", "secretName: thief-creds"));
    assert!(ok, "{err}");
    wait_ready(&cp, &ns, &["oidcclient/thief"], &operator);
    assert!(!jsonpath(&cp, &ns, "secret/thief-creds", "{.data.client_id}").is_empty());
}

/// A rotation that falls while the operator is stopped: the key that signs after the restart
/// is the one published before it, and its successor is published at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_across_an_operator_restart_publishes_the_next_key_before_use() {
    let cp = tokio::task::spawn_blocking(ControlPlane::start).await.unwrap();
    let ns = cp.namespace();
    let tmp = tempfile::tempdir().unwrap();
    let operator = Server::operator(&cp.kubeconfig, &tmp.path().join("op"), &["--plain-http"]).await;
    let set = SIGNING_SET
        .replace(
            "spec: {algorithm: ES256, allowedClients: [\"*\"]}",
            "spec: {algorithm: ES256, allowedClients: [\"*\"], rotationPeriod: 1m, verificationTTL: 1m}",
        )
        .replace("assignments: [allow_all]}", "assignments: [allow_all], idTokenTTL: 1m}");
    let (ok, err) = cp.apply(&ns, &set);
    assert!(ok, "{err}");
    wait_ready(&cp, &ns, &["oidckey/signing", "oidcclient/app", "oidcprovider/main"], &operator);
    let current = jsonpath(&cp, &ns, "oidckey/signing", "{.status.currentKid}");
    let next = jsonpath(&cp, &ns, "oidckey/signing", "{.status.nextKid}");
    let due = jsonpath(&cp, &ns, "oidckey/signing", "{.status.nextRotation}");
    let published_before = common::kids(&operator.jwks(&ns, "main").await);
    assert!(published_before.contains(&current) && published_before.contains(&next), "{published_before:?}");
    operator.stop();

    // Stay stopped until the rotation is past due.
    let due: k8s_openapi::jiff::Timestamp = due.parse().unwrap();
    loop {
        let now = k8s_openapi::jiff::Timestamp::now();
        if now > due + k8s_openapi::jiff::SignedDuration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let operator = Server::operator(&cp.kubeconfig, &tmp.path().join("op2"), &["--plain-http"]).await;
    let mut rotated = false;
    for _ in 0..150 {
        let published = common::kids(&operator.jwks(&ns, "main").await);
        // Whatever signs now was published before the restart.
        let signing = jsonpath(&cp, &ns, "oidckey/signing", "{.status.currentKid}");
        assert!(published_before.contains(&signing), "signing with {signing}, published before: {published_before:?}");
        if published.first() != Some(&current) && published.contains(&next) && published.len() == 3 {
            assert!(published.contains(&current), "the retired key stays inside its verification window");
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(rotated, "no rotation after the restart\n{}", operator.output());
    eventually(30, "the status to show the rotation", async || {
        jsonpath(&cp, &ns, "oidckey/signing", "{.status.currentKid}") == next
    })
    .await;
    let new_next = jsonpath(&cp, &ns, "oidckey/signing", "{.status.nextKid}");
    assert!(!published_before.contains(&new_next));
    assert!(common::kids(&operator.jwks(&ns, "main").await).contains(&new_next), "the new next key is published");
    // The ring in the Secret holds all three.
    let ring = jsonpath(&cp, &ns, "secret/oidc-key-signing", "{.data.keyring\\.json}");
    let ring: Value = serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(ring).unwrap()).unwrap();
    assert_eq!(ring["current"]["kid"], next.as_str());
    assert_eq!(ring["next"]["kid"], new_next.as_str());
    assert_eq!(ring["retired"][0]["version"]["kid"], current.as_str(), "the retired key is kept");
}

/// Two replicas: one leads (holds the Lease and writes), both serve the same keys under the
/// same CA (kept in a Secret); when the leader stops, the other takes over and writes.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_elect_one_writer_share_the_ca_and_fail_over() {
    let cp = tokio::task::spawn_blocking(ControlPlane::start).await.unwrap();
    let ns = cp.namespace();
    let tmp = tempfile::tempdir().unwrap();
    let mut one = Server::operator(&cp.kubeconfig, &tmp.path().join("one"), &["--identity", "op-one"]).await;
    let ca_b64 = jsonpath(&cp, "default", "secret/oidc-operator-ca", "{.data.ca\\.crt}");
    let ca = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(ca_b64).unwrap()).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    one.trust(&ca);
    eventually(20, "op-one to hold the lease", async || {
        jsonpath(&cp, "default", "lease/oidc-operator", "{.spec.holderIdentity}") == "op-one"
    })
    .await;
    let mut two = Server::operator(&cp.kubeconfig, &tmp.path().join("two"), &["--identity", "op-two"]).await;
    two.trust(&ca);
    let (ok, err) = cp.apply(&ns, SIGNING_SET);
    assert!(ok, "{err}");
    wait_ready(&cp, &ns, &["oidckey/signing", "oidcclient/app", "oidcprovider/main"], &one);
    // Both serve the same JWKS over HTTPS under the shared CA; the client Secret carries it.
    let kids = common::kids(&one.jwks(&ns, "main").await);
    let discovery = format!("{}/.well-known/openid-configuration", two.issuer(&ns, "main"));
    assert!(two.wait_status(&discovery, 200, Duration::from_secs(20)).await, "{}", two.output());
    assert_eq!(common::kids(&two.jwks(&ns, "main").await), kids);
    let secret_ca = jsonpath(&cp, &ns, "secret/app-oidc-client", "{.data.ca\\.crt}");
    assert_eq!(String::from_utf8(base64::engine::general_purpose::STANDARD.decode(secret_ca).unwrap()).unwrap(), ca);
    assert_eq!(jsonpath(&cp, "default", "lease/oidc-operator", "{.spec.holderIdentity}"), "op-one");
    // (issuer and discovery_url name the replica's own port here: no --external-url)
    let creds = jsonpath(&cp, &ns, "secret/app-oidc-client", "{.data.client_id} {.data.client_secret}");

    // The leader stops (SIGTERM releases the lease): the other takes over and writes.
    one.stop();
    eventually(20, "op-two to take the lease", async || {
        jsonpath(&cp, "default", "lease/oidc-operator", "{.spec.holderIdentity}") == "op-two"
    })
    .await;
    let (ok, err) = cp.apply(&ns, &client("after"));
    assert!(ok, "{err}");
    wait_ready(&cp, &ns, &["oidcclient/after"], &two);
    let after = jsonpath(&cp, &ns, "secret/app-oidc-client", "{.data.client_id} {.data.client_secret}");
    assert_eq!(after, creds, "credentials survive the failover");
    assert_eq!(common::kids(&two.jwks(&ns, "main").await), kids);
    // Events name the replica that wrote them: only the leader of the moment.
    let (ok, err) = cp.apply(&ns, "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {name: orphan}\nspec: {key: missing, assignments: [allow_all]}\n");
    assert!(ok, "{err}");
    eventually(20, "a Warning Event for the orphan client", async || {
        let out = cp.kubectl(&[
            "get",
            "events",
            "-n",
            &ns,
            "--field-selector",
            "involvedObject.name=orphan",
            "-o",
            "jsonpath={range .items[*]}{.type} {.reason} {.reportingInstance} {.note}{.message}{\"\\n\"}{end}",
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().any(|l| l.starts_with("Warning KeyNotFound op-two spec.key"))
    })
    .await;
    // Events carry reasons and field names, never credentials or key material.
    let secret_b64 = jsonpath(&cp, &ns, "secret/app-oidc-client", "{.data.client_secret}");
    let secret = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(secret_b64).unwrap()).unwrap();
    let events = String::from_utf8(cp.kubectl(&["get", "events", "-n", &ns, "-o", "json"]).stdout).unwrap();
    assert!(events.contains("KeyNotFound") && !events.contains(&secret) && !events.contains("pkcs8"));
    // The CA survives restarts: a new replica serves under the same one.
    let mut three = Server::operator(&cp.kubeconfig, &tmp.path().join("three"), &["--identity", "op-three"]).await;
    three.trust(&ca);
    let discovery = format!("{}/.well-known/openid-configuration", three.issuer(&ns, "main"));
    assert!(three.wait_status(&discovery, 200, Duration::from_secs(20)).await, "{}", three.output());
}

/// `run` names why it cannot start (issue 21, item 3): only a 404 means the CRDs are
/// missing; an unreachable server, refused credentials and a missing RBAC rule each say so.
#[test]
fn run_names_why_it_cannot_list_the_crds() {
    let cp = ControlPlane::start_without_crds();
    let run = |kubeconfig: &std::path::Path| {
        let out = std::process::Command::new(common::BIN)
            .args(["run", "--kubeconfig"])
            .arg(kubeconfig)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "run started");
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
    };
    let text = run(&cp.kubeconfig);
    assert!(text.contains("CRDs are not installed") && text.contains("kubectl apply --server-side -f crds/"), "{text}");

    let ns = cp.namespace();
    assert!(cp.kubectl(&["create", "serviceaccount", "nobody", "-n", &ns]).status.success());
    let sa = cp.service_account_kubeconfig(&ns, "nobody");
    let text = run(&sa);
    assert!(text.contains("forbidden: list oidckeys.oidc-operator.dev cluster-wide"), "{text}");
    assert!(!text.contains("not installed"), "{text}");

    let original = std::fs::read_to_string(&sa).unwrap();
    let token = original.split("token: \"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let bogus = sa.with_extension("bogus");
    std::fs::write(&bogus, original.replace(&token, "not-a-token")).unwrap();
    let text = run(&bogus);
    assert!(text.contains("refused the operator's credentials (401 Unauthorized)"), "{text}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let port = cp.url.rsplit(':').next().unwrap().to_owned();
    let away = sa.with_extension("away");
    std::fs::write(&away, original.replace(&format!(":{port}\""), &format!(":{closed}\""))).unwrap();
    let text = run(&away);
    assert!(text.contains(&format!("cannot reach the API server at https://127.0.0.1:{closed}")), "{text}");
}

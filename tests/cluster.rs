//! The end-to-end tier: the CRDs on a real kube-apiserver + etcd (built from their official
//! Go modules), where the API server itself refuses bad manifests with the CRDs' schema and
//! CEL rules.

// Test helpers outside #[test] functions stop the test on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine;
use common::Server;
use common::cluster::ControlPlane;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge, RedirectUrl, Scope,
    TokenResponse,
};
use serde_json::{Value, json};

const KEY: &str = "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcKey\nmetadata: {name: k}\n";
const CLIENT: &str = "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {name: app}\n";
const IDENTITY: &str = "apiVersion: oidc-operator.dev/v1alpha1\nkind: IdentityOidcAuth\nmetadata: {name: runner}\n";
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
    assert!(String::from_utf8_lossy(&out.stdout).contains("CLIENT ID"));

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

    // Good values in both duration forms are accepted.
    let (ok, err) = cp.apply(&ns, &format!("{KEY}spec: {{rotationPeriod: 3600, verificationTTL: 1h30m}}\n"));
    assert!(ok, "{err}");

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

fn yaml_block(text: &str, spaces: usize) -> String {
    common::yaml_block(text, spaces)
}

fn jsonpath(cp: &ControlPlane, ns: &str, what: &str, path: &str) -> String {
    let out = cp.kubectl(&["get", "-n", ns, what, "-o", &format!("jsonpath={path}")]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The workload-identity flow on a real cluster: the operator keeps Secrets and status, a
/// ServiceAccount token (signed by the API server) logs in to an IdentityOidcAuth that trusts
/// the API server's own service-account issuer, and openidconnect verifies the ID token.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_serves_the_workload_identity_flow_on_a_cluster() {
    let cp = tokio::task::spawn_blocking(ControlPlane::start).await.unwrap();
    let ns = cp.namespace();
    // Anyone may read the service-account issuer's discovery document and JWKS.
    let out = cp.kubectl(&[
        "create",
        "clusterrolebinding",
        "oidc-discovery-anonymous",
        "--clusterrole=system:service-account-issuer-discovery",
        "--group=system:unauthenticated",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let tmp = tempfile::tempdir().unwrap();
    let operator =
        Server::operator(&cp.kubeconfig, &tmp.path().join("op"), &["--plain-http", "--issuer-refetch-interval", "1"])
            .await;

    let manifests = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: runner}}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcKey\nmetadata: {{name: signing}}\nspec: {{algorithm: ES256, allowedClients: [\"*\"]}}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {{name: groups}}\nspec: {{template: '{{\"groups\": {{{{identity.entity.groups.names}}}}, \"sa\": {{{{identity.entity.aliases.k8s.name}}}}}}'}}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcAssignment\nmetadata: {{name: platform}}\nspec: {{groups: [platform]}}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {{name: app}}\nspec: {{key: signing, redirectUris: [\"https://app.example/cb\"], assignments: [platform]}}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {{name: main}}\nspec: {{allowedClients: [\"*\"], scopesSupported: [groups]}}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: IdentityOidcAuth\nmetadata: {{name: runner}}\nspec:\n  oidcDiscoveryUrl: {url}\n  boundIssuer: {url}\n  boundAudiences: oidc-operator\n  boundSubject: \"system:serviceaccount:{ns}:runner\"\n  groups: [platform]\n  caCert: |\n{ca}",
        url = cp.url,
        ca = yaml_block(&cp.ca_pem(), 4),
    );
    let (ok, err) = cp.apply(&ns, &manifests);
    assert!(ok, "{err}");
    let out = cp.kubectl(&[
        "wait",
        "-n",
        &ns,
        "--for=condition=Ready",
        "--timeout=60s",
        "oidckey/signing",
        "oidcscope/groups",
        "oidcassignment/platform",
        "oidcclient/app",
        "oidcprovider/main",
        "identityoidcauth/runner",
    ]);
    if !out.status.success() {
        let conds = cp.kubectl(&[
            "get",
            "-n",
            &ns,
            "identityoidcauth,oidcclient",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}: {.status.conditions[0].message}{\"\\n\"}{end}",
        ]);
        panic!(
            "not Ready: {}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&conds.stdout),
            operator.output()
        );
    }

    // Status facts and the client's Secret.
    let issuer = jsonpath(&cp, &ns, "oidcprovider/main", "{.status.issuer}");
    assert_eq!(issuer, operator.issuer(&ns, "main"));
    assert!(!jsonpath(&cp, &ns, "oidckey/signing", "{.status.currentKid}").is_empty());
    let identity_id = jsonpath(&cp, &ns, "identityoidcauth/runner", "{.status.identityId}");
    assert_eq!(identity_id, jsonpath(&cp, &ns, "identityoidcauth/runner", "{.metadata.uid}"));
    let decode =
        |b64: String| String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap();
    let client_id = decode(jsonpath(&cp, &ns, "secret/app-oidc-client", "{.data.client_id}"));
    let client_secret = decode(jsonpath(&cp, &ns, "secret/app-oidc-client", "{.data.client_secret}"));
    assert_eq!(client_id, jsonpath(&cp, &ns, "oidcclient/app", "{.status.clientId}"));
    assert_eq!(decode(jsonpath(&cp, &ns, "secret/app-oidc-client", "{.data.issuer}")), issuer);
    assert!(client_secret.starts_with("oidcop_secret_"));

    // A real service-account token logs in.
    let out = cp.kubectl(&["create", "token", "runner", "-n", &ns, "--audience", "oidc-operator"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sa_token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let access = common::login_token(&operator, &identity_id, &sa_token).await;

    // authorize -> token with openidconnect, which verifies the ID token with discovery + JWKS.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let metadata = CoreProviderMetadata::discover_async(IssuerUrl::new(issuer.clone()).unwrap(), &http).await.unwrap();
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(client_id.clone()),
        Some(ClientSecret::new(client_secret)),
    )
    .set_redirect_uri(RedirectUrl::new("https://app.example/cb".into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = client
        .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
        .add_scope(Scope::new("groups".into()))
        .set_pkce_challenge(challenge)
        .url();
    let body: Value = http.get(url).bearer_auth(&access).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["state"], csrf.secret().as_str(), "{body}");
    let token = client
        .exchange_code(AuthorizationCode::new(body["code"].as_str().unwrap().to_owned()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap();
    let id_verifier = client.id_token_verifier().set_allowed_algs(vec![CoreJwsSigningAlgorithm::EcdsaP256Sha256]);
    let claims = token.id_token().unwrap().claims(&id_verifier, &nonce).unwrap();
    assert_eq!(claims.subject().as_str(), identity_id);
    let payload = token.id_token().unwrap().to_string().split('.').nth(1).unwrap().to_owned();
    let raw: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(raw["groups"], json!(["platform"]));
    assert_eq!(raw["sa"], format!("system:serviceaccount:{ns}:runner"));

    // A restart of the operator keeps every key and client credential byte-identical.
    let key_data = jsonpath(&cp, &ns, "secret/oidc-key-signing", "{.data}");
    let creds =
        |cp: &ControlPlane| jsonpath(cp, &ns, "secret/app-oidc-client", "{.data.client_id} {.data.client_secret}");
    let creds_before = creds(&cp);
    let kids_before = common::kids(&operator.jwks(&ns, "main").await);
    operator.stop();
    let operator =
        Server::operator(&cp.kubeconfig, &tmp.path().join("op2"), &["--plain-http", "--issuer-refetch-interval", "1"])
            .await;
    let discovery = format!("{}/.well-known/openid-configuration", operator.issuer(&ns, "main"));
    assert!(operator.wait_status(&discovery, 200, Duration::from_secs(30)).await, "{}", operator.output());
    assert_eq!(common::kids(&operator.jwks(&ns, "main").await), kids_before);
    assert_eq!(jsonpath(&cp, &ns, "secret/oidc-key-signing", "{.data}"), key_data);
    assert_eq!(creds(&cp), creds_before);

    // Deleting a key that a client uses is held, and the key keeps serving.
    let out = cp.kubectl(&["delete", "-n", &ns, "oidckey/signing", "--wait=false"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reason = jsonpath(&cp, &ns, "oidckey/signing", "{.status.conditions[?(@.type==\"Ready\")].reason}");
        if reason == "DeletionHeld" {
            let msg = jsonpath(&cp, &ns, "oidckey/signing", "{.status.conditions[?(@.type==\"Ready\")].message}");
            assert!(msg.contains("app"), "{msg}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "deletion not held: {reason:?}\n{}", operator.output());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(common::kids(&operator.jwks(&ns, "main").await), kids_before, "still published");

    // References to missing objects: Ready=False naming the field; the rest keeps serving.
    let (ok, err) = cp.apply(
        &ns,
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {name: orphan}\nspec: {key: missing, assignments: [allow_all]}\n",
    );
    assert!(ok, "{err}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reason = jsonpath(&cp, &ns, "oidcclient/orphan", "{.status.conditions[?(@.type==\"Ready\")].reason}");
        if reason == "KeyNotFound" {
            let msg = jsonpath(&cp, &ns, "oidcclient/orphan", "{.status.conditions[?(@.type==\"Ready\")].message}");
            assert!(msg.starts_with("spec.key"), "{msg}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no KeyNotFound: {reason:?}\n{}", operator.output());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(jsonpath(&cp, &ns, "oidcclient/app", "{.status.conditions[?(@.type==\"Ready\")].status}"), "True");

    // Deleting a client removes its Secret, and releases the key it held.
    let out = cp.kubectl(&["delete", "-n", &ns, "oidcclient/app", "--wait=true"]);
    assert!(out.status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cp.kubectl(&["get", "-n", &ns, "secret/app-oidc-client"]).status.success() {
        assert!(std::time::Instant::now() < deadline, "the client's Secret stayed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    while cp.kubectl(&["get", "-n", &ns, "oidckey/signing"]).status.success() {
        assert!(std::time::Instant::now() < deadline, "the released key was not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

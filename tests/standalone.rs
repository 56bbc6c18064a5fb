//! Loopback tests against the real `oidc-operator standalone` process.

// Test helpers outside #[test] functions stop the test on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Server, eventually, holds_within, kids, verify_with_jwcrypto, write_manifest};
use oidc_operator::directory::ObjectKey;
use oidc_operator::keys::SigningAlgorithm;
use oidc_operator::standalone::state::StateDir;

/// A key, a client using it and a provider serving that client, per algorithm.
fn per_algorithm_manifests() -> String {
    let mut out = String::new();
    for alg in SigningAlgorithm::ALL {
        let n = alg.as_str().to_lowercase();
        out.push_str(&format!(
            r#"
apiVersion: oidc-operator.dev/v1alpha1
kind: OidcKey
metadata: {{name: key-{n}, namespace: algs}}
spec: {{algorithm: {alg}, rotationPeriod: 2h, verificationTTL: 1h, allowedClients: ["*"]}}
---
apiVersion: oidc-operator.dev/v1alpha1
kind: OidcClient
metadata: {{name: app-{n}, namespace: algs}}
spec: {{key: key-{n}, redirectUris: ["https://app.example/cb"], assignments: [allow_all], idTokenTTL: 30m}}
---
apiVersion: oidc-operator.dev/v1alpha1
kind: OidcProvider
metadata: {{name: prov-{n}, namespace: algs}}
spec: {{allowedClients: [app-{n}]}}
---
"#
        ));
    }
    out
}

/// Signs a token with the current key of every ring in the state folder, as the product does.
fn sign_with_state(state: &std::path::Path, key: &ObjectKey) -> String {
    let m = StateDir::open(state).unwrap().load().unwrap();
    let ring = &m.key_rings[key];
    let signer = ring.current.parse().unwrap();
    signer.sign_jwt(&serde_json::json!({"sub": "entity-1", "key": key.name})).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_and_jwks_for_every_algorithm_verify_with_an_independent_library() {
    let tmp = tempfile::tempdir().unwrap();
    let (manifests, state) = (tmp.path().join("m"), tmp.path().join("state"));
    std::fs::create_dir(&manifests).unwrap();
    write_manifest(&manifests, "algs.yaml", &per_algorithm_manifests());
    // HTTPS by default: the client trusts only the CA written to the state folder.
    let server = Server::start(&manifests, &state, &[]).await;
    assert!(server.api.starts_with("https://127.0.0.1:"), "{}", server.api);
    assert!(state.join("tls/ca.crt").exists());

    let mut all_tokens = Vec::new();
    for alg in SigningAlgorithm::ALL {
        let n = alg.as_str().to_lowercase();
        let issuer = server.issuer("algs", &format!("prov-{n}"));
        let (status, headers, doc) = server.get_json(&format!("{issuer}/.well-known/openid-configuration")).await;
        assert_eq!(status, 200, "{doc}");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(doc["issuer"], issuer.as_str());
        assert_eq!(doc["jwks_uri"], format!("{issuer}/.well-known/keys"));
        assert_eq!(doc["authorization_endpoint"], format!("{issuer}/authorize"));
        assert_eq!(doc["token_endpoint"], format!("{issuer}/token"));
        assert_eq!(doc["userinfo_endpoint"], format!("{issuer}/userinfo"));
        // The key's algorithm, and RS256, which OpenID Connect Discovery §3 makes mandatory.
        let algs = if alg == SigningAlgorithm::RS256 { vec!["RS256"] } else { vec!["RS256", alg.as_str()] };
        assert_eq!(doc["id_token_signing_alg_values_supported"], serde_json::json!(algs));
        assert_eq!(doc["scopes_supported"], serde_json::json!(["openid"]));
        assert_eq!(doc["response_types_supported"], serde_json::json!(["code"]));
        assert_eq!(
            doc["code_challenge_methods_supported"],
            serde_json::json!(["S256"]),
            "S256 alone unless the provider opts into plain"
        );
        assert_eq!(doc["request_uri_parameter_supported"], false);

        let resp = server.client().get(doc["jwks_uri"].as_str().unwrap()).send().await.unwrap();
        let cache = resp.headers()["cache-control"].to_str().unwrap().to_owned();
        let max_age: u64 = cache.strip_prefix("max-age=").unwrap().parse().unwrap();
        assert!(max_age > 0 && max_age < 3600, "max-age below min(verificationTTL 1h, rotationPeriod 2h): {cache}");
        let jwks: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(kids(&jwks).len(), 2, "current and next: {jwks}");

        let key = ObjectKey::new("algs", format!("key-{n}"));
        let token = sign_with_state(&state, &key);
        all_tokens.push((alg, token.clone(), jwks.clone()));

        let report = verify_with_jwcrypto(&jwks, &[token]);
        let t = &report["tokens"][0];
        assert_eq!(t["valid"], true, "{alg}: {report}");
        assert_eq!(t["alg"], alg.as_str());
        assert_eq!(t["payload"]["sub"], "entity-1");
        for k in report["keys"].as_array().unwrap() {
            assert_eq!(k["alg"], alg.as_str());
            assert_eq!(k["use"], "sig");
            match alg {
                SigningAlgorithm::RS256 | SigningAlgorithm::RS384 | SigningAlgorithm::RS512 => {
                    assert_eq!(k["rsa_bits"], 2048, "{k}")
                }
                SigningAlgorithm::EdDSA => assert_eq!(k["okp"], "Ed25519"),
                _ => {
                    let curve = match alg {
                        SigningAlgorithm::ES256 => "secp256r1",
                        SigningAlgorithm::ES384 => "secp384r1",
                        _ => "secp521r1",
                    };
                    assert_eq!((k["curve"].as_str(), k["on_curve"].as_bool()), (Some(curve), Some(true)), "{k}");
                }
            }
        }
    }
    // The verifier really checks: a token is refused under another provider's JWKS, and a
    // tampered token is refused under its own.
    let (_, es256_token, _) = &all_tokens[3];
    let (_, _, rs256_jwks) = &all_tokens[0];
    let report = verify_with_jwcrypto(rs256_jwks, std::slice::from_ref(es256_token));
    assert_eq!(report["tokens"][0]["valid"], false, "{report}");
    let (_, rs_token, rs_jwks) = &all_tokens[0];
    let mut parts: Vec<&str> = rs_token.split('.').collect();
    parts[1] = "eyJzdWIiOiJtYWxsb3J5In0";
    let report = verify_with_jwcrypto(rs_jwks, &[parts.join(".")]);
    assert_eq!(report["tokens"][0]["valid"], false, "{report}");

    // Unknown provider or namespace: 404 JSON error.
    for url in [server.issuer("algs", "nope"), server.issuer("no-such-ns", "prov-rs256")] {
        let (status, _, body) = server.get_json(&format!("{url}/.well-known/openid-configuration")).await;
        assert_eq!(status, 404);
        assert_eq!(body["error"], "not_found");
    }
    let (status, _, body) = server.get_json(&format!("{}/nowhere", server.api)).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));

    // Metrics on the separate listener, with bounded labels.
    let metrics = reqwest::get(format!("{}/metrics", server.metrics)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"oidc_operator_http_requests_total{endpoint="jwks",code="200"} 7"#), "{metrics}");
    assert!(metrics.contains(r#"oidc_operator_objects{kind="OidcProvider",ready="True"} 7"#), "{metrics}");
    assert!(!metrics.contains("prov-rs256"), "no object names in labels");
    let health = reqwest::get(format!("{}/healthz", server.metrics)).await.unwrap();
    assert_eq!(health.status(), 200);
    // The protocol port does not serve health or metrics.
    let (status, _, _) = server.get_json(&format!("{}/metrics", server.api)).await;
    assert_eq!(status, 404);

    // Credentials are printed as client_id and file path, never as a secret.
    let out = server.output();
    let m = StateDir::open(&state).unwrap().load().unwrap();
    for creds in m.credentials.values() {
        assert!(out.contains(&format!("client_id={}", creds.client_id)));
        let secret = creds.client_secret.as_deref().unwrap();
        assert!(secret.starts_with("oidcop_secret_"));
        assert!(!out.contains(secret), "secret printed");
        let log = std::fs::read_to_string(state.with_extension("log")).unwrap();
        assert!(!log.contains(secret), "secret logged");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_rotation_publishes_the_next_key_first_and_keeps_the_old_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (manifests, state) = (tmp.path().join("m"), tmp.path().join("state"));
    std::fs::create_dir(&manifests).unwrap();
    write_manifest(
        &manifests,
        "rot.yaml",
        r#"
apiVersion: oidc-operator.dev/v1alpha1
kind: OidcKey
metadata: {name: fast}
spec: {algorithm: ES256, rotationPeriod: 1m, verificationTTL: 2m, allowedClients: ["*"]}
---
apiVersion: oidc-operator.dev/v1alpha1
kind: OidcClient
metadata: {name: app}
spec: {key: fast, assignments: [allow_all], idTokenTTL: 1m}
---
apiVersion: oidc-operator.dev/v1alpha1
kind: OidcProvider
metadata: {name: p}
spec: {allowedClients: ["*"]}
"#,
    );
    let server = Server::start(&manifests, &state, &["--plain-http"]).await;
    let key = ObjectKey::new("default", "fast");
    let ring0 = StateDir::open(&state).unwrap().load().unwrap().key_rings[&key].clone();
    let before = kids(&server.jwks("default", "p").await);
    assert_eq!(before, [ring0.current.kid.clone(), ring0.next.kid.clone()]);
    let resp = server.client().get(format!("{}/.well-known/keys", server.issuer("default", "p"))).send().await.unwrap();
    let max_age: u64 = resp.headers()["cache-control"].to_str().unwrap()["max-age=".len()..].parse().unwrap();
    assert!(max_age < 60, "max-age {max_age} must stay below the 1m rotation period");

    // Wait (bounded) for the rotation the timer applies after one minute.
    let mut ring1 = ring0.clone();
    let rotated = holds_within(Duration::from_secs(100), async || {
        ring1 = StateDir::open(&state).unwrap().load().unwrap().key_rings[&key].clone();
        ring1.current.kid != ring0.current.kid
    })
    .await;
    assert!(rotated, "no rotation within 100 s; output:\n{}", server.output());
    assert!(ring1.rotated_at - ring0.rotated_at >= 60, "rotated after the period, not before");
    assert_eq!(ring1.current.kid, ring0.next.kid, "the published next key became current");
    let after = kids(&server.jwks("default", "p").await);
    assert!(after.contains(&ring0.next.kid), "new current published");
    assert!(after.contains(&ring1.next.kid), "new next published");
    assert!(after.contains(&ring0.current.kid), "old current stays for verificationTTL");
    assert_eq!(after.len(), 3);
    // The server reports the new signing kid.
    let line = format!("signing with kid {}", ring1.current.kid);
    assert!(server.wait_for_line(|l| l.contains(&line), Duration::from_secs(5)).await.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_kids_and_client_credentials_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let (manifests, state) = (tmp.path().join("m"), tmp.path().join("state"));
    std::fs::create_dir(&manifests).unwrap();
    write_manifest(&manifests, "algs.yaml", &per_algorithm_manifests());
    write_manifest(
        &manifests,
        "public.yaml",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {name: cli, namespace: algs}\nspec: {clientType: public, assignments: [allow_all], redirectUris: ['http://127.0.0.1/cb']}\n---\napiVersion: oidc-operator.dev/v1alpha1\nkind: IdentityOidcAuth\nmetadata: {name: machine, namespace: algs}\nspec: {oidcDiscoveryUrl: 'https://127.0.0.1:9', boundIssuer: 'https://127.0.0.1:9'}\n",
    );
    let server = Server::start(&manifests, &state, &[]).await;
    let jwks1 = server.jwks("algs", "prov-es512").await;
    let ca1 = std::fs::read(state.join("tls/ca.crt")).unwrap();
    let files1: Vec<(String, Vec<u8>)> = ["app-rs256", "app-eddsa", "cli"]
        .iter()
        .map(|c| {
            let p = state.join(format!("clients/algs/{c}.json"));
            (c.to_string(), std::fs::read(p).unwrap())
        })
        .collect();
    let cli: serde_json::Value = serde_json::from_slice(&files1[2].1).unwrap();
    assert!(cli.get("client_secret").is_none(), "public clients have no secret: {cli}");
    let out1 = server.output();
    let identity1 = std::fs::read(state.join("identities/algs/machine.json")).unwrap();
    assert!(String::from_utf8_lossy(&identity1).contains("identityId"));
    server.stop();

    let server = Server::start(&manifests, &state, &[]).await;
    assert_eq!(server.jwks("algs", "prov-es512").await, jwks1, "same keys after restart");
    assert_eq!(std::fs::read(state.join("tls/ca.crt")).unwrap(), ca1, "same CA after restart");
    for (c, bytes) in files1 {
        assert_eq!(std::fs::read(state.join(format!("clients/algs/{c}.json"))).unwrap(), bytes, "{c}");
    }
    let ids = |out: &str| -> Vec<String> {
        let mut v: Vec<String> = out.lines().filter(|l| l.starts_with("client ")).map(str::to_owned).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&server.output()), ids(&out1), "the same client_ids are reported");
    // A generated identity id is kept too.
    assert_eq!(std::fs::read(state.join("identities/algs/machine.json")).unwrap(), identity1);
}

const BASE: &str = r#"
apiVersion: oidc-operator.dev/v1alpha1
kind: OidcKey
metadata: {name: k}
spec: {algorithm: EdDSA, rotationPeriod: 1h, allowedClients: ["*"], verificationTTL: 1h}
---
apiVersion: oidc-operator.dev/v1alpha1
kind: OidcClient
metadata: {name: app}
spec: {key: k, assignments: [allow_all], idTokenTTL: 1h}
---
apiVersion: oidc-operator.dev/v1alpha1
kind: OidcProvider
metadata: {name: first}
spec: {allowedClients: ["*"]}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn edits_are_picked_up_and_bad_manifests_do_not_stop_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let (manifests, state) = (tmp.path().join("m"), tmp.path().join("state"));
    std::fs::create_dir(&manifests).unwrap();
    write_manifest(&manifests, "base.yaml", BASE);
    let server = Server::start(&manifests, &state, &["--plain-http"]).await;
    let first = server.jwks("default", "first").await;
    let second_url = format!("{}/.well-known/openid-configuration", server.issuer("default", "second"));
    assert!(server.wait_status(&second_url, 404, Duration::from_secs(1)).await);

    // A new file with a provider and a scope: served without a restart.
    write_manifest(
        &manifests,
        "second.yaml",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {name: groups}\nspec: {template: '{\"groups\": {{identity.entity.groups.names}}}'}\n---\napiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {name: second}\nspec: {allowedClients: [app], scopesSupported: [groups]}\n",
    );
    assert!(server.wait_status(&second_url, 200, Duration::from_secs(10)).await, "{}", server.output());
    let (_, _, doc) = server.get_json(&second_url).await;
    assert_eq!(doc["scopes_supported"], serde_json::json!(["openid", "groups"]));

    // Broken files: a YAML syntax error, a bad duration in a new key, a scope with a bad
    // template. Each is reported with file, resource and field; the rest keeps serving.
    write_manifest(&manifests, "broken.yaml", "apiVersion: [unclosed\n");
    write_manifest(
        &manifests,
        "badkey.yaml",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcKey\nmetadata: {name: bad}\nspec: {rotationPeriod: 1d}\n---\napiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {name: broken-scope}\nspec: {template: '{\"a\": {{identity.entity.nope}}}'}\n",
    );
    let bad_key = server
        .wait_for_line(
            |l| l.contains("badkey.yaml (document 1), OidcKey default/bad, field spec.rotationPeriod"),
            Duration::from_secs(10),
        )
        .await;
    assert!(bad_key.is_some(), "{}", server.output());
    assert!(server.output().contains("broken.yaml (document 1): not valid YAML"), "{}", server.output());
    let scope_line = server
        .wait_for_line(
            |l| l.contains("OidcScope") && l.contains("broken-scope") && l.contains("False"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(scope_line.contains("TemplateInvalid") && scope_line.contains("identity.entity.nope"), "{scope_line}");
    assert_eq!(server.jwks("default", "first").await, first);
    assert!(server.wait_status(&second_url, 200, Duration::from_secs(1)).await);

    // An invalid edit of an existing object: the last good version keeps serving.
    write_manifest(&manifests, "base.yaml", &BASE.replace("rotationPeriod: 1h", "rotationPeriod: 30s"));
    let kept = server
        .wait_for_line(
            |l| l.contains("OidcKey default/k, field spec.rotationPeriod") && l.contains("last good version"),
            Duration::from_secs(10),
        )
        .await;
    assert!(kept.is_some(), "{}", server.output());
    assert_eq!(server.jwks("default", "first").await, first, "keys unchanged");

    // SIGHUP reloads at once, and removing a provider stops serving it.
    std::fs::remove_file(manifests.join("second.yaml")).unwrap();
    let status = std::process::Command::new("kill").args(["-HUP", &server.pid().to_string()]).status().unwrap();
    assert!(status.success());
    assert!(server.wait_status(&second_url, 404, Duration::from_secs(10)).await);
}

/// A CA made here, not by the product, and a `localhost` leaf it signs: (CA PEM, leaf, key).
fn test_ca_and_leaf() -> (String, String, String) {
    let pki = common::test_pki("standalone test CA", &["localhost"]);
    (pki.ca_pem, pki.leaf_pem, pki.key_pem)
}

/// A client of `localhost` on `port` that trusts `ca` only.
fn client_trusting(ca: &str, port: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// A given certificate is served, and a renewed pair written over its files (as cert-manager
/// and the kubelet do with a mounted Secret) is served without a restart; a half-written
/// renewal (new certificate, old key) is not.
#[tokio::test(flavor = "multi_thread")]
async fn a_user_provided_certificate_is_served_and_followed_when_renewed() {
    let tmp = tempfile::tempdir().unwrap();
    let (manifests, state) = (tmp.path().join("m"), tmp.path().join("state"));
    std::fs::create_dir(&manifests).unwrap();
    write_manifest(&manifests, "base.yaml", BASE);
    let (ca, leaf, leaf_key) = test_ca_and_leaf();
    let cert = tmp.path().join("tls.crt");
    let key = tmp.path().join("tls.key");
    std::fs::write(&cert, leaf).unwrap();
    std::fs::write(&key, leaf_key).unwrap();
    let server = Server::start(
        &manifests,
        &state,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--tls-reload-interval",
            "1",
            "--external-url",
            "https://localhost:1",
        ],
    )
    .await;
    let port = server.api.rsplit(':').next().unwrap().to_owned();
    let url =
        format!("https://localhost:{port}/v1/default/identity/oidc/provider/first/.well-known/openid-configuration");
    let doc: serde_json::Value = client_trusting(&ca, &port).get(&url).send().await.unwrap().json().await.unwrap();
    // The issuer follows --external-url.
    assert_eq!(doc["issuer"], "https://localhost:1/v1/default/identity/oidc/provider/first");
    assert!(!state.join("tls/ca.crt").exists(), "no CA is generated when a certificate is given");

    // Half a renewal: the old pair keeps serving.
    let (new_ca, new_leaf, new_key) = test_ca_and_leaf();
    std::fs::write(&cert, &new_leaf).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(client_trusting(&ca, &port).get(&url).send().await.is_ok(), "a broken pair replaced a good one");
    // The whole renewal is served from the next reload on, to new connections.
    std::fs::write(&key, &new_key).unwrap();
    eventually(15, "the renewed certificate to be served", async || {
        client_trusting(&new_ca, &port).get(&url).send().await.is_ok()
    })
    .await;
    assert!(client_trusting(&ca, &port).get(&url).send().await.is_err(), "the old certificate is still served");
}

const HOLDER_ID: &str = "0a11ce00-0000-4000-8000-0000000000c1";

/// Waits for the readiness row of `kind ns/name` that contains `what`.
async fn status_row(server: &Server, ns: &str, kind: &str, name: &str, what: &str) -> Option<String> {
    let row = |l: &str| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.len() > 4 && cols[0] == ns && cols[1] == kind && cols[2] == name && l.contains(what)
    };
    server.wait_for_line(row, Duration::from_secs(20)).await
}

/// A manifest file is not the API server: whoever writes it writes `status`, `metadata.uid`
/// and `metadata.creationTimestamp` too. So standalone ignores them and keeps who holds an
/// identity id in its state folder. Tenant A (`victim/runner`) holds an id; tenant `aaa`
/// (first seen earlier) edits its identity to that id while the server runs (refused); then,
/// with the server stopped, tenant `bbb` adds an identity naming the id with a forged
/// `status` (the id, Ready=True), an older creationTimestamp and a uid. After the restart A
/// still holds the id, its logins are judged by its own bounds, and neither claimant is Ready.
#[tokio::test(flavor = "multi_thread")]
async fn standalone_keeps_identity_ids_in_its_state_not_in_manifest_status() {
    use common::{ExternalIssuer, identity_in, login_token};
    let tmp = tempfile::tempdir().unwrap();
    let (m, state) = (tmp.path().join("m"), tmp.path().join("state"));
    std::fs::create_dir(&m).unwrap();
    let issuer = ExternalIssuer::start(tmp.path()).await;
    // Only the holder accepts the test issuer's audience: a login judged by a claimant's
    // bounds fails.
    let holder = identity_in("victim", "runner", HOLDER_ID, &issuer, "oidc-operator", "");
    let early = |id: &str| identity_in("aaa", "early", id, &issuer, "nobody", "");
    write_manifest(&m, "victim.yaml", &holder);
    write_manifest(&m, "aaa.yaml", &early("0a11ce00-0000-4000-8000-0000000000c2"));
    let args = ["--allow-insecure-issuers"];
    let server = Server::start(&m, &state, &args).await;
    for (ns, name) in [("victim", "runner"), ("aaa", "early")] {
        assert!(status_row(&server, ns, "IdentityOidcAuth", name, "True").await.is_some(), "{}", server.output());
    }
    write_manifest(&m, "aaa.yaml", &early(HOLDER_ID));
    let refused = status_row(&server, "aaa", "IdentityOidcAuth", "early", "IdentityIdConflict").await;
    assert!(refused.is_some(), "{}", server.output());
    let jwt = issuer.mint("ES256", serde_json::json!({}), None).await;
    login_token(&server, HOLDER_ID, &jwt).await;
    server.stop();

    let forged = identity_in("bbb", "forger", HOLDER_ID, &issuer, "nobody", "")
        .replace(
            "metadata: {name: forger, namespace: bbb}",
            "metadata: {name: forger, namespace: bbb, uid: 00000000-0000-4000-8000-000000000001, \
             creationTimestamp: \"2000-01-01T00:00:00Z\"}",
        )
        .strip_suffix("---\n")
        .unwrap()
        .to_owned()
        + &format!(
            "status:\n  identityId: {HOLDER_ID}\n  conditions:\n  - {{type: Ready, status: \"True\", reason: Ready, \
             message: forged, lastTransitionTime: \"2000-01-01T00:00:00Z\"}}\n"
        );
    assert!(forged.contains("creationTimestamp") && forged.contains("status:"), "{forged}");
    write_manifest(&m, "bbb.yaml", &forged);
    let server = Server::start(&m, &state, &args).await;
    for (ns, name) in [("aaa", "early"), ("bbb", "forger")] {
        let refused = status_row(&server, ns, "IdentityOidcAuth", name, "IdentityIdConflict").await;
        assert!(refused.is_some(), "{ns}/{name} is not refused:\n{}", server.output());
    }
    let kept = status_row(&server, "victim", "IdentityOidcAuth", "runner", "True").await;
    assert!(kept.is_some_and(|l| l.contains(HOLDER_ID)), "{}", server.output());
    let jwt = issuer.mint("ES256", serde_json::json!({}), None).await;
    login_token(&server, HOLDER_ID, &jwt).await;
    let holders = std::fs::read_to_string(state.join("identity-holders.json")).unwrap();
    let holders: serde_json::Value = serde_json::from_str(&holders).unwrap();
    assert_eq!(holders[HOLDER_ID], "victim/runner", "{holders}");
}

/// Metrics tell the truth from the start (issue 21, item 5): the memory store is up, and
/// the series whose labels are known are there with zeros before their first event.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_start_at_zero_and_the_memory_store_is_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, state) = (tmp.path().join("m"), tmp.path().join("state"));
    std::fs::create_dir(&m).unwrap();
    write_manifest(
        &m,
        "p.yaml",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {name: p}\nspec: {}\n",
    );
    let server = Server::start(&m, &state, &[]).await;
    let metrics =
        server.client().get(format!("{}/metrics", server.metrics)).send().await.unwrap().text().await.unwrap();
    for line in [
        "oidc_operator_session_store_up 1",
        "oidc_operator_session_store_refusals_total{record=\"identity_token\",reason=\"namespace_quota\"} 0",
        "oidc_operator_session_store_refusals_total{record=\"access_token\",reason=\"bytes\"} 0",
        "oidc_operator_reconciles_total{kind=\"IdentityOidcAuth\"} 0",
        "oidc_operator_logins_total{outcome=\"success\"} 0",
        "oidc_operator_connections_rejected_total{listener=\"api\",reason=\"peer_limit\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} missing:\n{metrics}");
    }
}

/// A removed client's credentials go with it, as its Secret does on a cluster; declared
/// again, it gets new ones. A broken file removes nothing (issue 21, item 6).
#[tokio::test(flavor = "multi_thread")]
async fn a_removed_clients_credentials_go_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, state) = (tmp.path().join("m"), tmp.path().join("state"));
    std::fs::create_dir(&m).unwrap();
    let client = "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {name: app}\nspec: {redirectUris: [\"https://app.example/cb\"]}\n";
    write_manifest(&m, "app.yaml", client);
    let server = Server::start(&m, &state, &[]).await;
    let file = state.join("clients/default/app.json");
    let wait_for = |present: bool| {
        let file = file.clone();
        async move {
            // Removal waits out a 10 s grace (an editor's half-written file costs nothing).
            eventually(25, &format!("{} present: {present}", file.display()), async || file.exists() == present).await;
        }
    };
    wait_for(true).await;
    let first = std::fs::read_to_string(&file).unwrap();

    // A broken file hides what it declares: nothing is deleted while it stands.
    write_manifest(&m, "app.yaml", "apiVersion: [unclosed\n");
    server
        .wait_for_line(|l| l.contains("not valid YAML"), Duration::from_secs(10))
        .await
        .expect("the broken file is reported");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), first, "credentials deleted behind a broken file");

    std::fs::remove_file(m.join("app.yaml")).unwrap();
    wait_for(false).await;
    write_manifest(&m, "app.yaml", client);
    wait_for(true).await;
    let again: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let before: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_ne!(again["client_id"], before["client_id"], "a client declared again got the old credentials");
    assert_ne!(again["client_secret"], before["client_secret"]);
}

/// What standalone prints tells what happened (issue 21, item 8): an edit reprints its
/// object's row even when its readiness stays, a broken file gets one line per problem and
/// a "resolved" line once fixed, and the log has no colour codes when it is not a terminal.
#[tokio::test(flavor = "multi_thread")]
async fn standalone_says_what_changed_and_what_was_fixed() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, state) = (tmp.path().join("m"), tmp.path().join("state"));
    std::fs::create_dir(&m).unwrap();
    let client = |uri: &str| {
        format!(
            "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {{name: app}}\nspec: {{redirectUris: [\"{uri}\"]}}\n"
        )
    };
    write_manifest(&m, "app.yaml", &client("https://app.example/cb"));
    let server = Server::start(&m, &state, &[]).await;
    let rows =
        |server: &Server| server.output().lines().filter(|l| l.contains(" OidcClient ") && l.contains(" app ")).count();
    let before = rows(&server);
    assert!(before >= 1, "{}", server.output());
    write_manifest(&m, "app.yaml", &client("https://app.example/other"));
    let printed = holds_within(Duration::from_secs(10), async || rows(&server) != before).await;
    assert!(printed, "an edit printed nothing:\n{}", server.output());

    write_manifest(&m, "broken.yaml", "kind: [unclosed\n");
    let line = server
        .wait_for_line(|l| l.starts_with("manifest error:") && l.contains("broken.yaml"), Duration::from_secs(10))
        .await;
    assert!(line.is_some(), "{}", server.output());
    write_manifest(&m, "broken.yaml", &client("https://app.example/cb").replace("name: app", "name: fixed"));
    let resolved = server
        .wait_for_line(|l| l.starts_with("manifest resolved:") && l.contains("broken.yaml"), Duration::from_secs(10))
        .await;
    assert!(resolved.is_some(), "{}", server.output());
    let errors = server.output().lines().filter(|l| l.contains("broken.yaml") && l.contains("not valid YAML")).count();
    assert_eq!(errors, 1, "one line per problem:\n{}", server.output());
    let log = std::fs::read_to_string(state.with_extension("log")).unwrap();
    assert!(!log.contains('\u{1b}'), "colour codes in a log that is not a terminal:\n{log}");
    assert!(!log.contains("not valid YAML"), "the problem is printed twice (stdout and log):\n{log}");
}

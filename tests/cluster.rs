//! The end-to-end tier: the CRDs on a real kube-apiserver + etcd (built from their official
//! Go modules), where the API server itself refuses bad manifests with the CRDs' schema and
//! CEL rules.

// Test helpers outside #[test] functions stop the test on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cluster::ControlPlane;

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

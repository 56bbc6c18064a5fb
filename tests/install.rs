//! Install and operate, on the real control plane of the end-to-end tier: the Helm chart and
//! the kustomize tree install the operator; the operator then runs as a process (no kubelet
//! runs here) with the chart's ServiceAccount token and RBAC, so a missing permission fails
//! the workload-identity flow; kstatus (Flux) and Argo CD's Lua health read the live objects;
//! and a second kube-apiserver trusts the ID tokens the operator issues.

// Test helpers outside #[test] functions stop the test on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use common::cluster::{ControlPlane, jsonpath, ready_field, wait_ready};
use common::install::{self, documents, helm, helm_output, kubectl_stdin, live};
use common::{Server, eventually, flow, holds_within};
use serde_json::{Value, json};

const RELEASE_NS: &str = "oidc-system";

fn chart() -> String {
    install::root().join("charts/oidc-operator").display().to_string()
}

fn ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The operator container's arguments in rendered manifests, with what only makes sense
/// inside a pod dropped: listen addresses (the harness binds loopback port 0) and the
/// in-cluster `--external-url` (the harness serves on 127.0.0.1).
fn operator_args(manifests: &[Value]) -> Vec<String> {
    let deployment = manifests.iter().find(|d| d["kind"] == "Deployment").expect("a Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> =
        container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
    let mut kept = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if ["--listen", "--metrics-listen", "--external-url"].contains(&a.as_str()) {
            it.next();
        } else {
            kept.push(a);
        }
    }
    kept
}

/// Starts `oidc-operator` with the Deployment's arguments, as ServiceAccount `ns/sa`.
async fn operator_as(cp: &ControlPlane, manifests: &[Value], ns: &str, sa: &str, state: &Path) -> Server {
    let args = operator_args(manifests);
    assert_eq!(args.first().map(String::as_str), Some("run"), "{args:?}");
    let kubeconfig = cp.service_account_kubeconfig(ns, sa);
    let mut all: Vec<String> = args;
    all.extend(["--kubeconfig".into(), kubeconfig.display().to_string(), "--namespace".into(), ns.into()]);
    all.extend(["--identity".into(), "op-0".into(), "--allow-insecure-issuers".into()]);
    all.extend(["--issuer-refetch-interval".into(), "1".into()]);
    std::fs::create_dir_all(state).unwrap();
    let mut server = Server::spawn(&all, state).await;
    let ca = operator_ca(cp, ns, manifests);
    server.trust(&ca);
    server
}

/// The operator's CA, from the Secret its Deployment names in `--ca-secret`.
fn operator_ca(cp: &ControlPlane, ns: &str, manifests: &[Value]) -> String {
    let args = operator_args(manifests);
    let secret = args.iter().position(|a| a == "--ca-secret").map(|i| args[i + 1].clone()).unwrap();
    let b64 = jsonpath(cp, ns, &format!("secret/{secret}"), "{.data.ca\\.crt}");
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap()
}

/// Nothing the operator logged says the API server refused it (kube's wording of a 403, and
/// the operator's warnings on failed writes and Events).
fn assert_never_forbidden(state: &Path) {
    let log = std::fs::read_to_string(state.with_extension("log")).unwrap_or_default();
    for needle in [" is forbidden: ", "Forbidden", "publishing an Event failed"] {
        assert!(!log.contains(needle), "the operator was refused ({needle:?}):\n{log}");
    }
}

/// Events the operator published in `ns` (as ServiceAccount, under its RBAC).
fn operator_events(cp: &ControlPlane, ns: &str) -> Vec<Value> {
    let out = cp.kubectl(&["get", "events.events.k8s.io", "-n", ns, "-o", "json"]);
    ok(&out, "events");
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    list["items"].as_array().unwrap().iter().filter(|e| e["reportingController"] == "oidc-operator").cloned().collect()
}

/// `kubectl auth can-i` as the operator's ServiceAccount.
fn can_i(cp: &ControlPlane, args: &[&str]) -> bool {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    let who = format!("--as=system:serviceaccount:{RELEASE_NS}:oidc-operator");
    all.push(&who);
    String::from_utf8_lossy(&cp.kubectl(&all).stdout).trim() == "yes"
}

/// A metric's value summed over the lines whose labels contain every `labels` entry.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(operator: &Server) -> String {
    reqwest::get(format!("{}/metrics", operator.metrics)).await.unwrap().text().await.unwrap()
}

/// `helm install`, the operator under the chart's ServiceAccount and RBAC (cluster-wide,
/// then namespaced after `helm upgrade`), the whole flow in both, and the metrics moving.
#[tokio::test(flavor = "multi_thread")]
async fn the_helm_chart_installs_and_the_operator_runs_under_its_rbac_in_both_modes() {
    let cp = tokio::task::spawn_blocking(ControlPlane::start_without_crds).await.unwrap();
    cp.allow_anonymous_issuer_discovery();
    let chart = chart();

    // What `helm template` renders is accepted by the API server as it is (no CRDs yet, so
    // only the chart's own objects; the CRDs come with `helm install`).
    let dry = "dry-run";
    let rendered = helm(&cp, &["template", "oidc-operator", &chart, "-n", dry]);
    ok(&cp.kubectl(&["create", "namespace", dry]), "namespace");
    // No controller-manager runs here to give namespaces their `default` ServiceAccount,
    // which the test hook's Pod runs as.
    ok(&cp.kubectl(&["create", "serviceaccount", "default", "-n", dry]), "default ServiceAccount");
    ok(&kubectl_stdin(&cp, &["apply", "--dry-run=server", "-n", dry, "-f", "-"], &rendered), "dry run");

    helm(&cp, &["install", "oidc-operator", &chart, "-n", RELEASE_NS, "--create-namespace"]);
    ok(&cp.kubectl(&["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]), "CRDs");
    let manifest = documents(&helm(&cp, &["get", "manifest", "oidc-operator", "-n", RELEASE_NS]));
    let kinds: Vec<&str> = manifest.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service", "Deployment"]
    {
        assert!(kinds.contains(&kind), "the release lacks a {kind}: {kinds:?}");
    }
    for what in ["deployment/oidc-operator", "serviceaccount/oidc-operator", "service/oidc-operator"] {
        ok(&cp.kubectl(&["get", "-n", RELEASE_NS, what]), what);
    }
    ok(&cp.kubectl(&["create", "serviceaccount", "default", "-n", RELEASE_NS]), "default ServiceAccount");
    // The helm test hook is part of the release and is a valid Pod.
    let hooks = helm(&cp, &["get", "hooks", "oidc-operator", "-n", RELEASE_NS]);
    assert!(hooks.contains("helm.sh/hook: test") && hooks.contains("openid-configuration"), "{hooks}");
    let hook = helm(
        &cp,
        &["template", "oidc-operator", &chart, "-n", RELEASE_NS, "--show-only", "templates/tests/discovery.yaml"],
    );
    ok(&kubectl_stdin(&cp, &["apply", "--dry-run=server", "-n", RELEASE_NS, "-f", "-"], &hook), "test hook");
    // A pod with the chart's securityContext passes the restricted Pod Security level.
    let deployment = manifest.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(deployment["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");

    // Cluster-wide mode: the flow in a tenant namespace, as the chart's ServiceAccount.
    let tenant = cp.namespace();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("cluster-mode");
    let operator = operator_as(&cp, &manifest, RELEASE_NS, "oidc-operator", &state).await;
    let ca = operator_ca(&cp, RELEASE_NS, &manifest);
    let before = scrape(&operator).await;
    let (applied, err) = cp.apply(&tenant, &flow::workload_manifests(&cp, &tenant));
    assert!(applied, "{err}");
    wait_ready(&cp, &tenant, &flow::WORKLOAD_OBJECTS, &operator);
    let result = flow::run(&cp, &tenant, &operator, "main", "app", &["groups"], Some(&ca)).await;
    assert_eq!(result.claims["groups"], json!(["platform"]));
    assert_eq!(jsonpath(&cp, RELEASE_NS, "lease/oidc-operator", "{.spec.holderIdentity}"), "op-0");
    assert_never_forbidden(&state);
    // Events were published under the chart's RBAC (an identity starts out DiscoveryPending).
    let events = operator_events(&cp, &tenant);
    assert!(events.iter().any(|e| e["reason"] == "DiscoveryPending"), "no Event published: {events:?}");

    // The counters moved during the flow.
    let after = scrape(&operator).await;
    for (name, labels) in [
        ("oidc_operator_logins_total", vec!["outcome=\"success\""]),
        ("oidc_operator_http_requests_total", vec!["endpoint=\"token\"", "code=\"200\""]),
        ("oidc_operator_http_requests_total", vec!["endpoint=\"authorize\"", "code=\"200\""]),
        ("oidc_operator_http_request_duration_seconds_count", vec!["endpoint=\"login\""]),
        ("oidc_operator_reconciles_total", vec!["kind=\"OidcClient\""]),
        ("oidc_operator_key_rotations_total", vec![]),
        ("oidc_operator_snapshot_builds_total", vec![]),
        ("oidc_operator_snapshot_build_duration_seconds_count", vec![]),
    ] {
        let (was, now) = (metric(&before, name, &labels), metric(&after, name, &labels));
        assert!(now > was, "{name}{labels:?} did not move: {was} -> {now}\n{after}");
    }
    let age = metric(&after, "oidc_operator_snapshot_age_seconds", &[]);
    assert!((0.0..60.0).contains(&age), "snapshot age {age}");
    assert_eq!(metric(&after, "oidc_operator_objects", &["kind=\"OidcClient\"", "ready=\"True\""]), 1.0);
    operator.stop();

    // Namespaced mode: no ClusterRole that reads Secrets; a Role in each watched namespace.
    helm(
        &cp,
        &[
            "upgrade",
            "oidc-operator",
            &chart,
            "-n",
            RELEASE_NS,
            "--set",
            "rbac.mode=namespaced",
            "--set",
            &format!("watchNamespaces={{{tenant}}}"),
        ],
    );
    let manifest = documents(&helm(&cp, &["get", "manifest", "oidc-operator", "-n", RELEASE_NS]));
    assert!(!cp.kubectl(&["get", "clusterrolebinding", "oidc-operator"]).status.success(), "cluster binding left");
    assert!(!can_i(&cp, &["list", "secrets", "--all-namespaces"]), "still reads every Secret");
    assert!(!can_i(&cp, &["get", "secrets", "-n", "default"]), "reads Secrets of an unwatched namespace");
    assert!(can_i(&cp, &["list", "secrets", "-n", &tenant]));
    assert!(can_i(&cp, &["patch", "oidcclients.oidc-operator.dev", "--subresource=status", "-n", &tenant]));
    let state = tmp.path().join("namespaced-mode");
    let operator = operator_as(&cp, &manifest, RELEASE_NS, "oidc-operator", &state).await;
    // A change after the restart is reconciled under the namespaced RBAC.
    let (applied, err) = cp.apply(
        &tenant,
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {name: second}\nspec: {key: signing, redirectUris: [\"https://app.example/cb\"], assignments: [platform]}\n",
    );
    assert!(applied, "{err}");
    wait_ready(&cp, &tenant, &["oidcclient/second"], &operator);
    let result = flow::run(&cp, &tenant, &operator, "main", "second", &["groups"], Some(&ca)).await;
    assert_eq!(result.claims["groups"], json!(["platform"]));
    // A client that starts out not Ready is announced by an Event, under the Role's rights.
    let (applied, err) = cp.apply(
        &tenant,
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {name: keyless}\nspec: {key: missing, redirectUris: [\"https://app.example/cb\"]}\n",
    );
    assert!(applied, "{err}");
    eventually(30, "the KeyNotFound Event", async || {
        operator_events(&cp, &tenant).iter().any(|e| e["reason"] == "KeyNotFound")
    })
    .await;
    assert_never_forbidden(&state);

    // Values the schema or the templates refuse, with their reasons.
    for (set, needle) in [
        ("rbac.mode=everything", "/rbac/mode"),
        ("rbac.mode=namespaced", "/watchNamespaces"),
        ("replicaCount=2", "/sessionStore/url"),
        ("sessionStore.url=redis://user:pw@redis:6379", "/sessionStore/url"),
        ("logFormat=xml", "logFormat"),
        ("unknownValue=1", "unknownValue"),
    ] {
        let out = helm_output(&cp, &["template", "x", &chart, "--set", set]);
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && text.contains(needle), "--set {set}: {text}");
    }
    // Several replicas with a shared store: the store flags, and a PodDisruptionBudget.
    let replicated = rendered_with(
        &cp,
        &chart,
        &["replicaCount=2", "sessionStore.url=redis://redis:6379", "sessionStore.existingSecret=redis-auth"],
    );
    assert!(replicated.iter().any(|d| d["kind"] == "PodDisruptionBudget"), "no PDB with 2 replicas");
    let args = operator_args(&replicated);
    assert!(args.windows(2).any(|w| w == ["--session-store", "redis://redis:6379"]), "{args:?}");
    let deployment = replicated.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(env.contains("OIDC_OPERATOR_SESSION_STORE_PASSWORD") && env.contains("redis-auth"), "{env}");
    assert!(!env.contains("SENTINEL"), "a Sentinel password without sessionStore.sentinel: {env}");

    // Session quotas: each value becomes its flag; a share above 100% is refused.
    let quotas = rendered_with(
        &cp,
        &chart,
        &["maxSessionBytes=1048576", "maxSessionNamespacePercent=25", "maxSessionRecordsPerIdentity=500"],
    );
    let args = operator_args(&quotas);
    for pair in [
        ["--max-session-bytes", "1048576"],
        ["--max-session-namespace-percent", "25"],
        ["--max-session-records-per-identity", "500"],
    ] {
        assert!(args.windows(2).any(|w| w == pair), "{pair:?} not in {args:?}");
    }
    let out = helm_output(&cp, &["template", "x", &chart, "--set", "maxSessionNamespacePercent=101"]);
    assert!(!out.status.success(), "a namespace share of 101% was rendered");

    // Sentinels with credentials of their own: their user as a flag, their password from its
    // own Secret.
    let sentinels = rendered_with(
        &cp,
        &chart,
        &[
            "replicaCount=2",
            "sessionStore.url=redis+sentinel://s1:26379\\,s2:26379/mymaster",
            "sessionStore.existingSecret=redis-auth",
            "sessionStore.sentinel.username=watcher",
            "sessionStore.sentinel.existingSecret=sentinel-auth",
            "sessionStore.sentinel.passwordKey=sentinel-password",
        ],
    );
    let args = operator_args(&sentinels);
    assert!(
        args.windows(2).any(|w| w == ["--session-store", "redis+sentinel://s1:26379,s2:26379/mymaster"]),
        "{args:?}"
    );
    assert!(args.windows(2).any(|w| w == ["--session-store-sentinel-username", "watcher"]), "{args:?}");
    let deployment = sentinels.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    let sentinel_env =
        env.as_array().unwrap().iter().find(|e| e["name"] == "OIDC_OPERATOR_SESSION_STORE_SENTINEL_PASSWORD");
    let from = &sentinel_env.expect("the Sentinels' password env")["valueFrom"]["secretKeyRef"];
    assert_eq!((from["name"].as_str(), from["key"].as_str()), (Some("sentinel-auth"), Some("sentinel-password")));

    // The optional NetworkPolicy: none by default; when enabled, the protocol port open to all
    // and the metrics port to `metricsFrom` only, and the API server accepts it.
    assert!(!manifest.iter().any(|d| d["kind"] == "NetworkPolicy"), "a NetworkPolicy by default");
    let policy_sets = [
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.metricsFrom[0].podSelector.matchLabels.app=prometheus",
    ];
    let mut args = vec!["template", "oidc-operator", &chart, "-n", dry];
    args.extend(policy_sets);
    let with_policy = helm(&cp, &args);
    ok(
        &kubectl_stdin(&cp, &["apply", "--dry-run=server", "-n", dry, "-f", "-"], &with_policy),
        "NetworkPolicy dry run",
    );
    let docs = documents(&with_policy);
    let policy = docs.iter().find(|d| d["kind"] == "NetworkPolicy").expect("a NetworkPolicy when enabled");
    let ingress = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 2, "{ingress:?}");
    assert_eq!(ingress[0]["ports"][0]["port"], "https");
    assert!(ingress[0].get("from").is_none(), "the protocol port is open to every source: {ingress:?}");
    assert_eq!(ingress[1]["ports"][0]["port"], "metrics");
    assert_eq!(ingress[1]["from"][0]["podSelector"]["matchLabels"]["app"], "prometheus");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"], "oidc-operator",
        "it selects the operator pods"
    );

    // Cluster mode narrowed to some namespaces binds its ClusterRole only there.
    let narrowed =
        documents(&helm(&cp, &["template", "x", &chart, "-n", RELEASE_NS, "--set", "watchNamespaces={a,b}"]));
    // (TokenReview is cluster-scoped: its binding is the one ClusterRoleBinding, and reads nothing.)
    let cluster_bindings: Vec<&str> = narrowed
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding")
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    assert_eq!(cluster_bindings, ["x-oidc-operator-tokenreview"], "a ClusterRoleBinding with watchNamespaces");
    let bound: Vec<&str> = narrowed
        .iter()
        .filter(|d| d["kind"] == "RoleBinding" && d["roleRef"]["kind"] == "ClusterRole")
        .filter_map(|d| d["metadata"]["namespace"].as_str())
        .collect();
    assert_eq!(bound, ["a", "b"]);
    let out = helm_output(&cp, &["lint", &chart]);
    ok(&out, "helm lint");
}

/// The chart rendered as release `x` with each of `sets` as a `--set`.
fn rendered_with(cp: &ControlPlane, chart: &str, sets: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", "x", chart];
    for set in sets {
        args.extend(["--set", set]);
    }
    documents(&helm(cp, &args))
}

/// `kubectl apply -k config/default` installs the same objects as the chart; the operator
/// runs as the ServiceAccount it creates; `config/samples` become Ready; kstatus and Argo
/// CD's health script read Current/Healthy, InProgress/Progressing and Failed/Degraded on
/// live objects.
#[tokio::test(flavor = "multi_thread")]
async fn kustomize_installs_the_operator_and_the_samples_become_ready_and_healthy() {
    let cp = tokio::task::spawn_blocking(ControlPlane::start_without_crds).await.unwrap();
    cp.allow_anonymous_issuer_discovery();
    let root = install::root();
    let default = root.join("config/default");
    ok(&cp.kubectl(&["apply", "-k", default.to_str().unwrap()]), "apply -k config/default");
    ok(&cp.kubectl(&["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]), "CRDs");

    // The same objects as the chart renders with release `oidc-operator` in that namespace.
    let kustomized =
        documents(&String::from_utf8(cp.kubectl(&["kustomize", default.to_str().unwrap()]).stdout).unwrap());
    let chart_ns = "oidc-operator-system";
    let rendered = documents(&helm(
        &cp,
        &["template", "oidc-operator", &chart(), "-n", chart_ns, "--include-crds", "--skip-tests"],
    ));
    let names = |docs: &[Value]| {
        let mut v: Vec<String> = docs
            .iter()
            .filter(|d| d["kind"] != "Namespace")
            .map(|d| {
                format!(
                    "{}/{}/{}",
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["namespace"].as_str().unwrap_or(""),
                    d["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&kustomized), names(&rendered), "kustomize and helm render different objects");
    let rules = |docs: &[Value], kind: &str| -> std::collections::BTreeMap<String, Value> {
        docs.iter()
            .filter(|d| d["kind"] == kind)
            .map(|d| (d["metadata"]["name"].as_str().unwrap().to_owned(), d["rules"].clone()))
            .collect()
    };
    for kind in ["ClusterRole", "Role"] {
        assert_eq!(rules(&kustomized, kind), rules(&rendered, kind), "{kind} rules differ");
    }
    let pod =
        |docs: &[Value]| docs.iter().find(|d| d["kind"] == "Deployment").unwrap()["spec"]["template"]["spec"].clone();
    assert_eq!(pod(&kustomized), pod(&rendered), "the Deployments' pods differ");

    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("op");
    let operator = operator_as(&cp, &kustomized, chart_ns, "oidc-operator", &state).await;

    // The samples, adapted by an overlay as a user would: the issuer is this API server.
    // (kustomize loads bases by relative path only: the overlay sits beside a copy.)
    let overlay = tmp.path().join("overlay");
    std::fs::create_dir_all(&overlay).unwrap();
    let base = tmp.path().join("samples");
    std::fs::create_dir_all(&base).unwrap();
    for entry in std::fs::read_dir(root.join("config/samples")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, base.join(path.file_name().unwrap())).unwrap();
    }
    let patch = format!(
        "- op: replace\n  path: /spec/oidcDiscoveryUrl\n  value: {url}\n- op: replace\n  path: /spec/boundIssuer\n  value: {url}\n- op: add\n  path: /spec/caCert\n  value: |\n{ca}",
        url = cp.url,
        ca = common::yaml_block(&cp.ca_pem(), 4)
    );
    std::fs::write(overlay.join("issuer.yaml"), patch).unwrap();
    std::fs::write(
        overlay.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- ../samples\npatches:\n- path: issuer.yaml\n  target: {kind: IdentityOidcAuth, name: runner}\n",
    )
    .unwrap();
    ok(&cp.kubectl(&["apply", "-n", "default", "-k", overlay.to_str().unwrap()]), "samples");
    let samples = [
        "oidckey/workload-key",
        "oidcscope/groups",
        "oidcscope/kubernetes",
        "oidcassignment/platform",
        "oidcclient/billing-api",
        "oidcprovider/main",
        "identityoidcauth/runner",
    ];
    wait_ready(&cp, "default", &samples, &operator);
    assert_never_forbidden(&state);
    // A Ready client's status names what it may use at the token endpoint (issue 22).
    let status =
        jsonpath(&cp, "default", "oidcclient/billing-api", "{.status.grantTypes} {.status.tokenEndpointAuthMethods}");
    assert_eq!(status, r#"["authorization_code"] ["client_secret_basic","client_secret_post"]"#);

    // Current / Healthy for every Ready sample.
    for what in samples {
        let obj = live(&cp, "default", what);
        assert_eq!(install::kstatus(&obj).0, "Current", "{what}");
        assert_eq!(install::argo_health(&obj).0, "Healthy", "{what}");
    }

    // Failed / Degraded: a client naming a key that does not exist (a spec reason).
    let (applied, err) = cp.apply("default", "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {name: broken}\nspec: {key: missing, redirectUris: [\"https://b.example/cb\"]}\n");
    assert!(applied, "{err}");
    eventually(30, "KeyNotFound", async || ready_field(&cp, "default", "oidcclient/broken", "reason") == "KeyNotFound")
        .await;
    let broken = live(&cp, "default", "oidcclient/broken");
    let (status, message) = install::kstatus(&broken);
    assert_eq!(status, "Failed", "{broken}");
    assert!(message.contains("spec.key"), "{message}");
    let (health, message) = install::argo_health(&broken);
    assert_eq!(health, "Degraded", "{message}");
    assert!(message.contains("KeyNotFound"), "{message}");
    // `kubectl wait` sees the same: Ready is False, Stalled True.
    ok(
        &cp.kubectl(&["wait", "-n", "default", "--for=condition=Stalled", "oidcclient/broken", "--timeout=10s"]),
        "wait Stalled",
    );

    // InProgress / Progressing: work that clears without a spec change (an issuer that
    // does not answer yet is retried).
    let (applied, err) = cp.apply("default", "apiVersion: oidc-operator.dev/v1alpha1\nkind: IdentityOidcAuth\nmetadata: {name: waiting}\nspec: {oidcDiscoveryUrl: \"https://127.0.0.1:9\", boundIssuer: \"https://127.0.0.1:9\", boundAudiences: x}\n");
    assert!(applied, "{err}");
    eventually(30, "DiscoveryFailed", async || {
        ready_field(&cp, "default", "identityoidcauth/waiting", "reason") == "DiscoveryFailed"
    })
    .await;
    let waiting = live(&cp, "default", "identityoidcauth/waiting");
    assert_eq!(install::kstatus(&waiting).0, "InProgress", "{waiting}");
    assert_eq!(install::argo_health(&waiting).0, "Progressing");

    // InProgress / Progressing while a new generation is not observed: the operator is
    // stopped, a spec changes, and both read the stale status as in progress; once the
    // operator is back the object is Current and Healthy again.
    operator.stop();
    let (applied, err) = cp.apply("default", "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {name: groups}\nspec: {description: edited, template: '{ \"groups\": {{identity.entity.groups.names}} }'}\n");
    assert!(applied, "{err}");
    let edited = live(&cp, "default", "oidcscope/groups");
    assert_ne!(edited["metadata"]["generation"], edited["status"]["observedGeneration"], "{edited}");
    let (status, message) = install::kstatus(&edited);
    assert_eq!(status, "InProgress", "{message}");
    let (health, message) = install::argo_health(&edited);
    assert_eq!(health, "Progressing");
    assert!(message.contains("generation"), "{message}");
    let operator = operator_as(&cp, &kustomized, chart_ns, "oidc-operator", &tmp.path().join("op2")).await;
    eventually(30, "the new generation observed", async || {
        let obj = live(&cp, "default", "oidcscope/groups");
        obj["metadata"]["generation"] == obj["status"]["observedGeneration"]
    })
    .await;
    let obj = live(&cp, "default", "oidcscope/groups");
    assert_eq!(install::kstatus(&obj).0, "Current");
    assert_eq!(install::argo_health(&obj).0, "Healthy");

    // The samples' identity logs in with the `runner` ServiceAccount's token.
    let identity_id = jsonpath(&cp, "default", "identityoidcauth/runner", "{.status.identityId}");
    let token = flow::service_account_token(&cp, "default", "runner", "oidc-operator");
    let access = common::login_token(&operator, &identity_id, &token).await;
    assert!(!access.is_empty());
    drop(operator);
}

/// A second kube-apiserver with a structured AuthenticationConfiguration trusting a provider
/// of this operator: an ID token from the flow authenticates `kubectl auth whoami` with the
/// username and groups of its claims; a token of another provider, one for another client
/// (audience) and an expired one are refused.
#[tokio::test(flavor = "multi_thread")]
async fn kube_apiserver_accepts_the_id_tokens_of_a_provider_as_a_relying_party() {
    let cp = tokio::task::spawn_blocking(ControlPlane::start).await.unwrap();
    cp.allow_anonymous_issuer_discovery();
    let ns = cp.namespace();
    let tmp = tempfile::tempdir().unwrap();
    // HTTPS with the operator's CA (kube-apiserver fetches discovery and JWKS over https).
    let mut operator = Server::operator(
        &cp.kubeconfig,
        &tmp.path().join("op"),
        &["--allow-insecure-issuers", "--issuer-refetch-interval", "1"],
    )
    .await;
    let (applied, err) = cp.apply(&ns, &flow::workload_manifests(&cp, &ns));
    assert!(applied, "{err}");
    let extra = "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {name: kube}\nspec: {template: '{\"username\": {{identity.entity.name}}, \"groups\": {{identity.entity.groups.names}}}'}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {name: main}\nspec: {allowedClients: [\"*\"], scopesSupported: [groups, kube]}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {name: other}\nspec: {allowedClients: [\"*\"], scopesSupported: [kube]}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {name: elsewhere}\nspec: {key: signing, redirectUris: [\"https://app.example/cb\"], assignments: [platform]}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {name: brief}\nspec: {key: signing, idTokenTTL: 20s, redirectUris: [\"https://app.example/cb\"], assignments: [platform]}\n";
    let (applied, err) = cp.apply(&ns, extra);
    assert!(applied, "{err}");
    let mut objects = flow::WORKLOAD_OBJECTS.to_vec();
    objects.extend(["oidcscope/kube", "oidcprovider/other", "oidcclient/elsewhere", "oidcclient/brief"]);
    wait_ready(&cp, &ns, &objects, &operator);
    let ca_b64 = jsonpath(&cp, "default", "secret/oidc-operator-ca", "{.data.ca\\.crt}");
    let ca = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(ca_b64).unwrap()).unwrap();
    operator.trust(&ca);

    let issuer = jsonpath(&cp, &ns, "oidcprovider/main", "{.status.issuer}");
    let (app_id, _) = flow::client_credentials(&cp, &ns, "app");
    let (brief_id, _) = flow::client_credentials(&cp, &ns, "brief");
    let auth_config = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: AuthenticationConfiguration\njwt:\n- issuer:\n    url: {issuer}\n    audiences: [{app_id}, {brief_id}]\n    audienceMatchPolicy: MatchAny\n    certificateAuthority: |\n{ca}  claimMappings:\n    username: {{claim: username, prefix: \"oidc:\"}}\n    groups: {{claim: groups, prefix: \"oidc:\"}}\n",
        ca = common::yaml_block(&ca, 6)
    );
    let rp = tokio::task::block_in_place(|| cp.start_relying_apiserver(&auth_config));

    let good = flow::run(&cp, &ns, &operator, "main", "app", &["kube"], Some(&ca)).await;
    assert_eq!(good.claims["username"], "runner");
    let whoami = |token: &str| {
        let out = rp.whoami(token);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The authenticator fetches discovery and JWKS in the background after start-up.
    let mut last = (false, String::new(), String::new());
    let accepted = holds_within(Duration::from_secs(60), async || {
        last = whoami(&good.id_token);
        last.0
    })
    .await;
    assert!(accepted, "the ID token was never accepted: {}\n{}", last.2, rp.log());
    let review: Value = serde_json::from_str(&last.1).unwrap();
    let user = &review["status"]["userInfo"];
    assert_eq!(user["username"], "oidc:runner", "{review}");
    let groups: Vec<&str> = user["groups"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(groups.contains(&"oidc:platform") && groups.contains(&"system:authenticated"), "{groups:?}");

    // Workloads without secrets (issue 23), with a real service-account token from the
    // TokenRequest API: exchanged in one call by a public agent holding nothing else, it
    // becomes an ID token for `app` that this relying party accepts; and used as a federated
    // client_assertion it authenticates a client that has no secret at all.
    let more = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: stranger}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {name: agent}\n\
spec: {clientType: public, key: signing, assignments: [platform], grantTypes: [\"urn:ietf:params:oauth:grant-type:token-exchange\"]}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {name: deployer}\n\
spec: {key: signing, tokenEndpointAuthMethod: private_key_jwt, federatedIdentities: [runner], grantTypes: [client_credentials]}\n";
    let (applied, err) = cp.apply(&ns, more);
    assert!(applied, "{err}");
    wait_ready(&cp, &ns, &["oidcclient/agent", "oidcclient/deployer"], &operator);
    let (agent_id, _) = flow::client_credentials(&cp, &ns, "agent");
    let sa_token = flow::service_account_token(&cp, &ns, "runner", "oidc-operator");
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("client_id", agent_id.as_str()),
        ("subject_token", sa_token.as_str()),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ("audience", app_id.as_str()),
        ("scope", "openid kube"),
    ];
    let resp = operator.client().post(format!("{issuer}/token")).form(&form).send().await.unwrap();
    let exchanged: Value = resp.json().await.unwrap();
    let id_token = exchanged["access_token"].as_str().unwrap_or_else(|| panic!("exchange: {exchanged}"));
    let (accepted, out, stderr) = whoami(id_token);
    assert!(accepted, "the exchanged ID token: {stderr}");
    let review: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(review["status"]["userInfo"]["username"], "oidc:runner", "{review}");
    let (deployer_id, deployer_secret) = flow::client_credentials(&cp, &ns, "deployer");
    assert!(deployer_secret.is_none(), "a private_key_jwt client is given no secret");
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", deployer_id.as_str()),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        ("client_assertion", sa_token.as_str()),
    ];
    let resp = operator.client().post(format!("{issuer}/token")).form(&form).send().await.unwrap();
    let status = resp.status();
    let granted: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "the federated client_assertion: {granted}");
    assert!(granted["access_token"].is_string(), "{granted}");
    // Another ServiceAccount's token meets the identity's bounds of no client: refused.
    let stranger = flow::service_account_token(&cp, &ns, "stranger", "oidc-operator");
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", deployer_id.as_str()),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        ("client_assertion", stranger.as_str()),
    ];
    let resp = operator.client().post(format!("{issuer}/token")).form(&form).send().await.unwrap();
    assert_eq!(resp.status(), 401, "another ServiceAccount's token as the deployer's credential");

    // spec.tokenReview: a ServiceAccount's token is refused once the ServiceAccount is
    // deleted (the API server's TokenReview says so), though its signature and exp still hold.
    let reviewed = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: ephemeral}}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: IdentityOidcAuth\nmetadata: {{name: ephemeral}}\nspec:\n  tokenReview: true\n  oidcDiscoveryUrl: {url}\n  boundIssuer: {url}\n  boundAudiences: oidc-operator\n  boundSubject: \"system:serviceaccount:{ns}:ephemeral\"\n  groups: [platform]\n  caCert: |\n{ca}",
        url = cp.url,
        ca = common::yaml_block(&cp.ca_pem(), 4),
    );
    let (applied, err) = cp.apply(&ns, &reviewed);
    assert!(applied, "{err}");
    wait_ready(&cp, &ns, &["identityoidcauth/ephemeral"], &operator);
    let ephemeral = flow::service_account_token(&cp, &ns, "ephemeral", "oidc-operator");
    let exchange = |token: String| {
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange".to_owned()),
            ("client_id", agent_id.clone()),
            ("subject_token", token),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt".to_owned()),
        ];
        operator.client().post(format!("{issuer}/token")).form(&form).send()
    };
    let resp = exchange(ephemeral.clone()).await.unwrap();
    assert_eq!(resp.status(), 200, "a live ServiceAccount's token: {}", resp.text().await.unwrap());
    let out = cp.kubectl(&["delete", "-n", &ns, "serviceaccount/ephemeral", "--wait=true"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let refused =
        holds_within(Duration::from_secs(20), async || exchange(ephemeral.clone()).await.unwrap().status() == 400)
            .await;
    assert!(refused, "the token of a deleted ServiceAccount was still exchanged");

    // A token of another provider of the same operator (same key, other issuer): refused.
    let other = flow::run(&cp, &ns, &operator, "other", "app", &["kube"], Some(&ca)).await;
    assert_ne!(other.issuer, good.issuer);
    let (accepted, _, stderr) = whoami(&other.id_token);
    assert!(!accepted && stderr.contains("Unauthorized"), "another provider's token: {stderr}");
    // A token for a client the configuration does not list (wrong audience): refused.
    let elsewhere = flow::run(&cp, &ns, &operator, "main", "elsewhere", &["kube"], Some(&ca)).await;
    let (accepted, _, stderr) = whoami(&elsewhere.id_token);
    assert!(!accepted && stderr.contains("Unauthorized"), "wrong audience: {stderr}");
    // A token that expired: accepted while it lives, refused after.
    let brief = flow::run(&cp, &ns, &operator, "main", "brief", &["kube"], Some(&ca)).await;
    let exp = brief.claims["exp"].as_i64().unwrap();
    let (accepted, _, stderr) = whoami(&brief.id_token);
    assert!(accepted, "a live token of the short-lived client: {stderr}");
    // kube-apiserver caches a successful authentication for 10 s (its token cache), so the
    // refusal is looked for once that has passed too.
    let now = oidc_operator::clock::unix_now;
    while now() <= exp + 11 {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (accepted, _, stderr) = whoami(&brief.id_token);
    assert!(!accepted && stderr.contains("Unauthorized"), "an expired token: {stderr}");
    drop(rp);
}

/// The `helm` of `scripts/tools` is built as Helm releases are (version and Kubernetes
/// version linker flags): `helm template` and `helm lint` accept the chart's
/// `kubeVersion: >=1.30.0-0` with no `--kube-version`, and `helm version` names the release.
#[test]
fn helm_template_and_lint_accept_the_chart_without_kube_version() {
    let chart = chart();
    let version = install::helm_offline(&["version", "--template", "{{.Version}} {{.GitTreeState}}"]);
    ok(&version, "helm version");
    assert_eq!(String::from_utf8_lossy(&version.stdout), "v3.19.0 clean", "helm is not built as released");
    let out = install::helm_offline(&["template", "oidc-operator", &chart, "-n", RELEASE_NS]);
    ok(&out, "helm template without --kube-version");
    let kinds: Vec<String> = documents(&String::from_utf8_lossy(&out.stdout))
        .iter()
        .filter_map(|d| d["kind"].as_str().map(str::to_owned))
        .collect();
    assert!(kinds.iter().any(|k| k == "Deployment"), "{kinds:?}");
    let lint = install::helm_offline(&["lint", "--strict", &chart]);
    ok(&lint, "helm lint without --kube-version");
    assert!(String::from_utf8_lossy(&lint.stdout).contains("0 chart(s) failed"));
}

/// The operator as its Deployment runs it (its `--external-url` kept), as ServiceAccount
/// `ns/oidc-operator`: only the listen addresses change (loopback, port 0).
async fn operator_as_deployed(cp: &ControlPlane, manifests: &[Value], ns: &str, state: &Path) -> Server {
    let deployment = manifests.iter().find(|d| d["kind"] == "Deployment").expect("a Deployment");
    let args: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let mut all = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if ["--listen", "--metrics-listen"].contains(&a.as_str()) {
            it.next();
        } else {
            all.push(a);
        }
    }
    let kubeconfig = cp.service_account_kubeconfig(ns, "oidc-operator");
    all.extend(["--kubeconfig".into(), kubeconfig.display().to_string(), "--namespace".into(), ns.into()]);
    all.extend(["--identity".into(), "op-0".into()]);
    std::fs::create_dir_all(state).unwrap();
    Server::spawn(&all, state).await
}

/// Runs the `helm test` hook's own script (no kubelet runs its Pod here) from this process:
/// the hook's environment, but the Service address is the operator process's loopback port
/// (what the Service's DNS name resolves to in a cluster) and the CA a local file.
fn run_test_hook(hook: &Value, service: &str, ca_file: &Path) -> std::process::Output {
    let container = &hook["spec"]["containers"][0];
    assert_eq!(container["command"], json!(["/bin/sh", "-c"]), "{container}");
    let script = container["args"][0].as_str().unwrap();
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.args(["-c", script]);
    for e in container["env"].as_array().unwrap() {
        cmd.env(e["name"].as_str().unwrap(), e["value"].as_str().unwrap());
    }
    cmd.env("SERVICE", service).env("CA_FILE", ca_file);
    cmd.output().expect("running the test hook's script")
}

/// The README's own Helm install (`--set externalUrl=https://oidc.example.com`), then the
/// README's cluster walkthrough (`examples/` into `default`, a wait for each kind, `ci-runner`
/// not Ready as the README says), then `helm test`'s hook: it targets the in-cluster Service
/// whatever `externalUrl` names, and its script, run against the operator, finds provider
/// `default/main` under the external issuer. The README's CRD upgrade block then runs as well.
#[tokio::test(flavor = "multi_thread")]
async fn helm_test_of_the_readme_install_reaches_the_service_and_finds_the_walkthrough_provider() {
    let cp = tokio::task::spawn_blocking(ControlPlane::start_without_crds).await.unwrap();
    let install_block = install::readme_block("Install with Helm", 0);
    assert!(install_block.starts_with("helm install oidc-operator "), "{install_block}");
    assert!(install_block.contains("--set externalUrl=https://oidc.example.com"), "{install_block}");
    ok(&install::run_block(&cp, &install_block), "the README's helm install");
    ok(&cp.kubectl(&["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]), "CRDs");
    // No controller-manager gives namespaces their `default` ServiceAccount here.
    ok(&cp.kubectl(&["create", "serviceaccount", "default", "-n", RELEASE_NS]), "default ServiceAccount");

    let manifest = documents(&helm(&cp, &["get", "manifest", "oidc-operator", "-n", RELEASE_NS]));
    let tmp = tempfile::tempdir().unwrap();
    let operator = operator_as_deployed(&cp, &manifest, RELEASE_NS, &tmp.path().join("op")).await;
    assert!(operator.output().contains("external-url=https://oidc.example.com"), "{}", operator.output());

    // The cluster walkthrough's second terminal, as written.
    let walkthrough = install::readme_block("Run it on a cluster", 1);
    assert!(walkthrough.contains("kubectl apply -n default -f examples/"), "{walkthrough}");
    let out = install::run_block(&cp, &walkthrough);
    ok(&out, "the README's cluster walkthrough");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let client_id = jsonpath(&cp, "default", "secret/billing-api-oidc-client", "{.data.client_id}");
    let client_id = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(client_id).unwrap()).unwrap();
    assert!(!client_id.is_empty() && stdout.ends_with(&client_id), "{stdout}");
    // Every kind `examples/` holds is waited for (IdentityOidcAuth for the Ready=False the
    // README explains), and `ci-runner` shows the reason it gives.
    for entry in std::fs::read_dir(install::root().join("examples")).unwrap() {
        for doc in documents(&std::fs::read_to_string(entry.unwrap().path()).unwrap()) {
            let kind = doc["kind"].as_str().unwrap().to_lowercase();
            let waited = walkthrough.lines().any(|l| l.contains(kind.as_str()) && !l.starts_with("kubectl get"));
            assert!(waited, "the walkthrough does not wait for {kind}: {walkthrough}");
        }
    }
    assert!(stdout.contains("ci-runner") && stdout.contains("DiscoveryFailed"), "{stdout}");
    assert_eq!(ready_field(&cp, "default", "identityoidcauth/ci-runner", "reason"), "DiscoveryFailed");

    // The installed test hook: the issuer of `externalUrl`, the in-cluster Service, a valid Pod.
    let hooks_yaml = helm(&cp, &["get", "hooks", "oidc-operator", "-n", RELEASE_NS]);
    let hooks = documents(&hooks_yaml);
    let hook = hooks
        .iter()
        .find(|d| d["kind"] == "Pod" && d["metadata"]["annotations"]["helm.sh/hook"] == "test")
        .expect("a helm test Pod");
    let env = |name: &str| -> String {
        let vars = hook["spec"]["containers"][0]["env"].as_array().unwrap();
        vars.iter().find(|e| e["name"] == name).unwrap()["value"].as_str().unwrap().to_owned()
    };
    let issuer = "https://oidc.example.com/v1/default/identity/oidc/provider/main";
    assert_eq!(env("ISSUER"), issuer);
    assert_eq!(env("SERVICE"), "oidc-operator.oidc-system.svc:8443");
    assert_eq!(jsonpath(&cp, "default", "oidcprovider/main", "{.status.issuer}"), issuer);
    ok(&kubectl_stdin(&cp, &["apply", "--dry-run=server", "-n", RELEASE_NS, "-f", "-"], &hooks_yaml), "test hook");

    // Its script, against the operator process, with the CA of the chart's Secret.
    let ca_file = tmp.path().join("ca.crt");
    std::fs::write(&ca_file, operator_ca(&cp, RELEASE_NS, &manifest)).unwrap();
    let service = operator.api.trim_start_matches("https://").to_owned();
    let out = run_test_hook(hook, &service, &ca_file);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "helm test's script failed:\n{said}");
    assert!(said.contains(&format!("ok: the provider names issuer {issuer}")), "{said}");
    // The chart's default (the release namespace) has no provider `main`: the hook fails.
    let elsewhere = documents(&helm(
        &cp,
        &["template", "oidc-operator", &chart(), "-n", RELEASE_NS, "--set", "externalUrl=https://oidc.example.com"],
    ));
    let hook = elsewhere.iter().find(|d| d["metadata"]["annotations"]["helm.sh/hook"] == "test").unwrap();
    let out = run_test_hook(hook, &service, &ca_file);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("404"), "found a provider in {RELEASE_NS}: {said}");

    // The README's CRD upgrade, then `helm upgrade`, as written, over a CRD Helm installed
    // older (a printer column it named otherwise): the chart's CRD replaces it, which a plain
    // server-side apply refuses as a conflict with Helm.
    let crd = "crd/oidcclients.oidc-operator.dev";
    let column = "{.spec.versions[0].additionalPrinterColumns[0].name}";
    let older = r#"[{"op":"replace","path":"/spec/versions/0/additionalPrinterColumns/0/name","value":"Old"}]"#;
    ok(&cp.kubectl(&["patch", crd, "--type=json", "--field-manager=helm", "-p", older]), "an older CRD");
    assert_eq!(jsonpath(&cp, "default", crd, column), "Old");
    let crds = install::root().join("charts/oidc-operator/crds");
    let plain = cp.kubectl(&["apply", "--server-side", "-f", crds.to_str().unwrap()]);
    assert!(!plain.status.success() && String::from_utf8_lossy(&plain.stderr).contains("conflict"));
    let upgrade = install::readme_block("Install with Helm", 1);
    assert!(upgrade.contains("--force-conflicts") && upgrade.contains("helm upgrade"), "{upgrade}");
    ok(&install::run_block(&cp, &upgrade), "the README's CRD upgrade");
    assert_eq!(jsonpath(&cp, "default", crd, column), "Ready", "the CRD was not upgraded");
    let revision = jsonpath(&cp, RELEASE_NS, "secret/sh.helm.release.v1.oidc-operator.v2", "{.metadata.name}");
    assert_eq!(revision, "sh.helm.release.v1.oidc-operator.v2", "helm upgrade made no second revision");
    drop(operator);
}

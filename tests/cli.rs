//! The command line: crdgen, the not-yet-built `run`, and the CRDs as kubectl reads them.

// Test helpers outside #[test] functions stop the test on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_oidc-operator");

#[test]
fn run_fails_clearly_without_a_cluster() {
    let out = Command::new(BIN).args(["run", "--kubeconfig", "/nonexistent/kubeconfig"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kubeconfig /nonexistent/kubeconfig"), "{err}");
}

#[test]
fn crdgen_writes_what_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).args(["crdgen", "--out"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success());
    let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut n = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(committed.join(name)).unwrap(), "{name:?}");
        n += 1;
    }
    assert_eq!(n, 6);
    let stdout = Command::new(BIN).args(["crdgen", "--stdout"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&stdout.stdout).matches("kind: CustomResourceDefinition").count(), 6);
}

#[test]
fn standalone_refuses_a_missing_manifest_folder_clearly() {
    let out = Command::new(BIN).args(["standalone", "--manifests", "/nonexistent/dir"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dir"));
}

/// `kubectl create --dry-run=client` needs API discovery to map kinds to resources; with no
/// control plane in this tier, a minimal discovery endpoint answers for apiextensions.k8s.io
/// (the cluster tier applies the CRDs to a real kube-apiserver).
#[tokio::test(flavor = "multi_thread")]
async fn kubectl_reads_the_crds() {
    use warp::Filter;
    let discovery = warp::path::full().map(|p: warp::path::FullPath| {
        let body = match p.as_str() {
            "/api" => serde_json::json!({"kind": "APIVersions", "versions": ["v1"]}),
            "/api/v1" => serde_json::json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": []}),
            "/apis" => serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [{
                "name": "apiextensions.k8s.io",
                "versions": [{"groupVersion": "apiextensions.k8s.io/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": "apiextensions.k8s.io/v1", "version": "v1"}}]}),
            "/apis/apiextensions.k8s.io/v1" => serde_json::json!({"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": "apiextensions.k8s.io/v1", "resources": [{"name": "customresourcedefinitions",
                "singularName": "customresourcedefinition", "namespaced": false, "kind": "CustomResourceDefinition",
                "verbs": ["create", "get", "list"]}]}),
            _ => serde_json::json!({"kind": "Status", "code": 404}),
        };
        warp::reply::json(&body)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(discovery).incoming(listener).run());
    let crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("kubectl")
            .args([
                "--server",
                &format!("http://{addr}"),
                "create",
                "--dry-run=client",
                "--validate=false",
                "-o",
                "name",
                "-f",
            ])
            .arg(&crds)
            .output()
            .expect("kubectl is required for this test")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "kubectl failed: {}", String::from_utf8_lossy(&out.stderr));
    for plural in ["oidckeys", "oidcclients", "oidcscopes", "oidcassignments", "oidcproviders", "identityoidcauths"] {
        assert!(
            stdout.contains(&format!("customresourcedefinition.apiextensions.k8s.io/{plural}.oidc-operator.dev")),
            "{stdout}"
        );
    }
}

/// No container engine runs here, so the image is proved as far as it can be: the runtime
/// stage is distroless `cc` (glibc, libgcc_s, libm, CA certificates), whose libraries cover
/// everything the binary links against, and the build stage runs the README's build command.
#[test]
fn the_runtime_image_provides_what_the_binary_links_against() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("a Dockerfile at the root");
    let froms: Vec<&str> = dockerfile.lines().filter(|l| l.trim_start().starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "a build stage and a runtime stage: {froms:?}");
    assert!(froms[1].contains("gcr.io/distroless/cc-debian12"), "{}", froms[1]);
    assert!(dockerfile.contains("cargo build --release --locked"), "the README's build command");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("cargo build --release --locked"), "the README documents the build");
    // distroless/cc-debian12 ships glibc's libraries and libgcc_s (and libssl, unused here).
    let provided = [
        "libc.so.6",
        "libm.so.6",
        "libgcc_s.so.1",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
        "ld-linux-x86-64.so.2",
        "ld-linux-aarch64.so.1",
    ];
    let out = Command::new("readelf").args(["--dynamic", "--wide", BIN]).output().expect("readelf (binutils)");
    assert!(out.status.success());
    let dynamic = String::from_utf8_lossy(&out.stdout);
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(needed.contains(&"libc.so.6"), "{dynamic}");
    for lib in &needed {
        assert!(provided.contains(lib), "the binary needs {lib}, which distroless/cc does not provide");
    }
    let interp = Command::new("readelf").args(["--program-headers", BIN]).output().unwrap();
    let interp = String::from_utf8_lossy(&interp.stdout);
    assert!(interp.contains("/lib64/ld-linux-x86-64.so.2") || interp.contains("ld-linux-aarch64"), "{interp}");
}

//! Time from applying many OidcClients to all Ready on a real kube-apiserver + etcd, and the
//! operator's peak RSS.
//!
//!     cargo bench --bench cluster            # 1,000 then 10,000 clients
//!     cargo bench --bench cluster -- 1000    # one size
//!
//! The control plane is the end-to-end tier's (built once by scripts/control-plane). Clients
//! are applied by 8 parallel `kubectl create` processes; "all Ready" is when every client's
//! `Ready` condition, as the API server returns it, is True. RSS is the operator's VmHWM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use common::cluster::ControlPlane;

fn vm_hwm_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

async fn run(cp: &ControlPlane, n: usize) {
    let ns = cp.namespace();
    let tmp = tempfile::tempdir().unwrap();
    let operator = Server::operator(&cp.kubeconfig, &tmp.path().join("op"), &["--plain-http"]).await;
    let (ok, err) = cp.apply(&ns, "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcKey\nmetadata: {name: bench}\nspec: {allowedClients: [\"*\"]}\n");
    assert!(ok, "{err}");
    let parts = 8;
    let mut files = Vec::new();
    for p in 0..parts {
        let mut yaml = String::new();
        for i in (p..n).step_by(parts) {
            yaml.push_str(&format!(
                "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {{name: c{i}, namespace: {ns}}}\nspec: {{key: bench, assignments: [allow_all], redirectUris: [\"https://app.example/cb\"]}}\n---\n"
            ));
        }
        let f = tmp.path().join(format!("clients-{p}.yaml"));
        std::fs::write(&f, yaml).unwrap();
        files.push(f);
    }
    let start = Instant::now();
    let creators: Vec<_> = files
        .iter()
        .map(|f| {
            Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&cp.kubeconfig)
                .args(["create", "-o", "name", "-f"])
                .arg(f)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in creators {
        assert!(c.wait().unwrap().success());
    }
    let applied = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    let ready_path = "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}";
    loop {
        let out = cp.kubectl(&["get", "oidcclients", "-n", &ns, "-o", ready_path]);
        let ready = String::from_utf8_lossy(&out.stdout).lines().filter(|l| *l == "True").count();
        if ready == n {
            break;
        }
        assert!(Instant::now() < deadline, "{ready} of {n} Ready after 10 minutes");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ready = start.elapsed();
    let out = cp.kubectl(&["get", "-n", &ns, "secrets", "-l", "oidc-operator.dev/client", "-o", "name"]);
    let secrets = String::from_utf8_lossy(&out.stdout).lines().count();
    println!(
        "{n:>6} clients: applied in {:>6.1} s, all Ready after {:>6.1} s, {secrets} credential Secrets, operator peak RSS {:>6.1} MB",
        applied.as_secs_f64(),
        ready.as_secs_f64(),
        vm_hwm_mb(operator.pid()),
    );
    operator.stop();
    let _ = cp.kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![1000, 10_000] } else { sizes };
    println!(
        "# cargo bench --bench cluster   ({} cores)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let cp = tokio::task::spawn_blocking(ControlPlane::start).await.unwrap();
    for n in sizes {
        run(&cp, n).await;
    }
}

//! Time from applying many OidcClients to all Ready on a real kube-apiserver + etcd, and the
//! operator's peak RSS.
//!
//!     cargo bench --bench cluster            # 1,000 then 10,000 clients
//!     cargo bench --bench cluster -- 1000    # one size
//!
//! The control plane is the end-to-end tier's (built once by scripts/control-plane). Clients
//! are created through the API, 32 requests in flight (kubectl spends more time parsing and
//! discovering than the API server spends storing); "all Ready" is when a watch has seen every
//! client's `Ready` condition True. RSS is the operator's VmHWM. Control plane, operator and
//! load all share the machine.
//!
//! `OIDC_BENCH_SMOKE=1` (or `-- --smoke`) applies 20 clients and checks that each is Ready
//! with its credential Secret, and that a restarted operator serves again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use common::Server;
use common::cluster::ControlPlane;
use futures::StreamExt;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use oidc_operator::api::OidcClient;

/// Creations in flight at once.
const CREATORS: usize = 32;

async fn kube_client(cp: &ControlPlane) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(&cp.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

/// A memory figure of /proc/<pid>/status in MB: VmHWM (peak RSS) or VmRSS (now).
fn proc_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
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
    let client = kube_client(cp).await;
    let api: Api<OidcClient> = Api::namespaced(client, &ns);
    // Count Ready clients from a watch (cheap), not by listing 10,000 objects again and again.
    let (tx, mut ready_rx) = tokio::sync::watch::channel(0usize);
    let watch_api = api.clone();
    let counter = tokio::spawn(async move {
        let mut ready = std::collections::HashSet::new();
        let mut events = std::pin::pin!(watcher(watch_api, watcher::Config::default()).default_backoff());
        while let Some(Ok(event)) = events.next().await {
            let (watcher::Event::Apply(c) | watcher::Event::InitApply(c)) = event else { continue };
            let is_ready = c
                .status
                .as_ref()
                .is_some_and(|s| s.common.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let name = c.metadata.name.clone().unwrap_or_default();
            if is_ready {
                ready.insert(name);
            } else {
                ready.remove(&name);
            }
            tx.send_replace(ready.len());
        }
    });
    let start = Instant::now();
    let created: Vec<Result<OidcClient, kube::Error>> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let c: OidcClient = serde_json::from_value(serde_json::json!({
                    "apiVersion": "oidc-operator.dev/v1alpha1",
                    "kind": "OidcClient",
                    "metadata": {"name": format!("c{i}")},
                    "spec": {"key": "bench", "assignments": ["allow_all"], "redirectUris": ["https://app.example/cb"]}
                }))
                .unwrap();
                api.create(&PostParams::default(), &c).await
            }
        })
        .buffer_unordered(CREATORS)
        .collect()
        .await;
    assert!(created.iter().all(Result::is_ok), "{:?}", created.iter().find(|r| r.is_err()));
    let applied = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while *ready_rx.borrow_and_update() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{} of {n} Ready after 10 minutes", *ready_rx.borrow());
        let _ = tokio::time::timeout(left, ready_rx.changed()).await;
    }
    counter.abort();
    let ready = start.elapsed();
    let out = cp.kubectl(&["get", "-n", &ns, "secrets", "-l", "oidc-operator.dev/client", "-o", "name"]);
    let secrets = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(secrets, n, "one credential Secret per Ready client");
    tokio::time::sleep(settle(5)).await;
    let settled = proc_mb(operator.pid(), "VmRSS:");
    println!(
        "{n:>6} clients: applied in {:>6.1} s, all Ready after {:>6.1} s, {secrets} credential Secrets, operator peak RSS {:>6.1} MB (RSS once settled {:>6.1} MB)",
        applied.as_secs_f64(),
        ready.as_secs_f64(),
        proc_mb(operator.pid(), "VmHWM:"),
        settled,
    );
    operator.stop();
    // A restart over the same objects: time until it serves its first snapshot, and its RSS.
    let restart = Instant::now();
    let operator = Server::operator(&cp.kubeconfig, &tmp.path().join("op2"), &["--plain-http"]).await;
    let serving = restart.elapsed();
    tokio::time::sleep(settle(10)).await;
    println!(
        "{n:>6} clients: restarted operator serving after {:>5.1} s, peak RSS {:>6.1} MB, RSS settled {:>6.1} MB",
        serving.as_secs_f64(),
        proc_mb(operator.pid(), "VmHWM:"),
        proc_mb(operator.pid(), "VmRSS:"),
    );
    operator.stop();
    let _ = cp.kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}

/// How long RSS is left to settle before it is read: `seconds`, or none in a smoke run.
fn settle(seconds: u64) -> Duration {
    Duration::from_secs(support::scaled(seconds, 0))
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = match (sizes.is_empty(), support::smoke()) {
        (false, _) => sizes,
        (true, false) => vec![1000, 10_000],
        (true, true) => vec![20],
    };
    println!(
        "# cargo bench --bench cluster   ({} cores)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let cp = tokio::task::spawn_blocking(ControlPlane::start).await.unwrap();
    for n in sizes {
        run(&cp, n).await;
    }
}

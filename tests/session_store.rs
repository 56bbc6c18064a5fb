//! Every replica serves the whole protocol: codes and tokens in Redis (issue 14). Two
//! `oidc-operator standalone` processes, the second started on a copy of the first one's state
//! folder (same keys, credentials and identity ids), share one Debian `redis-server` (single
//! node, then a three-master Redis Cluster): a flow crosses them step by step, a replayed code
//! fails at the other replica, a use limit is counted exactly across both, a revocation is seen
//! by both, tokens survive a replica's restart; with the store stopped every protocol endpoint
//! answers 503 and nothing is issued, and service comes back with the store.

// Test helpers outside #[test] functions stop the test on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::oauth::{Auth, OAuth, code_request, confidential};
use common::redis::{RedisCluster, RedisSentinel, RedisServer, SentinelPasswords};
use common::{ExternalIssuer, Server, eventually, holds_within, identity, login, login_token, write_manifest};
use serde_json::{Value, json};

const RUNNER: &str = "5e551011-0000-4000-8000-000000000001";
const LIMITED: &str = "5e551011-0000-4000-8000-000000000002";
const USES: usize = 25;
const REDIRECT: &str = "https://app.example/callback";

struct Pair {
    _tmp: tempfile::TempDir,
    issuer: ExternalIssuer,
    manifests: PathBuf,
    state_a: PathBuf,
    state_b: PathBuf,
    store: String,
    options: Vec<String>,
}

impl Pair {
    /// The manifests, replica A started once (it makes keys, credentials and the CA), and a
    /// copy of its state folder for B.
    async fn new(store: String) -> (Pair, Server, Server) {
        Self::new_with(store, Vec::new()).await
    }

    /// With more `--session-store-*` options.
    async fn new_with(store: String, options: Vec<String>) -> (Pair, Server, Server) {
        let tmp = tempfile::tempdir().unwrap();
        let manifests = tmp.path().join("m");
        std::fs::create_dir(&manifests).unwrap();
        let issuer = ExternalIssuer::start(tmp.path()).await;
        let mut yaml = identity("runner", RUNNER, &issuer, "  groups: [platform]\n");
        yaml.push_str(&identity("limited", LIMITED, &issuer, &format!("  accessTokenNumUsesLimit: {USES}\n")));
        yaml.push_str(&format!(
            "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {{name: app}}\nspec: {{redirectUris: [\"{REDIRECT}\"], assignments: [allow_all]}}\n---\n\
             apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {{name: main}}\nspec: {{allowedClients: [\"*\"]}}\n"
        ));
        write_manifest(&manifests, "all.yaml", &yaml);
        let (state_a, state_b) = (tmp.path().join("a"), tmp.path().join("b"));
        let pair = Pair { _tmp: tmp, issuer, manifests, state_a, state_b, store, options };
        let a = pair.start(&pair.state_a).await;
        let out = std::process::Command::new("cp").arg("-a").arg(&pair.state_a).arg(&pair.state_b).status().unwrap();
        assert!(out.success());
        let b = pair.start(&pair.state_b).await;
        (pair, a, b)
    }

    async fn start(&self, state: &Path) -> Server {
        let mut args =
            vec!["--allow-insecure-issuers", "--session-store", &self.store, "--session-store-timeout-ms", "300"];
        args.extend(self.options.iter().map(String::as_str));
        let server = Server::start(&self.manifests, state, &args).await;
        server.wait_identity_ready("runner").await;
        server.wait_identity_ready("limited").await;
        server
    }

    fn client(&self) -> (String, String) {
        confidential(&self.state_a, "default", "app")
    }

    async fn jwt(&self) -> String {
        self.issuer.mint("ES256", json!({}), None).await
    }
}

async fn status_json(resp: reqwest::Response) -> (u16, Value) {
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

async fn lookup(server: &Server, token: &str) -> (u16, Value) {
    let url = format!("{}/api/v1/auth/token/lookup", server.api);
    status_json(server.client().get(url).bearer_auth(token).send().await.unwrap()).await
}

/// Provider `default/main` of `server`.
fn main_provider(server: &Server) -> OAuth {
    OAuth::with_http(server, "default", "main", server.client().clone())
}

async fn authorize(server: &Server, token: &str, client_id: &str) -> (u16, Value) {
    let r = main_provider(server).send(&code_request(client_id, REDIRECT).auth(Auth::bearer(token))).await;
    (r.status, r.body)
}

async fn exchange(server: &Server, client: &(String, String), code: &str) -> (u16, Value) {
    let r = main_provider(server).exchange((&client.0, &client.1), code, REDIRECT).await;
    (r.status, r.body)
}

async fn userinfo(server: &Server, token: &str) -> (u16, Value) {
    let r = main_provider(server).userinfo(token).await;
    (r.status, r.body)
}

/// The issue's two-replica scenario against one store URL; returns the pair and replica A.
async fn two_replicas_share_one_store(store: String) -> (Pair, Server) {
    let (pair, a, b) = Pair::new(store).await;
    let client = pair.client();

    // login at A, authorize at B, token at A, userinfo at B.
    let token = login_token(&a, RUNNER, &pair.jwt().await).await;
    let (status, body) = authorize(&b, &token, &client.0).await;
    assert_eq!(status, 200, "authorize at B with A's token: {body}");
    let code = body["code"].as_str().unwrap().to_owned();
    let (status, body) = exchange(&a, &client, &code).await;
    assert_eq!(status, 200, "token at A with B's code: {body}");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let (status, body) = userinfo(&b, &access).await;
    assert_eq!((status, body["sub"].as_str()), (200, Some(RUNNER)), "userinfo at B: {body}");

    // The code replayed at the other replica fails, and revokes what it issued, everywhere.
    let (status, body) = exchange(&b, &client, &code).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    for server in [&a, &b] {
        assert_eq!(userinfo(server, &access).await.0, 401, "the replayed code's token still works");
    }

    // A use limit of N gives exactly N uses to 4 concurrent workers spread over A and B.
    let limited = Arc::new(login_token(&b, LIMITED, &pair.jwt().await).await);
    let (a, b) = (Arc::new(a), Arc::new(b));
    let granted = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (server, token, granted) =
            (if w % 2 == 0 { Arc::clone(&a) } else { Arc::clone(&b) }, Arc::clone(&limited), Arc::clone(&granted));
        workers.push(tokio::spawn(async move {
            loop {
                let (status, body) = lookup(&server, &token).await;
                match status {
                    200 => granted.fetch_add(1, Ordering::SeqCst),
                    // The worker that finds it used up deletes it: the others find it gone.
                    401 => {
                        assert!(body["error"] == "token_uses_exhausted" || body["error"] == "invalid_token", "{body}");
                        break;
                    }
                    other => panic!("lookup answered {other}: {body}"),
                };
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(granted.load(Ordering::SeqCst), USES, "uses counted across replicas");
    // A used-up token is gone from the store: raising the limit later cannot revive it.
    assert_eq!(lookup(&a, &limited).await.1["error"], "invalid_token");

    // Revocation at A is refused at B.
    let doomed = login_token(&a, RUNNER, &pair.jwt().await).await;
    assert_eq!(lookup(&b, &doomed).await.0, 200);
    let url = format!("{}/api/v1/auth/token/revoke", a.api);
    let resp = a.client().post(url).json(&json!({"accessToken": doomed})).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (status, body) = lookup(&b, &doomed).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_token")), "{body}");

    // A token survives a replica's restart (and is served by the other meanwhile).
    let kept = login_token(&a, RUNNER, &pair.jwt().await).await;
    let a = Arc::into_inner(a).unwrap();
    a.stop();
    assert_eq!(lookup(&b, &kept).await.0, 200, "B serves while A is down");
    let a = pair.start(&pair.state_a).await;
    let (status, body) = lookup(&a, &kept).await;
    assert_eq!(status, 200, "the token after A's restart: {body}");
    (pair, a)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_serve_the_whole_protocol_from_one_redis() {
    let redis = tokio::task::spawn_blocking(RedisServer::start).await.unwrap();
    let _pair = two_replicas_share_one_store(redis.url()).await;
    // Only hashes are stored: no key or value holds a token. Beside the records, each
    // namespace's slot holds its quota and owner indexes, named by namespace and owner.
    let keys = common::redis::cli(redis.port, &["--scan", "--pattern", "oidcop:*"]);
    let (tenant, records): (Vec<&str>, Vec<&str>) = keys.lines().partition(|k| k.starts_with("oidcop:{t:default}:"));
    assert!(!records.is_empty() && records.iter().all(|k| k.len() > 64), "{keys}");
    assert!(tenant.contains(&"oidcop:{t:default}:n") && tenant.contains(&"oidcop:{t:default}:b"), "{keys}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_serve_the_whole_protocol_from_a_redis_cluster() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await.unwrap();
    let a = two_replicas_share_one_store(cluster.url()).await;
    // Records spread over the masters by their hash tags (30 more tokens: all on one master
    // of three by chance with odds of 3 in 3^30).
    for _ in 0..30 {
        login_token(&a.1, RUNNER, &a.0.jwt().await).await;
    }
    let counts = cluster.key_counts();
    assert_eq!(counts.iter().filter(|n| **n > 0).count(), 3, "records spread over the masters: {counts:?}");
}

/// The store stopped: every protocol endpoint answers 503 with its JSON error at both
/// replicas, `/readyz` says so, nothing is issued; restarted (empty), service resumes with no
/// operator restart and the old tokens are unknown, never valid.
/// A store the tests can stop and start again, empty.
trait Store {
    fn url(&self) -> String;
    fn stop(&mut self);
    fn restart(&mut self);
}

impl Store for RedisServer {
    fn url(&self) -> String {
        RedisServer::url(self)
    }
    fn stop(&mut self) {
        RedisServer::stop(self)
    }
    fn restart(&mut self) {
        RedisServer::restart(self)
    }
}

impl Store for RedisCluster {
    fn url(&self) -> String {
        RedisCluster::url(self)
    }
    fn stop(&mut self) {
        RedisCluster::stop(self)
    }
    fn restart(&mut self) {
        RedisCluster::restart(self)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_store_fails_closed_and_service_resumes_with_it() {
    let redis = tokio::task::spawn_blocking(RedisServer::start).await.unwrap();
    stopped_store_fails_closed(redis).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_cluster_fails_closed_and_service_resumes_with_it() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await.unwrap();
    stopped_store_fails_closed(cluster).await;
}

async fn stopped_store_fails_closed(mut redis: impl Store) {
    let (pair, a, b) = Pair::new(redis.url()).await;
    let client = pair.client();
    let token = login_token(&a, RUNNER, &pair.jwt().await).await;
    let (_, body) = authorize(&a, &token, &client.0).await;
    let code = body["code"].as_str().unwrap().to_owned();
    let (_, second) = authorize(&b, &token, &client.0).await;
    let (_, body) = exchange(&b, &client, second["code"].as_str().unwrap()).await;
    let access = body["access_token"].as_str().unwrap().to_owned();

    redis.stop();
    let jwt = pair.jwt().await;
    for server in [&a, &b] {
        let (status, body) = login(server, RUNNER, &jwt).await;
        assert_eq!((status, body["error"].as_str()), (503, Some("temporarily_unavailable")), "login: {body}");
        assert_eq!(body["statusCode"], 503, "the login API's error shape: {body}");
        let (status, body) = authorize(server, &token, &client.0).await;
        assert_eq!((status, body["error"].as_str()), (503, Some("temporarily_unavailable")), "authorize: {body}");
        let (status, body) = exchange(server, &client, &code).await;
        assert_eq!((status, body["error"].as_str()), (503, Some("temporarily_unavailable")), "token: {body}");
        let (status, body) = userinfo(server, &access).await;
        assert_eq!((status, body["error"].as_str()), (503, Some("temporarily_unavailable")), "userinfo: {body}");
        let (status, body) = lookup(server, &token).await;
        assert_eq!((status, body["error"].as_str()), (503, Some("temporarily_unavailable")), "lookup: {body}");
        for op in ["renew", "revoke"] {
            let url = format!("{}/api/v1/auth/token/{op}", server.api);
            let resp = server.client().post(url).json(&json!({"accessToken": token})).send().await.unwrap();
            let (status, body) = status_json(resp).await;
            assert_eq!((status, body["error"].as_str()), (503, Some("temporarily_unavailable")), "{op}: {body}");
        }
    }
    for server in [&a, &b] {
        eventually(10, "/readyz to report the store", async || {
            std::process::Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("{}/readyz", server.metrics)])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout) == "503")
                .unwrap_or(false)
        })
        .await;
    }

    // Back, empty (no persistence): service resumes; what was issued before is unknown.
    tokio::task::block_in_place(|| redis.restart());
    let mut last = (0, Value::Null);
    let resumed = holds_within(Duration::from_secs(15), async || {
        last = login(&a, RUNNER, &pair.jwt().await).await;
        last.0 == 200
    })
    .await;
    assert!(resumed, "login never resumed: {} {}", last.0, last.1);
    let fresh = last.1["accessToken"].as_str().unwrap().to_owned();
    // Each replica reconnects on its own (a call during its reconnect backoff answers 503).
    eventually(15, "B to resume", async || {
        let (status, body) = lookup(&b, &fresh).await;
        assert!(status == 200 || status == 503, "{status} {body}");
        status == 200
    })
    .await;
    assert_eq!(lookup(&b, &token).await.1["error"], "invalid_token", "a lost token must be unknown");
    assert_eq!(exchange(&a, &client, &code).await.1["error"], "invalid_grant", "a lost code must be unknown");
    assert_eq!(userinfo(&b, &access).await.0, 401, "a lost userinfo token must be unknown");
}

/// The cluster tier: two `oidc-operator run` replicas against the test kube-apiserver share
/// one Redis; a service-account token's flow crosses them step by step.
#[tokio::test(flavor = "multi_thread")]
async fn two_operator_replicas_on_a_cluster_share_one_redis() {
    use base64::Engine;
    use common::cluster::{ControlPlane, jsonpath, wait_ready};
    use common::flow;
    let cp = tokio::task::spawn_blocking(ControlPlane::start).await.unwrap();
    let redis = tokio::task::spawn_blocking(RedisServer::start).await.unwrap();
    cp.allow_anonymous_issuer_discovery();
    let ns = cp.namespace();
    let tmp = tempfile::tempdir().unwrap();
    let url = redis.url();
    let args = |who: &'static str| {
        ["--identity", who, "--allow-insecure-issuers", "--issuer-refetch-interval", "1", "--session-store"]
            .into_iter()
            .map(str::to_owned)
            .chain([url.clone()])
            .collect::<Vec<String>>()
    };
    let one_args = args("op-one");
    let mut one = Server::operator(
        &cp.kubeconfig,
        &tmp.path().join("one"),
        &one_args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let two_args = args("op-two");
    let mut two = Server::operator(
        &cp.kubeconfig,
        &tmp.path().join("two"),
        &two_args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let ca_b64 = jsonpath(&cp, "default", "secret/oidc-operator-ca", "{.data.ca\\.crt}");
    let ca = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(ca_b64).unwrap()).unwrap();
    one.trust(&ca);
    two.trust(&ca);
    let (applied, err) = cp.apply(&ns, &flow::workload_manifests(&cp, &ns));
    assert!(applied, "{err}");
    wait_ready(&cp, &ns, &flow::WORKLOAD_OBJECTS, &one);
    let identity_id = jsonpath(&cp, &ns, "identityoidcauth/runner", "{.status.identityId}");
    let (client_id, secret) = flow::client_credentials(&cp, &ns, "app");
    let client = (client_id, secret.unwrap());
    let sa_token = flow::service_account_token(&cp, &ns, "runner", "oidc-operator");

    // login at one, authorize at two, token at one, userinfo at two, replay at two.
    let token = login_token(&one, &identity_id, &sa_token).await;
    let at = |s: &Server| OAuth::with_http(s, &ns, "main", s.client().clone());
    let (rp, client) = ("https://app.example/cb", (client.0.as_str(), client.1.as_str()));
    let authorize_as = |token: &str| {
        code_request(client.0, rp).set("scope", "openid groups").set("state", "s").auth(Auth::bearer(token))
    };
    let r = at(&two).send(&authorize_as(&token)).await;
    assert_eq!(r.status, 200, "authorize at two: {}", r.body);
    let code = r.text("code");
    let r = at(&one).exchange(client, &code, rp).await;
    assert_eq!(r.status, 200, "token at one: {}", r.body);
    let access = r.text("access_token");
    let r = at(&two).userinfo(&access).await;
    assert_eq!((r.status, r.body["groups"].clone()), (200, json!(["platform"])), "userinfo at two: {}", r.body);
    let r = at(&two).exchange(client, &code, rp).await;
    assert_eq!((r.status, r.error()), (400, Some("invalid_grant")), "replay at two: {}", r.body);
    assert_eq!(at(&two).userinfo(&access).await.status, 401, "the replay revoked the token at every replica");

    // An identity deleted and declared again under the same name and identityId is another
    // incarnation: what the first one issued (an access token, an unspent code, a userinfo
    // token) stays refused at both replicas, though each record names the same id and object.
    let identity_doc = flow::workload_manifests(&cp, &ns).rsplit("\n---\n").next().unwrap().replacen(
        "spec:\n",
        &format!("spec:\n  identityId: {identity_id}\n"),
        1,
    );
    let (applied, err) = cp.apply(&ns, &identity_doc);
    assert!(applied, "{err}");
    wait_ready(&cp, &ns, &["identityoidcauth/runner"], &one);
    let old_token = login_token(&one, &identity_id, &sa_token).await;
    let r = at(&two).send(&authorize_as(&old_token)).await;
    assert_eq!(r.status, 200, "authorize at two: {}", r.body);
    let unspent = r.text("code");
    let spent = at(&one).send(&authorize_as(&old_token)).await.text("code");
    let r = at(&one).exchange(client, &spent, rp).await;
    assert_eq!(r.status, 200, "token at one: {}", r.body);
    let old_access = r.text("access_token");
    for s in [&one, &two] {
        assert_eq!(lookup(s, &old_token).await.0, 200, "the first incarnation's token is valid");
    }
    let r = at(&two).userinfo(&old_access).await;
    assert_eq!(r.status, 200, "the first incarnation's userinfo token is valid");

    let old_uid = jsonpath(&cp, &ns, "identityoidcauth/runner", "{.metadata.uid}");
    let out = cp.kubectl(&["delete", "-n", &ns, "identityoidcauth/runner", "--wait"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (applied, err) = cp.apply(&ns, &identity_doc);
    assert!(applied, "{err}");
    assert_ne!(jsonpath(&cp, &ns, "identityoidcauth/runner", "{.metadata.uid}"), old_uid, "a new object");
    wait_ready(&cp, &ns, &["identityoidcauth/runner"], &one);
    assert_eq!(jsonpath(&cp, &ns, "identityoidcauth/runner", "{.status.identityId}"), identity_id);
    // Both replicas serve the second incarnation once a token it issued at one is valid at two.
    let mut new_token = String::new();
    eventually(30, "the second incarnation to serve at both replicas", async || {
        let (status, body) = login(&one, &identity_id, &sa_token).await;
        if status != 200 {
            return false;
        }
        new_token = body["accessToken"].as_str().unwrap().to_owned();
        lookup(&two, &new_token).await.0 == 200
    })
    .await;
    for s in [&one, &two] {
        let (status, body) = lookup(s, &old_token).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_token")), "old token: {body}");
        let r = at(s).send(&authorize_as(&old_token)).await;
        assert_eq!(r.status, 401, "old token at authorize: {}", r.body);
    }
    let r = at(&one).exchange(client, &unspent, rp).await;
    assert_eq!((r.status, r.error()), (400, Some("invalid_grant")), "old code: {}", r.body);
    let r = at(&two).userinfo(&old_access).await;
    assert_eq!(r.status, 401, "old userinfo token: {}", r.body);
    let r = at(&two).send(&authorize_as(&new_token)).await;
    assert_eq!(r.status, 200, "the second incarnation's token authorizes: {}", r.body);
}

/// TLS with the store's own CA (`--session-store-ca`) and an ACL user whose password comes
/// from a file or the environment (never the URL); a wrong password gives 503, never a token.
#[tokio::test(flavor = "multi_thread")]
async fn the_store_is_reached_over_tls_as_an_acl_user() {
    let (redis, ca) = tokio::task::spawn_blocking(|| RedisServer::start_tls_acl("oidc", "s3cret-pw")).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let manifests = tmp.path().join("m");
    std::fs::create_dir(&manifests).unwrap();
    let issuer = ExternalIssuer::start(tmp.path()).await;
    write_manifest(&manifests, "all.yaml", &identity("runner", RUNNER, &issuer, ""));
    std::fs::write(tmp.path().join("ca.pem"), &ca).unwrap();
    std::fs::write(tmp.path().join("password"), "s3cret-pw\n").unwrap();
    std::fs::write(tmp.path().join("wrong"), "guess\n").unwrap();
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let ca_path = tmp.path().join("ca.pem").display().to_string();
    let start = |state: &str, password_file: &str| {
        let state = tmp.path().join(state);
        let args: Vec<String> = [
            "--allow-insecure-issuers",
            "--session-store",
            &url,
            "--session-store-ca",
            &ca_path,
            "--session-store-username",
            "oidc",
            "--session-store-password-file",
            &tmp.path().join(password_file).display().to_string(),
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        (state, args)
    };
    let (state, args) = start("good", "password");
    let server = Server::start(&manifests, &state, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    server.wait_identity_ready("runner").await;
    let token = login_token(&server, RUNNER, &issuer.mint("ES256", json!({}), None).await).await;
    assert_eq!(lookup(&server, &token).await.0, 200);
    assert!(redis.dbsize() > 0, "the token's record is in the TLS store");
    drop(server);

    // The wrong password: the store refuses the connection, and so every login fails closed.
    let (state, args) = start("bad", "wrong");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = std::process::Command::new(common::BIN);
    cmd.arg("standalone").arg("--manifests").arg(&manifests).arg("--state").arg(&state).args(&args);
    let log = std::fs::File::create(tmp.path().join("bad.log")).unwrap();
    let mut child = cmd
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    // Its output is read to the end (a closed pipe would stop it), the api address kept.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(api) = line.split_whitespace().find_map(|w| w.strip_prefix("api=")) {
                let _ = tx.send(api.to_owned());
            }
        }
    });
    let api = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the server with a wrong password still starts");
    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(state.join("tls/ca.crt")).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let jwt = issuer.mint("ES256", json!({}), None).await;
    let mut last = (0, Value::Null);
    let refused = holds_within(Duration::from_secs(15), async || {
        let resp = http
            .post(format!("{api}/api/v1/auth/oidc-auth/login"))
            .json(&json!({"identityId": RUNNER, "jwt": jwt}))
            .send()
            .await
            .unwrap();
        last = (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null));
        assert_ne!(last.0, 200, "a login succeeded with a wrong store password");
        // Until its issuer is fetched the identity is not served; then the store refuses.
        last.0 == 503 && last.1["error"] == "temporarily_unavailable"
    })
    .await;
    assert!(refused, "never 503: {} {}", last.0, last.1);
    let body = last.1;
    assert_eq!(body["statusCode"], 503);
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(tmp.path().join("bad.log")).unwrap();
    assert!(!log.contains("guess") && !log.contains("s3cret-pw"), "a password in the log:\n{log}");
}

/// Redis with Sentinel: two replicas find the master through the Sentinel, share it, and
/// follow a failover: once the Sentinel names the promoted replica, logins and the tokens
/// issued before (replicated to it) work again, with no operator restart.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_follow_a_sentinel_failover() {
    let redis = tokio::task::spawn_blocking(RedisSentinel::start).await.unwrap();
    follow_a_sentinel_failover(redis, "redis+sentinel", Vec::new()).await;
}

/// `rediss+sentinel://`: the Sentinels and the data nodes speak TLS only (replication too),
/// with the CA given by `--session-store-ca`.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_follow_a_sentinel_failover_over_tls() {
    let redis = tokio::task::spawn_blocking(RedisSentinel::start_tls).await.unwrap();
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &redis.tls.as_ref().unwrap().ca_pem).unwrap();
    let options = vec!["--session-store-ca".to_owned(), ca.path().display().to_string()];
    follow_a_sentinel_failover(redis, "rediss+sentinel", options).await;
}

/// Sentinels with a password of their own (`requirepass`) in front of data nodes with
/// another: the store asks the Sentinels with `--session-store-sentinel-password-file` and the
/// master with `--session-store-password-file`, and follows a failover. Without the
/// Sentinels' password it finds no master: every call is `Unavailable`, never a write.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_follow_a_sentinel_failover_with_passwords() {
    let passwords = SentinelPasswords { data: "data-pw-31", sentinel: "sentinel-pw-47" };
    let redis = tokio::task::spawn_blocking(|| RedisSentinel::start_with_passwords(passwords)).await.unwrap();
    let url = format!("redis+sentinel://127.0.0.1:{}/mymaster", redis.port);
    let direct = |sentinel_password: Option<&str>| {
        let options = oidc_operator::sessions::redis::RedisOptions {
            password: Some("data-pw-31".into()),
            sentinel_password: sentinel_password.map(str::to_owned),
            ..oidc_operator::sessions::redis::RedisOptions::new(url.clone())
        };
        oidc_operator::sessions::redis::RedisStore::connect(&options, Default::default()).unwrap()
    };
    let code = support_code_record();
    let refused = direct(None).insert_code([1; 32], code.clone()).await;
    assert!(matches!(refused, Err(oidc_operator::sessions::StoreError::Unavailable)), "{refused:?}");
    let wrong = direct(Some("data-pw-31")).insert_code([2; 32], code.clone()).await;
    assert!(matches!(wrong, Err(oidc_operator::sessions::StoreError::Unavailable)), "{wrong:?}");
    assert_eq!(redis.master.dbsize(), 0, "nothing was written without the Sentinel's password");
    direct(Some("sentinel-pw-47")).insert_code([3; 32], code).await.unwrap();
    assert_eq!(redis.master.keys("*:grant").len(), 1);

    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("data"), "data-pw-31\n").unwrap();
    std::fs::write(files.path().join("sentinel"), "sentinel-pw-47\n").unwrap();
    let options = vec![
        "--session-store-password-file".to_owned(),
        files.path().join("data").display().to_string(),
        "--session-store-sentinel-password-file".to_owned(),
        files.path().join("sentinel").display().to_string(),
    ];
    follow_a_sentinel_failover(redis, "redis+sentinel", options).await;
}

/// A code record for the store tests that call it directly.
fn support_code_record() -> oidc_operator::sessions::CodeRecord {
    oidc_operator::sessions::CodeRecord {
        namespace: "default".into(),
        provider: "p".into(),
        client_id: "c".into(),
        redirect_uri: "https://app.example/cb".into(),
        nonce: None,
        scopes: vec!["openid".into()],
        challenge: None,
        identity: oidc_operator::api::ObjectKey::new("default", "runner"),
        identity_id: RUNNER.into(),
        identity_uid: "uid-1".into(),
        alias: oidc_operator::sessions::Alias::default(),
        auth_time: 0,
        max_age_sent: false,
        expires_at: i64::MAX / 4,
    }
}

async fn follow_a_sentinel_failover(redis: RedisSentinel, scheme: &str, options: Vec<String>) {
    // The first Sentinel listed is down without saying so: its connections are accepted (by
    // the kernel) and never answered, as with a paused process or a half-failed node. Each
    // replica's first search for the master asks it first and must go on to the second.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_port = hung.local_addr().unwrap().port();
    let url = format!("{scheme}://127.0.0.1:{hung_port},127.0.0.1:{}/mymaster", redis.port);
    let (pair, a, b) = Pair::new_with(url, options).await;
    let token = login_token(&a, RUNNER, &pair.jwt().await).await;
    assert_eq!(lookup(&b, &token).await.0, 200, "B reads what A wrote through the Sentinel's master");
    assert!(redis.master.dbsize() > 0);

    tokio::task::block_in_place(|| redis.fail_over());
    let promoted_before = redis.replica.dbsize();
    // The old master is a replica now: writes to it answer READONLY until both replicas have
    // asked the Sentinel again (a call or two each answers 503 meanwhile, never a token).
    logins_resume(&pair, [&a, &b], Duration::from_secs(20), "the failover").await;
    assert_eq!(lookup(&b, &token).await.0, 200, "the token replicated before the failover");
    assert!(redis.replica.dbsize() > promoted_before, "the logins after the failover wrote to the promoted node");
    drop(hung);
}

/// Logs in at each server until one login succeeds, within `within`; every login before
/// answers 503 `temporarily_unavailable`, never a token or another error.
async fn logins_resume(pair: &Pair, servers: [&Server; 2], within: Duration, after: &str) {
    let deadline = std::time::Instant::now() + within;
    for server in servers {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let resumed = holds_within(left, async || {
            let (status, body) = login(server, RUNNER, &pair.jwt().await).await;
            if status != 200 {
                assert_eq!((status, body["error"].as_str()), (503, Some("temporarily_unavailable")), "{body}");
            }
            status == 200
        })
        .await;
        assert!(resumed, "logins never resumed after {after}");
    }
}

/// A master that hangs (paused: the kernel still acknowledges, nothing answers) is dropped
/// by the call that waited for it, so once the Sentinel promotes the replica both operator
/// replicas follow, with the tokens issued before.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_follow_a_sentinel_failover_from_a_hung_master() {
    let redis = tokio::task::spawn_blocking(RedisSentinel::start).await.unwrap();
    let url = format!("redis+sentinel://127.0.0.1:{}/mymaster", redis.port);
    let (pair, a, b) = Pair::new_with(url, Vec::new()).await;
    let token = login_token(&a, RUNNER, &pair.jwt().await).await;
    assert_eq!(lookup(&b, &token).await.0, 200);

    tokio::task::block_in_place(|| redis.hang_master());
    logins_resume(&pair, [&a, &b], Duration::from_secs(30), "the master hung").await;
    assert_eq!(lookup(&a, &token).await.0, 200, "the token replicated before the master hung");
    assert_eq!(lookup(&b, &token).await.0, 200);
}

/// The Redis store on `redis`, called directly (no server), with the default deadline.
fn direct_store(redis: &RedisServer) -> Arc<oidc_operator::sessions::redis::RedisStore> {
    let options = oidc_operator::sessions::redis::RedisOptions::new(redis.url());
    oidc_operator::sessions::redis::RedisStore::connect(&options, Default::default()).unwrap()
}

/// A store at its `maxmemory` (policy `noeviction`) refuses writes: login, authorize and the
/// code exchange answer 503 `temporarily_unavailable`, the refusals are counted, and the
/// refused exchange leaves its code unspent; once memory is freed, the same code is redeemed.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_at_its_maxmemory_refuses_new_records_and_loses_none() {
    let redis = tokio::task::spawn_blocking(|| {
        RedisServer::start_with(&["--maxmemory", "8mb", "--maxmemory-policy", "noeviction"])
    })
    .await
    .unwrap();
    let (pair, a, _b) = Pair::new(redis.url()).await;
    let client = pair.client();
    let token = login_token(&a, RUNNER, &pair.jwt().await).await;
    let (status, body) = authorize(&a, &token, &client.0).await;
    assert_eq!(status, 200, "{body}");
    let code = body["code"].as_str().unwrap().to_owned();

    // Another database fills the memory up (maxmemory counts them all), 1 MiB a key, until
    // Redis refuses.
    let db1 = ["-n".to_owned(), "1".to_owned()];
    tokio::task::block_in_place(|| {
        for i in 0.. {
            let answer = common::redis::cli_with(redis.port, &db1, &["setrange", &format!("fill:{i}"), "1048575", "x"]);
            if answer.contains("OOM") {
                break;
            }
            assert!(i < 64, "8 MiB never filled: {answer}");
        }
    });

    let (status, body) = login(&a, RUNNER, &pair.jwt().await).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("temporarily_unavailable")), "login: {body}");
    let (status, body) = exchange(&a, &client, &code).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("temporarily_unavailable")), "exchange: {body}");
    // The store itself names the refusal (not "unavailable").
    let direct = direct_store(&redis);
    let record = oidc_operator::sessions::IdentityTokenRecord {
        identity: oidc_operator::api::ObjectKey::new("default", "runner"),
        identity_id: RUNNER.into(),
        identity_uid: "".into(),
        issued_at: 0,
        renewed_at: 0,
        uses: 0,
        alias: oidc_operator::sessions::Alias::default(),
    };
    let refused = direct.insert([7; 32], record, i64::MAX / 4).await;
    assert_eq!(refused, Err(oidc_operator::sessions::StoreError::OutOfMemory));
    let metrics = a.client().get(format!("{}/metrics", a.metrics)).send().await.unwrap().text().await.unwrap();
    for record in ["identity_token", "access_token"] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "oidc_operator_session_store_refusals_total{{record=\"{record}\",reason=\"maxmemory\"}}"
                ))
            })
            .unwrap_or_else(|| panic!("no refusals of {record} counted:\n{metrics}"));
        assert!(!line.ends_with(" 0"), "{line}");
    }

    // Memory freed: the code the refused exchange left unspent is redeemed, logins resume.
    tokio::task::block_in_place(|| common::redis::cli_with(redis.port, &db1, &["flushdb"]));
    let (status, body) = exchange(&a, &client, &code).await;
    assert_eq!(status, 200, "the refused exchange did not spend the code: {body}");
    let (status, body) = login(&a, RUNNER, &pair.jwt().await).await;
    assert_eq!(status, 200, "{body}");
}

/// The Redis store called directly, as the endpoints do, on the cases the HTTP tests cannot
/// force: an exchange retried after a lost reply, a replay, another client's code, a token
/// used up, expiry by Redis.
#[tokio::test(flavor = "multi_thread")]
async fn the_redis_store_keeps_the_memory_store_semantics() {
    use oidc_operator::api::ObjectKey;
    use oidc_operator::sessions::{
        Alias, CodeBinding, CodeRecord, CodeRedemption, IdentityTokenRecord, SessionStore, TokenError, TokenLimits,
        token_hash,
    };
    let redis = tokio::task::spawn_blocking(RedisServer::start).await.unwrap();
    let store = SessionStore::Redis(direct_store(&redis));
    let now = oidc_operator::clock::unix_now();
    let code = CodeRecord {
        namespace: "ns".into(),
        provider: "p".into(),
        client_id: "c".into(),
        redirect_uri: REDIRECT.into(),
        nonce: None,
        scopes: vec!["openid".into()],
        challenge: None,
        identity: ObjectKey::new("ns", "runner"),
        identity_id: RUNNER.into(),
        identity_uid: "".into(),
        alias: Alias::default(),
        auth_time: now,
        max_age_sent: false,
        expires_at: now + 60,
    };
    let no_pkce = [String::new()];
    let binding =
        CodeBinding { namespace: "ns", provider: "p", client_id: "c", redirect_uri: REDIRECT, pkce: &no_pkce };
    let other = CodeBinding { client_id: "someone-else", ..binding };
    let hash = token_hash("the code");
    store.insert_code(hash, code.clone()).await.unwrap();
    let ui = oidc_operator::sessions::handle::handle("random", &hash);
    let issue = |hash: [u8; 32]| oidc_operator::sessions::Issue {
        access: oidc_operator::sessions::AccessIssue {
            hash,
            expires_at: now + 60,
            scopes: vec![],
            jwt: false,
            issued_at: now,
        },
        refresh: None,
    };
    let first = &issue(token_hash(&ui));

    // Another client's code, another redirect_uri, a verifier for a code without PKCE:
    // refused, left unspent.
    let verifier = ["S256:x".to_owned(), "plain:y".to_owned()];
    for wrong in [
        other,
        CodeBinding { redirect_uri: "https://elsewhere/cb", ..binding },
        CodeBinding { pkce: &verifier, ..binding },
    ] {
        assert_eq!(store.redeem_code(&hash, &wrong, now, first).await.unwrap(), CodeRedemption::WrongBinding);
    }
    assert!(matches!(store.redeem_code(&hash, &binding, now, first).await.unwrap(), CodeRedemption::Fresh(_)));
    assert_eq!(store.access_token(&ui, now).await.unwrap().unwrap().grant.client_id(), "c");
    // The same exchange again (its reply was lost): the same answer, not a replay.
    assert!(matches!(store.redeem_code(&hash, &binding, now, first).await.unwrap(), CodeRedemption::Fresh(_)));
    // Another exchange of the code: a replay, which revokes the userinfo token.
    let second = &issue(token_hash("another"));
    assert_eq!(store.redeem_code(&hash, &binding, now, second).await.unwrap(), CodeRedemption::Replayed { revoked: 1 });
    assert_eq!(store.access_token(&ui, now).await.unwrap(), None);
    // The first exchange retried after the replay is a replay too.
    assert!(matches!(store.redeem_code(&hash, &binding, now, first).await.unwrap(), CodeRedemption::Replayed { .. }));
    // A malformed or forged access token names no grant.
    assert_eq!(store.access_token("no-suffix", now).await.unwrap(), None);
    assert_eq!(store.access_token("x.AAAA", now).await.unwrap(), None);

    // A code with an S256 challenge: a wrong verifier, or none, leaves it unspent for its
    // owner (a stolen public client's code cannot be burnt); the right one spends it.
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let pkce_code = token_hash("the PKCE code");
    store
        .insert_code(pkce_code, CodeRecord { challenge: Some((true, challenge.into())), ..code.clone() })
        .await
        .unwrap();
    let wrong = ["S256:wrong".to_owned(), format!("plain:{challenge}")];
    let ui2 = &issue(token_hash("ui2"));
    for pkce in [&wrong[..], &no_pkce[..]] {
        let attempt = CodeBinding { pkce, ..binding };
        assert_eq!(store.redeem_code(&pkce_code, &attempt, now, ui2).await.unwrap(), CodeRedemption::WrongBinding);
    }
    let right = ["plain:x".to_owned(), format!("S256:{challenge}")];
    let owner = CodeBinding { pkce: &right, ..binding };
    assert!(matches!(store.redeem_code(&pkce_code, &owner, now, ui2).await.unwrap(), CodeRedemption::Fresh(_)));

    // A token with a use limit of 2: two uses, then refused and gone.
    let record = IdentityTokenRecord {
        identity: ObjectKey::new("ns", "runner"),
        identity_id: RUNNER.into(),
        identity_uid: "".into(),
        issued_at: now,
        renewed_at: now,
        uses: 0,
        alias: Alias::default(),
    };
    let limits = TokenLimits { ttl: 60, max_ttl: 120, num_uses_limit: 2 };
    let t = token_hash("a token");
    store.insert(t, record.clone(), now + 60).await.unwrap();
    assert_eq!(store.use_token(&t, &limits, now).await.unwrap().uses, 1);
    assert_eq!(store.use_token(&t, &limits, now).await.unwrap().uses, 2);
    assert_eq!(store.use_token(&t, &limits, now).await, Err(TokenError::UsesExhausted));
    let raised = TokenLimits { num_uses_limit: 10, ..limits };
    assert_eq!(store.use_token(&t, &raised, now).await, Err(TokenError::Unknown), "revived by a raised limit");

    // Expired under the current limits: refused, and gone.
    let e = token_hash("expiring");
    store.insert(e, record.clone(), now + 60).await.unwrap();
    let lowered = TokenLimits { ttl: 1, ..limits };
    assert_eq!(store.use_token(&e, &lowered, now + 5).await, Err(TokenError::Expired));
    assert_eq!(store.use_token(&e, &limits, now).await, Err(TokenError::Unknown));

    // Redis expires a record at its expiry: nothing is left to revive.
    let short = token_hash("short");
    store.insert(short, record, now + 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(store.peek(&short, &limits, now).await, Err(TokenError::Unknown));
    let records: Vec<String> = redis.keys("*").into_iter().filter(|k| !k.contains("{t:")).collect();
    assert_eq!(records.len(), 2, "only the grants (alive for their userinfo window) are left: {records:?}");
}

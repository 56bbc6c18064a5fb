//! Test harness: runs the real `oidc-operator standalone` binary on loopback (port 0, read
//! back from its output), with manifests and state in temporary folders.

#![allow(dead_code)]
// Test harness: a failed set-up step should stop the test with its error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod cluster;
pub mod flow;
pub mod install;
pub mod oauth;
pub mod providers;
pub mod redis;

pub const BIN: &str = env!("CARGO_BIN_EXE_oidc-operator");

/// A running standalone server; killed when dropped.
pub struct Server {
    child: Child,
    pub api: String,
    pub metrics: String,
    pub state: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    client: reqwest::Client,
}

/// Installs aws-lc-rs as the process's rustls provider (the product's only TLS backend), so
/// the tests' reqwest clients can be built.
pub fn ensure_crypto() {
    let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Writes `yaml` as `dir/name`.
pub fn write_manifest(dir: &Path, name: &str, yaml: &str) {
    std::fs::write(dir.join(name), yaml).unwrap();
}

impl Server {
    /// Starts `standalone` and waits until it listens and has built its first snapshot.
    pub async fn start(manifests: &Path, state: &Path, extra: &[&str]) -> Server {
        let mut args = vec!["standalone".to_owned(), "--manifests".to_owned(), manifests.display().to_string()];
        args.extend(["--state".to_owned(), state.display().to_string(), "--poll-ms".to_owned(), "200".to_owned()]);
        args.extend(extra.iter().map(|a| a.to_string()));
        Self::spawn(&args, state).await
    }

    /// Starts `run` (the operator) against a cluster; its log goes next to `state`.
    pub async fn operator(kubeconfig: &Path, state: &Path, extra: &[&str]) -> Server {
        std::fs::create_dir_all(state).unwrap();
        let mut args = vec!["run".to_owned(), "--kubeconfig".to_owned(), kubeconfig.display().to_string()];
        args.extend(extra.iter().map(|a| a.to_string()));
        Self::spawn(&args, state).await
    }

    /// Starts the binary with `args` (plus loopback listeners on port 0) and waits until it
    /// listens and has built its first snapshot.
    pub async fn spawn(args: &[String], state: &Path) -> Server {
        ensure_crypto();
        let log = std::fs::File::create(state.with_extension("log")).unwrap();
        let mut child = Command::new(BIN)
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting oidc-operator standalone");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut server = Server {
            child,
            api: String::new(),
            metrics: String::new(),
            state: state.to_owned(),
            lines,
            client: reqwest::Client::new(),
        };
        let listening = server.wait_for_line(|l| l.starts_with("listening: "), Duration::from_secs(30)).await;
        let listening = listening.unwrap_or_else(|| panic!("the server did not start; output:\n{}", server.output()));
        let field = |name: &str| listening.split_whitespace().find_map(|w| w.strip_prefix(name)).unwrap().to_owned();
        server.api = field("api=");
        server.metrics = field("metrics=");
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
        // Trust the CA the binary writes (absent when a certificate was given).
        if let Ok(ca) = std::fs::read(state.join("tls/ca.crt")) {
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap());
        }
        server.client = builder.build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = reqwest::get(format!("{}/readyz", server.metrics)).await.map(|r| r.status().as_u16());
            if ready.ok() == Some(200) {
                break;
            }
            assert!(Instant::now() < deadline, "never ready; output:\n{}", server.output());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    /// Everything the server printed on stdout so far.
    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits until the readiness report shows IdentityOidcAuth `name` Ready, or fails the test
    /// with the server's output.
    pub async fn wait_identity_ready(&self, name: &str) {
        let ready = self
            .wait_for_line(
                |l| l.contains("IdentityOidcAuth") && l.contains(name) && l.contains("True"),
                Duration::from_secs(15),
            )
            .await;
        assert!(ready.is_some(), "identity {name} never Ready:\n{}", self.output());
    }

    /// Waits for a stdout line matching `pred`.
    pub async fn wait_for_line(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        let mut found = None;
        holds_within(timeout, async || {
            found = self.lines.lock().unwrap().iter().find(|l| pred(l)).cloned();
            found.is_some()
        })
        .await;
        found
    }

    /// A client that trusts the server's CA.
    /// Trusts `ca_pem` from now on (the operator's CA lives in a Secret, not in a file).
    pub fn trust(&mut self, ca_pem: &str) {
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
        self.client =
            reqwest::Client::builder().timeout(Duration::from_secs(10)).add_root_certificate(ca).build().unwrap();
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn issuer(&self, namespace: &str, provider: &str) -> String {
        format!("{}/v1/{namespace}/identity/oidc/provider/{provider}", self.api)
    }

    pub async fn get_json(&self, url: &str) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        let resp = self.client.get(url).send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.json().await.unwrap_or(serde_json::Value::Null);
        (status, headers, body)
    }

    pub async fn jwks(&self, namespace: &str, provider: &str) -> serde_json::Value {
        let (status, _, body) = self.get_json(&format!("{}/.well-known/keys", self.issuer(namespace, provider))).await;
        assert_eq!(status, 200, "JWKS of {namespace}/{provider}: {body}");
        body
    }

    /// Polls `url` until the JSON status is `want`.
    pub async fn wait_status(&self, url: &str, want: u16, timeout: Duration) -> bool {
        holds_within(timeout, async || {
            self.client.get(url).send().await.map(|r| r.status().as_u16()).ok() == Some(want)
        })
        .await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server as a kubelet does (SIGTERM, then SIGKILL after 10 s) and waits for it.
    pub fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kids of a JWKS document.
pub fn kids(jwks: &serde_json::Value) -> Vec<String> {
    jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
}

/// One standalone server, or two replicas sharing one Redis.
pub struct Replicas {
    /// The first replica's state folder (its keys and client credentials).
    pub state: PathBuf,
    pub a: Server,
    pub b: Option<Server>,
    /// The store the two share (kept running while they do).
    pub redis: Option<redis::RedisServer>,
}

/// One standalone server on `manifests` (the memory store), or, when `shared`, two replicas
/// sharing a Redis started here: the second starts from a copy of the first's state folder
/// (the same keys and client credentials, as one cluster's Secrets give every replica). Both
/// allow the tests' loopback issuers and wait for `identities`.
pub async fn replicas(manifests: &Path, base: &Path, shared: bool, identities: &[&str]) -> Replicas {
    let redis = shared.then(redis::RedisServer::start);
    let url = redis.as_ref().map(redis::RedisServer::url);
    let mut args = vec!["--allow-insecure-issuers", "--issuer-refetch-interval", "1"];
    if let Some(url) = &url {
        args.extend(["--session-store", url]);
    }
    let start = async |state: &Path| {
        let server = Server::start(manifests, state, &args).await;
        for name in identities {
            server.wait_identity_ready(name).await;
        }
        server
    };
    let state = base.join("a");
    let a = start(&state).await;
    let b = match redis {
        None => None,
        Some(_) => {
            let copy = base.join("b");
            let ok = Command::new("cp").arg("-a").arg(&state).arg(&copy).status().unwrap();
            assert!(ok.success(), "copying the first replica's state");
            Some(start(&copy).await)
        }
    };
    Replicas { state, a, b, redis }
}

/// Runs `tests/<script>` (Python) with `input` as JSON on its standard input; its JSON answer.
/// The one way the tests call their Python helpers (jwcrypto, authlib): a failure names the
/// script and says how to install what it needs.
pub fn python_json(script: &str, input: &serde_json::Value) -> serde_json::Value {
    use std::io::Write;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(script);
    let mut child = Command::new("python3")
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 is required for tests/{script}: {e}"));
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "tests/{script} failed (install what it needs with `python3 -m pip install -r tests/requirements.txt`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs the independent verifier (Python jwcrypto) on `tokens` against `jwks`.
pub fn verify_with_jwcrypto(jwks: &serde_json::Value, tokens: &[String]) -> serde_json::Value {
    python_json("verify_jwks.py", &serde_json::json!({"jwks": jwks, "tokens": tokens}))
}

/// The tests' own external issuer (Python jwcrypto over HTTPS); killed when dropped.
pub struct ExternalIssuer {
    child: Child,
    pub base: String,
    /// PEM of the CA that signed its certificate: what identities put in `caCert`.
    pub ca_pem: String,
    http: reqwest::Client,
}

/// A CA made by the test (not by the product) and a leaf certificate it signs, as PEM.
pub struct TestPki {
    pub ca_pem: String,
    pub leaf_pem: String,
    pub key_pem: String,
}

/// A CA with common name `name` (OpenSSL clients build chains by names) and a leaf for
/// `hosts`.
pub fn test_pki(name: &str, hosts: &[&str]) -> TestPki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    let leaf = rcgen::CertificateParams::new(hosts).unwrap().signed_by(&leaf_key, &issuer).unwrap();
    TestPki { ca_pem: ca.pem(), leaf_pem: leaf.pem(), key_pem: leaf_key.serialize_pem() }
}

impl ExternalIssuer {
    /// Makes a CA and a certificate for 127.0.0.1 (rcgen, in the test) and starts the issuer.
    pub async fn start(dir: &Path) -> ExternalIssuer {
        ensure_crypto();
        let pki = test_pki("test issuer CA", &["127.0.0.1", "localhost"]);
        let (cert, key) = (dir.join("issuer.crt"), dir.join("issuer.key"));
        std::fs::write(&cert, &pki.leaf_pem).unwrap();
        std::fs::write(&key, &pki.key_pem).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/issuer.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 is required for the test issuer");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        let base = first
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| {
                panic!("the test issuer did not start (`python3 -m pip install -r tests/requirements.txt`?): {first:?}")
            })
            .to_owned();
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
            .build()
            .unwrap();
        ExternalIssuer { child, base, ca_pem: pki.ca_pem, http }
    }

    /// Mints a token: `claims` merge over the defaults (null removes one); `mode` as in
    /// tests/issuer.py.
    pub async fn mint(&self, alg: &str, claims: serde_json::Value, mode: Option<&str>) -> String {
        self.mint_body(serde_json::json!({"alg": alg, "claims": claims, "mode": mode})).await
    }

    /// Mints an EdDSA token whose protected header has `header`'s members too (mode
    /// `raw-header`: members such as `crit` that jwcrypto refuses to sign).
    pub async fn mint_with_header(&self, claims: serde_json::Value, header: serde_json::Value) -> String {
        self.mint_body(serde_json::json!({"alg": "EdDSA", "claims": claims, "mode": "raw-header", "header": header}))
            .await
    }

    async fn mint_body(&self, body: serde_json::Value) -> String {
        let resp: serde_json::Value =
            self.http.post(format!("{}/mint", self.base)).json(&body).send().await.unwrap().json().await.unwrap();
        resp["token"].as_str().unwrap().to_owned()
    }

    pub async fn publish_pending(&self) {
        self.http.post(format!("{}/publish", self.base)).send().await.unwrap();
    }

    pub async fn jwks_fetches(&self) -> u64 {
        self.stat("jwks_fetches").await
    }

    /// A counter of tests/issuer.py's `/stats`.
    pub async fn stat(&self, name: &str) -> u64 {
        let v: serde_json::Value =
            self.http.get(format!("{}/stats", self.base)).send().await.unwrap().json().await.unwrap();
        v[name].as_u64().unwrap_or_else(|| panic!("no counter {name}: {v}"))
    }
}

impl Drop for ExternalIssuer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Indents a block for a YAML literal (`|`) at `spaces`.
pub fn yaml_block(text: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// An IdentityOidcAuth in the `default` namespace bound to the test issuer; `extra` adds spec
/// lines (2-space indented).
pub fn identity(name: &str, id: &str, issuer: &ExternalIssuer, extra: &str) -> String {
    identity_at(name, id, &issuer.base, issuer, extra)
}

/// As [`identity`], with `url` as both `oidcDiscoveryUrl` and `boundIssuer` (one of
/// tests/issuer.py's prefixed issuers, say), still trusting the test issuer's CA.
pub fn identity_at(name: &str, id: &str, url: &str, issuer: &ExternalIssuer, extra: &str) -> String {
    format!(
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: IdentityOidcAuth\nmetadata: {{name: {name}}}\nspec:\n  identityId: {id}\n  oidcDiscoveryUrl: {url}\n  boundIssuer: {url}\n  boundAudiences: \"oidc-operator, other\"\n  boundSubject: \"system:serviceaccount:ci:*\"\n  claimMappings: {{namespace: kubernetes.io.namespace}}\n{extra}  caCert: |\n{ca}---\n",
        ca = yaml_block(&issuer.ca_pem, 4),
    )
}

/// Logs in with an external JWT; returns the identity access token.
pub async fn login_token(server: &Server, identity_id: &str, jwt: &str) -> String {
    oauth::OAuth::with_http(server, "default", "", server.client().clone()).login_token(identity_id, jwt).await
}

/// A machine login's status and JSON answer (`null` when the body is not JSON).
pub async fn login(server: &Server, identity_id: &str, jwt: &str) -> (u16, serde_json::Value) {
    let r = oauth::OAuth::with_http(server, "default", "", server.client().clone()).login(identity_id, jwt).await;
    (r.status, r.body)
}

/// Polls `check` every 100 ms until it holds or `within` passes; whether it came to hold.
/// The one polling loop of the tests: [`eventually`] when a timeout is a failure as such,
/// this when the caller's message needs what it saw.
pub async fn holds_within(within: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `check` holds, for at most `secs` seconds, or fails the test saying what
/// never happened.
pub async fn eventually(secs: u64, what: &str, check: impl AsyncFnMut() -> bool) {
    assert!(holds_within(Duration::from_secs(secs), check).await, "timed out after {secs} s waiting for {what}");
}

/// An IdentityOidcAuth in namespace `ns` bound to the test issuer, for any audience listed in
/// `audiences`; `extra` adds spec lines (2-space indented).
pub fn identity_in(ns: &str, name: &str, id: &str, issuer: &ExternalIssuer, audiences: &str, extra: &str) -> String {
    format!(
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: IdentityOidcAuth\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  identityId: {id}\n  oidcDiscoveryUrl: {base}\n  boundIssuer: {base}\n  boundAudiences: \"{audiences}\"\n  boundSubject: \"system:serviceaccount:ci:*\"\n{extra}  caCert: |\n{ca}---\n",
        base = issuer.base,
        ca = yaml_block(&issuer.ca_pem, 4),
    )
}

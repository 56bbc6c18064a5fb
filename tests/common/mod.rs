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

/// Writes `yaml` as `dir/name`.
pub fn write_manifest(dir: &Path, name: &str, yaml: &str) {
    std::fs::write(dir.join(name), yaml).unwrap();
}

impl Server {
    /// Starts the binary and waits until it listens and has built its first snapshot.
    pub async fn start(manifests: &Path, state: &Path, extra: &[&str]) -> Server {
        let log = std::fs::File::create(state.with_extension("log")).unwrap();
        let mut child = Command::new(BIN)
            .args(["standalone", "--manifests"])
            .arg(manifests)
            .arg("--state")
            .arg(state)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--poll-ms", "200"])
            .args(extra)
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
        // Trust the CA standalone mode writes (absent when a certificate was given).
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

    /// Waits for a stdout line matching `pred`.
    pub async fn wait_for_line(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A client that trusts the server's CA.
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
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.client.get(url).send().await.map(|r| r.status().as_u16()).ok() == Some(want) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server and waits for it to exit.
    pub fn stop(mut self) {
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

/// Runs the independent verifier (Python jwcrypto) on `tokens` against `jwks`.
pub fn verify_with_jwcrypto(jwks: &serde_json::Value, tokens: &[String]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/verify_jwks.py");
    let input = serde_json::json!({"jwks": jwks, "tokens": tokens}).to_string();
    let mut child = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is required for the independent JOSE verifier");
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the jwcrypto verifier failed (install it with `python3 -m pip install -r tests/requirements.txt`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

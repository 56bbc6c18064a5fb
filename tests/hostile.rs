//! Hostile clients against the real `oidc-operator standalone` process (docs/design.md, the security model: everything
//! an unauthenticated caller can make the server hold is bounded): thousands of idle and slow
//! connections, oversized bodies, handshakes that never finish, the connection cap, and the
//! refusal to serve plain HTTP beyond loopback.
//!
//! Loopback only; every loop and wait is bounded.

// Test helpers outside #[test] functions stop the test on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{ExternalIssuer, Server, holds_within, identity, write_manifest};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

const ENTITY: &str = "5d0c0ffe-0000-4000-8000-0000000000aa";
const REDIRECT: &str = "https://app.example/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// The tests here measure latency and count descriptors: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Setup {
    _tmp: tempfile::TempDir,
    issuer: ExternalIssuer,
    server: Server,
    ca_pem: Vec<u8>,
    client_id: String,
    client_secret: String,
}

/// An identity, a key, a confidential client and a provider `main`, served with `extra` flags.
async fn setup(extra: &[&str]) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let (m, state) = (tmp.path().join("m"), tmp.path().join("state"));
    std::fs::create_dir(&m).unwrap();
    let issuer = ExternalIssuer::start(tmp.path()).await;
    let mut manifests = identity("runner", ENTITY, &issuer, "");
    manifests.push_str(&format!(
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcKey\nmetadata: {{name: k}}\nspec: {{algorithm: ES256, allowedClients: [\"*\"]}}\n---\n\
         apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {{name: app}}\nspec: {{clientType: confidential, key: k, redirectUris: [\"{REDIRECT}\"], assignments: [allow_all]}}\n---\n\
         apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {{name: main}}\nspec: {{allowedClients: [app]}}\n"
    ));
    write_manifest(&m, "all.yaml", &manifests);
    // The tests' issuer listens on loopback.
    let args: Vec<&str> = ["--allow-insecure-issuers"].iter().chain(extra).copied().collect();
    let server = Server::start(&m, &state, &args).await;
    server.wait_identity_ready("runner").await;
    let creds: Value = serde_json::from_slice(&std::fs::read(state.join("clients/default/app.json")).unwrap()).unwrap();
    let ca_pem = std::fs::read(state.join("tls/ca.crt")).unwrap();
    Setup {
        _tmp: tmp,
        issuer,
        server,
        ca_pem,
        client_id: creds["client_id"].as_str().unwrap().to_owned(),
        client_secret: creds["client_secret"].as_str().unwrap().to_owned(),
    }
}

impl Setup {
    /// A client without a connection pool: every request opens (and the server closes) its own
    /// connection, so descriptor counts do not depend on keep-alive.
    fn fresh_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&self.ca_pem).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    fn issuer_url(&self) -> String {
        self.server.issuer("default", "main")
    }

    fn addr(&self) -> String {
        self.server.api.trim_start_matches("https://").trim_start_matches("http://").to_owned()
    }

    fn tls_connector(&self) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut self.ca_pem.as_slice()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// One value of the server's metrics, e.g. `oidc_operator_connections_open{listener="api"}`.
    async fn metric(&self, series: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.server.metrics)).await.unwrap().text().await.unwrap();
        text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
    }
}

/// Open descriptors of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// The soft open-file limit of this process.
fn own_fd_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap_or(u64::MAX)
}

/// A connection to `addr` from the loopback address `from` (a peer of its own).
async fn connect_from(from: &str, addr: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::new(from.parse().unwrap(), 0)).unwrap();
    socket.connect(addr.parse().unwrap()).await.unwrap()
}

/// Reads until the peer closes (EOF or reset); returns when, or `None` if it stays open past
/// `limit`.
async fn closed_by_peer(mut read: impl tokio::io::AsyncRead + Unpin, limit: Duration) -> Option<Instant> {
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, read.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(Instant::now()),
            Ok(Ok(_)) => {}
        }
    }
}

/// The good clients' round: discovery, JWKS, a real login, a refused login, authorize and
/// token, each timed. Returns (name, latency) pairs.
async fn good_round(s: &Setup) -> Vec<(&'static str, Duration)> {
    let http = s.fresh_client();
    let issuer = s.issuer_url();
    let mut times = Vec::new();
    let jwt = s.issuer.mint("ES256", json!({"kubernetes.io": {"namespace": "ci"}}), None).await;

    let t = Instant::now();
    let r = http.get(format!("{issuer}/.well-known/openid-configuration")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["issuer"], issuer.as_str());
    times.push(("discovery", t.elapsed()));

    let t = Instant::now();
    let r = http.get(format!("{issuer}/.well-known/keys")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.json::<Value>().await.unwrap()["keys"].as_array().unwrap().is_empty());
    times.push(("jwks", t.elapsed()));

    let login = format!("{}/api/v1/auth/oidc-auth/login", s.server.api);
    let t = Instant::now();
    let r = http.post(&login).json(&json!({"identityId": ENTITY, "jwt": jwt})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let access = r.json::<Value>().await.unwrap()["accessToken"].as_str().unwrap().to_owned();
    times.push(("login", t.elapsed()));

    let t = Instant::now();
    let r = http.post(&login).json(&json!({"identityId": ENTITY, "jwt": "not.a.jwt"})).send().await.unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    times.push(("login (refused)", t.elapsed()));

    let t = Instant::now();
    let params = [
        ("client_id", s.client_id.as_str()),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("scope", "openid"),
        ("state", "st-1"),
        ("nonce", "n-1"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    let r = http.get(format!("{issuer}/authorize")).query(&params).bearer_auth(&access).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let code = r.json::<Value>().await.unwrap()["code"].as_str().unwrap().to_owned();
    times.push(("authorize", t.elapsed()));

    let t = Instant::now();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
        ("client_id", s.client_id.as_str()),
        ("client_secret", s.client_secret.as_str()),
    ];
    let r = http.post(format!("{issuer}/token")).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap()["id_token"].is_string());
    times.push(("token", t.elapsed()));
    times
}

const HOSTILE_EACH: usize = 1000;
const HEADER_TIMEOUT: u64 = 4;
const HANDSHAKE_TIMEOUT: u64 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_idle_and_slow_connections_do_not_stop_good_clients_and_are_closed() {
    let _serial = SERIAL.lock().await;
    let limit = own_fd_limit();
    assert!(limit >= 2 * HOSTILE_EACH as u64 + 500, "this test needs ~2,500 descriptors; the soft limit is {limit}");
    let (header, handshake) = (HEADER_TIMEOUT.to_string(), HANDSHAKE_TIMEOUT.to_string());
    let s = setup(&["--header-read-timeout", &header, "--tls-handshake-timeout", &handshake]).await;
    let pid = s.server.pid();
    // Warm up (the issuer's keys are fetched, the server's outbound connection made), then
    // let the server close whatever that left open before the baseline is taken.
    good_round(&s).await;
    let settled = holds_within(Duration::from_secs(15), async || {
        s.metric("oidc_operator_connections_open{listener=\"api\"}").await == 0.0
    })
    .await;
    assert!(settled, "the warm-up connections were not closed");
    let baseline = fd_count(pid);

    // 1,000 idle: TCP only, never a byte (the TLS handshake never starts). The idle ones come
    // from 127.0.0.2 and the slow ones from 127.0.0.3, each peer at the default per-peer cap.
    let addr = s.addr();
    let mut idle = Vec::new();
    for _ in 0..HOSTILE_EACH {
        let stream = connect_from("127.0.0.2", &addr).await;
        let opened = Instant::now();
        idle.push(tokio::spawn(async move {
            let (read, _write) = stream.into_split();
            closed_by_peer(read, Duration::from_secs(30)).await.map(|at| at - opened)
        }));
    }
    // 1,000 slow: a finished TLS handshake, then one header byte a second, never finishing.
    let connector = s.tls_connector();
    let handshaken = Arc::new(AtomicUsize::new(0));
    let mut slow = Vec::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    for _ in 0..HOSTILE_EACH {
        let (connector, addr, handshaken, gate) =
            (connector.clone(), addr.clone(), Arc::clone(&handshaken), Arc::clone(&gate));
        slow.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.unwrap();
            let tcp = connect_from("127.0.0.3", &addr).await;
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let tls = connector.connect(name, tcp).await.unwrap();
            let opened = Instant::now();
            handshaken.fetch_add(1, Ordering::SeqCst);
            drop(permit);
            let (read, mut write) = tokio::io::split(tls);
            let trickle = async move {
                let request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
                for i in 0..60 {
                    let byte = request.get(i).copied().unwrap_or(b'a');
                    if write.write_all(&[byte]).await.is_err() || write.flush().await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                std::future::pending::<()>().await;
            };
            tokio::select! {
                at = closed_by_peer(read, Duration::from_secs(30)) => at.map(|at| at - opened),
                () = trickle => None,
            }
        }));
    }
    let all_open = holds_within(Duration::from_secs(20), async || {
        handshaken.load(Ordering::SeqCst) == HOSTILE_EACH
            && s.metric("oidc_operator_connections_open{listener=\"api\"}").await >= (2 * HOSTILE_EACH) as f64
    })
    .await;
    assert!(all_open, "the hostile connections did not all open: {} handshakes", handshaken.load(Ordering::SeqCst));
    let during = fd_count(pid);

    // Good clients, while all 2,000 are open.
    let times = good_round(&s).await;
    let open_after = s.metric("oidc_operator_connections_open{listener=\"api\"}").await;
    let still_open = idle.iter().chain(&slow).filter(|h| !h.is_finished()).count();
    for (what, took) in &times {
        println!("under {} hostile connections: {what} answered in {took:?}", 2 * HOSTILE_EACH);
        assert!(*took < Duration::from_secs(1), "{what} took {took:?}");
    }
    assert_eq!(still_open, 2 * HOSTILE_EACH, "every hostile connection was still open while good clients were served");
    assert!(open_after >= (2 * HOSTILE_EACH) as f64, "server-side open connections: {open_after}");

    // The server closes them all: the slow ones after the header timeout, the idle ones after
    // the handshake timeout (a little slack for scheduling).
    let check = |name: &str, results: Vec<Option<Duration>>, want: u64| {
        let want = Duration::from_secs(want);
        let (mut min, mut max) = (Duration::MAX, Duration::ZERO);
        for r in results {
            let after = r.unwrap_or_else(|| panic!("a {name} connection was never closed by the server"));
            (min, max) = (min.min(after), max.max(after));
        }
        println!("{name} connections closed by the server after {min:?} .. {max:?} (timeout {want:?})");
        assert!(min >= want - Duration::from_millis(300), "{name}: closed before the timeout ({min:?})");
        assert!(max <= want + Duration::from_secs(3), "{name}: closed late ({max:?})");
    };
    let mut results = Vec::new();
    for h in slow {
        results.push(h.await.unwrap());
    }
    check("slow", results, HEADER_TIMEOUT);
    let mut results = Vec::new();
    for h in idle {
        results.push(h.await.unwrap());
    }
    check("idle", results, HANDSHAKE_TIMEOUT);
    let header_closed =
        s.metric("oidc_operator_connections_rejected_total{listener=\"api\",reason=\"header_timeout\"}");
    assert!(header_closed.await >= HOSTILE_EACH as f64);
    let tls_closed =
        s.metric("oidc_operator_connections_rejected_total{listener=\"api\",reason=\"tls_handshake_timeout\"}");
    assert!(tls_closed.await >= HOSTILE_EACH as f64);

    // Descriptors return to the baseline.
    let back = holds_within(Duration::from_secs(15), async || fd_count(pid) <= baseline).await;
    let after = fd_count(pid);
    println!("server descriptors: baseline {baseline}, with the hostile connections {during}, after {after}");
    // (A few descriptors of the baseline may have been transient: manifest polling.)
    assert!(during + 4 >= baseline + 2 * HOSTILE_EACH, "the server held the hostile connections: {during}");
    assert!(back, "descriptors did not return to the baseline {baseline}: {after}");
    // And the server still answers.
    good_round(&s).await;
}

/// A login body and a token body of `size` bytes (a JSON object, a form).
fn big_bodies(size: usize) -> (Vec<u8>, Vec<u8>) {
    let login = format!("{{\"identityId\": \"{ENTITY}\", \"jwt\": \"{}\"}}", "a".repeat(size));
    let token = format!("grant_type=authorization_code&code={}", "a".repeat(size));
    (login.into_bytes(), token.into_bytes())
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_get_a_413_with_the_json_error_not_a_reset() {
    let _serial = SERIAL.lock().await;
    let s = setup(&[]).await;
    let login = format!("{}/api/v1/auth/oidc-auth/login", s.server.api);
    let token = format!("{}/token", s.issuer_url());
    // A pooled client too: after each 413 the server closes, and the pool must notice.
    let clients = [s.fresh_client(), s.server.client().clone()];
    for size in [4 * 1024 * 1024, 100 * 1024] {
        let (login_body, token_body) = big_bodies(size);
        for i in 0..10 {
            let http = &clients[i % 2];
            let r = http
                .post(&login)
                .header("content-type", "application/json")
                .body(login_body.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("login, {size} bytes, try {i}: {e:?}"));
            assert_eq!(r.status(), 413);
            assert_eq!(r.headers()["connection"], "close");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["statusCode"], 413, "{body}");
            assert_eq!(body["error"], "payload_too_large", "{body}");
            assert!(body["message"].is_string(), "{body}");

            let r = http
                .post(&token)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(token_body.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("token, {size} bytes, try {i}: {e:?}"));
            assert_eq!(r.status(), 413);
            assert_eq!(r.headers()["connection"], "close");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"], "invalid_request", "{body}");
            assert!(body["error_description"].as_str().unwrap().contains("too large"), "{body}");
        }
    }
    // A small body is still read and judged on its content (no client credentials in it).
    let r = s.fresh_client().post(&token).form(&[("grant_type", "authorization_code")]).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
    let rejected = s.metric("oidc_operator_connections_rejected_total{listener=\"api\",reason=\"body_too_large\"}");
    assert_eq!(rejected.await, 40.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_handshakes_that_never_complete_are_closed_after_the_handshake_timeout() {
    let _serial = SERIAL.lock().await;
    let s = setup(&["--tls-handshake-timeout", "2"]).await;
    let addr = s.addr();
    let mut waiting = Vec::new();
    for i in 0..20 {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        let opened = Instant::now();
        if i % 2 == 1 {
            // The start of a ClientHello record announcing 512 bytes, and nothing more.
            tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]).await.unwrap();
        }
        waiting.push(tokio::spawn(
            async move { closed_by_peer(tcp, Duration::from_secs(15)).await.map(|at| at - opened) },
        ));
    }
    for w in waiting {
        let after = w.await.unwrap().expect("the server never closed a stalled handshake");
        assert!(after >= Duration::from_millis(1700) && after <= Duration::from_secs(5), "closed after {after:?}");
    }
    let closed =
        s.metric("oidc_operator_connections_rejected_total{listener=\"api\",reason=\"tls_handshake_timeout\"}");
    assert_eq!(closed.await, 20.0);
    // A real handshake is still served.
    let r = s.fresh_client().get(format!("{}/.well-known/keys", s.issuer_url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn at_the_connection_cap_new_connections_are_closed_at_once() {
    let _serial = SERIAL.lock().await;
    let s = setup(&["--max-connections", "20", "--tls-handshake-timeout", "3"]).await;
    let addr = s.addr();
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    let full = holds_within(Duration::from_secs(5), async || {
        s.metric("oidc_operator_connections_open{listener=\"api\"}").await == 20.0
    })
    .await;
    assert!(full, "the held connections were not all accepted");
    let extra = TcpStream::connect(&addr).await.unwrap();
    let t = Instant::now();
    let closed = closed_by_peer(extra, Duration::from_secs(2)).await;
    assert!(closed.is_some(), "a connection beyond the cap was left open");
    println!("a connection beyond the cap was closed after {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_millis(500));
    assert!(s.metric("oidc_operator_connections_rejected_total{listener=\"api\",reason=\"limit\"}").await >= 1.0);
    // Once the held ones are gone, the server serves again.
    drop(held);
    let served = holds_within(Duration::from_secs(10), async || {
        let r = s.fresh_client().get(format!("{}/.well-known/keys", s.issuer_url())).send().await;
        r.map(|r| r.status() == 200).unwrap_or(false)
    })
    .await;
    assert!(served);
}

#[test]
fn plain_http_beyond_loopback_is_refused_without_tls_terminated_upstream() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, state) = (tmp.path().join("m"), tmp.path().join("state"));
    std::fs::create_dir(&m).unwrap();
    let run = |extra: &[&str]| {
        std::process::Command::new(common::BIN)
            .args(["standalone", "--manifests"])
            .arg(&m)
            .arg("--state")
            .arg(&state)
            .args(["--metrics-listen", "127.0.0.1:0", "--plain-http"])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = run(&["--listen", "0.0.0.0:0"]).wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--plain-http") && err.contains("--tls-terminated-upstream"), "{err}");
    assert!(err.contains("0.0.0.0:0"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening:"));

    // Said explicitly, it starts (and is stopped here once it listens).
    let mut child = run(&["--listen", "0.0.0.0:0", "--tls-terminated-upstream"]);
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let listening = lines.find(|l| l.as_ref().is_ok_and(|l| l.starts_with("listening:")));
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening.is_some(), "with --tls-terminated-upstream the server starts");

    // The second flag alone is a usage error.
    let out = std::process::Command::new(common::BIN)
        .args(["standalone", "--manifests"])
        .arg(&m)
        .arg("--tls-terminated-upstream")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--plain-http"));
}

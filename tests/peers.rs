//! One peer against the real `oidc-operator standalone` process (docs/design.md, the security model: connections are
//! bounded in all and per peer; the health probes stay answerable whatever one peer holds).
//! Distinct loopback addresses are distinct peers: a client socket bound to 127.0.0.2 reaches
//! the server on 127.0.0.1 from that address.
//!
//! Loopback only; every loop and wait is bounded.

// Test helpers outside #[test] functions stop the test on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Server, holds_within, write_manifest};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls;

/// The tests here measure latency and hold many connections: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ATTACKER: &str = "127.0.0.2";
const OTHER: &str = "127.0.0.3";
const PROXY: &str = "127.0.0.4";

struct Setup {
    _tmp: tempfile::TempDir,
    server: Server,
    ca_pem: Vec<u8>,
}

/// A key, a confidential client and a provider `main`, served with `extra` flags.
async fn setup(extra: &[&str]) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let (m, state) = (tmp.path().join("m"), tmp.path().join("state"));
    std::fs::create_dir(&m).unwrap();
    write_manifest(
        &m,
        "all.yaml",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcKey\nmetadata: {name: k}\nspec: {algorithm: ES256, allowedClients: [\"*\"]}\n---\n\
         apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {name: app}\nspec: {clientType: confidential, key: k, redirectUris: [\"https://app.example/cb\"], assignments: [allow_all]}\n---\n\
         apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {name: main}\nspec: {allowedClients: [app]}\n",
    );
    let server = Server::start(&m, &state, extra).await;
    let ca_pem = std::fs::read(state.join("tls/ca.crt")).unwrap();
    Setup { _tmp: tmp, server, ca_pem }
}

impl Setup {
    fn api_addr(&self) -> SocketAddr {
        self.server.api.trim_start_matches("https://").parse().unwrap()
    }

    fn metrics_addr(&self) -> SocketAddr {
        self.server.metrics.trim_start_matches("http://").parse().unwrap()
    }

    /// A client from `source` without a connection pool: every request opens its own
    /// connection, answered within `timeout`.
    fn client_from(&self, source: &str, timeout: Duration) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&self.ca_pem).unwrap())
            .local_address(source.parse::<IpAddr>().unwrap())
            .pool_max_idle_per_host(0)
            .timeout(timeout)
            .build()
            .unwrap()
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

    /// One value of the server's metrics (0 when absent), scraped from 127.0.0.1; `None` when
    /// the scrape itself is not answered.
    async fn metric(&self, series: &str) -> Option<f64> {
        let client = self.client_from("127.0.0.1", Duration::from_secs(2));
        let text = client.get(format!("{}/metrics", self.server.metrics)).send().await.ok()?.text().await.ok()?;
        Some(text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0))
    }
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.parse().unwrap(), 0))?;
    socket.connect(to).await
}

/// Reads until the peer closes (EOF or reset); returns whether it did within `limit`.
async fn closed_by_peer(read: &mut (impl tokio::io::AsyncRead + Unpin), limit: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, read.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Issue item 3: one peer opens connections to the health listener as fast as it can and
/// reopens every one the server closes, for longer than that listener's keep-alive; meanwhile
/// `/healthz` from a fresh connection of another address answers within 2 s every time.
#[tokio::test(flavor = "multi_thread")]
async fn health_probes_answer_while_one_peer_holds_all_it_can() {
    let _serial = SERIAL.lock().await;
    let s = setup(&[]).await;
    let target = s.metrics_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let connects = Arc::new(AtomicUsize::new(0));
    let mut attackers = Vec::new();
    for _ in 0..96 {
        let (stop, connects) = (Arc::clone(&stop), Arc::clone(&connects));
        attackers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let Ok(mut tcp) = connect_from(ATTACKER, target).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                connects.fetch_add(1, Ordering::SeqCst);
                let opened = Instant::now();
                // Hold it, sending nothing, until the server closes it or the test ends.
                while !stop.load(Ordering::SeqCst) && !closed_by_peer(&mut tcp, Duration::from_millis(250)).await {}
                if opened.elapsed() < Duration::from_millis(100) {
                    // Refused at once: pace the retries (the attacker's CPU is the test's).
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }
    let all_tried = holds_within(Duration::from_secs(10), async || connects.load(Ordering::SeqCst) >= 96).await;
    assert!(all_tried, "the attacker could not open its connections");

    let probe = s.client_from("127.0.0.1", Duration::from_secs(2));
    let (mut answered, mut failed, mut slowest) = (0, Vec::new(), Duration::ZERO);
    let mut most_open = 0.0f64;
    let started = Instant::now();
    let until = started + Duration::from_secs(8);
    while Instant::now() < until {
        let t = Instant::now();
        let r = probe.get(format!("{}/healthz", s.server.metrics)).send().await;
        let ok = match r {
            Ok(r) if r.status() == 200 => r.text().await.is_ok_and(|b| b == "ok"),
            _ => false,
        };
        let took = t.elapsed();
        if ok && took < Duration::from_secs(2) {
            answered += 1;
            slowest = slowest.max(took);
        } else {
            failed.push(format!("at {:?}: failed after {took:?}", t - started));
        }
        if let Some(open) = s.metric("oidc_operator_connections_open{listener=\"management\"}").await {
            most_open = most_open.max(open);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for a in attackers {
        a.await.unwrap();
    }
    println!(
        "{answered} probes answered, slowest {slowest:?}; at most {most_open} connections open; {} attacker connects",
        connects.load(Ordering::SeqCst)
    );
    assert!(failed.is_empty(), "probes not answered within 2 s: {failed:?}");
    assert!(answered >= 10, "only {answered} probes");
    // The attack was real: the peer sat at its cap (8, plus the scrape itself) and the rest of
    // its connections were refused as over its cap.
    assert!(most_open >= 9.0, "the attacker never held its cap: {most_open}");
    let refused = s.metric("oidc_operator_connections_rejected_total{listener=\"management\",reason=\"peer_limit\"}");
    assert!(refused.await.unwrap() >= 1.0);
}

/// Issue item 4: a peer at its cap gets its further connections closed at once, while a
/// second peer is served; a trusted proxy is not held to the per-peer cap.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_peer_is_served_while_the_first_sits_at_its_cap() {
    let _serial = SERIAL.lock().await;
    let s = setup(&[
        "--max-connections",
        "40",
        "--max-connections-per-peer",
        "10",
        "--trusted-proxies",
        "127.0.0.4/32",
        "--tls-handshake-timeout",
        "30",
    ])
    .await;
    let addr = s.api_addr();
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(connect_from(ATTACKER, addr).await.unwrap());
    }
    let open = "oidc_operator_connections_open{listener=\"api\"}";
    let peer_limit = "oidc_operator_connections_rejected_total{listener=\"api\",reason=\"peer_limit\"}";
    let settled = holds_within(Duration::from_secs(5), async || {
        s.metric(open).await == Some(10.0) && s.metric(peer_limit).await == Some(30.0)
    })
    .await;
    assert!(
        settled,
        "the first peer holds {:?} connections, {:?} refused",
        s.metric(open).await,
        s.metric(peer_limit).await
    );
    // Another connection of the first peer: closed at once.
    let mut extra = connect_from(ATTACKER, addr).await.unwrap();
    let t = Instant::now();
    assert!(closed_by_peer(&mut extra, Duration::from_secs(2)).await, "a connection beyond the peer's cap stayed open");
    assert!(t.elapsed() < Duration::from_millis(500), "closed after {:?}", t.elapsed());

    // A second peer is served, within 2 s.
    let jwks = format!("{}/.well-known/keys", s.server.issuer("default", "main"));
    let t = Instant::now();
    let r = s.client_from(OTHER, Duration::from_secs(2)).get(&jwks).send().await.unwrap();
    assert_eq!(r.status(), 200);
    println!("the second peer was served in {:?}", t.elapsed());

    // A trusted proxy holds more than the per-peer cap (up to the global one).
    let mut proxied = Vec::new();
    for _ in 0..20 {
        proxied.push(connect_from(PROXY, addr).await.unwrap());
    }
    let proxy_held = holds_within(Duration::from_secs(5), async || s.metric(open).await == Some(30.0)).await;
    assert!(proxy_held, "the proxy's connections were not all held: {:?}", s.metric(open).await);
    assert_eq!(s.metric(peer_limit).await, Some(31.0), "none of the proxy's connections was refused");

    // Once the first peer lets go, it is served again.
    drop(held);
    let served = holds_within(Duration::from_secs(10), async || {
        let r = s.client_from(ATTACKER, Duration::from_secs(2)).get(&jwks).send().await;
        r.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(served);
    drop(proxied);
}

/// Issue item 4: with the body budget held by one slow body, a request with a body is answered
/// 503 in its endpoint's JSON shape at once, requests without a body are still served, and
/// once the slow body is gone the same request is served again.
#[tokio::test(flavor = "multi_thread")]
async fn a_spent_body_budget_answers_503_at_once_in_the_endpoint_shape() {
    let _serial = SERIAL.lock().await;
    let s = setup(&["--max-inflight-body-bytes", "65536"]).await;
    // Declares the largest body allowed, sends one byte of it and stalls.
    let tcp = TcpStream::connect(s.api_addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut holder = s.tls_connector().connect(name, tcp).await.unwrap();
    holder
        .write_all(
            b"POST /api/v1/auth/oidc-auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 65536\r\n\r\n{",
        )
        .await
        .unwrap();
    holder.flush().await.unwrap();

    let client = s.client_from("127.0.0.1", Duration::from_secs(5));
    let login = format!("{}/api/v1/auth/oidc-auth/login", s.server.api);
    let small = r#"{"identityId":"x","jwt":"y"}"#;
    let mut refused = None;
    let spent = holds_within(Duration::from_secs(5), async || {
        let t = Instant::now();
        let r = client.post(&login).header("content-type", "application/json").body(small).send().await.unwrap();
        let took = t.elapsed();
        if r.status() != 503 {
            return false;
        }
        refused = Some((took, r.headers().get("retry-after").cloned(), r.json::<Value>().await.unwrap()));
        true
    })
    .await;
    assert!(spent, "no request was refused while the budget was held");
    let (took, retry_after, body) = refused.unwrap();
    assert!(took < Duration::from_secs(1), "the refusal took {took:?}");
    assert_eq!(retry_after.unwrap(), "1");
    assert_eq!(body["statusCode"], 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");

    // The token endpoint answers in RFC 6749's shape.
    let token = format!("{}/token", s.server.issuer("default", "main"));
    let r = client.post(&token).form(&[("grant_type", "authorization_code"), ("code", "x")]).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    // Without a body nothing is taken from the budget.
    let r = client.get(format!("{}/.well-known/keys", s.server.issuer("default", "main"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        s.metric("oidc_operator_connections_rejected_total{listener=\"api\",reason=\"body_budget\"}").await.unwrap()
            >= 2.0
    );

    drop(holder);
    let served = holds_within(Duration::from_secs(5), async || {
        let r = client.post(&login).header("content-type", "application/json").body(small).send().await.unwrap();
        r.status() != 503
    })
    .await;
    assert!(served, "the budget was not given back");
}

/// Issue item 4: both listeners listen with the system's `somaxconn` as their backlog (what
/// `ss` shows as Send-Q of a listening socket), not the 128 of std and tokio.
#[tokio::test(flavor = "multi_thread")]
async fn the_listen_backlog_is_somaxconn() {
    let _serial = SERIAL.lock().await;
    let s = setup(&[]).await;
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap().trim().parse().unwrap();
    for addr in [s.api_addr(), s.metrics_addr()] {
        let out = std::process::Command::new("ss")
            .args(["-ltnH", &format!("sport = :{}", addr.port())])
            .output()
            .expect("ss (iproute2) shows listen backlogs");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.contains(&addr.to_string())).unwrap_or_else(|| panic!("{addr}: {text}"));
        let backlog: u32 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert_eq!(backlog, somaxconn, "{line}");
    }
}

//! What the benchmarks share: the clock, a lean HTTP/1.1 load generator, the results table.

#![allow(dead_code)]

pub mod redis;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;

/// The binary's allocator (`src/main.rs`), so every bench's figures are the binary's: with
/// glibc's, the same requests spent a third of the Redis store's client work in `malloc`,
/// `realloc` and `free`, and the benches measured an operator nobody runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Seconds each load phase runs.
pub const LOAD_SECONDS: f64 = 3.0;
/// Seconds each load phase runs in a smoke run.
pub const SMOKE_SECONDS: f64 = 0.2;

/// Whether this is a smoke run (`OIDC_BENCH_SMOKE=1`, or `--smoke` after `--`): one small
/// round whose answers are checked, without figures worth reading. CI runs every bench this
/// way so a bench that no longer works fails there, not months later on someone's desk.
pub fn smoke() -> bool {
    std::env::var("OIDC_BENCH_SMOKE").is_ok_and(|v| v == "1") || std::env::args().any(|a| a == "--smoke")
}

/// `full` in a measuring run, `small` in a smoke run.
pub fn scaled<T>(full: T, small: T) -> T {
    if smoke() { small } else { full }
}

/// Seconds of one load phase: [`LOAD_SECONDS`], or [`SMOKE_SECONDS`] in a smoke run.
pub fn load_seconds() -> f64 {
    scaled(LOAD_SECONDS, SMOKE_SECONDS)
}
/// Keep-alive connections of the load generator.
pub const CONCURRENCY: usize = 16;

/// `o` in the `default` namespace, as the benches' inputs hold their objects.
pub fn in_ns<T: kube::Resource<DynamicType = ()>>(mut o: T) -> Arc<T> {
    o.meta_mut().namespace = Some("default".into());
    Arc::new(o)
}

/// A code as authorize stores it, for the default namespace's provider `p` and `identity`
/// (the incarnation the snapshot serves, so the code names an entity that exists), living an
/// hour.
pub fn code_record(
    client_id: &str,
    identity: &oidc_operator::directory::ResolvedIdentity,
    now: i64,
) -> oidc_operator::sessions::CodeRecord {
    oidc_operator::sessions::CodeRecord {
        namespace: "default".into(),
        provider: "p".into(),
        client_id: client_id.into(),
        redirect_uri: "https://app.example/callback".into(),
        nonce: Some("n-0123456789".into()),
        scopes: vec!["openid".into()],
        challenge: None,
        identity: identity.key.clone(),
        identity_id: identity.id.clone(),
        identity_uid: Arc::clone(&identity.uid),
        alias: oidc_operator::sessions::Alias::default(),
        auth_time: now,
        max_age_sent: false,
        expires_at: now + 3600,
    }
}

/// A generated key ring for every key `inputs` needs, as the operator would create them at
/// `now`.
pub fn key_rings(inputs: &oidc_operator::directory::Inputs, now: i64) -> oidc_operator::directory::Materials {
    use oidc_operator::keys::{KeyVersion, ring::KeyPolicy, rotation};
    let mut materials = oidc_operator::directory::Materials::default();
    for (k, spec) in oidc_operator::directory::required_keys(inputs) {
        let ring =
            rotation::advance(None, &KeyPolicy::from(&spec), now, |a| KeyVersion::generate(a, now)).unwrap().unwrap();
        materials.key_rings.insert(k, ring);
    }
    materials
}

/// CPU time every thread of process `pid` has run, in nanoseconds (the scheduler's own
/// account, `/proc/<pid>/task/*/schedstat`), so a bench can say where a request's CPU went.
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .sum()
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The identity `id` a snapshot serves; a bench whose inputs no longer make it servable
/// (a new required field, say) stops here with its Ready condition's message.
pub fn served_identity(
    dir: &oidc_operator::directory::Directory,
    id: &str,
) -> Arc<oidc_operator::directory::ResolvedIdentity> {
    match dir.identity_by_id(id) {
        Some(i) => Arc::clone(i),
        None => {
            let why: Vec<String> =
                dir.statuses.iter().map(|s| format!("{} {}: {:?}", s.kind, s.key, s.readiness)).collect();
            panic!("identity {id} is not served: {why:#?}")
        }
    }
}

/// Runs `op` on one core for about `seconds`; returns operations per second.
pub fn single_core_rate(seconds: f64, mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for _ in 0..16 {
            op();
        }
        n += 16;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Serves an external issuer's discovery document and `jwks` (a JWK Set) on loopback, as
/// logins and token exchanges fetch them; returns the issuer URL.
pub async fn external_issuer(jwks: serde_json::Value) -> String {
    use warp::Filter;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let discovery = serde_json::json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
    let routes = warp::path!(".well-known" / "openid-configuration")
        .map(move || warp::reply::json(&discovery))
        .or(warp::path!("jwks").map(move || warp::reply::json(&jwks)));
    tokio::spawn(warp::serve(routes).incoming(listener).run());
    issuer
}

/// One keep-alive HTTP/1.1 connection (a lean hyper client, so the load generator takes as
/// little of the shared CPU as possible).
pub async fn connection(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// A POST request with a body and headers.
pub fn request(path: &str, headers: &[(&'static str, &str)], body: Bytes) -> hyper::Request<Full<Bytes>> {
    let mut req = hyper::Request::post(path).header("host", "bench");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(body)).unwrap()
}

/// A GET request.
pub fn get(path: &str) -> hyper::Request<Full<Bytes>> {
    hyper::Request::get(path).header("host", "bench").body(Full::new(Bytes::new())).unwrap()
}

/// The `Authorization: Basic` value of a client's credentials (`client_secret_basic`).
pub fn basic(client_id: &str, secret: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}")))
}

/// A form POST (`application/x-www-form-urlencoded`) authenticated with `authorization`.
pub fn form(path: &str, authorization: &str, body: String) -> hyper::Request<Full<Bytes>> {
    let headers = [("content-type", "application/x-www-form-urlencoded"), ("authorization", authorization)];
    request(path, &headers, Bytes::from(body))
}

/// Sends one request and returns its status and body.
pub async fn send(sender: &mut SendRequest<Full<Bytes>>, req: hyper::Request<Full<Bytes>>) -> (u16, Bytes) {
    // After an answer the connection may need a moment before it takes the next request.
    sender.ready().await.unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

/// Runs `CONCURRENCY` connections for [`load_seconds`], each sending the requests `next`
/// makes; every answer must be 200. Returns requests per second.
pub async fn load<F>(addr: SocketAddr, next: F) -> f64
where
    F: Fn() -> hyper::Request<Full<Bytes>> + Send + Sync + 'static,
{
    load_for(addr, load_seconds(), next).await
}

/// [`load`] for `seconds`.
pub async fn load_for<F>(addr: SocketAddr, seconds: f64, next: F) -> f64
where
    F: Fn() -> hyper::Request<Full<Bytes>> + Send + Sync + 'static,
{
    load_with(addr, seconds, CONCURRENCY, next).await
}

/// [`load_for`] on `connections` connections.
pub async fn load_with<F>(addr: SocketAddr, seconds: f64, connections: usize, next: F) -> f64
where
    F: Fn() -> hyper::Request<Full<Bytes>> + Send + Sync + 'static,
{
    load_chains(addr, seconds, vec![(); connections], move |()| next(), |(), _| ()).await
}

/// Runs one keep-alive connection per chain for `seconds`: each sends `next(&state)`, every
/// answer must be 200, and `advance(state, answer)` is the chain's next state (say, the
/// refresh token each answer rotates to), so a chain's requests depend on its answers.
/// Returns requests per second.
pub async fn load_chains<S, F, G>(addr: SocketAddr, seconds: f64, chains: Vec<S>, next: F, advance: G) -> f64
where
    S: Send + 'static,
    F: Fn(&S) -> hyper::Request<Full<Bytes>> + Send + Sync + 'static,
    G: Fn(S, &Bytes) -> S + Send + Sync + 'static,
{
    let (next, advance) = (Arc::new(next), Arc::new(advance));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for mut state in chains {
        let (next, advance, done) = (Arc::clone(&next), Arc::clone(&advance), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let mut sender = connection(addr).await;
            while Instant::now() < deadline {
                let (status, answer) = send(&mut sender, next(&state)).await;
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
                state = advance(state, &answer);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let done = done.load(Ordering::Relaxed);
    assert!(done > 0, "no request was answered in {seconds} s");
    done as f64 / start.elapsed().as_secs_f64()
}

/// The median of `values` (sorted here).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Prints the table header.
pub fn header(command: &str, raw: &str, served: &str) {
    println!("# {command}   ({} cores; raw figures use one core, served figures the whole machine)", cores());
    println!("{:<8} {:>24} {:>28} {:>8}", "alg", raw, served, "ratio");
}

pub fn row(alg: &str, raw: f64, served: f64) {
    println!("{alg:<8} {raw:>24.0} {served:>28.0} {:>7.2}x", served / raw);
}

//! External issuers: their discovery document and JWKS, fetched over HTTPS (trusting only an
//! identity's `caCert` when set, the system roots otherwise), with timeouts, size limits and a
//! cache. Every URL and every resolved address passes [`FetchPolicy`] before a connection is
//! made. An unknown `kid` triggers a refetch, at most once per [`REFETCH_INTERVAL`] per
//! issuer, and a failing issuer is retried with exponential backoff ([`FetchState`]), so
//! neither a flood of bad kids nor a dead issuer makes the server hammer anyone.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use serde_json::Value;
use tokio_rustls::rustls;

use super::clip;
use super::fetch_policy::{self, AddressRefused, FetchPolicy, FetchState, UrlRefused};
pub use super::jwks::{ExternalKey, IssuerKeys, MAX_KEYS_WITHOUT_KID, SignatureError, verify_signature};
pub use super::registry::{Fetched, IssuerHealth, IssuerRegistry, refresh_health};

/// Largest discovery document or JWKS accepted.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Time allowed for one fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Least time between two refetches of one issuer's keys (seconds).
pub const REFETCH_INTERVAL: i64 = 10;
/// How long fetched keys are trusted before a background refresh (seconds).
pub const KEYS_MAX_AGE: i64 = 300;

/// Why an issuer could not be read. The text goes to the identity's status (its owner's
/// eyes), never to a login caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error("{url}: larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{url}: not a valid document: {reason}")]
    Invalid { url: String, reason: String },
    #[error("caCert: {0}")]
    CaCert(String),
    #[error("{url}: refused before connecting: {reason}")]
    Refused { url: String, reason: String },
}

/// Where to fetch an issuer from and whom to trust.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IssuerSource {
    pub discovery_url: String,
    pub ca_cert: Option<String>,
    /// `discovery_url` is a JWK Set itself, not a discovery document: a `private_key_jwt`
    /// client's `jwksUri`, fetched under the same rules; its keys' issuer is the URL.
    pub keys_only: bool,
}

/// One issuer's cache entry.
pub struct Issuer {
    pub source: IssuerSource,
    /// Shared by every issuer with the same `caCert` ([`IssuerRegistry::client`]).
    client: Result<reqwest::Client, FetchError>,
    policy: FetchPolicy,
    keys: ArcSwapOption<IssuerKeys>,
    last_error: Mutex<Option<FetchError>>,
    state: Mutex<FetchState>,
    fetching: tokio::sync::Mutex<()>,
}

impl Issuer {
    pub(super) fn new(source: IssuerSource, policy: FetchPolicy, client: Result<reqwest::Client, FetchError>) -> Self {
        Self {
            source,
            client,
            policy,
            keys: ArcSwapOption::empty(),
            last_error: Mutex::new(None),
            state: Mutex::new(FetchState::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The keys as last fetched, if any.
    pub fn keys(&self) -> Option<Arc<IssuerKeys>> {
        self.keys.load_full()
    }

    /// The last fetch's error, if it failed.
    pub fn last_error(&self) -> Option<FetchError> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// When the last fetch started and how many in a row failed.
    pub fn fetch_state(&self) -> FetchState {
        self.state.lock().map(|s| *s).unwrap_or_default()
    }

    /// Fetches discovery and JWKS now, unless another task is fetching (then waits for it) or
    /// the last fetch is too recent: `min_interval` seconds after a success, an exponential
    /// backoff after failures ([`FetchState::next_allowed`]).
    pub async fn refresh(&self, now: i64, min_interval: i64) -> Option<Arc<IssuerKeys>> {
        let _guard = self.fetching.lock().await;
        if !self.fetch_state().due(now, min_interval) {
            return self.keys();
        }
        // Marked before fetching, so a slow fetch is not started again by the refresher.
        if let Ok(mut s) = self.state.lock() {
            s.last_attempt = Some(now);
        }
        let result = self.fetch(now).await;
        if let Ok(mut s) = self.state.lock() {
            *s = s.after(now, result.is_ok());
        }
        match result {
            Ok(keys) => {
                let keys = Arc::new(keys);
                self.keys.store(Some(Arc::clone(&keys)));
                if let Ok(mut e) = self.last_error.lock() {
                    *e = None;
                }
                Some(keys)
            }
            Err(err) => {
                tracing::warn!(discovery = %clip(&self.source.discovery_url), error = %err, "fetching an external issuer failed");
                if let Ok(mut e) = self.last_error.lock() {
                    *e = Some(err);
                }
                self.keys()
            }
        }
    }

    async fn fetch(&self, now: i64) -> Result<IssuerKeys, FetchError> {
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let url = &self.source.discovery_url;
        if self.source.keys_only {
            let jwks = get_json(client, self.policy, url).await?;
            let invalid = FetchError::Invalid { url: url.clone(), reason: "no keys array".into() };
            return IssuerKeys::from_jwks(url.clone(), &jwks, now).ok_or(invalid);
        }
        let discovery = get_json(client, self.policy, url).await?;
        let invalid = |url: &str, reason: String| FetchError::Invalid { url: url.to_owned(), reason };
        let issuer =
            discovery.get("issuer").and_then(Value::as_str).ok_or_else(|| invalid(url, "no issuer".into()))?.to_owned();
        fetch_policy::check_issuer(url, &issuer).map_err(|e| invalid(url, e.to_string()))?;
        // The JWKS may live on another host (many IdPs serve it from a CDN), but it is fetched
        // under the same address, scheme and redirect rules as the discovery document.
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(url, "no jwks_uri".into()))?
            .to_owned();
        let jwks = get_json(client, self.policy, &jwks_uri).await?;
        IssuerKeys::from_jwks(issuer, &jwks, now).ok_or_else(|| invalid(&jwks_uri, "no keys array".into()))
    }
}

/// The discovery URL as configured: an OpenID configuration URL, or an issuer URL to which
/// `/.well-known/openid-configuration` is appended (as Infisical accepts both).
pub fn discovery_document_url(configured: &str) -> String {
    if configured.contains("/.well-known/") {
        configured.to_owned()
    } else {
        format!("{}{}", configured.trim_end_matches('/'), fetch_policy::OPENID_CONFIGURATION)
    }
}

/// How host names become addresses: the system resolver, or a fixed table in tests (so a name
/// can "resolve" to a metadata address without any packet being sent).
pub type Lookup = Arc<dyn Fn(String) -> LookupFuture + Send + Sync>;
/// What a [`Lookup`] returns.
pub type LookupFuture = Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;

/// The system resolver (getaddrinfo on a blocking thread).
pub fn system_lookup() -> Lookup {
    Arc::new(|host: String| {
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.map(|a| a.ip()).collect()) })
    })
}

/// A name that resolved to an address the policy refuses.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to {reason}")]
struct ResolvedRefused {
    host: String,
    reason: AddressRefused,
}

/// The resolver of the issuers' HTTP clients: DNS can point anywhere, so the addresses a name
/// resolves to are checked, and the connection uses exactly those addresses (no second
/// lookup that could answer differently). A name with any refused address is refused whole.
struct PolicyResolver {
    policy: FetchPolicy,
    lookup: Lookup,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (policy, lookup, host) = (self.policy, Arc::clone(&self.lookup), name.as_str().to_owned());
        Box::pin(async move {
            let addrs = lookup(host.clone()).await?;
            for ip in &addrs {
                policy.check_address(*ip).map_err(|reason| ResolvedRefused { host: host.clone(), reason })?;
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(addrs)
        })
    }
}

pub(super) fn http_client(
    ca_cert: Option<&str>,
    policy: FetchPolicy,
    lookup: Lookup,
) -> Result<reqwest::Client, FetchError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_cert.filter(|c| !c.trim().is_empty()) {
        Some(pem) => {
            let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| FetchError::CaCert(e.to_string()))?;
            if certs.is_empty() {
                return Err(FetchError::CaCert("no PEM certificate".into()));
            }
            for c in certs {
                roots.add(c).map_err(|e| FetchError::CaCert(e.to_string()))?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::CaCert(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        match policy.check_redirect(attempt.previous(), attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(refused) => attempt.error(refused),
        }
    });
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(!policy.allow_insecure)
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        .redirect(redirects)
        .dns_resolver(Arc::new(PolicyResolver { policy, lookup }))
        .build()
        .map_err(|e| FetchError::Http { url: String::new(), reason: e.to_string() })
}

/// What discovery documents and JWKS are served as; kube-apiserver answers its JWKS only to
/// `application/jwk-set+json` (406 otherwise).
const ACCEPT: &str = "application/json, application/jwk-set+json";

/// A request error with its causes (reqwest's own text names only the URL), or the policy
/// refusal that stopped it before any connection.
fn describe(url: &str, e: &reqwest::Error) -> FetchError {
    use std::error::Error;
    let mut causes = Vec::new();
    let mut next: Option<&(dyn Error + 'static)> = e.source();
    while let Some(err) = next {
        if err.is::<ResolvedRefused>() || err.is::<UrlRefused>() {
            return FetchError::Refused { url: url.to_owned(), reason: err.to_string() };
        }
        causes.push(err.to_string());
        next = err.source();
    }
    // reqwest's own text only repeats the URL: say it only when there is nothing else.
    let reason = if causes.is_empty() { e.to_string() } else { causes.join(": ") };
    FetchError::Http { url: url.to_owned(), reason: clip(&reason).into_owned() }
}

/// Fetches one JSON document after [`FetchPolicy::check_url`]; errors name the URL cut to a
/// bounded length (a `jwks_uri` is chosen by whoever runs the issuer).
async fn get_json(client: &reqwest::Client, policy: FetchPolicy, full_url: &str) -> Result<Value, FetchError> {
    let shown = clip(full_url);
    let url: &str = &shown;
    let refused = |reason: UrlRefused| FetchError::Refused { url: url.to_owned(), reason: reason.to_string() };
    let parsed = policy.check_url_text(full_url).map_err(refused)?;
    let http = |reason: String| FetchError::Http { url: url.to_owned(), reason };
    let mut resp = client.get(parsed).header("accept", ACCEPT).send().await.map_err(|e| describe(url, &e))?;
    if !resp.status().is_success() {
        return Err(http(format!("status {}", resp.status())));
    }
    if resp.content_length().is_some_and(|l| l > MAX_DOCUMENT_BYTES as u64) {
        return Err(FetchError::TooLarge { url: url.to_owned() });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| describe(url, &e))? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(FetchError::TooLarge { url: url.to_owned() });
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| FetchError::Invalid { url: url.to_owned(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;
    use warp::{Filter, Reply};

    use super::*;
    use crate::keys::{KeyVersion, SigningAlgorithm};

    /// Every name resolves to `ip`; the names asked for are recorded.
    fn fixed_lookup(ip: &str, asked: Arc<Mutex<Vec<String>>>) -> Lookup {
        let ip: IpAddr = ip.parse().unwrap();
        Arc::new(move |host: String| {
            asked.lock().unwrap().push(host);
            Box::pin(async move { Ok(vec![ip]) })
        })
    }

    fn source(url: &str) -> IssuerSource {
        IssuerSource { discovery_url: discovery_document_url(url), ca_cert: None, keys_only: false }
    }

    async fn error_of(registry: &IssuerRegistry, url: &str) -> String {
        let issuer = registry.get(&source(url));
        assert!(issuer.refresh(0, 1).await.is_none(), "{url} was fetched");
        issuer.last_error().unwrap().to_string()
    }

    /// A plain-http issuer on 127.0.0.1 (reached as `issuer.test`), with one document per
    /// path prefix; returns its port and its request count.
    async fn local_issuer() -> (u16, Arc<AtomicUsize>) {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let base = format!("http://issuer.test:{port}");
        let jwk = KeyVersion::generate(SigningAlgorithm::ES256, 0).unwrap().parse().unwrap().jwk().clone();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let routes = warp::path::full().map(move |path: warp::path::FullPath| {
            counter.fetch_add(1, Ordering::SeqCst);
            let doc = |issuer: String, jwks: String| {
                warp::reply::json(&json!({"issuer": issuer, "jwks_uri": jwks})).into_response()
            };
            let found = |to: String| {
                let r = warp::reply::with_status(String::new(), warp::http::StatusCode::FOUND);
                warp::reply::with_header(r, "location", to).into_response()
            };
            match path.as_str() {
                "/.well-known/openid-configuration" => doc(base.clone(), format!("{base}/jwks")),
                "/jwks" => warp::reply::json(&json!({"keys": [jwk]})).into_response(),
                "/other/.well-known/openid-configuration" => doc(base.clone(), format!("{base}/jwks")),
                "/cross/.well-known/openid-configuration" => {
                    found(format!("http://elsewhere.test:{port}/.well-known/openid-configuration"))
                }
                "/same/.well-known/openid-configuration" => found(format!("{base}/same/moved")),
                "/same/moved" => doc(format!("{base}/same"), format!("{base}/jwks")),
                "/loop/.well-known/openid-configuration" => {
                    found(format!("{base}/loop/.well-known/openid-configuration"))
                }
                "/meta/.well-known/openid-configuration" => {
                    doc(format!("{base}/meta"), "http://169.254.169.254/latest/jwks".into())
                }
                "/cdn/.well-known/openid-configuration" => {
                    doc(format!("{base}/cdn"), format!("http://keys.test:{port}/jwks"))
                }
                _ => warp::reply::with_status(String::new(), warp::http::StatusCode::INTERNAL_SERVER_ERROR)
                    .into_response(),
            }
        });
        tokio::spawn(warp::serve(routes).incoming(listener).run());
        (port, hits)
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_metadata_address_is_refused_before_connecting() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        for (address, rule) in
            [("169.254.169.254", "link-local"), ("::ffff:169.254.169.254", "link-local"), ("fd00:ec2::254", "metadata")]
        {
            let asked = Arc::new(Mutex::new(Vec::new()));
            // Even with insecure issuers allowed: the metadata rule has no switch.
            let registry = IssuerRegistry::with_lookup(true, fixed_lookup(address, Arc::clone(&asked)));
            let e = error_of(&registry, "https://metadata.test/").await;
            assert!(e.contains("refused before connecting") && e.contains(address) && e.contains(rule), "{e}");
            assert!(e.contains("metadata.test resolves to"), "{e}");
            assert_eq!(*asked.lock().unwrap(), ["metadata.test"]);
        }
        // Literals are refused by the URL check: the resolver is never asked.
        let asked = Arc::new(Mutex::new(Vec::new()));
        let registry = IssuerRegistry::with_lookup(true, fixed_lookup("10.0.0.1", Arc::clone(&asked)));
        let e = error_of(&registry, "https://169.254.169.254/latest").await;
        assert!(e.contains("169.254.169.254 is a link-local address"), "{e}");
        assert!(asked.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn loopback_names_need_allow_insecure_issuers() {
        let (port, hits) = local_issuer().await;
        let asked = Arc::new(Mutex::new(Vec::new()));
        let strict = IssuerRegistry::with_lookup(false, fixed_lookup("127.0.0.1", Arc::clone(&asked)));
        let e = error_of(&strict, &format!("https://issuer.test:{port}")).await;
        assert!(e.contains("127.0.0.1 is a loopback address") && e.contains("--allow-insecure-issuers"), "{e}");
        assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing connected");
        let insecure = IssuerRegistry::with_lookup(true, fixed_lookup("127.0.0.1", asked));
        let keys = insecure.get(&source(&format!("http://issuer.test:{port}"))).refresh(0, 1).await.unwrap();
        assert_eq!((keys.issuer.as_str(), keys.keys.len()), (format!("http://issuer.test:{port}").as_str(), 1));
    }

    #[tokio::test]
    async fn redirects_stay_on_their_origin() {
        let (port, hits) = local_issuer().await;
        let asked = Arc::new(Mutex::new(Vec::new()));
        let registry = IssuerRegistry::with_lookup(true, fixed_lookup("127.0.0.1", Arc::clone(&asked)));
        let e = error_of(&registry, &format!("http://issuer.test:{port}/cross")).await;
        assert!(e.contains("another origin") && e.contains(&format!("http://elsewhere.test:{port}")), "{e}");
        assert!(!asked.lock().unwrap().iter().any(|h| h == "elsewhere.test"), "the other host was never resolved");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        let e = error_of(&registry, &format!("http://issuer.test:{port}/loop")).await;
        assert!(e.contains("more than 3 redirects"), "{e}");
        let same = registry.get(&source(&format!("http://issuer.test:{port}/same"))).refresh(0, 1).await;
        assert_eq!(
            same.unwrap().issuer,
            format!("http://issuer.test:{port}/same"),
            "same-origin redirects are followed"
        );
    }

    #[tokio::test]
    async fn the_jwks_uri_passes_the_address_rules_but_may_name_another_host() {
        let (port, _) = local_issuer().await;
        let asked = Arc::new(Mutex::new(Vec::new()));
        let registry = IssuerRegistry::with_lookup(true, fixed_lookup("127.0.0.1", Arc::clone(&asked)));
        let e = error_of(&registry, &format!("http://issuer.test:{port}/meta")).await;
        assert!(e.starts_with("http://169.254.169.254/latest/jwks: refused before connecting"), "{e}");
        let cdn = registry.get(&source(&format!("http://issuer.test:{port}/cdn"))).refresh(0, 1).await.unwrap();
        assert_eq!(cdn.keys.len(), 1);
        assert!(asked.lock().unwrap().iter().any(|h| h == "keys.test"));
    }

    #[tokio::test]
    async fn a_discovery_document_must_name_the_issuer_it_was_fetched_for() {
        let (port, _) = local_issuer().await;
        let registry = IssuerRegistry::with_lookup(true, fixed_lookup("127.0.0.1", Arc::new(Mutex::new(Vec::new()))));
        let e = error_of(&registry, &format!("http://issuer.test:{port}/other")).await;
        assert!(
            e.contains(&format!("names issuer \"http://issuer.test:{port}\""))
                && e.contains(&format!("fetched for issuer \"http://issuer.test:{port}/other\"")),
            "{e}"
        );
    }

    /// Thousands of identities without caCert make one HTTP client (the system roots are
    /// loaded once, not per identity), and the sweep of unused issuers is one pass.
    #[tokio::test]
    async fn issuers_share_one_client_per_trust_anchor_and_sweep_in_linear_time() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let registry = IssuerRegistry::with_lookup(true, fixed_lookup("127.0.0.1", Arc::new(Mutex::new(Vec::new()))));
        let sources: Vec<IssuerSource> = (0..5000).map(|i| source(&format!("https://issuer-{i}.test"))).collect();
        let start = std::time::Instant::now();
        for s in &sources {
            registry.get(s);
        }
        registry.retain(&sources);
        let took = start.elapsed();
        assert_eq!(registry.client_count(), 1);
        assert!(took < Duration::from_secs(2), "5000 issuers took {took:?}");
        // Sweeping keeps exactly the wanted ones, and the client while one still uses it.
        let first = registry.get(&sources[0]);
        registry.retain(&sources[..10]);
        assert!(Arc::ptr_eq(&first, &registry.get(&sources[0])), "kept");
        assert_eq!(registry.issuer_count(), 10);
        registry.retain(&[]);
        assert_eq!((registry.issuer_count(), registry.client_count()), (0, 0));
    }

    #[tokio::test]
    async fn a_failing_issuer_is_retried_with_backoff() {
        let (port, hits) = local_issuer().await;
        let registry = IssuerRegistry::with_lookup(true, fixed_lookup("127.0.0.1", Arc::new(Mutex::new(Vec::new()))));
        let issuer = registry.get(&source(&format!("http://issuer.test:{port}/failing")));
        let mut fetched_at = Vec::new();
        for now in 0..20 {
            let before = hits.load(Ordering::SeqCst);
            issuer.refresh(now, 1).await;
            issuer.refresh(now, 1).await;
            if hits.load(Ordering::SeqCst) > before {
                fetched_at.push(now);
            }
        }
        assert_eq!(fetched_at, [0, 1, 3, 7, 15]);
        assert_eq!(issuer.fetch_state().failures, 5);
        assert!(issuer.last_error().unwrap().to_string().contains("status 500"));
    }
}

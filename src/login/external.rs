//! External issuers: their discovery document and JWKS, fetched over HTTPS (trusting only an
//! identity's `caCert` when set, the system roots otherwise), with timeouts, size limits and a
//! cache. An unknown `kid` triggers a refetch, at most once per [`REFETCH_INTERVAL`] per
//! issuer, so a flood of bad kids cannot make the server hammer the issuer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use serde_json::Value;
use tokio_rustls::rustls;

use crate::keys::{Jwk, JwsError, SigningAlgorithm, VerifyingKey};

/// Largest discovery document or JWKS accepted.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Time allowed for one fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Least time between two refetches of one issuer's keys (seconds).
pub const REFETCH_INTERVAL: i64 = 10;
/// How long fetched keys are trusted before a background refresh (seconds).
pub const KEYS_MAX_AGE: i64 = 300;

/// Why an issuer could not be read.
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
    #[error("{url}: plain http is refused (start with --allow-insecure-issuers for local trials)")]
    Insecure { url: String },
}

/// Where to fetch an issuer from and whom to trust.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IssuerSource {
    pub discovery_url: String,
    pub ca_cert: Option<String>,
}

/// One external public key with the algorithms it may verify.
pub struct ExternalKey {
    pub jwk: Jwk,
    /// Verifiers by algorithm, made once when the JWKS is fetched.
    verifiers: Vec<VerifyingKey>,
}

impl ExternalKey {
    fn new(raw: &Value) -> Option<Self> {
        let kty = raw.get("kty")?.as_str()?;
        if raw.get("use").and_then(Value::as_str).is_some_and(|u| u != "sig") {
            return None;
        }
        let declared = raw.get("alg").and_then(Value::as_str).and_then(SigningAlgorithm::from_name);
        let candidates: Vec<SigningAlgorithm> = match (declared, kty, raw.get("crv").and_then(Value::as_str)) {
            (Some(a), _, _) => vec![a],
            (None, "RSA", _) => vec![SigningAlgorithm::RS256, SigningAlgorithm::RS384, SigningAlgorithm::RS512],
            (None, "EC", Some("P-256")) => vec![SigningAlgorithm::ES256],
            (None, "EC", Some("P-384")) => vec![SigningAlgorithm::ES384],
            (None, "EC", Some("P-521")) => vec![SigningAlgorithm::ES512],
            (None, "OKP", Some("Ed25519")) => vec![SigningAlgorithm::EdDSA],
            _ => return None,
        };
        let text = |k: &str| raw.get(k).and_then(Value::as_str).map(str::to_owned);
        let base = Jwk {
            kty: kty.to_owned(),
            kid: text("kid").unwrap_or_default(),
            alg: String::new(),
            use_: "sig".into(),
            n: text("n"),
            e: text("e"),
            crv: text("crv"),
            x: text("x"),
            y: text("y"),
        };
        let verifiers: Vec<VerifyingKey> = candidates
            .into_iter()
            .filter_map(|alg| VerifyingKey::from_jwk(&Jwk { alg: alg.as_str().into(), ..base.clone() }).ok())
            .collect();
        (!verifiers.is_empty()).then_some(Self { jwk: base, verifiers })
    }

    /// The verifier of this key for `alg`, if the key can verify it.
    pub fn verifier(&self, alg: SigningAlgorithm) -> Option<&VerifyingKey> {
        self.verifiers.iter().find(|v| v.algorithm() == alg)
    }
}

/// What an issuer published, as last fetched.
pub struct IssuerKeys {
    /// The discovery document's `issuer`.
    pub issuer: String,
    pub keys: Vec<ExternalKey>,
    pub fetched_at: i64,
}

impl IssuerKeys {
    pub fn by_kid(&self, kid: &str) -> Option<&ExternalKey> {
        self.keys.iter().find(|k| k.jwk.kid == kid)
    }
}

/// One issuer's cache entry.
pub struct Issuer {
    pub source: IssuerSource,
    client: Result<reqwest::Client, FetchError>,
    keys: ArcSwapOption<IssuerKeys>,
    last_error: Mutex<Option<FetchError>>,
    last_fetch: AtomicI64,
    fetching: tokio::sync::Mutex<()>,
}

impl Issuer {
    fn new(source: IssuerSource, allow_http: bool) -> Self {
        let client = http_client(source.ca_cert.as_deref(), allow_http);
        Self {
            source,
            client,
            keys: ArcSwapOption::empty(),
            last_error: Mutex::new(None),
            last_fetch: AtomicI64::new(i64::MIN / 2),
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

    /// Fetches discovery and JWKS now, unless another task is fetching (then waits for it) or
    /// a fetch happened within `min_interval` seconds.
    pub async fn refresh(&self, now: i64, min_interval: i64) -> Option<Arc<IssuerKeys>> {
        let _guard = self.fetching.lock().await;
        if now - self.last_fetch.load(Ordering::Acquire) < min_interval {
            return self.keys();
        }
        self.last_fetch.store(now, Ordering::Release);
        match self.fetch(now).await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                self.keys.store(Some(Arc::clone(&keys)));
                if let Ok(mut e) = self.last_error.lock() {
                    *e = None;
                }
                Some(keys)
            }
            Err(err) => {
                tracing::warn!(discovery = %self.source.discovery_url, error = %err, "fetching an external issuer failed");
                if let Ok(mut e) = self.last_error.lock() {
                    *e = Some(err);
                }
                self.keys()
            }
        }
    }

    async fn fetch(&self, now: i64) -> Result<IssuerKeys, FetchError> {
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let discovery = get_json(client, &self.source.discovery_url).await?;
        let invalid = |url: &str, reason: &str| FetchError::Invalid { url: url.to_owned(), reason: reason.to_owned() };
        let issuer = discovery
            .get("issuer")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(&self.source.discovery_url, "no issuer"))?
            .to_owned();
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(&self.source.discovery_url, "no jwks_uri"))?
            .to_owned();
        let jwks = get_json(client, &jwks_uri).await?;
        let raw = jwks.get("keys").and_then(Value::as_array).ok_or_else(|| invalid(&jwks_uri, "no keys array"))?;
        let keys = raw.iter().filter_map(ExternalKey::new).collect();
        Ok(IssuerKeys { issuer, keys, fetched_at: now })
    }
}

/// The discovery URL as configured: an OpenID configuration URL, or an issuer URL to which
/// `/.well-known/openid-configuration` is appended (as Infisical accepts both).
pub fn discovery_document_url(configured: &str) -> String {
    if configured.contains("/.well-known/") {
        configured.to_owned()
    } else {
        format!("{}/.well-known/openid-configuration", configured.trim_end_matches('/'))
    }
}

fn http_client(ca_cert: Option<&str>, allow_http: bool) -> Result<reqwest::Client, FetchError> {
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
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(!allow_http)
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .map_err(|e| FetchError::Http { url: String::new(), reason: e.to_string() })
}

/// What discovery documents and JWKS are served as; kube-apiserver answers its JWKS only to
/// `application/jwk-set+json` (406 otherwise).
const ACCEPT: &str = "application/json, application/jwk-set+json";

async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, FetchError> {
    let http = |reason: String| FetchError::Http { url: url.to_owned(), reason };
    let mut resp = client.get(url).header("accept", ACCEPT).send().await.map_err(|e| {
        if e.is_builder() && url.starts_with("http://") {
            FetchError::Insecure { url: url.to_owned() }
        } else {
            http(e.to_string())
        }
    })?;
    if !resp.status().is_success() {
        return Err(http(format!("status {}", resp.status())));
    }
    if resp.content_length().is_some_and(|l| l > MAX_DOCUMENT_BYTES as u64) {
        return Err(FetchError::TooLarge { url: url.to_owned() });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| http(e.to_string()))? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(FetchError::TooLarge { url: url.to_owned() });
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| FetchError::Invalid { url: url.to_owned(), reason: e.to_string() })
}

/// Every external issuer the identities name, shared by the login handlers and the
/// background refresher.
pub struct IssuerRegistry {
    allow_http: bool,
    issuers: Mutex<HashMap<IssuerSource, Arc<Issuer>>>,
}

impl IssuerRegistry {
    /// `allow_http` lets issuers be fetched over plain http (tests and the dev issuer only).
    pub fn new(allow_http: bool) -> Self {
        Self { allow_http, issuers: Mutex::new(HashMap::new()) }
    }

    /// The cache entry of an issuer, made on first use.
    pub fn get(&self, source: &IssuerSource) -> Arc<Issuer> {
        let mut map = match self.issuers.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        Arc::clone(map.entry(source.clone()).or_insert_with(|| Arc::new(Issuer::new(source.clone(), self.allow_http))))
    }

    /// Drops issuers no identity names any more.
    pub fn retain(&self, wanted: &[IssuerSource]) {
        if let Ok(mut map) = self.issuers.lock() {
            map.retain(|k, _| wanted.contains(k));
        }
    }
}

/// What each issuer's last fetch gave: its `issuer`, or why it failed (absent while the first
/// fetch runs). Starts background fetches of issuers never fetched or whose keys are older
/// than [`KEYS_MAX_AGE`]; never waits for them. Drops issuers no identity names.
pub fn refresh_health(
    registry: &IssuerRegistry,
    sources: Vec<IssuerSource>,
    refetch_interval: i64,
    now: i64,
) -> std::collections::BTreeMap<IssuerSource, Result<String, String>> {
    registry.retain(&sources);
    let mut health = std::collections::BTreeMap::new();
    for source in sources {
        let issuer = registry.get(&source);
        let keys = issuer.keys();
        if keys.as_ref().is_none_or(|k| now - k.fetched_at >= KEYS_MAX_AGE) {
            let task = Arc::clone(&issuer);
            tokio::spawn(async move {
                task.refresh(now, refetch_interval).await;
            });
        }
        let state = match (issuer.last_error(), keys) {
            (Some(e), _) => Some(Err(e.to_string())),
            (None, Some(k)) => Some(Ok(k.issuer.clone())),
            (None, None) => None,
        };
        if let Some(state) = state {
            health.insert(source, state);
        }
    }
    health
}

/// Verifies a token's signature against an issuer's keys: by `kid`, or, without one, against
/// at most [`MAX_KEYS_WITHOUT_KID`] keys (as Infisical does).
pub fn verify_signature(
    keys: &IssuerKeys,
    alg: SigningAlgorithm,
    kid: Option<&str>,
    token: &str,
) -> Result<Value, SignatureError> {
    match kid {
        Some(kid) => {
            let key = keys.by_kid(kid).ok_or(SignatureError::UnknownKid)?;
            let v = key.verifier(alg).ok_or(SignatureError::AlgorithmMismatch)?;
            v.verify(token).map(|(_, claims)| claims).map_err(SignatureError::from)
        }
        None => {
            let mut tried = 0;
            for key in &keys.keys {
                let Some(v) = key.verifier(alg) else { continue };
                if tried == MAX_KEYS_WITHOUT_KID {
                    break;
                }
                tried += 1;
                if let Ok((_, claims)) = v.verify(token) {
                    return Ok(claims);
                }
            }
            Err(SignatureError::BadSignature)
        }
    }
}

/// Keys tried for a token without `kid`.
pub const MAX_KEYS_WITHOUT_KID: usize = 10;

/// Why a signature check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    UnknownKid,
    AlgorithmMismatch,
    BadSignature,
    Malformed,
}

impl From<JwsError> for SignatureError {
    fn from(e: JwsError) -> Self {
        match e {
            JwsError::Malformed => Self::Malformed,
            JwsError::AlgorithmMismatch { .. } | JwsError::BadKey(_) => Self::AlgorithmMismatch,
            JwsError::BadSignature => Self::BadSignature,
        }
    }
}

//! The registry of external issuers: one cache entry per issuer source, one HTTP client per
//! trust anchor, the login limits of the flags, and the background refresh that reports each
//! issuer's health to the directory.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::LoginLimits;
use super::external::{FetchError, Issuer, IssuerSource, KEYS_MAX_AGE, Lookup, http_client, system_lookup};
use super::fetch_policy::FetchPolicy;

/// Every external issuer the identities name, shared by the login handlers and the
/// background refresher.
pub struct IssuerRegistry {
    policy: FetchPolicy,
    lookup: Lookup,
    limits: LoginLimits,
    /// Permits of the claim checks that run on the blocking pool ([`LoginLimits::heavy_checks`]).
    heavy: tokio::sync::Semaphore,
    issuers: Mutex<HashMap<IssuerSource, Arc<Issuer>>>,
    /// One HTTP client per trust anchor (`caCert`, or `None` for the system roots): a client
    /// holds its root store and connection pool, and thousands of identities naming the same
    /// issuer or no caCert need not load the system roots thousands of times.
    clients: Mutex<HashMap<Option<String>, Result<reqwest::Client, FetchError>>>,
    /// The API server's TokenReview, when the operator runs on a cluster (identities with
    /// `spec.tokenReview`); set once, after start.
    reviewer: std::sync::OnceLock<Arc<dyn TokenReviewer>>,
}

/// Asks whether a token is still valid where it was issued (Kubernetes' TokenReview): a
/// service-account token of a deleted ServiceAccount or Pod verifies by signature but is no
/// longer authenticated by its API server.
pub trait TokenReviewer: Send + Sync {
    /// Whether the API server authenticates `token` for one of `audiences`; an error when it
    /// could not be asked.
    fn review<'a>(
        &'a self,
        token: &'a str,
        audiences: Vec<String>,
    ) -> futures::future::BoxFuture<'a, Result<bool, String>>;
}

impl IssuerRegistry {
    /// `allow_insecure` (`--allow-insecure-issuers`) lets issuers be fetched over plain http
    /// and from loopback addresses (tests and the dev issuer only).
    pub fn new(allow_insecure: bool) -> Self {
        Self::with_lookup(allow_insecure, system_lookup())
    }

    /// As [`IssuerRegistry::new`], resolving names with `lookup`.
    pub fn with_lookup(allow_insecure: bool, lookup: Lookup) -> Self {
        Self {
            policy: FetchPolicy { allow_insecure },
            lookup,
            limits: LoginLimits::default(),
            heavy: tokio::sync::Semaphore::new(LoginLimits::default().heavy_checks),
            issuers: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
            reviewer: std::sync::OnceLock::new(),
        }
    }

    /// Sets the TokenReview the identities with `spec.tokenReview` ask (once; later calls
    /// keep the first).
    pub fn set_reviewer(&self, reviewer: Arc<dyn TokenReviewer>) {
        let _ = self.reviewer.set(reviewer);
    }

    /// The TokenReview, when the operator runs on a cluster.
    pub fn reviewer(&self) -> Option<&Arc<dyn TokenReviewer>> {
        self.reviewer.get()
    }

    /// This registry with the login limits of the flags.
    pub fn with_limits(mut self, limits: LoginLimits) -> Self {
        self.limits = limits;
        self.heavy = tokio::sync::Semaphore::new(limits.heavy_checks.clamp(1, tokio::sync::Semaphore::MAX_PERMITS));
        self
    }

    /// The permits of large claim checks.
    pub fn heavy_checks(&self) -> &tokio::sync::Semaphore {
        &self.heavy
    }

    /// The login limits of the flags.
    pub fn limits(&self) -> LoginLimits {
        self.limits
    }

    /// The HTTP client trusting `ca_cert` (the system roots for `None`), made on first use.
    fn client(&self, ca_cert: Option<&str>) -> Result<reqwest::Client, FetchError> {
        let mut clients = match self.clients.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        let key = ca_cert.map(str::to_owned);
        clients.entry(key).or_insert_with(|| http_client(ca_cert, self.policy, Arc::clone(&self.lookup))).clone()
    }

    /// How many issuers the registry holds.
    pub fn issuer_count(&self) -> usize {
        self.issuers.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// How many HTTP clients the registry holds (one per distinct `caCert`).
    pub fn client_count(&self) -> usize {
        self.clients.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// The cache entry of an issuer, made on first use.
    pub fn get(&self, source: &IssuerSource) -> Arc<Issuer> {
        let mut map = match self.issuers.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(issuer) = map.get(source) {
            return Arc::clone(issuer);
        }
        let client = self.client(source.ca_cert.as_deref());
        let issuer = Arc::new(Issuer::new(source.clone(), self.policy, client));
        map.insert(source.clone(), Arc::clone(&issuer));
        issuer
    }

    /// Drops issuers no identity names any more, and the clients of trust anchors no issuer
    /// uses. One pass over a set: linear in the identities.
    pub fn retain(&self, wanted: &[IssuerSource]) {
        let wanted: HashSet<&IssuerSource> = wanted.iter().collect();
        let anchors: HashSet<Option<&str>> = wanted.iter().map(|s| s.ca_cert.as_deref()).collect();
        if let Ok(mut map) = self.issuers.lock() {
            map.retain(|k, _| wanted.contains(k));
        }
        if let Ok(mut clients) = self.clients.lock() {
            clients.retain(|ca, _| anchors.contains(&ca.as_deref()));
        }
    }
}

/// What a successful fetch of an issuer (or a client's `jwksUri`) gave, as statuses show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The discovery document's `issuer` (a `jwksUri`'s own URL).
    pub issuer: String,
    /// The `kid`s of its usable keys (empty ones left out).
    pub key_ids: Vec<String>,
}

impl Fetched {
    pub fn of(keys: &super::jwks::IssuerKeys) -> Self {
        let key_ids = keys.keys.iter().map(|k| k.jwk.kid.clone()).filter(|kid| !kid.is_empty()).collect();
        Self { issuer: keys.issuer.clone(), key_ids }
    }
}

/// What the last fetch of each issuer (or client `jwksUri`) gave, or why it failed.
pub type IssuerHealth = std::collections::BTreeMap<IssuerSource, Result<Fetched, String>>;

/// What each issuer's last fetch gave ([`Fetched`]), or why it failed (absent while the first
/// fetch runs). Starts background fetches of issuers never fetched or whose keys are older
/// than [`KEYS_MAX_AGE`], when their backoff allows; never waits for them. Drops issuers no
/// identity names.
pub fn refresh_health(
    registry: &IssuerRegistry,
    sources: Vec<IssuerSource>,
    refetch_interval: i64,
    now: i64,
) -> IssuerHealth {
    registry.retain(&sources);
    let max_age = registry.limits().issuer_keys_max_age;
    let mut health = std::collections::BTreeMap::new();
    for source in sources {
        if health.contains_key(&source) {
            continue;
        }
        let issuer = registry.get(&source);
        let keys = issuer.keys();
        let age = keys.as_ref().map(|k| now.saturating_sub(k.fetched_at));
        let stale = age.is_none_or(|a| a >= KEYS_MAX_AGE.min(max_age));
        if stale && issuer.fetch_state().due(now, refetch_interval) {
            let task = Arc::clone(&issuer);
            tokio::spawn(async move {
                task.refresh(now, refetch_interval).await;
            });
        }
        let state = match (issuer.last_error(), keys) {
            // The fetch time, not the age: the status must not change at every tick.
            (Some(e), Some(k)) if age.is_some_and(|a| a > max_age) => Some(Err(format!(
                "{e}; the keys were last fetched at {} (unix time), more than --issuer-keys-max-age ({max_age} s) \
                 ago: logins fail until a fetch succeeds",
                k.fetched_at
            ))),
            (Some(e), _) => Some(Err(e.to_string())),
            (None, Some(k)) => Some(Ok(Fetched::of(&k))),
            (None, None) => None,
        };
        if let Some(state) = state {
            health.insert(source, state);
        }
    }
    health
}

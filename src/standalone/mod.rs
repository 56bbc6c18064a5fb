//! Standalone mode: the file-backed shell. Manifests come from a folder, generated key
//! material and credentials live as 0600 files in a state folder, and the same directory and
//! handlers as on a cluster serve the protocol.

pub mod manifests;
mod report;
pub mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use crate::credentials;
use crate::directory::{self, ExternalUrl, Materials, ObjectKey, SharedDirectory};
use crate::keys::KeyVersion;
use crate::keys::ring::KeyPolicy;
use crate::keys::rotation;
use crate::login::cidr::Cidr;
use crate::login::external::{IssuerRegistry, IssuerSource, KEYS_MAX_AGE};
use crate::server::{self, AppState, Metrics};
use crate::sessions::{MemoryStore, TokenStore};
use state::StateDir;

/// Flags of `oidc-operator standalone`.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Folder of YAML/JSON manifests of the six kinds (read recursively, reloaded on change).
    #[arg(long)]
    pub manifests: PathBuf,
    /// Folder for generated key material, client credentials and the TLS CA (files are 0600).
    #[arg(long, default_value = ".oidc-operator")]
    pub state: PathBuf,
    /// Address of the protocol endpoints (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_listen: SocketAddr,
    /// URL clients reach the server at (scheme://host:port); derived from --listen when omitted.
    #[arg(long)]
    pub external_url: Option<String>,
    /// Serve plain HTTP (loopback development and tests only).
    #[arg(long)]
    pub plain_http: bool,
    /// PEM certificate chain to serve instead of the generated one (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// How often manifests are checked for changes and keys for due rotations, in milliseconds
    /// (SIGHUP reloads at once).
    #[arg(long, default_value_t = 1000)]
    pub poll_ms: u64,
    /// Fetch external issuers over plain http too (local trials with `dev-issuer`, tests).
    #[arg(long)]
    pub allow_insecure_issuers: bool,
    /// Least seconds between two fetches of an external issuer's keys when a JWT names an
    /// unknown kid.
    #[arg(long, default_value_t = crate::login::external::REFETCH_INTERVAL)]
    pub issuer_refetch_interval: i64,
    /// Lifetime of authorization codes in seconds (OpenBao: 300).
    #[arg(long, default_value_t = crate::oidc::CODE_TTL, value_parser = clap::value_parser!(i64).range(1..=600))]
    pub code_ttl: i64,
    /// Proxies (CIDR list) whose X-Forwarded-For header names the caller.
    #[arg(long, value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
}

/// Why standalone mode stopped.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    #[error("manifest folder {path}: {reason}")]
    Manifests { path: PathBuf, reason: String },
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Tls(#[from] server::tls::TlsError),
    #[error("binding {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("--external-url {0:?} must be scheme://host[:port]")]
    ExternalUrl(String),
    #[error("generating key material: {0}")]
    Keys(#[from] crate::keys::KeyError),
    #[error("generating credentials: {0}")]
    Random(#[from] credentials::RandomError),
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("--trusted-proxies: {0}")]
    TrustedProxies(String),
}

/// Runs standalone mode until interrupted.
pub fn main(options: Options) -> Result<(), StandaloneError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(StandaloneError::Runtime)?
        .block_on(run(options))
}

/// The one place standalone mode reads the clock.
#[allow(clippy::disallowed_methods)]
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, StandaloneError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| StandaloneError::Bind { addr, reason: e.to_string() })
}

async fn run(options: Options) -> Result<(), StandaloneError> {
    if !options.manifests.is_dir() {
        return Err(StandaloneError::Manifests { path: options.manifests.clone(), reason: "is not a folder".into() });
    }
    let state = StateDir::open(&options.state)?;
    let listener = bind(options.listen).await?;
    let management = bind(options.metrics_listen).await?;
    let local =
        listener.local_addr().map_err(|e| StandaloneError::Bind { addr: options.listen, reason: e.to_string() })?;
    let mgmt_local = management
        .local_addr()
        .map_err(|e| StandaloneError::Bind { addr: options.metrics_listen, reason: e.to_string() })?;
    let scheme = if options.plain_http { "http" } else { "https" };
    let external = match &options.external_url {
        Some(url) => {
            crate::api::validate::issuer_base(url).map_err(|_| StandaloneError::ExternalUrl(url.clone()))?;
            ExternalUrl::new(url)
        }
        None => {
            let host = if local.ip().is_unspecified() { "127.0.0.1".to_owned() } else { local.ip().to_string() };
            let host = if host.contains(':') { format!("[{host}]") } else { host };
            ExternalUrl::new(&format!("{scheme}://{host}:{}", local.port()))
        }
    };
    let tls = if options.plain_http {
        None
    } else {
        let cert = match (&options.tls_cert, &options.tls_key) {
            (Some(c), Some(k)) => server::tls::from_files(c, k)?,
            _ => {
                let mut hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
                if let Some(h) = url::Url::parse(external.as_str()).ok().and_then(|u| u.host_str().map(str::to_owned)) {
                    hosts.push(h.trim_start_matches('[').trim_end_matches(']').to_owned());
                }
                if !local.ip().is_unspecified() {
                    hosts.push(local.ip().to_string());
                }
                let (cert, ca) = server::tls::self_signed(&state.tls_dir(), &hosts)?;
                println!("tls: generated certificate signed by the CA in {}", ca.display());
                cert
            }
        };
        Some(server::tls::acceptor(&cert)?)
    };

    let shared = Arc::new(SharedDirectory::default());
    let metrics = Arc::new(Metrics::default());
    let trusted_proxies = options
        .trusted_proxies
        .iter()
        .map(|p| Cidr::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(StandaloneError::TrustedProxies)?;
    let issuers = Arc::new(IssuerRegistry::new(options.allow_insecure_issuers));
    let tokens: Arc<dyn TokenStore> = Arc::new(MemoryStore::default());
    let app = AppState {
        directory: Arc::clone(&shared),
        metrics: Arc::clone(&metrics),
        issuers: Arc::clone(&issuers),
        tokens: Arc::clone(&tokens),
        trusted_proxies: Arc::new(trusted_proxies),
        refetch_interval: options.issuer_refetch_interval.max(0),
        code_ttl: options.code_ttl,
    };
    tokio::spawn(server::serve(listener, tls, server::api_routes(app.clone())));
    tokio::spawn(server::serve(management, None, server::management_routes(app)));
    println!("listening: api={scheme}://{local} metrics=http://{mgmt_local} external-url={}", external.as_str());
    tracing::info!(api = %local, metrics = %mgmt_local, external = external.as_str(), "standalone server started");

    let mut hangup =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(StandaloneError::Runtime)?;
    let materials = shell_materials(&state)?;
    let mut shell = Shell {
        options,
        state,
        external,
        shared,
        metrics,
        materials,
        inputs: directory::Inputs::default(),
        last_files: None,
        last_good: manifests::LastGood::new(),
        reporter: report::Reporter::default(),
        issuers,
        tokens,
        last_purge: 0,
    };
    let mut force = true;
    loop {
        shell.tick(force).await?;
        force = false;
        let wait = tokio::time::sleep(StdDuration::from_millis(shell.options.poll_ms.max(50)));
        tokio::select! {
            _ = wait => {}
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading manifests");
                force = true;
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted; stopping");
                return Ok(());
            }
        }
    }
}

/// The standalone control loop's state.
struct Shell {
    options: Options,
    state: StateDir,
    external: ExternalUrl,
    shared: Arc<SharedDirectory>,
    metrics: Arc<Metrics>,
    materials: Materials,
    inputs: directory::Inputs,
    last_files: Option<Vec<(PathBuf, String)>>,
    last_good: manifests::LastGood,
    reporter: report::Reporter,
    issuers: Arc<IssuerRegistry>,
    tokens: Arc<dyn TokenStore>,
    last_purge: i64,
}

impl Shell {
    /// Reloads manifests if they changed, applies due rotations, and rebuilds the snapshot
    /// when anything changed. A broken manifest folder keeps the last snapshot serving.
    async fn tick(&mut self, force: bool) -> Result<(), StandaloneError> {
        let files = match manifests::read_folder(&self.options.manifests) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(folder = %self.options.manifests.display(), error = %e, "cannot read manifests; keeping the last snapshot");
                return Ok(());
            }
        };
        let changed = force || self.last_files.as_ref() != Some(&files);
        let now = unix_now();
        if changed {
            let (inputs, problems, good) = manifests::load(&files, &self.last_good);
            for p in &problems {
                println!("manifest error: {p}");
                tracing::warn!(problem = %p, "invalid manifest");
            }
            self.inputs = inputs;
            self.last_good = good;
            self.last_files = Some(files);
        }
        let materials_changed = ensure_materials(&self.state, &self.metrics, &self.inputs, &mut self.materials, now)?;
        let health_changed = self.refresh_issuers(now);
        if !(changed || materials_changed || health_changed) {
            self.purge(now);
            return Ok(());
        }
        let previous = self.shared.load();
        let dir = directory::build(&self.inputs, &self.materials, &self.external, now, previous.as_deref());
        self.reporter.report(&dir, &self.inputs, &self.state, &self.metrics);
        self.metrics.snapshot_builds.inc();
        // Tokens of deleted or replaced identities die with them.
        if let Some(previous) = previous {
            for old in previous.identities_by_id.values() {
                let kept = dir.identity_by_id(&old.id).filter(|n| n.key == old.key);
                if kept.is_none() {
                    let n = self.tokens.revoke_identity(&old.key, None);
                    tracing::info!(identity = %old.key, revoked = n, "identity removed; its access tokens are revoked");
                }
            }
        }
        self.shared.store(dir);
        Ok(())
    }

    /// Starts background fetches of the issuers identities name (first use, or keys older
    /// than [`KEYS_MAX_AGE`]) and records what the finished ones gave. Returns whether any
    /// issuer's health changed. Never waits for a fetch.
    fn refresh_issuers(&mut self, now: i64) -> bool {
        let sources: Vec<IssuerSource> =
            self.inputs.identities.iter().map(|i| directory::issuer_source(&i.spec)).collect();
        self.issuers.retain(&sources);
        let mut health = std::collections::BTreeMap::new();
        for source in sources {
            let issuer = self.issuers.get(&source);
            let keys = issuer.keys();
            let stale = keys.as_ref().is_none_or(|k| now - k.fetched_at >= KEYS_MAX_AGE);
            if stale {
                let refetch = self.options.issuer_refetch_interval.max(1);
                let task = Arc::clone(&issuer);
                tokio::spawn(async move {
                    task.refresh(now, refetch).await;
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
        let changed = health != self.materials.issuer_health;
        self.materials.issuer_health = health;
        changed
    }

    /// Drops expired tokens once a minute.
    fn purge(&mut self, now: i64) {
        if now - self.last_purge < 60 {
            return;
        }
        self.last_purge = now;
        if let Some(dir) = self.shared.load() {
            self.tokens.purge(now, &|r| dir.identity_by_id(&r.identity_id).map(|i| i.limits));
        }
    }
}

fn shell_materials(state: &StateDir) -> Result<Materials, StandaloneError> {
    Ok(state.load()?)
}

/// Creates what is missing and rotates what is due, persisting every change before it is
/// used. Returns whether anything changed.
fn ensure_materials(
    state: &StateDir,
    metrics: &Metrics,
    inputs: &directory::Inputs,
    m: &mut Materials,
    now: i64,
) -> Result<bool, StandaloneError> {
    {
        let mut changed = false;
        for (key, spec) in directory::required_keys(inputs) {
            let policy = KeyPolicy::from(&spec);
            let ring = m.key_rings.get(&key);
            if let Some(next) = rotation::advance(ring, &policy, now, |alg| KeyVersion::generate(alg, now))? {
                state.save_key(&key, &next)?;
                tracing::info!(key = %key, current_kid = %next.current.kid, next_kid = %next.next.kid, "key ring updated");
                metrics.rotations.inc();
                m.key_rings.insert(key, next);
                changed = true;
            }
        }
        for client in &inputs.clients {
            let key = ObjectKey::of(&client.metadata);
            let confidential = client.spec.client_type == crate::api::ClientType::Confidential;
            if let Some(creds) =
                credentials::reconcile(m.credentials.get(&key), client.spec.client_id.as_deref(), confidential)?
            {
                state.save_client(&key, &creds)?;
                m.credentials.insert(key, creds);
                changed = true;
            }
        }
        for identity in &inputs.identities {
            let key = ObjectKey::of(&identity.metadata);
            if identity.spec.identity_id.is_none() && !m.identity_ids.contains_key(&key) {
                let id = crate::keys::random_uuid()?;
                state.save_identity(&key, &id)?;
                m.identity_ids.insert(key, id);
                changed = true;
            }
        }
        Ok(changed)
    }
}

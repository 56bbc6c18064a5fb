//! Starting the servers: the flags both shells share, binding, the external URL, TLS, and the
//! handlers' shared state.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::limits::{self, ConnLimits, LimitArgs};
use super::{AppState, conn, tls};
use crate::directory::{ExternalUrl, SharedDirectory};
use crate::login::cidr::Cidr;
use crate::login::external::IssuerRegistry;
use crate::metrics::Metrics;
use crate::sessions::SessionStore;

/// Flags of the servers, shared by `standalone` and `run`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address of the protocol endpoints (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_listen: SocketAddr,
    /// URL clients reach the server at (scheme://host:port); derived from --listen when omitted.
    #[arg(long)]
    pub external_url: Option<String>,
    /// Serve plain HTTP: on a loopback --listen only, unless --tls-terminated-upstream.
    #[arg(long)]
    pub plain_http: bool,
    /// With --plain-http: a proxy, ingress or mesh sidecar in front terminates TLS, so plain
    /// HTTP may listen on a non-loopback address.
    #[arg(long, requires = "plain_http")]
    pub tls_terminated_upstream: bool,
    /// PEM certificate chain to serve instead of the generated one (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Seconds between two reads of --tls-cert/--tls-key: a renewed pair (cert-manager) is
    /// served from then on without a restart.
    #[arg(long, default_value_t = super::tls_reload::RELOAD_INTERVAL.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub tls_reload_interval: u64,
    /// Fetch external issuers over plain http and from loopback addresses too (local trials
    /// with `dev-issuer`, tests). Link-local and metadata addresses stay refused.
    #[arg(long)]
    pub allow_insecure_issuers: bool,
    /// Least seconds between two fetches of an external issuer's keys when a JWT names an
    /// unknown kid.
    #[arg(long, default_value_t = crate::login::external::REFETCH_INTERVAL)]
    pub issuer_refetch_interval: i64,
    /// Seconds an external issuer's keys are trusted after the last successful fetch: past
    /// it, while refetches fail, logins of its identities fail closed (issuer_unavailable).
    #[arg(long, default_value_t = crate::login::DEFAULT_ISSUER_KEYS_MAX_AGE, value_parser = clap::value_parser!(i64).range(1..))]
    pub issuer_keys_max_age: i64,
    /// Globs of one bound list (boundAudiences, one boundClaims value) a login examines;
    /// an identity listing more is refused at login (bound_too_large).
    #[arg(long, default_value_t = crate::login::matching::DEFAULT_MAX_GLOBS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
    pub max_bound_globs: usize,
    /// Elements of one JWT claim (aud, a bound claim's array) a login examines; a JWT with
    /// more is refused (claim_too_large).
    #[arg(long, default_value_t = crate::login::matching::DEFAULT_MAX_CLAIM_ELEMENTS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
    pub max_claim_elements: usize,
    /// IdentityOidcAuth objects served per namespace; later ones (by age) are not Ready
    /// (TooManyIdentities) and cannot log in.
    #[arg(long, default_value_t = crate::login::DEFAULT_MAX_IDENTITIES_PER_NAMESPACE, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_identities_per_namespace: usize,
    /// Logins with large claim checks (big bound lists times big JWTs) run at once on the
    /// blocking pool; more wait their turn without holding a worker.
    #[arg(long, default_value_t = crate::login::DEFAULT_HEAVY_CHECKS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub max_concurrent_heavy_logins: usize,
    /// Lifetime of authorization codes in seconds (OpenBao: 300).
    #[arg(long, default_value_t = crate::oidc::CODE_TTL, value_parser = clap::value_parser!(i64).range(1..=600))]
    pub code_ttl: i64,
    /// Longest lifetime of a private_key_jwt client assertion in seconds (exp - iat, or exp -
    /// now without iat); its jti is remembered that long. Client libraries sign one hour.
    #[arg(long, default_value_t = crate::oidc::client_assertion::DEFAULT_MAX_LIFETIME, value_parser = clap::value_parser!(i64).range(60..=86_400))]
    pub max_client_assertion_lifetime: i64,
    /// Proxies (CIDR list) whose X-Forwarded-For header names the caller.
    #[arg(long, value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// Ceiling of live session records (identity access tokens, codes and userinfo tokens
    /// together); past it logins and authorizations answer 503 temporarily_unavailable.
    #[arg(long, default_value_t = crate::sessions::DEFAULT_MAX_RECORDS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_session_records: usize,
    /// Ceiling of live session records in bytes (their text plus a fixed overhead each, see
    /// docs/limits.md); past it as past --max-session-records.
    #[arg(long, default_value_t = crate::sessions::quota::DEFAULT_MAX_BYTES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(65536..))]
    pub max_session_bytes: usize,
    /// Share of both ceilings one namespace may hold, in percent: a namespace at its share
    /// gets 503 temporarily_unavailable for its own logins and codes, alone.
    #[arg(long, default_value_t = crate::sessions::quota::DEFAULT_NAMESPACE_PERCENT, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub max_session_namespace_percent: u8,
    /// Live session records one identity may hold (its tokens, codes and userinfo tokens).
    #[arg(long, default_value_t = crate::sessions::quota::DEFAULT_MAX_RECORDS_PER_IDENTITY, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_session_records_per_identity: usize,
    /// Longest lifetime of any token, in seconds: identities' accessTokenTTL and
    /// accessTokenMaxTTL and clients' idTokenTTL and accessTokenTTL are cut to it.
    #[arg(long, default_value_t = crate::directory::DEFAULT_MAX_TOKEN_TTL, value_parser = clap::value_parser!(i64).range(60..=315_359_999))]
    pub max_token_ttl: i64,
    /// Seconds between two purges of expired and spent session records.
    #[arg(long, default_value_t = super::purge::DEFAULT_INTERVAL, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub session_purge_interval: u64,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

impl ServeArgs {
    /// The session store's ceilings and tenant shares.
    pub fn quotas(&self) -> crate::sessions::Quotas {
        crate::sessions::Quotas::new(
            self.max_session_records,
            self.max_session_bytes,
            self.max_session_namespace_percent,
            self.max_session_records_per_identity,
        )
    }
}

/// Where codes and tokens live: one replica's memory, or a shared Redis (or Valkey).
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// Shared store for codes and tokens, so that every replica serves the whole protocol:
    /// redis://host:port[/db], rediss://... (TLS), redis+cluster://h1:p1,h2:p2 (a Redis
    /// Cluster; rediss+cluster:// with TLS), redis+sentinel://s1:p1,s2:p2/<master> (the
    /// master the Sentinels name; rediss+sentinel:// with TLS). Omitted: one replica's memory.
    #[arg(long, env = "OIDC_OPERATOR_SESSION_STORE")]
    pub session_store: Option<String>,
    /// PEM CA the store's TLS certificate must chain to (system roots otherwise).
    #[arg(long, requires = "session_store")]
    pub session_store_ca: Option<PathBuf>,
    /// ACL user of the store.
    #[arg(long, env = "OIDC_OPERATOR_SESSION_STORE_USERNAME", requires = "session_store")]
    pub session_store_username: Option<String>,
    /// File holding the store's password (or set OIDC_OPERATOR_SESSION_STORE_PASSWORD).
    #[arg(long, requires = "session_store")]
    pub session_store_password_file: Option<PathBuf>,
    /// ACL user of the Sentinels (redis+sentinel://), when they have users of their own.
    #[arg(long, env = "OIDC_OPERATOR_SESSION_STORE_SENTINEL_USERNAME", requires = "session_store")]
    pub session_store_sentinel_username: Option<String>,
    /// File holding the Sentinels' own password (their requirepass; or set
    /// OIDC_OPERATOR_SESSION_STORE_SENTINEL_PASSWORD). The data nodes take the store's.
    #[arg(long, requires = "session_store")]
    pub session_store_sentinel_password_file: Option<PathBuf>,
    /// Deadline of every store call, in milliseconds: past it the endpoint answers 503.
    #[arg(long, default_value_t = crate::sessions::redis::DEFAULT_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(10..=30000))]
    pub session_store_timeout_ms: u64,
    /// Prefix of every key the store writes.
    #[arg(long, default_value = crate::sessions::redis::DEFAULT_PREFIX)]
    pub session_store_prefix: String,
}

/// The login limits of the flags.
fn login_limits(args: &ServeArgs) -> crate::login::LoginLimits {
    crate::login::LoginLimits {
        matching: crate::login::matching::MatchLimits {
            max_globs: args.max_bound_globs,
            max_claim_elements: args.max_claim_elements,
        },
        issuer_keys_max_age: args.issuer_keys_max_age,
        max_identities_per_namespace: args.max_identities_per_namespace,
        heavy_checks: args.max_concurrent_heavy_logins,
    }
}

/// Why the servers could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("binding {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("--external-url {0:?}: {1}")]
    ExternalUrl(String, String),
    #[error("--trusted-proxies: {0}")]
    TrustedProxies(String),
    #[error(transparent)]
    Listen(#[from] limits::BindRefused),
    #[error(transparent)]
    Store(#[from] crate::sessions::redis::RedisSetupError),
    #[error("{flag} {path}: {reason}")]
    StorePassword { flag: &'static str, path: PathBuf, reason: String },
}

/// The session store the flags ask for; a shared one is health-checked every second.
fn session_store(args: &ServeArgs, metrics: &Arc<Metrics>) -> Result<SessionStore, StartError> {
    let store = &args.store;
    let Some(url) = &store.session_store else {
        return Ok(SessionStore::memory_counted(args.quotas(), Arc::clone(metrics)));
    };
    let password = secret(
        "--session-store-password-file",
        store.session_store_password_file.as_ref(),
        "OIDC_OPERATOR_SESSION_STORE_PASSWORD",
    )?;
    let sentinel_password = secret(
        "--session-store-sentinel-password-file",
        store.session_store_sentinel_password_file.as_ref(),
        "OIDC_OPERATOR_SESSION_STORE_SENTINEL_PASSWORD",
    )?;
    let options = crate::sessions::redis::RedisOptions {
        url: url.clone(),
        ca: store.session_store_ca.clone(),
        username: store.session_store_username.clone(),
        password,
        sentinel_username: store.session_store_sentinel_username.clone(),
        sentinel_password,
        timeout: std::time::Duration::from_millis(store.session_store_timeout_ms),
        prefix: store.session_store_prefix.clone(),
        quotas: args.quotas(),
    };
    let redis = crate::sessions::redis::RedisStore::connect(&options, Arc::clone(metrics))?;
    tokio::spawn(Arc::clone(&redis).watch_health(std::time::Duration::from_secs(1)));
    Ok(SessionStore::Redis(redis))
}

/// A password from the file `flag` names (its last line break dropped), else from the
/// environment variable `env`; none when empty.
fn secret(flag: &'static str, file: Option<&PathBuf>, env: &str) -> Result<Option<String>, StartError> {
    let value = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| StartError::StorePassword { flag, path: path.clone(), reason: e.to_string() })?
            .trim_end_matches(['\n', '\r'])
            .to_owned(),
        None => std::env::var(env).unwrap_or_default(),
    };
    Ok(Some(value).filter(|p| !p.is_empty()))
}

/// The running servers' shared state and external URL.
pub struct Started {
    pub app: AppState,
    pub external: ExternalUrl,
}

/// Binds `addr` with a listen backlog of `backlog` (tokio's own `bind` asks for 128, as std does,
/// so a burst of connections beyond that is dropped by the kernel before it is accepted).
fn bind(addr: SocketAddr, backlog: u32) -> Result<(tokio::net::TcpListener, SocketAddr), StartError> {
    let err = |e: std::io::Error| StartError::Bind { addr, reason: e.to_string() };
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() };
    let socket = socket.map_err(err)?;
    // As std and tokio do: a restarted server rebinds while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    let listener = socket.listen(backlog).map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    Ok((listener, local))
}

/// Where the CA of the self-signed serving certificate is kept.
pub enum CaSource<'a> {
    /// A folder (standalone mode): `ca.crt` and `ca.key`.
    Dir(&'a Path),
    /// Already loaded by the caller (the operator keeps it in a Secret).
    Loaded(tls::CaPem),
    /// No self-signed certificate is made (plain HTTP, or a certificate is given).
    NotNeeded,
}

/// Where clients reach the server: --external-url, else the --listen address (127.0.0.1
/// for an unspecified one).
fn external_url(args: &ServeArgs, local: SocketAddr) -> Result<ExternalUrl, StartError> {
    Ok(match &args.external_url {
        Some(url) => ExternalUrl::new(
            &crate::api::validate::issuer_base(url).map_err(|reason| StartError::ExternalUrl(url.clone(), reason))?,
        ),
        None => {
            let scheme = if args.plain_http { "http" } else { "https" };
            let host = if local.ip().is_unspecified() { "127.0.0.1".to_owned() } else { local.ip().to_string() };
            let host = if host.contains(':') { format!("[{host}]") } else { host };
            ExternalUrl::new(&format!("{scheme}://{host}:{}", local.port()))
        }
    })
}

/// The names the generated serving certificate carries, and its CA is constrained to:
/// loopback, the external URL's host, and a specific --listen address.
fn names_served(external: &ExternalUrl, local: SocketAddr) -> Vec<String> {
    let mut hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if let Some(h) = url::Url::parse(external.as_str()).ok().and_then(|u| u.host_str().map(str::to_owned)) {
        hosts.push(h.trim_start_matches('[').trim_end_matches(']').to_owned());
    }
    if !local.ip().is_unspecified() {
        hosts.push(local.ip().to_string());
    }
    let mut seen = std::collections::BTreeSet::new();
    hosts.retain(|h| seen.insert(h.clone()));
    hosts
}

/// [`names_served`] before the listener is bound (the port plays no part in the names):
/// what the operator constrains the CA in its Secret to.
pub fn served_names(args: &ServeArgs) -> Result<Vec<String>, StartError> {
    Ok(names_served(&external_url(args, args.listen)?, args.listen))
}

/// Binds both listeners, sets up TLS (given files, or a certificate signed by the kept CA),
/// spawns the servers and prints the `listening:` line tests read.
pub async fn start(args: &ServeArgs, ca: CaSource<'_>, mode: &str) -> Result<Started, StartError> {
    limits::check_listen(args.listen, args.plain_http, args.tls_terminated_upstream)?;
    limits::check_management_caps(&args.limits)?;
    let fd_limit = limits::raise_fd_limit();
    let (cap, lowered) =
        limits::connection_cap(args.limits.max_connections, args.limits.metrics_max_connections, fd_limit);
    if lowered {
        tracing::warn!(
            requested = args.limits.max_connections,
            cap,
            fd_limit = ?fd_limit,
            "--max-connections lowered to fit the open-file limit"
        );
    }
    let api_limits = ConnLimits::from_args(&args.limits, cap);
    let management_limits = ConnLimits::management(&args.limits);
    let backlog = limits::listen_backlog(std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok().as_deref());
    let (listener, local) = bind(args.listen, backlog)?;
    let (management, mgmt_local) = bind(args.metrics_listen, backlog)?;
    let scheme = if args.plain_http { "http" } else { "https" };
    let external = external_url(args, local)?;
    let tls = if args.plain_http {
        None
    } else if let (Some(c), Some(k)) = (&args.tls_cert, &args.tls_key) {
        // A given certificate (cert-manager renews it in place): re-read while serving.
        let resolver = super::tls_reload::ReloadingCert::load(c, k)?;
        tokio::spawn(Arc::clone(&resolver).watch(std::time::Duration::from_secs(args.tls_reload_interval)));
        Some(tls::acceptor_resolving(resolver)?)
    } else {
        let cert = {
            let hosts = names_served(&external, local);
            let ca = match ca {
                CaSource::Dir(dir) => {
                    let ca = tls::ca_in_dir(dir, &hosts)?;
                    println!("tls: generated certificate signed by the CA in {}", dir.join("ca.crt").display());
                    ca
                }
                CaSource::Loaded(ca) => ca,
                CaSource::NotNeeded => return Err(tls::TlsError::Empty("--tls-cert".into()).into()),
            };
            ca.issue(&hosts)?
        };
        Some(tls::acceptor(&cert)?)
    };
    let trusted_proxies = args
        .trusted_proxies
        .iter()
        .map(|p| Cidr::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(StartError::TrustedProxies)?;
    let metrics = Arc::new(Metrics::default());
    let tokens = session_store(args, &metrics)?;
    // The memory store is always up; a shared store's health check sets it from here on.
    metrics.store_up.set(i64::from(matches!(tokens, SessionStore::Memory(_))));
    let app = AppState {
        directory: Arc::new(SharedDirectory::default()),
        metrics,
        issuers: Arc::new(IssuerRegistry::new(args.allow_insecure_issuers).with_limits(login_limits(args))),
        tokens,
        trusted_proxies: Arc::new(trusted_proxies),
        refetch_interval: args.issuer_refetch_interval.max(0),
        code_ttl: args.code_ttl,
        max_assertion_lifetime: args.max_client_assertion_lifetime,
    };
    let api = conn::Listener {
        name: "api",
        limits: api_limits,
        exempt: app.trusted_proxies.to_vec(),
        metrics: Arc::clone(&app.metrics),
    };
    // No exemption on the health listener: the kubelet and Prometheus need a few slots each.
    let mgmt = conn::Listener {
        name: "management",
        limits: management_limits,
        exempt: Vec::new(),
        metrics: Arc::clone(&app.metrics),
    };
    tokio::spawn(conn::serve(listener, tls, super::api_routes(app.clone()), api));
    tokio::spawn(conn::serve(management, None, super::management_routes(app.clone()), mgmt));
    tokio::spawn(super::purge::run(app.clone(), std::time::Duration::from_secs(args.session_purge_interval)));
    println!("listening: api={scheme}://{local} metrics=http://{mgmt_local} external-url={}", external.as_str());
    tracing::info!(api = %local, metrics = %mgmt_local, external = external.as_str(), "{mode} server started");
    Ok(Started { app, external })
}

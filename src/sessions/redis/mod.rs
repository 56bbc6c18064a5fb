//! The shared session store: Redis (or Valkey), single node or Cluster, so that every replica
//! serves login, authorize, token and userinfo. The layout and its reasons are in
//! `docs/session-store.md`; in short:
//!
//! - one Redis hash per record, its key named by the record's SHA-256 (never the token):
//!   `P:{<hash>}:tok` for an identity token, `P:{<grant id>}:grant` for a grant (a code and
//!   the refresh family it starts, or a client_credentials grant) and every access and
//!   refresh token issued under it (fields `u:<hash>`, `r:<hash>`, see `grant_scripts.rs`).
//!   The `{...}` hash tag keeps each key on one Cluster slot, and every script touches that
//!   one key, so each operation is atomic across replicas: a code is spent once, a use limit
//!   counts exactly, a refresh token rotates once, a replay or reuse deletes the grant;
//! - an OAuth token is `<random>.<base64url(grant id)>` ([`crate::sessions::handle`]): its
//!   suffix names its grant;
//! - expiry is Redis's (`PEXPIREAT`): a token at its max TTL, a code at its expiry, a grant
//!   at its last token's, never past its refresh family's absolute expiry;
//! - everything stored grants; nothing stored denies. A store that lost its data therefore
//!   makes old tokens and codes unknown, never valid;
//! - every call has a deadline; any failure is [`StoreError::Unavailable`], which the
//!   endpoints answer with 503 `temporarily_unavailable`.

mod assertions;
mod batch;
mod diagnose;
mod grant_cache;
mod grant_scripts;
mod grants;
mod scripts;
mod sentinel;
mod tenants;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Value};

use super::{IdentityTokenRecord, StoreError, TokenError, TokenLimits};
use crate::metrics::Metrics;
use scripts::{Lua, Scripts, TOK_PUT, TOK_USE};
use sentinel::{NodeSettings, SentinelConn};
pub use tenants::Owner;

/// How to reach the store (`--session-store*` flags). `Debug` leaves the password out.
#[derive(Clone)]
pub struct RedisOptions {
    /// `redis://host:port[/db]`, `rediss://...` (TLS), `redis+cluster://h1:p1,h2:p2`
    /// (`rediss+cluster://` for TLS): the nodes a Cluster client starts from, or
    /// `redis+sentinel://s1:p1,s2:p2/<master name>` (`rediss+sentinel://` for TLS to the
    /// Sentinels and the data nodes): the Sentinels that name the master.
    pub url: String,
    /// PEM CA the server certificate must chain to (TLS); the system roots when absent.
    pub ca: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The Sentinels' own user and password (`requirepass` or an ACL user on the Sentinels),
    /// when they ask for one; `redis+sentinel://` only.
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
    /// Deadline of every call.
    pub timeout: Duration,
    /// Key prefix, so installations can share one Redis (ACL: `~<prefix>:*`).
    pub prefix: String,
    /// Each namespace's and identity's share (the global ceilings are Redis's `maxmemory`).
    pub quotas: super::Quotas,
}

/// `--session-store-timeout-ms`'s default.
pub const DEFAULT_TIMEOUT_MS: u64 = 500;
/// `--session-store-prefix`'s default.
pub const DEFAULT_PREFIX: &str = "oidcop";

impl RedisOptions {
    /// `url` with no credentials or CA, the flags' default deadline and prefix.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ca: None,
            username: None,
            password: None,
            sentinel_username: None,
            sentinel_password: None,
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            prefix: DEFAULT_PREFIX.into(),
            quotas: super::Quotas::default(),
        }
    }
}

/// `info` with `user` and `password` where given.
fn with_credentials(
    mut info: redis::RedisConnectionInfo,
    user: Option<&String>,
    password: Option<&String>,
) -> redis::RedisConnectionInfo {
    if let Some(user) = user {
        info = info.set_username(user);
    }
    if let Some(password) = password {
        info = info.set_password(password);
    }
    info
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &redact(&self.url))
            .field("ca", &self.ca)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("sentinel_username", &self.sentinel_username)
            .field("sentinel_password", &self.sentinel_password.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .field("prefix", &self.prefix)
            .field("quotas", &self.quotas)
            .finish()
    }
}

/// Why the store could not be set up (at start-up; later failures are `Unavailable`).
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("--session-store {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("--session-store-ca {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
}

enum Conn {
    /// A single node: commands go through the auto-pipelining [`batch::Batcher`].
    Single(batch::Batcher),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelConn>),
}

impl Conn {
    async fn query<T: FromRedisValue>(&self, cmd: Cmd) -> redis::RedisResult<T> {
        match self {
            Self::Single(b) => Ok(redis::from_redis_value(b.query(cmd).await?)?),
            Self::Cluster(c) => cmd.query_async(&mut c.clone()).await,
            Self::Sentinel(s) => s.query(&cmd).await,
        }
    }
}

/// Codes and tokens in Redis.
pub struct RedisStore {
    conn: Conn,
    scripts: Scripts,
    prefix: String,
    timeout: Duration,
    metrics: Arc<Metrics>,
    /// The last health check answered (`/readyz`).
    up: AtomicBool,
    /// Why it did not, when it did not (named by [`diagnose`]).
    down_cause: std::sync::Mutex<Option<String>>,
    /// A single node's client, for a fresh connection that names why the store is down.
    probe: Option<redis::Client>,
    quotas: super::Quotas,
    /// The store refused a script across slots (`CROSSSLOT`: a proxy that routes by slot
    /// in front of a `redis://` URL): grants then charge in two steps, as on a Cluster.
    cross_slot_refused: AtomicBool,
    /// The grants this replica read refresh tokens under (see `grant_cache`).
    grant_cache: grant_cache::GrantCache,
}

/// Unix seconds as the unix milliseconds `PEXPIREAT` takes, kept within year 9999 (a
/// client's TTL has no upper bound; Redis refuses an expiry that overflows).
fn ms(secs: i64) -> String {
    secs.clamp(0, 253_402_300_799).saturating_mul(1000).to_string()
}

/// The TCP behaviour of every store connection. `TCP_NODELAY`: a request is a few hundred
/// bytes, and with Nagle's algorithm (redis-rs's default) the multiplexed connection's next
/// write waits for the previous one's ACK, which halved the token endpoint's throughput in
/// `cargo bench --bench session_store`. Keepalive and `TCP_USER_TIMEOUT` turn a peer that
/// vanished without a FIN or RST (a failed node, a partition) into a dropped connection
/// within seconds, so the client reconnects instead of waiting out the kernel's minutes.
fn tcp_settings(timeout: Duration) -> redis::io::tcp::TcpSettings {
    let keepalive = redis::io::tcp::socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(2);
    redis::io::tcp::TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive)
        .set_user_timeout(timeout.max(Duration::from_secs(5)))
}

fn hex(hash: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(64);
    for b in hash {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    text
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// A script reply's JSON record at `index`.
fn json_at<T: serde::de::DeserializeOwned>(reply: &[Value], index: usize) -> Option<T> {
    reply.get(index).and_then(text).and_then(|j| serde_json::from_str(j).ok())
}

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

impl RedisStore {
    /// Sets up the client. Connections are made lazily and re-made in the background, so an
    /// unreachable store at start-up gives 503s, not a failed start.
    pub fn connect(options: &RedisOptions, metrics: Arc<Metrics>) -> Result<Arc<Self>, RedisSetupError> {
        let url_err = |reason: String| RedisSetupError::Url { url: redact(&options.url), reason };
        let certs = match &options.ca {
            Some(path) => Some(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(
                    std::fs::read(path)
                        .map_err(|e| RedisSetupError::Ca { path: path.clone(), reason: e.to_string() })?,
                ),
            }),
            None => None,
        };
        let sentinel = options.url.strip_prefix("redis+sentinel://").or(options.url.strip_prefix("rediss+sentinel://"));
        let (cluster, tls, rest) = if let Some(rest) = options.url.strip_prefix("redis+cluster://") {
            (true, false, rest)
        } else if let Some(rest) = options.url.strip_prefix("rediss+cluster://") {
            (true, true, rest)
        } else {
            (false, options.url.starts_with("rediss://") || options.url.starts_with("rediss+sentinel://"), "")
        };
        if options.ca.is_some() && !tls {
            return Err(url_err(
                "--session-store-ca is given but the URL is not TLS (rediss://, rediss+cluster:// or \
                 rediss+sentinel://)"
                    .into(),
            ));
        }
        if sentinel.is_none() && (options.sentinel_username.is_some() || options.sentinel_password.is_some()) {
            return Err(url_err(
                "--session-store-sentinel-username and --session-store-sentinel-password-file are for Sentinels \
                 (redis+sentinel:// or rediss+sentinel://)"
                    .into(),
            ));
        }
        // A hash tag in the prefix would pin every key to one Cluster slot.
        if options.prefix.is_empty() || !options.prefix.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(url_err(format!(
                "--session-store-prefix {:?}: letters, digits, '_', '.' and '-' only",
                options.prefix
            )));
        }
        if options.url.contains('@') {
            return Err(url_err(
                "credentials in the URL would show in process lists: use --session-store-username and \
                 --session-store-password-file or OIDC_OPERATOR_SESSION_STORE_PASSWORD"
                    .into(),
            ));
        }
        let scheme = if tls { "rediss" } else { "redis" };
        let tcp = tcp_settings(options.timeout);
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout.max(Duration::from_millis(200))))
            .set_response_timeout(Some(options.timeout))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(usize::MAX);
        let mut probe = None;
        let conn = if let Some(rest) = sentinel {
            let (nodes, master) = rest
                .split_once('/')
                .ok_or_else(|| url_err("name the master: redis+sentinel://host:port,.../<master>".into()))?;
            let master = master.trim_end_matches('/');
            if master.contains('/') {
                return Err(url_err(
                    "name the master alone (redis+sentinel://host:port,.../<master>); a database number \
                     is not taken"
                        .into(),
                ));
            }
            let sentinels = nodes
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| {
                    let (host, port) = n.rsplit_once(':').ok_or_else(|| url_err(format!("{n}: host:port")))?;
                    let port = port.parse::<u16>().map_err(|_| url_err(format!("{n}: the port is not a number")))?;
                    Ok((host.trim_start_matches('[').trim_end_matches(']').to_owned(), port))
                })
                .collect::<Result<Vec<_>, RedisSetupError>>()?;
            if sentinels.is_empty() || master.is_empty() {
                return Err(url_err("name at least one Sentinel and the master".into()));
            }
            let redis = with_credentials(
                redis::RedisConnectionInfo::default(),
                options.username.as_ref(),
                options.password.as_ref(),
            );
            let asking = with_credentials(
                redis::RedisConnectionInfo::default(),
                options.sentinel_username.as_ref(),
                options.sentinel_password.as_ref(),
            );
            let node = NodeSettings { redis, tcp: tcp.clone(), tls, ca: certs };
            let conn = SentinelConn::new(&sentinels, asking, master, node, options.timeout, manager_config)
                .map_err(|e| url_err(e.to_string()))?;
            Conn::Sentinel(Arc::new(conn))
        } else if cluster {
            let nodes: Vec<String> =
                rest.split(',').filter(|n| !n.trim().is_empty()).map(|n| format!("{scheme}://{}", n.trim())).collect();
            if nodes.is_empty() {
                return Err(url_err("no Cluster node given".into()));
            }
            let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
                .connection_timeout(options.timeout.max(Duration::from_millis(200)))
                .response_timeout(options.timeout)
                .tcp_settings(tcp.clone())
                .retries(2);
            if let Some(user) = &options.username {
                builder = builder.username(user);
            }
            if let Some(password) = &options.password {
                builder = builder.password(password);
            }
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            let client = builder.build().map_err(|e| url_err(e.to_string()))?;
            let config = redis::cluster::ClusterConfig::default().set_response_timeout(options.timeout);
            Conn::Cluster(client.get_pending_async_connection_with_config(config))
        } else {
            let mut info: redis::ConnectionInfo = redis::IntoConnectionInfo::into_connection_info(options.url.as_str())
                .map_err(|e| url_err(e.to_string()))?;
            let settings =
                with_credentials(info.redis_settings().clone(), options.username.as_ref(), options.password.as_ref());
            info = info.set_redis_settings(settings).set_tcp_settings(tcp.clone());
            let client = match certs {
                Some(certs) => redis::Client::build_with_tls(info, certs),
                None => redis::Client::open(info),
            }
            .map_err(|e| url_err(e.to_string()))?;
            probe = Some(client.clone());
            Conn::Single(batch::Batcher::new(
                ConnectionManager::new_lazy_with_config(client, manager_config).map_err(|e| url_err(e.to_string()))?,
            ))
        };
        let scripts = Scripts {
            tok_put: Lua::new(TOK_PUT),
            tok_use: Lua::new(TOK_USE),
            grant_put: Lua::new(grant_scripts::GRANT_PUT),
            grant_redeem: Lua::new(grant_scripts::GRANT_REDEEM),
            grant_undo: Lua::new(grant_scripts::GRANT_UNDO),
            client_grant_put: Lua::new(grant_scripts::CLIENT_GRANT_PUT),
            grant_refresh: Lua::new(grant_scripts::GRANT_REFRESH),
            put_charged: Lua::new(grant_scripts::PUT_CHARGED),
            grant_refresh_charged: Lua::new(grant_scripts::GRANT_REFRESH_CHARGED),
            access_revoke: Lua::new(grant_scripts::ACCESS_REVOKE),
            grant_revoke: Lua::new(grant_scripts::GRANT_REVOKE),
            quota_add: Lua::new(scripts::QUOTA_ADD),
            quota_add_bump: Lua::new(scripts::QUOTA_ADD_BUMP),
            index_drop: Lua::new(scripts::INDEX_DROP),
            index_bump: Lua::new(scripts::INDEX_BUMP),
            index_remove: Lua::new(scripts::INDEX_REMOVE),
            tok_take: Lua::new(scripts::TOK_TAKE),
            grant_take: Lua::new(scripts::GRANT_TAKE),
        };
        Ok(Arc::new(Self {
            conn,
            scripts,
            prefix: options.prefix.clone(),
            timeout: options.timeout,
            metrics,
            up: AtomicBool::new(false),
            down_cause: std::sync::Mutex::new(Some("not checked yet".into())),
            probe,
            quotas: options.quotas,
            cross_slot_refused: AtomicBool::new(false),
            grant_cache: grant_cache::GrantCache::default(),
        }))
    }

    /// Whether every key is on one node (a single node, or Sentinel's master), so one
    /// script may touch keys of several slots: a grant's step and its quota charge then run
    /// as one script, one round trip and atomic. A Cluster runs them one after the other.
    fn one_keyspace(&self) -> bool {
        !matches!(self.conn, Conn::Cluster(_)) && !self.cross_slot_refused.load(Ordering::Relaxed)
    }

    fn key(&self, hash: &[u8; 32], kind: &str) -> String {
        format!("{}:{{{}}}:{kind}", self.prefix, hex(hash))
    }

    /// Runs one command under the deadline, timing it; every failure is `Unavailable`.
    async fn run<T: FromRedisValue>(&self, op: &'static str, cmd: Cmd) -> Result<T, StoreError> {
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(self.timeout, self.conn.query::<T>(cmd)).await;
        self.settle(op, started, result)
    }

    /// Runs a script on one key by its hash, loading it by its body on a node that has not
    /// seen it (a restarted or new node, a Cluster node taking over a slot).
    async fn run_script<T: FromRedisValue>(
        &self,
        op: &'static str,
        script: &Lua,
        key: &str,
        args: &[String],
    ) -> Result<T, StoreError> {
        self.run_script_on(op, script, &[key.to_owned()], args).await
    }

    /// Runs a script on `keys`, all of one slot.
    async fn run_script_on<T: FromRedisValue>(
        &self,
        op: &'static str,
        script: &Lua,
        keys: &[String],
        args: &[String],
    ) -> Result<T, StoreError> {
        let started = std::time::Instant::now();
        let first = tokio::time::timeout(self.timeout, self.conn.query::<T>(script.cmd(true, keys, args))).await;
        let result = match first {
            Ok(Err(e)) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                let left = self.timeout.saturating_sub(started.elapsed());
                tokio::time::timeout(left, self.conn.query::<T>(script.cmd(false, keys, args))).await
            }
            other => other,
        };
        self.settle(op, started, result)
    }

    /// Counts a call and turns its outcome into the store's: any error or a passed deadline
    /// is `Unavailable`, logged by operation (never with a key or value).
    fn settle<T>(
        &self,
        op: &'static str,
        started: std::time::Instant,
        result: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, StoreError> {
        self.metrics.store_operation(op, started.elapsed(), result.as_ref().is_ok_and(Result::is_ok));
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.code() == Some("CROSSSLOT") => {
                if !self.cross_slot_refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        op,
                        "the session store refuses scripts across slots (a proxy routing by slot?): grants are \
                         charged in a second step from now on"
                    );
                }
                Err(StoreError::Unavailable)
            }
            Ok(Err(e)) if is_out_of_memory(&e) => {
                tracing::warn!(op, "session store at its maxmemory: the write was refused");
                Err(StoreError::OutOfMemory)
            }
            Ok(Err(e)) => {
                tracing::warn!(op, error = %e, "session store call failed");
                Err(StoreError::Unavailable)
            }
            Err(_) => {
                tracing::warn!(op, timeout_ms = self.timeout.as_millis(), "session store call timed out");
                Err(StoreError::Unavailable)
            }
        }
    }

    /// Counts `result`'s refusal (a quota, `maxmemory`) of a record of `kind`, and passes
    /// it on: the store counts its own refusals, so no caller has to.
    fn counted<T>(&self, kind: crate::sessions::RecordKind, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &result {
            self.count_refusal(kind, *e);
        }
        result
    }

    /// Counts a refusal of a record of `kind`.
    pub fn count_refusal(&self, kind: crate::sessions::RecordKind, e: StoreError) {
        if e.is_refusal() {
            self.metrics.store_refused(kind, e.reason());
        }
    }

    /// Whether the last health check got an answer.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Why the store is down, when it is (`/readyz` says it).
    pub fn down_cause(&self) -> Option<String> {
        self.down_cause.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Pings every `interval` and keeps [`RedisStore::is_up`] current; when the ping fails,
    /// names why (a fresh connection to a single node shows a refused password, a refused
    /// connection or a TLS failure, which the retrying manager only shows as a timeout).
    pub async fn watch_health(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let up = self.run::<String>("ping", redis::cmd("PING")).await.is_ok();
            let cause = if up {
                None
            } else {
                match &self.probe {
                    Some(client) => Some(diagnose::probe(client, self.timeout).await.err().unwrap_or_else(|| {
                        "the store answers a new connection but not the shared one; it is reconnecting".into()
                    })),
                    None => Some(format!("no answer within {} ms", self.timeout.as_millis())),
                }
            };
            let was_up = self.up.swap(up, Ordering::Relaxed);
            let changed = {
                let mut current = self.down_cause.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let changed = *current != cause;
                *current = cause.clone();
                changed
            };
            match (&cause, was_up || changed) {
                (None, _) if !was_up => tracing::info!("session store reachable"),
                (Some(cause), true) => tracing::warn!(
                    cause = %cause,
                    "session store unreachable: login, authorize, token and userinfo answer 503"
                ),
                _ => {}
            }
            self.metrics.store_up.set(i64::from(up));
        }
    }

    pub async fn insert(&self, hash: [u8; 32], record: IdentityTokenRecord, expires_at: i64) -> Result<(), StoreError> {
        let key = self.key(&hash, "tok");
        let owner = Owner::Identity { name: &record.identity.name, uid: &record.identity_uid, id: &record.identity_id };
        self.charge(&key, &record.charge(), &[owner], expires_at).await?;
        let json = serde_json::to_string(&record).map_err(|_| StoreError::Unavailable)?;
        let args = [json, record.issued_at.to_string(), ms(expires_at)];
        let put = self.run_script::<i64>("token_put", &self.scripts.tok_put, &key, &args).await.map(drop);
        self.counted(crate::sessions::RecordKind::IdentityToken, put)
    }

    pub async fn use_token(
        &self,
        hash: &[u8; 32],
        mode: &'static str,
        limits: &TokenLimits,
        now: i64,
    ) -> Result<IdentityTokenRecord, TokenError> {
        let args = [
            mode.to_owned(),
            now.to_string(),
            limits.ttl.to_string(),
            limits.max_ttl.to_string(),
            limits.num_uses_limit.to_string(),
        ];
        let op = match mode {
            "peek" => "token_peek",
            "count" => "token_use",
            _ => "token_renew",
        };
        let reply: Vec<Value> = self
            .run_script(op, &self.scripts.tok_use, &self.key(hash, "tok"), &args)
            .await
            .map_err(|_| TokenError::Unavailable)?;
        match reply.first().and_then(int) {
            Some(0) => Err(TokenError::Unknown),
            Some(1) => Err(TokenError::Expired),
            Some(2) => Err(TokenError::UsesExhausted),
            Some(3) if reply.len() == 5 => {
                let mut record: IdentityTokenRecord = json_at(&reply, 1).ok_or(TokenError::Unavailable)?;
                record.issued_at = int(&reply[2]).ok_or(TokenError::Unavailable)?;
                record.renewed_at = int(&reply[3]).ok_or(TokenError::Unavailable)?;
                record.uses = int(&reply[4]).and_then(|n| u64::try_from(n).ok()).ok_or(TokenError::Unavailable)?;
                if mode == "renew" {
                    let key = self.key(hash, "tok");
                    let owner = Owner::Identity {
                        name: &record.identity.name,
                        uid: &record.identity_uid,
                        id: &record.identity_id,
                    };
                    // A renewal the index did not follow would let the record outlive its
                    // charge: the renewal fails closed instead.
                    self.extend_charge(&key, &record.charge(), &[owner], record.expires_at(limits))
                        .await
                        .map_err(|_| TokenError::Unavailable)?;
                }
                Ok(record)
            }
            _ => Err(TokenError::Unavailable),
        }
    }

    /// Revokes a token and gives its charge back to its tenant, so revoking makes room as
    /// it does in memory.
    pub async fn revoke(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        let key = self.key(hash, "tok");
        let taken: Option<String> = self.run_script("token_revoke", &self.scripts.tok_take, &key, &[]).await?;
        let Some(json) = taken else { return Ok(false) };
        if let Ok(record) = serde_json::from_str::<IdentityTokenRecord>(&json) {
            let owner =
                Owner::Identity { name: &record.identity.name, uid: &record.identity_uid, id: &record.identity_id };
            // The token is gone either way; a charge left behind only holds room until its
            // expiry.
            if let Err(e) = self.uncharge(&key, &record.charge(), &[owner]).await {
                tracing::warn!(error = %e, "a revoked token's quota charge stays until its expiry");
            }
        }
        Ok(true)
    }
}

/// Whether Redis refused a write at its `maxmemory` (`-OOM ...`, also when a script's write
/// met it).
fn is_out_of_memory(e: &redis::RedisError) -> bool {
    e.code() == Some("OOM") || e.to_string().contains("OOM command not allowed")
}

/// A URL fit for messages: user info dropped.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_never_show_credentials() {
        assert_eq!(redact("redis://user:pw@host:6379"), "redis://***@host:6379");
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }

    #[test]
    fn keys_carry_one_hash_tag() {
        let hash = [0xab; 32];
        assert_eq!(hex(&hash).len(), 64);
        let key = format!("{}:{{{}}}:{}", "oidcop", hex(&hash), "tok");
        assert!(key.starts_with("oidcop:{abab") && key.ends_with("}:tok"));
    }
}

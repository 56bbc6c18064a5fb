//! Redis with Sentinel: the master the Sentinels name, followed across failovers.
//!
//! The Sentinels are asked here rather than through redis-rs's `SentinelClient`, which asks
//! them in list order with no deadline per Sentinel: one that is down without answering (a
//! failed node, a paused process, a partition) then held every question past the call's
//! deadline, and since the next call started from the same Sentinel again, the master was
//! never found while it stayed down, though the other Sentinels could name it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;
use redis::{Cmd, FromRedisValue, RedisConnectionInfo, RedisError, Value};

/// The master the Sentinels name, asked again after a failover: a connection to the old
/// master that is refused, dropped, timed out or answered `READONLY` (it is a replica now)
/// is dropped, and the next call asks the Sentinels. The `ConnectionManager` over the
/// master reconnects to that address only.
pub(super) struct SentinelConn {
    sentinels: Vec<redis::Client>,
    master: String,
    /// How the master is reached: user and password, TCP settings, TLS.
    node: NodeSettings,
    /// Which Sentinel to ask first: the last one that answered.
    next: AtomicUsize,
    /// How long one Sentinel (and the master it names) may take to answer.
    ask_timeout: Duration,
    /// How long a command to the master may take: within the caller's deadline.
    call_timeout: Duration,
    /// Held by the one search for the master under way.
    asking: Arc<tokio::sync::Mutex<()>>,
    current: arc_swap::ArcSwapOption<ConnectionManager>,
    config: ConnectionManagerConfig,
}

/// How every node of a Sentinel deployment is reached.
pub(super) struct NodeSettings {
    pub(super) redis: RedisConnectionInfo,
    pub(super) tcp: TcpSettings,
    /// TLS (`rediss+sentinel://`) to the Sentinels and to the master,
    pub(super) tls: bool,
    /// with this CA (else the system's roots, as for `rediss://`).
    pub(super) ca: Option<redis::TlsCertificates>,
}

impl NodeSettings {
    fn client(&self, host: &str, port: u16, redis: RedisConnectionInfo) -> redis::RedisResult<redis::Client> {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let host = if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
        let info = redis::IntoConnectionInfo::into_connection_info(format!("{scheme}://{host}:{port}").as_str())?
            .set_redis_settings(redis)
            .set_tcp_settings(self.tcp.clone());
        match &self.ca {
            Some(ca) => redis::Client::build_with_tls(info, ca.clone()),
            None => redis::Client::open(info),
        }
    }
}

impl SentinelConn {
    /// `nodes` are the Sentinels' `host:port`s, asked as `sentinel_auth` (the Sentinels'
    /// own user and password, none by default); the master is reached with `node.redis`.
    pub(super) fn new(
        nodes: &[(String, u16)],
        sentinel_auth: RedisConnectionInfo,
        master: &str,
        node: NodeSettings,
        timeout: Duration,
        config: ConnectionManagerConfig,
    ) -> redis::RedisResult<Self> {
        let sentinels = nodes
            .iter()
            .map(|(host, port)| node.client(host, *port, sentinel_auth.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            ask_timeout: (timeout / 3).max(Duration::from_millis(100)),
            call_timeout: timeout.mul_f64(0.9),
            sentinels,
            master: master.to_owned(),
            node,
            next: AtomicUsize::new(0),
            asking: Arc::new(tokio::sync::Mutex::new(())),
            current: arc_swap::ArcSwapOption::empty(),
            // A master's manager gives up reconnecting after a few tries (the caller's would
            // retry forever): a dropped one must not keep reconnecting to an old address.
            config: config.set_number_of_retries(3),
        })
    }

    async fn connection(self: &Arc<Self>) -> redis::RedisResult<Arc<ConnectionManager>> {
        if let Some(c) = self.current.load_full() {
            return Ok(c);
        }
        // One search for the master at a time; the other calls wait for its answer.
        let asking = Arc::clone(&self.asking).lock_owned().await;
        if let Some(c) = self.current.load_full() {
            return Ok(c);
        }
        // The search runs on its own: a call whose deadline passes meanwhile leaves it to
        // finish for the calls after it, rather than cutting it short and having the next
        // call begin again with the Sentinel that held it up.
        let this = Arc::clone(self);
        let search = tokio::spawn(async move {
            let _asking = asking;
            let master = this.find_master().await?;
            let manager = Arc::new(ConnectionManager::new_lazy_with_config(master, this.config.clone())?);
            this.current.store(Some(Arc::clone(&manager)));
            Ok(manager)
        });
        search
            .await
            .map_err(|e| RedisError::from((redis::ErrorKind::Io, "the search for the master failed", e.to_string())))?
    }

    /// Asks each Sentinel in turn, each within `ask_timeout`, for the master's address, and
    /// the master whether it is one (`ROLE`): a Sentinel that has not seen a failover yet may
    /// still name the demoted master.
    async fn find_master(&self) -> redis::RedisResult<redis::Client> {
        let n = self.sentinels.len();
        let first = self.next.load(Ordering::Relaxed);
        let mut last = RedisError::from((redis::ErrorKind::Io, "no Sentinel answered"));
        for k in 0..n {
            let i = (first + k) % n;
            match tokio::time::timeout(self.ask_timeout, self.ask(&self.sentinels[i])).await {
                Ok(Ok(master)) => {
                    self.next.store(i, Ordering::Relaxed);
                    return Ok(master);
                }
                Ok(Err(e)) => last = e,
                Err(_) => last = RedisError::from((redis::ErrorKind::Io, "a Sentinel did not answer in time")),
            }
        }
        Err(last)
    }

    async fn ask(&self, sentinel: &redis::Client) -> redis::RedisResult<redis::Client> {
        let mut conn = sentinel.get_multiplexed_async_connection().await?;
        let (host, port): (String, u16) =
            redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(&self.master).query_async(&mut conn).await?;
        let master = self.node.client(&host, port, self.node.redis.clone())?;
        let mut conn = master.get_multiplexed_async_connection().await?;
        let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut conn).await?;
        match role.first() {
            Some(Value::BulkString(r)) if r == b"master" => Ok(master),
            Some(Value::SimpleString(r)) if r == "master" => Ok(master),
            _ => Err(RedisError::from((redis::ErrorKind::Io, "the node a Sentinel named is not a master"))),
        }
    }

    /// One command to the master. A connection that fails or times out is dropped, only if
    /// it is still the current one. The deadline here (`call_timeout`) is shorter than the
    /// caller's, so a master that hangs (a paused process: the kernel still acknowledges) or
    /// that the manager cannot reach again is dropped by this call, not cut off with it.
    pub(super) async fn query<T: FromRedisValue>(self: &Arc<Self>, cmd: &Cmd) -> redis::RedisResult<T> {
        let used = self.connection().await?;
        let Ok(result) = tokio::time::timeout(self.call_timeout, cmd.query_async(&mut (*used).clone())).await else {
            self.current.compare_and_swap(&Some(used), None);
            return Err(RedisError::from((redis::ErrorKind::Io, "the master did not answer in time")));
        };
        if let Err(e) = &result {
            let moved = e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
            if moved || e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
                // Only the connection this call used: another call may have found the new
                // master already.
                self.current.compare_and_swap(&Some(used), None);
            }
        }
        result
    }
}

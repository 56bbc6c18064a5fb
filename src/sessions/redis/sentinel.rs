//! Redis with Sentinel: the master the Sentinels name, followed across failovers.

use std::sync::Arc;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue};

/// The master the Sentinels name, asked again after a failover: a connection to the old
/// master that is refused, dropped, timed out or answered `READONLY` (it is a replica now)
/// is dropped, and the next call asks the Sentinels. redis-rs's `SentinelClient` finds the
/// master; the `ConnectionManager` over it reconnects to that address only.
pub(super) struct SentinelConn {
    pub(super) client: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
    pub(super) current: arc_swap::ArcSwapOption<ConnectionManager>,
    pub(super) config: ConnectionManagerConfig,
}

impl SentinelConn {
    async fn connection(&self) -> redis::RedisResult<Arc<ConnectionManager>> {
        if let Some(c) = self.current.load_full() {
            return Ok(c);
        }
        // One question to the Sentinels at a time; the others wait for its answer.
        let mut client = self.client.lock().await;
        if let Some(c) = self.current.load_full() {
            return Ok(c);
        }
        let master = client.async_get_client().await?;
        let manager = Arc::new(ConnectionManager::new_lazy_with_config(master, self.config.clone())?);
        self.current.store(Some(Arc::clone(&manager)));
        Ok(manager)
    }

    pub(super) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> redis::RedisResult<T> {
        let used = self.connection().await?;
        let result = cmd.query_async(&mut (*used).clone()).await;
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

    pub(super) fn forget(&self) {
        self.current.store(None);
    }
}

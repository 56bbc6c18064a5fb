//! Auto-pipelining for a single node: the commands of concurrent requests go to Redis as one
//! pipeline, one write and one read for many commands instead of one of each per command.
//!
//! On a loopback or LAN connection most of a command's cost, in the operator and in Redis,
//! is the socket call around it, not the command. redis-rs's multiplexed connection writes
//! whatever is queued when its task runs, but tokio runs a task woken by another right after
//! it (the LIFO slot), so each request's command was written alone. Here the batching task,
//! once woken by a first command, yields once: every request task that is ready runs first
//! and queues its own, then the batch leaves in one pipeline. Each command keeps its own
//! reply and error (`ignore_errors`); the caller's deadline still applies to its own wait.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, RedisResult, Value};
use tokio::sync::{mpsc, oneshot};

/// The most commands one pipeline carries.
const MAX_BATCH: usize = 256;
/// Commands waiting for the batching task; a sender past it waits (under its deadline).
/// Batches already taken wait on the connection, bounded by its response timeout.
const QUEUE: usize = 4096;

struct Queued {
    cmd: Cmd,
    reply: oneshot::Sender<RedisResult<Value>>,
}

/// The sending side; the batching task starts with the first command, on the caller's
/// runtime (as the connection manager's own task does).
pub(super) struct Batcher<C = ConnectionManager> {
    tx: mpsc::Sender<Queued>,
    idle: std::sync::Mutex<Option<(mpsc::Receiver<Queued>, C)>>,
}

/// What the batching task sends on: the connection manager (a test's recording connection).
pub(super) trait Connection: ConnectionLike + Clone + Send + Sync + 'static {}
impl<C: ConnectionLike + Clone + Send + Sync + 'static> Connection for C {}

impl<C: Connection> Batcher<C> {
    pub(super) fn new(conn: C) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self { tx, idle: std::sync::Mutex::new(Some((rx, conn))) }
    }

    /// Sends `cmd` with the other requests' commands of the moment; its reply.
    pub(super) async fn query(&self, cmd: Cmd) -> RedisResult<Value> {
        let started = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some((rx, conn)) = started {
            tokio::spawn(run(rx, conn));
        }
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Queued { cmd, reply }).await.is_err() {
            return Err(gone());
        }
        answer.await.unwrap_or_else(|_| Err(gone()))
    }
}

fn gone() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "the session store's batching task stopped"))
}

/// Takes a first command, lets the ready requests queue theirs, and sends what is queued
/// as one pipeline (on a task of its own, so the next batch need not wait for its replies).
async fn run<C: Connection>(mut rx: mpsc::Receiver<Queued>, conn: C) {
    while let Some(first) = rx.recv().await {
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(queued) => batch.push(queued),
                Err(_) => break,
            }
        }
        tokio::spawn(send(batch, conn.clone()));
    }
}

async fn send<C: Connection>(batch: Vec<Queued>, mut conn: C) {
    // A caller past its deadline has answered 503: its command (a grant, a charge) must
    // not be stored after all.
    let batch: Vec<Queued> = batch.into_iter().filter(|q| !q.reply.is_closed()).collect();
    if batch.is_empty() {
        return;
    }
    if batch.len() == 1 {
        for Queued { cmd, reply } in batch {
            let _ = reply.send(cmd.query_async::<Value>(&mut conn).await);
        }
        return;
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let mut replies = Vec::with_capacity(batch.len());
    for Queued { cmd, reply } in batch {
        pipe.add_command(cmd);
        replies.push(reply);
    }
    match pipe.query_async::<Vec<Value>>(&mut conn).await {
        Ok(values) if values.len() == replies.len() => {
            for (reply, value) in replies.into_iter().zip(values) {
                let _ = reply.send(value.extract_error());
            }
        }
        Ok(_) => {
            let e =
                redis::RedisError::from((redis::ErrorKind::Client, "a pipeline's replies did not match its commands"));
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use redis::RedisFuture;

    use super::*;

    /// Answers every `ECHO x` with `x`, recording how many commands each call carried.
    #[derive(Clone, Default)]
    struct Recording {
        calls: Arc<Mutex<Vec<usize>>>,
    }

    fn echo(cmd: &Cmd) -> Value {
        match cmd.args_iter().nth(1) {
            Some(redis::Arg::Simple(word)) => Value::BulkString(word.to_vec()),
            _ => Value::Nil,
        }
    }

    impl ConnectionLike for Recording {
        fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
            self.calls.lock().unwrap().push(1);
            let value = echo(cmd);
            Box::pin(async move { Ok(value) })
        }

        fn req_packed_commands<'a>(
            &'a mut self,
            pipeline: &'a redis::Pipeline,
            offset: usize,
            count: usize,
        ) -> RedisFuture<'a, Vec<Value>> {
            self.calls.lock().unwrap().push(count);
            let values = pipeline.cmd_iter().skip(offset).take(count).map(echo).collect();
            Box::pin(async move { Ok(values) })
        }

        fn get_db(&self) -> i64 {
            0
        }
    }

    /// A command whose caller stopped waiting (its deadline passed: it answered 503) is not
    /// sent: a grant it would store must not appear after all.
    #[tokio::test]
    async fn a_command_nobody_waits_for_is_not_sent() {
        let conn = Recording::default();
        let mut batch = Vec::new();
        let mut waiting = Vec::new();
        for (i, abandoned) in [false, true, false].into_iter().enumerate() {
            let (reply, answer) = oneshot::channel();
            let mut cmd = redis::cmd("ECHO");
            cmd.arg(format!("w{i}"));
            batch.push(Queued { cmd, reply });
            if !abandoned {
                waiting.push(answer);
            }
        }
        send(batch, conn.clone()).await;
        assert_eq!(*conn.calls.lock().unwrap(), [2], "the abandoned command was sent");
        let replies: Vec<Value> =
            futures::future::join_all(waiting).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
        assert_eq!(replies, [Value::BulkString(b"w0".to_vec()), Value::BulkString(b"w2".to_vec())]);
    }

    /// Requests on separate tasks of a one-worker runtime (where each task woken runs next,
    /// so a plain multiplexed connection writes each command alone) share a few calls, and
    /// each gets its own reply.
    #[test]
    fn concurrent_commands_share_calls_and_keep_their_replies() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let conn = Recording::default();
        let batcher = Arc::new(Batcher::new(conn.clone()));
        let replies = runtime.block_on(async {
            let tasks: Vec<_> = (0..64)
                .map(|i| {
                    let batcher = Arc::clone(&batcher);
                    tokio::spawn(async move {
                        let mut cmd = redis::cmd("ECHO");
                        cmd.arg(format!("w{i}"));
                        batcher.query(cmd).await
                    })
                })
                .collect();
            let mut replies = Vec::new();
            for task in tasks {
                replies.push(task.await.unwrap().unwrap());
            }
            replies
        });
        for (i, reply) in replies.iter().enumerate() {
            assert_eq!(reply, &Value::BulkString(format!("w{i}").into_bytes()));
        }
        let calls = conn.calls.lock().unwrap().clone();
        assert_eq!(calls.iter().sum::<usize>(), 64);
        assert!(calls.len() <= 8, "64 commands in {} calls: {calls:?}", calls.len());
    }
}

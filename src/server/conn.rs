//! The accept loop and what bounds each connection (docs/design.md, the security model): a cap on open connections in
//! all and per peer ([`super::peers`]), a TLS handshake deadline, a header deadline, an idle
//! deadline, HTTP/2 keep-alive and a cap on HTTP/2 streams. Body deadlines and the body-bytes budget are per request ([`super::body`]);
//! the accept loop hands each request its [`BodyLimits`] and [`PeerAddr`].
//!
//! At either cap a new connection is accepted and closed at once, not left in the kernel's
//! backlog: the caller learns immediately (EOF) and can retry elsewhere, and the backlog never
//! fills with callers waiting for nothing. The loop itself never waits on a connection (every
//! decision is a counter), so a peer holding idle connections cannot slow the accepts of others.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;
use warp::Filter;
use warp::reply::Response;

use super::PeerAddr;
use super::body::{BodyBudget, BodyLimits};
use super::limits::ConnLimits;
use super::peers::PeerTable;
use crate::login::cidr::Cidr;
use crate::metrics::{ListenerLabels, Metrics};

/// One listener: its name (the `listener` label), its limits, the peers exempt from the
/// per-peer cap (trusted proxies) and where it counts.
pub struct Listener {
    pub name: &'static str,
    pub limits: ConnLimits,
    pub exempt: Vec<Cidr>,
    pub metrics: Arc<Metrics>,
}

/// The connection's byte stream, plain or TLS, behind one type.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// Connection builders made once per listener: HTTP/1 or HTTP/2 as TLS's ALPN chose, or either
/// (told apart by the HTTP/2 preface) in plain HTTP.
struct Builders {
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
    any: auto::Builder<TokioExecutor>,
}

fn builder(limits: &ConnLimits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper ignores the header timeout.
    b.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_timeout)
        .max_concurrent_streams(limits.http2_max_concurrent_streams);
    b
}

struct Shared {
    listener: Listener,
    builders: Builders,
    open: Gauge,
    budget: BodyBudget,
}

/// Decrements the open-connections gauge however the connection's task ends.
struct Open(Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Accepts connections forever, over TLS when an acceptor is given, and serves `filter` on
/// each with HTTP/1.1 or HTTP/2 within `listener`'s limits.
pub async fn serve<F>(tcp: TcpListener, tls: Option<TlsAcceptor>, filter: F, listener: Listener)
where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let permits = Arc::new(Semaphore::new(listener.limits.max_connections.min(Semaphore::MAX_PERMITS)));
    let peers = PeerTable::new(listener.limits.max_connections_per_peer, listener.exempt.clone());
    let budget = BodyBudget::new(listener.limits.max_inflight_body_bytes);
    let open = listener.metrics.connections_open.get_or_create(&ListenerLabels { listener: listener.name }).clone();
    let builders = Builders {
        h1: builder(&listener.limits).http1_only(),
        h2: builder(&listener.limits).http2_only(),
        any: builder(&listener.limits),
    };
    let shared = Arc::new(Shared { listener, builders, open, budget });
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            shared.listener.metrics.connection_rejected(shared.listener.name, "limit");
            drop(stream);
            continue;
        };
        let Some(slot) = peers.admit(peer.ip()) else {
            shared.listener.metrics.connection_rejected(shared.listener.name, "peer_limit");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let filter = filter.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            shared.open.inc();
            let _open = Open(shared.open.clone());
            connection(stream, peer, tls, filter, &shared).await;
            drop(slot);
            drop(permit);
        });
    }
}

/// Serves one connection until it ends or a limit closes it.
async fn connection<F>(stream: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>, filter: F, shared: &Shared)
where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let (name, limits, metrics) = (shared.listener.name, &shared.listener.limits, &shared.listener.metrics);
    let (io, builder): (Box<dyn Io>, _) = match tls {
        None => (Box::new(stream) as Box<dyn Io>, &shared.builders.any),
        Some(acceptor) => match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(stream)).await {
            Err(_) => return metrics.connection_rejected(name, "tls_handshake_timeout"),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return metrics.connection_rejected(name, "tls_handshake_error");
            }
            Ok(Ok(s)) => {
                // RFC 9113 §3.2: HTTP/2 over TLS is chosen by ALPN, so no preface sniffing.
                let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                (Box::new(s) as Box<dyn Io>, if h2 { &shared.builders.h2 } else { &shared.builders.h1 })
            }
        },
    };
    let activity = Arc::new(Activity::new());
    let tracked = Arc::clone(&activity);
    let body_limits = BodyLimits { deadline: limits.body_read_timeout, budget: shared.budget.clone() };
    let service = warp::service(filter);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(PeerAddr(peer));
        req.extensions_mut().insert(body_limits.clone());
        let busy = Busy::begin(&tracked);
        let mut service = service.clone();
        let response = service.call(req);
        async move {
            let r = response.await;
            drop(busy);
            r
        }
    });
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let reason = tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout) {
                    // hyper's header timer also runs while a kept-alive HTTP/1 connection waits
                    // for its next request.
                    metrics.connection_rejected(name, if activity.served() { "idle" } else { "header_timeout" });
                } else {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            }
            return;
        }
        reason = activity.lapsed(limits) => reason,
    };
    // HTTP/2: GOAWAY; HTTP/1: close once the current exchange is done.
    conn.as_mut().graceful_shutdown();
    let finished = tokio::time::timeout(limits.shutdown_grace(), conn).await.is_ok();
    metrics.connection_rejected(name, if finished { reason } else { "shutdown_timeout" });
}

/// When the connection last had a request in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ActivityState {
    in_flight: usize,
    /// Start of the connection, or end of its last request.
    last: Instant,
    /// Whether any request has started.
    served: bool,
}

struct Activity {
    state: Mutex<ActivityState>,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            state: Mutex::new(ActivityState { in_flight: 0, last: Instant::now(), served: false }),
            changed: Notify::new(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut ActivityState)) {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner));
        // One waiter (`lapsed`); a permit is kept if it is not waiting yet.
        self.changed.notify_one();
    }

    fn snapshot(&self) -> ActivityState {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn served(&self) -> bool {
        self.snapshot().served
    }

    /// Resolves when no request has been in flight for too long: the header timeout before
    /// the first request (HTTP/2, and plain HTTP before its protocol is known, have no header
    /// timer of their own), the idle timeout after it. Returns the reason label.
    async fn lapsed(&self, limits: &ConnLimits) -> &'static str {
        loop {
            let seen = self.snapshot();
            if seen.in_flight > 0 {
                self.changed.notified().await;
                continue;
            }
            let (limit, reason) = if seen.served {
                (limits.idle_timeout, "idle")
            } else {
                (limits.header_read_timeout, "header_timeout")
            };
            tokio::select! {
                () = tokio::time::sleep_until(seen.last + limit) => {
                    if self.snapshot() == seen {
                        return reason;
                    }
                }
                () = self.changed.notified() => {}
            }
        }
    }
}

/// A request in flight; its end is the connection's latest activity.
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.update(|s| {
            s.in_flight += 1;
            s.served = true;
        });
        Self(Arc::clone(activity))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.update(|s| {
            s.in_flight = s.in_flight.saturating_sub(1);
            s.last = Instant::now();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(header: u64, idle: u64) -> ConnLimits {
        ConnLimits {
            header_read_timeout: Duration::from_millis(header),
            idle_timeout: Duration::from_millis(idle),
            ..ConnLimits::default()
        }
    }

    #[tokio::test]
    async fn a_connection_without_any_request_lapses_after_the_header_timeout() {
        let a = Activity::new();
        let started = std::time::Instant::now();
        assert_eq!(a.lapsed(&limits(50, 10_000)).await, "header_timeout");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_request_in_flight_holds_the_connection_and_its_end_starts_the_idle_timer() {
        let a = Arc::new(Activity::new());
        let busy = Busy::begin(&a);
        let l = limits(20, 80);
        // Far past both timeouts while the request runs: nothing lapses.
        assert!(tokio::time::timeout(Duration::from_millis(200), a.lapsed(&l)).await.is_err());
        drop(busy);
        let ended = std::time::Instant::now();
        assert_eq!(a.lapsed(&l).await, "idle");
        assert!(ended.elapsed() >= Duration::from_millis(70), "the idle timer starts at the request's end");
    }
}

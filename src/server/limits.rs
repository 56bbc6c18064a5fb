//! What an unauthenticated caller can make the server hold, as flags with their defaults, and
//! the pure decisions about them made at start-up (docs/design.md, "Tenancy and the security model": everything is bounded).
//!
//! The accept loop that applies them is [`super::conn`]; body limits are applied per request by
//! [`super::body`].

use std::net::SocketAddr;
use std::time::Duration;

/// Flags bounding connections, shared by `standalone` and `run` (flattened into
/// [`super::startup::ServeArgs`]). Durations are whole seconds.
#[derive(clap::Args, Debug, Clone)]
pub struct LimitArgs {
    /// Most connections served at once on the protocol listener; a connection accepted beyond it
    /// is closed at once (the caller sees EOF and can retry another replica) rather than left
    /// queued where it would hold a backlog slot without any answer.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// Most connections one peer (an IPv4 address or an IPv6 /64) holds at once on the protocol
    /// listener; beyond it its new connections are closed at once, while other peers are still
    /// served. Peers in --trusted-proxies are exempt (one proxy carries many callers) and bounded
    /// by --max-connections alone.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS_PER_PEER, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections_per_peer: u32,
    /// Most request-body bytes held in memory at once across all connections while bodies are
    /// read; a request whose body does not fit is answered 503 with the endpoint's JSON error
    /// at once instead of waiting.
    #[arg(long, default_value_t = DEFAULT_MAX_INFLIGHT_BODY_BYTES, value_parser = clap::value_parser!(u64).range(MIN_INFLIGHT_BODY_BYTES..=u64::from(u32::MAX)))]
    pub max_inflight_body_bytes: u64,
    /// Most connections on the health and metrics listener (--metrics-listen).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(2..=10_000))]
    pub metrics_max_connections: u32,
    /// Most connections one peer holds on the health and metrics listener; must be below
    /// --metrics-max-connections, so that the kubelet's probes always find room.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub metrics_max_connections_per_peer: u32,
    /// Seconds a connection to the health and metrics listener may wait for its request
    /// headers or stay idle between requests (a short keep-alive: probes and scrapes are quick).
    #[arg(long, default_value_t = 5, value_parser = secs)]
    pub metrics_idle_timeout: u64,
    /// Seconds a TLS handshake may take before the connection is closed.
    #[arg(long, default_value_t = 10, value_parser = secs)]
    pub tls_handshake_timeout: u64,
    /// Seconds to receive a request's headers, counted from when the server starts waiting for
    /// them (after the handshake, and again after each response on a kept-alive HTTP/1
    /// connection, so this also bounds how long an idle HTTP/1 connection stays open).
    #[arg(long, default_value_t = 10, value_parser = secs)]
    pub header_read_timeout: u64,
    /// Seconds to receive a request body, from the end of its headers; a late body is answered
    /// 408 and the connection closed.
    #[arg(long, default_value_t = 10, value_parser = secs)]
    pub body_read_timeout: u64,
    /// Seconds a connection may stay open with no request in flight (HTTP/2 and HTTP/1;
    /// HTTP/1 keep-alive is also bounded by --header-read-timeout, whichever is shorter).
    #[arg(long, default_value_t = 60, value_parser = secs)]
    pub idle_timeout: u64,
    /// Seconds between HTTP/2 keep-alive pings.
    #[arg(long, default_value_t = 30, value_parser = secs)]
    pub http2_keepalive_interval: u64,
    /// Seconds to wait for the answer to an HTTP/2 keep-alive ping before closing.
    #[arg(long, default_value_t = 20, value_parser = secs)]
    pub http2_keepalive_timeout: u64,
    /// Most concurrent streams (requests) on one HTTP/2 connection.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub http2_max_concurrent_streams: u32,
}

fn secs(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) if (1..=3600).contains(&n) => Ok(n),
        _ => Err(format!("{text:?} is not a whole number of seconds between 1 and 3600")),
    }
}

/// Connections kept free of the fd limit for everything else the process opens (state and
/// manifest files, outbound issuer and API-server connections, the management listener).
pub const FD_RESERVE: u64 = 512;

/// Default of `--max-connections-per-peer`: a tenth of the default global cap, so ten peers
/// are needed to fill it, yet far more than a browser (6) or a NAT of busy workloads needs.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: u32 = 1_000;

/// Default of `--max-inflight-body-bytes`: 64 MiB, a thousand bodies at the 64 KiB size limit.
pub const DEFAULT_MAX_INFLIGHT_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// The least `--max-inflight-body-bytes`: one body at the size limit must fit.
pub const MIN_INFLIGHT_BODY_BYTES: u64 = crate::server::identity_api::MAX_BODY_BYTES as u64;

/// Listen backlog when the system's `net.core.somaxconn` cannot be read (Linux's default
/// since 5.4).
pub const DEFAULT_BACKLOG: u32 = 4096;

/// The limits one listener applies to each connection.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    /// Bytes of request bodies held at once, across the listener's connections.
    pub max_inflight_body_bytes: usize,
    pub tls_handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub http2_keepalive_interval: Duration,
    pub http2_keepalive_timeout: Duration,
    pub http2_max_concurrent_streams: u32,
}

impl ConnLimits {
    /// The limits of the flags; `max_connections` as [`connection_cap`] settled it.
    pub fn from_args(args: &LimitArgs, max_connections: usize) -> Self {
        Self {
            max_connections,
            max_connections_per_peer: usize::try_from(args.max_connections_per_peer).unwrap_or(usize::MAX),
            max_inflight_body_bytes: usize::try_from(args.max_inflight_body_bytes).unwrap_or(usize::MAX),
            tls_handshake_timeout: Duration::from_secs(args.tls_handshake_timeout),
            header_read_timeout: Duration::from_secs(args.header_read_timeout),
            body_read_timeout: Duration::from_secs(args.body_read_timeout),
            idle_timeout: Duration::from_secs(args.idle_timeout),
            http2_keepalive_interval: Duration::from_secs(args.http2_keepalive_interval),
            http2_keepalive_timeout: Duration::from_secs(args.http2_keepalive_timeout),
            http2_max_concurrent_streams: args.http2_max_concurrent_streams,
        }
    }

    /// The limits of the health and metrics listener: few connections, few per peer and a short
    /// keep-alive, so that no peer can hold the slots the kubelet's probes need.
    pub fn management(args: &LimitArgs) -> Self {
        let short = Duration::from_secs(args.metrics_idle_timeout);
        Self {
            max_connections: usize::try_from(args.metrics_max_connections).unwrap_or(usize::MAX),
            max_connections_per_peer: usize::try_from(args.metrics_max_connections_per_peer).unwrap_or(usize::MAX),
            max_inflight_body_bytes: usize::try_from(MIN_INFLIGHT_BODY_BYTES).unwrap_or(usize::MAX),
            tls_handshake_timeout: short,
            header_read_timeout: short,
            body_read_timeout: short,
            idle_timeout: short,
            http2_keepalive_interval: short,
            http2_keepalive_timeout: short,
            http2_max_concurrent_streams: args.http2_max_concurrent_streams,
        }
    }

    /// How long a connection asked to shut down gracefully may take to finish its current
    /// exchange before it is dropped.
    pub fn shutdown_grace(&self) -> Duration {
        self.header_read_timeout
    }
}

impl Default for ConnLimits {
    /// The flags' defaults (for callers without flags: benches, embedders).
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER as usize,
            max_inflight_body_bytes: DEFAULT_MAX_INFLIGHT_BODY_BYTES as usize,
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(20),
            http2_max_concurrent_streams: 100,
        }
    }
}

/// The connection cap that fits the process's open-file limit: `requested`, or less when the
/// limit (with [`FD_RESERVE`] and the `management` listener's cap kept back) cannot hold it.
/// Returns the cap and whether it was lowered.
pub fn connection_cap(requested: u32, management: u32, fd_limit: Option<u64>) -> (usize, bool) {
    let requested = u64::from(requested);
    let Some(limit) = fd_limit else {
        return (usize::try_from(requested).unwrap_or(usize::MAX), false);
    };
    let room = limit.saturating_sub(FD_RESERVE + u64::from(management)).max(1);
    let cap = requested.min(room);
    (usize::try_from(cap).unwrap_or(usize::MAX), cap < requested)
}

/// The listen backlog: the system's `net.core.somaxconn` (the kernel caps any larger request
/// to it, and a smaller one drops handshakes in a burst before the accept loop sees them), read
/// from `somaxconn`, the text of /proc/sys/net/core/somaxconn; [`DEFAULT_BACKLOG`] without it.
pub fn listen_backlog(somaxconn: Option<&str>) -> u32 {
    somaxconn.and_then(|t| t.trim().parse::<u32>().ok()).filter(|n| *n > 0).unwrap_or(DEFAULT_BACKLOG)
}

/// Why a listen address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindRefused {
    #[error(
        "--plain-http serves unencrypted HTTP, so it binds loopback only, but --listen is {0}: \
         listen on 127.0.0.1 or [::1], or add --tls-terminated-upstream when a proxy or mesh in \
         front terminates TLS"
    )]
    PlainHttpNotLoopback(SocketAddr),
    #[error(
        "--metrics-max-connections-per-peer ({per_peer}) must be below --metrics-max-connections \
         ({total}), or one peer could hold every slot the health probes need"
    )]
    ManagementPeerCap { per_peer: u32, total: u32 },
}

/// The health listener's per-peer cap must leave room for other peers (the kubelet).
pub fn check_management_caps(args: &LimitArgs) -> Result<(), BindRefused> {
    if args.metrics_max_connections_per_peer >= args.metrics_max_connections {
        return Err(BindRefused::ManagementPeerCap {
            per_peer: args.metrics_max_connections_per_peer,
            total: args.metrics_max_connections,
        });
    }
    Ok(())
}

/// Plain HTTP on a non-loopback address is refused unless the operator says TLS is terminated
/// in front of it: tokens and client secrets would otherwise cross the network in clear.
pub fn check_listen(listen: SocketAddr, plain_http: bool, tls_terminated_upstream: bool) -> Result<(), BindRefused> {
    if plain_http && !tls_terminated_upstream && !listen.ip().is_loopback() {
        return Err(BindRefused::PlainHttpNotLoopback(listen));
    }
    Ok(())
}

/// Raises the soft open-file limit to the hard limit (as Go's runtime does), so the connection
/// cap is not silently undercut by a low default soft limit (1024 under some container runtimes).
/// Returns the soft limit in force afterwards (`None`: unlimited or unknown).
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current < now.maximum {
        let raised = Rlimit { current: now.maximum, maximum: now.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => return now.maximum,
            Err(e) => tracing::warn!(error = %e, soft = ?now.current, "could not raise the open-file limit"),
        }
    }
    now.current
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn plain_http_binds_loopback_unless_tls_is_terminated_upstream() {
        for ok in ["127.0.0.1:8080", "[::1]:8080", "127.0.0.5:0"] {
            assert_eq!(check_listen(addr(ok), true, false), Ok(()), "{ok}");
        }
        for open in ["0.0.0.0:8080", "[::]:8080", "10.1.2.3:80", "[2001:db8::1]:80"] {
            let err = check_listen(addr(open), true, false).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("--plain-http") && text.contains("--tls-terminated-upstream"), "{text}");
            assert!(text.contains(&addr(open).to_string()), "{text}");
            assert_eq!(check_listen(addr(open), true, true), Ok(()), "explicitly terminated upstream: {open}");
            assert_eq!(check_listen(addr(open), false, false), Ok(()), "TLS served: {open}");
        }
    }

    #[test]
    fn the_connection_cap_fits_the_fd_limit() {
        assert_eq!(connection_cap(10_000, 64, Some(20_000)), (10_000, false));
        assert_eq!(connection_cap(10_000, 64, None), (10_000, false));
        let reserve = FD_RESERVE + 64;
        assert_eq!(connection_cap(10_000, 64, Some(1024)), ((1024 - reserve) as usize, true));
        assert_eq!(connection_cap(10_000, 200, Some(1024)), ((1024 - FD_RESERVE - 200) as usize, true));
        assert_eq!(connection_cap(10_000, 64, Some(10)), (1, true), "never zero");
    }

    #[test]
    fn the_health_listener_keeps_room_beyond_one_peer() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            limits: LimitArgs,
        }
        let parse = |args: &[&str]| Cli::parse_from(std::iter::once("x").chain(args.iter().copied())).limits;
        let defaults = parse(&[]);
        assert_eq!(check_management_caps(&defaults), Ok(()));
        let management = ConnLimits::management(&defaults);
        assert_eq!((management.max_connections, management.max_connections_per_peer), (64, 8));
        assert_eq!(management.header_read_timeout, Duration::from_secs(5));
        assert_eq!(management.idle_timeout, Duration::from_secs(5));
        let api = ConnLimits::from_args(&defaults, 10_000);
        assert!(api.max_connections_per_peer * 10 <= api.max_connections, "well below the global cap");
        let whole = parse(&["--metrics-max-connections", "8", "--metrics-max-connections-per-peer", "8"]);
        let err = check_management_caps(&whole).unwrap_err().to_string();
        assert!(err.contains("--metrics-max-connections-per-peer") && err.contains("(8)"), "{err}");
    }

    #[test]
    fn the_backlog_is_somaxconn() {
        assert_eq!(listen_backlog(Some("4096\n")), 4096);
        assert_eq!(listen_backlog(Some("65535")), 65535);
        for unreadable in [None, Some(""), Some("0"), Some("lots")] {
            assert_eq!(listen_backlog(unreadable), DEFAULT_BACKLOG, "{unreadable:?}");
        }
    }

    #[test]
    fn durations_are_bounded_whole_seconds() {
        assert_eq!(secs("3"), Ok(3));
        for bad in ["0", "3601", "-1", "1.5", "", "10s"] {
            assert!(secs(bad).is_err(), "{bad}");
        }
    }
}

//! HTTP serving: the protocol endpoints on one listener, health and metrics on another.
//!
//! Handlers read the current [`Directory`](crate::directory::Directory) snapshot and never
//! touch the inputs or the Kubernetes API.

pub mod body;
pub mod conn;
pub mod identity_api;
pub mod limits;
pub mod oidc_api;
pub mod peers;
pub mod purge;
pub mod startup;
pub mod tls;
pub mod tls_reload;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Buf;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use warp::Filter;
use warp::http::{HeaderValue, Method, StatusCode, header};
use warp::reply::{Reply, Response};

use crate::clock::unix_now_ms;
use crate::directory::SharedDirectory;
use crate::login::cidr::{self, Cidr};
use crate::login::external::IssuerRegistry;
use crate::metrics::Metrics;
use crate::oidc::request::Request;
use crate::paths;
use crate::sessions::SessionStore;
use identity_api::{TokenOp, api_error};

/// The socket peer of a request, set by the accept loop (login checks trusted IPs with it).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub directory: Arc<SharedDirectory>,
    pub metrics: Arc<Metrics>,
    pub issuers: Arc<IssuerRegistry>,
    pub tokens: SessionStore,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<Vec<Cidr>>,
    /// Least seconds between two refetches of one external issuer's keys.
    pub refetch_interval: i64,
    /// Lifetime of authorization codes in seconds.
    pub code_ttl: i64,
    /// Longest lifetime of a `private_key_jwt` client assertion, in seconds.
    pub max_assertion_lifetime: i64,
}

/// The caller's address: the socket peer, or, when the peer is a trusted proxy, the address
/// that the nearest untrusted hop presented. `X-Forwarded-For` is walked right to left (each
/// proxy appends its own peer) through trusted proxies only; the walk stops at the first entry
/// that is not an address, because everything left of it was written by whoever wrote that
/// entry, not by a trusted proxy. The caller is then taken to be the last trusted hop reached,
/// so a spoofed address hidden behind garbage is never believed.
pub fn client_ip(peer: IpAddr, headers: &warp::http::HeaderMap, trusted_proxies: &[Cidr]) -> IpAddr {
    if !cidr::any_contains(trusted_proxies, peer) {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap_or(""))
        .flat_map(|v| v.split(','))
        .collect();
    let mut nearest = peer;
    for entry in entries.into_iter().rev() {
        let Some(addr) = forwarded_address(entry) else {
            return nearest;
        };
        if !cidr::any_contains(trusted_proxies, addr) {
            return addr;
        }
        nearest = addr;
    }
    nearest
}

/// One `X-Forwarded-For` entry: an address, or an address with a port (`1.2.3.4:80`,
/// `[2001:db8::1]:443`, as some proxies write them).
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry.parse().ok().or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// A JSON response with a status.
pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    let mut resp = body.into_response();
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// An error body in RFC 6749's shape.
pub fn error(status: StatusCode, code: &str, description: &str) -> Response {
    json_response(status, serde_json::json!({"error": code, "error_description": description}).to_string())
}

/// A request as warp hands it over, before its body is read.
struct Incoming {
    method: Method,
    path: warp::path::FullPath,
    query: String,
    headers: warp::http::HeaderMap,
    peer: Option<PeerAddr>,
    body_limits: Option<body::BodyLimits>,
}

async fn dispatch(
    state: AppState,
    incoming: Incoming,
    body: impl futures::Stream<Item = Result<impl Buf, warp::Error>>,
) -> Result<Response, Infallible> {
    let Incoming { method, path, query, headers, peer, body_limits } = incoming;
    let started = std::time::Instant::now();
    let peer_ip = peer.map(|p| p.0.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let ip = client_ip(peer_ip, &headers, &state.trusted_proxies);
    let identity_endpoint = match path.as_str() {
        paths::LOGIN => Some(("login", None)),
        paths::TOKEN_RENEW => Some(("token_renew", Some(TokenOp::Renew))),
        paths::TOKEN_REVOKE => Some(("token_revoke", Some(TokenOp::Revoke))),
        paths::TOKEN_LOOKUP => Some(("token_lookup", Some(TokenOp::Lookup))),
        _ => None,
    };
    // Every body is read (bounded in size and time) before anything is answered, so that no
    // answer is sent over unread bytes (see `body`).
    let body::BodyLimits { deadline, budget } = body_limits.unwrap_or_else(|| body::BodyLimits {
        deadline: limits::ConnLimits::default().body_read_timeout,
        budget: body::BodyBudget::unbounded(),
    });
    let declared = body::content_length(&headers);
    // `_held` keeps the body's share of the budget until the answer is made.
    let body::Body { bytes, held: _held } =
        match body::read(Box::pin(body), identity_api::MAX_BODY_BYTES, deadline, &budget, declared).await {
            Ok(body) => body,
            Err(e) => {
                state.metrics.connection_rejected("api", e.reason());
                let (resp, label) = match identity_endpoint {
                    Some((label, _)) => {
                        (e.response(|status, msg| api_error(status.as_u16(), e.api_code(), msg)), label)
                    }
                    None => {
                        let label = paths::route(path.as_str()).map_or("unknown", |r| r.endpoint.label());
                        (e.response(|status, msg| error(status, e.oauth_code(), msg)), label)
                    }
                };
                state.metrics.request(label, resp.status().as_u16(), started.elapsed());
                return Ok(resp);
            }
        };
    let (resp, label) = match identity_endpoint {
        Some((label, op)) => {
            let allowed = if op == Some(TokenOp::Lookup) { Method::GET } else { Method::POST };
            let resp = if method != allowed && !(op == Some(TokenOp::Lookup) && method == Method::POST) {
                let mut r = api_error(405, "method_not_allowed", &format!("use {allowed}"));
                if let Ok(v) = HeaderValue::from_str(allowed.as_str()) {
                    r.headers_mut().insert(header::ALLOW, v);
                }
                r
            } else {
                let request = Request { method: &method, query: &query, headers: &headers, body: &bytes, peer: ip };
                match op {
                    None => identity_api::login(&state, &request).await,
                    Some(op) => identity_api::token_operation(&state, op, &request).await,
                }
            };
            (resp, label)
        }
        None => match paths::route(path.as_str()) {
            Some(route) => {
                let label = route.endpoint.label();
                // One snapshot for the whole request: the provider and everything it refers to.
                let dir = state.directory.load();
                let provider = dir.as_ref().and_then(|d| d.provider(route.namespace, route.provider).cloned());
                let request = Request { method: &method, query: &query, headers: &headers, body: &bytes, peer: ip };
                let resp = match (dir, provider) {
                    (Some(dir), Some(provider)) => {
                        oidc_api::handle(&state, &dir, &provider, route.endpoint, &request).await
                    }
                    (None, _) => error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "temporarily_unavailable",
                        "the directory is not built yet",
                    ),
                    (Some(_), None) => {
                        let msg = format!("no provider {:?} in namespace {:?}", route.provider, route.namespace);
                        error(StatusCode::NOT_FOUND, "not_found", &msg)
                    }
                };
                (resp, label)
            }
            None => (error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"), "unknown"),
        },
    };
    state.metrics.request(label, resp.status().as_u16(), started.elapsed());
    Ok(resp)
}

/// The protocol routes.
pub fn api_routes(state: AppState) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let incoming = warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<PeerAddr>())
        .and(warp::ext::optional::<body::BodyLimits>())
        .map(|method, path, query, headers, peer, body_limits: Option<body::BodyLimits>| Incoming {
            method,
            path,
            query,
            headers,
            peer,
            body_limits,
        });
    warp::any()
        .map(move || state.clone())
        .and(incoming)
        .and(warp::body::stream())
        .then(dispatch)
        .map(|r: Result<Response, Infallible>| match r {
            Ok(resp) => resp,
            Err(never) => match never {},
        })
        .recover(|_: warp::Rejection| async {
            Ok::<Response, Infallible>(error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the request could not be read",
            ))
        })
        .unify()
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn management_routes(state: AppState) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    warp::path::full().map(move |path: warp::path::FullPath| match path.as_str() {
        paths::HEALTHZ => "ok".into_response(),
        paths::READYZ if state.directory.is_ready() && state.tokens.is_up() => "ready".into_response(),
        paths::READYZ => {
            let why = if state.directory.is_ready() {
                format!(
                    "not ready: the session store does not answer: {}",
                    state.tokens.down_cause().unwrap_or_else(|| "no answer".into())
                )
            } else {
                "not ready: no directory snapshot yet".to_owned()
            };
            let mut r = why.into_response();
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r
        }
        paths::METRICS => {
            let mut r = state.metrics.render(unix_now_ms()).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            r
        }
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    })
}

/// Accepts connections forever, over TLS when an acceptor is given, and serves `filter` on
/// each with HTTP/1.1 or HTTP/2, within the default [`limits::ConnLimits`] (the servers
/// themselves start [`conn::serve`] with the flags' limits). The peer address reaches
/// handlers as [`PeerAddr`].
pub async fn serve<F>(listener: TcpListener, tls: Option<TlsAcceptor>, filter: F)
where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let limits = conn::Listener {
        name: "api",
        limits: limits::ConnLimits::default(),
        exempt: Vec::new(),
        metrics: Arc::default(),
    };
    conn::serve(listener, tls, filter, limits).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let proxies = vec![Cidr::parse("10.0.0.0/8").unwrap()];
        let mut headers = warp::http::HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9, 198.51.100.7, 10.1.1.1"));
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(client_ip(peer, &headers, &proxies), "198.51.100.7".parse::<IpAddr>().unwrap());
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_ip(stranger, &headers, &proxies), stranger, "spoofed header ignored");
        assert_eq!(client_ip(peer, &warp::http::HeaderMap::new(), &proxies), peer);
    }

    fn xff(values: &[&str]) -> warp::http::HeaderMap {
        let mut headers = warp::http::HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn the_forwarded_walk_stops_at_the_first_entry_it_cannot_parse() {
        let proxies = vec![Cidr::parse("10.0.0.0/8").unwrap()];
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // A spoofed address hidden behind garbage is not believed: the caller is the last
        // trusted hop reached.
        assert_eq!(client_ip(peer, &xff(&["203.0.113.9, unknown, 10.1.1.1"]), &proxies), ip("10.1.1.1"));
        assert_eq!(client_ip(peer, &xff(&["203.0.113.9, not-an-ip"]), &proxies), peer);
        assert_eq!(client_ip(peer, &xff(&["203.0.113.9,, 10.1.1.1"]), &proxies), ip("10.1.1.1"), "empty entry");
        // Garbage left of the first untrusted address does not matter.
        assert_eq!(client_ip(peer, &xff(&["garbage, 198.51.100.7, 10.1.1.1"]), &proxies), ip("198.51.100.7"));
        // Several header lines are one list, in order.
        assert_eq!(client_ip(peer, &xff(&["203.0.113.9, junk", "10.1.1.1"]), &proxies), ip("10.1.1.1"));
        assert_eq!(client_ip(peer, &xff(&["junk", "198.51.100.7"]), &proxies), ip("198.51.100.7"));
        // Entries with ports, as some proxies write them.
        assert_eq!(client_ip(peer, &xff(&["198.51.100.7:4711, 10.1.1.1"]), &proxies), ip("198.51.100.7"));
        assert_eq!(client_ip(peer, &xff(&["[2001:db8::7]:443"]), &proxies), ip("2001:db8::7"));
        // Only trusted proxies all the way: the left-most one is the nearest known hop.
        assert_eq!(client_ip(peer, &xff(&["10.9.9.9, 10.1.1.1"]), &proxies), ip("10.9.9.9"));
    }
}

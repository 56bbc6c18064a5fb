//! HTTP serving: the protocol endpoints on one listener, health and metrics on another.
//!
//! Handlers read the current [`Directory`](crate::directory::Directory) snapshot and never
//! touch the inputs or the Kubernetes API.

pub mod metrics;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;
use warp::Filter;
use warp::http::{HeaderValue, Method, StatusCode, header};
use warp::reply::{Reply, Response};

use crate::directory::SharedDirectory;
use crate::paths::{self, ProviderEndpoint};
pub use metrics::Metrics;

/// The socket peer of a request, set by the accept loop (login checks trusted IPs with it).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub directory: Arc<SharedDirectory>,
    pub metrics: Arc<Metrics>,
}

/// A JSON response with a status.
fn json(status: StatusCode, body: String) -> Response {
    let mut resp = body.into_response();
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// An error body in RFC 6749's shape.
pub fn error(status: StatusCode, code: &str, description: &str) -> Response {
    json(status, serde_json::json!({"error": code, "error_description": description}).to_string())
}

/// Answers one protocol request.
pub fn handle(state: &AppState, method: &Method, path: &str) -> (Response, &'static str) {
    let Some(route) = paths::route(path) else {
        return (error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"), "unknown");
    };
    let label = route.endpoint.label();
    let Some(dir) = state.directory.load() else {
        return (
            error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "the directory is not built yet"),
            label,
        );
    };
    let Some(provider) = dir.provider(route.namespace, route.provider) else {
        let msg = format!("no provider {:?} in namespace {:?}", route.provider, route.namespace);
        return (error(StatusCode::NOT_FOUND, "not_found", &msg), label);
    };
    let resp = match route.endpoint {
        ProviderEndpoint::Discovery | ProviderEndpoint::Jwks if method != Method::GET && method != Method::HEAD => {
            let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "invalid_request", "use GET");
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            r
        }
        ProviderEndpoint::Discovery => {
            let mut r = json(StatusCode::OK, provider.discovery_json.to_string());
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
            r
        }
        ProviderEndpoint::Jwks => {
            let mut r = json(StatusCode::OK, provider.jwks_json.to_string());
            let cache = format!("max-age={}", provider.jwks_max_age);
            if let Ok(v) = HeaderValue::from_str(&cache) {
                r.headers_mut().insert(header::CACHE_CONTROL, v);
            }
            r
        }
        ProviderEndpoint::Authorize | ProviderEndpoint::Token | ProviderEndpoint::Userinfo => error(
            StatusCode::NOT_IMPLEMENTED,
            "temporarily_unavailable",
            "this endpoint is not served by this version of oidc-operator yet",
        ),
    };
    (resp, label)
}

/// The protocol routes.
pub fn api_routes(state: AppState) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    warp::method().and(warp::path::full()).map(move |method: Method, path: warp::path::FullPath| {
        let (resp, label) = handle(&state, &method, path.as_str());
        state.metrics.request(label, resp.status().as_u16());
        resp
    })
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn management_routes(state: AppState) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    warp::path::full().map(move |path: warp::path::FullPath| match path.as_str() {
        paths::HEALTHZ => "ok".into_response(),
        paths::READYZ if state.directory.is_ready() => "ready".into_response(),
        paths::READYZ => {
            let mut r = "not ready: no directory snapshot yet".into_response();
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r
        }
        paths::METRICS => {
            let mut r = state.metrics.render().into_response();
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
/// each with HTTP/1.1 or HTTP/2. The peer address reaches handlers as [`PeerAddr`].
pub async fn serve<F>(listener: TcpListener, tls: Option<TlsAcceptor>, filter: F)
where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = warp::service(filter.clone());
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                let mut service = service.clone();
                service.call(req)
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => builder.serve_connection(TokioIo::new(s), service).await,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => builder.serve_connection(TokioIo::new(stream), service).await,
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

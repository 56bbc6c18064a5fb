//! Reading a request body within a size and a time bound, and answering one that breaks them
//! so that the caller reads the answer instead of a connection reset.
//!
//! A server that answers before reading what the caller is still sending, then closes, makes
//! the kernel reset the connection, and a reset discards the answer on the caller's side. So an
//! oversized body is read and discarded up to [`DISCARD_LIMIT`] within the same deadline, and
//! the answer says `Connection: close`.

use std::time::Duration;

use bytes::Buf;
use futures::{Stream, StreamExt};
use tokio::time::{Instant, timeout_at};
use warp::http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::reply::Response;

/// The most of an oversized body read and thrown away so that its 413 reaches the caller;
/// beyond it (or a `Content-Length` beyond it) the answer is sent and the connection closed
/// at once, and the caller may see a reset instead.
pub const DISCARD_LIMIT: u64 = 16 * 1024 * 1024;

/// How long a request's body may take to arrive, from the end of its headers: set on every
/// request by the accept loop ([`super::conn`]).
#[derive(Clone, Copy, Debug)]
pub struct BodyDeadline(pub Duration);

/// Why a body was not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is too large")]
    TooLarge,
    #[error("the request body did not arrive in time")]
    Timeout,
    #[error("the request body could not be read")]
    Broken,
}

impl BodyError {
    pub fn status(self) -> StatusCode {
        match self {
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::Broken => StatusCode::BAD_REQUEST,
        }
    }

    /// The `reason` label of the connection closed after this answer.
    pub fn reason(self) -> &'static str {
        match self {
            Self::TooLarge => "body_too_large",
            Self::Timeout => "body_timeout",
            Self::Broken => "body_error",
        }
    }

    /// The code of the login API's `{statusCode, error, message}` shape.
    pub fn api_code(self) -> &'static str {
        match self {
            Self::TooLarge => "payload_too_large",
            Self::Timeout => "request_timeout",
            Self::Broken => "invalid_request",
        }
    }

    /// The answer: `shape` builds the endpoint's JSON error from (status, message); the
    /// connection is closed after it, since the rest of the body is not read.
    pub fn response(self, shape: impl FnOnce(StatusCode, &str) -> Response) -> Response {
        let mut r = shape(self.status(), &self.to_string());
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    }
}

/// The declared `Content-Length`, when there is one and it is a number.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Reads a body of at most `limit` bytes before `deadline` has passed. An oversized body is
/// read on and discarded (see the module doc) before `TooLarge` is returned.
pub async fn read<S, B>(
    mut stream: S,
    limit: usize,
    deadline: Duration,
    declared: Option<u64>,
) -> Result<Vec<u8>, BodyError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let end = Instant::now() + deadline;
    let limit_u64 = u64::try_from(limit).unwrap_or(u64::MAX);
    if let Some(len) = declared.filter(|len| *len > limit_u64) {
        if len <= DISCARD_LIMIT {
            discard(&mut stream, end, 0).await;
        }
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    loop {
        match timeout_at(end, stream.next()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => return Ok(body),
            Ok(Some(Err(_))) => return Err(BodyError::Broken),
            Ok(Some(Ok(mut chunk))) => {
                if body.len().saturating_add(chunk.remaining()) > limit {
                    let seen = u64::try_from(body.len() + chunk.remaining()).unwrap_or(u64::MAX);
                    discard(&mut stream, end, seen).await;
                    return Err(BodyError::TooLarge);
                }
                while chunk.has_remaining() {
                    let part = chunk.chunk();
                    let n = part.len();
                    body.extend_from_slice(part);
                    chunk.advance(n);
                }
            }
        }
    }
}

/// Reads and drops the rest of a body, up to [`DISCARD_LIMIT`] bytes in all and until `end`.
async fn discard<S, B>(stream: &mut S, end: Instant, mut seen: u64)
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    while seen <= DISCARD_LIMIT {
        match timeout_at(end, stream.next()).await {
            Ok(Some(Ok(chunk))) => seen = seen.saturating_add(u64::try_from(chunk.remaining()).unwrap_or(u64::MAX)),
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn chunks(sizes: &[usize], pulled: &Arc<AtomicUsize>) -> impl Stream<Item = Result<bytes::Bytes, warp::Error>> {
        let pulled = Arc::clone(pulled);
        futures::stream::iter(sizes.to_vec()).map(move |n| {
            pulled.fetch_add(n, Ordering::SeqCst);
            Ok(bytes::Bytes::from(vec![b'x'; n]))
        })
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_read_whole() {
        let pulled = Arc::new(AtomicUsize::new(0));
        let body = read(Box::pin(chunks(&[3, 4], &pulled)), 7, Duration::from_secs(1), None).await;
        assert_eq!(body, Ok(b"xxxxxxx".to_vec()));
    }

    #[tokio::test]
    async fn an_oversized_body_is_drained_so_the_answer_is_not_lost_to_a_reset() {
        let pulled = Arc::new(AtomicUsize::new(0));
        let body = read(Box::pin(chunks(&[5, 5, 1000, 1000], &pulled)), 8, Duration::from_secs(1), None).await;
        assert_eq!(body, Err(BodyError::TooLarge));
        assert_eq!(pulled.load(Ordering::SeqCst), 2010, "everything the caller sent was read");
    }

    #[tokio::test]
    async fn a_declared_length_beyond_the_discard_limit_is_not_read_at_all() {
        let pulled = Arc::new(AtomicUsize::new(0));
        let huge = Some(DISCARD_LIMIT + 1);
        let body = read(Box::pin(chunks(&[5], &pulled)), 8, Duration::from_secs(1), huge).await;
        assert_eq!(body, Err(BodyError::TooLarge));
        assert_eq!(pulled.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_body_that_never_ends_times_out() {
        let stalled = futures::stream::iter([Ok::<_, warp::Error>(bytes::Bytes::from_static(b"ab"))])
            .chain(futures::stream::pending());
        let started = std::time::Instant::now();
        let body = read(Box::pin(stalled), 64, Duration::from_millis(100), None).await;
        assert_eq!(body, Err(BodyError::Timeout));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn refusals_close_the_connection() {
        let r = BodyError::TooLarge.response(|s, m| super::super::error(s, "invalid_request", m));
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(r.headers()[header::CONNECTION], "close");
    }
}

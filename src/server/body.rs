//! Reading a request body within a size and a time bound, and answering one that breaks them
//! so that the caller reads the answer instead of a connection reset.
//!
//! A server that answers before reading what the caller is still sending, then closes, makes
//! the kernel reset the connection, and a reset discards the answer on the caller's side. So an
//! oversized body is read and discarded up to [`DISCARD_LIMIT`] within the same deadline, and
//! the answer says `Connection: close`.
//!
//! The bytes of bodies being read are counted against one budget per listener
//! (`--max-inflight-body-bytes`): with the budget spent a request is answered 503 at once
//! instead of waiting, so many slow bodies cannot hold unbounded memory between them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use futures::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, timeout_at};
use warp::http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::reply::Response;

/// The most of an oversized body read and thrown away so that its 413 reaches the caller;
/// beyond it (or a `Content-Length` beyond it) the answer is sent and the connection closed
/// at once, and the caller may see a reset instead.
pub const DISCARD_LIMIT: u64 = 16 * 1024 * 1024;

/// What bounds a request's body: how long it may take to arrive, from the end of its headers,
/// and the listener's budget of body bytes. Set on every request by the accept loop
/// ([`super::conn`]).
#[derive(Clone, Debug)]
pub struct BodyLimits {
    pub deadline: Duration,
    pub budget: BodyBudget,
}

/// Request-body bytes held in memory at once across a listener's connections.
#[derive(Clone, Debug)]
pub struct BodyBudget(Option<Arc<Semaphore>>);

impl BodyBudget {
    pub fn new(bytes: usize) -> Self {
        Self(Some(Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS)))))
    }

    /// No budget (callers without an accept loop).
    pub fn unbounded() -> Self {
        Self(None)
    }

    /// Bytes still free (`None`: unbounded).
    pub fn available(&self) -> Option<usize> {
        self.0.as_ref().map(|s| s.available_permits())
    }

    /// Adds `n` bytes to `held`, or says the budget is spent; never waits.
    fn take(&self, n: usize, held: &mut Held) -> Result<(), BodyError> {
        let Some(semaphore) = &self.0 else { return Ok(()) };
        if n == 0 {
            return Ok(());
        }
        let n = u32::try_from(n).map_err(|_| BodyError::Busy)?;
        let permit = Arc::clone(semaphore).try_acquire_many_owned(n).map_err(|_| BodyError::Busy)?;
        match &mut held.0 {
            Some(p) => p.merge(permit),
            None => held.0 = Some(permit),
        }
        Ok(())
    }
}

/// Budget bytes a read body holds; given back when dropped, so keep it while the bytes live.
#[derive(Debug, Default)]
pub struct Held(Option<OwnedSemaphorePermit>);

impl Held {
    fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }
}

/// A body read whole, with the budget it holds.
#[derive(Debug)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub held: Held,
}

/// Why a body was not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is too large")]
    TooLarge,
    #[error("the request body did not arrive in time")]
    Timeout,
    #[error("the request body could not be read")]
    Broken,
    #[error("the server is reading too many request bodies at once; retry shortly")]
    Busy,
}

impl BodyError {
    pub fn status(self) -> StatusCode {
        match self {
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::Broken => StatusCode::BAD_REQUEST,
            Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `reason` label of the connection closed after this answer.
    pub fn reason(self) -> &'static str {
        match self {
            Self::TooLarge => "body_too_large",
            Self::Timeout => "body_timeout",
            Self::Broken => "body_error",
            Self::Busy => "body_budget",
        }
    }

    /// The code of the login API's `{statusCode, error, message}` shape.
    pub fn api_code(self) -> &'static str {
        match self {
            Self::TooLarge => "payload_too_large",
            Self::Timeout => "request_timeout",
            Self::Broken => "invalid_request",
            Self::Busy => "temporarily_unavailable",
        }
    }

    /// The RFC 6749 error code (authorize, token, userinfo).
    pub fn oauth_code(self) -> &'static str {
        match self {
            Self::Busy => "temporarily_unavailable",
            Self::TooLarge | Self::Timeout | Self::Broken => "invalid_request",
        }
    }

    /// The answer: `shape` builds the endpoint's JSON error from (status, message); the
    /// connection is closed after it, since the rest of the body is not read.
    pub fn response(self, shape: impl FnOnce(StatusCode, &str) -> Response) -> Response {
        let mut r = shape(self.status(), &self.to_string());
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        if self == Self::Busy {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

/// The declared `Content-Length`, when there is one and it is a number.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Reads a body of at most `limit` bytes before `deadline` has passed, holding its bytes in
/// `budget` (a declared length at once, otherwise as they arrive). An oversized body, or one
/// the budget cannot hold, is read on and discarded (see the module doc) before `TooLarge` or
/// `Busy` is returned.
pub async fn read<S, B>(
    mut stream: S,
    limit: usize,
    deadline: Duration,
    budget: &BodyBudget,
    declared: Option<u64>,
) -> Result<Body, BodyError>
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
    let mut held = Held::default();
    if let Some(len) = declared {
        // Within `limit`, checked above.
        if let Err(e) = budget.take(usize::try_from(len).unwrap_or(usize::MAX), &mut held) {
            discard(&mut stream, end, 0).await;
            return Err(e);
        }
    }
    let mut body = Vec::new();
    loop {
        match timeout_at(end, stream.next()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => return Ok(Body { bytes: body, held }),
            Ok(Some(Err(_))) => return Err(BodyError::Broken),
            Ok(Some(Ok(mut chunk))) => {
                let total = body.len().saturating_add(chunk.remaining());
                if total > limit {
                    let seen = u64::try_from(total).unwrap_or(u64::MAX);
                    discard(&mut stream, end, seen).await;
                    return Err(BodyError::TooLarge);
                }
                if let Err(e) = budget.take(total.saturating_sub(held.bytes()), &mut held) {
                    drop(held);
                    discard(&mut stream, end, u64::try_from(total).unwrap_or(u64::MAX)).await;
                    return Err(e);
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
        let body = read(Box::pin(chunks(&[3, 4], &pulled)), 7, Duration::from_secs(1), &unbounded(), None).await;
        assert_eq!(body.map(|b| b.bytes), Ok(b"xxxxxxx".to_vec()));
    }

    #[tokio::test]
    async fn an_oversized_body_is_drained_so_the_answer_is_not_lost_to_a_reset() {
        let pulled = Arc::new(AtomicUsize::new(0));
        let body =
            read(Box::pin(chunks(&[5, 5, 1000, 1000], &pulled)), 8, Duration::from_secs(1), &unbounded(), None).await;
        assert_eq!(body.map(|b| b.bytes), Err(BodyError::TooLarge));
        assert_eq!(pulled.load(Ordering::SeqCst), 2010, "everything the caller sent was read");
    }

    #[tokio::test]
    async fn a_declared_length_beyond_the_discard_limit_is_not_read_at_all() {
        let pulled = Arc::new(AtomicUsize::new(0));
        let huge = Some(DISCARD_LIMIT + 1);
        let body = read(Box::pin(chunks(&[5], &pulled)), 8, Duration::from_secs(1), &unbounded(), huge).await;
        assert_eq!(body.map(|b| b.bytes), Err(BodyError::TooLarge));
        assert_eq!(pulled.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_body_that_never_ends_times_out() {
        let stalled = futures::stream::iter([Ok::<_, warp::Error>(bytes::Bytes::from_static(b"ab"))])
            .chain(futures::stream::pending());
        let started = std::time::Instant::now();
        let body = read(Box::pin(stalled), 64, Duration::from_millis(100), &unbounded(), None).await;
        assert_eq!(body.map(|b| b.bytes), Err(BodyError::Timeout));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    fn unbounded() -> BodyBudget {
        BodyBudget::unbounded()
    }

    #[tokio::test]
    async fn bodies_hold_their_bytes_in_the_budget_until_dropped() {
        let budget = BodyBudget::new(10);
        let pulled = Arc::new(AtomicUsize::new(0));
        let first = read(Box::pin(chunks(&[3, 4], &pulled)), 64, Duration::from_secs(1), &budget, None).await.unwrap();
        assert_eq!(budget.available(), Some(3));
        let declared = read(Box::pin(chunks(&[3], &pulled)), 64, Duration::from_secs(1), &budget, Some(3)).await;
        assert_eq!(declared.as_ref().map(|b| b.bytes.len()), Ok(3));
        assert_eq!(budget.available(), Some(0));
        drop((first, declared));
        assert_eq!(budget.available(), Some(10), "everything is given back");
    }

    #[tokio::test]
    async fn a_spent_budget_answers_busy_at_once_and_gives_back_what_it_took() {
        let budget = BodyBudget::new(6);
        let pulled = Arc::new(AtomicUsize::new(0));
        let holder = read(Box::pin(chunks(&[4], &pulled)), 64, Duration::from_secs(1), &budget, None).await.unwrap();
        // Declared beyond what is left: refused before any byte is buffered.
        let started = std::time::Instant::now();
        let declared = read(Box::pin(chunks(&[5], &pulled)), 64, Duration::from_secs(5), &budget, Some(5)).await;
        assert_eq!(declared.map(|b| b.bytes), Err(BodyError::Busy));
        assert!(started.elapsed() < Duration::from_secs(1));
        // Undeclared: refused at the chunk that does not fit, and the first chunk's share is
        // given back.
        let chunked = read(Box::pin(chunks(&[2, 2], &pulled)), 64, Duration::from_secs(1), &budget, None).await;
        assert_eq!(chunked.map(|b| b.bytes), Err(BodyError::Busy));
        assert_eq!(budget.available(), Some(2));
        drop(holder);
        assert_eq!(budget.available(), Some(6));
        let r = BodyError::Busy.response(|s, m| super::super::error(s, BodyError::Busy.oauth_code(), m));
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn refusals_close_the_connection() {
        let r = BodyError::TooLarge.response(|s, m| super::super::error(s, "invalid_request", m));
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(r.headers()[header::CONNECTION], "close");
    }
}

//! Request bodies, bounded in time and in memory.
//!
//! - [`DeadlineBody`]: a body must arrive whole within `--body-timeout` of its head, on every
//!   route; past it the read fails with [`BodyTimedOut`], which the JSON extractor answers
//!   with 408. A total deadline, not one between frames: a body dripped a byte at a time
//!   would never trip a per-frame one.
//! - [`BodyBudget`]: the memory that requests with bodies take at once, over all requests, is
//!   at most `--max-body-memory`. A request reserves its share before its body is read
//!   ([`MEMORY_PER_BODY_BYTE`] times its Content-Length, or `--max-body-bytes` when it has
//!   none) and gets 503 with Retry-After when the share is not free. The share is held until
//!   the response is sent: the body's bytes are not its only memory, the task parsed from
//!   them, its copies on the way to the store and the answer that echoes it are too.
//!   Reservations count in KiB, so a 32-bit permit count covers any size.
//!
//! What the allocator keeps after large bodies is `heap.rs`'s.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use http_body::{Body as _, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use super::conn::GuardedBody;
use super::error::ApiError;
use super::extract::BodyLimit;
use super::gate::{Entry, Gate};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error a [`DeadlineBody`] fails with once its deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("the body did not arrive within {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// Finds a [`BodyTimedOut`] among an error's causes.
pub fn timed_out(error: &(dyn std::error::Error + 'static)) -> Option<Duration> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(BodyTimedOut(limit)) = error.downcast_ref::<BodyTimedOut>() {
            return Some(*limit);
        }
        cause = error.source();
    }
    None
}

/// A request body that fails once `limit` has passed since the request's head arrived.
pub struct DeadlineBody<B> {
    inner: B,
    started: Instant,
    limit: Duration,
    // Set up at the first wait only: most bodies are empty or already buffered, and need
    // no timer.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<B> DeadlineBody<B> {
    pub fn new(inner: B, limit: Duration) -> DeadlineBody<B> {
        DeadlineBody {
            inner,
            started: Instant::now(),
            limit,
            deadline: None,
        }
    }
}

impl<B> http_body::Body for DeadlineBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|frame| frame.map_err(Into::into))),
            Poll::Pending => {
                let due = this.started + this.limit;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimedOut(this.limit).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How much memory a request holds at its worst moment per byte of its body, for the body
/// budget: while the store commits a submit there are, besides the parsed input that the
/// task keeps, its JSON text for the row and SQLite's own copy of that text while the
/// statement runs; then the answer, which echoes the task, is serialized beside it. Measured
/// with bench/bodies (docs/benchmarks.md).
pub const MEMORY_PER_BODY_BYTE: u64 = 3;

/// The memory that requests with bodies may take at once. Cloning shares the budget.
#[derive(Clone)]
pub struct BodyBudget {
    // A semaphore of KiB: a reservation is an owned permit that travels with its request
    // and returns its KiB when dropped, however the request ends.
    free: Arc<Semaphore>,
    capacity_kib: u32,
}

/// A request's share of the [`BodyBudget`]: in its extensions while it is served (the JSON
/// extractor may find that the parsed body needs more, see [`BodyShare::cover`]) and in its
/// response body until that is sent or dropped. The KiB return when the last clone goes.
#[derive(Clone)]
pub struct BodyShare {
    budget: BodyBudget,
    held: Arc<Mutex<OwnedSemaphorePermit>>,
}

impl BodyShare {
    /// Makes the share cover `bytes` of memory in all, taking what it lacks from the budget;
    /// `false` when that much is not free. A parsed body can take far more than its bytes:
    /// `[0,0,0,…]` is 2 bytes per number as text and 32 or more once parsed.
    pub fn cover(&self, bytes: u64) -> bool {
        let kib = self.budget.kib(bytes) as usize;
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let Some(lacking) = kib.checked_sub(held.num_permits()).filter(|&n| n > 0) else {
            return true;
        };
        match self
            .budget
            .free
            .clone()
            .try_acquire_many_owned(lacking as u32)
        {
            Ok(more) => {
                held.merge(more);
                true
            }
            Err(_) => false,
        }
    }
}

impl BodyBudget {
    pub fn new(max_bytes: usize) -> BodyBudget {
        let capacity_kib = u32::try_from(max_bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1);
        BodyBudget {
            free: Arc::new(Semaphore::new(capacity_kib as usize)),
            capacity_kib,
        }
    }

    /// `bytes` in KiB of the budget; at most the whole budget, so that a request larger than
    /// the budget can still pass alone.
    fn kib(&self, bytes: u64) -> u32 {
        u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(self.capacity_kib)
    }

    /// Takes the memory of a body of `bytes` from the budget now, or `None` when that much
    /// is not free.
    fn try_reserve(&self, bytes: u64) -> Option<BodyShare> {
        let kib = self.kib(bytes.saturating_mul(MEMORY_PER_BODY_BYTE));
        let permit = self.free.clone().try_acquire_many_owned(kib).ok()?;
        Some(BodyShare {
            budget: self.clone(),
            held: Arc::new(Mutex::new(permit)),
        })
    }
}

/// Middleware: reserves a request's share of the body budget before anything reads its
/// body, and keeps it until the response is sent; 503 when the budget has not that much
/// free. Requests without a body pass untouched.
#[derive(Clone)]
pub struct ReserveBodyMemory(pub BodyBudget);

impl Gate for ReserveBodyMemory {
    type Kept = Option<BodyShare>;

    fn enter(&self, mut request: Request) -> Entry<Option<BodyShare>> {
        let body = request.body();
        if body.is_end_stream() {
            return Entry::Pass(request, None);
        }
        // Without a length (chunked), the body may be as large as the per-request limit.
        let bytes = body.size_hint().exact().unwrap_or_else(|| {
            request
                .extensions()
                .get::<BodyLimit>()
                .map_or(u64::MAX, |limit| limit.0 as u64)
        });
        match self.0.try_reserve(bytes) {
            Some(share) => {
                request.extensions_mut().insert(share.clone());
                Entry::Pass(request, Some(share))
            }
            None => {
                // The body is left unread, so this connection cannot carry another request:
                // said, so that a client's pool does not send its next request down it.
                let mut refused = ApiError::BodyMemoryFull.into_response();
                refused
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                Entry::Answer(refused)
            }
        }
    }

    fn leave(share: Option<BodyShare>, response: Response) -> Response {
        match share {
            Some(share) => response.map(|body| Body::new(GuardedBody::new(body, share))),
            None => response,
        }
    }
}

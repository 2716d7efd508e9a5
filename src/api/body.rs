//! Request bodies, bounded in time and in memory.
//!
//! - [`DeadlineBody`]: a body must arrive whole within `--body-timeout` of its head, on every
//!   route; past it the read fails with [`BodyTimedOut`], which the JSON extractor answers
//!   with 408. A total deadline, not one between frames: a body dripped a byte at a time
//!   would never trip a per-frame one.
//! - [`BodyBudget`]: the bytes of bodies being read or parsed at once, over all requests, are
//!   at most `--max-body-memory`. A request reserves its share before its body is read (its
//!   Content-Length, or `--max-body-bytes` when it has none) and gets 503 with Retry-After
//!   when the share is not free; the JSON extractor gives the share back once it has parsed
//!   the body. Reservations count in KiB, so a 32-bit permit count covers any size.
//! - [`return_large_buffers_to_the_os`]: glibc keeps freed memory of large buffers in its
//!   arenas; bodies' buffers are taken from the OS and given back instead.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Body as _, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use super::error::ApiError;
use super::extract::BodyLimit;

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

/// The memory that request bodies may take at once. Cloning shares the budget.
#[derive(Clone)]
pub struct BodyBudget {
    // A semaphore of KiB: a reservation is an owned permit that travels with its request
    // and returns its KiB when dropped, however the request ends.
    free: Arc<Semaphore>,
    capacity_kib: u32,
}

/// A request's share of the [`BodyBudget`], held until its body is parsed. Clone because
/// request extensions must be; the share returns when the last clone is dropped.
#[derive(Clone)]
pub struct BodyReservation(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

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

    /// Takes `bytes` from the budget now, or `None` when that much is not free. A body
    /// larger than the whole budget takes the whole budget, so it can still pass alone.
    fn try_reserve(&self, bytes: u64) -> Option<BodyReservation> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(self.capacity_kib);
        let permit = self.free.clone().try_acquire_many_owned(kib).ok()?;
        Some(BodyReservation(Arc::new(permit)))
    }
}

/// Middleware: reserves a request's body bytes before anything reads them; 503 when the
/// budget has not that much free. Requests without a body pass untouched.
pub async fn reserve_body_memory(
    State(budget): State<BodyBudget>,
    mut request: Request,
    next: Next,
) -> Response {
    let body = request.body();
    if body.is_end_stream() {
        return next.run(request).await;
    }
    // Without a length (chunked), the body may be as large as the per-request limit.
    let bytes = body.size_hint().exact().unwrap_or_else(|| {
        request
            .extensions()
            .get::<BodyLimit>()
            .map_or(u64::MAX, |limit| limit.0 as u64)
    });
    match budget.try_reserve(bytes) {
        Some(reservation) => {
            request.extensions_mut().insert(reservation);
            next.run(request).await
        }
        None => ApiError::BodyMemoryFull.into_response(),
    }
}

/// Allocations from this size up are mapped from the OS and unmapped when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Makes glibc give the memory of large buffers (bodies, their parsed strings) back to the
/// OS when they are freed. Its default threshold for that starts at 128 KiB but rises to the
/// largest buffer freed so far (up to 32 MiB), after which 1 MB bodies come from its heap and
/// stay there: 100 concurrent 1 MB submits left ~490 MB of RSS behind for good
/// (bench/bodies). Setting the threshold fixes it where it starts. Process-wide; a no-op on
/// other allocators.
pub fn return_large_buffers_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator; any value is valid to pass.
    if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) } != 1 {
        tracing::warn!("cannot set the allocator's mmap threshold");
    }
}

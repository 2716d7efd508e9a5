//! The deadlines of one connection: a request's head must arrive within `--header-timeout`,
//! and a connection with no request in flight is closed after `--idle-timeout`.
//!
//! hyper's own `header_read_timeout` also runs between keep-alive requests, so it would close
//! an idle connection after the (short) header timeout; and hyper has no idle timeout for
//! HTTP/1. So the connection's socket is wrapped in [`TimedIo`], which knows one of three
//! phases and fails the read that outlives its phase's deadline; hyper then drops the
//! connection:
//!
//! - `Head`: from the accept, or from the first byte after an idle spell, until hyper has the
//!   whole head and calls the service — `--header-timeout`.
//! - `Busy`: from the service call until the response body is dropped (sent, or abandoned).
//!   No deadline: a long-poll or an event stream is busy for as long as it runs, and reading
//!   its body has its own deadline (`body.rs`).
//! - `Idle`: a response is done and no new byte has come — `--idle-timeout`.
//!
//! The service marks a request in flight with an [`InFlight`] guard that travels inside the
//! response body ([`GuardedBody`]). No HTTP routing is known here.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use futures::task::AtomicWaker;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The two deadlines a connection lives by.
#[derive(Debug, Clone, Copy)]
pub struct ConnTimeouts {
    pub header: Duration,
    pub idle: Duration,
}

/// What the socket side and the service side of one connection share: how many requests are
/// in flight, and the connection task's waker, so that the end of the last request wakes the
/// reader to start the idle deadline.
#[derive(Debug, Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    reader: AtomicWaker,
}

impl Activity {
    /// Marks a request in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }
}

/// One request in flight on its connection; dropping it may start the idle deadline.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.reader.wake();
        }
    }
}

/// A response body that holds a guard until it is dropped (sent, or abandoned): with an
/// [`InFlight`], its request stays in flight; with a body reservation (`body.rs`), the
/// request's share of the body budget stays taken.
pub struct GuardedBody<G> {
    body: Body,
    _guard: G,
}

impl<G> GuardedBody<G> {
    pub fn new(body: Body, guard: G) -> GuardedBody<G> {
        GuardedBody {
            body,
            _guard: guard,
        }
    }
}

impl<G: Unpin> http_body::Body for GuardedBody<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head,
    Busy,
    Idle,
}

/// A socket whose reads fail with `TimedOut` once the current phase outlives its deadline.
pub struct TimedIo<T> {
    inner: T,
    activity: Arc<Activity>,
    timeouts: ConnTimeouts,
    phase: Phase,
    // Boxed so that `TimedIo` is `Unpin`; reset in place at each phase change.
    deadline: Pin<Box<Sleep>>,
}

impl<T> TimedIo<T> {
    /// Wraps a socket just accepted: its first head is due within the header timeout.
    pub fn new(inner: T, activity: Arc<Activity>, timeouts: ConnTimeouts) -> TimedIo<T> {
        TimedIo {
            inner,
            activity,
            timeouts,
            phase: Phase::Head,
            deadline: Box::pin(tokio::time::sleep(timeouts.header)),
        }
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        let limit = match phase {
            Phase::Head => self.timeouts.header,
            Phase::Idle => self.timeouts.idle,
            Phase::Busy => return,
        };
        self.deadline.as_mut().reset(Instant::now() + limit);
    }

    /// Follows the service side: a request in flight makes the connection busy; the end of
    /// the last one makes it idle.
    fn observe(&mut self) {
        match (self.phase, self.activity.busy()) {
            (Phase::Busy, true) | (Phase::Head | Phase::Idle, false) => {}
            (_, true) => self.enter(Phase::Busy),
            (Phase::Busy, false) => self.enter(Phase::Idle),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.observe();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                // The first byte of a new request starts its head's deadline.
                if buf.filled().len() > before && this.phase == Phase::Idle {
                    this.enter(Phase::Head);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                // Registered before looking again, so an `InFlight` dropped in between
                // still wakes this reader.
                this.activity.reader.register(cx.waker());
                this.observe();
                if this.phase != Phase::Busy && this.deadline.as_mut().poll(cx).is_ready() {
                    let what = match this.phase {
                        Phase::Head => "no complete request head within --header-timeout",
                        _ => "idle past --idle-timeout",
                    };
                    tracing::debug!(what, "closing a connection");
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

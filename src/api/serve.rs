//! The accept loop: serves the router over HTTP/1.1 with a cap on open connections, the
//! deadlines of `conn.rs` and `body.rs` on each, and a graceful shutdown.
//!
//! `axum::serve` has none of these knobs, so this is its loop with them added: a permit of
//! the connection semaphore is taken *before* `accept`, so beyond `--max-connections` new
//! clients wait in the kernel's backlog (rather than being accepted and starved, or taking
//! the last file descriptors) until a connection closes. Accept errors such as EMFILE back
//! off briefly and are logged at most once per [`ACCEPT_ERROR_LOG_EVERY`].

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::body::DeadlineBody;
use super::conn::{Activity, ConnTimeouts, GuardedBody, InFlight, TimedIo};
use super::front::FrontDoor;

/// The limits of the serving layer; each has a flag in `config`.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// File descriptors kept back from the connection cap for everything else taskd opens: the
/// database (PostgreSQL's pool of 16 and its listener, or SQLite's writer, readers and WAL
/// files), outbound requests of webhooks, the listener, logs.
const RESERVED_FDS: u64 = 128;
/// The connection cap's default stays within these bounds whatever the fd limit says.
const DEFAULT_MAX_CONNECTIONS: (u64, u64) = (16, 65_536);
/// How long the loop pauses after an accept error such as EMFILE (out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one log line per this long about failing accepts, with a count.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(5);

/// The default of `--max-connections`: the soft open-file limit, less [`RESERVED_FDS`] and one
/// per worker (a running task may hold an outbound connection), within
/// [`DEFAULT_MAX_CONNECTIONS`].
pub fn default_max_connections(workers: u32) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which lives on this stack.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        // `rlim_t` is u64 on Linux but not everywhere.
        #[allow(clippy::unnecessary_cast)]
        let soft = limit.rlim_cur as u64;
        soft
    } else {
        1024
    };
    let (low, high) = DEFAULT_MAX_CONNECTIONS;
    let free = soft.saturating_sub(RESERVED_FDS + u64::from(workers));
    free.clamp(low, high) as usize
}

/// Serves `front` on `listener` until `shutdown` resolves; then accepts no more, lets each
/// connection finish its request in flight, and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    front: FrontDoor,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // One permit per open connection, moved into its task and dropped when it closes.
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    // Ours are in `conn.rs`: hyper's own would also cut idle keep-alive connections short.
    http.header_read_timeout(None);
    let timeouts = ConnTimeouts {
        header: limits.header_timeout,
        idle: limits.idle_timeout,
    };
    let mut errors = AcceptErrors::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            // The semaphore is never closed, so acquiring fails never.
            permit = connections.clone().acquire_owned() => permit.expect("never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    errors.record(&error);
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let activity = Arc::new(Activity::default());
        let io = TokioIo::new(TimedIo::new(stream, activity.clone(), timeouts));
        let front = front.clone();
        let body_timeout = limits.body_timeout;
        let service = hyper::service::service_fn(move |request| {
            // Marked at the call, before anything of this request is read.
            let in_flight = activity.begin();
            handle(&front, peer, request, in_flight, body_timeout)
        });
        let connection = graceful.watch(http.serve_connection(io, service));
        let open = crate::metrics::Open::connection();
        tokio::spawn(async move {
            let _open = open;
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection closed");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The per-request service of one connection: the body gets its deadline, the request is
/// in flight until its response body is dropped. Not an `async fn`: the future holds the
/// router's future and the guard, not the request as well.
fn handle(
    front: &FrontDoor,
    peer: std::net::SocketAddr,
    request: hyper::Request<Incoming>,
    in_flight: InFlight,
    body_timeout: Duration,
) -> impl Future<Output = Result<axum::response::Response<GuardedBody<InFlight>>, Infallible>>
+ Send
+ use<> {
    let request: Request = request.map(|body| Body::new(DeadlineBody::new(body, body_timeout)));
    let answer = front.call(peer, request);
    async move {
        let Ok(response) = answer.await;
        Ok(response.map(|body| GuardedBody::new(body, in_flight)))
    }
}

/// Counts failing accepts between log lines, so a flood logs a line per interval, not per
/// error.
#[derive(Default)]
struct AcceptErrors {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    fn record(&mut self, error: &std::io::Error) {
        self.unlogged += 1;
        let due = self
            .last_logged
            .is_none_or(|at| at.elapsed() >= ACCEPT_ERROR_LOG_EVERY);
        if due {
            tracing::warn!(%error, count = self.unlogged, "accept failed; backing off");
            self.last_logged = Some(Instant::now());
            self.unlogged = 0;
        }
    }
}

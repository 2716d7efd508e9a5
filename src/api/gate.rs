//! Middleware as plain tower services, for the memory of parked requests.
//!
//! `axum::middleware::from_fn` boxes each middleware's future, and once more the future of
//! what is behind it (its `Next`), and each box keeps the middleware's arguments, the request
//! among them, for as long as the request runs. A long-poll parked for a minute keeps them
//! all: the six middlewares were ~6 KB of a parked connection's ~23 KB (heaptrack, issue 19).
//!
//! A [`Gate`] decides on a request before the route sees it and keeps only what its answer
//! needs; the future it adds to the route's is that and a state tag. A decision that must
//! wait (a key lookup) is boxed while it waits and freed before the route runs.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// A middleware's decision on one request.
pub enum Entry<K> {
    /// Hand the request on, and keep this until its response leaves.
    Pass(Request, K),
    /// Answer the request without handing it on.
    Answer(Response),
    /// Decided by a future that owns the request meanwhile (a key lookup).
    Later(BoxFuture<'static, Result<(Request, K), Response>>),
}

impl Entry<()> {
    /// Hands `request` on unless it is `refused`.
    pub fn unless(refused: Option<Response>, request: Request) -> Entry<()> {
        match refused {
            Some(answer) => Entry::Answer(answer),
            None => Entry::Pass(request, ()),
        }
    }
}

/// What a middleware does to a request on its way in and to its response on its way out.
pub trait Gate: Clone + Send + Sync + 'static {
    /// What is kept from the request to its response.
    type Kept: Send + 'static;

    fn enter(&self, request: Request) -> Entry<Self::Kept>;

    /// The response on its way out (by default, as it is).
    fn leave(_kept: Self::Kept, response: Response) -> Response {
        response
    }
}

/// A [`Gate`] as a tower layer.
#[derive(Clone)]
pub struct GateLayer<G>(pub G);

impl<G: Clone, S> Layer<S> for GateLayer<G> {
    type Service = Gated<G, S>;

    fn layer(&self, inner: S) -> Gated<G, S> {
        Gated {
            gate: self.0.clone(),
            inner,
        }
    }
}

/// A service behind a [`Gate`].
#[derive(Clone)]
pub struct Gated<G, S> {
    gate: G,
    inner: S,
}

impl<G, S> Service<Request> for Gated<G, S>
where
    G: Gate,
    S: Service<Request, Error = Infallible> + Clone + Send + 'static,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Passage<G, S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Passage<G, S> {
        let step = match self.gate.enter(request) {
            Entry::Pass(request, kept) => Step::Inside {
                route: self.inner.call(request),
                kept: Some(kept),
            },
            Entry::Answer(response) => Step::Answered {
                response: Some(response),
            },
            Entry::Later(decision) => {
                // The ready service goes with the request; a clone stays for the next call.
                let ready = self.inner.clone();
                Step::Deciding {
                    decision,
                    inner: Some(std::mem::replace(&mut self.inner, ready)),
                }
            }
        };
        Passage { step }
    }
}

pin_project! {
    /// The future of one request through a [`Gated`] service.
    pub struct Passage<G: Gate, S: Service<Request>> {
        #[pin]
        step: Step<G::Kept, S>,
    }
}

pin_project! {
    #[project = StepProj]
    enum Step<K, S: Service<Request>> {
        Deciding {
            decision: BoxFuture<'static, Result<(Request, K), Response>>,
            inner: Option<S>,
        },
        Inside {
            #[pin]
            route: S::Future,
            kept: Option<K>,
        },
        Answered {
            response: Option<Response>,
        },
    }
}

impl<G, S> Future for Passage<G, S>
where
    G: Gate,
    S: Service<Request, Error = Infallible>,
    S::Response: IntoResponse,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut step = self.project().step;
        loop {
            match step.as_mut().project() {
                StepProj::Deciding { decision, inner } => {
                    let decided = ready!(decision.as_mut().poll(cx));
                    let mut inner = inner.take().expect("a decision is taken once");
                    step.set(match decided {
                        Ok((request, kept)) => Step::Inside {
                            route: inner.call(request),
                            kept: Some(kept),
                        },
                        Err(response) => Step::Answered {
                            response: Some(response),
                        },
                    });
                }
                StepProj::Inside { route, kept } => {
                    let Ok(response) = ready!(route.poll(cx));
                    let kept = kept.take().expect("a response leaves once");
                    return Poll::Ready(Ok(G::leave(kept, response.into_response())));
                }
                StepProj::Answered { response } => {
                    return Poll::Ready(Ok(response.take().expect("an answer is given once")));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{HeaderValue, StatusCode};
    use tower::ServiceExt;

    /// Answers 418 to a request with `x-stop`, otherwise hands it on and marks the response.
    #[derive(Clone)]
    struct Marker;

    impl Gate for Marker {
        type Kept = HeaderValue;

        fn enter(&self, request: Request) -> Entry<HeaderValue> {
            if request.headers().contains_key("x-stop") {
                let mut response = Response::new(Body::empty());
                *response.status_mut() = StatusCode::IM_A_TEAPOT;
                return Entry::Answer(response);
            }
            if request.headers().contains_key("x-later") {
                return Entry::Later(Box::pin(async move {
                    tokio::task::yield_now().await;
                    Ok((request, HeaderValue::from_static("later")))
                }));
            }
            Entry::Pass(request, HeaderValue::from_static("now"))
        }

        fn leave(kept: HeaderValue, mut response: Response) -> Response {
            response.headers_mut().insert("x-kept", kept);
            response
        }
    }

    fn route()
    -> impl Service<Request, Response = Response, Error = Infallible, Future = impl Send + 'static>
    + Clone
    + Send
    + 'static {
        tower::service_fn(|_request: Request| async { Ok(Response::new(Body::empty())) })
    }

    async fn answer(header: Option<&'static str>) -> Response {
        let mut request = Request::new(Body::empty());
        if let Some(name) = header {
            request
                .headers_mut()
                .insert(name, HeaderValue::from_static("1"));
        }
        let Ok(response) = GateLayer(Marker).layer(route()).oneshot(request).await;
        response
    }

    #[tokio::test]
    async fn a_gate_passes_answers_or_decides_later() {
        let passed = answer(None).await;
        assert_eq!(passed.status(), StatusCode::OK);
        assert_eq!(passed.headers()["x-kept"], "now");

        let stopped = answer(Some("x-stop")).await;
        assert_eq!(stopped.status(), StatusCode::IM_A_TEAPOT);
        assert!(!stopped.headers().contains_key("x-kept"));

        let later = answer(Some("x-later")).await;
        assert_eq!(later.status(), StatusCode::OK);
        assert_eq!(later.headers()["x-kept"], "later");
    }
}

//! [`Either`]: one of two layers (or services) in one slot of a stack, whatever their
//! response bodies — and [`optional`], a layer the configuration may switch off.
//!
//! tower's own `Either` needs both sides to answer the same response type; layers that wrap
//! the body (a queue permit, a fan-out copy) do not. This one answers
//! `Response<http_body_util::Either<A, B>>` and boxes nothing, so a stack keeps one static
//! shape whichever layers are on.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use tower::BoxError;
use tower::layer::util::Identity;

/// One of two layers or services: the response body is `http_body_util::Either` of theirs,
/// so layers that wrap the body fit one static shape (see [`optional`]).
#[derive(Debug, Clone, Copy)]
pub enum Either<A, B> {
    /// The first.
    Left(A),
    /// The second.
    Right(B),
}

/// `layer` when configured, else a pass-through: the chain keeps its shape.
pub fn optional<L>(layer: Option<L>) -> Either<L, Identity> {
    match layer {
        Some(layer) => Either::Left(layer),
        None => Either::Right(Identity::new()),
    }
}

impl<A, B, S> tower::Layer<S> for Either<A, B>
where
    A: tower::Layer<S>,
    B: tower::Layer<S>,
{
    type Service = Either<A::Service, B::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        match self {
            Self::Left(layer) => Either::Left(layer.layer(inner)),
            Self::Right(layer) => Either::Right(layer.layer(inner)),
        }
    }
}

impl<A, B, Req, BodyA, BodyB> tower::Service<Req> for Either<A, B>
where
    A: tower::Service<Req, Response = Response<BodyA>>,
    B: tower::Service<Req, Response = Response<BodyB>>,
    A::Error: Into<BoxError>,
    B::Error: Into<BoxError>,
{
    type Response = Response<http_body_util::Either<BodyA, BodyB>>;
    type Error = BoxError;
    type Future = ResponseFuture<A::Future, B::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Self::Left(service) => service.poll_ready(cx).map_err(Into::into),
            Self::Right(service) => service.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self {
            Self::Left(service) => ResponseFuture::left(service.call(req)),
            Self::Right(service) => ResponseFuture::right(service.call(req)),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Either`].
    #[derive(Debug)]
    pub struct ResponseFuture<A, B> {
        #[pin]
        inner: futures_util::future::Either<A, B>,
    }
}

impl<A, B> ResponseFuture<A, B> {
    fn left(future: A) -> Self {
        Self {
            inner: futures_util::future::Either::Left(future),
        }
    }

    fn right(future: B) -> Self {
        Self {
            inner: futures_util::future::Either::Right(future),
        }
    }
}

impl<A, B, BodyA, BodyB, EA, EB> Future for ResponseFuture<A, B>
where
    A: Future<Output = Result<Response<BodyA>, EA>>,
    B: Future<Output = Result<Response<BodyB>, EB>>,
    EA: Into<BoxError>,
    EB: Into<BoxError>,
{
    type Output = Result<Response<http_body_util::Either<BodyA, BodyB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        use futures_util::future::Either as Side;
        Poll::Ready(match self.project().inner.as_pin_mut() {
            Side::Left(future) => match std::task::ready!(future.poll(cx)) {
                Ok(response) => Ok(response.map(http_body_util::Either::Left)),
                Err(e) => Err(e.into()),
            },
            Side::Right(future) => match std::task::ready!(future.poll(cx)) {
                Ok(response) => Ok(response.map(http_body_util::Either::Right)),
                Err(e) => Err(e.into()),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tower::{ServiceBuilder, ServiceExt};

    /// Wraps the body in another type, as a queue permit does.
    #[derive(Clone)]
    struct Rewrap;

    impl<S> tower::Layer<S> for Rewrap {
        type Service = tower::util::MapResponse<S, fn(Response<Full<Bytes>>) -> Response<String>>;

        fn layer(&self, inner: S) -> Self::Service {
            tower::util::MapResponse::new(inner, |r: Response<Full<Bytes>>| {
                r.map(|_| "rewrapped".to_owned())
            })
        }
    }

    #[tokio::test]
    async fn a_switched_off_layer_passes_through_and_the_shape_stays() {
        for on in [true, false] {
            let service = ServiceBuilder::new()
                .layer(optional(on.then_some(Rewrap)))
                .service_fn(|_req: ()| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                        "inner",
                    ))))
                });
            let body = service.oneshot(()).await.unwrap().into_body();
            let bytes = body.collect().await.unwrap().to_bytes();
            assert_eq!(&bytes[..], if on { &b"rewrapped"[..] } else { b"inner" });
        }
    }
}

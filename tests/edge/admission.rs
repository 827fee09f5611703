//! Policy layers over upstream routes: upstream routes are tower services, so what a layer
//! attaches to the response (a permit) is held until the proxied response has been fully
//! sent; a rejection goes to the client as is and never reaches the origin.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use agentgate_proxy::bridge::RequestBody;
use agentgate_proxy::{ResponseBody, Route, RouteTable, UpstreamClient, route_service};
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tower::{BoxError, Layer, Service, ServiceExt};

use crate::edge::{Edge, eventually, group};
use crate::origin::{Origin, two_part_stream};

/// The body of the rejection [`Permit`] answers with.
const OVERLOADED: &str = r#"{"error":{"code":"overloaded","message":"no permit"}}"#;

/// Takes one permit of a semaphore per request without waiting, and puts it in the
/// response's extensions; answers `503` with `Retry-After: 1` when none is left.
#[derive(Clone)]
struct PermitLayer(Arc<Semaphore>);

impl<S> Layer<S> for PermitLayer {
    type Service = Permit<S>;

    fn layer(&self, inner: S) -> Permit<S> {
        Permit {
            inner,
            permits: Arc::clone(&self.0),
        }
    }
}

/// The service of [`PermitLayer`].
#[derive(Clone)]
struct Permit<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S> Service<Request<RequestBody>> for Permit<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Rejects rather than waits: readiness does not depend on the permit.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<RequestBody>) -> Self::Future {
        let permit = Arc::clone(&self.permits).try_acquire_owned();
        let inner = self.inner.clone();
        Box::pin(async move {
            let Ok(permit) = permit else {
                let mut rejection = Response::new(
                    Full::new(Bytes::from_static(OVERLOADED.as_bytes()))
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                );
                *rejection.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                let headers = rejection.headers_mut();
                headers.insert(header::RETRY_AFTER, "1".parse().unwrap());
                headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
                return Ok(rejection);
            };
            let mut response = inner.oneshot(req).await?;
            // Extensions need `Clone`: share the permit.
            let held: Arc<OwnedSemaphorePermit> = Arc::new(permit);
            response.extensions_mut().insert(held);
            Ok(response)
        })
    }
}

/// A gateway whose one route proxies to `origin` behind a [`PermitLayer`] over `permits`.
fn gateway(origin: &Origin, permits: &Arc<Semaphore>) -> Edge {
    let client = UpstreamClient::new(group("limited", &[origin.addr]));
    let service = route_service(PermitLayer(Arc::clone(permits)).layer(client));
    let mut table = RouteTable::new();
    table.push(Route {
        name: "limited".to_owned(),
        host: None,
        path_prefix: "/".to_owned(),
        methods: Vec::new(),
        service,
    });
    Edge::from_table(table, Vec::new())
}

#[tokio::test]
async fn the_admission_permit_is_held_until_the_response_is_sent() {
    let second_part = Arc::new(Notify::new());
    let origin = Origin::with_handler(two_part_stream("part", Arc::clone(&second_part))).await;
    let permits = Arc::new(Semaphore::new(1));
    let edge = gateway(&origin, &permits);

    let mut stream = edge
        .client
        .stream(edge.client.get("/two-parts"))
        .await
        .unwrap_or_else(|r| panic!("refused: {} {}", r.status, r.text));
    let first = stream.next_event().await.expect("part 1");
    assert_eq!(first.data.as_deref(), Some("1"));
    // Headers and part of the body are out: the permit is still held.
    assert_eq!(permits.available_permits(), 0, "permit released early");

    second_part.notify_one();
    let second = stream.next_event().await.expect("part 2");
    assert_eq!(second.data.as_deref(), Some("2"));
    stream.expect_end().await;
    eventually(
        "the permit to come back after the response was sent",
        200,
        Duration::from_millis(25),
        || async { permits.available_permits() == 1 },
    )
    .await;
    drop(stream);
    edge.stop().await;
}

#[tokio::test]
async fn a_rejection_reaches_the_client_and_not_the_origin() {
    let origin = Origin::start("never").await;
    let permits = Arc::new(Semaphore::new(1));
    let edge = gateway(&origin, &permits);
    let taken = Arc::clone(&permits).try_acquire_owned().unwrap();

    let reply = edge.client.send_call(edge.client.get("/anything")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.text, OVERLOADED);
    assert_eq!(
        origin.requests(),
        0,
        "a rejected request reached the origin"
    );

    // With the permit back, the same request goes through.
    drop(taken);
    let reply = edge.client.send_call(edge.client.get("/anything")).await;
    assert_eq!(
        (reply.status, reply.text.as_str()),
        (StatusCode::OK, "never")
    );
    assert_eq!(origin.requests(), 1);
    edge.stop().await;
}

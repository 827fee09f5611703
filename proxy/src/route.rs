//! The route table: which target serves a request, by host, path prefix and method.
//!
//! First match wins, in the order routes were added (the order of `[[routes]]` in the TOML
//! file). A request that matches no route gets a JSON 404 from the [`Gateway`](crate::Gateway).

use std::sync::Arc;

use http::{Method, Request, Response};
use pingora::http::RequestHeader;
use tower::BoxError;
use tower::util::BoxCloneSyncService;

use crate::ResponseBody;
use crate::bridge::RequestBody;

/// A tower service that answers requests in-process through the [bridge](crate::bridge).
pub type RouteService = BoxCloneSyncService<Request<RequestBody>, Response<ResponseBody>, BoxError>;

/// One route.
#[derive(Clone)]
pub struct Route {
    /// Name, for logs and metrics.
    pub name: String,
    /// Exact host (no port), compared case-insensitively; `None` matches any host.
    pub host: Option<String>,
    /// Path prefix, e.g. `/v2/`.
    pub path_prefix: String,
    /// Allowed methods; empty allows any.
    pub methods: Vec<Method>,
    /// What serves it: an in-process service, or the route's stack over an
    /// [`UpstreamClient`](crate::UpstreamClient).
    pub service: RouteService,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("path_prefix", &self.path_prefix)
            .field("methods", &self.methods)
            .finish_non_exhaustive()
    }
}

impl Route {
    fn matches(&self, host: Option<&str>, path: &str, method: &Method) -> bool {
        path.starts_with(self.path_prefix.as_str())
            && (self.methods.is_empty() || self.methods.contains(method))
            && self
                .host
                .as_deref()
                .is_none_or(|want| host.is_some_and(|h| h.eq_ignore_ascii_case(want)))
    }
}

/// Routes in match order.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// An empty table (every request gets a 404).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a route; earlier routes win.
    pub fn push(&mut self, route: Route) -> &mut Self {
        self.routes.push(Arc::new(route));
        self
    }

    /// The first route matching the request.
    pub fn find(&self, req: &RequestHeader) -> Option<&Arc<Route>> {
        let host = request_host(req);
        self.routes
            .iter()
            .find(|r| r.matches(host, req.uri.path(), &req.method))
    }
}

/// The route table the gateway serves from, replaceable while it serves (hot reload).
///
/// It reads the table from a swap cell ([`following`](Self::following)): the application's
/// cell of everything a reload replaces (its configuration, its routes, ...), so that one
/// store swaps them all at once and nothing is kept in step by hand. Each request reads
/// the table once, when it is routed, and keeps its [`Route`] (and the stacks and groups in
/// it) until it ends: a replaced table serves no new requests, while requests and streams
/// already running on it finish undisturbed. A plain [`RouteTable`] converts into a fixed
/// one.
#[derive(Clone)]
pub struct LiveRoutes(Arc<FindRoute>);

/// Finds a request's route in whichever table is current.
type FindRoute = dyn Fn(&RequestHeader) -> Option<Arc<Route>> + Send + Sync;

impl LiveRoutes {
    /// Serves `table`, never replaced.
    pub fn new(table: RouteTable) -> Self {
        let table = Arc::new(table);
        Self(Arc::new(move |req| table.find(req).cloned()))
    }

    /// Serves the table `routes` finds in whatever `cell` holds when a request arrives:
    /// storing a new value in `cell` serves its table from the next request on.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use agentgate_proxy::{LiveRoutes, RouteTable};
    ///
    /// struct Generation { routes: RouteTable, /* and the rest a reload replaces */ }
    ///
    /// let cell = Arc::new(arc_swap::ArcSwap::from_pointee(Generation { routes: RouteTable::new() }));
    /// let live = LiveRoutes::following(Arc::clone(&cell), |g| &g.routes);
    /// // A reload: one store, and the gateway routes by the new table.
    /// cell.store(Arc::new(Generation { routes: RouteTable::new() }));
    /// # drop(live);
    /// ```
    pub fn following<T: Send + Sync + 'static>(
        cell: Arc<arc_swap::ArcSwap<T>>,
        routes: fn(&T) -> &RouteTable,
    ) -> Self {
        Self(Arc::new(move |req| routes(&cell.load()).find(req).cloned()))
    }

    /// The route for `req` in the current table.
    pub fn find(&self, req: &RequestHeader) -> Option<Arc<Route>> {
        (self.0)(req)
    }
}

impl std::fmt::Debug for LiveRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveRoutes").finish_non_exhaustive()
    }
}

impl From<RouteTable> for LiveRoutes {
    fn from(table: RouteTable) -> Self {
        Self::new(table)
    }
}

/// The request's host without port: the URI authority (HTTP/2, absolute-form) or `Host`.
fn request_host(req: &RequestHeader) -> Option<&str> {
    let raw = match req.uri.host() {
        Some(host) => return Some(host),
        None => req.headers.get(http::header::HOST)?.to_str().ok()?,
    };
    // Strip a port; keep bracketed IPv6 literals whole.
    Some(match raw.rfind(':') {
        Some(i) if !raw[i..].contains(']') => &raw[..i],
        _ => raw,
    })
}

/// A route service that never fails (its errors are already responses) boxed for a route.
pub fn route_service<S, B>(service: S) -> RouteService
where
    S: tower::Service<Request<RequestBody>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    BoxCloneSyncService::new(
        service
            .map_response(|r: Response<B>| r.map(|b| b.map_err(Into::into).boxed_unsync()))
            .map_err(Into::into),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, host: Option<&str>, prefix: &str, methods: &[Method]) -> Route {
        Route {
            name: name.into(),
            host: host.map(Into::into),
            path_prefix: prefix.into(),
            methods: methods.to_vec(),
            service: route_service(tower::service_fn(|_req: Request<RequestBody>| async {
                Ok::<_, BoxError>(Response::new(crate::empty_body()))
            })),
        }
    }

    fn req(method: &str, uri: &str, host: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build(method, uri.as_bytes(), None).unwrap();
        if let Some(h) = host {
            r.insert_header("host", h).unwrap();
        }
        r
    }

    #[test]
    fn first_match_wins_by_host_prefix_and_method() {
        let mut table = RouteTable::new();
        table
            .push(route("api-host", Some("api.example.com"), "/", &[]))
            .push(route("posts", None, "/v2/", &[Method::POST]))
            .push(route("v2", None, "/v2/", &[]));
        let name = |r: &RequestHeader| table.find(r).map(|r| r.name.clone());
        assert_eq!(
            name(&req("GET", "/x", Some("API.example.com:8080"))).as_deref(),
            Some("api-host")
        );
        assert_eq!(
            name(&req("POST", "/v2/sessions", Some("other"))).as_deref(),
            Some("posts")
        );
        assert_eq!(
            name(&req("GET", "/v2/sessions", None)).as_deref(),
            Some("v2")
        );
        assert_eq!(name(&req("GET", "/other", Some("other"))), None);
        assert_eq!(
            request_host(&req("GET", "/", Some("[::1]:80"))),
            Some("[::1]")
        );
        assert_eq!(request_host(&req("GET", "/", Some("[::1]"))), Some("[::1]"));
    }
}

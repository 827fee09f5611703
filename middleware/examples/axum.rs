//! An axum app behind the three admission layers of `agentgate-middleware`.
//!
//! - `GET /users/{name}` is guarded by an [`ExistenceCacheLayer`]: a toy [`ExistenceCheck`]
//!   over an in-memory set of users answers "does `{name}` exist?", the answer is cached,
//!   and a missing user gets the layer's own `404` JSON without the handler running.
//! - The whole app runs under a [`PriorityQueueLayer`] (at most 4 requests in flight, up to
//!   16 waiting for at most 2 s, then `503`; every request has the default priority: a
//!   client's own `x-priority` is ignored and removed, as no `trusted_proxies` are set) ...
//! - ... under a [`RateLimitLayer`] keyed by the `x-api-key` header (a burst of 3, then one
//!   request per second per key, `429` with `Retry-After` beyond; requests without the
//!   header are not limited). Rate limiting is outermost, so rejected requests never take a
//!   queue slot.
//!
//! Run it (serves `127.0.0.1:3000` until Ctrl-C):
//!
//! ```text
//! cargo run -p agentgate-middleware --example axum
//! ```
//!
//! and try:
//!
//! ```text
//! curl -i localhost:3000/users/alice                      # 200 hello, alice
//! curl -i localhost:3000/users/mallory                    # 404 {"error":{"code":"user_not_found",..}}
//! curl -i -H 'x-priority: 9' localhost:3000/              # 200, at the default priority
//! for i in 1 2 3 4; do curl -si -H 'x-api-key: k1' localhost:3000/ | head -1; done
//!                                                         # 200 200 200 429 (Retry-After: 1)
//! ```

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agentgate_middleware::ServiceBuilderExt;
use agentgate_middleware::existence_cache::{
    ExistenceCacheLayer, ExistenceCachePolicy, ExistenceCheck, Exists, NotFound,
};
use agentgate_middleware::priority_queue::{
    PolicyPriority, PriorityQueueLayer, PriorityQueuePolicy,
};
use agentgate_middleware::rate_limit::{KeyKind, PolicyKey, RateLimitLayer, RateLimitPolicy};
use axum::extract::{Path, Request};
use axum::routing::get;
use axum::{Extension, Router};
use tower::ServiceBuilder;

/// The app's settings: one policy per layer (each deserializes from TOML) and the users.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Settings of the existence cache in front of `/users/{name}`.
    pub existence: ExistenceCachePolicy,
    /// Settings of the rate limit over the whole app.
    pub rate_limit: RateLimitPolicy,
    /// Settings of the priority queue over the whole app.
    pub priority_queue: PriorityQueuePolicy,
    /// The users that exist.
    pub users: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            existence: ExistenceCachePolicy::default(),
            rate_limit: RateLimitPolicy {
                per_second: 1,
                burst: Some(3),
                key: KeyKind::Header,
                key_header: Some("x-api-key".to_owned()),
                ..RateLimitPolicy::default()
            },
            priority_queue: PriorityQueuePolicy {
                max_in_flight: 4,
                max_queue: 16,
                max_wait_ms: 2_000,
                ..PriorityQueuePolicy::default()
            },
            users: vec!["alice".to_owned(), "bob".to_owned()],
        }
    }
}

/// The toy backend: an in-memory set of user names, counting the checks it answers.
#[derive(Debug, Default)]
pub struct Users {
    names: HashSet<String>,
    checks: AtomicUsize,
}

impl Users {
    /// How many existence checks reached this backend (the cache answers the rest).
    pub fn checks(&self) -> usize {
        self.checks.load(Ordering::Relaxed)
    }
}

impl ExistenceCheck<String> for Users {
    type Error = Infallible;

    async fn exists(&self, key: &String) -> Result<bool, Infallible> {
        self.checks.fetch_add(1, Ordering::Relaxed);
        Ok(self.names.contains(key))
    }
}

/// Shares one [`Users`] between the cache (which owns its check) and the caller.
#[derive(Debug, Clone)]
pub struct SharedUsers(pub Arc<Users>);

impl ExistenceCheck<String> for SharedUsers {
    type Error = Infallible;

    async fn exists(&self, key: &String) -> Result<bool, Infallible> {
        self.0.exists(key).await
    }
}

/// The existence-cache key: `{name}` of `/users/{name}`.
#[derive(Debug, Clone, Copy)]
pub struct UserName;

impl agentgate_middleware::KeyExtractor for UserName {
    type Key = String;

    fn extract<B>(&self, req: &axum::http::Request<B>) -> Option<String> {
        let name = req.uri().path().strip_prefix("/users/")?;
        Some(name.split('/').next().filter(|n| !n.is_empty())?.to_owned())
    }
}

/// The priority-queue layer made by [`PriorityQueueLayer::from_policy`].
pub type QueueLayer = PriorityQueueLayer<PolicyPriority>;

/// The app and handles on its layers (for metrics, pruning and tests).
#[derive(Debug)]
pub struct App {
    /// The router, all layers applied; serve it or drive it with `oneshot`.
    pub router: Router,
    /// The rate limit (shared with the router): call `spawn_pruner` on it.
    pub rate_limit: RateLimitLayer<PolicyKey>,
    /// The priority queue (shared with the router): `in_flight()` and `queued()`.
    pub queue: QueueLayer,
    /// The backend behind the existence cache.
    pub users: Arc<Users>,
}

/// Builds the app described by `settings`.
///
/// # Panics
///
/// If a policy is invalid (a zero rate or `max_in_flight`, a bad `key_header`).
pub fn app(settings: &Settings) -> App {
    let users = Arc::new(Users {
        names: settings.users.iter().cloned().collect(),
        checks: AtomicUsize::new(0),
    });
    let existence = ExistenceCacheLayer::new(
        UserName,
        SharedUsers(users.clone()),
        settings.existence.clone(),
    )
    .not_found(NotFound {
        code: "user_not_found",
        message: "no such user",
    });
    let rate_limit =
        RateLimitLayer::from_policy(&settings.rate_limit).expect("valid rate-limit policy");
    let queue = PriorityQueueLayer::from_policy(&settings.priority_queue)
        .expect("valid priority-queue policy");

    let router = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route(
            "/users/{name}",
            get(user).route_layer(ServiceBuilder::new().existence_cache(existence)),
        )
        // Outermost first: rate limit, then priority queue, then the routes.
        .layer(
            ServiceBuilder::new()
                .rate_limit(rate_limit.clone())
                .priority_queue(queue.clone()),
        );
    App {
        router,
        rate_limit,
        queue,
        users,
    }
}

/// `GET /users/{name}`: only reached when the existence cache vouched for `name`.
async fn user(Path(name): Path<String>, exists: Option<Extension<Exists>>) -> String {
    let vouched = exists.is_some();
    format!("hello, {name} (existence cache vouched: {vouched})\n")
}

/// Logs each request's method, path and status (to watch the layers act).
async fn log(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    let line = format!("{} {}", req.method(), req.uri().path());
    let response = next.run(req).await;
    println!("{line} -> {}", response.status());
    response
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let app = app(&Settings::default());
    let _pruner = app.rate_limit.spawn_pruner(Duration::from_secs(60));
    let router = app.router.layer(axum::middleware::from_fn(log));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://127.0.0.1:3000 (Ctrl-C to stop)");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}

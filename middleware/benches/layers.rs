//! Per-request overhead of each layer on its hot path, against a baseline measured in the
//! same run: the bare inner service (a `service_fn` answering `Response<String>` at once),
//! cloned and called with `oneshot` per iteration, vs. the same wrapped in
//!
//! - `existence_cache`: a cache **hit** (the key is warmed first);
//! - `rate_limit`: the **admit** path (a quota so large nothing is limited), with
//!   [`GlobalKey`] and [`HeaderKey`];
//! - `shared_rate_limit`: the layer's own cost around its store ([`RateLimitLayer::shared`]
//!   over a [`SharedGcra`] that answers at once: key naming, boxing, the inner clone), on
//!   the **admit** path and on the **refused from the over-limit cache** path (no store
//!   call; a real deployment saves a Redis round trip there);
//! - `priority_queue`: the **admit** path (free slots; the response, and with it the slot,
//!   is dropped every iteration).
//!
//! Every variant builds the same request, so request construction cancels out in the
//! difference. Run with `cargo bench -p agentgate-middleware --bench layers`.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agentgate_middleware::existence_cache::{
    ExistenceCacheLayer, ExistenceCachePolicy, ExistenceCheck,
};
use agentgate_middleware::priority_queue::{Fixed, PriorityQueueLayer, PriorityQueuePolicy};
use agentgate_middleware::rate_limit::{
    CheckFuture, GlobalKey, HeaderKey, PolicyKey, Quota, RateLimitLayer, RateLimitPolicy,
    SharedGcra, Verdict,
};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use http::header::HeaderName;
use http::{Request, Response, StatusCode};
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt, service_fn};

/// The request every variant sends: a key in the path and an API-key header.
fn request() -> Request<()> {
    Request::get("/alice")
        .header("x-api-key", "k1")
        .body(())
        .expect("valid request")
}

/// The inner service: answers at once, no work.
fn inner() -> impl Service<
    Request<()>,
    Response = Response<String>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<String>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(String::new())) })
}

/// A current-thread runtime, as the async executor of every benchmark.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A short-measurement group, so the whole bench stays well under 90 s.
fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    group
}

/// Benchmarks one `oneshot` call on a clone of `svc` per iteration; the response is
/// dropped inside the iteration.
fn bench_oneshot<S, B>(group: &mut BenchmarkGroup<'_, WallTime>, rt: &Runtime, id: &str, svc: S)
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible> + Clone,
{
    group.bench_function(id, |b| {
        b.to_async(rt).iter(|| {
            let svc = svc.clone();
            async move {
                let response = svc.oneshot(request()).await.expect("infallible");
                drop(black_box(response));
            }
        });
    });
}

/// The first path segment is the key.
#[derive(Clone)]
struct FirstSegment;

impl agentgate_middleware::KeyExtractor for FirstSegment {
    type Key = String;

    fn extract<B>(&self, req: &Request<B>) -> Option<String> {
        req.uri().path().split('/').nth(1).map(str::to_owned)
    }
}

/// Every key exists; counts checks so the bench can assert every call was a hit.
#[derive(Clone, Default)]
struct AlwaysExists {
    checks: Arc<AtomicUsize>,
}

impl ExistenceCheck<String> for AlwaysExists {
    type Error = Infallible;

    async fn exists(&self, _key: &String) -> Result<bool, Infallible> {
        self.checks.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }
}

fn existence_cache(c: &mut Criterion) {
    let rt = runtime();
    let check = AlwaysExists::default();
    let checks = check.checks.clone();
    // A positive TTL far longer than the run: every measured call is a hit.
    let policy = ExistenceCachePolicy {
        positive_ttl_ms: 3_600_000,
        ..ExistenceCachePolicy::default()
    };
    let svc = ExistenceCacheLayer::new(FirstSegment, check, policy).layer(inner());
    // Warm the key.
    let warm = rt.block_on(svc.clone().oneshot(request()));
    assert_eq!(warm.expect("infallible").status(), StatusCode::OK);
    assert_eq!(checks.load(Ordering::Relaxed), 1);

    let mut group = group(c, "existence_cache");
    bench_oneshot(&mut group, &rt, "baseline", inner());
    bench_oneshot(&mut group, &rt, "hit", svc);
    group.finish();
    assert_eq!(
        checks.load(Ordering::Relaxed),
        1,
        "every measured call must be a cache hit"
    );
}

fn rate_limit(c: &mut Criterion) {
    let rt = runtime();
    // u32::MAX per second, burst u32::MAX: nothing is ever limited.
    let quota = Quota {
        interval: Duration::from_nanos(1),
        burst: u32::MAX,
    };
    let global = RateLimitLayer::new(GlobalKey, quota).layer(inner());
    let header =
        RateLimitLayer::new(HeaderKey(HeaderName::from_static("x-api-key")), quota).layer(inner());
    let global_warm = rt.block_on(global.clone().oneshot(request()));
    assert_eq!(global_warm.expect("infallible").status(), StatusCode::OK);
    let header_warm = rt.block_on(header.clone().oneshot(request()));
    assert_eq!(header_warm.expect("infallible").status(), StatusCode::OK);

    let mut group = group(c, "rate_limit");
    bench_oneshot(&mut group, &rt, "baseline", inner());
    bench_oneshot(&mut group, &rt, "admit_global", global.clone());
    bench_oneshot(&mut group, &rt, "admit_header", header.clone());
    group.finish();
    let global_after = rt.block_on(global.oneshot(request()));
    assert_eq!(global_after.expect("infallible").status(), StatusCode::OK);
    let header_after = rt.block_on(header.oneshot(request()));
    assert_eq!(header_after.expect("infallible").status(), StatusCode::OK);
}

/// A [`SharedGcra`] answering at once: always allows, or always refuses for a minute.
struct Instant(Verdict, AtomicUsize);

impl SharedGcra for Instant {
    fn check(&self, _key: &str, _quota: Quota) -> CheckFuture {
        self.1.fetch_add(1, Ordering::Relaxed);
        Box::pin(std::future::ready(Ok(self.0)))
    }
}

fn shared_rate_limit(c: &mut Criterion) {
    let rt = runtime();
    let policy = RateLimitPolicy {
        key: agentgate_middleware::rate_limit::KeyKind::Header,
        key_header: Some("x-api-key".to_owned()),
        ..RateLimitPolicy::default()
    };
    let layer = |verdict| {
        let gcra = Arc::new(Instant(verdict, AtomicUsize::new(0)));
        let layer: RateLimitLayer<PolicyKey> =
            RateLimitLayer::shared_from_policy(&policy, gcra.clone(), "rl:bench:")
                .expect("valid policy");
        (layer.layer(inner()), gcra)
    };
    let (admit, _) = layer(Verdict::Allowed { remaining: 99 });
    let (refuse, refusing) = layer(Verdict::Limited {
        retry_after: Duration::from_secs(60),
    });
    let warm = rt.block_on(admit.clone().oneshot(request()));
    assert_eq!(warm.expect("infallible").status(), StatusCode::OK);
    let warm = rt.block_on(refuse.clone().oneshot(request()));
    assert_eq!(
        warm.expect("infallible").status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    let mut group = group(c, "shared_rate_limit");
    bench_oneshot(&mut group, &rt, "baseline", inner());
    bench_oneshot(&mut group, &rt, "admit", admit);
    bench_oneshot(&mut group, &rt, "refused_cached", refuse);
    group.finish();
    assert_eq!(
        refusing.1.load(Ordering::Relaxed),
        1,
        "every measured refusal came from the over-limit cache"
    );
}

fn priority_queue(c: &mut Criterion) {
    let rt = runtime();
    let policy = PriorityQueuePolicy {
        max_in_flight: 64,
        max_queue: 256,
        ..PriorityQueuePolicy::default()
    };
    let layer = PriorityQueueLayer::new(&policy, Fixed(1)).expect("valid policy");
    let svc = layer.layer(inner());
    let warm = rt.block_on(svc.clone().oneshot(request()));
    assert_eq!(warm.expect("infallible").status(), StatusCode::OK);
    assert_eq!(
        layer.in_flight(),
        (0, 0),
        "a dropped response frees its slot"
    );

    let mut group = group(c, "priority_queue");
    bench_oneshot(&mut group, &rt, "baseline", inner());
    bench_oneshot(&mut group, &rt, "admit", svc);
    group.finish();
    assert_eq!(layer.in_flight(), (0, 0), "every slot was released");
    assert_eq!(layer.queued(), (0, 0), "nothing ever queued");
}

fn main() {
    // `criterion_group!` would generate an undocumented `pub fn`; this is its expansion.
    let mut c = Criterion::default().configure_from_args();
    existence_cache(&mut c);
    rate_limit(&mut c);
    shared_rate_limit(&mut c);
    priority_queue(&mut c);
    c.final_summary();
}

//! The admin listener's live status page: `GET /admin/live` (a JSON snapshot a second, over
//! SSE), `GET /admin/sessions/{id}/stream` (one session's events, resumable, no token), and
//! the page at `GET /` in headless Chromium — it loads, its numbers change under load, a
//! followed session's events appear — with a screenshot kept in
//! `<target>/test-artifacts/status-page.png`.
//!
//! The page, opened with `?report`, POSTs what it shows (the text of its figures and the
//! viewer's entries) to its own origin's `/admin/report`; the browser reaches the admin
//! listener through a small proxy that collects those reports and forwards everything else.
//! The test waits for reports, never for a time. The listener has an admin token: the
//! browser logs in with `/?token=` once (a cookie), and the page's feeds follow. A
//! `report=<another origin>` is ignored: that collector hears nothing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use agentgate_config::Config;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::client::{SseStream, within};
use crate::gateway::{Gateway, blocking, deltas, memory_config, redis_config};
use crate::support::browser::{Browser, screenshot};
use crate::support::redis_server::RedisServer;

/// The admin token of the browser test.
const ADMIN_TOKEN: &str = "status-page-admin-token-0123";

fn with_admin(mut config: Config) -> Config {
    config.server.admin_listen = Some("127.0.0.1:0".parse().expect("addr"));
    config
}

/// The next `data:` frame of a stream, as JSON (skipping `retry:` and comments).
async fn next_json(stream: &mut SseStream) -> Value {
    loop {
        let frame = stream.next_frame().await.expect("stream open");
        if frame.data.is_some() {
            return frame.json();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_feed_and_session_viewer_over_http_end_at_shutdown() {
    let gateway = Gateway::start(&with_admin(memory_config())).await;
    let admin = gateway.admin.clone().expect("admin listener");

    let mut live = admin
        .stream(admin.get("/admin/live"))
        .await
        .unwrap_or_else(|r| panic!("live refused: {} {}", r.status, r.text));
    assert_eq!(live.expect_retry().await, 1000);
    let first = next_json(&mut live).await;
    for key in [
        "sessions_active",
        "sse_streams",
        "requests_per_s",
        "p99_ms",
        "store_ops_per_s",
        "sheds_total",
        "rate_limited_total",
    ] {
        assert!(first.get(key).is_some(), "{key} missing: {first}");
    }

    // A session and its events: the feed counts it, and the viewer follows it.
    let session = gateway.init().await;
    let ids = gateway.append(&session, &deltas(0, 3)).await;
    within("the feed to count the session and the requests", async {
        loop {
            let snapshot = next_json(&mut live).await;
            if snapshot["sessions_active"] == 1 && snapshot["requests_total"].as_u64() >= Some(2) {
                break;
            }
        }
    })
    .await;

    let path = format!("/admin/sessions/{}/stream", session.id);
    let mut viewer = admin
        .stream(admin.get(&path))
        .await
        .unwrap_or_else(|r| panic!("viewer refused: {} {}", r.status, r.text));
    viewer.expect_retry().await;
    let frames = viewer.events(3).await;
    for (frame, (n, id)) in frames.iter().zip(ids.iter().enumerate()) {
        assert_eq!(frame.id.as_deref(), Some(id.as_str()));
        assert_eq!(
            frame.event, None,
            "unnamed, so EventSource.onmessage sees it"
        );
        assert_eq!(frame.json(), json!({"kind": "delta", "data": {"n": n}}));
    }
    // Resume after the first event: the other two, exactly.
    let resumed = admin
        .stream(admin.get(&path).header("last-event-id", &ids[0]))
        .await
        .unwrap_or_else(|r| panic!("resume refused: {} {}", r.status, r.text));
    let mut resumed = resumed;
    resumed.expect_retry().await;
    let again = resumed.events(2).await;
    assert_eq!(again[0].id.as_deref(), Some(ids[1].as_str()));
    assert_eq!(again[1].id.as_deref(), Some(ids[2].as_str()));
    drop(resumed);

    // Bad and unknown ids answer as the API does.
    let bad = admin
        .send_call(admin.get("/admin/sessions/a%7Bb/stream"))
        .await;
    assert_eq!(bad.status, http::StatusCode::BAD_REQUEST, "{}", bad.text);
    let unknown = admin
        .send_call(admin.get("/admin/sessions/nosuchsession/stream"))
        .await;
    assert_eq!(
        unknown.status,
        http::StatusCode::NOT_FOUND,
        "{}",
        unknown.text
    );

    // The page itself is served, self-contained.
    let page = admin.send_call(admin.get("/")).await;
    assert_eq!(page.status, http::StatusCode::OK);
    assert!(page.text.contains("new EventSource('/admin/live')"));
    assert!(!page.text.contains("<script src"), "no external scripts");

    // Shutdown ends both streams (they do not hold the process).
    gateway.stop().await;
    within("the live feed to end at shutdown", async {
        while live.try_next().await.ok().flatten().is_some() {}
    })
    .await;
    within("the viewer to end at shutdown", async {
        while viewer.try_next().await.ok().flatten().is_some() {}
    })
    .await;
}

/// Counts what any page POSTs to it: the page must never post here.
async fn foreign_collector() -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("collector binds");
    let addr = listener.local_addr().expect("collector address");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |_req: http::Request<hyper::body::Incoming>| {
                        let _ = tx.send(());
                        let mut ok = http::Response::new(Full::new(Bytes::new()));
                        ok.headers_mut().insert(
                            "access-control-allow-origin",
                            http::HeaderValue::from_static("*"),
                        );
                        async move { Ok::<_, Infallible>(ok) }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

/// A proxy in front of the admin listener `admin`: the page's same-origin reports
/// (`POST /admin/report`) are collected; every other request goes to the listener, its
/// response (SSE included) streamed back.
async fn report_proxy(admin: SocketAddr) -> (SocketAddr, mpsc::UnboundedReceiver<Value>) {
    type ProxyBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
    let addr = listener.local_addr().expect("proxy address");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            if req.method() == http::Method::POST
                                && req.uri().path() == "/admin/report"
                            {
                                let body = req.into_body().collect().await?.to_bytes();
                                if let Ok(value) = serde_json::from_slice::<Value>(&body) {
                                    let _ = tx.send(value);
                                }
                                let empty: ProxyBody = Full::new(Bytes::new())
                                    .map_err(|never| match never {})
                                    .boxed();
                                return Ok::<_, hyper::Error>(http::Response::new(empty));
                            }
                            let upstream = TcpStream::connect(admin).await.expect("admin listener");
                            let (mut sender, conn) =
                                hyper::client::conn::http1::handshake(TokioIo::new(upstream))
                                    .await?;
                            tokio::spawn(conn);
                            let response = sender.send_request(req).await?;
                            Ok(response.map(BodyExt::boxed))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

/// Waits for a report satisfying `ok`; the failure names the last one seen.
async fn report_where(
    reports: &mut mpsc::UnboundedReceiver<Value>,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    let found = tokio::time::timeout(crate::client::WAIT, async {
        loop {
            let report = reports.recv().await.expect("collector alive");
            if ok(&report) {
                return report;
            }
            last = report;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("the page did not show {what}; last shown: {last}"))
}

/// A figure the page shows, as a number (`–` before the first update is `None`).
fn shown(report: &Value, id: &str) -> Option<f64> {
    report[id].as_str()?.parse().ok()
}

/// Whether the viewer shows an entry `"<id> <kind>"`.
fn viewer_has(report: &Value, entry: &str) -> bool {
    report["events"]
        .as_array()
        .is_some_and(|events| events.iter().any(|e| e == entry))
}

/// `<target>/test-artifacts/`, created.
fn artifacts_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target>/tmp` (it follows CARGO_TARGET_DIR).
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_live_figures_and_follows_a_session() {
    // Redis, so that the page has store operations to show.
    let redis = blocking(RedisServer::start);
    let mut config = with_admin(redis_config(&redis));
    config.server.admin_tokens = vec![ADMIN_TOKEN.to_owned()];
    let gateway = Arc::new(Gateway::start(&config).await);
    let admin = gateway.admin.clone().expect("admin listener");
    let (proxy, mut reports) = report_proxy(admin.addr()).await;
    let (foreign, mut foreign_posts) = foreign_collector().await;

    let followed = gateway.init().await;
    let first_ids = gateway.append(&followed, &deltas(0, 2)).await;
    // Logged in once with the token; `report` names another origin, which is ignored.
    let page = format!(
        "http://{proxy}/?token={ADMIN_TOKEN}&session={}&report=http://{foreign}/report",
        followed.id
    );
    let browser = Browser::open(&page);

    // Loaded and live: one session, the viewer's stream, both first events shown.
    let before = report_where(&mut reports, "one session, live", |r| {
        r["conn"] == "live" && shown(r, "sessions") == Some(1.0)
    })
    .await;
    for id in &first_ids {
        report_where(&mut reports, "the followed session's first events", |r| {
            viewer_has(r, &format!("{id} delta"))
        })
        .await;
    }

    // Load until the page shows it: sessions created, events appended, a stream open.
    let running = Arc::new(AtomicBool::new(true));
    let load = {
        let (gateway, running) = (Arc::clone(&gateway), Arc::clone(&running));
        tokio::spawn(async move {
            let mut streams = Vec::new();
            let mut n = 0;
            while running.load(Ordering::Relaxed) {
                let session = gateway.init().await;
                gateway.append(&session, &deltas(n, 5)).await;
                if streams.len() < 3 {
                    streams.push(gateway.stream(&session).await);
                }
                n += 5;
                // Steady, modest load (the page's figures need not be big, only moving).
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            streams.len()
        })
    };
    let busy = report_where(&mut reports, "the load", |r| {
        shown(r, "sessions") >= Some(4.0)
            && shown(r, "rps") > Some(0.0)
            && shown(r, "storeops") > Some(0.0)
            && shown(r, "streams") > shown(&before, "streams")
            && shown(r, "requests") > shown(&before, "requests")
            && shown(r, "p99").is_some()
    })
    .await;
    assert!(shown(&busy, "p99") > Some(0.0), "{busy}");

    // Live events of the followed session, then its completion.
    let more = gateway.append(&followed, &deltas(2, 3)).await;
    let done = gateway.complete(&followed, &json!("done")).await;
    for id in &more {
        report_where(&mut reports, "the followed session's live events", |r| {
            viewer_has(r, &format!("{id} delta"))
        })
        .await;
    }
    let end = report_where(&mut reports, "the followed session's completion", |r| {
        viewer_has(r, &format!("{done} complete"))
    })
    .await;
    assert!(
        end["viewer-state"]
            .as_str()
            .is_some_and(|s| s.ends_with("completed")),
        "{end}"
    );

    // A picture of the page under load, kept as a test artifact.
    let png = artifacts_dir().join("status-page.png");
    let _ = std::fs::remove_file(&png);
    let shot_url = format!(
        "http://{}/?token={ADMIN_TOKEN}&session={}",
        admin.addr(),
        followed.id
    );
    let shot = png.clone();
    tokio::task::spawn_blocking(move || screenshot(&shot_url, &shot, (1280, 1000)))
        .await
        .expect("screenshot");
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        bytes.len() > 10_000,
        "a non-trivial picture: {} bytes",
        bytes.len()
    );

    // Dozens of reports reached the page's own origin; not one went elsewhere.
    assert!(
        foreign_posts.try_recv().is_err(),
        "the page posted to another origin"
    );

    running.store(false, Ordering::Relaxed);
    assert!(load.await.expect("load task") > 0);
    drop(browser);
    let gateway = Arc::into_inner(gateway).expect("load task done");
    gateway.stop().await;
}

//! No credential reaches the logs, at any level: the gateway runs with `RUST_LOG=trace`, is
//! driven through every path that logs a request (streams closed by the client, refused
//! tokens, garbage requests, proxied and failing upstream requests, bad bodies), and its whole
//! stdout and stderr are searched for the API key, the stream tokens and the cookie value.
//! A viewer that closes its stream is routine: no ERROR and no 500 for it.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{Client, within};
use crate::gateway::{KEY, SECRET, blocking};
use crate::process::Process;
use crate::tools::origin_named;

/// A cookie value the client sends with every request.
const COOKIE: &str = "cookie-value-7f3a9c1e5b";
/// An `Idempotency-Key` (not a credential, but kept out of logs all the same).
const IDEMPOTENCY_KEY: &str = "idempotency-key-4e8b2d6a0c";

fn config(origin: &str, dead: &str, log_format: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
access_log = true
log_format = "{log_format}"
[auth]
api_keys = ["{KEY}"]
stream_token_secret = "{SECRET}"
[agent]
dispatch = "none"
[[routes]]
name = "agent"
path_prefix = "/v2/"
[[routes]]
name = "echo"
kind = "upstream"
path_prefix = "/echo"
upstream = "origin"
[[routes]]
name = "dead"
kind = "upstream"
path_prefix = "/dead"
upstream = "dead"
[upstreams.origin]
peers = ["{origin}"]
[upstreams.dead]
peers = ["{dead}"]
"#
    )
}

/// Writes `request` on a fresh connection, reads whatever comes back for a moment, closes.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(request).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(300), conn.read(&mut buf)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_is_logged_and_a_closed_stream_is_no_error() {
    no_credential_in_logs("text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_is_logged_in_json_lines() {
    no_credential_in_logs("json").await;
}

async fn no_credential_in_logs(log_format: &str) {
    let origin = origin_named("origin", true).await.to_string();
    // A port nothing listens on: bind one, then free it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .to_string();
    let mut gateway =
        blocking(|| Process::start_with_log(&config(&origin, &dead, log_format), "trace"));
    let addr = gateway.addr;
    let c = Client::new(addr);
    let cookie = format!("pin={COOKIE}");

    let init = || {
        c.post("/v2/sessions")
            .bearer(KEY)
            .header("cookie", &cookie)
            .json(&json!({}))
    };
    let first = c.send_call(init()).await;
    assert_eq!(first.status, 201, "{}", first.text);
    let id = first.json["id"].as_str().unwrap().to_owned();
    let token = first.json["stream_token"].as_str().unwrap().to_owned();
    let second = c.send_call(init()).await;
    let other_id = second.json["id"].as_str().unwrap().to_owned();
    let other_token = second.json["stream_token"].as_str().unwrap().to_owned();
    let stream = format!("/v2/sessions/{id}/stream");

    // Viewers that go away: after the first frame, mid-stream, by query and by header.
    for call in [
        c.get(&format!("{stream}?token={token}"))
            .header("cookie", &cookie),
        c.get(&stream).bearer(&token).header("cookie", &cookie),
        c.get(&format!(
            "/v2/stream?sessions={id},{other_id}&tokens={token},{other_token}"
        )),
    ] {
        let mut viewer = c
            .stream(call)
            .await
            .unwrap_or_else(|r| panic!("{}", r.text));
        viewer.expect_retry().await;
        drop(viewer);
    }
    let mut viewer = c
        .stream(c.get(&format!("{stream}?token={token}")))
        .await
        .unwrap_or_else(|r| panic!("{}", r.text));
    viewer.expect_retry().await;
    let append = c
        .send_call(
            c.post(&format!("/v2/sessions/{id}/events"))
                .bearer(KEY)
                .header("idempotency-key", IDEMPOTENCY_KEY)
                .json(&json!({"kind": "delta", "data": {"n": 1}})),
        )
        .await;
    assert!(append.status.is_success(), "{}", append.text);
    viewer.next_event().await.expect("an event");
    drop(viewer);
    // A viewer that hangs up before the response head: raw, then closed at once.
    raw(
        addr,
        format!("GET {stream}?token={token} HTTP/1.1\r\nhost: x\r\ncookie: {cookie}\r\n\r\n")
            .as_bytes(),
    )
    .await;

    // Refused credentials: another session's token, the key as token, a bad key.
    for call in [
        c.get(&format!("/v2/sessions/{other_id}/stream?token={token}")),
        c.get(&format!("{stream}?token={KEY}")),
        c.get(&stream).bearer(KEY).header("cookie", &cookie),
    ] {
        assert!(c.stream(call).await.is_err());
    }
    let refused = c
        .send_call(c.post("/v2/sessions").bearer(&token).json(&json!({})))
        .await;
    assert_eq!(refused.status, 401);

    // Bad bodies with good credentials.
    for body in ["{not json", "[]"] {
        let reply = c
            .send_call(
                c.post(&format!("/v2/sessions/{id}/events"))
                    .bearer(KEY)
                    .header("cookie", &cookie)
                    .raw_json(body),
            )
            .await;
        assert_eq!(reply.status, 400, "{}", reply.text);
    }

    // Garbage on the wire, carrying the credentials: a broken header line, a truncated
    // request, a bad chunked body.
    let garbage = [
        format!(
            "GET {stream}?token={token} HTTP/1.1\r\nauthorization: Bearer {KEY}\r\n\
             cookie: {cookie}\r\nbad header line\r\n\r\n"
        ),
        format!(
            "GET {stream}?token={token} HTTP/1.1\r\nAuthorization: Bearer {KEY}\r\nCookie: {cookie}\r\n"
        ),
        format!(
            "POST /v2/sessions/{id}/events?token={token} HTTP/1.1\r\nhost: x\r\n\
             authorization: Bearer {KEY}\r\ncookie: {cookie}\r\n\
             content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"
        ),
        format!("G\u{1}T /x?token={token} HTTP/1.1\r\nAuthorization: Bearer {KEY}\r\n\r\n"),
    ];
    for request in &garbage {
        raw(addr, request.as_bytes()).await;
    }

    // Proxied requests (headers logged by the proxy at debug) and a failing upstream.
    for path in ["/echo", "/dead"] {
        let reply = c
            .send_call(
                c.get(&format!("{path}?token={token}&tokens={other_token}"))
                    .bearer(KEY)
                    .header("cookie", &cookie),
            )
            .await;
        assert!(
            reply.status == 200 || reply.status == 502,
            "{path}: {}",
            reply.text
        );
    }

    // The gateway is still fine, then stops; everything it wrote is read.
    let alive = c.send_call(c.get(&format!("{stream}x")).bearer(KEY)).await;
    assert!(alive.status.is_client_error());
    let status = gateway.terminate();
    assert!(status.success(), "exit {status:?}");
    let output = within("the output", async { gateway.output() }).await;
    if let Ok(file) = std::env::var("AGENTGATE_TEST_LOG_DUMP") {
        std::fs::write(format!("{file}.{log_format}"), &output).expect("dump");
    }

    // The search can find things: trace output is there, with the requests' paths.
    assert!(output.contains("TRACE"), "no trace output");
    assert!(output.contains(&format!("/v2/sessions/{id}/stream")));
    let mut leaks = Vec::new();
    for (what, secret) in [
        ("API key", KEY),
        ("stream token", token.as_str()),
        ("other stream token", other_token.as_str()),
        ("token signature", token.rsplit('.').next().unwrap()),
        ("cookie", COOKIE),
        ("token secret", SECRET),
        ("idempotency key", IDEMPOTENCY_KEY),
    ] {
        for line in output.lines().filter(|l| l.contains(secret)) {
            leaks.push(format!("{what}: {line}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "credentials in the logs:\n{}",
        leaks.join("\n")
    );

    // Closed streams are not server errors.
    let errors: Vec<_> = output
        .lines()
        .filter(|l| l.contains(" 500") || (l.contains("ERROR") && l.contains("/stream")))
        .collect();
    assert!(
        errors.is_empty(),
        "closed streams logged as errors:\n{}",
        errors.join("\n")
    );
    assert!(
        output
            .lines()
            .any(|l| l.contains("DEBUG") && l.contains("client went away")),
        "no DEBUG line for a client that went away"
    );
}

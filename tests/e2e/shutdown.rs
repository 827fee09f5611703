//! Graceful shutdown ends open SSE streams cleanly, answers a keep-alive request already on
//! its way, then returns.

use std::time::Duration;

use serde_json::json;

use crate::client::within;
use crate::gateway::{Gateway, KEY, SECRET, blocking, deltas, ids, memory_config};
use crate::process::Process;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_open_streams_cleanly() {
    // A grace far beyond the test's wait: if streams were not ended by shutdown, stop()
    // would sit out the grace and the test would time out instead of passing by accident.
    let gateway = Gateway::start_with_grace(&memory_config(), Duration::from_secs(600)).await;
    let quiet = gateway.init().await;
    let mut idle = gateway.stream(&quiet).await;
    let session = gateway.init().await;
    let mut busy = gateway.stream(&session).await;
    let sent = gateway.append(&session, &deltas(0, 3)).await;
    assert_eq!(ids(&busy.events(3).await), sent);
    // An idle keep-alive connection in the client's pool must not hold shutdown up either.
    gateway.append(&session, &[json!({"kind": "x"})]).await;
    assert_eq!(busy.next_event().await.unwrap().event.as_deref(), Some("x"));

    let stop = tokio::spawn(gateway.stop());
    for (name, stream) in [("idle", &mut idle), ("busy", &mut busy)] {
        loop {
            match within(&format!("the {name} stream to end"), stream.try_next()).await {
                Ok(Some(frame)) if frame.event.is_none() => continue, // heartbeat or retry
                Ok(Some(frame)) => panic!("{name} stream: unexpected event {frame:?}"),
                Ok(None) => break,
                Err(e) => panic!("{name} stream ended with an error, not cleanly: {e:?}"),
            }
        }
    }
    within("stop() to return", stop).await.unwrap();
}

/// Reads one HTTP/1.1 response with a `content-length` body from `conn`: its head, lower-case.
fn read_response(conn: &mut std::net::TcpStream) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        bytes.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if bytes.len() >= end + 4 + length {
                return Ok(text[..end].to_owned());
            }
        }
    }
}

/// A keep-alive client whose next request is on its way when a graceful stop begins is
/// answered, told to close (`Connection: close`), not cut: closing idle connections at once
/// would fail that request with a read error (bench/faults.sh saw it under `wrk` during
/// upgrades).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_arriving_as_the_stop_begins_is_answered_not_cut() {
    use std::io::Write;
    let mut gateway = blocking(|| {
        Process::start_with_log(
            &format!(
                r#"
[server]
listen = "127.0.0.1:0"
threads = 1
shutdown_grace_secs = 30
[auth]
api_keys = ["{KEY}"]
stream_token_secret = "{SECRET}"
[agent]
dispatch = "none"
"#
            ),
            "info",
        )
    });
    let request = b"GET /healthz HTTP/1.1\r\nhost: gateway\r\n\r\n";
    let mut conn = std::net::TcpStream::connect(gateway.addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    conn.write_all(request).expect("first request");
    let first = read_response(&mut conn).expect("first answer");
    assert!(first.starts_with("http/1.1 200"), "{first}");

    // The connection is idle, kept alive, when the stop begins.
    blocking(|| {
        gateway.stop_gracefully();
        gateway.line_where(|line| line.contains("draining"));
    });
    conn.write_all(request).expect("second request");
    let second = read_response(&mut conn).expect("the request on its way is answered");
    assert!(second.starts_with("http/1.1 200"), "{second}");
    assert!(second.contains("connection: close"), "{second}");
    assert!(blocking(|| gateway.wait_exit()).success());
}

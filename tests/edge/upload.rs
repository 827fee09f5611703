//! A 100 MiB upload streams through an upstream route with bounded buffering.
//!
//! The body is generated on the fly (byte `i` is `i % 251`, so a lost, repeated or
//! reordered chunk shows) and checked byte by byte by the origin. The origin stops reading
//! after the first MiB until the test lets it go on: a proxy that streams makes the client's
//! writer stall with at most socket buffers' worth of bytes in flight; one that buffers the
//! upload lets the client run ahead by far more, which the test catches.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;

use crate::client::within;
use crate::edge::{Edge, eventually};
use crate::origin::{Origin, text};

/// Size of the upload.
const TOTAL: u64 = 100 * 1024 * 1024;
/// Size of the chunks the client sends.
const CHUNK: usize = 64 * 1024;
/// Period of the byte pattern (a prime, so chunk boundaries fall at every phase).
const PERIOD: usize = 251;
/// The origin reads this much, then waits for the test.
const HOLD_AT: u64 = 1024 * 1024;
/// Most bytes the client may get ahead of the origin: a generous bound on the gateway's
/// two socket buffers (loopback autotuning grows them to a few MiB) plus the proxy's own
/// small channel, far below the 100 MiB a buffering proxy would accept.
const MAX_AHEAD: u64 = 32 * 1024 * 1024;

/// Send buffer of the client's socket and receive buffer of the origin's.
const SOCKET_BUFFER: u32 = 128 * 1024;

/// `PERIOD + CHUNK` bytes of the pattern: any `len <= CHUNK` bytes at any offset are a
/// slice of it.
fn pattern() -> Bytes {
    (0..PERIOD + CHUNK).map(|i| (i % PERIOD) as u8).collect()
}

/// The pattern bytes at `offset..offset + len` (`len <= CHUNK`).
fn expected(pattern: &Bytes, offset: u64, len: usize) -> Bytes {
    let start = (offset % PERIOD as u64) as usize;
    pattern.slice(start..start + len)
}

/// The upload body: [`TOTAL`] pattern bytes made chunk by chunk as the connection asks,
/// counting what it has handed out in `sent`.
struct Generated {
    pattern: Bytes,
    offset: u64,
    sent: Arc<AtomicU64>,
}

impl Body for Generated {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let left = TOTAL - self.offset;
        if left == 0 {
            return Poll::Ready(None);
        }
        let len = CHUNK.min(left as usize);
        let chunk = expected(&self.pattern, self.offset, len);
        self.offset += len as u64;
        self.sent.store(self.offset, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset == TOTAL
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(TOTAL - self.offset)
    }
}

/// Peak resident memory of this process, in bytes (Linux `VmHWM`).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_upload_streams_through_with_bounded_buffering() {
    let read = Arc::new(AtomicU64::new(0));
    let go_on = Arc::new(Notify::new());
    let origin = {
        let (read, go_on) = (Arc::clone(&read), Arc::clone(&go_on));
        // Small socket buffers on our own sockets (the origin's and the client's), so what
        // the client can get ahead is mostly what the gateway holds.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(SOCKET_BUFFER).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        Origin::serve(socket.listen(16).unwrap(), move |req| {
            let (read, go_on) = (Arc::clone(&read), Arc::clone(&go_on));
            Box::pin(async move {
                let pattern = pattern();
                let mut body = req.into_body();
                let (mut offset, mut bad, mut held) = (0u64, 0u64, false);
                while let Some(frame) = body.frame().await {
                    let Ok(data) = frame.map(|f| f.into_data()) else {
                        return text(StatusCode::BAD_REQUEST, "body failed");
                    };
                    let Ok(data) = data else { continue };
                    for piece in data.chunks(CHUNK) {
                        if piece != &expected(&pattern, offset, piece.len())[..] {
                            bad += 1;
                        }
                        offset += piece.len() as u64;
                    }
                    read.store(offset, Ordering::SeqCst);
                    if !held && offset >= HOLD_AT {
                        held = true;
                        go_on.notified().await;
                    }
                }
                text(StatusCode::OK, format!("{offset} bytes, {bad} bad pieces"))
            })
        })
    };
    let edge = Edge::proxying_to(origin.addr).await;

    // A connection of our own, so the body's progress is ours to watch.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(SOCKET_BUFFER).unwrap();
    let stream = socket.connect(edge.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let sent = Arc::new(AtomicU64::new(0));
    let request = Request::post(format!("http://{}/upload", edge.addr))
        .header("content-length", TOTAL)
        .header("content-type", "application/octet-stream")
        .body(Generated {
            pattern: pattern(),
            offset: 0,
            sent: Arc::clone(&sent),
        })
        .unwrap();
    let response = tokio::spawn(async move { sender.send_request(request).await });

    eventually(
        "the origin to read its first MiB",
        400,
        Duration::from_millis(25),
        || async { read.load(Ordering::SeqCst) >= HOLD_AT },
    )
    .await;
    // The origin is holding. Watch the client until its writer has stalled (no progress
    // for 20 polls in a row); it must never get more than MAX_AHEAD past the origin.
    let (mut last, mut still) = (sent.load(Ordering::SeqCst), 0);
    for _ in 0..800 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let (now, at_origin) = (sent.load(Ordering::SeqCst), read.load(Ordering::SeqCst));
        assert!(
            now < at_origin + MAX_AHEAD,
            "the upload is being buffered: client sent {now} bytes, origin read {at_origin}"
        );
        if now == last {
            still += 1;
            if still == 20 {
                break;
            }
        } else {
            (last, still) = (now, 0);
        }
    }
    assert_eq!(
        still, 20,
        "the client never stalled while the origin held the body"
    );
    let (stalled_at, held_at) = (sent.load(Ordering::SeqCst), read.load(Ordering::SeqCst));
    eprintln!("stalled: client sent {stalled_at}, origin read {held_at}");
    assert!(
        stalled_at < TOTAL,
        "the whole upload was accepted while the origin held"
    );

    go_on.notify_one();
    let response = within("the upload's response", response)
        .await
        .expect("request task")
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let body = within("the upload's response body", response.into_body().collect())
        .await
        .expect("response body")
        .to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("{TOTAL} bytes, 0 bad pieces")
    );
    assert_eq!(sent.load(Ordering::SeqCst), TOTAL);
    if let Some(peak) = peak_rss() {
        eprintln!("peak RSS {} MiB", peak >> 20);
        // The gateway runs in this process: had it held the upload, it would show here.
        assert!(
            peak < 80 * 1024 * 1024,
            "peak RSS {peak} bytes: was the upload held in memory?"
        );
    }
    edge.stop().await;
}

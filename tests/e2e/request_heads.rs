//! Request heads at the edge, with the default configuration (no read buffer in front of
//! the socket): a head far larger than any buffer is read and served, with the connection
//! kept for the next request; pipelined requests answered in order; a malformed head gets
//! `400` and `CONNECT` gets `405`, each closing the connection.

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::within;
use crate::gateway::{Gateway, KEY, memory_config};

/// Sends `request` on `tcp` and reads one response (head, and body by its
/// `content-length`); returns its status line.
async fn exchange(tcp: &mut TcpStream, request: &[u8]) -> String {
    tcp.write_all(request).await.unwrap();
    response(tcp, &mut Vec::new()).await
}

/// Reads the next response on `tcp` (head, and body by its `content-length`), `seen`
/// holding what was read past the previous one; returns its status line and leaves in
/// `seen` what follows it.
async fn response(tcp: &mut TcpStream, seen: &mut Vec<u8>) -> String {
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = within("a response head", tcp.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed before a response head");
        seen.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&seen[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, value)| value.trim().parse().unwrap());
    while seen.len() < head_end + length {
        let n = within("a response body", tcp.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed inside a response body");
        seen.extend_from_slice(&buf[..n]);
    }
    seen.drain(..head_end + length);
    head.lines().next().unwrap_or_default().to_owned()
}

/// Reads until the gateway closes `tcp` (what is left of a response is skipped).
async fn closed(tcp: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    while within("the connection to close", tcp.read(&mut buf))
        .await
        .is_ok_and(|n| n > 0)
    {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_heads_are_served_and_bad_heads_are_refused() {
    let config = memory_config();
    assert_eq!(
        config.server.read_buffer_bytes, 0,
        "the default is unbuffered"
    );
    let gateway = Gateway::start(&config).await;
    let addr = gateway.client.addr();

    // 64 headers of 1 KiB: 64 KiB of head, read without any buffer in front of the socket.
    let filler: String = (0..64)
        .map(|i| format!("x-filler-{i}: {}\r\n", "f".repeat(1024)))
        .collect();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let large = format!(
        "POST /v2/sessions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {KEY}\r\n\
         content-type: application/json\r\ncontent-length: 2\r\n{filler}\r\n{{}}"
    );
    let status = exchange(&mut tcp, large.as_bytes()).await;
    assert!(status.contains("201"), "large head: {status}");
    // The same connection serves the next request.
    let status = exchange(&mut tcp, b"GET /healthz HTTP/1.1\r\nhost: gw\r\n\r\n").await;
    assert!(status.contains("200"), "after a large head: {status}");

    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let status = exchange(
        &mut tcp,
        b"GET /healthz HTTP/1.1\r\nbad header line\r\n\r\n",
    )
    .await;
    assert!(
        status.contains(StatusCode::BAD_REQUEST.as_str()),
        "malformed head: {status}"
    );
    closed(&mut tcp).await;

    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let status = exchange(
        &mut tcp,
        b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n",
    )
    .await;
    assert!(
        status.contains(StatusCode::METHOD_NOT_ALLOWED.as_str()),
        "CONNECT: {status}"
    );
    closed(&mut tcp).await;

    gateway.stop().await;
}

/// A keep-alive client may send its next request before the previous exchange is over —
/// pipelined, or just racing the gateway's watch on the connection while the response is
/// written. Both requests are answered, in order, on the same connection (before, the bytes
/// of the next request failed the connection: "Sent data after end of body").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let gateway = Gateway::start(&memory_config()).await;
    let mut tcp = TcpStream::connect(gateway.client.addr()).await.unwrap();
    let create = format!(
        "POST /v2/sessions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {KEY}\r\n\
         content-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
    );
    // Three requests in one write: a body in the middle, a 404 last.
    let pipelined = format!(
        "GET /healthz HTTP/1.1\r\nhost: gw\r\n\r\n{create}GET /nowhere HTTP/1.1\r\nhost: gw\r\n\r\n"
    );
    tcp.write_all(pipelined.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let statuses = [
        response(&mut tcp, &mut seen).await,
        response(&mut tcp, &mut seen).await,
        response(&mut tcp, &mut seen).await,
    ];
    assert!(statuses[0].contains("200"), "{statuses:?}");
    assert!(statuses[1].contains("201"), "{statuses:?}");
    assert!(statuses[2].contains("404"), "{statuses:?}");
    // The connection is still good for more.
    let status = exchange(&mut tcp, b"GET /healthz HTTP/1.1\r\nhost: gw\r\n\r\n").await;
    assert!(status.contains("200"), "{status}");
    gateway.stop().await;
}

//! The bridge writes response frames that are ready together as one chunk (one write), and
//! never waits for a frame to join: a stream that keeps up gets every frame on its own. A
//! body complete before its head goes out with its length, in one write with the head.
//! Read on a raw connection, so the chunk boundaries the gateway wrote are visible.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use agentgate_proxy::{Route, RouteTable, route_service};
use bytes::Bytes;
use http::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::client::within;
use crate::edge::Edge;
use crate::origin::{OriginBody, channel_body};

/// A gateway whose one route answers with the next body handed to `bodies`.
fn gateway() -> (Edge, mpsc::UnboundedSender<OriginBody>) {
    let (tx, rx) = mpsc::unbounded_channel::<OriginBody>();
    let rx = Arc::new(Mutex::new(rx));
    let service = tower::service_fn(move |_req: Request<_>| {
        let body = rx
            .lock()
            .unwrap()
            .try_recv()
            .expect("a body for the request");
        async move { Ok::<_, Infallible>(Response::new(body)) }
    });
    let mut table = RouteTable::new();
    table.push(Route {
        name: "frames".to_owned(),
        host: None,
        path_prefix: "/".to_owned(),
        methods: Vec::new(),
        service: route_service(service),
    });
    (Edge::from_table(table, Vec::new()), tx)
}

/// A raw HTTP/1.1 response read chunk by chunk.
struct Chunks {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Chunks {
    async fn get(edge: &Edge) -> Self {
        let (chunks, head) = Self::head(edge).await;
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        chunks
    }

    /// Sends the request; the connection and the response head (lower case).
    async fn head(edge: &Edge) -> (Self, String) {
        let mut stream = TcpStream::connect(edge.addr).await.unwrap();
        stream
            .write_all(b"GET /frames HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        let mut chunks = Self {
            stream,
            buf: Vec::new(),
        };
        let head = chunks.until(b"\r\n\r\n").await;
        let head = String::from_utf8_lossy(&head).to_lowercase();
        (chunks, head)
    }

    /// Bytes up to and including `end`, reading as needed.
    async fn until(&mut self, end: &[u8]) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.windows(end.len()).position(|w| w == end) {
                return self.buf.drain(..i + end.len()).collect();
            }
            let mut more = [0u8; 4096];
            let n = self.stream.read(&mut more).await.unwrap();
            assert!(n > 0, "connection closed mid-response");
            self.buf.extend_from_slice(&more[..n]);
        }
    }

    /// The next chunk's data; empty for the last chunk.
    async fn next(&mut self) -> Bytes {
        let size = self.until(b"\r\n").await;
        let size = usize::from_str_radix(std::str::from_utf8(&size).unwrap().trim(), 16).unwrap();
        let data = self.until(b"\r\n").await;
        assert_eq!(data.len(), size + 2, "chunk of {size} bytes");
        Bytes::copy_from_slice(&data[..size])
    }
}

#[tokio::test]
async fn frames_ready_together_go_out_as_one_chunk() {
    let (edge, bodies) = gateway();
    let (tx, body, _dropped) = channel_body();
    for frame in ["a\n", "b\n", "c\n"] {
        tx.send(Bytes::from(frame)).await.unwrap();
    }
    bodies.send(body).unwrap();
    let mut chunks = Chunks::get(&edge).await;
    let first = within("the first chunk", chunks.next()).await;
    assert_eq!(first, "a\nb\nc\n", "the three ready frames as one chunk");
    drop(tx); // the body ends after the three
    assert_eq!(within("the last chunk", chunks.next()).await, "");
    edge.stop().await;
}

#[tokio::test]
async fn a_body_complete_before_its_head_goes_out_with_its_length() {
    let (edge, bodies) = gateway();
    let (tx, body, _dropped) = channel_body();
    for frame in ["a\n", "b\n", "c\n"] {
        tx.send(Bytes::from(frame)).await.unwrap();
    }
    drop(tx); // the body ends after the three, before the gateway writes anything
    bodies.send(body).unwrap();
    let (mut response, head) = Chunks::head(&edge).await;
    assert!(head.contains("content-length: 6"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    let body = within("the body", response.until(b"c\n")).await;
    assert_eq!(body, b"a\nb\nc\n");
    edge.stop().await;
}

#[tokio::test]
async fn a_stream_that_keeps_up_gets_each_frame_as_it_comes() {
    let (edge, bodies) = gateway();
    let (tx, body, _dropped) = channel_body();
    bodies.send(body).unwrap();
    let mut chunks = Chunks::get(&edge).await;
    for n in 0..5 {
        let frame = format!("frame {n}\n");
        tx.send(Bytes::from(frame.clone())).await.unwrap();
        // The next frame is sent only once this one has arrived: a bridge that waited for
        // more before writing would stall here until `within` fails.
        assert_eq!(within("the frame", chunks.next()).await, frame);
    }
    drop(tx);
    assert_eq!(within("the last chunk", chunks.next()).await, "");
    edge.stop().await;
}

#[tokio::test]
async fn a_whole_body_larger_than_one_coalesced_write_keeps_its_full_length() {
    use http_body_util::{BodyExt, Full};

    let (edge, bodies) = gateway();
    // More than the 64 KiB the bridge joins into its first write, known length.
    let payload = Bytes::from(vec![b'z'; 100 * 1024]);
    bodies
        .send(Full::new(payload.clone()).map_err(|e| match e {}).boxed())
        .unwrap();
    let (mut response, head) = Chunks::head(&edge).await;
    assert!(head.contains("content-length: 102400"), "{head}");
    while response.buf.len() < payload.len() {
        let mut more = [0u8; 8192];
        let n = within("the body", response.stream.read(&mut more))
            .await
            .unwrap();
        assert!(
            n > 0,
            "connection closed after {} bytes",
            response.buf.len()
        );
        response.buf.extend_from_slice(&more[..n]);
    }
    assert_eq!(response.buf, payload);
    edge.stop().await;
}

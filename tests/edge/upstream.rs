//! The upstream client of upstream routes (a tower service on a pooled hyper client):
//! `Upgrade` pass-through, a retried connect that still carries the request body, the
//! read timeout on the response head, forwarding headers.

use std::net::SocketAddr;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::client::within;
use crate::edge::{Edge, peers};
use crate::origin::{Origin, text};

/// Reads from `stream` until `\r\n\r\n`; returns the head.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.expect("read head");
        assert_eq!(n, 1, "connection closed inside a head: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("ascii head")
}

/// An origin that switches every connection to an echo protocol: it answers the upgrade
/// request `101`, then sends back every byte it receives until the client closes. It
/// sends what request head it got on the channel.
async fn echo_origin() -> (SocketAddr, tokio::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("addr");
    let (heads, seen) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let heads = heads.clone();
            tokio::spawn(async move {
                let head = read_head(&mut conn).await;
                let _ = heads.send(head).await;
                conn.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\n",
                )
                .await
                .expect("101");
                let mut buf = [0u8; 1024];
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn an_upgrade_joins_client_and_peer_both_ways_until_the_client_closes() {
    let (origin, mut heads) = echo_origin().await;
    let edge = Edge::proxying_to(origin).await;
    let mut conn = TcpStream::connect(edge.addr).await.expect("connects");
    conn.write_all(
        b"GET /chat HTTP/1.1\r\nhost: edge\r\nconnection: Upgrade\r\nupgrade: echo\r\n\r\n",
    )
    .await
    .expect("upgrade request");
    let head = within("the 101", read_head(&mut conn)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );
    let upstream_head = within("the origin's request", heads.recv())
        .await
        .expect("origin saw the request")
        .to_ascii_lowercase();
    assert!(upstream_head.contains("upgrade: echo"), "{upstream_head}");
    assert!(
        upstream_head.contains("connection: upgrade"),
        "{upstream_head}"
    );
    assert!(
        upstream_head.contains("x-forwarded-for: 127.0.0.1"),
        "{upstream_head}"
    );

    // Both directions, several round trips, on the joined connection.
    for message in ["ping", "a longer message", "pong"] {
        conn.write_all(message.as_bytes()).await.expect("write");
        let mut echoed = vec![0u8; message.len()];
        within("the echo", conn.read_exact(&mut echoed))
            .await
            .expect("echo");
        assert_eq!(echoed, message.as_bytes());
    }
    // The client closes its side: the peer sees the end and closes, so the gateway does too.
    conn.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    within("the gateway to close", conn.read_to_end(&mut rest))
        .await
        .expect("closed cleanly");
    assert!(rest.is_empty(), "{rest:?}");
    edge.stop().await;
}

#[tokio::test]
async fn a_failed_connect_is_retried_on_another_peer_with_the_whole_body() {
    let live = Origin::with_handler(|req| {
        Box::pin(async move {
            let body = req.into_body().collect().await.expect("body").to_bytes();
            text(StatusCode::OK, body)
        })
    })
    .await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        listener.local_addr().expect("addr")
        // dropped here: connections to it are refused
    };
    let edge = Edge::from_toml(&format!(
        r#"
[[routes]]
name = "all"
kind = "upstream"
upstream = "pool"
[upstreams.pool]
peers = [{}]
retry_connect = true
"#,
        peers(&[closed, live.addr])
    ))
    .await;
    // Round robin: half of these try the closed peer first.
    for i in 0..6 {
        let body = Bytes::from(format!("payload number {i}"));
        let reply = edge
            .client
            .send_call(edge.client.post("/echo").body(body.clone()))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.text.as_bytes(), &body[..]);
    }
    assert_eq!(live.requests(), 6);
    edge.stop().await;
}

#[tokio::test]
async fn a_peer_that_sends_no_head_in_time_gets_a_504() {
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = silent.local_addr().expect("addr");
    // Accepts and reads, never answers; the connection is held until the test ends.
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let edge = Edge::from_toml(&format!(
        r#"
[[routes]]
name = "all"
kind = "upstream"
upstream = "slow"
[upstreams.slow]
peers = [{}]
read_timeout_ms = 200
"#,
        peers(&[addr])
    ))
    .await;
    let reply = edge.client.send_call(edge.client.get("/slow")).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{}", reply.text);
    assert_eq!(reply.error_code(), "gateway_timeout");
    assert!(reply.header("x-request-id").is_some());
    hold.abort();
    edge.stop().await;
}

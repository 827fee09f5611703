//! Load balancing across two origins: round robin, consistent hashing on a header, and
//! failover when a peer refuses connections.

use http::StatusCode;

use crate::edge::{Edge, peers};
use crate::origin::Origin;

/// `[[routes]]` sending everything to `[upstreams.pool]`, whose table body is `pool`.
fn pool_config(pool: &str) -> String {
    format!(
        r#"
[[routes]]
name = "all"
kind = "upstream"
upstream = "pool"
[upstreams.pool]
{pool}
"#
    )
}

/// `GET path` with `headers`; asserts 200 and returns the name of the origin that answered.
async fn served_by(edge: &Edge, path: &str, headers: &[(&str, &str)]) -> String {
    let mut call = edge.client.get(path);
    for (name, value) in headers {
        call = call.header(name, value);
    }
    let reply = edge.client.send_call(call).await;
    assert_eq!(reply.status, StatusCode::OK, "GET {path}: {}", reply.text);
    reply.text
}

#[tokio::test]
async fn round_robin_alternates_between_two_origins() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let edge = Edge::from_toml(&pool_config(&format!(
        "peers = [{}]\nbalance = \"round_robin\"",
        peers(&[a.addr, b.addr])
    )))
    .await;

    let mut order = Vec::new();
    for _ in 0..10 {
        order.push(served_by(&edge, "/rr", &[]).await);
    }
    // pingora's round robin is a counter bumped once per pick: with both peers healthy and
    // requests one at a time, consecutive requests always go to different peers.
    for pair in order.windows(2) {
        assert_ne!(pair[0], pair[1], "not alternating: {order:?}");
    }
    assert_eq!((a.requests(), b.requests()), (5, 5), "{order:?}");
    edge.stop().await;
}

#[tokio::test]
async fn consistent_hash_on_a_header_keeps_a_user_on_one_origin() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let edge = Edge::from_toml(&pool_config(&format!(
        "peers = [{}]\nbalance = \"consistent_hash\"\nhash_on = \"header:x-user\"",
        peers(&[a.addr, b.addr])
    )))
    .await;

    // The same key always lands on the same origin.
    for user in ["alice", "bob"] {
        let first = served_by(&edge, "/h", &[("x-user", user)]).await;
        for _ in 0..19 {
            let next = served_by(&edge, "/h", &[("x-user", user)]).await;
            assert_eq!(next, first, "x-user {user} moved between origins");
        }
    }
    // Different keys spread over both (32 keys all on one of two peers: ~2^-31).
    let mut by_origin = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..32 {
        let user = format!("user-{i}");
        *by_origin
            .entry(served_by(&edge, "/h", &[("x-user", &user)]).await)
            .or_default() += 1;
    }
    assert_eq!(by_origin.len(), 2, "keys did not spread: {by_origin:?}");
    edge.stop().await;
}

#[tokio::test]
async fn a_refused_connection_fails_over_to_the_live_peer() {
    let live = Origin::start("live").await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
        // dropped here: connections to it are refused
    };
    let edge = Edge::from_toml(&pool_config(&format!(
        "peers = [{}]\nretry_connect = true",
        peers(&[closed, live.addr])
    )))
    .await;

    for i in 0..20 {
        assert_eq!(served_by(&edge, &format!("/f/{i}"), &[]).await, "live");
    }
    assert_eq!(live.requests(), 20);
    edge.stop().await;
}

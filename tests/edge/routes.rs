//! The route table from TOML: host and method matching, the JSON 404, and the headers the
//! gateway adds on the way to an origin (`x-request-id`, `x-forwarded-*`).

use http::{Method, StatusCode};

use crate::edge::{Edge, peers};
use crate::origin::Origin;

/// Routes, in match order: host `a.example` → a; `POST /write/` → b; `/b/` → b.
async fn gateway(a: &Origin, b: &Origin) -> Edge {
    Edge::from_toml(&format!(
        r#"
[[routes]]
name = "by-host"
kind = "upstream"
host = "a.example"
upstream = "a"
[[routes]]
name = "writes"
kind = "upstream"
path_prefix = "/write/"
methods = ["POST"]
upstream = "b"
[[routes]]
name = "b"
kind = "upstream"
path_prefix = "/b/"
upstream = "b"
[upstreams.a]
peers = [{}]
[upstreams.b]
peers = [{}]
"#,
        peers(&[a.addr]),
        peers(&[b.addr])
    ))
    .await
}

#[tokio::test]
async fn routes_match_by_host_path_and_method() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let edge = gateway(&a, &b).await;
    let client = &edge.client;

    // Unknown path: JSON 404.
    let reply = client.send_call(client.get("/nowhere")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.error_code(), "not_found", "{}", reply.text);

    // Host match, case-insensitive, port ignored; wins over the path routes below it.
    for host in ["a.example", "A.Example:8443"] {
        let reply = client
            .send_call(client.get("/b/x").header("host", host))
            .await;
        assert_eq!(
            (reply.status, reply.text.as_str()),
            (StatusCode::OK, "a"),
            "{host}"
        );
    }
    let reply = client
        .send_call(client.get("/b/x").header("host", "other.example"))
        .await;
    assert_eq!(reply.text, "b");

    // Method filter: POST /write/ matches, GET /write/ matches no route.
    let reply = client.send_call(client.post("/write/x").body("data")).await;
    assert_eq!((reply.status, reply.text.as_str()), (StatusCode::OK, "b"));
    let reply = client.send_call(client.call(Method::GET, "/write/x")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);

    assert_eq!(a.requests(), 2);
    let methods: Vec<Method> = b.seen().into_iter().map(|s| s.method).collect();
    assert_eq!(methods, [Method::GET, Method::POST]);
    edge.stop().await;
}

#[tokio::test]
async fn request_ids_and_forwarding_headers_reach_the_origin() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let edge = gateway(&a, &b).await;
    let client = &edge.client;

    // No id sent: one is generated, echoed to the client and sent to the origin.
    let reply = client.send_call(client.get("/b/generated")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let generated = reply
        .header("x-request-id")
        .expect("a generated x-request-id in the response")
        .to_owned();
    assert!(!generated.is_empty());
    // An id sent by the client is kept.
    let reply = client
        .send_call(
            client
                .get("/b/given")
                .header("x-request-id", "client-id-42"),
        )
        .await;
    assert_eq!(reply.header("x-request-id"), Some("client-id-42"));
    // Two generated ids differ.
    let other = client.send_call(client.get("/b/generated")).await;
    assert_ne!(other.header("x-request-id"), Some(generated.as_str()));

    let seen = b.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].target, "/b/generated");
    assert_eq!(seen[0].header("x-request-id"), Some(generated.as_str()));
    assert_eq!(seen[1].header("x-request-id"), Some("client-id-42"));
    for request in &seen {
        assert_eq!(request.header("x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(request.header("x-forwarded-proto"), Some("http"));
    }
    edge.stop().await;
}

//! Paths are normalised before routing and forwarded normalised: the usual traversal
//! spellings either reach the route their normal path matches (and the origin sees that
//! path) or are refused with a JSON 400 naming the problem. Requests are written on a raw
//! connection, so the gateway gets exactly the bytes of the table (no client tidies them).

use http::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::within;
use crate::edge::{Edge, KEY, peers};
use crate::origin::Origin;

/// Status and body of a raw `method target` request with `headers` (each ending in CRLF)
/// and `body`; the connection is closed after it.
async fn raw(
    edge: &Edge,
    method: &str,
    target: &str,
    headers: &str,
    body: &str,
) -> (StatusCode, String) {
    let mut stream = TcpStream::connect(edge.addr).await.expect("connects");
    let request = format!(
        "{method} {target} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n{headers}\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("request written");
    let mut response = Vec::new();
    within("the response", stream.read_to_end(&mut response))
        .await
        .expect("response read");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or_else(String::new, |(_, body)| body.to_owned());
    (status, body)
}

/// What a spelling must come to.
enum Expect {
    /// Served by the named origin, which received this target.
    Routed(&'static str, &'static str),
    /// Refused: 400 with an error message containing this.
    Refused(&'static str),
}
use Expect::{Refused, Routed};

#[tokio::test]
async fn traversal_spellings_are_routed_by_their_normal_path_or_refused() {
    let (public, admin) = (Origin::start("public").await, Origin::start("admin").await);
    let edge = Edge::from_toml(&format!(
        r#"
[[routes]]
name = "public"
kind = "upstream"
path_prefix = "/public/"
upstream = "public"
[[routes]]
name = "admin"
kind = "upstream"
path_prefix = "/admin"
upstream = "admin"
[upstreams.public]
peers = [{}]
[upstreams.admin]
peers = [{}]
"#,
        peers(&[public.addr]),
        peers(&[admin.addr])
    ))
    .await;
    let table: &[(&str, Expect)] = &[
        ("/public/../admin", Routed("admin", "/admin")),
        ("/public/./../admin", Routed("admin", "/admin")),
        ("/public/%2e%2e/admin", Routed("admin", "/admin")),
        ("/public/%2E%2E/admin", Routed("admin", "/admin")),
        ("/public/.%2e/admin", Routed("admin", "/admin")),
        ("/public/%2e./admin", Routed("admin", "/admin")),
        ("/public/x/../../admin", Routed("admin", "/admin")),
        (
            "http://test/public/../admin?q=1",
            Routed("admin", "/admin?q=1"),
        ),
        ("/public/x/../y", Routed("public", "/public/y")),
        ("/public/%2e/y", Routed("public", "/public/y")),
        (
            "/public/%7euser/a%3bb?next=/../admin",
            Routed("public", "/public/~user/a%3Bb?next=/../admin"),
        ),
        ("/public/..%2fadmin", Refused("%2F")),
        ("/public/%2e%2e%2fadmin", Refused("%2F")),
        ("/public/%2E%2E%2Fadmin", Refused("%2F")),
        ("/public/..\\admin", Refused("'\\'")),
        ("/public/..%5cadmin", Refused("'\\'")),
        (
            "/public/%252e%252e/admin",
            Refused("double percent-encoding"),
        ),
        ("/public//../admin", Refused("empty segment")),
        ("//admin", Refused("empty segment")),
        ("/public/..;/admin", Refused("';' parameters")),
        ("/public/%2e%2e;/admin", Refused("';' parameters")),
        ("/../admin", Refused("above the root")),
        ("/public/../../admin", Refused("above the root")),
        ("/public/%00/admin", Refused("control characters")),
        (
            "/public/%0d%0aX-Injected:%201",
            Refused("control characters"),
        ),
        ("/public/%zz", Refused("two hex digits")),
        ("/public/%2", Refused("two hex digits")),
    ];
    let mut routed = Vec::new();
    for (target, expect) in table {
        let (status, body) = raw(&edge, "GET", target, "", "").await;
        match expect {
            Routed(origin, seen) => {
                assert_eq!(
                    (status, body.as_str()),
                    (StatusCode::OK, *origin),
                    "{target}"
                );
                routed.push((*origin, *seen));
            }
            Refused(naming) => {
                assert_eq!(status, StatusCode::BAD_REQUEST, "{target}: {body}");
                let json: Value = serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("{target}: not JSON ({e}): {body}"));
                assert_eq!(json["error"]["code"], "bad_request", "{target}: {body}");
                let message = json["error"]["message"].as_str().unwrap_or("");
                assert!(
                    message.starts_with("invalid request path") && message.contains(naming),
                    "{target}: {message}"
                );
            }
        }
    }
    // Each origin received exactly the routed requests, with their normal targets.
    for (name, origin) in [("public", &public), ("admin", &admin)] {
        let seen: Vec<String> = origin.seen().into_iter().map(|s| s.target).collect();
        let want: Vec<&str> = routed
            .iter()
            .filter(|(o, _)| *o == name)
            .map(|(_, t)| *t)
            .collect();
        assert_eq!(seen, want, "targets {name} received");
    }
    edge.stop().await;
}

#[tokio::test]
async fn in_process_services_see_the_normal_path() {
    let edge = Edge::agent_under_v2().await;
    // Matches /v2/ and the agent API serves it as POST /v2/sessions.
    let (status, body) = raw(
        &edge,
        "POST",
        "/v2/x/%2e%2e/sessions",
        &format!("authorization: Bearer {KEY}\r\ncontent-type: application/json\r\n"),
        "{}",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    edge.stop().await;
}

/// A route prefix that no normal path can start with is a startup error naming the route
/// and, where there is one, the prefix to write instead.
#[tokio::test]
async fn a_path_prefix_not_in_normal_form_is_refused_at_startup() {
    for (prefix, says) in [
        ("/public/%7euser/", r#"write "/public/~user/""#),
        ("/a/../b", r#"write "/b""#),
        ("/a//", "an empty segment"),
    ] {
        let config = crate::edge::config(&format!(
            "[[routes]]\nname = \"odd\"\nkind = \"agent\"\npath_prefix = {prefix:?}\n"
        ));
        let error = match agentgate::app::App::build(&config).await {
            Ok(_) => panic!("{prefix}: built"),
            Err(error) => error.to_string(),
        };
        assert!(
            error.starts_with("route odd: path_prefix") && error.contains(says),
            "{prefix}: {error}"
        );
    }
}

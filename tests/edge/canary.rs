//! Canary routing through the real gateway: a weighted second group, sticky per session,
//! pinned by header or cookie, and a cookie that keeps a session-less client where it drew.

use http::StatusCode;

use crate::client::Client;
use crate::edge::{Edge, peers};
use crate::origin::Origin;

/// `/api/` goes to `stable`, `weight` percent to `next`.
async fn gateway(stable: &Origin, next: &Origin, weight: u32) -> Edge {
    Edge::from_toml(&format!(
        r#"
[[routes]]
name = "api"
kind = "upstream"
path_prefix = "/"
upstream = "stable"
canary = {{ upstream = "next", weight = {weight} }}
[upstreams.stable]
peers = [{}]
[upstreams.next]
peers = [{}]
"#,
        peers(&[stable.addr]),
        peers(&[next.addr])
    ))
    .await
}

/// Which origin answered `path` with `headers`, and the `Set-Cookie` it came with.
async fn served_by(
    client: &Client,
    path: &str,
    headers: &[(&str, &str)],
) -> (String, Option<String>) {
    let mut request = client.get(path);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let reply = client.send_call(request).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
    (
        reply.text.clone(),
        reply.header("set-cookie").map(str::to_owned),
    )
}

#[tokio::test]
async fn sessions_stick_to_one_group_and_the_weight_sets_the_share() {
    let (stable, next) = (Origin::start("stable").await, Origin::start("next").await);
    let edge = gateway(&stable, &next, 20).await;
    let client = &edge.client;
    let mut on_canary = 0;
    for i in 0..100 {
        let id = format!("session-{i}");
        let (first, cookie) = served_by(client, &format!("/v2/sessions/{id}/events"), &[]).await;
        assert_eq!(cookie, None, "a session's placement needs no cookie");
        let (again, _) = served_by(client, &format!("/v2/sessions/{id}/stream"), &[]).await;
        let (by_header, _) = served_by(client, "/v2/other", &[("x-session-id", &id)]).await;
        assert_eq!((&again, &by_header), (&first, &first), "{id} moved");
        on_canary += usize::from(first == "next");
    }
    // A fixed hash over fixed ids: the share is exact for these ids, near 20 of 100.
    assert!(
        (8..=35).contains(&on_canary),
        "{on_canary} of 100 on the canary"
    );
    edge.stop().await;
}

#[tokio::test]
async fn pins_override_the_weight_and_a_draw_sets_a_cookie_that_sticks() {
    let (stable, next) = (Origin::start("stable").await, Origin::start("next").await);
    let edge = gateway(&stable, &next, 50).await;
    let client = &edge.client;
    let session = "/v2/sessions/pinned/events";
    for (pin, want) in [("canary", "next"), ("STABLE", "stable")] {
        let (by_header, _) = served_by(client, session, &[("x-agentgate-canary", pin)]).await;
        assert_eq!(by_header, want, "header pin {pin}");
        let cookie = format!("other=1; agentgate_canary={pin}");
        let (by_cookie, _) = served_by(client, session, &[("cookie", &cookie)]).await;
        assert_eq!(by_cookie, want, "cookie pin {pin}");
    }

    // No session, no pin: a draw, and a cookie naming what was drawn.
    let mut drawn = Vec::new();
    for _ in 0..40 {
        let (group, cookie) = served_by(client, "/index.html", &[]).await;
        let cookie = cookie.expect("a draw sets the pin cookie");
        let pair = cookie.split(';').next().unwrap_or_default().to_owned();
        let want = if group == "next" { "canary" } else { "stable" };
        assert_eq!(pair, format!("agentgate_canary={want}"));
        drawn.push((group, pair));
    }
    // At 50% both groups are drawn (40 draws all on one side: odds 2 in 10^12).
    assert!(drawn.iter().any(|(g, _)| g == "next") && drawn.iter().any(|(g, _)| g == "stable"));
    // The client that sends its cookie back stays where it drew, without a new cookie.
    for (group, pair) in drawn.iter().take(6) {
        for _ in 0..5 {
            let (again, cookie) = served_by(client, "/page", &[("cookie", pair)]).await;
            assert_eq!((&again, cookie), (group, None));
        }
    }
    edge.stop().await;
}

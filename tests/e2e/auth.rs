//! Who may call what: API keys on the agent side, per-session stream tokens on streams.

use std::time::Duration;

use agentgate::auth::StreamTokens;
use serde_json::json;

use crate::client::Reply;
use crate::gateway::{Gateway, KEY, OTHER_KEY, SECRET, blocking, redis_config};
use crate::support::redis_server::RedisServer;

fn assert_unauthorized(reply: &Reply, code: &str, what: &str) {
    assert_eq!(reply.status, 401, "{what}: {}", reply.text);
    assert_eq!(reply.error_code(), code, "{what}: {}", reply.text);
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer"),
        "{what}: WWW-Authenticate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_and_stream_tokens_are_enforced() {
    let redis = blocking(RedisServer::start);
    let gateway = Gateway::start(&redis_config(&redis)).await;
    let c = &gateway.client;
    let session = gateway.init().await;
    let other = gateway.init().await;
    let before = blocking(|| redis.keys());

    // Agent side: no key, a garbage key, the wrong scheme, a stream token as API key.
    let endpoints = [
        ("init", "/v2/sessions".to_owned()),
        ("append", session.path("events")),
        ("complete", session.path("complete")),
        ("tools", session.path("tools")),
    ];
    for (what, path) in &endpoints {
        let body = json!({"kind": "delta"});
        let none = c.send_call(c.post(path).json(&body)).await;
        assert_unauthorized(
            &none,
            "missing_credentials",
            &format!("{what} without a key"),
        );
        let garbage = c
            .send_call(c.post(path).bearer("garbage-garbage-garbage").json(&body))
            .await;
        assert_unauthorized(
            &garbage,
            "invalid_credentials",
            &format!("{what}, garbage key"),
        );
        let basic = c
            .send_call(
                c.post(path)
                    .header("authorization", &format!("Basic {KEY}"))
                    .json(&body),
            )
            .await;
        assert_unauthorized(
            &basic,
            "missing_credentials",
            &format!("{what}, Basic scheme"),
        );
        let token = c
            .send_call(c.post(path).bearer(&session.token).json(&body))
            .await;
        assert_unauthorized(
            &token,
            "invalid_credentials",
            &format!("{what}, stream token"),
        );
    }
    let state = c
        .send_call(c.get(&format!("/v2/sessions/{}", session.id)))
        .await;
    assert_unauthorized(&state, "missing_credentials", "state without a key");

    // Another key's session: 403 on append, complete and state; nothing written.
    let append = c
        .send_call(
            c.post(&session.path("events"))
                .bearer(OTHER_KEY)
                .json(&json!({"kind": "delta"})),
        )
        .await;
    assert_eq!(append.status, 403, "append: {}", append.text);
    assert_eq!(append.error_code(), "forbidden");
    let complete = c
        .send_call(
            c.post(&session.path("complete"))
                .bearer(OTHER_KEY)
                .json(&json!({"status": "cancelled"})),
        )
        .await;
    assert_eq!(complete.status, 403, "complete: {}", complete.text);
    assert_eq!(complete.error_code(), "forbidden");
    let state = c
        .send_call(
            c.get(&format!("/v2/sessions/{}", session.id))
                .bearer(OTHER_KEY),
        )
        .await;
    assert_eq!(state.status, 403, "state: {}", state.text);
    assert_eq!(state.error_code(), "forbidden");
    assert_eq!(
        blocking(|| redis.keys()),
        before,
        "a refused call wrote a key"
    );
    let owned = gateway.state(&session).await;
    assert_eq!(owned["status"], "running");
    assert_eq!(owned["event_count"], 0);
    assert_eq!(owned["updated_at"], owned["created_at"]);

    // Streams: no token, another session's token, forged, expired, malformed, an API key.
    let stream = session.path("stream");
    let refused = |reply: Result<_, Reply>, code: &str, what: &str| match reply {
        Ok(_) => panic!("{what}: stream accepted"),
        Err(reply) => assert_unauthorized(&reply, code, what),
    };
    refused(
        c.stream(c.get(&stream)).await,
        "missing_credentials",
        "no token",
    );
    refused(
        c.stream(c.get(&format!("{stream}?token={}", other.token)))
            .await,
        "invalid_credentials",
        "another session's token",
    );
    refused(
        c.stream(c.get(&stream).bearer(&other.token)).await,
        "invalid_credentials",
        "another session's token as bearer",
    );
    let id = session.id.parse().unwrap();
    let forged = StreamTokens::new(
        b"a-different-secret-a-different-secret",
        Duration::from_secs(60),
    )
    .issue(&id)
    .0;
    refused(
        c.stream(c.get(&format!("{stream}?token={forged}"))).await,
        "invalid_credentials",
        "token signed with another secret",
    );
    let expired = StreamTokens::new(SECRET.as_bytes(), Duration::ZERO)
        .issue(&id)
        .0;
    refused(
        c.stream(c.get(&format!("{stream}?token={expired}"))).await,
        "token_expired",
        "expired token",
    );
    // The signature covers the expiry: pushing it forward breaks the token.
    let (_, rest) = session.token.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let extended = format!("v1.99999999999.{sig}");
    refused(
        c.stream(c.get(&format!("{stream}?token={extended}"))).await,
        "invalid_credentials",
        "token with a forged expiry",
    );
    for garbage in ["garbage", "v1.x.y", "v2.1.abc", ""] {
        refused(
            c.stream(c.get(&format!("{stream}?token={garbage}"))).await,
            "invalid_credentials",
            &format!("token {garbage:?}"),
        );
    }
    refused(
        c.stream(c.get(&stream).bearer(KEY)).await,
        "invalid_credentials",
        "API key as stream token",
    );

    // The real token works in the query and as a bearer header; refusals wrote nothing.
    gateway.stream(&session).await;
    gateway.open(c.get(&stream).bearer(&session.token)).await;
    assert_eq!(blocking(|| redis.keys()), before);
}

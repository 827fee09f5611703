//! Stream tokens a client made up, on the real binary: one signed with the reference file's
//! secret but expiring in 2100, other spellings of a valid token, and rotating the secret
//! with `auth.stream_token_secrets` while viewers watch.

use std::time::Duration;

use agentgate::auth::StreamTokens;
use agentgate_config::REFERENCE_TOML;
use serde_json::{Value, json};

use crate::client::{Client, Reply};
use crate::gateway::{KEY, blocking};
use crate::process::Process;

/// The reference file on a free loopback port, without its admin listener.
fn reference_on_port_0() -> String {
    let src = REFERENCE_TOML
        .replace(
            "\nlisten = [\"127.0.0.1:8080\"]\n",
            "\nlisten = [\"127.0.0.1:0\"]\n",
        )
        .replace("\nadmin_listen = ", "\n# admin_listen = ");
    assert_ne!(src, REFERENCE_TOML, "listen line not found");
    src
}

fn assert_invalid(reply: Result<crate::client::SseStream, Reply>, message: &str, what: &str) {
    let reply = match reply {
        Ok(_) => panic!("{what}: stream accepted"),
        Err(reply) => reply,
    };
    assert_eq!(reply.status, 401, "{what}: {}", reply.text);
    assert_eq!(
        reply.error_code(),
        "invalid_credentials",
        "{what}: {}",
        reply.text
    );
    assert!(
        reply.error_message().contains(message),
        "{what}: message {:?} should contain {message:?}",
        reply.error_message()
    );
}

async fn init(client: &Client, key: &str) -> (String, String) {
    let reply = client
        .send_call(client.post("/v2/sessions").bearer(key).json(&json!({})))
        .await;
    assert_eq!(reply.status, 201, "init: {}", reply.text);
    let id = reply.json["id"].as_str().expect("id").to_owned();
    let token = reply.json["stream_token"]
        .as_str()
        .expect("token")
        .to_owned();
    (id, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_future_and_non_canonical_tokens_are_refused() {
    let gateway = blocking(|| Process::start(&reference_on_port_0()));
    let c = Client::new(gateway.addr);
    let reference = agentgate_config::Config::from_toml_str(REFERENCE_TOML).expect("valid");
    let (id, token) = init(&c, &reference.auth.api_keys[0]).await;
    let stream = format!("/v2/sessions/{id}/stream");

    // The issue's token: the published secret, an expiry in the year 2100.
    let years = Duration::from_secs(75 * 365 * 86_400);
    let secret = reference.auth.stream_token_secret.as_bytes();
    let (far, expires) = StreamTokens::new(secret, years).issue(&id.parse().unwrap());
    assert!(expires > 4_102_444_800, "2100-01-01 or later");
    assert_invalid(
        c.stream(c.get(&format!("{stream}?token={far}"))).await,
        "further ahead than auth.stream_token_ttl_secs",
        "a token expiring in 2100",
    );
    assert_invalid(
        c.stream(c.get(&stream).bearer(&far)).await,
        "further ahead",
        "a token expiring in 2100, as bearer",
    );
    let multiplexed = c
        .stream(c.get(&format!("/v2/stream?sessions={id}&tokens={far}")))
        .await;
    assert!(
        multiplexed.as_ref().err().is_some_and(|r| r.status == 401),
        "multiplexed stream with a 2100 token: {:?}",
        multiplexed.err().map(|r| r.text)
    );

    // Other spellings of the valid token: same expiry value, same signature bytes.
    let (_, rest) = token.split_once('.').unwrap();
    let (expiry, sig) = rest.split_once('.').unwrap();
    let last = sig.as_bytes()[sig.len() - 1];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let index = alphabet.iter().position(|&ch| ch == last).unwrap();
    let twin = char::from(alphabet[index ^ 1]); // differs only in the 2 unused bits
    for spelling in [
        format!("v1.0{expiry}.{sig}"),
        format!("v1.%2B{expiry}.{sig}"),
        format!("v1.{expiry}.{sig}%3D"),
        format!("v1.{expiry}.{}{twin}", &sig[..sig.len() - 1]),
        format!("v1.{expiry}.{sig}.extra"),
    ] {
        assert_invalid(
            c.stream(c.get(&format!("{stream}?token={spelling}"))).await,
            "not in the form",
            &format!("token {spelling:?}"),
        );
    }

    // The token as issued still works.
    let mut open = c
        .stream(c.get(&format!("{stream}?token={token}")))
        .await
        .unwrap_or_else(|r| panic!("the issued token: {}", r.text));
    open.expect_retry().await;
}

/// A memory gateway whose stream tokens use `secrets` (a TOML list).
fn rotating_config(secrets: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
[auth]
api_keys = ["{KEY}"]
stream_token_secrets = {secrets}
[agent]
dispatch = "none"
"#
    )
}

async fn append(c: &Client, id: &str, n: u64) {
    let reply = c
        .send_call(
            c.post(&format!("/v2/sessions/{id}/events"))
                .bearer(KEY)
                .json(&json!({"kind": "delta", "data": {"n": n}})),
        )
        .await;
    assert!(reply.status.is_success(), "append: {}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_token_secret_keeps_viewers_and_old_tokens() {
    const OLD: &str = "old-secret-old-secret-old-secret-0123";
    const NEW: &str = "new-secret-new-secret-new-secret-0123";
    let mut gateway = blocking(|| Process::start(&rotating_config(&format!(r#"["{OLD}"]"#))));
    let c = Client::new(gateway.addr);
    let (id, old_token) = init(&c, KEY).await;
    let stream = format!("/v2/sessions/{id}/stream");
    let mut viewer = c
        .stream(c.get(&format!("{stream}?token={old_token}")))
        .await
        .unwrap_or_else(|r| panic!("viewer: {}", r.text));
    viewer.expect_retry().await;

    // Rotate: the new secret signs, the old one still verifies.
    gateway.rewrite_config(&rotating_config(&format!(r#"["{NEW}", "{OLD}"]"#)));
    gateway.hangup();
    blocking(|| gateway.line_where(|l| l.contains("configuration reloaded")));
    append(&c, &id, 1).await;
    let event = viewer
        .next_event()
        .await
        .expect("the viewer is still connected");
    assert_eq!(event.json()["n"], Value::from(1));
    let mut again = c
        .stream(c.get(&format!("{stream}?token={old_token}")))
        .await
        .unwrap_or_else(|r| panic!("an old token after the rotation: {}", r.text));
    again.expect_retry().await;
    let (other, new_token) = init(&c, KEY).await;
    let other_id = other.parse().unwrap();
    let ttl = Duration::from_secs(86_400);
    assert_eq!(
        StreamTokens::new(NEW.as_bytes(), ttl).verify(&other_id, Some(&new_token)),
        Ok(()),
        "new tokens are signed with the first secret"
    );
    assert!(
        StreamTokens::new(OLD.as_bytes(), ttl)
            .verify(&other_id, Some(&new_token))
            .is_err()
    );

    // Retire the old secret: its tokens stop working, the new ones keep working.
    gateway.rewrite_config(&rotating_config(&format!(r#"["{NEW}"]"#)));
    gateway.hangup();
    blocking(|| gateway.line_where(|l| l.contains("configuration reloaded")));
    match c
        .stream(c.get(&format!("{stream}?token={old_token}")))
        .await
    {
        Ok(_) => panic!("a token of the retired secret was accepted"),
        Err(reply) => {
            assert_eq!(reply.status, 401, "{}", reply.text);
            assert_eq!(reply.error_code(), "invalid_credentials");
        }
    }
    let mut fresh = c
        .stream(c.get(&format!("/v2/sessions/{other}/stream?token={new_token}")))
        .await
        .unwrap_or_else(|r| panic!("a new token: {}", r.text));
    fresh.expect_retry().await;
}

//! `server.access_log` with `server.log_format = "json"`: the real binary writes one JSON
//! line per request with the request's method, path, status, sizes, duration, route, session
//! and request id.

use http::StatusCode;
use serde_json::{Value, json};

use crate::client::Client;
use crate::gateway::{KEY, SECRET, blocking};
use crate::process::Process;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_a_json_access_line() {
    let mut gateway = blocking(|| {
        Process::start(&format!(
            r#"
[server]
listen = "127.0.0.1:0"
threads = 1
log_format = "json"
access_log = true
[auth]
api_keys = ["{KEY}"]
stream_token_secret = "{SECRET}"
[agent]
dispatch = "none"
"#
        ))
    });
    let client = Client::new(gateway.addr);
    let init = client
        .send_call(client.post("/v2/sessions").bearer(KEY).json(&json!({})))
        .await;
    assert_eq!(init.status, StatusCode::CREATED);
    let id = init.json["id"].as_str().expect("id").to_owned();
    let path = format!("/v2/sessions/{id}/events");
    let append = client
        .send_call(
            client
                .post(&path)
                .bearer(KEY)
                .json(&json!({"kind": "delta", "data": {"n": 1}})),
        )
        .await;
    assert_eq!(append.status, StatusCode::OK);
    let request_id = append
        .header("x-request-id")
        .expect("request id")
        .to_owned();

    let line =
        blocking(|| gateway.line_where(|l| l.contains("agentgate::access") && l.contains(&path)));
    let entry: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(entry["method"], "POST", "{line}");
    assert_eq!(entry["path"], path.as_str());
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["route"], "agent");
    assert_eq!(entry["session"], id.as_str());
    assert_eq!(entry["request_id"], request_id.as_str());
    assert!(entry["bytes_in"].as_u64() > Some(0), "{line}");
    assert!(entry["bytes_out"].as_u64() > Some(0), "{line}");
    assert!(entry["duration_ms"].as_f64() >= Some(0.0), "{line}");
}

//! Tool batches, `POST /v2/sessions/{id}/tools`, with `$ref`s between calls: the body goes to
//! the real handler (batch parsing and validation, then the executor resolving references
//! and running the built-in tools `sha256`, `json_query`, `regex_extract`) on a fresh session.
//!
//! Input: the body.
//!
//! Properties: no panic and no 5xx; a refusal is a 4xx with a JSON error naming the field,
//! and leaves the session as it was; an accepted batch reports every call once, in request
//! order with its id and tool, each `succeeded` (with an `output`), `failed` / `timed_out`
//! (with an `error`) or `skipped` (with the `cause`, a call of the batch that did not
//! succeed); a call succeeds only if all its dependencies did; the totals add up.

use serde_json::Value;

use super::gateway::{Gateway, assert_json_error};

/// Checks one input (see the module docs).
pub fn check(input: &[u8]) {
    let gateway = Gateway::get();
    let session = gateway.create_session();
    let path = format!("/v2/sessions/{}/tools", session.id);
    let before = (
        gateway.state(&session.id).expect("a fresh session exists"),
        gateway.events(&session.id),
    );
    let answer = gateway.post(&path, input.to_vec());
    assert!(
        !answer.status.is_server_error(),
        "server error for {:?}: {answer:?}",
        String::from_utf8_lossy(input)
    );
    if !answer.status.is_success() {
        assert!(answer.status.is_client_error(), "{answer:?}");
        let message = assert_json_error(&answer);
        assert!(message.contains(": "), "message names no field: {message}");
        let after = (
            gateway.state(&session.id).expect("still exists"),
            gateway.events(&session.id),
        );
        assert_eq!(after, before, "a refused batch changed the session");
        return;
    }

    let sent: Value = serde_json::from_slice(input).expect("an accepted body is JSON");
    let sent = sent["calls"]
        .as_array()
        .expect("an accepted batch has calls");
    let reply: Value = serde_json::from_slice(&answer.body).expect("a JSON answer");
    let calls = reply["calls"].as_array().expect("the report lists calls");
    assert_eq!(calls.len(), sent.len(), "one report per call");
    let status_of = |id: &str| {
        calls
            .iter()
            .find(|c| c["id"] == id)
            .and_then(|c| c["status"].as_str())
    };
    let mut totals = [0_u64; 3];
    for (call, request) in calls.iter().zip(sent) {
        assert_eq!(call["id"], request["id"], "calls in request order");
        assert_eq!(call["tool"], request["tool"]);
        let status = call["status"].as_str().expect("a status");
        match status {
            "succeeded" => {
                totals[0] += 1;
                assert!(call.get("output").is_some(), "{call}");
                let deps = request["depends_on"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                for dep in deps {
                    let dep = dep.as_str().expect("an accepted dependency is an id");
                    assert_eq!(status_of(dep), Some("succeeded"), "{call} after {dep}");
                }
            }
            "failed" | "timed_out" => {
                totals[1] += 1;
                assert!(
                    call["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{call}"
                );
            }
            "skipped" => {
                totals[2] += 1;
                let cause = call["cause"].as_str().expect("a skipped call's cause");
                assert!(
                    status_of(cause).is_some_and(|s| s != "succeeded"),
                    "{call}: cause {cause} did not fail"
                );
            }
            other => panic!("unknown status {other:?}"),
        }
    }
    for (name, total) in ["succeeded", "failed", "skipped"].iter().zip(totals) {
        assert_eq!(reply[*name], total, "{name} total");
    }
}

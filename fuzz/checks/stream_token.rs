//! Stream tokens (`?token=` of `GET /v2/sessions/{id}/stream`), checked by the real handler
//! through the API, so this target follows whatever form `StreamTokens` gives them.
//!
//! Input: an edit script applied to a token the gateway has just issued, two bytes an edit:
//! `(op, byte)`; `op % 3` picks insert, replace or delete, `op / 3` the position (modulo the
//! length), `byte & 0x7f` the ASCII byte written. The edited text is sent percent-encoded
//! byte for byte, so the handler sees exactly it.
//!
//! Properties: no panic; the issued token opens its session (`200`) and not another one;
//! an edited token opens the session only if it is the issued token itself — a token has
//! one accepted spelling, so no other string stands for it (a cache or a log keyed by
//! token cannot be confused); every refusal is `401` with a JSON error.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;

use super::gateway::{Gateway, assert_json_error};

/// `HEAD /v2/sessions/{session}/stream?token=<token, every byte %XX-encoded>`.
fn open(gateway: &Gateway, session: &str, token: &str) -> super::gateway::Answer {
    let encoded: String = token.bytes().map(|b| format!("%{b:02X}")).collect();
    let req = Request::builder()
        .method(Method::HEAD)
        .uri(format!("/v2/sessions/{session}/stream?token={encoded}"))
        .body(Full::new(Bytes::new()))
        .expect("a percent-encoded query is a valid request target");
    gateway.send(req)
}

/// Applies the edit script in `input` to `token`.
fn edit(token: &str, input: &[u8]) -> String {
    let mut bytes = token.as_bytes().to_vec();
    for pair in input.chunks_exact(2) {
        let (op, byte) = (usize::from(pair[0]), pair[1] & 0x7f);
        match op % 3 {
            0 => {
                let at = (op / 3) % (bytes.len() + 1);
                bytes.insert(at, byte);
            }
            1 if !bytes.is_empty() => {
                let at = (op / 3) % bytes.len();
                bytes[at] = byte;
            }
            2 if !bytes.is_empty() => {
                let at = (op / 3) % bytes.len();
                bytes.remove(at);
            }
            _ => {}
        }
    }
    // Only ASCII was written into an ASCII token.
    String::from_utf8(bytes).expect("ASCII")
}

/// Checks one input (see the module docs).
pub fn check(input: &[u8]) {
    let gateway = Gateway::get();
    let session = gateway.create_session();
    let other = gateway.create_session();
    let id = session.id.as_str();

    let issued = open(gateway, id, &session.token);
    assert_eq!(
        issued.status,
        StatusCode::OK,
        "issued token refused: {issued:?}"
    );
    let elsewhere = open(gateway, other.id.as_str(), &session.token);
    assert_eq!(elsewhere.status, StatusCode::UNAUTHORIZED, "{elsewhere:?}");
    assert_json_error(&elsewhere);

    let edited = edit(&session.token, input);
    let answer = open(gateway, id, &edited);
    if edited == session.token {
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    } else {
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "token {edited:?} is not the issued {:?} but opens its session",
            session.token
        );
        assert_json_error(&answer);
    }
}

//! Credentials scrubbed from log output, whatever wrote the line.
//!
//! agentgate's own log lines carry no credentials: request paths without their query, no
//! headers. Its dependencies' DEBUG and TRACE lines do: pingora logs every request head
//! (`Request header: Parts { uri: ...?token=..., headers: {"authorization": ...} }`), the
//! head it sends upstream, and the raw bytes of a request it cannot parse. [`Redacting`] sits
//! between the log formatter and stdout and, in every line, replaces with `<redacted>`:
//!
//! - the value of an `Authorization`, `Proxy-Authorization`, `Cookie` or `Set-Cookie` header
//!   (and of an `Idempotency-Key`: no credential, but a client's own identifier of its
//!   calls, kept out of logs as the store keeps it out of key names),
//!   in the spellings those dumps use (`"authorization": "Bearer <key>"`, `cookie: <value>\r\n`, and
//!   either one inside a JSON log line);
//! - what follows `Bearer `;
//! - the value of a `token` or `tokens` query parameter (stream tokens);
//! - anything shaped like a stream token (`v1.<expiry>.<signature>`), wherever it appears.
//!
//! When it cannot tell where a value ends (an escaped quote inside a JSON log line) it
//! removes more rather than less. A line without any of these is written unchanged, without
//! a copy.
//!
//! # Example
//!
//! ```
//! use agentgate::redact::redact;
//!
//! let line = br#"uri: /v2/sessions/s1/stream?token=v1.1.abc, headers: {"authorization": "Bearer <api-key>"}"#;
//! assert_eq!(
//!     &*redact(line),
//!     br#"uri: /v2/sessions/s1/stream?token=<redacted>, headers: {"authorization": "<redacted>"}"#
//! );
//! ```

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::LazyLock;

use regex::bytes::{Captures, Regex};
use tracing_subscriber::fmt::MakeWriter;

/// What replaces a credential.
pub const REDACTED: &str = "<redacted>";

/// One pattern, one alternative per kind of credential; each keeps its named prefix group
/// and drops the value after it.
static CREDENTIALS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        // Bytes, ASCII-only classes, any case.
        r"(?i-u)",
        // A header dump: name, separator (`": "`, `: `, `\": \"`), then the value up to
        // its closing quote or CR/LF (escapes included, `\r` and `\n` excluded). No word
        // boundary before the name: in escaped raw bytes it follows `\r\n`.
        r#"(?P<header>(?:proxy-)?authorization|set-cookie|cookie|idempotency-key)"#,
        r#"(?P<sep>\\?"?[ \t]*:[ \t]*\\?"?)(?:[^"\r\n\\]|\\[^rn])+"#,
        r#"|(?P<bearer>\bbearer[ \t]+)[^\s"'\\;]+"#,
        // `tokens=` holds a comma-separated list.
        r#"|(?P<query>[?&;]tokens?=)[^&\s"'\\#;,]+(?:,[^&\s"'\\#;,]+)*"#,
        r"|(?P<token>v1\.[0-9]{1,20}\.)[A-Za-z0-9_-]{20,}",
    ))
    .unwrap_or_else(|e| unreachable!("the credentials pattern is valid: {e}"))
});

/// `line` with every credential replaced by [`REDACTED`]; borrowed when there is none.
pub fn redact(line: &[u8]) -> Cow<'_, [u8]> {
    CREDENTIALS.replace_all(line, |caps: &Captures<'_>| {
        let mut kept = Vec::with_capacity(32);
        for group in ["header", "sep", "bearer", "query", "token"] {
            if let Some(m) = caps.name(group) {
                kept.extend_from_slice(m.as_bytes());
            }
        }
        kept.extend_from_slice(REDACTED.as_bytes());
        kept
    })
}

/// A [`MakeWriter`] whose writers [`redact`] what they write: wrap the log formatter's
/// writer in it (`fmt::layer().with_writer(Redacting(std::io::stdout))`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Redacting<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.make_writer())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        RedactingWriter(self.0.make_writer_for(meta))
    }
}

/// The writer [`Redacting`] makes. The formatter writes a whole event in one call, so a
/// credential is never split between two writes.
#[derive(Debug)]
pub struct RedactingWriter<W>(W);

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(&redact(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(line: &str) -> String {
        String::from_utf8(redact(line.as_bytes()).into_owned()).unwrap()
    }

    const TOKEN: &str = "v1.1796363218.q0_tbGHl0hhdTmH6OsG0xuDmKOJmAyaFbYJgkYKSab0";

    #[test]
    fn pingora_request_head_dump() {
        let line = format!(
            r#"TRACE pingora_proxy: Request header: Parts {{ method: GET, uri: /v2/stream?sessions=a,b&tokens={TOKEN},{TOKEN}, version: HTTP/1.1, headers: {{"authorization": "Bearer key-123", "cookie": "pin=c1; other=c2", "idempotency-key": "call-7", "host": "x"}} }}"#
        );
        assert_eq!(
            text(&line),
            r#"TRACE pingora_proxy: Request header: Parts { method: GET, uri: /v2/stream?sessions=a,b&tokens=<redacted>, version: HTTP/1.1, headers: {"authorization": "<redacted>", "cookie": "<redacted>", "idempotency-key": "<redacted>", "host": "x"} }"#
        );
    }

    #[test]
    fn raw_request_bytes() {
        let line = format!(
            r#"DEBUG Fail to proxy: buf: "GET /x?a=1&token={TOKEN} HTTP/1.1\r\nAuthorization: Bearer key-123\r\nCookie: pin=c1\r\nbad\r\n\r\n""#
        );
        assert_eq!(
            text(&line),
            r#"DEBUG Fail to proxy: buf: "GET /x?a=1&token=<redacted> HTTP/1.1\r\nAuthorization: <redacted>\r\nCookie: <redacted>\r\nbad\r\n\r\n""#
        );
    }

    #[test]
    fn json_log_lines_stay_json() {
        let message = format!(
            r#"Request header: {{"authorization": "Bearer key-123", "set-cookie": "a=\"q\"", "host": "x"}} {TOKEN}"#
        );
        let line = serde_json::json!({ "level": "TRACE", "message": message }).to_string();
        let redacted = text(&line);
        let parsed: serde_json::Value = serde_json::from_str(&redacted).expect("still JSON");
        let message = parsed["message"].as_str().unwrap();
        for secret in ["key-123", "a=", "q\\", TOKEN] {
            assert!(!message.contains(secret), "{secret} in {message}");
        }
        assert!(message.starts_with("Request header: {\"authorization\": \"<redacted>"));
    }

    #[test]
    fn escaped_quotes_inside_a_value_are_covered() {
        let line = r#"headers: {"cookie": "a=\"secret\"; b=more", "host": "x"}"#;
        assert_eq!(
            text(line),
            r#"headers: {"cookie": "<redacted>", "host": "x"}"#
        );
    }

    #[test]
    fn bare_tokens_and_bearer_anywhere() {
        assert_eq!(
            text(&format!(
                "body: {{\"stream_token\":\"{TOKEN}\"}} Bearer abc.def"
            )),
            "body: {\"stream_token\":\"v1.1796363218.<redacted>\"} Bearer <redacted>"
        );
    }

    #[test]
    fn lines_without_credentials_are_not_copied() {
        let line =
            b"INFO agentgate::access: access method=GET path=/v2/sessions/s1/stream status=200";
        assert!(matches!(redact(line), Cow::Borrowed(_)));
        // Words that only look alike stay.
        let line = b"tokens issued: 3; cookie jar empty; authorization failed";
        assert!(matches!(redact(line), Cow::Borrowed(_)));
    }

    #[test]
    fn the_writer_redacts_each_write() {
        let mut out = Vec::new();
        let mut writer = RedactingWriter(&mut out);
        writer
            .write_all(format!("GET /s?token={TOKEN} ok\n").as_bytes())
            .unwrap();
        assert_eq!(out, b"GET /s?token=<redacted> ok\n");
    }
}

//! Encoding SSE frames exactly as the HTML Living Standard parses them.
//!
//! - `data` spanning several lines becomes one `data:` line per line (`\n`, `\r\n` and `\r`
//!   all end a line), which a client joins back with `\n`.
//! - `id` and `event` cannot hold a line break: any is replaced by a space, so a value can
//!   never inject a field. An `id` containing NUL is ignored by browsers; NUL is dropped.
//! - Comments (`: text`) keep a connection alive without dispatching an event.

use bytes::{BufMut, Bytes, BytesMut};

/// One SSE frame: an event (with optional id/retry) or a comment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame<'a> {
    id: Option<&'a str>,
    event: Option<&'a str>,
    data: Option<&'a str>,
    retry_ms: Option<u64>,
    comment: Option<&'a str>,
}

impl<'a> Frame<'a> {
    /// An event of the given type (`event:` field).
    pub fn event(kind: &'a str) -> Self {
        Self {
            event: Some(kind),
            ..Self::default()
        }
    }

    /// A frame carrying only data (dispatched as a `message` event).
    pub fn message(data: &'a str) -> Self {
        Self {
            data: Some(data),
            ..Self::default()
        }
    }

    /// A comment line (`: text`), e.g. a heartbeat.
    pub fn comment(text: &'a str) -> Self {
        Self {
            comment: Some(text),
            ..Self::default()
        }
    }

    /// A frame that only sets the client's reconnection delay.
    pub fn retry(ms: u64) -> Self {
        Self {
            retry_ms: Some(ms),
            ..Self::default()
        }
    }

    /// Sets the `id:` field (the client's `Last-Event-ID` on reconnect).
    pub fn id(mut self, id: &'a str) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the data; several lines are framed as several `data:` lines.
    pub fn data(mut self, data: &'a str) -> Self {
        self.data = Some(data);
        self
    }

    /// Appends the frame to `buf`.
    pub fn encode_into(&self, buf: &mut BytesMut) {
        if let Some(comment) = self.comment {
            for line in lines(comment) {
                put_field(buf, "", line);
            }
        }
        if let Some(id) = self.id {
            put_field(buf, "id", &single_line(id).replace('\0', ""));
        }
        if let Some(event) = self.event {
            put_field(buf, "event", &single_line(event));
        }
        if let Some(data) = self.data {
            for line in lines(data) {
                put_field(buf, "data", line);
            }
        }
        if let Some(ms) = self.retry_ms {
            put_field(buf, "retry", &ms.to_string());
        }
        buf.put_u8(b'\n');
    }

    /// The frame as bytes.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(64 + self.data.map_or(0, str::len));
        self.encode_into(&mut buf);
        buf.freeze()
    }
}

fn put_field(buf: &mut BytesMut, name: &str, value: &str) {
    buf.put_slice(name.as_bytes());
    buf.put_slice(b": ");
    buf.put_slice(value.as_bytes());
    buf.put_u8(b'\n');
}

/// Splits on `\r\n`, `\n` or `\r`, the three line endings SSE recognises.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\r', '\n']) {
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

fn single_line(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains(['\r', '\n']) {
        value.replace(['\r', '\n'], " ").into()
    } else {
        value.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_data_becomes_several_data_lines() {
        let f = Frame::event("msg").id("1-0").data("a\nb\r\nc\rd").encode();
        assert_eq!(
            &f[..],
            b"id: 1-0\nevent: msg\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
    }

    #[test]
    fn empty_and_trailing_newline_data_round_trip() {
        assert_eq!(&Frame::message("").encode()[..], b"data: \n\n");
        assert_eq!(&Frame::message("x\n").encode()[..], b"data: x\ndata: \n\n");
    }

    #[test]
    fn fields_cannot_inject_lines() {
        let f = Frame::event("a\nevent: b").id("1\n\0id: 2").encode();
        assert_eq!(&f[..], b"id: 1 id: 2\nevent: a event: b\n\n");
    }

    #[test]
    fn comment_and_retry() {
        assert_eq!(
            &Frame::comment("heartbeat").encode()[..],
            b": heartbeat\n\n"
        );
        assert_eq!(&Frame::retry(2000).encode()[..], b"retry: 2000\n\n");
    }
}

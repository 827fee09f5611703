//! [`Event`]: one dispatched SSE event, owned, and its wire form.

use bytes::{Bytes, BytesMut};

use super::Frame;

/// One dispatched event, owned: what [`Parser`](super::Parser) yields and what
/// [`encode`](Event::encode) writes.
///
/// `parse(encode(e)) == e` holds for every event whose `id` has no NUL, CR or LF, whose
/// `event` is not `Some("")` and has no CR or LF, and whose `data` has no CR (a CR or CRLF in
/// data is written as a line break and so comes back as `\n`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// The `id:` field given in this event's block, if any. It is not inherited from earlier
    /// blocks (see [`Parser::last_event_id`](super::Parser::last_event_id) for that cursor).
    /// An `id:` value containing NUL is ignored, as browsers do.
    pub id: Option<String>,
    /// The `event:` field; `None` is the default type (`message`). An empty `event:` value
    /// parses as `None`, as it means `message` too.
    pub event: Option<String>,
    /// The data lines joined with `\n` (the trailing newline removed).
    pub data: String,
}

impl Event {
    /// A `message` event with the given data and no id.
    pub fn message(data: impl Into<String>) -> Self {
        Self {
            data: data.into(),
            ..Self::default()
        }
    }

    /// The wire form: `id:`, `event:`, one `data:` line per line of data, a blank line.
    ///
    /// CR and CRLF inside data end a line like LF does. A line break in `id` or `event` is
    /// replaced by a space and NUL is dropped from `id`, so no value can inject a field (the
    /// rules of [`Frame`]).
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(32 + self.data.len());
        self.encode_into(&mut buf);
        buf.freeze()
    }

    /// Appends the wire form (see [`encode`](Self::encode)) to `buf`.
    pub fn encode_into(&self, buf: &mut BytesMut) {
        let frame = match &self.event {
            Some(kind) => Frame::event(kind).data(&self.data),
            None => Frame::message(&self.data),
        };
        match &self.id {
            Some(id) => frame.id(id).encode_into(buf),
            None => frame.encode_into(buf),
        }
    }
}

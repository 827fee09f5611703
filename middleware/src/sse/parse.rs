//! An incremental SSE parser following the HTML Living Standard, "Interpreting an event
//! stream", with memory limits for proxying untrusted upstreams.
//!
//! - Input is bytes in chunks split anywhere (inside a CRLF, inside a UTF-8 sequence).
//!   Each line is UTF-8 decoded with invalid sequences replaced by U+FFFD; because every
//!   delimiter is ASCII, decoding line by line equals decoding the whole stream.
//! - A UTF-8 BOM at the very start of the stream is skipped once.
//! - A line ends at CRLF, LF or CR. A line ends *at* its CR, so an event ending in CR is
//!   yielded without waiting for the next chunk; an LF right after a CR (even in the next
//!   chunk) is then skipped as the rest of that line ending.
//! - Unlike a browser, the parser also yields comments, `retry:` values and `id:`-only blocks,
//!   which a proxy needs to forward heartbeats and to track the resume cursor.
//! - At end of stream, an unterminated line and an event without its blank line are
//!   discarded, as the standard says: see [`Parser::finish`].

use std::collections::VecDeque;

use super::{Event, ParseError};

/// The UTF-8 encoding of U+FEFF.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// What the [`Parser`] yields, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A complete event, dispatched at a blank line after at least one `data` line.
    Event(Event),
    /// A block that had an `id:` field but no `data` line: browsers dispatch nothing for it,
    /// yet it moves their `Last-Event-ID`, so a proxy must see it.
    Id(String),
    /// A comment line (`: text`), the text without the `:` and one optional leading space.
    /// Yielded when its line ends, even in the middle of an event's block.
    Comment(String),
    /// A `retry:` field whose value is all ASCII digits (the reconnection delay in ms).
    /// Yielded when its line ends. Empty values and values above `u64::MAX` are ignored.
    Retry(u64),
}

/// Incremental SSE parser: [`feed`](Self::feed) chunks split anywhere, pull
/// [`next_item`](Self::next_item)s.
///
/// Memory is bounded by the limits: the unfinished line is at most `max_line` bytes, the
/// pending event's data at most `max_event` bytes, and its `id`/`event` values at most one
/// (decoded) line each. Items not yet pulled are held too, so pull them after every feed.
#[derive(Debug)]
pub struct Parser {
    max_line: usize,
    max_event: usize,
    /// The bytes of the current, unfinished line.
    line: Vec<u8>,
    /// The stream has not yet shown whether it starts with a BOM (bytes wait in `line`).
    at_start: bool,
    /// The last byte consumed was a CR, so a next LF belongs to the same line ending.
    after_cr: bool,
    /// The pending block: data buffer (each line plus `\n`), event type, and `id:` value.
    data: String,
    event: Option<String>,
    id: Option<String>,
    /// The id of the last dispatched block that had one (the browser's `lastEventId`).
    last_event_id: Option<String>,
    items: VecDeque<Item>,
    error: Option<ParseError>,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    /// The default line limit: 1 MiB.
    pub const DEFAULT_MAX_LINE: usize = 1 << 20;
    /// The default event limit (data bytes of one event): 8 MiB.
    pub const DEFAULT_MAX_EVENT: usize = 8 << 20;

    /// A parser with the default limits ([`DEFAULT_MAX_LINE`](Self::DEFAULT_MAX_LINE),
    /// [`DEFAULT_MAX_EVENT`](Self::DEFAULT_MAX_EVENT)).
    pub fn new() -> Self {
        Self::with_limits(Self::DEFAULT_MAX_LINE, Self::DEFAULT_MAX_EVENT)
    }

    /// A parser with a custom maximum line length (bytes, without the line ending) and
    /// maximum event size (the event's data bytes, counting one `\n` per `data` line).
    pub fn with_limits(max_line: usize, max_event: usize) -> Self {
        Self {
            max_line,
            max_event,
            line: Vec::new(),
            at_start: true,
            after_cr: false,
            data: String::new(),
            event: None,
            id: None,
            last_event_id: None,
            items: VecDeque::new(),
            error: None,
        }
    }

    /// Parses a chunk; complete items become available from [`next_item`](Self::next_item).
    ///
    /// # Errors
    ///
    /// [`ParseError::LineTooLong`] as soon as one line (even unfinished) exceeds the line
    /// limit, [`ParseError::EventTooLarge`] when a `data` line would make the pending event
    /// exceed the event limit. The error is sticky: input from the offending line on is not
    /// parsed, and every later call returns the same error. Where it happens does not depend
    /// on how the input was split into chunks.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ParseError> {
        if let Some(err) = self.error {
            return Err(err);
        }
        let result = self.feed_inner(chunk);
        if let Err(err) = result {
            self.error = Some(err);
            self.line = Vec::new();
            self.data = String::new();
        }
        result
    }

    /// The next complete item, if any.
    pub fn next_item(&mut self) -> Option<Item> {
        self.items.pop_front()
    }

    /// Ends the stream: returns the items not yet pulled.
    ///
    /// An unterminated last line and an event whose blank line never came are dropped, as the
    /// standard says (an upstream cut mid-event must not deliver half an event). Use
    /// [`has_partial`](Self::has_partial) first to find out whether anything was dropped.
    pub fn finish(self) -> Vec<Item> {
        self.items.into()
    }

    /// Whether there is input that end of stream would discard: an unterminated line or a
    /// block with fields but no blank line yet.
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || !self.data.is_empty() || self.event.is_some() || self.id.is_some()
    }

    /// The `id` of the last block that set one (an [`Item::Event`] with an id or an
    /// [`Item::Id`]): what a browser would send as `Last-Event-ID` on reconnect.
    /// `Some("")` means the upstream reset it.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// The error [`feed`](Self::feed) returned, if any.
    pub fn error(&self) -> Option<ParseError> {
        self.error
    }

    /// Bytes held for the unfinished line and the pending event (items not yet pulled are
    /// not counted). At most `max_event + 7 * max_line + 2`: the line, the data, and the
    /// `id` and `event` values, each at most one line that replacement characters may triple
    /// (the 2 are the first bytes of a stream, held until they can't be a BOM).
    pub fn buffered_bytes(&self) -> usize {
        self.line.len()
            + self.data.len()
            + self.event.as_ref().map_or(0, String::len)
            + self.id.as_ref().map_or(0, String::len)
    }

    fn feed_inner(&mut self, mut chunk: &[u8]) -> Result<(), ParseError> {
        if self.at_start {
            // Hold the first bytes in `line` until they either are a BOM or cannot be one.
            let take = (BOM.len() - self.line.len()).min(chunk.len());
            self.line.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.line.len() < BOM.len() && BOM.starts_with(&self.line) {
                return Ok(());
            }
            self.at_start = false;
            let held = std::mem::take(&mut self.line);
            self.consume(held.strip_prefix(BOM).unwrap_or(&held))?;
        }
        self.consume(chunk)
    }

    /// Splits `bytes` into lines, continuing the unfinished line.
    fn consume(&mut self, mut bytes: &[u8]) -> Result<(), ParseError> {
        while let Some((&first, rest)) = bytes.split_first() {
            if std::mem::take(&mut self.after_cr) && first == b'\n' {
                bytes = rest;
                continue;
            }
            let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') else {
                if self.line.len() + bytes.len() > self.max_line {
                    return Err(ParseError::LineTooLong);
                }
                self.line.extend_from_slice(bytes);
                return Ok(());
            };
            if self.line.len() + end > self.max_line {
                return Err(ParseError::LineTooLong);
            }
            self.after_cr = bytes[end] == b'\r';
            if self.line.is_empty() {
                // The whole line is in this chunk: parse it in place, without copying.
                self.process_line(&bytes[..end])?;
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&bytes[..end]);
                let result = self.process_line(&line);
                line.clear();
                self.line = line;
                result?;
            }
            bytes = &bytes[end + 1..];
        }
        Ok(())
    }

    fn process_line(&mut self, line: &[u8]) -> Result<(), ParseError> {
        if line.is_empty() {
            self.dispatch();
            return Ok(());
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => {
                let text = &line[1..];
                let text = text.strip_prefix(b" ").unwrap_or(text);
                self.items
                    .push_back(Item::Comment(String::from_utf8_lossy(text).into_owned()));
                return Ok(());
            }
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        // Comparing bytes equals comparing decoded names: U+FFFD never matches ASCII.
        match name {
            b"data" => {
                let value = String::from_utf8_lossy(value);
                if self.data.len() + value.len() + 1 > self.max_event {
                    return Err(ParseError::EventTooLarge);
                }
                self.data.push_str(&value);
                self.data.push('\n');
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            // An id containing NUL is ignored (it could not be sent back as a header).
            b"id" if !value.contains(&0) => {
                self.id = Some(String::from_utf8_lossy(value).into_owned());
            }
            b"retry" => self.items.extend(parse_retry(value).map(Item::Retry)),
            _ => {}
        }
        Ok(())
    }

    /// A blank line: dispatch the pending block, if it has data, and reset it.
    fn dispatch(&mut self) {
        let id = self.id.take();
        let event = self.event.take().filter(|kind| !kind.is_empty());
        if let Some(id) = &id {
            self.last_event_id = Some(id.clone());
        }
        if self.data.is_empty() {
            if let Some(id) = id {
                self.items.push_back(Item::Id(id));
            }
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop(); // the '\n' the last data line appended
        self.items.push_back(Item::Event(Event { id, event, data }));
    }
}

/// A `retry:` value: only ASCII digits, at least one, fitting a `u64`.
fn parse_retry(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None; // `str::parse` alone would accept a leading '+'
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> Vec<Item> {
        let mut parser = Parser::new();
        parser.feed(input).expect("within limits");
        parser.finish()
    }

    #[test]
    fn event_ending_in_cr_is_yielded_without_waiting() {
        let mut parser = Parser::new();
        parser.feed(b"data: a\r\r").expect("within limits");
        assert_eq!(parser.next_item(), Some(Item::Event(Event::message("a"))));
        // The LF completing a CRLF in the next chunk is not a blank line.
        parser.feed(b"\ndata: b\n\n").expect("within limits");
        assert_eq!(parser.next_item(), Some(Item::Event(Event::message("b"))));
        assert_eq!(parser.next_item(), None);
    }

    #[test]
    fn has_partial_tracks_unterminated_input() {
        let mut parser = Parser::new();
        assert!(!parser.has_partial());
        parser.feed(b"data: x").expect("within limits");
        assert!(parser.has_partial());
        parser.feed(b"\n").expect("within limits");
        assert!(parser.has_partial(), "a block without its blank line");
        parser.feed(b"\n").expect("within limits");
        assert!(!parser.has_partial());
    }

    #[test]
    fn partial_bom_that_is_not_a_bom_is_content() {
        // EF BB followed by 'x' is an invalid sequence, decoded to U+FFFD, in a field name.
        assert_eq!(
            parse(b"\xEF\xBBx: 1\ndata: a\n\n"),
            [Item::Event(Event::message("a"))]
        );
        assert_eq!(
            parse(b"\xEF\xBBdata: a\n\n"),
            [],
            "the field name is not `data`"
        );
    }

    #[test]
    fn buffered_bytes_is_bounded_after_an_error() {
        let mut parser = Parser::with_limits(4, 8);
        assert_eq!(
            parser.feed(b"data: 123456789"),
            Err(ParseError::LineTooLong)
        );
        assert_eq!(parser.buffered_bytes(), 0);
        assert_eq!(parser.feed(b"\n"), Err(ParseError::LineTooLong));
    }
}

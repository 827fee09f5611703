//! Why the [`Parser`](super::Parser) stopped.

use std::fmt;

/// A limit of the [`Parser`](super::Parser) was exceeded: the upstream is hostile or broken.
///
/// The error is sticky: once returned, every later [`feed`](super::Parser::feed) returns it
/// again and no more input is parsed. Items from lines completed before the offending one
/// can still be pulled. A proxy should close the upstream (and may answer `502`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// One line (finished or not, without its line ending) is longer than the line limit.
    LineTooLong,
    /// The data of one event (its `data:` values plus one `\n` each) exceeds the event limit.
    EventTooLarge,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::LineTooLong => "SSE line exceeds the parser's line limit",
            Self::EventTooLarge => "SSE event data exceeds the parser's event limit",
        })
    }
}

impl std::error::Error for ParseError {}

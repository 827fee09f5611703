//! Server-Sent Events: the wire format, encoding ([`codec`], [`Event::encode`]) and
//! incremental parsing ([`parse`]); with their features, the layers built on them:
//! `fanout` (`SseFanoutLayer`: viewers of one stream share one inner call) and `multiplex`
//! (`SseMultiplexLayer`: one resumable response following many streams).
//!
//! Both follow the HTML Living Standard's event stream format: fields `id`, `event`, `data`
//! (several lines), `retry` and comments; lines ending in CR, LF or CRLF; a leading BOM. The
//! parser is meant for proxying untrusted upstreams: it takes chunks split anywhere, yields
//! what a browser would plus what a proxy needs (comments, `retry:`, `id:`-only blocks), and
//! keeps memory bounded ([`Parser::with_limits`]).
//!
//! `eventsource-stream` (0.2.3) was evaluated and not used: it panics on a stream starting
//! with a BOM, drops comments and `id:`-only blocks, accepts `retry: +5`, holds a CR-ended
//! line until the next chunk (losing it at end of stream), stops at invalid UTF-8 instead of
//! replacing it, and buffers without limit.
//!
//! # Example
//!
//! Encoding:
//!
//! ```
//! use agentgate_middleware::sse::Frame;
//!
//! let bytes = Frame::event("delta").id("17-0").data("{\"text\":\"hi\"}").encode();
//! assert_eq!(&bytes[..], b"id: 17-0\nevent: delta\ndata: {\"text\":\"hi\"}\n\n");
//! ```
//!
//! Parsing chunks as they arrive (here split inside a CRLF):
//!
//! ```
//! use agentgate_middleware::sse::{Event, Item, Parser};
//!
//! let mut parser = Parser::new();
//! let mut items = Vec::new();
//! for chunk in [&b"\xEF\xBB\xBF: hi\r"[..], b"\nretry: 500\r\nid: 7\r\ndata: a\r\ndata: b\r", b"\n\r\n"] {
//!     parser.feed(chunk)?; // Err only if a limit is exceeded
//!     while let Some(item) = parser.next_item() {
//!         items.push(item);
//!     }
//! }
//! assert_eq!(items, [
//!     Item::Comment("hi".into()),
//!     Item::Retry(500),
//!     Item::Event(Event { id: Some("7".into()), event: None, data: "a\nb".into() }),
//! ]);
//! assert_eq!(parser.last_event_id(), Some("7"));
//! # Ok::<(), agentgate_middleware::sse::ParseError>(())
//! ```

pub mod codec;
pub mod error;
mod event;
#[cfg(feature = "sse-fanout")]
pub mod fanout;
#[cfg(feature = "sse-multiplex")]
pub mod multiplex;
pub mod parse;
#[cfg(feature = "sse-fanout")]
mod request;

pub use codec::Frame;
pub use error::ParseError;
pub use event::Event;
pub use parse::{Item, Parser};
#[cfg(feature = "sse-fanout")]
pub(crate) use request::last_event_id;

/// The `Content-Type` of an SSE response.
pub const CONTENT_TYPE: &str = "text/event-stream";

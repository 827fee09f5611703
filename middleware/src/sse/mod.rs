//! Server-Sent Events: the wire format ([`codec`]).
//!
//! # Example
//!
//! ```
//! use agentgate_middleware::sse::Frame;
//!
//! let bytes = Frame::event("delta").id("17-0").data("{\"text\":\"hi\"}").encode();
//! assert_eq!(&bytes[..], b"id: 17-0\nevent: delta\ndata: {\"text\":\"hi\"}\n\n");
//! ```

pub mod codec;

pub use codec::Frame;

/// The `Content-Type` of an SSE response.
pub const CONTENT_TYPE: &str = "text/event-stream";

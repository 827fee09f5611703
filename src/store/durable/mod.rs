//! Durable Streams storage: the [`StreamStore`] trait and its two engines.
//!
//! - [`memory::MemoryStreams`]: in process, for `store.kind = "memory"`.
//! - [`crate::store::redis::RedisStreams`]: Redis, for `store.kind = "redis"`; every
//!   operation is one round trip (one Lua script), so a producer's check and its append
//!   are atomic and nothing half-written stays behind.
//!
//! A stream is an append-only list of messages (one per append); each message ends at a
//! [`Offset`]: the number of bytes stored up to and including it. Offsets therefore grow
//! strictly with every append, are the same on every gateway node, and print as fixed-width
//! decimal text (`0000000000000000_0000000000000042`), so they sort lexicographically as
//! the protocol requires. A reader at offset `o` gets every message ending after `o`.
//!
//! The engines validate nothing about HTTP: the protocol route ([`crate::durable`]) parses
//! and bounds the request, frames JSON-mode bodies ([`json`]), and hands the store a
//! decided operation; the store applies the stream's own rules (content type, closure,
//! `Stream-Seq`, producer epochs and sequences, size and count bounds) atomically.
//!
//! Live readers register a [`Watch`] before reading, as the session stream does; an append
//! or close wakes them through the store's one notification path (the Redis store's one
//! pub/sub connection, shared with sessions).

pub mod json;
pub mod memory;
mod offset;

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};

pub use offset::{Offset, ParseOffsetError};

use super::{SessionId, StoreError, Watch};

/// Longest stream path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;

/// A stream's name: its URL path (validated by the route: at most [`MAX_PATH_BYTES`]).
///
/// Store keys never contain the path itself: they use [`StreamKey::tag`], a hash of it,
/// so no client-chosen text (nor anything a client put in a URL) reaches a Redis key name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    path: String,
    tag: String,
}

impl StreamKey {
    /// The key of the stream at `path`.
    pub fn new(path: &str) -> Self {
        let digest = Sha256::digest(path.as_bytes());
        let mut tag = String::with_capacity(35);
        tag.push_str("ds-");
        for byte in &digest[..16] {
            tag.push_str(&format!("{byte:02x}"));
        }
        Self {
            path: path.to_owned(),
            tag,
        }
    }

    /// The stream's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `ds-` and 32 hex digits of the path's SHA-256: names the stream in store keys and
    /// notifications.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The name live readers of this stream watch (a valid session id by construction, so
    /// streams share the session stores' notification path).
    pub fn watch_id(&self) -> SessionId {
        // `ds-` + hex digits is always a valid id; the fallback is never taken.
        self.tag
            .parse()
            .unwrap_or_else(|_| SessionId::generate())
    }
}

/// When a stream expires.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Expiry {
    /// Never (until deleted).
    #[default]
    Never,
    /// `Stream-TTL`: this many seconds after its last read or write (HEAD does not count).
    Ttl(u64),
    /// `Stream-Expires-At`: at this time (Unix milliseconds), given as this RFC 3339 text.
    At {
        /// Unix milliseconds.
        unix_ms: u64,
        /// The header as the client sent it (echoed by HEAD, compared by idempotent PUT).
        text: String,
    },
}

/// A stream's configuration and position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// Content type as created (parameters kept).
    pub content_type: String,
    /// Expiry.
    pub expiry: Expiry,
    /// Closed: no more appends.
    pub closed: bool,
    /// Offset after the last message.
    pub tail: Offset,
}

/// What `PUT` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Create {
    /// Content type (parameters kept).
    pub content_type: String,
    /// Expiry.
    pub expiry: Expiry,
    /// Create closed.
    pub closed: bool,
    /// The initial message, if the body had one (already framed for JSON mode).
    pub data: Option<Bytes>,
}

/// What `PUT` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A new stream.
    New(StreamInfo),
    /// The stream existed with the same configuration (idempotent create).
    Existing(StreamInfo),
    /// The stream exists with a different configuration.
    Conflict,
    /// The store already holds its `max_streams`.
    TooMany,
    /// The initial body exceeds `max_stream_bytes`.
    TooLarge,
}

/// An idempotent producer's claim on an append (`Producer-Id`, `-Epoch`, `-Seq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Producer {
    /// Producer id (non-empty).
    pub id: String,
    /// Epoch: a new one fences older ones.
    pub epoch: u64,
    /// Sequence within the epoch, from 0, one by one.
    pub seq: u64,
}

/// What `POST` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    /// The body's content type, normalised (lower-case, no parameters); `None` for a
    /// close-only request.
    pub content_type: Option<String>,
    /// The message (already framed for JSON mode); `None`: close only.
    pub data: Option<Bytes>,
    /// `Stream-Seq`: must exceed the last one (byte-wise).
    pub seq: Option<String>,
    /// Idempotent producer headers.
    pub producer: Option<Producer>,
    /// `Stream-Closed: true`: close after appending.
    pub close: bool,
}

/// What `POST` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Applied (data appended and/or stream closed); `tail` is the new tail.
    Done {
        /// New tail.
        tail: Offset,
        /// The stream is closed now.
        closed: bool,
    },
    /// A producer's retry of what was already applied: nothing written.
    Duplicate {
        /// Current tail.
        tail: Offset,
        /// The producer's highest accepted sequence.
        last_seq: u64,
        /// The stream is closed.
        closed: bool,
    },
    /// No such stream.
    NotFound,
    /// The stream is closed (and this is no retry of the closing request).
    Closed {
        /// Final tail.
        tail: Offset,
    },
    /// The body's content type differs from the stream's.
    ContentTypeMismatch {
        /// The stream's content type.
        expected: String,
    },
    /// `Stream-Seq` is not greater than the last one.
    SeqConflict {
        /// The last accepted `Stream-Seq`.
        last: String,
    },
    /// The producer's epoch is older than the one the stream knows.
    StaleEpoch {
        /// The current epoch.
        current: u64,
    },
    /// A new epoch must start at sequence 0.
    EpochMustStartAtZero,
    /// The producer skipped sequences.
    SeqGap {
        /// The sequence expected.
        expected: u64,
        /// The sequence received.
        received: u64,
    },
    /// The append would take the stream past `max_stream_bytes`.
    TooLarge,
}

/// Messages read from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The stream as it was at the read.
    pub info: StreamInfo,
    /// Messages after the reader's offset, each with the offset it ends at, in order.
    pub messages: Vec<(Offset, Bytes)>,
    /// The read reached the tail (false: a byte bound cut it short).
    pub up_to_date: bool,
}

/// Bounds every engine applies (a route's `[routes.durable]`, passed with each call so a
/// reload applies at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Largest stream, in stored bytes.
    pub max_stream_bytes: u64,
    /// Most streams held at once.
    pub max_streams: u64,
    /// Most producers remembered per stream.
    pub max_producers: u64,
}

/// A Durable Streams store: every operation atomic on its stream.
#[async_trait]
pub trait StreamStore: Send + Sync + 'static {
    /// Creates a stream, or confirms an identical one (idempotent `PUT`), within `limits`.
    async fn create(
        &self,
        key: &StreamKey,
        create: Create,
        limits: &StreamLimits,
    ) -> Result<Created, StoreError>;

    /// Appends and/or closes, checking content type, closure, `Stream-Seq` and producer in
    /// the same step as the write, within `limits`.
    async fn append(
        &self,
        key: &StreamKey,
        append: Append,
        limits: &StreamLimits,
    ) -> Result<Appended, StoreError>;

    /// Messages after `after`, at most about `max_bytes` of them (at least one message
    /// when any), refreshing a sliding TTL. `None`: no such stream.
    async fn read(
        &self,
        key: &StreamKey,
        after: Offset,
        max_bytes: u64,
    ) -> Result<Option<Read>, StoreError>;

    /// The stream's configuration and tail, without refreshing its TTL (`HEAD`).
    async fn info(&self, key: &StreamKey) -> Result<Option<StreamInfo>, StoreError>;

    /// Deletes a stream; false when there was none.
    async fn delete(&self, key: &StreamKey) -> Result<bool, StoreError>;

    /// Registers a live reader of `key`: register first, then read, then wait.
    fn watch(&self, key: &StreamKey) -> Watch;
}

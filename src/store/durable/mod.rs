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
        self.tag.parse().unwrap_or_else(|_| SessionId::generate())
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
    /// Deleted while forks still referred to it (soft-deleted): every request on its own
    /// URL answers 410, and its path cannot be created again until the forks are gone.
    pub gone: bool,
    /// Content type as created (parameters kept).
    pub content_type: String,
    /// Expiry.
    pub expiry: Expiry,
    /// Closed: no more appends.
    pub closed: bool,
    /// Offset after the last message.
    pub tail: Offset,
}

/// Where a fork branches off (`Stream-Forked-From`, `Stream-Fork-Offset`,
/// `Stream-Fork-Sub-Offset`, §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fork {
    /// The source stream.
    pub source: StreamKey,
    /// Inherit the messages ending at or before this offset; `None`: the source's tail.
    pub offset: Option<Offset>,
    /// And this much of the next message: bytes, or values of a JSON stream.
    pub sub: u64,
}

/// What `PUT` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Create {
    /// Content type (parameters kept); `None` only for a fork (inherits the source's).
    pub content_type: Option<String>,
    /// Expiry.
    pub expiry: Expiry,
    /// Create closed.
    pub closed: bool,
    /// The initial message, if the body had one (already framed for JSON mode).
    pub data: Option<Bytes>,
    /// A fork: the new stream starts with a copy of the source's data up to the fork point
    /// (its offsets as in the source), then `data`.
    pub fork: Option<Fork>,
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
    /// The fork's source does not exist.
    SourceNotFound,
    /// The fork's source was deleted (kept only for its forks), or the path itself is a
    /// soft-deleted stream.
    Gone,
    /// `Stream-Fork-Offset` lies past the source's tail.
    ForkOffsetBeyond,
    /// `Stream-Fork-Sub-Offset` reaches past the next message (or there is none).
    SubOffsetBeyond,
    /// The fork's `Content-Type` differs from its source's.
    ContentTypeMismatch,
}

/// What `DELETE` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// Removed (or, with forks referring to it, soft-deleted: see [`StreamInfo::gone`]).
    Removed,
    /// No such stream.
    Missing,
    /// Already soft-deleted.
    Gone,
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
    /// The stream is soft-deleted.
    Gone,
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

/// What a fork inherits from a source whose messages are `messages` (in order, at least
/// up to the first one ending past `anchor`): the messages ending at or before `anchor`,
/// then `sub` bytes (values, for JSON) of the next one, which must start at `anchor`.
/// Returns the copies (offsets kept; a partial message ends where its part ends) and the
/// bytes they hold. Both engines fork through this.
pub fn fork_copy(
    messages: &[(Offset, Bytes)],
    content_type: &str,
    anchor: Offset,
    sub: u64,
) -> Result<(Vec<(Offset, Bytes)>, u64), Created> {
    let kept = messages.partition_point(|(end, _)| *end <= anchor);
    let mut copy = messages[..kept].to_vec();
    let mut bytes = copy.last().map_or(0, |(end, _)| end.bytes().unwrap_or(0));
    if sub > 0 {
        let (next_end, next) = messages
            .get(kept)
            .filter(|_| Offset::at(bytes) == anchor)
            .ok_or(Created::SubOffsetBeyond)?;
        let part = if json::is_json(content_type) {
            json::first_values(next, sub).ok_or(Created::SubOffsetBeyond)?
        } else {
            let n = usize::try_from(sub).map_err(|_| Created::SubOffsetBeyond)?;
            if n > next.len() {
                return Err(Created::SubOffsetBeyond);
            }
            next.slice(..n)
        };
        let end = if part.len() == next.len() {
            *next_end
        } else {
            Offset::at(bytes + part.len() as u64)
        };
        bytes += part.len() as u64;
        copy.push((end, part));
    }
    Ok((copy, bytes))
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

    /// Deletes a stream: removes it, or soft-deletes it while forks refer to it. Deleting
    /// a fork releases its source (and a soft-deleted source with no fork left goes, up the
    /// chain).
    async fn delete(&self, key: &StreamKey) -> Result<Deleted, StoreError>;

    /// Registers a live reader of `key`: register first, then read, then wait.
    fn watch(&self, key: &StreamKey) -> Watch;
}

//! [`MemoryStreams`]: the in-process Durable Streams engine (`store.kind = "memory"`).
//!
//! One map of streams, each behind its own lock (a `DashMap` shard lock for the whole
//! check-and-write of one operation, so a producer's check and its append are atomic).
//! Expiry is checked when a stream is touched; a create that finds the store full sweeps
//! expired streams first. Forks are copies of their source's data up to the fork point
//! (offsets kept); the source counts its forks, so deleting it while forks exist only
//! soft-deletes it (410), and deleting its last fork then removes it, up the chain.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use super::{
    Append, Appended, Create, Created, Deleted, Expiry, Fork, Offset, Read, StreamInfo, StreamKey,
    StreamLimits, StreamStore, fork_copy, json,
};
use crate::store::watch::WatchRegistry;
use crate::store::{StoreError, Watch, now_ms};

/// The in-process [`StreamStore`].
#[derive(Debug, Default)]
pub struct MemoryStreams {
    streams: DashMap<String, Stream>,
    watches: Arc<WatchRegistry>,
}

/// A producer's position: epoch, highest accepted sequence, and when it last wrote.
#[derive(Debug, Clone, Copy)]
struct ProducerState {
    epoch: u64,
    last_seq: u64,
    used: Instant,
}

#[derive(Debug)]
struct Stream {
    content_type: String,
    expiry: Expiry,
    closed: bool,
    /// The producer tuple whose append closed the stream: its retry is a duplicate.
    closed_by: Option<(String, u64, u64)>,
    /// Each message with the offset it ends at.
    messages: Vec<(Offset, Bytes)>,
    bytes: u64,
    last_seq: Option<String>,
    producers: HashMap<String, ProducerState>,
    touched: Instant,
    /// A fork: its source's path, the fork point and sub-offset (for idempotent `PUT`).
    fork: Option<(String, Offset, u64)>,
    /// Forks that still refer to this stream.
    refs: u64,
    /// Deleted while `refs > 0`.
    gone: bool,
}

impl Stream {
    fn info(&self) -> StreamInfo {
        StreamInfo {
            gone: self.gone,
            content_type: self.content_type.clone(),
            expiry: self.expiry.clone(),
            closed: self.closed,
            tail: Offset::at(self.bytes),
        }
    }

    fn expired(&self, now: Instant) -> bool {
        match &self.expiry {
            Expiry::Never => false,
            Expiry::Ttl(secs) => now.duration_since(self.touched) >= Duration::from_secs(*secs),
            Expiry::At { unix_ms, .. } => now_ms() >= *unix_ms,
        }
    }

    fn push(&mut self, data: Bytes) -> Offset {
        self.bytes += data.len() as u64;
        let end = Offset::at(self.bytes);
        self.messages.push((end, data));
        end
    }
}

/// What a fork copies from its source.
struct Inherited {
    content_type: String,
    expiry: Expiry,
    messages: Vec<(Offset, Bytes)>,
    bytes: u64,
    anchor: Offset,
}

impl MemoryStreams {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Expires `key` if its time is up: removed, or soft-deleted while forks refer to it.
    fn expire(&self, key: &StreamKey) {
        let now = Instant::now();
        let mut released = None;
        if let Entry::Occupied(mut entry) = self.streams.entry(key.path().to_owned())
            && entry.get().expired(now)
        {
            if entry.get().refs > 0 {
                entry.get_mut().gone = true;
            } else {
                released = entry.remove().fork.map(|f| f.0);
            }
            self.watches.notify(&key.watch_id());
        }
        if let Some(source) = released {
            self.release(source);
        }
    }

    /// A fork of `source` went away: the source counts one fork fewer, and goes if it was
    /// soft-deleted and that was its last fork (then its own source is released, and so on).
    fn release(&self, mut source: String) {
        loop {
            let next = match self.streams.entry(source.clone()) {
                Entry::Occupied(mut entry) => {
                    let s = entry.get_mut();
                    s.refs = s.refs.saturating_sub(1);
                    if s.gone && s.refs == 0 {
                        entry.remove().fork.map(|f| f.0)
                    } else {
                        None
                    }
                }
                Entry::Vacant(_) => None,
            };
            match next {
                Some(up) => source = up,
                None => return,
            }
        }
    }

    /// Removes every expired stream nothing refers to.
    fn sweep(&self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .streams
            .iter()
            .filter(|s| s.expired(now))
            .map(|s| s.key().clone())
            .collect();
        for path in expired {
            self.expire(&StreamKey::new(&path));
        }
    }

    /// Copies what a fork inherits from its source.
    fn inherit(&self, fork: &Fork, content_type: Option<&String>) -> Result<Inherited, Created> {
        self.expire(&fork.source);
        let source = self
            .streams
            .get(fork.source.path())
            .ok_or(Created::SourceNotFound)?;
        if source.gone {
            return Err(Created::Gone);
        }
        if content_type.is_some_and(|ct| json::essence(ct) != json::essence(&source.content_type)) {
            return Err(Created::ContentTypeMismatch);
        }
        let tail = Offset::at(source.bytes);
        let anchor = fork.offset.unwrap_or(tail);
        if anchor > tail {
            return Err(Created::ForkOffsetBeyond);
        }
        let (messages, bytes) =
            fork_copy(&source.messages, &source.content_type, anchor, fork.sub)?;
        Ok(Inherited {
            content_type: source.content_type.clone(),
            expiry: source.expiry.clone(),
            messages,
            bytes,
            anchor,
        })
    }
}

#[async_trait]
impl StreamStore for MemoryStreams {
    async fn create(
        &self,
        key: &StreamKey,
        create: Create,
        limits: &StreamLimits,
    ) -> Result<Created, StoreError> {
        self.expire(key);
        if let Some(existing) = self.streams.get(key.path()) {
            if existing.gone {
                return Ok(Created::Gone);
            }
            let fork_matches = match (&create.fork, &existing.fork) {
                (None, None) => true,
                (Some(want), Some((source, anchor, sub))) => {
                    want.source.path() == source
                        && want.offset.is_none_or(|o| o == *anchor)
                        && want.sub == *sub
                }
                _ => false,
            };
            // A fork that names no content type or expiry inherited them: they match.
            let same = fork_matches
                && create
                    .content_type
                    .as_ref()
                    .is_none_or(|ct| json::essence(&existing.content_type) == json::essence(ct))
                && (existing.expiry == create.expiry
                    || (create.fork.is_some() && create.expiry == Expiry::Never))
                && existing.closed == create.closed;
            return Ok(if same {
                Created::Existing(existing.info())
            } else {
                Created::Conflict
            });
        }
        if self.streams.len() as u64 >= limits.max_streams {
            self.sweep();
            if self.streams.len() as u64 >= limits.max_streams {
                return Ok(Created::TooMany);
            }
        }
        let inherited = match &create.fork {
            Some(fork) => match self.inherit(fork, create.content_type.as_ref()) {
                Ok(inherited) => Some(inherited),
                Err(refused) => return Ok(refused),
            },
            None => None,
        };
        let size = inherited.as_ref().map_or(0, |i| i.bytes)
            + create.data.as_ref().map_or(0, |d| d.len() as u64);
        if size > limits.max_stream_bytes {
            return Ok(Created::TooLarge);
        }
        let (content_type, expiry, messages, bytes, fork) = match (inherited, create.fork) {
            (Some(i), Some(f)) => {
                let expiry = if create.expiry == Expiry::Never {
                    i.expiry
                } else {
                    create.expiry
                };
                let fork = (f.source.path().to_owned(), i.anchor, f.sub);
                (i.content_type, expiry, i.messages, i.bytes, Some(fork))
            }
            _ => (
                create.content_type.unwrap_or_default(),
                create.expiry,
                Vec::new(),
                0,
                None,
            ),
        };
        let source = fork.as_ref().map(|f| f.0.clone());
        let created = match self.streams.entry(key.path().to_owned()) {
            // Created meanwhile by another request: answer as if it had come first.
            Entry::Occupied(_) => Created::Conflict,
            Entry::Vacant(slot) => {
                let mut stream = Stream {
                    content_type,
                    expiry,
                    closed: create.closed,
                    closed_by: None,
                    messages,
                    bytes,
                    last_seq: None,
                    producers: HashMap::new(),
                    touched: Instant::now(),
                    fork,
                    refs: 0,
                    gone: false,
                };
                if let Some(data) = create.data {
                    stream.push(data);
                }
                let info = stream.info();
                slot.insert(stream);
                Created::New(info)
            }
        };
        if matches!(created, Created::New(_)) {
            if let Some(source) = source
                && let Some(mut s) = self.streams.get_mut(&source)
            {
                s.refs += 1;
            }
            self.watches.notify(&key.watch_id());
        }
        Ok(created)
    }

    async fn append(
        &self,
        key: &StreamKey,
        append: Append,
        limits: &StreamLimits,
    ) -> Result<Appended, StoreError> {
        self.expire(key);
        let Some(mut stream) = self.streams.get_mut(key.path()) else {
            return Ok(Appended::NotFound);
        };
        if stream.gone {
            return Ok(Appended::Gone);
        }
        let outcome = apply(&mut stream, append, limits);
        drop(stream);
        if matches!(outcome, Appended::Done { .. }) {
            self.watches.notify(&key.watch_id());
        }
        Ok(outcome)
    }

    async fn read(
        &self,
        key: &StreamKey,
        after: Offset,
        max_bytes: u64,
    ) -> Result<Option<Read>, StoreError> {
        self.expire(key);
        let Some(mut stream) = self.streams.get_mut(key.path()) else {
            return Ok(None);
        };
        if stream.gone {
            return Ok(Some(Read {
                info: stream.info(),
                messages: Vec::new(),
                up_to_date: true,
            }));
        }
        stream.touched = Instant::now();
        let first = stream.messages.partition_point(|(end, _)| *end <= after);
        let mut messages = Vec::new();
        let mut taken = 0u64;
        for (end, data) in &stream.messages[first..] {
            if !messages.is_empty() && taken + data.len() as u64 > max_bytes {
                break;
            }
            taken += data.len() as u64;
            messages.push((*end, data.clone()));
        }
        let up_to_date = first + messages.len() == stream.messages.len();
        Ok(Some(Read {
            info: stream.info(),
            messages,
            up_to_date,
        }))
    }

    async fn info(&self, key: &StreamKey) -> Result<Option<StreamInfo>, StoreError> {
        self.expire(key);
        Ok(self.streams.get(key.path()).map(|s| s.info()))
    }

    async fn delete(&self, key: &StreamKey) -> Result<Deleted, StoreError> {
        self.expire(key);
        let (deleted, released) = match self.streams.entry(key.path().to_owned()) {
            Entry::Vacant(_) => (Deleted::Missing, None),
            Entry::Occupied(entry) if entry.get().gone => {
                drop(entry);
                (Deleted::Gone, None)
            }
            Entry::Occupied(mut entry) if entry.get().refs > 0 => {
                entry.get_mut().gone = true;
                (Deleted::Removed, None)
            }
            Entry::Occupied(entry) => (Deleted::Removed, entry.remove().fork.map(|f| f.0)),
        };
        if let Some(source) = released {
            self.release(source);
        }
        if deleted == Deleted::Removed {
            self.watches.notify(&key.watch_id());
        }
        Ok(deleted)
    }

    fn watch(&self, key: &StreamKey) -> Watch {
        self.watches.watch(&key.watch_id())
    }
}
/// The protocol's append rules, in the reference order: closure (a retry of the closing
/// producer request is a duplicate), content type, producer, `Stream-Seq`, size; then the
/// write.
fn apply(stream: &mut Stream, append: Append, limits: &StreamLimits) -> Appended {
    let tail = Offset::at(stream.bytes);
    if stream.closed {
        if let (Some(p), Some((id, epoch, seq))) = (&append.producer, &stream.closed_by)
            && (&p.id, p.epoch, p.seq) == (id, *epoch, *seq)
        {
            return Appended::Duplicate {
                tail,
                last_seq: p.seq,
                closed: true,
            };
        }
        if append.data.is_none() && append.producer.is_none() {
            // Closing a closed stream again is idempotent.
            return Appended::Done { tail, closed: true };
        }
        return Appended::Closed { tail };
    }
    if let (Some(ct), Some(_)) = (&append.content_type, &append.data)
        && *ct != json::essence(&stream.content_type)
    {
        return Appended::ContentTypeMismatch {
            expected: stream.content_type.clone(),
        };
    }
    let mut accepted = None;
    if let Some(p) = &append.producer {
        match stream.producers.get(&p.id) {
            None if p.seq != 0 => {
                return Appended::SeqGap {
                    expected: 0,
                    received: p.seq,
                };
            }
            Some(state) if p.epoch < state.epoch => {
                return Appended::StaleEpoch {
                    current: state.epoch,
                };
            }
            Some(state) if p.epoch > state.epoch && p.seq != 0 => {
                return Appended::EpochMustStartAtZero;
            }
            Some(state) if p.epoch == state.epoch && p.seq <= state.last_seq => {
                return Appended::Duplicate {
                    tail,
                    last_seq: state.last_seq,
                    closed: false,
                };
            }
            Some(state) if p.epoch == state.epoch && p.seq != state.last_seq + 1 => {
                return Appended::SeqGap {
                    expected: state.last_seq + 1,
                    received: p.seq,
                };
            }
            _ => {}
        }
        accepted = Some(ProducerState {
            epoch: p.epoch,
            last_seq: p.seq,
            used: Instant::now(),
        });
    }
    if let (Some(seq), Some(last)) = (&append.seq, &stream.last_seq)
        && seq.as_bytes() <= last.as_bytes()
    {
        return Appended::SeqConflict { last: last.clone() };
    }
    if let Some(data) = &append.data
        && stream.bytes + data.len() as u64 > limits.max_stream_bytes
    {
        return Appended::TooLarge;
    }
    // Checks done: write.
    if let Some(data) = append.data {
        stream.push(data);
    }
    if let Some(seq) = append.seq {
        stream.last_seq = Some(seq);
    }
    if let (Some(p), Some(state)) = (&append.producer, accepted) {
        if !stream.producers.contains_key(&p.id)
            && stream.producers.len() as u64 >= limits.max_producers
            && let Some(idle) = stream
                .producers
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(id, _)| id.clone())
        {
            stream.producers.remove(&idle);
        }
        stream.producers.insert(p.id.clone(), state);
    }
    if append.close {
        stream.closed = true;
        stream.closed_by = append.producer.map(|p| (p.id, p.epoch, p.seq));
    }
    stream.touched = Instant::now();
    Appended::Done {
        tail: Offset::at(stream.bytes),
        closed: stream.closed,
    }
}

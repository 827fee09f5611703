//! [`MemoryStreams`]: the in-process Durable Streams engine (`store.kind = "memory"`).
//!
//! One map of streams, each behind its own lock (a `DashMap` shard lock for the whole
//! check-and-write of one operation, so a producer's check and its append are atomic).
//! Expiry is checked when a stream is touched, and a sweeper is unnecessary for
//! correctness: an expired stream counts towards `max_streams` only until something
//! touches it or a create needs the room ([`MemoryStreams::create`] then sweeps).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use super::{
    Append, Appended, Create, Created, Expiry, Offset, Read, StreamInfo, StreamKey, StreamLimits,
    StreamStore, json,
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
}

impl Stream {
    fn info(&self) -> StreamInfo {
        StreamInfo {
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

impl MemoryStreams {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Removes `key` if it has expired; true when it did.
    fn drop_if_expired(&self, key: &StreamKey) -> bool {
        let now = Instant::now();
        let removed = self
            .streams
            .remove_if(key.path(), |_, s| s.expired(now))
            .is_some();
        if removed {
            self.watches.notify(&key.watch_id());
        }
        removed
    }

    fn sweep(&self) {
        let now = Instant::now();
        self.streams.retain(|_, s| !s.expired(now));
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
        self.drop_if_expired(key);
        if !self.streams.contains_key(key.path())
            && self.streams.len() as u64 >= limits.max_streams
        {
            self.sweep();
            if self.streams.len() as u64 >= limits.max_streams {
                return Ok(Created::TooMany);
            }
        }
        let size = create.data.as_ref().map_or(0, |d| d.len() as u64);
        let created = match self.streams.entry(key.path().to_owned()) {
            Entry::Occupied(existing) => {
                let s = existing.get();
                let same = json::essence(&s.content_type) == json::essence(&create.content_type)
                    && s.expiry == create.expiry
                    && s.closed == create.closed;
                if same {
                    Created::Existing(s.info())
                } else {
                    Created::Conflict
                }
            }
            Entry::Vacant(_) if size > limits.max_stream_bytes => Created::TooLarge,
            Entry::Vacant(slot) => {
                let mut stream = Stream {
                    content_type: create.content_type,
                    expiry: create.expiry,
                    closed: create.closed,
                    closed_by: None,
                    messages: Vec::new(),
                    bytes: 0,
                    last_seq: None,
                    producers: HashMap::new(),
                    touched: Instant::now(),
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
        self.drop_if_expired(key);
        let Some(mut stream) = self.streams.get_mut(key.path()) else {
            return Ok(Appended::NotFound);
        };
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
        self.drop_if_expired(key);
        let Some(mut stream) = self.streams.get_mut(key.path()) else {
            return Ok(None);
        };
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
        self.drop_if_expired(key);
        Ok(self.streams.get(key.path()).map(|s| s.info()))
    }

    async fn delete(&self, key: &StreamKey) -> Result<bool, StoreError> {
        self.drop_if_expired(key);
        let removed = self.streams.remove(key.path()).is_some();
        if removed {
            self.watches.notify(&key.watch_id());
        }
        Ok(removed)
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

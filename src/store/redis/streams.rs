//! [`RedisStreams`]: Durable Streams in Redis, beside the sessions, on the same connection.
//!
//! A stream is three keys sharing the hash tag `{ds-<hash of path>}` (one Cluster slot;
//! no client text in any key name):
//!
//! - `ds:{T}:meta` HASH: content type, expiry, closed, tail (bytes), last `Stream-Seq`, the
//!   producer tuple that closed it.
//! - `ds:{T}:data` STREAM: one entry per message, id `<offset it ends at>-1`, field `d`.
//! - `ds:{T}:producers` HASH: producer id → `epoch:last seq:last write ms` (at most
//!   `max_producers`; the idle-longest is forgotten first).
//!
//! Every operation is ONE Lua script call (`lua/stream_*.lua`): the producer and
//! `Stream-Seq` checks run in the same atomic step as the append they guard, and a refused
//! call writes nothing. Expiry is Redis's own (`PEXPIRE` refreshed on reads and writes for
//! `Stream-TTL`, `PEXPIREAT` for `Stream-Expires-At`). Writes publish on the channel
//! `ag:{ds-<hash>}:notify` (with the sessions' publish command: `SPUBLISH` in its shard on
//! Cluster), which the store's notifier subscribes to while the stream has live readers on
//! the node, so live readers on every node wake through the sessions' notification
//! path and re-read from their offsets. Writes go out like the sessions' (with
//! `store.redis.ack_replicas`, pipelined with their `WAIT`).
//!
//! A fork copies its source's data up to the fork point: the source is read first (its own
//! slot), then the fork is created with the copy in one call, then the source's fork count
//! is raised in a third (so deleting the source while forks exist only marks it deleted:
//! 410). Deleting a fork lowers its source's count, one call per level of a fork chain. A
//! failure between those calls leaves at worst a count too high: the source then stays
//! soft-deleted until its expiry, never a fork without its data.
//!
//! Not enforced on Redis: `max_streams` (a count across slots would need a second round
//! trip per create; Redis's `maxmemory` and stream expiry bound it instead).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use redis::{Cmd, ErrorKind, Script, ServerErrorKind, Value};

use super::RedisStore;
use super::keys::notify_channel;
use crate::store::durable::{
    Append, Appended, Create, Created, Deleted, Expiry, Fork, Offset, Read, StreamInfo, StreamKey,
    StreamLimits, StreamStore, fork_copy, json,
};
use crate::store::{SessionStore, StoreError, Watch, now_ms};

/// Most messages one read script returns (the byte bound usually stops it first).
const READ_MAX_MESSAGES: u64 = 1000;

/// A script and its SHA-1.
struct StreamScript {
    code: String,
    hash: String,
}

impl StreamScript {
    /// `body` after the expiry helpers, notifying with `publish` (`PUBLISH`, or `SPUBLISH`
    /// on Cluster with per-session subscriptions, as the session scripts do).
    fn new(body: &str, publish: &str) -> Self {
        let code = format!(
            "local PUBLISH = '{publish}'\n{}{}",
            include_str!("lua/stream_expiry.lua"),
            body
        );
        let hash = Script::new(&code).get_hash().to_owned();
        Self { code, hash }
    }
}

/// The Redis [`StreamStore`] (see the module docs).
pub struct RedisStreams {
    store: Arc<RedisStore>,
    create: StreamScript,
    append: StreamScript,
    read: StreamScript,
    delete: StreamScript,
    refs: StreamScript,
}

impl std::fmt::Debug for RedisStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreams").finish_non_exhaustive()
    }
}

impl RedisStreams {
    /// Streams in `store`'s Redis, on its connections and its notifier.
    pub fn new(store: Arc<RedisStore>) -> Self {
        let publish = store.settings.publish_command();
        Self {
            create: StreamScript::new(include_str!("lua/stream_create.lua"), publish),
            append: StreamScript::new(include_str!("lua/stream_append.lua"), publish),
            read: StreamScript::new(include_str!("lua/stream_read.lua"), publish),
            delete: StreamScript::new(include_str!("lua/stream_delete.lua"), publish),
            refs: StreamScript::new(include_str!("lua/stream_refs.lua"), publish),
            store,
        }
    }

    fn keys(key: &StreamKey) -> [String; 3] {
        let tag = key.tag();
        [
            format!("ds:{{{tag}}}:meta"),
            format!("ds:{{{tag}}}:data"),
            format!("ds:{{{tag}}}:producers"),
        ]
    }

    fn channel(key: &StreamKey) -> String {
        notify_channel(&key.watch_id())
    }

    fn invoke(command: &str, script_arg: &str, key: &StreamKey, args: &[&[u8]]) -> Cmd {
        let mut cmd = redis::cmd(command);
        cmd.arg(script_arg).arg(3).arg(&Self::keys(key)[..]);
        for arg in args {
            cmd.arg(*arg);
        }
        cmd
    }

    /// Runs a write script: EVALSHA, or EVAL once when Redis does not know it yet.
    async fn write(
        &self,
        script: &StreamScript,
        key: &StreamKey,
        args: &[&[u8]],
    ) -> Result<Vec<String>, StoreError> {
        let reply = match self
            .store
            .send_write(&Self::invoke("EVALSHA", &script.hash, key, args))
            .await?
        {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.store
                    .send_write(&Self::invoke("EVAL", &script.code, key, args))
                    .await?
            }
            other => other,
        };
        reply.map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// Runs the read script (binary reply).
    async fn read_script(&self, key: &StreamKey, args: &[&[u8]]) -> Result<Vec<Value>, StoreError> {
        let run = |cmd: Cmd| async move {
            let mut conn = self.store.conn.clone();
            self.store
                .timed(async move { cmd.query_async::<Vec<Value>>(&mut conn).await })
                .await
        };
        let reply = match run(Self::invoke("EVALSHA", &self.read.hash, key, args)).await? {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                run(Self::invoke("EVAL", &self.read.code, key, args)).await?
            }
            other => other,
        };
        reply.map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// Reads metadata and, with `first` (the smallest end offset wanted), messages.
    async fn fetch(
        &self,
        key: &StreamKey,
        first: Option<u64>,
        max_bytes: u64,
        touch: bool,
    ) -> Result<Option<Read>, StoreError> {
        let first = first.map(|f| f.to_string()).unwrap_or_default();
        let max_bytes = max_bytes.to_string();
        let count = READ_MAX_MESSAGES.to_string();
        let touch: &[u8] = if touch { b"1" } else { b"0" };
        let reply = self
            .read_script(
                key,
                &[
                    first.as_bytes(),
                    max_bytes.as_bytes(),
                    count.as_bytes(),
                    touch,
                ],
            )
            .await?;
        if reply.is_empty() {
            return Ok(None);
        }
        let parts = reply
            .into_iter()
            .map(|v| match v {
                Value::BulkString(b) => Ok(b),
                other => Err(StoreError::Protocol(format!(
                    "stream read: unexpected {other:?}"
                ))),
            })
            .collect::<Result<Vec<Vec<u8>>, StoreError>>()?;
        let [content_type, ttl, at_ms, at, closed, tail, gone, rest @ ..] = &parts[..] else {
            return Err(StoreError::Protocol("stream read: short reply".into()));
        };
        let text = |b: &[u8]| {
            String::from_utf8(b.to_vec())
                .map_err(|_| StoreError::Protocol("stream read: not UTF-8".into()))
        };
        let content_type = text(content_type)?;
        let (ttl, at) = (text(ttl)?, text(at)?);
        let closed = closed == b"1";
        let tail = number(&text(tail)?)?;
        let expiry = if !ttl.is_empty() {
            Expiry::Ttl(number(&ttl)?)
        } else if !at.is_empty() {
            Expiry::At {
                unix_ms: number(&text(at_ms)?)?,
                text: at,
            }
        } else {
            Expiry::Never
        };
        let mut messages = Vec::with_capacity(rest.len() / 2);
        for pair in rest.chunks(2) {
            let [end, data] = pair else {
                return Err(StoreError::Protocol("stream read: odd reply".into()));
            };
            let end = number(&text(end)?)?;
            messages.push((Offset::at(end), Bytes::copy_from_slice(data)));
        }
        let up_to_date = messages
            .last()
            .is_none_or(|(end, _)| *end >= Offset::at(tail));
        Ok(Some(Read {
            info: StreamInfo {
                gone: gone == b"1",
                content_type,
                expiry,
                closed,
                tail: Offset::at(tail),
            },
            messages,
            up_to_date,
        }))
    }
}

/// What a fork copies from its source (see [`fork_copy`]).
struct Inherited {
    content_type: String,
    expiry: Expiry,
    messages: Vec<(Offset, Bytes)>,
    bytes: u64,
    anchor: Offset,
}

impl RedisStreams {
    /// Reads a fork's source up to the fork point, page by page (a stream's bytes never
    /// change once written, so pages read apart still agree).
    async fn inherit(
        &self,
        fork: &Fork,
        content_type: Option<&String>,
        limits: &StreamLimits,
    ) -> Result<Result<Inherited, Created>, StoreError> {
        let page = limits.max_stream_bytes.max(1);
        let Some(first) = self.fetch(&fork.source, Some(1), page, false).await? else {
            return Ok(Err(Created::SourceNotFound));
        };
        let info = first.info;
        if info.gone {
            return Ok(Err(Created::Gone));
        }
        if content_type.is_some_and(|ct| json::essence(ct) != json::essence(&info.content_type)) {
            return Ok(Err(Created::ContentTypeMismatch));
        }
        let anchor = fork.offset.unwrap_or(info.tail);
        if anchor > info.tail {
            return Ok(Err(Created::ForkOffsetBeyond));
        }
        let mut messages = first.messages;
        // Until a message ends past the anchor (the sub-offset may need it) or none is left.
        while let Some(last) = messages.last().map(|(end, _)| *end)
            && last <= anchor
            && last < info.tail
        {
            let from = last.bytes().unwrap_or(u64::MAX).saturating_add(1);
            match self.fetch(&fork.source, Some(from), page, false).await? {
                Some(more) if !more.messages.is_empty() => messages.extend(more.messages),
                Some(_) => break,
                None => return Ok(Err(Created::SourceNotFound)),
            }
            if messages.iter().map(|(_, d)| d.len() as u64).sum::<u64>()
                > limits.max_stream_bytes.saturating_mul(2)
            {
                return Ok(Err(Created::TooLarge));
            }
        }
        Ok(
            fork_copy(&messages, &info.content_type, anchor, fork.sub).map(|(messages, bytes)| {
                Inherited {
                    content_type: info.content_type.clone(),
                    expiry: info.expiry.clone(),
                    messages,
                    bytes,
                    anchor,
                }
            }),
        )
    }
}

fn number(s: &str) -> Result<u64, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Protocol(format!("stream: bad number {s:?}")))
}

fn word(reply: &[String], i: usize) -> Result<&str, StoreError> {
    reply
        .get(i)
        .map(String::as_str)
        .ok_or_else(|| StoreError::Protocol("stream script: short reply".into()))
}

#[async_trait]
impl StreamStore for RedisStreams {
    async fn create(
        &self,
        key: &StreamKey,
        create: Create,
        limits: &StreamLimits,
    ) -> Result<Created, StoreError> {
        // A fork's copy is read first (its source is in another slot); if the source
        // refuses, an existing stream at the path still answers as usual.
        let mut inherited = None;
        if let Some(fork) = &create.fork {
            match self
                .inherit(fork, create.content_type.as_ref(), limits)
                .await?
            {
                Ok(found) => inherited = Some(found),
                Err(refused) => {
                    if self.info(key).await?.is_none() {
                        return Ok(refused);
                    }
                }
            }
        }
        let ask_ct = create.content_type.clone();
        let ask_expiry = create.expiry.clone();
        let (content_type, expiry) = match &inherited {
            Some(i) => (
                ask_ct.clone().unwrap_or_else(|| i.content_type.clone()),
                if ask_expiry == Expiry::Never {
                    i.expiry.clone()
                } else {
                    ask_expiry.clone()
                },
            ),
            None => (ask_ct.clone().unwrap_or_default(), ask_expiry.clone()),
        };
        let essence = json::essence(&content_type);
        let (ttl, at_ms, at) = match &expiry {
            Expiry::Never => (String::new(), String::new(), String::new()),
            Expiry::Ttl(secs) => (secs.to_string(), String::new(), String::new()),
            Expiry::At { unix_ms, text } => (String::new(), unix_ms.to_string(), text.clone()),
        };
        let flag = |b: bool| -> &'static [u8] { if b { b"1" } else { b"0" } };
        let data = create.data.clone().unwrap_or_default();
        let max = limits.max_stream_bytes.to_string();
        let channel = Self::channel(key);
        let (source, asked_offset, anchor, sub, bytes) = match (&create.fork, &inherited) {
            (Some(f), Some(i)) => (
                f.source.path().to_owned(),
                f.offset.map(|o| o.to_string()).unwrap_or_default(),
                i.anchor.to_string(),
                f.sub.to_string(),
                i.bytes.to_string(),
            ),
            (Some(f), None) => (
                f.source.path().to_owned(),
                f.offset.map(|o| o.to_string()).unwrap_or_default(),
                String::new(),
                f.sub.to_string(),
                "0".to_owned(),
            ),
            _ => (
                String::new(),
                String::new(),
                String::new(),
                "0".to_owned(),
                "0".to_owned(),
            ),
        };
        let inherit_ct: &[u8] = if ask_ct.is_none() { b"inherit-ct" } else { b"" };
        let inherit_expiry: &[u8] = if ask_expiry == Expiry::Never {
            b"inherit-expiry"
        } else {
            b""
        };
        let ends: Vec<String> = inherited
            .as_ref()
            .map(|i| {
                i.messages
                    .iter()
                    .map(|(end, _)| end.bytes().unwrap_or(0).to_string())
                    .collect()
            })
            .unwrap_or_default();
        let mut args: Vec<&[u8]> = vec![
            content_type.as_bytes(),
            essence.as_bytes(),
            ttl.as_bytes(),
            at_ms.as_bytes(),
            at.as_bytes(),
            flag(create.closed),
            flag(create.data.is_some()),
            &data,
            max.as_bytes(),
            channel.as_bytes(),
            source.as_bytes(),
            asked_offset.as_bytes(),
            anchor.as_bytes(),
            sub.as_bytes(),
            bytes.as_bytes(),
            inherit_ct,
            inherit_expiry,
        ];
        if let Some(i) = &inherited {
            for ((_, message), end) in i.messages.iter().zip(&ends) {
                args.push(end.as_bytes());
                args.push(message);
            }
        }
        let reply = self.write(&self.create, key, &args).await?;
        let created = match word(&reply, 0)? {
            "ok" => Created::New(StreamInfo {
                gone: false,
                content_type,
                expiry,
                closed: create.closed,
                tail: Offset::at(number(word(&reply, 1)?)?),
            }),
            "exists" => Created::Existing(StreamInfo {
                gone: false,
                tail: Offset::at(number(word(&reply, 1)?)?),
                content_type: word(&reply, 2)?.to_owned(),
                expiry,
                closed: word(&reply, 3)? == "1",
            }),
            "conflict" => Created::Conflict,
            "too_large" => Created::TooLarge,
            "gone" => Created::Gone,
            other => return Err(StoreError::Protocol(format!("stream create: {other}"))),
        };
        if let (Created::New(_), Some(fork)) = (&created, &create.fork) {
            // The source counts its forks (a second call: another slot).
            self.write(&self.refs, &fork.source, &[b"1"]).await?;
        }
        Ok(created)
    }

    async fn append(
        &self,
        key: &StreamKey,
        append: Append,
        limits: &StreamLimits,
    ) -> Result<Appended, StoreError> {
        let flag = |b: bool| -> &'static [u8] { if b { b"1" } else { b"0" } };
        let data = append.data.clone().unwrap_or_default();
        let content_type = append.content_type.clone().unwrap_or_default();
        let seq = append.seq.clone().unwrap_or_default();
        let (id, epoch, pseq) = match &append.producer {
            Some(p) => (p.id.clone(), p.epoch.to_string(), p.seq.to_string()),
            None => (String::new(), "0".to_owned(), "0".to_owned()),
        };
        let max_bytes = limits.max_stream_bytes.to_string();
        let max_producers = limits.max_producers.to_string();
        let now = now_ms().to_string();
        let channel = Self::channel(key);
        let reply = self
            .write(
                &self.append,
                key,
                &[
                    flag(append.data.is_some()),
                    &data,
                    content_type.as_bytes(),
                    flag(append.seq.is_some()),
                    seq.as_bytes(),
                    flag(append.producer.is_some()),
                    id.as_bytes(),
                    epoch.as_bytes(),
                    pseq.as_bytes(),
                    flag(append.close),
                    max_bytes.as_bytes(),
                    max_producers.as_bytes(),
                    now.as_bytes(),
                    channel.as_bytes(),
                ],
            )
            .await?;
        let n = |i: usize| -> Result<u64, StoreError> { number(word(&reply, i)?) };
        Ok(match word(&reply, 0)? {
            "ok" => Appended::Done {
                tail: Offset::at(n(1)?),
                closed: word(&reply, 2)? == "1",
            },
            "dup" => Appended::Duplicate {
                tail: Offset::at(n(1)?),
                last_seq: n(2)?,
                closed: word(&reply, 3)? == "1",
            },
            "not_found" => Appended::NotFound,
            "gone" => Appended::Gone,
            "closed" => Appended::Closed {
                tail: Offset::at(n(1)?),
            },
            "ct" => Appended::ContentTypeMismatch {
                expected: word(&reply, 1)?.to_owned(),
            },
            "seq" => Appended::SeqConflict {
                last: word(&reply, 1)?.to_owned(),
            },
            "stale" => Appended::StaleEpoch { current: n(1)? },
            "epoch0" => Appended::EpochMustStartAtZero,
            "gap" => Appended::SeqGap {
                expected: n(1)?,
                received: n(2)?,
            },
            "too_large" => Appended::TooLarge,
            other => return Err(StoreError::Protocol(format!("stream append: {other}"))),
        })
    }

    async fn read(
        &self,
        key: &StreamKey,
        after: Offset,
        max_bytes: u64,
    ) -> Result<Option<Read>, StoreError> {
        // Messages end after `after`: the first wanted ends at `after + 1` or later. An
        // offset of another epoch lies past every message.
        let first = after.bytes().and_then(|b| b.checked_add(1));
        self.fetch(key, first, max_bytes, true).await
    }

    async fn info(&self, key: &StreamKey) -> Result<Option<StreamInfo>, StoreError> {
        Ok(self.fetch(key, None, 0, false).await?.map(|r| r.info))
    }

    async fn delete(&self, key: &StreamKey) -> Result<Deleted, StoreError> {
        let channel = Self::channel(key);
        let reply = self.write(&self.delete, key, &[channel.as_bytes()]).await?;
        let mut released = match word(&reply, 0)? {
            "missing" => return Ok(Deleted::Missing),
            "gone" => return Ok(Deleted::Gone),
            "soft" => return Ok(Deleted::Removed),
            "removed" => word(&reply, 1)?.to_owned(),
            other => return Err(StoreError::Protocol(format!("stream delete: {other}"))),
        };
        // Release the source, and up the chain while soft-deleted sources go (one call per
        // level: each source is in its own slot).
        while !released.is_empty() {
            let source = StreamKey::new(&released);
            let reply = self.write(&self.refs, &source, &[b"-1"]).await?;
            released = match word(&reply, 0)? {
                "removed" => word(&reply, 1)?.to_owned(),
                _ => String::new(),
            };
        }
        Ok(Deleted::Removed)
    }

    fn watch(&self, key: &StreamKey) -> Watch {
        self.store.watch(&key.watch_id())
    }
}

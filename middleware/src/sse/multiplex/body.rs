//! [`MultiplexBody`]: the inner body passed through, a `400`'s JSON, or the merge of every
//! stream's events into one SSE body.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use serde::Serialize;
use serde_json::value::RawValue;

use super::cursor::Cursor;
use crate::sse::fanout::BoxError;
use crate::sse::{Event, Frame as SseFrame, Item, Parser};

pin_project! {
    /// Body of an [`SseMultiplex`](super::SseMultiplex) response.
    pub struct MultiplexBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        // Not a multiplexed request: the inner body.
        Inner { #[pin] body: B },
        // The layer's own error answer.
        Error { json: Option<Bytes> },
        // The merged streams.
        Merged { merge: Box<Merge<B>> },
    }
}

impl<B> MultiplexBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn error(json: Bytes) -> Self {
        Self {
            kind: Kind::Error { json: Some(json) },
        }
    }

    pub(crate) fn merged(merge: Merge<B>) -> Self {
        Self {
            kind: Kind::Merged {
                merge: Box::new(merge),
            },
        }
    }
}

impl<B> std::fmt::Debug for MultiplexBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "inner",
            Kind::Error { .. } => "error",
            Kind::Merged { .. } => "merged",
        };
        f.debug_struct("MultiplexBody")
            .field("kind", &kind)
            .finish()
    }
}

impl<B> Body for MultiplexBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx).map_err(Into::into),
            KindProj::Error { json } => Poll::Ready(json.take().map(|j| Ok(Frame::data(j)))),
            KindProj::Merged { merge } => merge.poll_frame(cx),
        }
    }
}

/// One followed stream.
pub(crate) struct Stream<B> {
    pub(crate) name: String,
    /// `None` once it has ended.
    pub(crate) body: Option<Pin<Box<B>>>,
    pub(crate) parser: Parser,
}

/// The merge of every stream, with the cursor of what has been sent.
pub(crate) struct Merge<B> {
    pub(crate) streams: Vec<Stream<B>>,
    pub(crate) cursor: Cursor,
    pub(crate) out: VecDeque<Bytes>,
    /// The stream polled first next time, so that a busy one cannot starve the others.
    pub(crate) next: usize,
    pub(crate) heartbeat: tokio::time::Interval,
    /// Whether a `retry:` was passed on already (only the first one is).
    pub(crate) retry_sent: bool,
}

/// The data of every merged event.
#[derive(Serialize)]
struct Envelope<'a> {
    stream: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    event: &'a str,
    data: Data<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Json(&'a RawValue),
    Text(&'a str),
}

impl<B> Merge<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if let Some(frame) = self.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(frame))));
            }
            if self.streams.iter().all(|s| s.body.is_none()) {
                return Poll::Ready(None);
            }
            let n = self.streams.len();
            let mut progressed = false;
            for k in 0..n {
                let i = (self.next + k) % n;
                let Some(body) = self.streams[i].body.as_mut() else {
                    continue;
                };
                match body.as_mut().poll_frame(cx) {
                    Poll::Pending => {}
                    Poll::Ready(None) => {
                        self.streams[i].body = None;
                        progressed = true;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // End everything: the client reconnects and resumes every stream.
                        let e: BoxError = e.into();
                        return Poll::Ready(Some(Err(format!(
                            "stream {}: {e}",
                            self.streams[i].name
                        )
                        .into())));
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        progressed = true;
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        if let Err(e) = self.streams[i].parser.feed(&data) {
                            return Poll::Ready(Some(Err(format!(
                                "stream {}: {e}",
                                self.streams[i].name
                            )
                            .into())));
                        }
                        while let Some(item) = self.streams[i].parser.next_item() {
                            self.forward(i, item);
                        }
                    }
                }
            }
            self.next = (self.next + 1) % n.max(1);
            if progressed || !self.out.is_empty() {
                continue;
            }
            if self.heartbeat.poll_tick(cx).is_ready() {
                self.out.push_back(SseFrame::comment("heartbeat").encode());
                continue;
            }
            return Poll::Pending;
        }
    }

    /// Turns one item of stream `i` into output (and moves the cursor).
    fn forward(&mut self, i: usize, item: Item) {
        match item {
            Item::Event(event) => {
                if let Some(id) = &event.id {
                    self.cursor.advance(i, id);
                }
                let data = match serde_json::from_str::<&RawValue>(&event.data) {
                    Ok(raw) => Data::Json(raw),
                    Err(_) => Data::Text(&event.data),
                };
                let envelope = Envelope {
                    stream: &self.streams[i].name,
                    id: event.id.as_deref(),
                    event: event.event.as_deref().unwrap_or("message"),
                    data,
                };
                // Serialising borrowed strings and valid raw JSON cannot fail.
                let data = serde_json::to_string(&envelope).unwrap_or_default();
                let frame = Event {
                    id: Some(self.cursor.encode()),
                    event: None,
                    data,
                }
                .encode();
                self.out.push_back(frame);
            }
            Item::Id(id) => {
                self.cursor.advance(i, &id);
                self.out
                    .push_back(Bytes::from(format!("id: {}\n\n", self.cursor.encode())));
            }
            Item::Retry(ms) if !self.retry_sent => {
                self.retry_sent = true;
                self.out.push_back(SseFrame::retry(ms).encode());
            }
            // Inner heartbeats and later retries: the merged response has its own.
            Item::Retry(_) | Item::Comment(_) => {}
        }
    }
}

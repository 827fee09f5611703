//! `POST`: append, close, or both; `Stream-Seq` and idempotent producers (§5.2, §5.3).

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};

use super::{DurableState, empty, gone, headers, not_found, read_body, set};
use crate::api::ApiError;
use crate::api::body::Body;
use crate::store::durable::{Append, Appended, StreamKey, json};

/// Appends the body to `key` (and closes it with `Stream-Closed: true`). 204 with
/// `Stream-Next-Offset`; a producer's append answers 200 with its epoch and sequence, its
/// retry 204.
pub async fn handle<B>(
    state: &Arc<DurableState>,
    key: &StreamKey,
    req: Request<B>,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    let h = &parts.headers;
    let close = headers::closed(h);
    let producer = headers::producer(h)?;
    let seq = headers::text(h, headers::SEQ)?.map(str::to_owned);
    if seq
        .as_ref()
        .is_some_and(|s| s.len() > headers::MAX_ID_BYTES)
    {
        return Err(ApiError::invalid(
            "Stream-Seq",
            format!("must be at most {} bytes", headers::MAX_ID_BYTES),
        ));
    }
    let content_type = headers::text(h, header::CONTENT_TYPE.as_str())?.map(json::essence);
    let body = read_body(body, state.settings.max_append_bytes).await?;
    let data = if body.is_empty() {
        if !close {
            return Err(ApiError::invalid_body(
                "required: an empty POST only closes (with Stream-Closed: true)",
            ));
        }
        None
    } else {
        let Some(ct) = &content_type else {
            return Err(ApiError::invalid("Content-Type", "is required with a body"));
        };
        // The stream's mode decides the framing; the store checks the types match. A JSON
        // body for a JSON stream is framed here; a mismatch is refused by the store.
        if ct == "application/json" {
            json::frame(&body, false).map_err(ApiError::invalid_body)?
        } else {
            Some(body)
        }
    };
    let epoch_seq = producer.as_ref().map(|p| (p.epoch, p.seq));
    let appends = data.is_some();
    let append = Append {
        content_type: data.as_ref().and(content_type),
        data,
        seq,
        producer,
        close,
    };
    let outcome = state
        .store
        .append(key, append, &state.settings.limits)
        .await?;
    let mut response;
    match outcome {
        Appended::Done { tail, closed } => {
            // A producer's append answers 200 with its headers; a close-only request 204.
            response = empty(if epoch_seq.is_some() && appends {
                StatusCode::OK
            } else {
                StatusCode::NO_CONTENT
            });
            let h = response.headers_mut();
            set(h, headers::NEXT_OFFSET, &tail.to_string());
            if let Some((epoch, seq)) = epoch_seq {
                set(h, headers::PRODUCER_EPOCH, &epoch.to_string());
                set(h, headers::PRODUCER_SEQ, &seq.to_string());
            }
            if closed {
                set(h, headers::CLOSED, "true");
            }
        }
        Appended::Duplicate {
            tail,
            last_seq,
            closed,
        } => {
            response = empty(StatusCode::NO_CONTENT);
            let h = response.headers_mut();
            set(h, headers::NEXT_OFFSET, &tail.to_string());
            if let Some((epoch, _)) = epoch_seq {
                set(h, headers::PRODUCER_EPOCH, &epoch.to_string());
            }
            set(h, headers::PRODUCER_SEQ, &last_seq.to_string());
            if closed {
                set(h, headers::CLOSED, "true");
            }
        }
        Appended::NotFound => return Err(not_found()),
        Appended::Gone => return Err(gone()),
        Appended::Closed { tail } => {
            response = ApiError::new(
                StatusCode::CONFLICT,
                "stream_closed",
                "the stream is closed: it takes no more appends",
            )
            .into_response();
            let h = response.headers_mut();
            set(h, headers::CLOSED, "true");
            set(h, headers::NEXT_OFFSET, &tail.to_string());
        }
        Appended::ContentTypeMismatch { expected } => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "content_type_mismatch",
                format!("Content-Type: the stream's content type is {expected}"),
            ));
        }
        Appended::SeqConflict { .. } => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "stream_seq_conflict",
                "Stream-Seq: must be greater (byte-wise) than the stream's last Stream-Seq",
            ));
        }
        Appended::StaleEpoch { current } => {
            response = ApiError::new(
                StatusCode::FORBIDDEN,
                "stale_producer_epoch",
                format!("Producer-Epoch: a newer epoch ({current}) fenced this producer"),
            )
            .into_response();
            set(
                response.headers_mut(),
                headers::PRODUCER_EPOCH,
                &current.to_string(),
            );
        }
        Appended::EpochMustStartAtZero => {
            return Err(ApiError::invalid(
                "Producer-Seq",
                "a new Producer-Epoch must start at sequence 0",
            ));
        }
        Appended::SeqGap { expected, received } => {
            response = ApiError::new(
                StatusCode::CONFLICT,
                "producer_seq_gap",
                format!("Producer-Seq: expected {expected}, got {received}"),
            )
            .into_response();
            let h = response.headers_mut();
            set(h, headers::PRODUCER_EXPECTED_SEQ, &expected.to_string());
            set(h, headers::PRODUCER_RECEIVED_SEQ, &received.to_string());
        }
        Appended::TooLarge => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "stream_too_large",
                "body: the append would take the stream past its maximum size \
                 ([routes.durable] max_stream_bytes); nothing was appended",
            ));
        }
    }
    Ok(response)
}

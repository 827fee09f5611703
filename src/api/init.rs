//! `POST /v2/sessions`: create a session, hand it to the agent, return its stream URL.
//!
//! Body (optional): `{"metadata": <any JSON>}`. Answer `201`:
//! `{"id","status","stream_url","stream_token","stream_token_expires_at"}`. `stream_url`
//! carries the token in its query string, so it works as-is in a browser `EventSource`.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use serde::Deserialize;

use super::body::{Body, json, read_json};
use super::{ApiError, ApiState};
use crate::store::{NewSession, SessionId};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InitBody {
    #[serde(default)]
    metadata: serde_json::Value,
}

/// Handles init.
pub async fn handle<B>(state: &Arc<ApiState>, req: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let owner = state.owner(req.headers(), req.extensions())?;
    let (parts, body) = req.into_parts();
    let input: InitBody =
        read_json(&parts.headers, body, state.settings.max_body_bytes, true).await?;
    let id = SessionId::generate();
    state
        .store
        .create(
            &id,
            NewSession {
                owner: owner.clone(),
                metadata: input.metadata.to_string(),
            },
        )
        .await?;
    if let Some(dispatch) = &state.dispatch {
        dispatch.dispatch(&id, &owner);
    }
    let (token, expires) = state.tokens.issue(&id);
    let path = format!("/v2/sessions/{id}/stream?token={token}");
    // An absolute URL when the Host is known, so it also works outside a browser page.
    let stream_url = match parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
    {
        Some(host) => {
            let proto = parts
                .headers
                .get("x-forwarded-proto")
                .and_then(|p| p.to_str().ok())
                .filter(|p| *p == "https" || *p == "http")
                .unwrap_or("http");
            format!("{proto}://{host}{path}")
        }
        None => path,
    };
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({
            "id": id.as_str(),
            "status": crate::store::RUNNING,
            "stream_url": stream_url,
            "stream_token": token,
            "stream_token_expires_at": expires,
        }),
    ))
}

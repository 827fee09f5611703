//! API errors and their JSON form: `{"error":{"code":"..","message":".."}}`.

use agentgate_middleware::error_body;
use agentgate_middleware::existence_cache::NotFound;
use http::{HeaderValue, Response, StatusCode, header};

use super::body::{Body, full};
use crate::auth::AuthError;
use crate::store::StoreError;

/// Code and message of the 404 for an unknown session (the existence cache answers the same).
pub const SESSION_NOT_FOUND: NotFound = NotFound {
    code: "session_not_found",
    message: "session not found (never created, or expired)",
};

/// Seconds a client is told to wait when the store is unavailable.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 1;

/// An error answer: status, a stable machine-readable code and a message naming the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `invalid_field`.
    pub code: &'static str,
    /// Human-readable message; names the offending field where there is one.
    pub message: String,
    /// `Retry-After` seconds, for 503.
    pub retry_after: Option<u64>,
    /// `Allow` header value, for 405.
    pub allow: Option<&'static str>,
}

impl ApiError {
    /// `status` with `code` and `message` (for answers outside the agent API's own, such as
    /// the admin listener's refusals).
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            allow: None,
        }
    }

    /// 400: `field` is wrong for `reason`.
    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            format!("{field}: {reason}"),
        )
    }

    /// 400: the body is not the JSON the endpoint expects.
    pub fn invalid_body(reason: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("body: {reason}"),
        )
    }

    /// 404: no such route.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!("no route for {path}"),
        )
    }

    /// 404: no such session.
    pub fn session_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            SESSION_NOT_FOUND.code,
            SESSION_NOT_FOUND.message,
        )
    }

    /// 405 with the methods the path allows.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("method not allowed; use {allow}"),
        );
        e.allow = Some(allow);
        e
    }

    /// 413: the body exceeds the configured limit.
    pub fn too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("body: larger than the limit of {limit} bytes"),
        )
    }

    /// 413: a tool batch would hold more than its memory budget; `message` names the call.
    pub fn tool_budget_exceeded(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "tool_budget_exceeded",
            message,
        )
    }

    /// 500: the gateway failed; `reason` is logged, not told to the client.
    pub fn internal(reason: impl std::fmt::Display) -> Self {
        tracing::error!(%reason, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// 415: the body is not JSON.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "content-type: must be application/json",
        )
    }

    /// 501: the endpoint is not available yet.
    pub fn not_implemented(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            format!("{what} is not implemented yet"),
        )
    }

    /// The JSON response.
    pub fn into_response(self) -> Response<Body> {
        let json = error_body::json(self.code, &self.message);
        let mut response = error_body::response(self.status, json, full);
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::session_not_found(),
            StoreError::Completed => Self::new(
                StatusCode::CONFLICT,
                "session_completed",
                "session already completed",
            ),
            StoreError::Forbidden => Self::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "session belongs to another API key",
            ),
            // No Retry-After: a quota does not free with time; completing a session does.
            StoreError::SessionQuotaExceeded { limit } => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "session_quota_exceeded",
                format!(
                    "this API key already has {limit} running sessions, its quota \
                     (store.quotas.max_active_sessions_per_key); complete one first"
                ),
            ),
            StoreError::SessionBytesExceeded { limit } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "session_bytes_exceeded",
                format!(
                    "events: this batch would take the session past its quota of {limit} \
                     bytes of events (store.quotas.max_session_bytes); nothing was appended"
                ),
            ),
            StoreError::Unavailable(reason) => {
                tracing::warn!(%reason, "session store unavailable");
                let mut e = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "session store unavailable, retry later",
                );
                e.retry_after = Some(UNAVAILABLE_RETRY_AFTER_SECS);
                e
            }
            StoreError::NotReplicated { wanted, acked } => {
                tracing::warn!(wanted, acked, "write not confirmed by enough replicas");
                let mut e = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "replicas_unconfirmed",
                    format!(
                        "the write was applied but only {acked} of the {wanted} replicas \
                         required (store.redis.ack_replicas) confirmed it in time \
                         (store.redis.ack_timeout_ms); a failover may lose it, and a retry \
                         may apply it twice unless it carries the same Idempotency-Key"
                    ),
                );
                e.retry_after = Some(UNAVAILABLE_RETRY_AFTER_SECS);
                e
            }
            StoreError::IdempotencyKeyReused => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency-Key: already used in this session for another request (other \
                 events, or the other endpoint); nothing was written",
            ),
            StoreError::Protocol(reason) => {
                tracing::error!(%reason, "session store protocol error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let code = match e {
            AuthError::Missing => "missing_credentials",
            AuthError::Invalid | AuthError::Malformed | AuthError::ExpiryTooFar => {
                "invalid_credentials"
            }
            AuthError::Expired => "token_expired",
        };
        Self::new(StatusCode::UNAUTHORIZED, code, e.to_string())
    }
}

//! The in-process gateway the API-level targets send requests to: the real [`AgentApi`]
//! built by [`App::build`] from [`CONFIG`] (memory store, no agent), on a runtime that lives
//! as long as the process. Built once, on first use; each check creates the sessions it
//! needs, so inputs do not depend on each other.

use std::sync::{Arc, OnceLock};

use agentgate::api::AgentApi;
use agentgate::app::App;
use agentgate::store::{Event, SessionId, SessionState, SessionStore};
use agentgate_config::Config;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower::ServiceExt;

/// The gateway's configuration. Sessions expire after a minute (the sweeper keeps memory
/// bounded over millions of inputs; one input never takes that long); tool limits are the
/// defaults, one CPU worker.
pub const CONFIG: &str = r#"
[auth]
api_keys = ["fuzz-api-key-0123456789abcdef"]
stream_token_secret = "fuzz-stream-token-secret-0123456789abcdef"

[store]
kind = "memory"
retention_secs = 60
session_ttl_secs = 60

[agent]
dispatch = "none"

[tools]
workers = 1
timeout_ms = 2_000

[tools.sha256]
kind = "sha256"

[tools.json_query]
kind = "json_query"

[tools.regex_extract]
kind = "regex_extract"
"#;

/// The API key requests are made with.
pub const API_KEY: &str = "fuzz-api-key-0123456789abcdef";

/// One built gateway.
pub struct Gateway {
    runtime: tokio::runtime::Runtime,
    app: App,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

/// A session a check created, with the stream token it was issued.
#[derive(Debug)]
pub struct Created {
    /// The session.
    pub id: SessionId,
    /// Its stream token.
    pub token: String,
}

impl Gateway {
    /// The process's gateway, built on first use.
    pub fn get() -> &'static Gateway {
        static GATEWAY: OnceLock<Gateway> = OnceLock::new();
        GATEWAY.get_or_init(|| {
            let config = Config::from_toml_str(CONFIG).expect("the fuzz gateway's config");
            // One worker thread: the memory store's sweeper runs between inputs too.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a tokio runtime");
            let app = runtime
                .block_on(App::build(&config))
                .expect("the fuzz gateway builds");
            Gateway { runtime, app }
        })
    }

    /// The agent API service.
    pub fn api(&self) -> AgentApi {
        self.app.api()
    }

    /// The session store behind the API.
    pub fn store(&self) -> Arc<dyn SessionStore> {
        Arc::clone(&self.app.api().state().store)
    }

    /// Sends `req` and reads the whole response (so never a `GET` of a stream: use `HEAD`).
    pub fn send(&self, req: Request<Full<Bytes>>) -> Answer {
        self.runtime.block_on(async {
            let response = self.api().oneshot(req).await.expect("AgentApi never fails");
            let (parts, body) = response.into_parts();
            let body = body.collect().await.expect("infallible body").to_bytes();
            Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            }
        })
    }

    /// `POST path` with the API key and `body` (as `application/json`).
    pub fn post(&self, path: &str, body: impl Into<Bytes>) -> Answer {
        let req = Request::post(path)
            .header(header::AUTHORIZATION, format!("Bearer {API_KEY}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.into()))
            .expect("a valid request");
        self.send(req)
    }

    /// Creates a session (`POST /v2/sessions` with no body).
    pub fn create_session(&self) -> Created {
        let answer = self.post("/v2/sessions", Bytes::new());
        assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
        let body: Value = serde_json::from_slice(&answer.body).expect("init answers JSON");
        let field = |name: &str| {
            body[name]
                .as_str()
                .unwrap_or_else(|| panic!("init answer lacks {name}: {body}"))
                .to_owned()
        };
        Created {
            id: field("id")
                .parse()
                .expect("init returns a valid session id"),
            token: field("stream_token"),
        }
    }

    /// The session's state in the store.
    pub fn state(&self, id: &SessionId) -> Option<SessionState> {
        let store = self.store();
        self.runtime
            .block_on(store.state(id))
            .expect("the memory store does not fail")
    }

    /// The session's events in the store, oldest first.
    pub fn events(&self, id: &SessionId) -> Vec<Event> {
        let store = self.store();
        self.runtime
            .block_on(store.read(id, None, usize::MAX))
            .expect("the memory store does not fail")
            .events
    }
}

/// Asserts that `answer` is a JSON error, `{"error":{"code","message"}}` and nothing else,
/// with a non-empty code and message; returns the message.
pub fn assert_json_error(answer: &Answer) -> String {
    let content_type = answer.headers.get(header::CONTENT_TYPE);
    assert_eq!(
        content_type.map(|v| v.as_bytes()),
        Some(&b"application/json"[..]),
        "error without a JSON content type: {answer:?}"
    );
    let body: Value = serde_json::from_slice(&answer.body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {answer:?}"));
    let object = body.as_object().expect("error body is an object");
    assert_eq!(object.len(), 1, "error body has only `error`: {body}");
    let error = body["error"].as_object().expect("`error` is an object");
    assert_eq!(error.len(), 2, "`error` has code and message only: {body}");
    let code = error["code"].as_str().expect("`error.code` is a string");
    let message = error["message"]
        .as_str()
        .expect("`error.message` is a string");
    assert!(
        !code.is_empty() && !message.is_empty(),
        "empty error: {body}"
    );
    message.to_owned()
}
